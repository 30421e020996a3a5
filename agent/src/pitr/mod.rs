//! Oplog slicing for point-in-time recovery: the agent that the reconciler assigned
//! copies its node's oplog, one chunk per span, into the backup storage.
//!
//! - [`follow`]: reads the replica set's assignment and runs a slicer per stream of ours;
//! - [`slicer`]: one stream's loop: wait a span, cut a chunk, claim it;
//! - [`source`]: what the slicer asks mongod (the majority point, the oldest entry, a range).

pub mod follow;
pub mod slicer;
pub mod source;
