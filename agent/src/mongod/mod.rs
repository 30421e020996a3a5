//! The mongod seam: talking to a node over the wire protocol, and running its process.

mod client;
mod cursor;
pub mod encryption;
mod process;

pub use client::{MongodClient, MongodError, NodeFacts, redact_uri};
pub use cursor::{BackupCursor, CursorFile, CursorMetadata};
pub use process::{
    MongodProcess, PidFile, STANDALONE_LOG, STANDALONE_PID_FILE, StartSpec,
    kill_leftover_standalone, lock_is_empty, lock_is_released, port_is_free, wait_stopped,
};
