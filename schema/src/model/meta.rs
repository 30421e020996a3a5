//! What every document shares: `apiVersion`, `kind`, `metadata.name`, and the kind enum.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    BackupScheduleSpec, BackupSpec, BackupStorageSpec, ClusterSpec, RestoreDrillSpec, RestoreSpec,
};

/// The only API version this release reads.
pub const API_VERSION: &str = "tidemark/v1";

/// `apiVersion`: a one-value enum so the JSON Schema tells editors the exact string.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ApiVersion {
    #[default]
    #[serde(rename = "tidemark/v1")]
    V1,
}

/// `metadata`: only a name for now. Unknown keys are rejected so a typo never goes unseen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// A DNS-label-like name: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
    pub name: String,
}

/// One document body: everything but `kind`, which selects the variant of [`Resource`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Object<S> {
    pub api_version: ApiVersion,
    pub metadata: Metadata,
    pub spec: S,
}

/// A desired-state document of any kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind")]
pub enum Resource {
    Cluster(Object<ClusterSpec>),
    BackupStorage(Object<BackupStorageSpec>),
    BackupSchedule(Object<BackupScheduleSpec>),
    Backup(Object<BackupSpec>),
    Restore(Object<RestoreSpec>),
    RestoreDrill(Object<RestoreDrillSpec>),
}

/// The kinds, for lookups and messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    Cluster,
    BackupStorage,
    BackupSchedule,
    Backup,
    Restore,
    RestoreDrill,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Cluster,
        Kind::BackupStorage,
        Kind::BackupSchedule,
        Kind::Backup,
        Kind::Restore,
        Kind::RestoreDrill,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Cluster => "Cluster",
            Kind::BackupStorage => "BackupStorage",
            Kind::BackupSchedule => "BackupSchedule",
            Kind::Backup => "Backup",
            Kind::Restore => "Restore",
            Kind::RestoreDrill => "RestoreDrill",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Resource {
    pub fn kind(&self) -> Kind {
        match self {
            Resource::Cluster(_) => Kind::Cluster,
            Resource::BackupStorage(_) => Kind::BackupStorage,
            Resource::BackupSchedule(_) => Kind::BackupSchedule,
            Resource::Backup(_) => Kind::Backup,
            Resource::Restore(_) => Kind::Restore,
            Resource::RestoreDrill(_) => Kind::RestoreDrill,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Resource::Cluster(o) => &o.metadata.name,
            Resource::BackupStorage(o) => &o.metadata.name,
            Resource::BackupSchedule(o) => &o.metadata.name,
            Resource::Backup(o) => &o.metadata.name,
            Resource::Restore(o) => &o.metadata.name,
            Resource::RestoreDrill(o) => &o.metadata.name,
        }
    }
}

/// Whether `name` is a valid object name; `None` if it is, else why not.
pub fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("must not be empty".into());
    }
    if name.len() > 63 {
        return Some(format!(
            "is {} characters long; at most 63 are allowed",
            name.len()
        ));
    }
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    if let Some(c) = name.chars().find(|c| !ok_char(*c)) {
        return Some(format!(
            "contains {c:?}; use lowercase letters, digits and '-' only"
        ));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Some("must start and end with a letter or digit".into());
    }
    None
}
