//! Small objects the pipelines coordinate with: manifests and markers as JSON, existence
//! checks, and removal of a failed backup's objects. Each call is one whole-object
//! operation under the store's retry policy.

use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectStoreExt, PutPayload};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::StorageError;
use super::open::BackupStore;
use super::retry::{classify, with_retries};

impl BackupStore {
    /// Writes `value` as JSON to `key`, replacing what is there.
    pub async fn put_json<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<(), StorageError> {
        let location = self.path(key)?;
        let body = self.to_json(key, value)?;
        with_retries(&self.retry, &self.url, key, "write", |_| async {
            self.store
                .put(&location, PutPayload::from_bytes(body.clone()))
                .await
                .map(drop)
                .map_err(|e| classify(&self.url, key, "write", e))
        })
        .await?;
        self.durable(key).await
    }

    /// On `file://`, flushes the object written at `key` and every directory entry above
    /// it, so a record that was acknowledged survives a power cut (object_store's local
    /// store renames into place without an fsync). Cloud stores acknowledge durable writes.
    pub(crate) async fn durable(&self, key: &str) -> Result<(), StorageError> {
        let Some(root) = self.local_root.clone() else {
            return Ok(());
        };
        let path = root.join(key);
        tokio::task::spawn_blocking(move || sync_up_to(&root, &path))
            .await
            .map_err(|e| StorageError::Io {
                op: "flushing (the worker thread failed)",
                path: std::path::PathBuf::from(key),
                source: std::io::Error::other(e.to_string()),
            })?
    }

    /// Writes `value` as JSON to `key` only if nothing is there (`AlreadyExists` if
    /// something is). When an attempt fails in transit and a retry then finds the object,
    /// the object counts as ours if it holds exactly these bytes.
    pub async fn put_json_create<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<(), StorageError> {
        let body = self.to_json(key, value)?;
        self.create_bytes(key, body).await
    }

    /// Reads JSON from `key`; `None` when there is no such object.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, StorageError> {
        self.get_bytes(key)
            .await?
            .map(|b| {
                serde_json::from_slice(&b).map_err(|source| StorageError::Json {
                    url: self.url.clone(),
                    key: key.to_string(),
                    source,
                })
            })
            .transpose()
    }

    /// Reads the bytes of a small object (a manifest, a marker); `None` when it does not
    /// exist.
    pub async fn get_bytes(&self, key: &str) -> Result<Option<bytes::Bytes>, StorageError> {
        Ok(self.get_versioned(key).await?.map(|(bytes, _)| bytes))
    }

    /// Like [`get_bytes`](Self::get_bytes), with what the store said of the object read
    /// (its ETag, time and size): what a reader keeps the bytes under.
    pub async fn get_versioned(
        &self,
        key: &str,
    ) -> Result<Option<(bytes::Bytes, object_store::ObjectMeta)>, StorageError> {
        let location = self.path(key)?;
        with_retries(&self.retry, &self.url, key, "read", |_| async {
            let got = match self.store.get(&location).await {
                Ok(got) => got,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(classify(&self.url, key, "read", e)),
            };
            let meta = got.meta.clone();
            got.bytes()
                .await
                .map(|b| Some((b, meta)))
                .map_err(|e| classify(&self.url, key, "read", e))
        })
        .await
    }

    /// Whether an object exists at `key`.
    pub async fn exists(&self, key: &str) -> Result<bool, StorageError> {
        let location = self.path(key)?;
        with_retries(&self.retry, &self.url, key, "check", |_| async {
            match self.store.head(&location).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(classify(&self.url, key, "check", e)),
            }
        })
        .await
    }

    /// Deletes every object under `prefix` (whole path segments: `b1` does not match
    /// `b10/…`) and returns how many were deleted. An empty prefix is refused: this
    /// removes one failed backup, never the whole storage.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<u64, StorageError> {
        let location = self.path(prefix)?;
        with_retries(&self.retry, &self.url, prefix, "delete", |_| async {
            let listed = self
                .store
                .list(Some(&location))
                .map_ok(|meta| meta.location)
                .boxed();
            let mut deleted = 0u64;
            let mut results = self.store.delete_stream(listed);
            while let Some(r) = results.next().await {
                match r {
                    Ok(_) | Err(object_store::Error::NotFound { .. }) => deleted += 1,
                    Err(e) => return Err(classify(&self.url, prefix, "delete", e)),
                }
            }
            Ok(deleted)
        })
        .await
    }

    fn to_json<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<bytes::Bytes, StorageError> {
        serde_json::to_vec_pretty(value)
            .map(bytes::Bytes::from)
            .map_err(|source| StorageError::Json {
                url: self.url.clone(),
                key: key.to_string(),
                source,
            })
    }
}

/// `fsync` of `path`, then of each directory from its parent up to `root` (new directories
/// were created for the key, and their entries must be durable too).
fn sync_up_to(root: &std::path::Path, path: &std::path::Path) -> Result<(), StorageError> {
    let io = |p: &std::path::Path, source: std::io::Error| StorageError::Io {
        op: "cannot flush",
        path: p.to_path_buf(),
        source,
    };
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| io(path, e))?;
    let mut dir = path.parent();
    while let Some(d) = dir {
        std::fs::File::open(d)
            .and_then(|f| f.sync_all())
            .map_err(|e| io(d, e))?;
        if d == root {
            break;
        }
        dir = d.parent();
    }
    Ok(())
}
