//! Planning a selective restore: the backup (as for any restore), the drill agent that
//! runs it, the replica set it writes into, and what it does to each listed namespace.
//! Nothing is stopped, so there are no nodes, waves or disk checks of the cluster.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tidemark_schema::control::{
    BackupRecord, BackupReplicaSet, DRILL_REPLICA_SET, Heartbeat, SelectiveTarget,
};
use tidemark_schema::manifest::CollectionSize;
use tidemark_schema::model::{
    BackupType, ClusterSpec, NsPattern, OnExisting, RestoreSpec, target_namespace,
};

use super::restore::resolve_backup;

/// What `diff` shows of a selective restore, and what the pass starts it with.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SelectivePlan {
    pub restore: String,
    pub cluster: String,
    pub backup: String,
    pub backup_last_write: Option<DateTime<Utc>>,
    /// The backup's replica set the collections come from.
    pub replica_set: String,
    /// Bytes the drill agent downloads: the whole replica set, as a physical backup
    /// cannot be read in part.
    pub download_bytes: u64,
    pub agent: String,
    pub target: SelectiveTarget,
    pub namespaces: Vec<PlannedNamespace>,
    pub on_existing: OnExisting,
}

/// One listed namespace (`db.coll` or `db.*`) and where it goes.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedNamespace {
    pub source: String,
    pub target: String,
    /// What the backup holds of it, summed over the collections it selects, as recorded
    /// when the backup was taken; `None` when the backup recorded no sizes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub documents: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

/// The plan, or why the restore cannot start now. `busy` are drill agents already
/// running a drill or another selective restore.
#[allow(clippy::too_many_arguments)]
pub fn plan_selective(
    name: &str,
    spec: &RestoreSpec,
    cluster: &ClusterSpec,
    backups: &[BackupRecord],
    heartbeats: &[Heartbeat],
    busy: &[String],
    now: DateTime<Utc>,
    dead_after: chrono::Duration,
) -> Result<SelectivePlan, String> {
    let backup = resolve_backup(spec, backups)?;
    if backup.cluster != spec.cluster {
        return Err(format!(
            "backup {:?} is of cluster {:?}, not {:?}",
            backup.name, backup.cluster, spec.cluster
        ));
    }
    if backup.backup_type == BackupType::External {
        return Err(format!(
            "backup {:?} is an external (snapshot) backup: its files are not in storage, and \
             a selective restore reads them from storage",
            backup.name
        ));
    }
    let (Some(rs), [part]) = (cluster.replica_sets.first(), backup.replica_sets.as_slice()) else {
        return Err(format!(
            "backup {:?} holds {} replica sets; a selective restore reads one (sharded \
             clusters are not supported)",
            backup.name,
            backup.replica_sets.len()
        ));
    };
    let alive: Vec<&str> = heartbeats
        .iter()
        .filter(|h| h.cluster == spec.cluster && h.replica_set == DRILL_REPLICA_SET)
        .filter(|h| !h.is_lost(now, dead_after))
        .map(|h| h.node.as_str())
        .collect();
    let agent = alive
        .iter()
        .find(|n| !busy.iter().any(|b| b == *n))
        .ok_or_else(|| {
            if alive.is_empty() {
                format!(
                    "a selective restore runs on a drill agent, and no drill agent of cluster \
                     {:?} is alive (start one with `tidemark agent --drill-dir DIR --node-id \
                     NAME --cluster {}`)",
                    spec.cluster, spec.cluster
                )
            } else {
                format!(
                    "every drill agent is busy with a drill or another selective restore ({})",
                    alive.join(", ")
                )
            }
        })?;
    let namespaces = spec
        .namespaces
        .iter()
        .flatten()
        .map(|ns| {
            let sizes = sizes_of(ns, part);
            PlannedNamespace {
                source: ns.clone(),
                target: target_namespace(ns, spec.rename_to.as_ref()),
                documents: sizes.map(|s| s.documents),
                bytes: sizes.map(|s| s.bytes),
            }
        })
        .collect();
    Ok(SelectivePlan {
        restore: name.to_string(),
        cluster: spec.cluster.clone(),
        backup: backup.name.clone(),
        backup_last_write: backup.last_write,
        replica_set: part.name.clone(),
        download_bytes: part.stored_bytes,
        agent: agent.to_string(),
        target: SelectiveTarget {
            replica_set: rs.name.clone(),
            members: rs.members.clone(),
        },
        namespaces,
        on_existing: spec.on_existing.unwrap_or_default(),
    })
}

/// The size in the backup of what pattern `ns` selects, when the backup recorded sizes.
fn sizes_of(ns: &str, part: &BackupReplicaSet) -> Option<CollectionSize> {
    if part.collections.is_empty() {
        return None;
    }
    let p = NsPattern::parse(ns)?;
    Some(
        part.collections
            .iter()
            .filter(|(name, _)| p.matches(name))
            .fold(CollectionSize::default(), |sum, (_, s)| CollectionSize {
                documents: sum.documents + s.documents,
                bytes: sum.bytes + s.bytes,
            }),
    )
}

/// The plan step's reason: what is copied, where, and what happens to existing targets.
pub fn reason(p: &SelectivePlan) -> String {
    let what = p
        .namespaces
        .iter()
        .map(|n| {
            if n.source == n.target {
                n.source.clone()
            } else {
                format!("{} → {}", n.source, n.target)
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    let existing = match p.on_existing {
        OnExisting::Refuse => "an existing target stops it before any write (onExisting: refuse)",
        OnExisting::Replace => "an existing target is replaced by the backup's copy",
        OnExisting::Merge => "the backup's documents are upserted into an existing target by _id",
    };
    let missing: Vec<&str> = p
        .namespaces
        .iter()
        .filter(|n| n.documents == Some(0) && n.bytes == Some(0))
        .map(|n| n.source.as_str())
        .collect();
    let warning = if missing.is_empty() {
        String::new()
    } else {
        format!(
            "; WARNING: {} held nothing when the backup was taken (the agent refuses a \
             pattern that selects no collection)",
            missing.join(", ")
        )
    };
    format!(
        "new one-shot selective Restore of backup {:?}: copies {what} into replica set {:?} \
         through its primary, on drill agent {:?}; no node is stopped; {existing}{warning}",
        p.backup, p.target.replica_set, p.agent
    )
}
