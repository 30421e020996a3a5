//! Runs a drill op: for each replica set of the backup, download it into a fresh scratch
//! dbPath, recover it to the backup's point as a standalone, start it once more on a
//! free loopback port and read what the checks need; then judge the checks, report RTO
//! and RPO, and remove the scratch directory whatever happened.

use std::time::Instant;

use chrono::{TimeZone, Utc};
use serde_json::json;
use tidemark_schema::control::{DrillOutcome, Op, OpCommand, Phase};
use tidemark_schema::manifest::ReplicaSetManifest;

use super::{check, scratch, select};
use crate::error::AgentError;
use crate::node::{Details, InPhase, Node, PhaseFailure};
use crate::restore::fetch::fetch;
use crate::restore::recover::with_standalone;

pub async fn run(node: &Node, op: &Op) -> Result<(String, Details), PhaseFailure> {
    let OpCommand::Drill {
        drill,
        backup,
        storage,
        replica_sets,
        checks,
    } = &op.command
    else {
        unreachable!("dispatched on the command kind");
    };
    let Some(root) = node.cfg.drill_dir.clone() else {
        return Err(AgentError::Refused(
            "this agent serves a mongod node, not drills (it has no --drill-dir); nothing \
             was done"
                .into(),
        ))
        .in_phase(Phase::Precheck);
    };
    let started_at = Utc::now();
    let began = Instant::now();
    let dir = scratch::op_dir(&root, &op.id);
    let result = async {
        node.running(op, select::PHASE, format!("checking backup {backup}"))
            .await?;
        let selected = select::select(backup, storage, replica_sets, &root)
            .await
            .in_phase(select::PHASE)?;
        let mut d = Details::new();
        d.insert("replicaSets".into(), json!(replica_sets));
        d.insert(
            "bytes".into(),
            json!(
                selected
                    .manifests
                    .iter()
                    .map(|m| m.uncompressed_bytes)
                    .sum::<u64>()
            ),
        );
        node.done(op, select::PHASE, format!("backup {backup} is complete"), d)
            .await?;
        let mut per_rs = Vec::new();
        // A real restore brings every replica set back at once: the restore time is the
        // slowest replica set's, each timed from its own download to its standalone
        // answering (a drill does them one after another only to bound its disk use).
        let mut rto = 0.0f64;
        for (m, links) in selected.manifests.iter().zip(&selected.chains) {
            let rs_began = Instant::now();
            let rs_dir = dir.join(&m.replica_set);
            let scratch_node = scratch::scratch_node(node, &rs_dir).in_phase(Phase::Fetch)?;
            fetch(&scratch_node, op, &selected.store, links).await?;
            node.boundary(op, Phase::Fetch).await?;
            node.running(
                op,
                Phase::Recover,
                format!(
                    "{}: recovering to {} as a standalone",
                    m.replica_set, m.last_write
                ),
            )
            .await?;
            let captured = scratch::recover(&scratch_node, m)
                .await
                .in_phase(Phase::Recover)?;
            node.boundary(op, Phase::Recover).await?;
            node.running(
                op,
                Phase::Check,
                format!(
                    "{}: starting the restored data and checking it",
                    m.replica_set
                ),
            )
            .await?;
            let (ready, seen) = with_standalone(&scratch_node, &captured, &[], |c| {
                let rs_began = &rs_began;
                async move {
                    let ready = rs_began.elapsed().as_secs_f64();
                    Ok((ready, check::observe(&c, checks).await?))
                }
            })
            .await
            .in_phase(Phase::Check)?;
            rto = rto.max(ready);
            per_rs.push((m, seen));
            // Each replica set's copy goes before the next is downloaded.
            scratch::remove(&rs_dir).await;
        }
        let pairs: Vec<(&ReplicaSetManifest, check::Observed)> = per_rs;
        let results = check::judge(checks, &pairs);
        // The oldest replica set's point: what the whole restore can promise.
        let oldest = selected
            .manifests
            .iter()
            .map(|m| m.last_write)
            .min()
            .unwrap_or_default();
        let data_as_of = Utc
            .timestamp_opt(i64::from(oldest.t), 0)
            .single()
            .unwrap_or(started_at);
        let outcome = DrillOutcome {
            backup: backup.clone(),
            agent: node.id.clone(),
            data_as_of,
            rto_seconds: rto,
            rpo_seconds: (started_at - data_as_of).num_milliseconds().max(0) as f64 / 1000.0,
            checks: results,
        };
        Ok::<_, PhaseFailure>(outcome)
    }
    .await;
    scratch::remove(&dir).await;
    let outcome = result?;
    let failed: Vec<String> = outcome.failed_checks().map(|c| c.detail.clone()).collect();
    let message = if failed.is_empty() {
        format!(
            "drill {drill}: backup {backup} restored in {:.1} s with data {:.0} s old; {} \
             check(s) passed",
            outcome.rto_seconds,
            outcome.rpo_seconds,
            outcome.checks.len()
        )
    } else {
        format!(
            "drill {drill}: backup {backup} restored, but {} of {} check(s) failed: {}",
            failed.len(),
            outcome.checks.len(),
            failed.join("; ")
        )
    };
    let mut d = Details::new();
    d.insert("drill".into(), json!(outcome));
    d.insert(
        "elapsedSeconds".into(),
        json!(began.elapsed().as_secs_f64()),
    );
    Ok((message, d))
}
