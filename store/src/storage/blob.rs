//! Whole objects held in memory: an oplog chunk is written once, compressed, with its
//! blake3 checksum kept by the caller's index, and read back checked against it.

use bytes::Bytes;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use tidemark_schema::model::Compression;

use super::codec::{Encoder, decoder};
use super::error::StorageError;
use super::open::BackupStore;
use super::retry::{Failure, classify, with_retries};

/// What [`BackupStore::put_blob_create`] stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBlob {
    pub stored_bytes: u64,
    /// blake3 of the stored (compressed) bytes, hex.
    pub checksum: String,
}

/// Compresses `raw` in memory with the storage's settings.
pub fn compress(
    compression: Compression,
    level: Option<i32>,
    raw: &[u8],
) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut enc = Encoder::new(compression, level, Vec::with_capacity(raw.len() / 3))?;
    enc.write_all(raw)?;
    enc.finish()
}

/// Decompresses a whole object read into memory.
pub fn decompress(compression: Compression, stored: Bytes) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    decoder(compression, std::io::Cursor::new(stored))?.read_to_end(&mut out)?;
    Ok(out)
}

impl BackupStore {
    /// Writes `body` to `key` only if nothing is there (`AlreadyExists` otherwise), and
    /// returns its size and blake3.
    pub async fn put_blob_create(
        &self,
        key: &str,
        body: Bytes,
    ) -> Result<StoredBlob, StorageError> {
        let stored = StoredBlob {
            stored_bytes: body.len() as u64,
            checksum: blake3::hash(&body).to_hex().to_string(),
        };
        self.create_bytes(key, body).await?;
        Ok(stored)
    }

    /// Writes `body` to `key` only if nothing is there (`AlreadyExists` if something is).
    /// When an attempt fails in transit and a retry then finds the object, the object
    /// counts as ours if it holds exactly these bytes.
    pub(crate) async fn create_bytes(&self, key: &str, body: Bytes) -> Result<(), StorageError> {
        let location = self.path(key)?;
        with_retries(&self.retry, &self.url, key, "create", |attempt| {
            let body = body.clone();
            let location = &location;
            async move {
                let opts = PutOptions {
                    mode: PutMode::Create,
                    ..Default::default()
                };
                let put = PutPayload::from_bytes(body.clone());
                match self.store.put_opts(location, put, opts).await {
                    // Flushed inside the attempt (file://): if the flush fails, the retry
                    // finds these very bytes and counts them as ours (then flushes again).
                    Ok(_) => self
                        .durable(key)
                        .await
                        .map_err(|e| Failure::Transient(e.to_string())),
                    Err(
                        object_store::Error::AlreadyExists { .. }
                        | object_store::Error::Precondition { .. },
                    ) => {
                        if attempt > 1
                            && let Ok(got) = self.store.get(location).await
                            && got.bytes().await.ok().as_deref() == Some(&body[..])
                        {
                            return self
                                .durable(key)
                                .await
                                .map_err(|e| Failure::Transient(e.to_string()));
                        }
                        Err(Failure::Fatal(StorageError::AlreadyExists {
                            url: self.url.clone(),
                            key: key.to_string(),
                        }))
                    }
                    Err(e) => Err(classify(&self.url, key, "create", e)),
                }
            }
        })
        .await
    }

    /// Reads a whole object and checks it against `checksum` (blake3, hex): a missing
    /// object is `NotFound`, other bytes are `Corrupt`, naming the key.
    pub async fn get_blob_checked(&self, key: &str, checksum: &str) -> Result<Bytes, StorageError> {
        let body = self
            .get_bytes(key)
            .await?
            .ok_or_else(|| StorageError::NotFound {
                url: self.url.clone(),
                key: key.to_string(),
            })?;
        let got = blake3::hash(&body).to_hex().to_string();
        if got != checksum {
            return Err(StorageError::Corrupt {
                url: self.url.clone(),
                key: key.to_string(),
                path: key.to_string(),
                why: format!("its blake3 is {got}, the index says {checksum}"),
            });
        }
        Ok(body)
    }

    /// Deletes one object; a missing one is not an error.
    pub async fn delete_object(&self, key: &str) -> Result<(), StorageError> {
        let location = self.path(key)?;
        with_retries(&self.retry, &self.url, key, "delete", |_| async {
            match self.store.delete(&location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(classify(&self.url, key, "delete", e)),
            }
        })
        .await
    }
}
