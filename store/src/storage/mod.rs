//! Backup storage for the node agent: streams dbPath files to and from object storage
//! (compressed, checksummed, retried) and reads/writes the small JSON objects (manifests,
//! markers) the backup and restore pipelines need.

mod blob;
mod blocks;
mod check;
mod codec;
mod delete;
mod download;
mod error;
mod json;
mod local;
mod open;
mod retry;
mod upload;

pub use blob::{StoredBlob, compress, decompress};
pub use blocks::{block_hash, hash_blocks};
pub use delete::Deleted;
pub use error::StorageError;
pub use local::sync_filesystem;
pub use open::BackupStore;
pub use retry::RetryPolicy;
pub use upload::{PART_SIZE, Span, StoredObject};
