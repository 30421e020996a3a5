//! Upload of one dbPath file: read exactly the `$backupCursor` size, hash, compress and
//! stream to one object. A blocking thread reads, hashes and compresses; the async side
//! only moves finished chunks into a single `put` (objects up to one part) or a
//! multipart upload. Memory per upload is bounded by the channel plus the parts in flight
//! (about `(PARTS_IN_FLIGHT + 1) × PART_SIZE + CHANNEL_CHUNKS × CHUNK`), whatever the file
//! size. Nothing is committed before the reader has confirmed it read every byte, so a
//! failed read never leaves a truncated object behind.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};
use tidemark_schema::model::Compression;
use tokio::sync::mpsc;

use super::codec::{CHUNK, ChannelWriter, Encoder, read_full};
use super::error::StorageError;
use super::open::BackupStore;
use super::retry::{Failure, classify, with_retries};

/// Size of multipart parts; objects up to this size go in one `put`.
pub const PART_SIZE: usize = 8 * 1024 * 1024;

/// Parts of one upload sent concurrently.
const PARTS_IN_FLIGHT: usize = 2;

/// Compressed chunks queued between the compressing thread and the uploader.
const CHANNEL_CHUNKS: usize = 4;

/// What `upload_file` stored: the figures a manifest's `FileEntry` records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredObject {
    /// Bytes of the object (after compression).
    pub stored_size: u64,
    /// Bytes copied from the file (the `limit`).
    pub uncompressed_size: u64,
    /// `blake3:<hex>` of the uncompressed bytes.
    pub checksum: String,
    /// The block hashes of the bytes copied, when the span asked for them.
    pub blocks: Vec<String>,
}

/// The bytes of a file one object holds: `[offset, end)`, hashed per block of
/// `block_size` (counted from `offset`) when an incremental chain needs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub offset: u64,
    pub end: u64,
    pub block_size: Option<u64>,
}

impl Span {
    /// The first `limit` bytes, without block hashes.
    pub fn whole(limit: u64) -> Span {
        Span {
            offset: 0,
            end: limit,
            block_size: None,
        }
    }
}

/// What the reading thread reports once it has read and compressed everything.
pub(crate) struct Produced {
    pub(crate) uncompressed: u64,
    pub(crate) checksum: String,
    pub(crate) blocks: Vec<String>,
}

impl BackupStore {
    /// Copies the first `limit` bytes of `src` to object `key`, compressed. A file shorter
    /// than `limit` is `ShortFile`. Transient storage failures restart the whole upload.
    pub async fn upload_file(
        &self,
        src: &Path,
        key: &str,
        compression: Compression,
        level: Option<i32>,
        limit: u64,
    ) -> Result<StoredObject, StorageError> {
        self.upload_span(src, key, compression, level, Span::whole(limit))
            .await
    }

    /// Copies `span` of `src` to object `key`, compressed, with block hashes when the
    /// span asks for them. A file shorter than the span's end is `ShortFile`.
    pub async fn upload_span(
        &self,
        src: &Path,
        key: &str,
        compression: Compression,
        level: Option<i32>,
        span: Span,
    ) -> Result<StoredObject, StorageError> {
        let location = self.path(key)?;
        if let Some(root) = &self.local_root {
            return self
                .upload_local(root, src, key, compression, level, span)
                .await;
        }
        with_retries(&self.retry, &self.url, key, "upload", |_| {
            self.upload_once(src, &location, key, compression, level, span)
        })
        .await
    }

    async fn upload_once(
        &self,
        src: &Path,
        location: &ObjectPath,
        key: &str,
        compression: Compression,
        level: Option<i32>,
        span: Span,
    ) -> Result<StoredObject, Failure> {
        let (tx, mut rx) = mpsc::channel::<Bytes>(CHANNEL_CHUNKS);
        let src_owned = src.to_path_buf();
        let producer =
            tokio::task::spawn_blocking(move || produce(src_owned, compression, level, span, tx));
        let store_err = |e: object_store::Error| classify(&self.url, key, "upload", e);

        // Gather up to one part: small objects (most of a dbPath) need a single request.
        let mut head: Vec<Bytes> = Vec::new();
        let mut head_len = 0usize;
        let mut stream_ended = false;
        while head_len <= PART_SIZE {
            match rx.recv().await {
                Some(chunk) => {
                    head_len += chunk.len();
                    head.push(chunk);
                }
                None => {
                    stream_ended = true;
                    break;
                }
            }
        }

        if stream_ended {
            let produced = join_producer(producer, src).await?;
            self.store
                .put(location, PutPayload::from_iter(head))
                .await
                .map_err(store_err)?;
            return Ok(StoredObject {
                stored_size: head_len as u64,
                uncompressed_size: produced.uncompressed,
                checksum: produced.checksum,
                blocks: produced.blocks,
            });
        }

        let upload = match self.store.put_multipart(location).await {
            Ok(u) => u,
            Err(e) => {
                drop(rx);
                let _ = join_producer(producer, src).await;
                return Err(store_err(e));
            }
        };
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut stored = 0u64;
        let mut pending = head.into_iter();
        let sent: Result<(), object_store::Error> = async {
            loop {
                let chunk = match pending.next() {
                    Some(c) => c,
                    None => match rx.recv().await {
                        Some(c) => c,
                        None => return Ok(()),
                    },
                };
                writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
                stored += chunk.len() as u64;
                writer.put(chunk);
            }
        }
        .await;
        drop(rx);
        let produced = join_producer(producer, src).await;
        match (sent, produced) {
            (Ok(()), Ok(produced)) => {
                writer.finish().await.map_err(store_err)?;
                Ok(StoredObject {
                    stored_size: stored,
                    uncompressed_size: produced.uncompressed,
                    checksum: produced.checksum,
                    blocks: produced.blocks,
                })
            }
            (sent, produced) => {
                // Best effort: an upload left open is cleaned by the bucket's lifecycle.
                if let Err(e) = writer.abort().await {
                    tracing::debug!(key, error = %e, "aborting a failed multipart upload failed");
                }
                // A storage error explains the reader's broken pipe, so it goes first.
                match (sent, produced) {
                    (Err(e), _) => Err(store_err(e)),
                    (_, Err(f)) => Err(f),
                    _ => unreachable!("handled above"),
                }
            }
        }
    }
}

async fn join_producer(
    producer: tokio::task::JoinHandle<Result<Produced, StorageError>>,
    src: &Path,
) -> Result<Produced, Failure> {
    match producer.await {
        Ok(Ok(p)) => Ok(p),
        Ok(Err(e)) => Err(Failure::Fatal(e)),
        Err(join) => Err(Failure::Fatal(StorageError::Io {
            op: "reading (the reader thread failed)",
            path: src.to_path_buf(),
            source: std::io::Error::other(join.to_string()),
        })),
    }
}

/// Runs on a blocking thread: reads `span` of `src`, hashes it and sends it compressed
/// through `tx`.
pub(crate) fn produce(
    src: PathBuf,
    compression: Compression,
    level: Option<i32>,
    span: Span,
    tx: mpsc::Sender<Bytes>,
) -> Result<Produced, StorageError> {
    produce_into(src, compression, level, span, ChannelWriter::new(tx)).map(|(p, _)| p)
}

/// Reads `span` of `src`, hashes it and writes it compressed into `sink`, which it hands
/// back.
pub(crate) fn produce_into<W: Write>(
    src: PathBuf,
    compression: Compression,
    level: Option<i32>,
    span: Span,
    sink: W,
) -> Result<(Produced, W), StorageError> {
    use std::io::{Seek, SeekFrom};
    let limit = span.end;
    let io = |op: &'static str, source: std::io::Error| StorageError::Io {
        op,
        path: src.clone(),
        source,
    };
    let mut file = File::open(&src).map_err(|e| io("cannot open", e))?;
    let actual = file.metadata().map_err(|e| io("cannot stat", e))?.len();
    if actual < limit {
        return Err(StorageError::ShortFile {
            path: src.clone(),
            actual,
            expected: limit,
        });
    }
    file.seek(SeekFrom::Start(span.offset))
        .map_err(|e| io("cannot seek", e))?;
    let mut encoder = Encoder::new(compression, level, sink).map_err(|e| io("compressing", e))?;
    let mut hasher = blake3::Hasher::new();
    let mut blocks = span.block_size.map(super::blocks::BlockHasher::new);
    let mut buf = vec![0u8; CHUNK];
    let mut done = span.offset;
    while done < limit {
        let want = (limit - done).min(CHUNK as u64) as usize;
        let n = read_full(&mut file, &mut buf[..want]).map_err(|e| io("cannot read", e))?;
        if n == 0 {
            // The file shrank after the size check (it is live under the backup cursor).
            return Err(StorageError::ShortFile {
                path: src.clone(),
                actual: done,
                expected: limit,
            });
        }
        hasher.update(&buf[..n]);
        if let Some(b) = blocks.as_mut() {
            b.update(&buf[..n]);
        }
        encoder
            .write_all(&buf[..n])
            .map_err(|e| io("compressing", e))?;
        done += n as u64;
    }
    let sink = encoder.finish().map_err(|e| io("compressing", e))?;
    Ok((
        Produced {
            uncompressed: done - span.offset,
            checksum: format!("blake3:{}", hasher.finalize().to_hex()),
            blocks: blocks
                .map(super::blocks::BlockHasher::finish)
                .unwrap_or_default(),
        },
        sink,
    ))
}
