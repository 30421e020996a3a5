//! Pre-checks while mongod is still up: capture what the node needs to come back (its
//! command line and replica-set config), and check the backup is complete, safe and of
//! the same mongod major.minor. Nothing is touched if any check fails.

use serde::{Deserialize, Serialize};
use serde_json::json;
use tidemark_schema::control::Phase;
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
    pub role: tidemark_schema::control::MemberRole,
    pub version: String,
    /// mongod options the files need to be opened at all (directory layout, encryption),
    /// passed to every temporary standalone start.
    #[serde(default)]
    pub standalone_args: Vec<String>,
    /// `shardsvr` or `configsvr` (`sharding.clusterRole`): which sharding metadata the
    /// last standalone start rewrites.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_role: Option<String>,
}

pub struct Checked {
    pub client: MongodClient,
    /// `getCmdLineOpts` as the node answered it before anything was touched.
    pub cmdline: bson::Document,
    pub captured: Captured,
    pub manifest: ReplicaSetManifest,
    /// The manifests the restore is built from, base first, `manifest` last (one for a
    /// full backup).
    pub links: Vec<ReplicaSetManifest>,
    pub store: BackupStore,
    /// The `precheck` report's figures (the captured command line among them, which
    /// the follow-up start reads back): a later rewrite of that report keeps them.
    pub report: Details,
}

fn major_minor(v: &str) -> String {
    v.split(['.', '-']).take(2).collect::<Vec<_>>().join(".")
}

/// `cannot_decrypt`: the reconciler's pre-flight found this node's key does not open the
/// backup: it goes on only to stop with the others, untouched, and is wiped for initial
/// sync by the decision.
pub async fn precheck(
    node: &Node,
    op: &Op,
    backup: &str,
    storage: &StorageTarget,
    external: bool,
    cannot_decrypt: bool,
    source_rs: &str,
) -> Result<Checked, PhaseFailure> {
    const PHASE: Phase = Phase::Precheck;
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
    check_dbpath(node, &cmdline).in_phase(PHASE)?;
    if let Some((other, _)) = super::fallback::fallback_of(&node.cfg.dbpath).in_phase(PHASE)?
        && other != op.id
    {
        return Err(AgentError::Refused(format!(
            "the dbPath still holds the fallback of restore {other}; revert or remove it first; \
             nothing was touched"
        )))
        .in_phase(PHASE);
    }
    let config = client.replset_config().await.in_phase(PHASE)?;
    let store = BackupStore::open(storage).in_phase(PHASE)?;
    let key = layout::rs_manifest_key(backup, source_rs);
    let bytes = read_object(&store, &key)
        .await
        .in_phase(PHASE)?
        .ok_or_else(|| PhaseFailure {
            phase: PHASE,
            error: AgentError::Refused(format!(
                "backup {backup} has no manifest for replica set {source_rs} at {key}: the \
             backup is incomplete or does not exist; nothing was touched"
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
    let links = super::chain::links(&store, manifest.clone(), external)
        .await
        .in_phase(PHASE)?;
    check_encryption(backup, &manifest, &cmdline, cannot_decrypt).in_phase(PHASE)?;
    // The files go back where the backup's layout puts them, and the node starts with
    // its own: the two must agree, or it restores and then cannot start.
    let theirs = crate::mongod::encryption::layout_args(&manifest.storage_options);
    let ours =
        crate::mongod::encryption::layout_args(&crate::backup::manifest::storage_options(&cmdline));
    if theirs != ours {
        return Err(AgentError::Refused(format!(
            "backup {backup} was taken with storage layout {theirs:?} but this node runs with \
             {ours:?} (directoryPerDB / directoryForIndexes must match); nothing was touched"
        )))
        .in_phase(PHASE);
    }
    // A remap must not put a config server's data on a shard, or the reverse.
    let role = cmdline
        .get_document("parsed")
        .and_then(|p| p.get_document("sharding"))
        .and_then(|s| s.get_str("clusterRole"))
        .ok()
        .map(str::to_string);
    if manifest.cluster_role.is_some() && manifest.cluster_role != role {
        return Err(AgentError::Refused(format!(
            "backup {backup}'s replica set {source_rs} was a {} but this node is a {}; \
             nothing was touched",
            manifest
                .cluster_role
                .as_deref()
                .unwrap_or("plain replica set"),
            role.as_deref().unwrap_or("plain replica set member")
        )))
        .in_phase(PHASE);
    }
    // The backup's own layout; the node's own key source (its key file, Vault or KMIP).
    let mut standalone_args = crate::mongod::encryption::layout_args(&manifest.storage_options);
    standalone_args.extend(crate::mongod::encryption::key_source_args(&cmdline));
    let captured = Captured {
        cluster_role: role,
        standalone_args,
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
        json!(tidemark_schema::chain::uncompressed_bytes(&links)),
    );
    if links.len() > 1 {
        d.insert(
            "chain".into(),
            json!(links.iter().map(|m| &m.backup).collect::<Vec<_>>()),
        );
    }
    d.insert("lastWrite".into(), json!(manifest.last_write));
    node.done(
        op,
        PHASE,
        format!(
            "backup {backup} is complete{} and matches mongod {}",
            match links.len() {
                1 => String::new(),
                n => format!(" with its chain of {n} backups"),
            },
            facts.version
        ),
        d.clone(),
    )
    .await?;
    Ok(Checked {
        cmdline,
        client,
        captured,
        manifest,
        links,
        store,
        report: d,
    })
}

/// The raw bytes of a small object, `None` when it does not exist. The manifest is parsed
/// from bytes so that its own validation (paths, totals) runs on exactly what is stored.
pub(crate) async fn read_object(
    store: &BackupStore,
    key: &str,
) -> Result<Option<bytes::Bytes>, AgentError> {
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

/// The agent's `--dbpath` must be the directory mongod really uses: a restore into any
/// other directory would move or wipe the wrong data.
fn check_dbpath(node: &Node, cmdline: &bson::Document) -> Result<(), AgentError> {
    match dbpath_mismatch(&node.cfg.dbpath, cmdline) {
        Some(why) => Err(AgentError::Refused(format!("{why}; nothing was touched"))),
        None => Ok(()),
    }
}

/// mongod's dbPath from `getCmdLineOpts`. mongod leaves `storage.dbPath` out when it runs
/// on its default (as in the official container image), which is `/data/db`, or
/// `/data/configdb` for a config server: that default is compared, never skipped, or a
/// wrong `--dbpath` would be wiped and "restored" while mongod restarts on its real data.
fn mongod_dbpath(cmdline: &bson::Document) -> (std::path::PathBuf, bool) {
    let parsed = cmdline.get_document("parsed").ok();
    if let Some(p) = parsed
        .and_then(|p| p.get_document("storage").ok())
        .and_then(|s| s.get_str("dbPath").ok())
    {
        return (p.into(), false);
    }
    let configsvr = parsed
        .and_then(|p| p.get_document("sharding").ok())
        .and_then(|s| s.get_str("clusterRole").ok())
        == Some("configsvr");
    let default = if configsvr {
        "/data/configdb"
    } else {
        "/data/db"
    };
    (default.into(), true)
}

/// Why `ours` is not the dbPath of the mongod that answered `cmdline`, or `None`.
fn dbpath_mismatch(ours: &std::path::Path, cmdline: &bson::Document) -> Option<String> {
    let (theirs, default) = mongod_dbpath(cmdline);
    let canon = |p: &std::path::Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let (ours, theirs) = (canon(ours), canon(&theirs));
    (ours != theirs).then(|| {
        format!(
            "the agent's --dbpath {} is not mongod's dbPath {}{}",
            ours.display(),
            theirs.display(),
            if default {
                " (its default: mongod was started without a dbPath)"
            } else {
                ""
            }
        )
    })
}

/// Everything about the backup that would otherwise fail only after mongod is stopped.
pub(crate) fn check_restorable(
    backup: &str,
    m: &ReplicaSetManifest,
    external: bool,
) -> Result<(), AgentError> {
    use tidemark_schema::model::BackupType;
    if m.backup_type == BackupType::External && !external {
        return Err(AgentError::Refused(format!(
            "backup {backup} is an external (snapshot) backup: its files are not in storage; \
             restore it with external: true; nothing was touched"
        )));
    }
    if !external
        && let Some(f) = m
            .files
            .iter()
            .find(|f| !m.is_patch(f) && (f.object.is_none() || !f.checksum.starts_with("blake3:")))
    {
        return Err(AgentError::Refused(format!(
            "backup {backup} lists {} without a stored object and checksum; nothing was touched",
            f.path
        )));
    }
    Ok(())
}

/// The node's encryption against the backup's: a node that cannot decrypt is refused
/// unless the reconciler listed it to be stopped and resynced; a listed node that can decrypt after all
/// (the pre-flight saw stale facts) is refused too, so that no good node is resynced.
fn check_encryption(
    backup: &str,
    manifest: &ReplicaSetManifest,
    cmdline: &bson::Document,
    listed: bool,
) -> Result<(), AgentError> {
    use tidemark_schema::encryption::decrypt_problem;
    if !manifest.encryption_recorded {
        return Ok(()); // an older agent's backup: nothing recorded to compare with
    }
    let mine = crate::mongod::encryption::settings(cmdline);
    for e in mine.iter().chain(manifest.encryption.iter()) {
        if !e.key_known() {
            return Err(AgentError::Refused(format!(
                "whether this node can decrypt backup {backup} is unknown: {}; nothing was \
                 touched",
                e.key_id
            )));
        }
    }
    match (
        decrypt_problem(manifest.encryption.as_ref(), mine.as_ref()),
        listed,
    ) {
        (Some(why), false) => Err(AgentError::Refused(format!(
            "this node cannot decrypt backup {backup}: {why}; nothing was touched"
        ))),
        (None, true) => Err(AgentError::Refused(format!(
            "the restore lists this node as unable to decrypt backup {backup}, but its key \
             matches now; refusing to empty a node that can restore; nothing was touched"
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn a_mongod_on_its_default_dbpath_is_compared_with_that_default() {
        let dir = tempfile::TempDir::new().unwrap();
        let default = doc! {"argv": ["mongod", "--replSet", "rs0"], "parsed": {"replication": {"replSetName": "rs0"}}};
        let why = dbpath_mismatch(dir.path(), &default).expect("a wrong --dbpath is refused");
        assert!(why.contains("/data/db") && why.contains("default"), "{why}");
        let config = doc! {"parsed": {"sharding": {"clusterRole": "configsvr"}}};
        assert!(
            dbpath_mismatch(dir.path(), &config)
                .unwrap()
                .contains("/data/configdb")
        );
        let explicit = doc! {"parsed": {"storage": {"dbPath": dir.path().to_str().unwrap()}}};
        assert_eq!(dbpath_mismatch(dir.path(), &explicit), None);
        assert_eq!(
            dbpath_mismatch(std::path::Path::new("/data/db"), &default),
            None
        );
    }
}
