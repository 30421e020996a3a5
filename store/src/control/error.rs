//! Errors at the control-plane seam, each naming the URL and the object involved.

use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control plane URL {url:?}: {message}")]
    BadUrl { url: String, message: String },
    #[error("control plane {url}: cannot list {prefix:?}: {message}")]
    List {
        url: String,
        prefix: String,
        message: String,
    },
    #[error("control plane {url}: cannot write {key:?}: {message}")]
    Write {
        url: String,
        key: String,
        message: String,
    },
    #[error("control plane {url}: object {key:?} is corrupt: {message}")]
    Corrupt {
        url: String,
        key: String,
        message: String,
    },
    /// Reading, writing or creating one object failed (after retries); the storage error
    /// names the object.
    #[error("control plane {url}: {source}")]
    Storage {
        url: String,
        #[source]
        source: Box<StorageError>,
    },
    #[error("control plane {url} does not exist yet and was opened read-only")]
    ReadOnly { url: String },
    /// The store accepted a second create-if-absent of one key: it ignores conditional
    /// puts (`If-None-Match: *`), so the lease, the ledger and the gates cannot be made
    /// once, and two reconcilers could both lead.
    #[error(
        "control plane {url} does not honour create-if-absent: a second create of {key:?} \
         succeeded instead of being refused (the store ignores If-None-Match); tidemark \
         cannot lead on it: the lease, the ledger and restore gates rely on it"
    )]
    NoCreateIfAbsent { url: String, key: String },
    /// This reconciler was started with another partition count than the control plane's.
    #[error(
        "control plane {url} is split into {stored} partition(s) ({key}, written by {by}), but this reconciler was started with --partitions {wanted}: every reconciler of a control plane must use the same count, or two of them could lead one cluster (to change it, stop them all and delete {key})"
    )]
    Partitions {
        url: String,
        key: String,
        by: String,
        stored: u32,
        wanted: u32,
    },
    /// Another count's reconciler (or one of a version without partitions, which counts
    /// as one) still renews the lease of partition 0, and no count is recorded.
    #[error(
        "control plane {url} is led by {holder} with {count} partition(s) (it still renews lease/, and there is no {key}), but this reconciler was started with --partitions {wanted}: stop every reconciler (a clean stop releases the lease), then start them all with the same --partitions"
    )]
    LeaderOfOtherCount {
        url: String,
        holder: String,
        count: u32,
        wanted: u32,
        key: String,
    },
    /// A leader's write refused because a later epoch exists: another reconciler leads.
    #[error(
        "control plane {url}: not writing {key:?}: this reconciler led epoch {epoch}, and a later epoch exists (another reconciler leads now)"
    )]
    Deposed {
        url: String,
        key: String,
        epoch: u64,
    },
    /// A leader's write refused because its lease was not renewed in time (a stalled
    /// store, a paused process): another reconciler may be taking over.
    #[error(
        "control plane {url}: not writing {key:?}: this reconciler's lease of epoch {epoch} was not renewed in time, so another reconciler may lead now"
    )]
    LeaseLapsed {
        url: String,
        key: String,
        epoch: u64,
    },
}
