//! What verification finds: each problem names the replica set, the file and the object
//! it is about, so an operator can go straight to it.

use serde::Serialize;

/// How deep to look.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Level {
    /// Marker, manifests and every object's existence and stored size.
    Metadata,
    /// Also every object's content: downloaded, decompressed, blake3 compared.
    Data,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replica_set: Option<String>,
    /// The dbPath-relative file the object holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The object's key in the storage (or the manifest's, the marker's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(rs) = &self.replica_set {
            parts.push(format!("replica set {rs}"));
        }
        if let Some(file) = &self.file {
            parts.push(format!("file {file}"));
        }
        if let Some(object) = &self.object {
            parts.push(format!("object {object}"));
        }
        if parts.is_empty() {
            write!(f, "{}", self.what)
        } else {
            write!(f, "{}: {}", parts.join(", "), self.what)
        }
    }
}

/// Where a verification is, for a progress line.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    pub checked: usize,
    pub total: usize,
    pub bytes: u64,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verified {
    pub backup: String,
    pub storage: String,
    pub level: Level,
    pub replica_sets: Vec<String>,
    /// Objects looked at (stat'ed; and read, at `data` level).
    pub objects: usize,
    /// Bytes read from storage at `data` level.
    pub bytes_read: u64,
    /// An external (snapshot) backup: its files are in the operator's snapshots, so only
    /// the marker and manifests were checked.
    pub external: bool,
    pub problems: Vec<Problem>,
    /// An increment's earlier backups, newest first down to its base: each checked at the
    /// metadata level, its problems listed here with its name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<String>,
    /// The backup an increment continues, as its manifests record it.
    #[serde(skip)]
    pub(crate) source: Option<String>,
}

impl Verified {
    pub(crate) fn new(backup: &str, storage: &str, level: Level) -> Verified {
        Verified {
            backup: backup.to_string(),
            storage: storage.to_string(),
            level,
            replica_sets: Vec::new(),
            objects: 0,
            bytes_read: 0,
            external: false,
            problems: Vec::new(),
            chain: Vec::new(),
            source: None,
        }
    }

    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    pub(crate) fn problem(
        &mut self,
        replica_set: Option<&str>,
        file: Option<&str>,
        object: Option<&str>,
        what: impl Into<String>,
    ) {
        self.problems.push(Problem {
            replica_set: replica_set.map(str::to_string),
            file: file.map(str::to_string),
            object: object.map(str::to_string),
            what: what.into(),
        });
    }
}
