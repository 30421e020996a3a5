//! Pre-checks while mongod is still up: capture what the node needs to come back (its
//! command line and replica-set config), and check the backup is complete, safe and of
//! the same mongod major.minor. Nothing is touched if any check fails.

use serde::{Deserialize, Serialize};
use serde_json::json;
use tidemark_schema::control::{Op, StorageTarget};
use tidemark_schema::manifest::{ReplicaSetManifest, layout};

use crate::error::AgentError;
use crate::mongod::MongodClient;
use crate::node::{Details, InPhase, Node, PhaseFailure};
use crate::storage::BackupStore;

/// What the node was before the restore, recorded in the `precheck` report so that a
/// restarted agent can still start mongod the way it ran.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Captured {
    pub argv: Vec<String>,
    /// The replica-set config as relaxed extended JSON.
    pub replset_config: serde_json::Value,
    pub role: String,
    pub version: String,
}

pub struct Checked {
    pub client: MongodClient,
    pub captured: Captured,
    pub manifest: ReplicaSetManifest,
    pub store: BackupStore,
}

fn major_minor(v: &str) -> String {
    v.split(['.', '-']).take(2).collect::<Vec<_>>().join(".")
}

pub async fn precheck(
    node: &Node,
    op: &Op,
    backup: &str,
    storage: &StorageTarget,
) -> Result<Checked, PhaseFailure> {
    const PHASE: &str = "precheck";
    node.running(op, PHASE, "checking the node and the backup")
        .await?;
    let client = node.mongod().await.in_phase(PHASE)?;
    let facts = client.facts().await.in_phase(PHASE)?;
    let cmdline = client.cmd_line_opts().await.in_phase(PHASE)?;
    let argv: Vec<String> = cmdline
        .get_array("argv")
        .map(|a| {
            a.iter()
                .filter_map(|b| b.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let config = client.replset_config().await.in_phase(PHASE)?;
    let store = BackupStore::open(storage).in_phase(PHASE)?;
    let key = layout::rs_manifest_key(backup, &node.replica_set);
    let bytes = read_object(&store, &key)
        .await
        .in_phase(PHASE)?
        .ok_or_else(|| PhaseFailure {
            phase: PHASE,
            error: AgentError::Refused(format!(
                "backup {backup} has no manifest for replica set {} at {key}: the backup is \
             incomplete or does not exist; nothing was touched",
                node.replica_set
            )),
        })?;
    let manifest = ReplicaSetManifest::from_json(&bytes).map_err(|e| PhaseFailure {
        phase: PHASE,
        error: AgentError::Refused(format!("{key}: {e}; nothing was touched")),
    })?;
    if major_minor(&manifest.mongod_version) != major_minor(&facts.version) {
        return Err(AgentError::Refused(format!(
            "backup {backup} was taken with mongod {} but this node runs {}: a physical \
             restore needs the same major.minor; nothing was touched",
            manifest.mongod_version, facts.version
        )))
        .in_phase(PHASE);
    }
    let captured = Captured {
        argv,
        // Canonical extended JSON keeps every BSON type (int32 vs int64) for the round trip.
        replset_config: bson::Bson::Document(config).into_canonical_extjson(),
        role: facts.role.clone(),
        version: facts.version.clone(),
    };
    let mut d = Details::new();
    d.insert("captured".into(), json!(captured));
    d.insert("backupFiles".into(), json!(manifest.files.len()));
    d.insert(
        "backupUncompressedBytes".into(),
        json!(manifest.uncompressed_bytes),
    );
    d.insert("lastWrite".into(), json!(manifest.last_write));
    node.done(
        op,
        PHASE,
        format!(
            "backup {backup} is complete and matches mongod {}",
            facts.version
        ),
        d,
    )
    .await?;
    Ok(Checked {
        client,
        captured,
        manifest,
        store,
    })
}

/// The raw bytes of a small object, `None` when it does not exist. The manifest is parsed
/// from bytes so that its own validation (paths, totals) runs on exactly what is stored.
async fn read_object(store: &BackupStore, key: &str) -> Result<Option<bytes::Bytes>, AgentError> {
    use object_store::ObjectStoreExt;
    let err = |e: object_store::Error| {
        AgentError::Refused(format!("{}: cannot read {key}: {e}", store.url()))
    };
    match store
        .object_store()
        .get(&object_store::path::Path::from(key))
        .await
    {
        Ok(r) => r.bytes().await.map(Some).map_err(err),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(err(e)),
    }
}
