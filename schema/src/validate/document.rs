//! A validated document (typed value plus the tree it came from) and the desired state.

use sha2::{Digest, Sha256};

use super::error::ValidationError;
use super::node::{Node, Pos};
use crate::model::{
    BackupScheduleSpec, BackupSpec, BackupStorageSpec, ClusterSpec, Kind, Resource,
    RestoreDrillSpec, RestoreSpec,
};

/// One document of the desired state, with where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    /// Path relative to the source root.
    pub file: String,
    /// 0-based index of the document within its file.
    pub index: usize,
    pub resource: Resource,
    /// The YAML tree, kept for positions in later messages.
    pub tree: Node,
}

impl Document {
    pub fn kind(&self) -> Kind {
        self.resource.kind()
    }

    pub fn name(&self) -> &str {
        self.resource.name()
    }

    /// Position of a field (`spec.cluster`), falling back to the document start.
    /// Where `field` is; for a field left out, where its nearest given parent is (a
    /// missing `spec.checks` points at `spec`, not at the top of the file).
    pub fn pos(&self, field: &str) -> Pos {
        let mut path = field;
        loop {
            if let Some(n) = self.tree.at_path(path) {
                return n.pos;
            }
            match path.rsplit_once('.') {
                Some((parent, _)) => path = parent,
                None => return self.tree.pos,
            }
        }
    }

    /// An error about `field` of this document, naming the document.
    pub fn error(&self, field: &str, message: impl Into<String>) -> ValidationError {
        let mut e = ValidationError::at(&self.file, self.pos(field), message);
        e.kind = Some(self.kind().to_string());
        e.name = Some(self.name().to_string());
        e.field = field.to_string();
        e
    }

    /// The document as tidemark reads it: defaults filled in, keys in a fixed order.
    /// Diffs compare this form, so reformatting a file is not a change.
    pub fn canonical_yaml(&self) -> String {
        canonical_yaml(&self.resource)
    }

    /// A hash of the canonical form, recorded when a revision is applied.
    pub fn spec_hash(&self) -> String {
        hex(&Sha256::digest(self.canonical_yaml().as_bytes()))
    }
}

/// Canonical YAML of any resource.
pub fn canonical_yaml(resource: &Resource) -> String {
    serde_saphyr::to_string(resource).unwrap_or_else(|e| format!("# not serializable: {e}\n"))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The validated desired state of one revision.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DesiredState {
    /// Sorted by kind, then name.
    pub documents: Vec<Document>,
}

macro_rules! typed_access {
    ($one:ident, $all:ident, $variant:ident, $spec:ty) => {
        pub fn $one(&self, name: &str) -> Option<&$spec> {
            self.$all().find(|(n, _)| *n == name).map(|(_, s)| s)
        }

        pub fn $all(&self) -> impl Iterator<Item = (&str, &$spec)> {
            self.documents.iter().filter_map(|d| match &d.resource {
                Resource::$variant(o) => Some((o.metadata.name.as_str(), &o.spec)),
                _ => None,
            })
        }
    };
}

impl DesiredState {
    pub fn new(mut documents: Vec<Document>) -> Self {
        documents.sort_by(|a, b| (a.kind(), a.name()).cmp(&(b.kind(), b.name())));
        DesiredState { documents }
    }

    pub fn get(&self, kind: Kind, name: &str) -> Option<&Document> {
        self.documents
            .iter()
            .find(|d| d.kind() == kind && d.name() == name)
    }

    typed_access!(cluster, clusters, Cluster, ClusterSpec);
    typed_access!(storage, storages, BackupStorage, BackupStorageSpec);
    typed_access!(schedule, schedules, BackupSchedule, BackupScheduleSpec);
    typed_access!(backup, backups, Backup, BackupSpec);
    typed_access!(restore, restores, Restore, RestoreSpec);
    typed_access!(drill, drills, RestoreDrill, RestoreDrillSpec);
}

impl DesiredState {
    /// The ledger record of this state once applied as `revision`.
    pub fn to_applied(
        &self,
        revision: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> crate::control::AppliedRevision {
        crate::control::AppliedRevision {
            revision: revision.to_string(),
            applied_at: at,
            documents: self
                .documents
                .iter()
                .map(|d| crate::control::AppliedDocument {
                    kind: d.kind().to_string(),
                    name: d.name().to_string(),
                    file: d.file.clone(),
                    spec_hash: d.spec_hash(),
                    canonical_yaml: d.canonical_yaml(),
                })
                .collect(),
            epoch: None,
            seal: None,
        }
    }
}

/// Reads back a canonical YAML document recorded in the ledger.
pub fn resource_from_canonical(yaml: &str) -> Option<Resource> {
    serde_saphyr::from_str(yaml).ok()
}
