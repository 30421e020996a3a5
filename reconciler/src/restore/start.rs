//! Starting a restore. Pre-flight, touching nothing: every data-bearing member has a live
//! agent, its mongod's major.minor matches the backup's, its master key opens the backup
//! (or, with allowPartlyDone, it is emptied for initial sync while every replica set keeps
//! one node that can decrypt), and the backup's storage answers with the completion
//! marker and every manifest. Then the op goes to every node at once
//! with `waitForGo`, so that no node is touched until all of them passed their checks.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tidemark_schema::control::{
    BackupMarker, Heartbeat, Op, OpCommand, OpTarget, StorageTarget, op_id,
};
use tidemark_schema::manifest::layout;
use tidemark_store::storage::BackupStore;

use crate::execute::{ExecError, Executor};
use crate::plan::RestorePlan;

/// What a restore was started with, kept in its ledger record.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSettings {
    pub cluster: String,
    pub backup: String,
    pub fallback_enabled: bool,
    pub allow_partly_done: bool,
    pub external: bool,
    #[serde(default)]
    pub start_nodes: bool,
    #[serde(default)]
    pub fresh_backup: Option<String>,
    /// A point-in-time restore: the target its nodes replay to, and why its base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point_in_time: Option<PointInTimeSettings>,
    /// What made the reconciler start it; copied into its op.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<tidemark_schema::control::OpCause>,
}

/// What `describe-restore` shows of a point-in-time restore.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PointInTimeSettings {
    pub target: tidemark_schema::control::ReplayTarget,
    pub base_reason: String,
    pub chunks: usize,
    pub chunk_bytes: u64,
}

impl PointInTimeSettings {
    pub fn of(p: &crate::plan::PointInTimePlan) -> Self {
        PointInTimeSettings {
            target: p.target,
            base_reason: p.base_reason.clone(),
            chunks: p.chunk_count(),
            chunk_bytes: p.chunk_bytes(),
        }
    }
}

/// What stops a restore from starting now.
#[derive(Debug, PartialEq, Eq)]
pub enum NotNow {
    /// It may start later (an agent not reporting yet, storage not answering).
    Wait(String),
    /// It never will (another mongod version): it ends as refused, nothing touched.
    Refuse(String),
}

/// `major.minor` of a version string (`7.0.14-8` → `7.0`).
fn major_minor(v: &str) -> &str {
    let mut dots = v.match_indices('.');
    match dots.nth(1) {
        Some((i, _)) => &v[..i],
        None => v,
    }
}

/// The checks that need the world (heartbeats, storage); the planner did the rest.
pub async fn preflight(
    ex: &Executor,
    plan: &RestorePlan,
    storage: &StorageTarget,
    heartbeats: &[Heartbeat],
    now: DateTime<Utc>,
) -> Result<(), NotNow> {
    if let Some(why) = declared_before_target(ex, plan).await? {
        return Err(NotNow::Refuse(why));
    }
    let mut wait = Vec::new();
    let mut refuse = Vec::new();
    let store = BackupStore::open_with_env(storage, ex.storage_env.clone())
        .map_err(|e| NotNow::Wait(format!("backup storage: {e}")))?;
    let marker: Option<BackupMarker> = match store
        .get_json(&layout::backup_marker_key(&plan.backup))
        .await
    {
        Ok(m) => m,
        Err(e) => return Err(NotNow::Wait(format!("backup storage unreachable: {e}"))),
    };
    let Some(marker) = marker else {
        return Err(NotNow::Refuse(format!(
            "backup {:?} has no completion marker {} in {}: it is not complete",
            plan.backup,
            layout::backup_marker_key(&plan.backup),
            store.url()
        )));
    };
    // The backup's replica set a node restores (its own name unless remapped).
    let source = |n: &crate::plan::RestoreNode| {
        plan.remap
            .get(&n.replica_set)
            .unwrap_or(&n.replica_set)
            .clone()
    };
    for n in &plan.nodes {
        let hb = heartbeats.iter().find(|h| {
            h.cluster == plan.cluster && h.replica_set == n.replica_set && h.node == n.node
        });
        let Some(hb) = hb else {
            wait.push(format!("{}: no agent has reported", n.node));
            continue;
        };
        if hb.is_lost(now, ex.dead_after) {
            wait.push(format!(
                "{}: agent silent since {} (dead after {}s)",
                n.node,
                hb.at.to_rfc3339(),
                hb.dead_after(ex.dead_after).num_seconds()
            ));
            continue;
        }
        if !hb.mongod_version.starts_with(|c: char| c.is_ascii_digit()) {
            // mongod did not answer its agent ("unknown"): ask again later.
            wait.push(format!(
                "{}: mongod version not known yet ({})",
                n.node, hb.mongod_version
            ));
        } else if let Some(part) = marker.replica_sets.iter().find(|r| r.name == source(n))
            && major_minor(&part.mongod_version) != major_minor(&hb.mongod_version)
        {
            refuse.push(format!(
                "{}: mongod {} cannot restore a backup taken with {} (major.minor must match)",
                n.node, hb.mongod_version, part.mongod_version
            ));
        }
        let part = marker.replica_sets.iter().find(|r| r.name == source(n));
        // An encrypted backup needs each node's key known before anything is decided:
        // a beat without mongod's answer, or a key file its agent cannot read, waits.
        if let Some(part) = part.filter(|p| p.encryption_recorded) {
            if !hb.encryption_known {
                wait.push(format!(
                    "{}: its agent has not read mongod's encryption settings yet",
                    n.node
                ));
            } else if !crate::plan::keys_known(part, hb) {
                wait.push(format!(
                    "{}: a master key file cannot be read by its agent, so whether the node \
                     can decrypt backup {:?} is unknown ({})",
                    n.node,
                    plan.backup,
                    hb.encryption
                        .as_ref()
                        .or(part.encryption.as_ref())
                        .map_or(String::new(), |e| e.key_id.clone())
                ));
            }
        }
        let present = match part {
            Some(part) if !plan.external => store
                .exists(&layout::rs_manifest_key(&plan.backup, &part.name))
                .await
                .map_err(|e| NotNow::Wait(format!("backup storage unreachable: {e}")))?,
            _ => true,
        };
        if let Some(part) = part
            && !present
        {
            refuse.push(format!(
                "replica set {}: manifest {} is missing from {}",
                part.name,
                layout::rs_manifest_key(&plan.backup, &part.name),
                store.url()
            ));
        }
    }
    // Nodes whose master key does not open the backup: restored around (they initial-
    // sync) only when partial results are accepted and every replica set keeps one node
    // that can decrypt; otherwise refused now, before any node is stopped.
    let unreadable: Vec<String> = plan
        .nodes
        .iter()
        .filter_map(|n| Some(format!("{}: {}", n.node, n.cannot_decrypt.as_ref()?)))
        .collect();
    if !unreadable.is_empty() {
        if !plan.allow_partly_done {
            refuse.push(format!(
                "these nodes cannot decrypt backup {:?}: {}; allowPartlyDone is false, so no \
                 node is restored around them",
                plan.backup,
                unreadable.join("; ")
            ));
        } else {
            let mut sets: Vec<&str> = plan.nodes.iter().map(|n| n.replica_set.as_str()).collect();
            sets.dedup();
            for rs in sets {
                if plan
                    .nodes
                    .iter()
                    .filter(|n| n.replica_set == rs)
                    .all(|n| n.cannot_decrypt.is_some())
                {
                    refuse.push(format!(
                        "replica set {rs}: no node can decrypt backup {:?} ({})",
                        plan.backup,
                        unreadable.join("; ")
                    ));
                }
            }
        }
    }
    if !refuse.is_empty() {
        refuse.extend(wait);
        return Err(NotNow::Refuse(refuse.join("; ")));
    }
    if !wait.is_empty() {
        return Err(NotNow::Wait(wait.join("; ")));
    }
    if !plan.external {
        let sources: Vec<String> = plan.nodes.iter().map(source).collect();
        objects_present(&store, &plan.backup, &sources).await?;
    }
    if let Some(p) = &plan.point_in_time {
        chunks_present(&store, p).await?;
    }
    Ok(())
}

/// Clocks may differ this much before a target counts as declared ahead of its time.
const FUTURE_MARGIN_SECONDS: i64 = 60;

/// A point-in-time restore that has waited since before its target: it was declared for a
/// time to come (a wrong date or time zone, most often) and must not start by surprise
/// when that time arrives. `None` when it may start.
async fn declared_before_target(
    ex: &Executor,
    plan: &RestorePlan,
) -> Result<Option<String>, NotNow> {
    // Only a wall-clock target can be a mistyped time to come: a cluster time is copied
    // from an oplog entry that exists (and a cluster's clock may run ahead of this host's).
    let Some(target) = plan.point_in_time.as_ref().map(|p| p.target) else {
        return Ok(None);
    };
    let Some(at) = target.wall else {
        return Ok(None);
    };
    let key = tidemark_schema::control::waiting_key(
        tidemark_schema::control::OneShotKind::Restore.key(),
        &plan.restore,
    );
    let waiting: Option<tidemark_schema::control::WaitingRecord> = ex
        .control
        .get(&key)
        .await
        .map_err(|e| NotNow::Wait(format!("control plane: {e}")))?;
    // Waiting for another target (the Restore was edited since) is not waiting for this.
    let Some(waiting) = waiting.filter(|w| w.target == Some(target)) else {
        return Ok(None);
    };
    let since = waiting.since.unwrap_or(waiting.at);
    Ok(waited_since_before(since, at).then(|| {
        format!(
            "its target {target} was in the future when the restore was first seen (waiting \
             since {}): a restore is never started when a time it was declared for comes; \
             correct the time and give the Restore a new name",
            since.to_rfc3339()
        )
    }))
}

/// Whether waiting began before the target (beyond the clock margin).
fn waited_since_before(since: DateTime<Utc>, target: DateTime<Utc>) -> bool {
    since + chrono::Duration::seconds(FUTURE_MARGIN_SECONDS) < target
}

/// Every oplog chunk a point-in-time restore replays is in storage with its recorded
/// size: one HEAD each, in parallel (the agents then check their contents before they
/// touch anything).
async fn chunks_present(
    store: &BackupStore,
    p: &crate::plan::PointInTimePlan,
) -> Result<(), NotNow> {
    use futures::StreamExt;
    let chunks: Vec<&tidemark_schema::control::ChunkRef> =
        p.replica_sets.iter().flat_map(|r| &r.chunks).collect();
    let sizes: Vec<_> = futures::stream::iter(chunks.iter().map(|c| store.object_size(&c.object)))
        .buffered(16)
        .collect()
        .await;
    let mut problems = Vec::new();
    for (c, size) in chunks.iter().zip(sizes) {
        match size {
            Err(e) => return Err(NotNow::Wait(format!("backup storage unreachable: {e}"))),
            Ok(None) => problems.push(format!("oplog chunk {} is missing", c.object)),
            Ok(Some(n)) if n != c.stored_bytes => problems.push(format!(
                "oplog chunk {} holds {n} bytes, its record says {}",
                c.object, c.stored_bytes
            )),
            Ok(Some(_)) => {}
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(NotNow::Refuse(format!(
        "the oplog to replay up to {} cannot be read from {}: {}",
        p.target,
        store.url(),
        problems.join("; ")
    )))
}

/// Every object of every manifest the restore needs is in storage with the size its
/// manifest records: one HEAD per object, in parallel. Checked last, once nothing else
/// makes the restore wait, because a node wiped for an object that then cannot be
/// fetched is a node lost (without fallback, every node of the cluster).
async fn objects_present(
    store: &BackupStore,
    backup: &str,
    sources: &[String],
) -> Result<(), NotNow> {
    use tidemark_store::verify::{Level, verify_backup};
    let verified = verify_backup(
        store,
        backup,
        Level::Metadata,
        &|_: tidemark_store::verify::Progress| {},
    )
    .await
    .map_err(|e| NotNow::Wait(format!("backup storage unreachable: {e}")))?;
    // Problems of the replica sets this restore reads. The marker was checked above; a
    // problem naming no replica set is about listing or the marker, which the agents
    // check again, and must not refuse a restore for a storage that hiccuped once.
    let problems: Vec<String> = verified
        .problems
        .iter()
        .filter(|p| {
            p.replica_set
                .as_ref()
                .is_some_and(|rs| sources.contains(rs))
        })
        .map(|p| p.to_string())
        .collect();
    if problems.is_empty() {
        return Ok(());
    }
    const SHOWN: usize = 5;
    let more = problems.len().saturating_sub(SHOWN);
    Err(NotNow::Refuse(format!(
        "backup {backup:?} in {} cannot be restored: {}{}",
        store.url(),
        problems[..problems.len().min(SHOWN)].join("; "),
        if more > 0 {
            format!("; and {more} more (tidemark verify {backup} lists them all)")
        } else {
            String::new()
        }
    )))
}

/// The stop order: the shards' secondaries, the shards' primaries, then the config
/// server's secondaries and its primary (docs/reconciler.md: secondaries first, the primary
/// after it steps down; a sharded cluster's config server last). A replica set alone: its
/// secondaries, then its primary.
fn stop_waves(plan: &RestorePlan) -> Vec<Vec<OpTarget>> {
    let config = plan
        .sharding
        .as_ref()
        .and_then(|s| s.config_server.split('/').next())
        .unwrap_or_default();
    let mut waves: Vec<Vec<OpTarget>> = vec![Vec::new(); 4];
    for n in &plan.nodes {
        let wave = match (
            n.replica_set == config,
            n.role == tidemark_schema::control::MemberRole::Primary,
        ) {
            (false, false) => 0,
            (false, true) => 1,
            (true, false) => 2,
            (true, true) => 3,
        };
        waves[wave].push(OpTarget {
            replica_set: n.replica_set.clone(),
            node: n.node.clone(),
        });
    }
    waves.retain(|w| !w.is_empty());
    waves
}

/// Records the restore and writes its op. `Ok(Some(reason))` when it must wait.
pub async fn start(
    ex: &Executor,
    plan: &RestorePlan,
    settings: RestoreSettings,
    storage: StorageTarget,
    heartbeats: &[Heartbeat],
    now: DateTime<Utc>,
) -> Result<Option<String>, ExecError> {
    let problem = preflight(ex, plan, &storage, heartbeats, now).await;
    // Stamped after the checks, which HEAD every object and may take minutes on a large
    // backup: the op's age (its go timeout, its deadline) counts from its writing.
    let now = chrono::Utc::now().max(now);
    let replay = plan.point_in_time.as_ref().map(|p| p.replay());
    let op = Op {
        id: op_id(now, "restore", &plan.restore),
        created_at: now,
        cluster: plan.cluster.clone(),
        targets: plan
            .nodes
            .iter()
            .map(|n| OpTarget {
                replica_set: n.replica_set.clone(),
                node: n.node.clone(),
            })
            .collect(),
        command: OpCommand::Restore {
            backup: plan.backup.clone(),
            storage: storage.clone(),
            fallback_enabled: plan.fallback_enabled,
            external: plan.external,
            wait_for_go: true,
            cannot_decrypt: plan
                .nodes
                .iter()
                .filter(|n| n.cannot_decrypt.is_some())
                .map(|n| OpTarget {
                    replica_set: n.replica_set.clone(),
                    node: n.node.clone(),
                })
                .collect(),
            replica_set_map: plan.remap.clone(),
            sharding: plan.sharding.clone(),
            stop_waves: stop_waves(plan),
            go_timeout_ms: Some(
                (ex.go_timeout.num_milliseconds().max(0) as u64).saturating_add(
                    replay
                        .as_ref()
                        .map_or(0, |r| r.check_allowance().as_millis() as u64),
                ),
            ),
            point_in_time: replay,
        },
        deadline: Some(now + ex.op_deadline),
        epoch: None,
        cause: settings.cause.clone(),
    };
    let settings_json =
        serde_json::to_value(&settings).map_err(|e| ExecError::Invalid(e.to_string()))?;
    match problem {
        Ok(()) => {
            ex.start_oneshot(
                tidemark_schema::control::OneShotKind::Restore,
                &plan.restore,
                &op,
                settings_json,
                None,
                now,
            )
            .await?;
            Ok(None)
        }
        Err(NotNow::Wait(why)) => Ok(Some(why)),
        Err(NotNow::Refuse(why)) => {
            // It ran, in the sense that matters: it was refused once, for good, and a new
            // name is needed to try again. No op is written, so no node ever sees it.
            if ex
                .start_oneshot(
                    tidemark_schema::control::OneShotKind::Restore,
                    &plan.restore,
                    &op,
                    settings_json,
                    Some(&why),
                    now,
                )
                .await?
            {
                tracing::error!(restore = %plan.restore, reason = %why, "restore refused; nothing was touched");
            }
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_restore_waiting_since_before_its_target_was_declared_for_the_future() {
        let t: chrono::DateTime<chrono::Utc> = "2026-12-04T15:00:00Z".parse().unwrap();
        let hours = |h| t - chrono::Duration::hours(h);
        assert!(
            super::waited_since_before(hours(3), t),
            "a date typed a day wrong"
        );
        assert!(
            !super::waited_since_before(t, t),
            "declared at its own time"
        );
        assert!(
            !super::waited_since_before(t - chrono::Duration::seconds(30), t),
            "within the clock margin"
        );
        assert!(!super::waited_since_before(
            t + chrono::Duration::hours(1),
            t
        ));
    }

    #[test]
    fn major_minor_of_versions() {
        assert_eq!(super::major_minor("7.0.14-8"), "7.0");
        assert_eq!(super::major_minor("8.0"), "8.0");
        assert_eq!(super::major_minor("6"), "6");
    }
}
