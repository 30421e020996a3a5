//! The `file://` fast path. object_store's local store stages every object through extra
//! copies; for whole dbPath files that costs a backup most of its speed. Here a file is
//! read, hashed, compressed and written in one pass on a blocking thread, into a temporary
//! name renamed into place, so a crash never leaves a half object under the real key.
//! Each file is flushed on its own worker thread as soon as it is written, overlapping the
//! disk with the copies still running; the pipeline's one `sync_filesystem` at the end
//! covers the directory entries and is what durability is reported on.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tidemark_schema::manifest::FileEntry;
use tidemark_schema::model::Compression;

use super::codec::CHUNK;
use super::download::{Expect, write_file};
use super::error::StorageError;
use super::open::BackupStore;
use super::upload::{Span, StoredObject, produce_into};

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Flushes every dirty page of the file system holding `path` (`syncfs`). A restore or a
/// backup is not reported complete before this succeeds.
pub fn sync_filesystem(path: &Path) -> Result<(), StorageError> {
    let io = |source: std::io::Error| StorageError::Io {
        op: "cannot flush the file system holding",
        path: path.to_path_buf(),
        source,
    };
    let dir = File::open(path).map_err(io)?;
    nix::unistd::syncfs(dir.as_fd()).map_err(|e| io(std::io::Error::from(e)))
}

fn join_err(path: &Path, e: tokio::task::JoinError) -> StorageError {
    StorageError::Io {
        op: "copying (the worker thread failed)",
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    }
}

impl BackupStore {
    pub(crate) async fn upload_local(
        &self,
        root: &Path,
        src: &Path,
        key: &str,
        compression: Compression,
        level: Option<i32>,
        span: Span,
    ) -> Result<StoredObject, StorageError> {
        let dest = root.join(key);
        let src_owned = src.to_path_buf();
        tokio::task::spawn_blocking(move || {
            upload_blocking(&src_owned, &dest, compression, level, span)
        })
        .await
        .map_err(|e| join_err(src, e))?
    }

    /// Opens a `file://` object for reading, refusing one whose size is not the one the
    /// manifest records (a truncated or grown object).
    pub(crate) fn open_local_object(
        &self,
        root: &Path,
        key: &str,
        entry: &FileEntry,
    ) -> Result<File, StorageError> {
        let object = root.join(key);
        let file = match File::open(&object) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StorageError::NotFound {
                    url: self.url.clone(),
                    key: key.to_string(),
                });
            }
            Err(source) => {
                return Err(StorageError::Io {
                    op: "cannot open",
                    path: object,
                    source,
                });
            }
        };
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        match self.size_mismatch(key, entry, size) {
            Some(e) => Err(e),
            None => Ok(file),
        }
    }

    pub(crate) async fn download_local(
        &self,
        root: &Path,
        entry: &FileEntry,
        key: &str,
        compression: Compression,
        dest: &Path,
        expect: &Expect,
    ) -> Result<(), StorageError> {
        let file = self.open_local_object(root, key, entry)?;
        let reader = BufReader::with_capacity(CHUNK, file);
        let dest_owned = dest.to_path_buf();
        let expect_owned = expect.clone();
        let written = tokio::task::spawn_blocking(move || {
            write_file(reader, compression, &dest_owned, &expect_owned)
        })
        .await
        .map_err(|e| join_err(dest, e))?;
        written.map_err(|failure| {
            self.write_error(failure, key, entry, compression, dest, expect.size)
        })
    }
}

fn upload_blocking(
    src: &Path,
    dest: &Path,
    compression: Compression,
    level: Option<i32>,
    span: Span,
) -> Result<StoredObject, StorageError> {
    let io = |op: &'static str, path: &Path, source: std::io::Error| StorageError::Io {
        op,
        path: path.to_path_buf(),
        source,
    };
    let parent = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| io("cannot create directory", parent, e))?;
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp: PathBuf = parent.join(format!(
        ".{name}.partial-{}-{}",
        std::process::id(),
        TEMP_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let file = File::create(&temp).map_err(|e| io("cannot create", &temp, e))?;
        let (produced, writer) = produce_into(
            src.to_path_buf(),
            compression,
            level,
            span,
            BufWriter::with_capacity(CHUNK, file),
        )?;
        // Flushed on this worker thread, overlapping the other files still being copied;
        // the pipeline's `flush` (one `syncfs`) before the manifest then has little left.
        let file = writer
            .into_inner()
            .map_err(|e| io("cannot write", &temp, e.into_error()))?;
        file.sync_data().map_err(|e| io("cannot flush", &temp, e))?;
        let stored = file
            .metadata()
            .map_err(|e| io("cannot stat", &temp, e))?
            .len();
        std::fs::rename(&temp, dest).map_err(|e| io("cannot rename into place", dest, e))?;
        Ok(StoredObject {
            stored_size: stored,
            uncompressed_size: produced.uncompressed,
            checksum: produced.checksum,
            blocks: produced.blocks,
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

impl BackupStore {
    /// Makes every object written so far durable: `syncfs` for `file://` storage (the fast
    /// path does not fsync per file); cloud stores acknowledge durable writes already.
    pub async fn flush(&self) -> Result<(), StorageError> {
        let Some(root) = self.local_root.clone() else {
            return Ok(());
        };
        let path = root.clone();
        tokio::task::spawn_blocking(move || sync_filesystem(&root))
            .await
            .map_err(|e| join_err(&path, e))?
    }
}
