//! Oplog slicing for point-in-time recovery: the agent that the reconciler assigned
//! copies its node's oplog, one chunk per span, into the backup storage.
//!
//! - [`apply`]: a point-in-time restore's replay, from oplog entries to `applyOps` batches;
//! - [`follow`]: reads the replica set's assignment and runs a slicer per stream of ours;
//! - [`slicer`]: one stream's loop: wait a span, cut a chunk, claim it;
//! - [`source`]: what the slicer asks mongod (the majority point, the oldest entry, a range).

pub mod apply;
pub mod follow;
pub mod slicer;
pub mod source;

/// Each running slicer's latest report, by stream (`follow::stream_key`); the heartbeat
/// sends them all.
#[derive(Debug, Default)]
pub struct SlicerReports(
    std::sync::Mutex<std::collections::BTreeMap<String, tidemark_schema::control::SlicerReport>>,
);

impl SlicerReports {
    pub fn set(&self, key: &str, report: tidemark_schema::control::SlicerReport) {
        self.0
            .lock()
            .expect("not poisoned")
            .insert(key.to_string(), report);
    }

    pub fn remove(&self, key: &str) {
        self.0.lock().expect("not poisoned").remove(key);
    }

    pub fn all(&self) -> Vec<tidemark_schema::control::SlicerReport> {
        self.0
            .lock()
            .expect("not poisoned")
            .values()
            .cloned()
            .collect()
    }
}
