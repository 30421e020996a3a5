//! The agent's side of the control plane: its heartbeat, the ops addressed to it, and its
//! phase reports. The agent writes only keys that name its own node.

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tidemark_schema::control::{
    Heartbeat, OPS_PREFIX, Op, PhaseReport, heartbeat_key, node_key_part, op_key, phase_key,
};

use crate::error::AgentError;

#[derive(Clone)]
pub struct ControlPlane {
    pub url: String,
    store: Arc<dyn ObjectStore>,
}

impl ControlPlane {
    pub fn new(url: &str, store: Arc<dyn ObjectStore>) -> Self {
        ControlPlane {
            url: url.to_string(),
            store,
        }
    }

    fn err(&self, key: &str, e: impl std::fmt::Display) -> AgentError {
        AgentError::Control {
            url: self.url.clone(),
            key: key.to_string(),
            message: e.to_string(),
        }
    }

    pub async fn put<T: Serialize>(&self, key: &str, value: &T) -> Result<(), AgentError> {
        let bytes = serde_json::to_vec_pretty(value).map_err(|e| self.err(key, e))?;
        self.store
            .put(&Path::from(key), PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| self.err(key, e))
    }

    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, AgentError> {
        match self.store.get(&Path::from(key)).await {
            Ok(r) => {
                let bytes = r.bytes().await.map_err(|e| self.err(key, e))?;
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| self.err(key, format!("corrupt: {e}")))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(key, e)),
        }
    }

    pub async fn heartbeat(&self, hb: &Heartbeat) -> Result<(), AgentError> {
        self.put(&heartbeat_key(&hb.cluster, &hb.replica_set, &hb.node), hb)
            .await
    }

    pub async fn report(&self, r: &PhaseReport) -> Result<(), AgentError> {
        self.put(&phase_key(&r.op_id, &r.replica_set, &r.node, &r.phase), r)
            .await
    }

    /// Every phase report this node wrote for an op, oldest first.
    pub async fn reports(
        &self,
        op: &str,
        rs: &str,
        node: &str,
    ) -> Result<Vec<PhaseReport>, AgentError> {
        let prefix = format!("{OPS_PREFIX}/{op}/{rs}/");
        let mine = format!("{prefix}{}.", node_key_part(node));
        let metas: Vec<_> = self
            .store
            .list(Some(&Path::from(prefix.as_str())))
            .try_collect()
            .await
            .map_err(|e| self.err(&prefix, e))?;
        let mut out = Vec::new();
        for m in metas {
            let key = m.location.to_string();
            if key.starts_with(&mine)
                && let Some(r) = self.get::<PhaseReport>(&key).await?
            {
                out.push(r);
            }
        }
        out.sort_by_key(|r| r.at);
        Ok(out)
    }

    /// Op ids that sort after `after`, in order. Ids start with their creation time.
    pub async fn op_ids_after(&self, after: Option<&str>) -> Result<Vec<String>, AgentError> {
        let listing = self
            .store
            .list_with_delimiter(Some(&Path::from(OPS_PREFIX)))
            .await;
        let listing = match listing {
            Ok(l) => l,
            Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(self.err(OPS_PREFIX, e)),
        };
        let mut ids: Vec<String> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .filter(|id| after.is_none_or(|a| id.as_str() > a))
            .collect();
        ids.sort();
        Ok(ids)
    }

    pub async fn op(&self, id: &str) -> Result<Option<Op>, AgentError> {
        self.get(&op_key(id)).await
    }
}
