//! `ControlPlane`: the one client of the control plane. The reconciler, every agent and the
//! CLI open it from the same `--control` URL and go through the same retries, so a write
//! that one of them makes is read back identically by the others.
//!
//! It is a thin layer over [`BackupStore`]: the control plane is an object store like the
//! backup storage (same URL schemes, same credentials from the environment, same retry
//! policy); what this adds is the record types and the keys of `tidemark_schema::control`.

use std::path::PathBuf;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tidemark_schema::control::{
    AGENTS_PREFIX, Heartbeat, OPS_PREFIX, Op, Phase, PhaseReport, StorageTarget, heartbeat_key,
    node_key_part, op_key, phase_key,
};

use super::error::ControlError;
use super::read_cache::{self, ReadCache};
use crate::storage::{BackupStore, StorageError};

/// An opened control plane. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ControlPlane {
    url: String,
    /// `None` for a local directory that does not exist yet, opened read-only: a fresh
    /// control plane in which nothing exists (so `tidemark diff` creates nothing).
    store: Option<BackupStore>,
    /// The epoch a leader writes as: every write is refused once a later epoch exists.
    fence: Option<u64>,
    /// Where the fencing lease lives (`lease` unless [`ControlPlane::fenced_in`] said).
    fence_prefix: Option<String>,
    /// Until when the leader's last renewal lets it write (see [`Lease::valid_until`]).
    ///
    /// [`Lease::valid_until`]: super::Lease::valid_until
    until: Option<LeaseClock>,
    /// Set by [`ControlPlane::with_read_cache`]: listed records are read only when changed.
    cache: Option<ReadCache>,
}

/// The instant until which a leader may write, shared by its lease and its writers.
pub type LeaseClock = std::sync::Arc<std::sync::Mutex<Option<std::time::Instant>>>;

/// Records read at once by [`ControlPlane::all`].
const READ_AHEAD: usize = 32;

/// What a create-if-absent write found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Created {
    /// This call created the object.
    New,
    /// Someone had created it already; the existing object was left alone.
    Existed,
}

impl ControlPlane {
    /// Opens the control plane for reading. A local directory that does not exist is an
    /// empty control plane, not an error, and is not created.
    pub fn open(url: &str) -> Result<ControlPlane, ControlError> {
        Self::open_inner(url, false)
    }

    /// Opens the control plane for reading and writing; a local directory is created.
    pub fn open_writable(url: &str) -> Result<ControlPlane, ControlError> {
        Self::open_inner(url, true)
    }

    /// Wraps an object store built by the caller (tests that configure a client
    /// themselves); `url` is only used in messages.
    pub fn from_store(url: &str, store: Arc<dyn ObjectStore>) -> ControlPlane {
        ControlPlane {
            url: url.to_string(),
            store: Some(BackupStore::from_store(url, store).counted()),
            fence: None,
            fence_prefix: None,
            until: None,
            cache: None,
        }
    }

    fn open_inner(url: &str, create: bool) -> Result<ControlPlane, ControlError> {
        let bad = |message: String| ControlError::BadUrl {
            url: url.to_string(),
            message,
        };
        let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
        let target_url = match scheme {
            "" | "file" => {
                let path = PathBuf::from(rest);
                if path.exists() && !path.is_dir() {
                    return Err(bad(format!("{} is not a directory", path.display())));
                }
                if !path.exists() {
                    if !create {
                        return Ok(ControlPlane {
                            url: url.to_string(),
                            store: None,
                            fence: None,
                            fence_prefix: None,
                            until: None,
                            cache: None,
                        });
                    }
                    std::fs::create_dir_all(&path)
                        .map_err(|e| bad(format!("cannot create {}: {e}", path.display())))?;
                }
                let abs = std::fs::canonicalize(&path)
                    .map_err(|e| bad(format!("cannot resolve {}: {e}", path.display())))?;
                format!("file://{}", abs.display())
            }
            "s3" | "gs" | "az" => url.to_string(),
            other => {
                return Err(bad(format!(
                    "the scheme {other:?} is not supported; use a directory, file://, s3://, \
                     gs:// or az://"
                )));
            }
        };
        let target = StorageTarget {
            url: target_url,
            compression: Default::default(),
            compression_level: None,
            options: Default::default(),
        };
        let store = BackupStore::open(&target)
            .map_err(|e| bad(e.to_string()))?
            .counted();
        Ok(ControlPlane {
            url: url.to_string(),
            store: Some(store),
            fence: None,
            fence_prefix: None,
            until: None,
            cache: None,
        })
    }

    /// The same control plane, keeping what [`all`](Self::all) and
    /// [`all_lenient`](Self::all_lenient) read, so that listing a prefix again reads only
    /// the records that changed since. For a long-lived reader.
    pub fn with_read_cache(self) -> ControlPlane {
        ControlPlane {
            cache: Some(ReadCache::default()),
            ..self
        }
    }

    /// The URL as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Proves that the store honours create-if-absent before anyone relies on it: two
    /// creates of one new probe key, and exactly the first must win. `tag` keeps the
    /// probes of several reconcilers apart. The probe is deleted afterwards.
    pub async fn prove_create_if_absent(&self, tag: &str) -> Result<(), ControlError> {
        let store = self.store.as_ref().ok_or_else(|| ControlError::ReadOnly {
            url: self.url.clone(),
        })?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let tag: String = tag
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let key = format!("lease/probes/{tag}-{nanos}.json");
        let first = store
            .put_json_create(&key, &serde_json::json!({"try": 1}))
            .await;
        let second = store
            .put_json_create(&key, &serde_json::json!({"try": 2}))
            .await;
        let _ = store.object_store().delete(&Path::from(key.as_str())).await;
        first.map_err(|e| self.storage(e))?;
        match second {
            Err(StorageError::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(self.storage(e)),
            Ok(()) => Err(ControlError::NoCreateIfAbsent {
                url: self.url.clone(),
                key,
            }),
        }
    }

    /// The same control plane, writing as the leader of `epoch`: each write first checks
    /// that no later epoch exists and is refused (`Deposed`) if one does. The check and
    /// the write are two requests, so a write can still land just after a takeover; every
    /// record that matters is create-once or carries the epoch, which bounds the damage.
    pub fn fenced(&self, epoch: u64) -> ControlPlane {
        ControlPlane {
            fence: Some(epoch),
            ..self.clone()
        }
    }

    /// The same, and also refusing every write once `until` has passed (or is unset): a
    /// leader whose renewals stall stops writing before a candidate can take over, not
    /// only once the candidate's epoch exists.
    pub fn fenced_until(&self, epoch: u64, until: LeaseClock) -> ControlPlane {
        ControlPlane {
            fence: Some(epoch),
            until: Some(until),
            ..self.clone()
        }
    }

    /// The same for the lease under `prefix` (one partition of a shared fleet).
    pub fn fenced_in(&self, prefix: &str, epoch: u64, until: LeaseClock) -> ControlPlane {
        ControlPlane {
            fence: Some(epoch),
            fence_prefix: Some(prefix.to_string()),
            until: Some(until),
            ..self.clone()
        }
    }

    /// Whether this handle may still write as its leader: the same checks a write makes
    /// (lease valid, no later epoch), for work outside the control plane that must only
    /// happen while leading (deleting a backup's objects).
    pub async fn still_leading(&self) -> Result<(), ControlError> {
        self.writable("(check before deleting storage objects)")
            .await
            .map(|_| ())
    }

    /// The fencing number writes carry, if this handle writes as a leader.
    pub fn epoch(&self) -> Option<u64> {
        self.fence
    }

    async fn writable(&self, key: &str) -> Result<&BackupStore, ControlError> {
        let store = self.store.as_ref().ok_or_else(|| ControlError::ReadOnly {
            url: self.url.clone(),
        })?;
        if let (Some(epoch), Some(until)) = (self.fence, &self.until) {
            let valid = *until.lock().expect("not poisoned");
            if valid.is_none_or(|t| std::time::Instant::now() >= t) {
                return Err(ControlError::LeaseLapsed {
                    url: self.url.clone(),
                    key: key.to_string(),
                    epoch,
                });
            }
        }
        if let Some(epoch) = self.fence {
            let prefix = self
                .fence_prefix
                .as_deref()
                .unwrap_or(tidemark_schema::control::LEASE_PREFIX);
            let next = tidemark_schema::control::lease_key_in(prefix, epoch + 1);
            if store.exists(&next).await.map_err(|e| self.storage(e))? {
                return Err(ControlError::Deposed {
                    url: self.url.clone(),
                    key: key.to_string(),
                    epoch,
                });
            }
        }
        Ok(store)
    }

    /// Runs one write (with all its retries) no longer than the lease allows: a write that
    /// has not finished when the lease runs out is abandoned, not left to land later.
    async fn within_lease<T>(
        &self,
        key: &str,
        write: impl std::future::Future<Output = Result<T, ControlError>>,
    ) -> Result<T, ControlError> {
        let (Some(epoch), Some(until)) = (self.fence, &self.until) else {
            return write.await;
        };
        let left = until
            .lock()
            .expect("not poisoned")
            .map(|t| t.saturating_duration_since(std::time::Instant::now()))
            .unwrap_or_default();
        tokio::time::timeout(left, write).await.unwrap_or_else(|_| {
            Err(ControlError::LeaseLapsed {
                url: self.url.clone(),
                key: key.to_string(),
                epoch,
            })
        })
    }

    fn storage(&self, e: StorageError) -> ControlError {
        match e {
            StorageError::Json { key, source, .. } => ControlError::Corrupt {
                url: self.url.clone(),
                key,
                message: source.to_string(),
            },
            other => ControlError::Storage {
                url: self.url.clone(),
                source: Box::new(other),
            },
        }
    }

    /// Reads a JSON record; `None` when it does not exist. An object that does not parse
    /// is `Corrupt`, naming its key: never skipped silently.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, ControlError> {
        let Some(store) = &self.store else {
            return Ok(None);
        };
        store.get_json(key).await.map_err(|e| self.storage(e))
    }

    /// Whether an object exists at `key`.
    pub async fn exists(&self, key: &str) -> Result<bool, ControlError> {
        let Some(store) = &self.store else {
            return Ok(false);
        };
        store.exists(key).await.map_err(|e| self.storage(e))
    }

    /// Writes a record, replacing what is there. Only for keys with one writer.
    pub async fn put<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<(), ControlError> {
        let store = self.writable(key).await?;
        self.within_lease(key, async {
            store
                .put_json(key, value)
                .await
                .map_err(|e| self.storage(e))
        })
        .await
    }

    /// Writes a record only if none exists: of two writers racing, exactly one gets
    /// `Created::New`. For everything that must happen once (ops, ledger records, results).
    pub async fn create<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<Created, ControlError> {
        let store = self.writable(key).await?;
        self.within_lease(key, async {
            match store.put_json_create(key, value).await {
                Ok(()) => Ok(Created::New),
                Err(StorageError::AlreadyExists { .. }) => Ok(Created::Existed),
                Err(e) => Err(self.storage(e)),
            }
        })
        .await
    }

    /// Every key under `prefix` (whole path segments), sorted. A missing prefix is empty.
    pub async fn keys(&self, prefix: &str) -> Result<Vec<String>, ControlError> {
        let metas = self.listing(prefix).await?;
        Ok(metas.into_iter().map(|m| m.location.to_string()).collect())
    }

    /// Every key under `prefix` with its version as the listing gives it (ETag, else
    /// modification time and size): a record rewritten shows a new version.
    pub async fn versions(&self, prefix: &str) -> Result<Vec<(String, String)>, ControlError> {
        let metas = self.listing(prefix).await?;
        Ok(metas
            .iter()
            .map(|m| (m.location.to_string(), read_cache::version(m)))
            .collect())
    }

    /// Every object under `prefix`, sorted by key, with what the listing said of it.
    async fn listing(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ControlError> {
        let Some(store) = &self.store else {
            return Ok(Vec::new());
        };
        let listed: Result<Vec<ObjectMeta>, _> = store
            .object_store()
            .list(Some(&Path::from(prefix)))
            .try_collect()
            .await;
        let mut metas = match listed {
            Ok(metas) => metas,
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => {
                return Err(ControlError::List {
                    url: self.url.clone(),
                    prefix: prefix.to_string(),
                    message: e.to_string(),
                });
            }
        };
        metas.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(metas)
    }

    /// Every `*.json` object under `prefix`, sorted, with what its listing said of it.
    async fn json_listing(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ControlError> {
        let mut metas = self.listing(prefix).await?;
        metas.retain(|m| m.location.as_ref().ends_with(".json"));
        Ok(metas)
    }

    /// One listed record: from the read cache when its version is the one read before.
    async fn read_listed<T: DeserializeOwned>(
        &self,
        meta: &ObjectMeta,
    ) -> Result<Option<T>, ControlError> {
        let (Some(cache), Some(store)) = (&self.cache, &self.store) else {
            return self.get(meta.location.as_ref()).await;
        };
        let key = meta.location.as_ref();
        let version = read_cache::version(meta);
        let bytes = match cache.get(key, &version) {
            Some(bytes) => bytes,
            // Kept under the version the read returned, not the listing's: the object may
            // have been rewritten in between.
            None => match store
                .get_versioned(key)
                .await
                .map_err(|e| self.storage(e))?
            {
                Some((bytes, read)) => {
                    cache.put(key, read_cache::version(&read), bytes.clone());
                    bytes
                }
                None => return Ok(None),
            },
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ControlError::Corrupt {
                url: self.url.clone(),
                key: key.to_string(),
                message: e.to_string(),
            })
    }

    /// Reads every record listed under `prefix`, 32 at a time (on S3 each is a request,
    /// and a control plane holds thousands), and forgets cached records no longer there.
    async fn read_all<T: DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<Vec<Result<Option<T>, ControlError>>, ControlError> {
        let metas = self.json_listing(prefix).await?;
        let read = futures::stream::iter(metas.iter())
            .map(|m| self.read_listed::<T>(m))
            .buffered(READ_AHEAD)
            .collect()
            .await;
        if let Some(cache) = &self.cache {
            let listed: Vec<String> = metas.iter().map(|m| m.location.to_string()).collect();
            cache.keep_only(prefix, &listed);
        }
        Ok(read)
    }

    /// Every `*.json` record under `prefix`, parsed, in key order.
    pub async fn all<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<T>, ControlError> {
        let read: Vec<Option<T>> = self
            .read_all(prefix)
            .await?
            .into_iter()
            .collect::<Result<_, _>>()?;
        Ok(read.into_iter().flatten().collect())
    }

    /// Like [`all`](Self::all), but a record that does not parse is skipped and named in
    /// the returned warnings instead of failing the whole read: one bad object must not
    /// stop the reconciler for every cluster.
    pub async fn all_lenient<T: DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<(Vec<T>, Vec<String>), ControlError> {
        let read = self.read_all::<T>(prefix).await?;
        let (mut out, mut warnings) = (Vec::new(), Vec::new());
        for r in read {
            match r {
                Ok(Some(v)) => out.push(v),
                Ok(None) => {} // deleted between the listing and the read
                Err(e @ ControlError::Corrupt { .. }) => warnings.push(format!("skipped: {e}")),
                Err(e) => return Err(e),
            }
        }
        Ok((out, warnings))
    }

    /// The names of the "directories" directly under `prefix`.
    pub async fn children(&self, prefix: &str) -> Result<Vec<String>, ControlError> {
        let Some(store) = &self.store else {
            return Ok(Vec::new());
        };
        let listing = match store
            .object_store()
            .list_with_delimiter(Some(&Path::from(prefix)))
            .await
        {
            Ok(l) => l,
            Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => {
                return Err(ControlError::List {
                    url: self.url.clone(),
                    prefix: prefix.to_string(),
                    message: e.to_string(),
                });
            }
        };
        let mut names: Vec<String> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Deletes one object; a missing object is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), ControlError> {
        let store = self.writable(key).await?;
        if let Some(cache) = &self.cache {
            cache.forget(key);
        }
        self.within_lease(key, async {
            match store.object_store().delete(&Path::from(key)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(ControlError::Write {
                    url: self.url.clone(),
                    key: key.to_string(),
                    message: e.to_string(),
                }),
            }
        })
        .await
    }

    /// Deletes every object below `prefix/` (`last` after all others, when given), and
    /// on a local control plane the directories left empty, so listings no longer show it.
    pub async fn delete_dir(&self, prefix: &str, last: Option<&str>) -> Result<(), ControlError> {
        let dir = format!("{}/", prefix.trim_end_matches('/'));
        let keys = self.keys(&dir).await?;
        // A long op leaves thousands of log chunks: delete them 32 at a time.
        futures::stream::iter(keys.iter().filter(|k| Some(k.as_str()) != last))
            .map(|k| self.delete(k))
            .buffer_unordered(READ_AHEAD)
            .try_collect::<Vec<()>>()
            .await?;
        if let Some(last) = last {
            self.delete(last).await?;
        }
        if let Some(store) = &self.store {
            store.remove_empty_dirs(prefix.trim_end_matches('/'));
        }
        Ok(())
    }

    // ----- typed records -----

    pub async fn heartbeat(&self, hb: &Heartbeat) -> Result<(), ControlError> {
        self.put(&heartbeat_key(&hb.cluster, &hb.replica_set, &hb.node), hb)
            .await
    }

    /// Every heartbeat of a cluster.
    pub async fn heartbeats(&self, cluster: &str) -> Result<Vec<Heartbeat>, ControlError> {
        self.all(&format!("{AGENTS_PREFIX}/{cluster}")).await
    }

    pub async fn report(&self, r: &PhaseReport) -> Result<(), ControlError> {
        self.put(
            &phase_key(&r.op_id, &r.replica_set, &r.node, r.phase.as_str()),
            r,
        )
        .await
    }

    /// Every phase report of an op, from every node, oldest first.
    pub async fn op_reports(&self, op: &str) -> Result<Vec<PhaseReport>, ControlError> {
        let mut out = Vec::new();
        for key in self.keys(&format!("{OPS_PREFIX}/{op}")).await? {
            // ops/<op>/<rs>/<node>.<phase>.json: three segments below ops/<op>.
            if key.matches('/').count() == 3
                && is_report_key(&key)
                && let Some(r) = self.get::<PhaseReport>(&key).await?
            {
                out.push(r);
            }
        }
        out.sort_by_key(|r| r.at);
        Ok(out)
    }

    /// Every phase report one node wrote for an op, oldest first.
    pub async fn reports(
        &self,
        op: &str,
        rs: &str,
        node: &str,
    ) -> Result<Vec<PhaseReport>, ControlError> {
        let prefix = format!("{OPS_PREFIX}/{op}/{rs}/");
        let mine = format!("{prefix}{}.", node_key_part(node));
        let mut out = Vec::new();
        for key in self.keys(&prefix).await? {
            if key.starts_with(&mine)
                && is_report_key(&key)
                && let Some(r) = self.get::<PhaseReport>(&key).await?
            {
                out.push(r);
            }
        }
        out.sort_by_key(|r| r.at);
        Ok(out)
    }

    /// Every op id, in key order. Ids start with their author's clock, which no reader may
    /// rely on: an op created later can carry an earlier id.
    pub async fn op_ids(&self) -> Result<Vec<String>, ControlError> {
        self.children(OPS_PREFIX).await
    }

    pub async fn op(&self, id: &str) -> Result<Option<Op>, ControlError> {
        self.get(&op_key(id)).await
    }
}

/// Whether a key is a phase report (`…/<node>.<phase>.json` with a known phase), not
/// another record kept next to the reports (a restore log).
pub fn is_report_key(key: &str) -> bool {
    let Some(stem) = key.strip_suffix(".json") else {
        return false;
    };
    let phase = stem.rsplit('.').next().unwrap_or_default();
    serde_json::from_value::<Phase>(serde_json::Value::String(phase.to_string())).is_ok()
}
