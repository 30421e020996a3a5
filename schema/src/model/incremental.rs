//! Incremental physical backups as declared: when a chain starts over with a new base, and
//! the block size WiredTiger tracks changes in.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{MaxAge, parse_max_age};

/// PSMDB's default `blockSize` for `$backupCursor` (MB).
pub const DEFAULT_BLOCK_SIZE_MB: u32 = 16;
/// The largest block size accepted: a block is copied whole when one byte of it changes.
pub const MAX_BLOCK_SIZE_MB: u32 = 1024;
/// A chain starts over after this many increments unless the schedule says otherwise.
pub const DEFAULT_MAX_INCREMENTS: u32 = 24;
/// A chain starts over once its base is this old unless the schedule says otherwise.
pub const DEFAULT_NEW_BASE_AFTER: &str = "7d";

/// A schedule's rules for its incremental chain. Each run continues the newest chain of
/// the cluster and storage, on the node that holds the chain's history, and is a new base
/// when a rule says so or when the chain cannot continue (the reason is in `diff` and
/// `status`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IncrementalSpec {
    /// A new base once the chain's base is older than this, such as `7d` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_base_after: Option<String>,
    /// A new base once the chain holds this many increments (default 24).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_increments: Option<u32>,
    /// The granularity of change tracking in MB (PSMDB's `blockSize`, default 16), fixed
    /// for a chain: a changed byte costs its whole block.
    #[serde(
        default,
        rename = "blockSizeMB",
        skip_serializing_if = "Option::is_none"
    )]
    pub block_size_mb: Option<u32>,
}

impl IncrementalSpec {
    pub fn block_size_mb(&self) -> u32 {
        self.block_size_mb.unwrap_or(DEFAULT_BLOCK_SIZE_MB)
    }

    pub fn max_increments(&self) -> u32 {
        self.max_increments.unwrap_or(DEFAULT_MAX_INCREMENTS)
    }

    /// The age past which a chain's base is replaced; `None` only when it does not parse
    /// (validation reports that).
    pub fn new_base_after(&self) -> Option<MaxAge> {
        parse_max_age(
            self.new_base_after
                .as_deref()
                .unwrap_or(DEFAULT_NEW_BASE_AFTER),
        )
        .ok()
    }
}

/// Why a block size cannot be used, or `None`.
pub fn block_size_problem(mb: u32) -> Option<String> {
    (mb == 0 || mb > MAX_BLOCK_SIZE_MB)
        .then(|| format!("{mb} is not a block size from 1 to {MAX_BLOCK_SIZE_MB} MB"))
}
