//! Reads the observed state from the control plane: the applied revision, the one-shot
//! ledger, the backup catalog and the agents' heartbeats.

use std::collections::BTreeMap;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::de::DeserializeOwned;
use tidemark_schema::control::{
    AGENTS_PREFIX, APPLIED_KEY, ATTEMPTED_KEY, AppliedRevision, AttemptedRevision, BackupRecord,
    CATALOG_PREFIX, Heartbeat, ONESHOTS_PREFIX, OneShotRecord,
};

use super::error::ControlError;
use super::store::ControlStore;

/// Everything the planner knows about the world.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedState {
    pub applied: Option<AppliedRevision>,
    pub attempted: Option<AttemptedRevision>,
    /// Keyed by (kind in lowercase, name).
    pub oneshots: BTreeMap<(String, String), OneShotRecord>,
    pub backups: Vec<BackupRecord>,
    pub heartbeats: Vec<Heartbeat>,
}

/// Reads the observed state. An empty or missing control plane gives the empty state.
pub async fn observe(control: &ControlStore) -> Result<ObservedState, ControlError> {
    let Some(store) = &control.store else {
        return Ok(ObservedState::default());
    };
    let reader = Reader {
        url: &control.url,
        store: store.as_ref(),
    };
    let mut observed = ObservedState {
        applied: reader.get(APPLIED_KEY).await?,
        attempted: reader.get(ATTEMPTED_KEY).await?,
        ..Default::default()
    };
    for record in reader.all::<OneShotRecord>(ONESHOTS_PREFIX).await? {
        observed
            .oneshots
            .insert((record.kind.to_lowercase(), record.name.clone()), record);
    }
    observed.backups = reader.all(CATALOG_PREFIX).await?;
    observed
        .backups
        .sort_by(|a, b| (a.started_at, &a.name).cmp(&(b.started_at, &b.name)));
    observed.heartbeats = reader.all(AGENTS_PREFIX).await?;
    observed.heartbeats.sort_by(|a, b| {
        (&a.cluster, &a.replica_set, &a.node).cmp(&(&b.cluster, &b.replica_set, &b.node))
    });
    Ok(observed)
}

struct Reader<'a> {
    url: &'a str,
    store: &'a dyn ObjectStore,
}

impl Reader<'_> {
    async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, ControlError> {
        let path = Path::from(key);
        let bytes = match self.store.get(&path).await {
            Ok(r) => r.bytes().await,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => Err(e),
        }
        .map_err(|source| ControlError::Read {
            url: self.url.to_string(),
            key: key.to_string(),
            source,
        })?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ControlError::Corrupt {
                url: self.url.to_string(),
                key: key.to_string(),
                message: e.to_string(),
            })
    }

    /// Every `*.json` object below `prefix`, parsed.
    async fn all<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<T>, ControlError> {
        let list_err = |source| ControlError::List {
            url: self.url.to_string(),
            prefix: prefix.to_string(),
            source,
        };
        let metas: Vec<_> = match self
            .store
            .list(Some(&Path::from(prefix)))
            .try_collect()
            .await
        {
            Ok(m) => m,
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(list_err(e)),
        };
        let mut keys: Vec<String> = metas
            .into_iter()
            .map(|m| m.location.to_string())
            .filter(|k| k.ends_with(".json"))
            .collect();
        keys.sort();
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(v) = self.get(&key).await? {
                out.push(v);
            }
        }
        Ok(out)
    }
}
