//! The mongod seam: talking to a node over the wire protocol, and running its process.

mod client;
mod cursor;
mod process;

pub use client::{MongodClient, MongodError, NodeFacts, redact_uri};
pub use cursor::{BackupCursor, CursorFile, CursorMetadata};
pub use process::{MongodProcess, StartSpec, lock_is_empty, port_is_free, wait_stopped};
