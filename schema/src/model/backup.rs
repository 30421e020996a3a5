//! `Backup`: a one-shot, on-demand backup. It runs once per name, ever.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::BackupType;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackupSpec {
    pub cluster: String,
    pub storage: String,
    #[serde(rename = "type")]
    pub backup_type: BackupType,
    /// `type: incremental` only (PBM's `--base`): `true` starts a new chain; `false` (the
    /// default) continues the newest chain of the cluster and storage, or starts one when
    /// none can be continued (`diff` says why).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub base: bool,
    /// `type: incremental` only: the block size of a new chain in MB (default 16); an
    /// increment keeps its chain's.
    #[serde(
        default,
        rename = "blockSizeMB",
        skip_serializing_if = "Option::is_none"
    )]
    pub block_size_mb: Option<u32>,
}
