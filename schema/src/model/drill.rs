//! `RestoreDrill`: on a cron, restore the newest good backup of a schedule onto a scratch
//! node (never the cluster), check it, and record how long it took and how old its data
//! was. A drill proves a backup restorable without touching production.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestoreDrillSpec {
    /// The `BackupSchedule` whose newest good backup each drill restores.
    pub schedule: String,
    /// 5 fields (`min hour dom month dow`), or 6 with seconds first.
    pub cron: String,
    /// IANA time zone the cron expression is read in.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// A suspended drill starts no new runs.
    #[serde(default)]
    pub suspend: bool,
    /// The drill agent to use (its `--node-id`); any live drill agent of the cluster
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(default)]
    pub checks: DrillChecks,
}

fn default_timezone() -> String {
    "UTC".to_string()
}

/// What must hold of the restored data for the drill to pass.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DrillChecks {
    /// Collections that must exist, each with at least `minDocuments` documents.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub collections: Vec<CollectionCheck>,
    /// Namespaces (`db.collection`) whose `dbHash` must equal the one recorded when the
    /// backup was taken. Backups of the schedule record these hashes from the moment the
    /// drill is declared; a backup without a recorded hash reports the check as skipped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub db_hash: Vec<String>,
}

impl DrillChecks {
    pub fn is_empty(&self) -> bool {
        self.collections.is_empty() && self.db_hash.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CollectionCheck {
    /// `db.collection`.
    pub namespace: String,
    #[serde(default)]
    pub min_documents: u64,
}

/// Why `ns` is not a `db.collection` namespace, or `None` when it is.
pub fn namespace_problem(ns: &str) -> Option<&'static str> {
    let Some((db, coll)) = ns.split_once('.') else {
        return Some("is not of the form db.collection");
    };
    if db.is_empty() || coll.is_empty() {
        return Some("is not of the form db.collection");
    }
    if db.contains(['/', '\\', ' ', '"', '$', '\0']) {
        return Some("has a database name with a character MongoDB does not allow");
    }
    if coll.contains(['$', '\0']) {
        return Some("has a collection name with '$' or a NUL byte");
    }
    None
}

/// The name of one run of a drill at `at`: `<drill>-YYYYMMDDTHHMMSSZ`.
pub fn drill_run_name(drill: &str, at: chrono::DateTime<chrono::Utc>) -> String {
    super::scheduled_backup_name(drill, at)
}
