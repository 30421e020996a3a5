//! Reading a backup's objects back without restoring them: the size of an object (one
//! HEAD) and a full read that decompresses and checks it against its manifest entry,
//! writing nowhere. What `tidemark verify` is built from.

use futures::StreamExt;
use object_store::ObjectStoreExt;
use tidemark_schema::manifest::FileEntry;
use tidemark_schema::model::Compression;
use tokio::sync::mpsc;

use super::codec::{CHUNK, ChannelReader};
use super::download::{Expect, WriteFailure, decode_and_check};
use super::error::StorageError;
use super::open::BackupStore;
use super::retry::{Failure, classify, with_retries};

/// Chunks queued between the download and the checking thread: with 64 KiB chunks, a
/// check holds well under a MiB whatever the object's size.
const CHANNEL_CHUNKS: usize = 8;

/// What a manifest entry says its object must decompress to.
pub(crate) fn expectation(entry: &FileEntry) -> Result<Expect, String> {
    match entry.checksum.strip_prefix("blake3:") {
        Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(Expect {
            size: entry.uncompressed_size,
            blake3_hex: hex.to_ascii_lowercase(),
            mode: entry.mode,
            at: None,
        }),
        _ => Err(format!(
            "the manifest's checksum {:?} is not blake3:<64 hex digits>",
            entry.checksum
        )),
    }
}

/// The object key of a manifest entry (external backups have none).
pub(crate) fn object_of(entry: &FileEntry) -> Result<&str, StorageError> {
    entry
        .object
        .as_deref()
        .ok_or_else(|| StorageError::NoObject {
            path: entry.path.clone(),
        })
}

impl BackupStore {
    /// `Corrupt`, naming the object and the file it holds.
    pub(crate) fn corrupt(&self, key: &str, entry: &FileEntry, why: String) -> StorageError {
        StorageError::Corrupt {
            url: self.url.clone(),
            key: key.to_string(),
            path: entry.path.clone(),
            why,
        }
    }

    /// `Corrupt` when an object's size is not the one its manifest entry records.
    pub(crate) fn size_mismatch(
        &self,
        key: &str,
        entry: &FileEntry,
        stored: u64,
    ) -> Option<StorageError> {
        (entry.stored_size != 0 && stored != entry.stored_size).then(|| {
            self.corrupt(
                key,
                entry,
                format!(
                    "the object has {stored} bytes, the manifest says {}",
                    entry.stored_size
                ),
            )
        })
    }

    /// The stored size of object `key`, or `None` when it does not exist.
    pub async fn object_size(&self, key: &str) -> Result<Option<u64>, StorageError> {
        let location = self.path(key)?;
        with_retries(&self.retry, &self.url, key, "stat", |_| async {
            match self.store.head(&location).await {
                Ok(meta) => Ok(Some(meta.size)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(classify(&self.url, key, "stat", e)),
            }
        })
        .await
    }

    /// Reads `entry`'s object in full, decompresses it and checks its size and blake3
    /// against the manifest, in bounded memory. Returns the bytes read from storage.
    pub async fn check_object(
        &self,
        entry: &FileEntry,
        compression: Compression,
    ) -> Result<u64, StorageError> {
        let key = object_of(entry)?;
        let corrupt = |why: String| self.corrupt(key, entry, why);
        let expect = expectation(entry).map_err(corrupt)?;
        if let Some(root) = &self.local_root {
            return self
                .check_local(root, entry, key, compression, expect)
                .await;
        }
        let location = self.path(key)?;
        with_retries(&self.retry, &self.url, key, "read", |_| async {
            let store_err = |e: object_store::Error| classify(&self.url, key, "read", e);
            let got = self.store.get(&location).await.map_err(store_err)?;
            let stored = got.meta.size;
            if let Some(e) = self.size_mismatch(key, entry, stored) {
                return Err(Failure::Fatal(e));
            }
            let mut stream = got.into_stream();
            let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
            let (reader, stream_failure) = ChannelReader::new(rx);
            let checker = {
                let expect = expect.clone();
                tokio::task::spawn_blocking(move || check_stream(reader, compression, &expect))
            };
            while let Some(item) = stream.next().await {
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    break;
                }
            }
            drop(tx);
            let checked = checker
                .await
                .map_err(|e| Failure::Fatal(corrupt(format!("the checking thread failed: {e}"))))?;
            match checked {
                Ok(_) => Ok(stored),
                Err(failure) => {
                    let broken = stream_failure
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .take();
                    if let Some(e) = broken {
                        return Err(store_err(e)); // a broken read, retried
                    }
                    Err(Failure::Fatal(match failure {
                        WriteFailure::Corrupt(why) => corrupt(why),
                        WriteFailure::Decode(why) => {
                            corrupt(format!("{compression:?} decompression failed: {why}"))
                        }
                        other => corrupt(describe(other)),
                    }))
                }
            }
        })
        .await
    }
}

impl BackupStore {
    /// `file://` storage: the object file read directly in large blocks on a blocking
    /// thread (object_store's local streams come in 8 KiB chunks, which would make the
    /// check cost more than the disk).
    async fn check_local(
        &self,
        root: &std::path::Path,
        entry: &FileEntry,
        key: &str,
        compression: Compression,
        expect: Expect,
    ) -> Result<u64, StorageError> {
        let file = self.open_local_object(root, key, entry)?;
        let stored = file.metadata().map(|m| m.len()).unwrap_or(0);
        let reader = std::io::BufReader::with_capacity(CHUNK, file);
        let checked =
            tokio::task::spawn_blocking(move || check_stream(reader, compression, &expect))
                .await
                .map_err(|e| {
                    self.corrupt(key, entry, format!("the checking thread failed: {e}"))
                })?;
        match checked {
            Ok(_) => Ok(stored),
            Err(WriteFailure::Decode(why)) => Err(self.corrupt(
                key,
                entry,
                format!("{compression:?} decompression failed: {why}"),
            )),
            Err(other) => Err(self.corrupt(key, entry, describe(other))),
        }
    }
}

/// Decompresses and checks a stream against its manifest entry, writing nowhere.
fn check_stream<R: std::io::Read + Send + 'static>(
    reader: R,
    compression: Compression,
    expect: &Expect,
) -> Result<u64, WriteFailure> {
    decode_and_check(reader, compression, &mut std::io::sink(), expect, |_, e| {
        WriteFailure::Decode(e.to_string())
    })
}

fn describe(f: WriteFailure) -> String {
    match f {
        WriteFailure::Corrupt(w) | WriteFailure::Decode(w) => w,
        WriteFailure::DiskFull { written } => format!("disk full after {written} bytes"),
        WriteFailure::Io { op, path, source } => format!("{op} {}: {source}", path.display()),
    }
}
