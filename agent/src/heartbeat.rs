//! The heartbeat: the node's facts and disk figures go to the control plane at once when
//! they change and at least every `--heartbeat-interval`. The reconciler picks backup nodes and judges fallback room from them, and
//! declares an agent dead when they stop.

use std::sync::Arc;

use chrono::Utc;
use tidemark_schema::control::Heartbeat;
use tidemark_schema::control::MemberRole;

use crate::disk::disk_facts;
use crate::mongod::MongodClient;
use crate::node::Node;

/// How long a beat waits for mongod's answers before reporting it `DOWN`.
const FACTS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Builds one heartbeat. A mongod that does not answer is reported as `DOWN`, not as an
/// error: during a restore that is expected.
pub async fn beat(node: &Node, client: Option<&MongodClient>) -> Heartbeat {
    // Bounded: a stopped mongod (a restore) would otherwise hold each beat for the
    // driver's server-selection timeout, and a node whose beats come late is declared
    // dead by the reconciler while its agent is busy restoring it.
    let facts = match client {
        Some(client) => tokio::time::timeout(FACTS_TIMEOUT, client.facts())
            .await
            .ok()
            .and_then(Result::ok),
        None => None,
    };
    // What the restore's pre-flight compares with a backup's: read each beat, since a
    // node restarted with another key must not be judged by its old one.
    let cmdline = match (client, &facts) {
        (Some(client), Some(_)) => tokio::time::timeout(FACTS_TIMEOUT, client.cmd_line_opts())
            .await
            .ok()
            .and_then(Result::ok),
        _ => None,
    };
    let encryption = cmdline
        .as_ref()
        .and_then(crate::mongod::encryption::settings);
    let disk = disk_facts(node.cfg.drill_dir.as_ref().unwrap_or(&node.cfg.dbpath)).ok();
    Heartbeat {
        cluster: node.cluster.clone(),
        replica_set: node.replica_set.clone(),
        node: node.id.clone(),
        at: Utc::now(),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        healthy: true,
        role: match (&facts, &node.cfg.drill_dir) {
            (_, Some(_)) => MemberRole::from(DRILL_ROLE),
            (Some(f), None) => f.role.clone(),
            (None, None) => MemberRole::Down,
        },
        hidden: facts.as_ref().is_some_and(|f| f.hidden),
        delayed: facts.as_ref().is_some_and(|f| f.delayed),
        arbiter: facts.as_ref().is_some_and(|f| f.arbiter),
        lag_seconds: facts.as_ref().map_or(0.0, |f| f.lag_seconds),
        flavor: facts
            .as_ref()
            .map_or("unknown".to_string(), |f| f.flavor.clone()),
        mongod_version: facts
            .as_ref()
            .map_or("unknown".to_string(), |f| f.version.clone()),
        backup_cursor: facts.as_ref().is_some_and(|f| f.backup_cursor),
        disk,
        encryption,
        encryption_known: cmdline.is_some(),
        extra: Default::default(),
        slicing: node.slicing.all(),
        interval_ms: u64::try_from(node.cfg.heartbeat_interval.as_millis()).ok(),
        pickup: Some(node.doorbell.pickup()),
        trust: Some(node.trust.facts()),
    }
}

/// The role a drill agent reports: it serves no mongod.
pub const DRILL_ROLE: &str = "DRILL";

/// How often the node is looked at between written beats: mongod and the disk are local,
/// so looking costs no request; only a change, or `--heartbeat-interval`, is written.
const LOOK_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Beats until the task is dropped. Failures to write are logged, never fatal.
pub async fn run(node: Arc<Node>) {
    // One client for the agent's life: the driver reconnects by itself while mongod is
    // down, so a new client (and its monitoring tasks) per beat would only add churn.
    let mut client: Option<MongodClient> = None;
    let look = LOOK_EVERY.min(node.cfg.heartbeat_interval);
    // What the last written beat said, and when it was written (this host's clock).
    let mut written: Option<(Heartbeat, tokio::time::Instant)> = None;
    loop {
        if client.is_none() && node.cfg.drill_dir.is_none() {
            client = node.mongod().await.ok();
        }
        let hb = beat(&node, client.as_ref()).await;
        // While an op runs here, every look is written: the reconciler follows it.
        let every = match node.working.load(std::sync::atomic::Ordering::Relaxed) {
            true => look,
            false => node.cfg.heartbeat_interval,
        };
        let due = written
            .as_ref()
            .is_none_or(|(last, at)| at.elapsed() + look / 2 >= every || changed(last, &hb));
        if due {
            match node.control.heartbeat(&hb).await {
                Ok(()) => written = Some((hb, tokio::time::Instant::now())),
                Err(e) => tracing::warn!(error = %e, "heartbeat not written"),
            }
        }
        tokio::time::sleep(look).await;
    }
}

/// Whether a beat says something the reconciler decides on that the last written one did
/// not: role, membership flags, versions, encryption, slicers, how it picks ops up, a lag
/// past what backups allow. Not the time, the lag, the
/// free space or a slicer's progress, which move all the time (they go with the next due
/// beat).
fn changed(last: &Heartbeat, now: &Heartbeat) -> bool {
    let facts = |h: &Heartbeat| {
        (
            h.healthy,
            h.role.clone(),
            h.hidden,
            h.delayed,
            h.arbiter,
            h.flavor.clone(),
            h.mongod_version.clone(),
            h.backup_cursor,
            h.encryption_known,
            h.pickup,
            // The planner passes over a node lagging this much: crossing it is news.
            h.lag_seconds >= tidemark_schema::control::BACKUP_MAX_LAG_SECONDS,
        )
    };
    facts(last) != facts(now)
        || last.encryption != now.encryption
        || slicers(last) != slicers(now)
        // A refusal, or keys read again: an operator must see it now.
        || last.trust != now.trust
}

/// Which streams this node slices and whether each fails or stalls; not how far it got,
/// which moves at every chunk.
fn slicers(h: &Heartbeat) -> Vec<(&str, &str, Option<&str>, bool)> {
    h.slicing
        .iter()
        .map(|s| {
            (
                s.schedule.as_str(),
                s.storage.as_str(),
                s.error.as_deref(),
                s.stalled,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat() -> Heartbeat {
        serde_json::from_value(serde_json::json!({
            "cluster": "c1", "replicaSet": "rs0", "node": "a:1", "at": "2026-12-04T12:00:00Z",
            "agentVersion": "test", "healthy": true, "role": "SECONDARY",
            "flavor": "psmdb", "mongodVersion": "7.0.14", "backupCursor": true,
            "lagSeconds": 0.5,
            "slicing": [{"schedule": "s", "storage": "st", "at": "2026-12-04T12:00:00Z"}],
        }))
        .unwrap()
    }

    #[test]
    fn time_lag_space_and_slicing_progress_wait_for_the_next_due_beat() {
        let mut later = beat();
        later.at += chrono::Duration::seconds(5);
        later.lag_seconds = 3.0;
        later.disk = Some(tidemark_schema::control::DiskFacts {
            total_bytes: 10,
            used_bytes: 5,
            available_bytes: 5,
        });
        later.slicing[0].newest = Some(Default::default());
        later.slicing[0].at = later.at;
        assert!(!changed(&beat(), &later));
    }

    #[test]
    fn a_new_role_a_failing_slicer_or_another_pickup_is_written_at_once() {
        let mut down = beat();
        down.role = MemberRole::Down;
        assert!(changed(&beat(), &down));
        let mut failing = beat();
        failing.slicing[0].error = Some("storage refused".into());
        assert!(changed(&beat(), &failing));
        let mut listening = beat();
        listening.pickup = Some(tidemark_schema::control::Pickup::Doorbell);
        assert!(changed(&beat(), &listening));
        let mut lagging = beat();
        lagging.lag_seconds = 25.0;
        assert!(changed(&beat(), &lagging));
    }
}
