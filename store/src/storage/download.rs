//! Download of one manifest file: stream the object, decompress, write the destination,
//! and prove it is the file that was backed up (byte count and blake3 from the manifest)
//! before it counts as restored. The async side only moves chunks from the HTTP stream
//! into a bounded channel; a blocking thread decompresses, hashes and writes. On any
//! failure the partial destination is removed, so a restored dbPath never holds a file
//! that only looks right.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use tidemark_schema::manifest::FileEntry;
use tidemark_schema::model::Compression;
use tokio::sync::mpsc;

use super::codec::{CHUNK, ChannelReader, decoder, read_full};
use super::error::{StorageError, is_disk_full};
use super::open::BackupStore;
use super::retry::{Failure, classify, with_retries};

/// Downloaded chunks queued ahead of the writing thread.
const CHANNEL_CHUNKS: usize = 8;

/// Why the writing thread stopped, before the storage side is consulted.
pub(crate) enum WriteFailure {
    /// The data is not what the manifest describes (or does not decompress).
    Corrupt(String),
    /// The decoder failed; this is corruption unless the download stream broke first.
    Decode(String),
    DiskFull {
        written: u64,
    },
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What the writing thread checks against, and where it writes.
#[derive(Clone)]
pub(crate) struct Expect {
    pub(crate) size: u64,
    pub(crate) blake3_hex: String,
    pub(crate) mode: u32,
    /// `None`: the object is the whole file (created, mode set). `Some(offset)`: it is a
    /// range written over an existing file at that offset (an increment's change).
    pub(crate) at: Option<u64>,
}

impl BackupStore {
    /// Restores `entry` to `dest` (its parent directories are created). Transient storage
    /// failures restart the download from the beginning.
    pub async fn download_file(
        &self,
        entry: &FileEntry,
        compression: Compression,
        dest: &Path,
    ) -> Result<(), StorageError> {
        self.download_into(entry, compression, dest, None).await
    }

    /// Writes one changed range of an increment over `dest` at its offset, proving its
    /// size and checksum; the file is neither created empty nor cut nor flushed (the
    /// caller cuts it to the increment's size once every range is in, and flushes it).
    pub async fn download_range(
        &self,
        path: &str,
        range: &tidemark_schema::manifest::RangeEntry,
        compression: Compression,
        dest: &Path,
    ) -> Result<(), StorageError> {
        let entry = range.as_file_entry(path);
        self.download_into(&entry, compression, dest, Some(range.offset))
            .await
    }

    async fn download_into(
        &self,
        entry: &FileEntry,
        compression: Compression,
        dest: &Path,
        at: Option<u64>,
    ) -> Result<(), StorageError> {
        let key = super::check::object_of(entry)?;
        let location = self.path(key)?;
        let corrupt = |why: String| self.corrupt(key, entry, why);
        let mut expect = super::check::expectation(entry).map_err(corrupt)?;
        expect.at = at;
        if let Some(root) = &self.local_root {
            return self
                .download_local(root, entry, key, compression, dest, &expect)
                .await;
        }
        with_retries(&self.retry, &self.url, key, "download", |_| {
            self.download_once(entry, key, &location, compression, dest, &expect)
        })
        .await
    }

    async fn download_once(
        &self,
        entry: &FileEntry,
        key: &str,
        location: &ObjectPath,
        compression: Compression,
        dest: &Path,
        expect: &Expect,
    ) -> Result<(), Failure> {
        let store_err = |e: object_store::Error| classify(&self.url, key, "download", e);
        let got = self.store.get(location).await.map_err(store_err)?;
        if let Some(e) = self.size_mismatch(key, entry, got.meta.size) {
            return Err(Failure::Fatal(e));
        }
        let mut stream = got.into_stream();
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        let (reader, stream_failure) = ChannelReader::new(rx);
        let writer = {
            let dest = dest.to_path_buf();
            let expect = expect.clone();
            tokio::task::spawn_blocking(move || write_file(reader, compression, &dest, &expect))
        };
        while let Some(item) = stream.next().await {
            let failed = item.is_err();
            // A closed channel means the writer stopped; its result says why.
            if tx.send(item).await.is_err() || failed {
                break;
            }
        }
        drop(tx);
        let written = writer.await.map_err(|join| {
            Failure::Fatal(StorageError::Io {
                op: "writing (the writer thread failed)",
                path: dest.to_path_buf(),
                source: std::io::Error::other(join.to_string()),
            })
        })?;
        let Err(failure) = written else {
            return Ok(());
        };
        // A broken download explains whatever the decoder or the size check said after it.
        let broken = stream_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(e) = broken {
            return Err(store_err(e));
        }
        Err(Failure::Fatal(self.write_error(
            failure,
            key,
            entry,
            compression,
            dest,
            expect.size,
        )))
    }

    /// The storage error for a failed write of `entry` to `dest`.
    pub(crate) fn write_error(
        &self,
        failure: WriteFailure,
        key: &str,
        entry: &FileEntry,
        compression: Compression,
        dest: &Path,
        expected: u64,
    ) -> StorageError {
        let corrupt = |why: String| StorageError::Corrupt {
            url: self.url.clone(),
            key: key.to_string(),
            path: entry.path.clone(),
            why,
        };
        match failure {
            WriteFailure::Corrupt(why) => corrupt(why),
            WriteFailure::Decode(why) => {
                corrupt(format!("{compression:?} decompression failed: {why}"))
            }
            WriteFailure::DiskFull { written } => StorageError::DiskFull {
                path: dest.to_path_buf(),
                key: key.to_string(),
                written,
                expected,
            },
            WriteFailure::Io { op, path, source } => StorageError::Io { op, path, source },
        }
    }
}

/// Decompresses `reader` into `out`, proving on the way that it is the file the manifest
/// describes: never more bytes than listed, exactly as many, and the same blake3. Returns
/// the bytes written. Restores write a file; `verify --read-data` writes nowhere.
pub(crate) fn decode_and_check<R: std::io::Read + Send + 'static, W: Write>(
    reader: R,
    compression: Compression,
    out: &mut W,
    expect: &Expect,
    write_err: impl Fn(u64, std::io::Error) -> WriteFailure,
) -> Result<u64, WriteFailure> {
    let mut data = decoder(compression, reader).map_err(|e| WriteFailure::Decode(e.to_string()))?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; CHUNK];
    let mut written = 0u64;
    loop {
        let n = read_full(&mut data, &mut buf).map_err(|e| WriteFailure::Decode(e.to_string()))?;
        if n == 0 {
            break;
        }
        if written + n as u64 > expect.size {
            return Err(WriteFailure::Corrupt(format!(
                "it holds more than the {} bytes the manifest lists",
                expect.size
            )));
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| write_err(written, e))?;
        written += n as u64;
    }
    if written != expect.size {
        return Err(WriteFailure::Corrupt(format!(
            "it holds {written} bytes, the manifest lists {}",
            expect.size
        )));
    }
    let actual = hasher.finalize().to_hex();
    if actual.as_str() != expect.blake3_hex {
        return Err(WriteFailure::Corrupt(format!(
            "checksum mismatch: the manifest says blake3:{}, the data is blake3:{actual}",
            expect.blake3_hex
        )));
    }
    Ok(written)
}

/// Runs on a blocking thread: decompresses `reader` into `dest` and verifies it. Removes
/// `dest` on failure.
pub(crate) fn write_file<R: std::io::Read + Send + 'static>(
    reader: R,
    compression: Compression,
    dest: &Path,
    expect: &Expect,
) -> Result<(), WriteFailure> {
    let io = |op: &'static str, path: &Path, source: std::io::Error| WriteFailure::Io {
        op,
        path: path.to_path_buf(),
        source,
    };
    let parent = dest.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent {
        std::fs::create_dir_all(parent).map_err(|e| io("cannot create directory", parent, e))?;
    }
    if let Some(offset) = expect.at {
        return write_range(reader, compression, dest, expect, offset);
    }
    let file = File::create(dest).map_err(|e| {
        if is_disk_full(&e) {
            WriteFailure::DiskFull { written: 0 }
        } else {
            io("cannot create", dest, e)
        }
    })?;
    let result = fill_and_verify(file, reader, compression, dest, expect);
    if result.is_err()
        && let Err(e) = std::fs::remove_file(dest)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %dest.display(), error = %e, "cannot remove a partly restored file");
    }
    // Each file is flushed as it is finished (in `fill_and_verify`); the restore still
    // flushes the whole file system once after the last file (`sync_filesystem`), for the
    // directory entries, and reports nothing done before that flush succeeded.
    result
}

/// Writes a range over an existing file (created when the chain's full copy was empty)
/// at `offset`; a failed range leaves the file to the restore's failure, which never
/// starts a node on it.
fn write_range<R: std::io::Read + Send + 'static>(
    reader: R,
    compression: Compression,
    dest: &Path,
    expect: &Expect,
    offset: u64,
) -> Result<(), WriteFailure> {
    use std::io::{Seek, SeekFrom};
    let io = |op: &'static str, source: std::io::Error| WriteFailure::Io {
        op,
        path: dest.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dest)
        .map_err(|e| io("cannot open", e))?;
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| io("cannot seek", e))?;
    let write_err = |written: u64, e: std::io::Error| {
        if is_disk_full(&e) {
            WriteFailure::DiskFull { written }
        } else {
            io("cannot write", e)
        }
    };
    // Not flushed here: a file takes one range of each increment, and one flush per range
    // would cost a journal commit each; the caller flushes the rebuilt file once.
    decode_and_check(reader, compression, &mut file, expect, write_err).map(|_| ())
}

fn fill_and_verify<R: std::io::Read + Send + 'static>(
    mut file: File,
    reader: R,
    compression: Compression,
    dest: &Path,
    expect: &Expect,
) -> Result<(), WriteFailure> {
    let write_err = |written: u64, e: std::io::Error| {
        if is_disk_full(&e) {
            WriteFailure::DiskFull { written }
        } else {
            WriteFailure::Io {
                op: "cannot write",
                path: dest.to_path_buf(),
                source: e,
            }
        }
    };
    let written = decode_and_check(reader, compression, &mut file, expect, write_err)?;
    file.set_permissions(std::fs::Permissions::from_mode(expect.mode & 0o7777))
        .map_err(|e| WriteFailure::Io {
            op: "cannot set the mode of",
            path: dest.to_path_buf(),
            source: e,
        })?;
    // Flushing here, on this file's worker thread, overlaps the disk's work with the
    // other files still being written; the pipeline's one `sync_filesystem` at the end
    // then finds little left to do. Delayed allocation reports a full disk here.
    file.sync_data().map_err(|e| write_err(written, e))?;
    Ok(())
}
