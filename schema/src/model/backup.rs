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
}
