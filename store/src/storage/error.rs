//! `StorageError`: every way the storage seam fails, each message naming the storage URL,
//! the object key and/or the local path, so an operator can act on it. Credentials are
//! never part of a message: URLs come from `StorageTarget` (which refuses userinfo) and
//! option values are never echoed.

use std::path::PathBuf;

/// An error of the backup storage seam.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The storage URL or its options cannot be turned into a client.
    #[error("cannot open backup storage {url}: {why}")]
    Open { url: String, why: String },

    /// A key the caller built is not a valid object path.
    #[error("object key {key:?} is not valid for backup storage {url}: {why}")]
    InvalidKey {
        url: String,
        key: String,
        why: String,
    },

    #[error("object {key} does not exist in backup storage {url}")]
    NotFound { url: String, key: String },

    #[error("object {key} already exists in backup storage {url}")]
    AlreadyExists { url: String, key: String },

    /// Transient failures (network, 5xx, timeouts) outlasted every retry.
    #[error(
        "backup storage {url} is unavailable: {op} of object {key} failed {attempts} time(s); \
         last error: {last_error}"
    )]
    Unavailable {
        url: String,
        key: String,
        op: &'static str,
        attempts: u32,
        last_error: String,
    },

    /// The storage answered but refused the request for a reason retrying cannot fix
    /// (permissions, authentication, an unsupported operation).
    #[error("backup storage {url} refused {op} of object {key}: {why}")]
    Refused {
        url: String,
        key: String,
        op: &'static str,
        why: String,
    },

    /// The object's content does not decompress, or does not match the manifest.
    #[error("object {key} in backup storage {url} is corrupt (restoring {path}): {why}")]
    Corrupt {
        url: String,
        key: String,
        /// The file, relative to the dbPath.
        path: String,
        why: String,
    },

    /// The local filesystem ran out of space (or quota) while a file was restored.
    #[error(
        "no space left on the device holding {path}: wrote {written} of {expected} bytes \
         (restoring object {key}); free space on that filesystem or restore elsewhere"
    )]
    DiskFull {
        path: PathBuf,
        key: String,
        written: u64,
        expected: u64,
    },

    /// A local file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file on disk is shorter than what `$backupCursor` listed for it.
    #[error(
        "{path} has {actual} bytes but the backup cursor listed {expected}; the file \
         shrank while it was being backed up"
    )]
    ShortFile {
        path: PathBuf,
        actual: u64,
        expected: u64,
    },

    /// A manifest entry without an object (an external backup's entry) was asked for.
    #[error("manifest entry {path} has no object in storage (an external backup?)")]
    NoObject { path: String },

    #[error("object {key} in backup storage {url} is not valid JSON: {source}")]
    Json {
        url: String,
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

impl StorageError {
    /// Maps an object_store error that retrying cannot fix. Transient errors are handled
    /// by `retry::classify` before reaching here.
    pub(crate) fn from_store(
        url: &str,
        key: &str,
        op: &'static str,
        err: object_store::Error,
    ) -> StorageError {
        match err {
            object_store::Error::NotFound { .. } => StorageError::NotFound {
                url: url.to_string(),
                key: key.to_string(),
            },
            object_store::Error::AlreadyExists { .. } => StorageError::AlreadyExists {
                url: url.to_string(),
                key: key.to_string(),
            },
            other => StorageError::Refused {
                url: url.to_string(),
                key: key.to_string(),
                op,
                why: other.to_string(),
            },
        }
    }
}

/// Whether an I/O error means the filesystem is full (or the user's quota is).
pub(crate) fn is_disk_full(err: &std::io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(code) if code == nix::errno::Errno::ENOSPC as i32
            || code == nix::errno::Errno::EDQUOT as i32
    ) || err.kind() == std::io::ErrorKind::StorageFull
}
