//! Restore drills in the plan: which run of each `RestoreDrill` is due, which backup it
//! restores (the newest good one of its schedule), and which drill agent takes it. Like
//! a schedule's slot, a run is claimed by the create-if-absent ledger record named after
//! it (`<drill>-<slot time>`), so no run ever happens twice; missed runs are not made up.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tidemark_schema::control::OneShotKind;
use tidemark_schema::control::{DRILL_REPLICA_SET, RunStatus, ScheduleRecord};
use tidemark_schema::model::{
    Kind, RestoreDrillSpec, drill_run_name, next_run_after, runs_back_from,
};
use tidemark_schema::validate::DesiredState;

use super::model::{Action, Step};
use crate::control::ObservedState;

/// The ledger kind of a drill run (`ledger/oneshots/restoredrill/<run>.json`).
pub const DRILL_KIND: OneShotKind = OneShotKind::RestoreDrill;

/// A drill as the reconciler runs it, for `diff`, `status` and the metrics.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DrillState {
    pub drill: String,
    pub schedule: String,
    pub cluster: String,
    pub suspended: bool,
    pub next_run: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due_run: Option<String>,
    /// The newest run that ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_run: Option<DrillRun>,
    /// A run still going.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running: Option<String>,
}

/// One ended run of a drill.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DrillRun {
    pub name: String,
    pub status: RunStatus,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<tidemark_schema::control::DrillOutcome>,
}

/// The drill's state at `now`.
pub fn drill_state(
    name: &str,
    spec: &RestoreDrillSpec,
    cluster: &str,
    observed: &ObservedState,
    now: DateTime<Utc>,
) -> DrillState {
    let runs = || {
        observed
            .oneshots
            .iter()
            .filter(|((kind, _), r)| *kind == DRILL_KIND && r.setting("drill") == Some(name))
            .map(|(_, r)| r)
    };
    let due_run = match (observed.drills.get(name), spec.suspend) {
        (Some(record), false) => runs_back_from(&spec.cron, &spec.timezone, now, record.since, 1)
            .first()
            .map(|slot| drill_run_name(name, *slot))
            .filter(|run| !observed.oneshots.contains_key(&(DRILL_KIND, run.clone()))),
        _ => None,
    };
    let last_run = runs()
        .filter(|r| r.is_final())
        .max_by_key(|r| (r.started_at, r.name.clone()))
        .map(|r| DrillRun {
            name: r.name.clone(),
            status: r.status,
            started_at: r.started_at,
            finished_at: r.finished_at,
            message: r.message.clone(),
            outcome: r.drill.clone(),
        });
    DrillState {
        drill: name.to_string(),
        schedule: spec.schedule.clone(),
        cluster: cluster.to_string(),
        suspended: spec.suspend,
        next_run: next_run_after(&spec.cron, &spec.timezone, now).filter(|_| !spec.suspend),
        due_run,
        last_run,
        running: runs().find(|r| !r.is_final()).map(|r| r.name.clone()),
    }
}

/// The record a drill should have now: runs count from `now` when the drill is new,
/// resumed, or its cron or time zone changed. `None` when the stored one is right.
pub fn wanted_drill_record(
    name: &str,
    spec: &RestoreDrillSpec,
    stored: Option<&ScheduleRecord>,
    now: DateTime<Utc>,
) -> Option<ScheduleRecord> {
    super::schedule::wanted_cron_record(
        name,
        (&spec.cron, &spec.timezone, spec.suspend),
        stored,
        now,
    )
}

/// Every drill's state, and a `RunDrill` (or why it is blocked) for each due run.
/// Drills take no cluster lock: they never touch the cluster.
pub fn plan_drills(
    desired: &DesiredState,
    observed: &ObservedState,
    (now, dead_after): (DateTime<Utc>, chrono::Duration),
    steps: &mut Vec<Step>,
) -> Vec<DrillState> {
    let mut states = Vec::new();
    // Agents that already have a drill to run (one at a time each: a drill fills a disk).
    let mut busy: Vec<String> = super::planner::drill_agents_busy(observed);
    // And those a selective restore planned earlier in this pass takes.
    busy.extend(steps.iter().filter_map(|s| match &s.action {
        Action::StartSelectiveRestore(p) => Some(p.agent.clone()),
        _ => None,
    }));
    for (name, spec) in desired.drills() {
        let Some(schedule) = desired.schedule(&spec.schedule) else {
            continue; // validation refuses it
        };
        let state = drill_state(name, spec, &schedule.cluster, observed, now);
        if let Some(run) = &state.due_run {
            match choose(
                name,
                run,
                spec,
                &schedule.cluster,
                observed,
                &busy,
                (now, dead_after),
            ) {
                Ok((action, why)) => {
                    if let Action::RunDrill { agent, .. } = &action {
                        busy.push(agent.clone());
                    }
                    steps.push(Step {
                        action,
                        reason: why,
                    });
                }
                Err(why) => steps.push(Step {
                    action: Action::Blocked {
                        kind: Kind::RestoreDrill.as_str().to_string(),
                        name: run.clone(),
                    },
                    reason: why,
                }),
            }
        }
        states.push(state);
    }
    states
}

type At = (DateTime<Utc>, chrono::Duration);

/// The backup and the agent of a due run, or why it cannot start.
fn choose(
    name: &str,
    run: &str,
    spec: &RestoreDrillSpec,
    cluster: &str,
    observed: &ObservedState,
    busy: &[String],
    (now, dead_after): At,
) -> Result<(Action, String), String> {
    if let Some(((_, previous), _)) = observed.oneshots.iter().find(|((kind, _), r)| {
        *kind == DRILL_KIND && !r.is_final() && r.setting("drill") == Some(name)
    }) {
        return Err(format!(
            "the drill's previous run {previous:?} is still running; one run of a drill at a \
             time"
        ));
    }
    let backup = observed
        .backups
        .iter()
        .filter(|b| b.schedule.as_deref() == Some(spec.schedule.as_str()))
        .filter(|b| b.is_good() && b.deleting.is_none())
        .filter(|b| super::chain::chain_of(b, &observed.backups).is_ok())
        .max_by(|a, b| a.recency().cmp(&b.recency()))
        .ok_or_else(|| {
            format!(
                "schedule {:?} has no good backup yet (complete, and verified where it asks \
                 for verification)",
                spec.schedule
            )
        })?;
    let alive: Vec<&str> = observed
        .heartbeats
        .iter()
        .filter(|h| h.cluster == cluster && h.replica_set == DRILL_REPLICA_SET)
        .filter(|h| !h.is_lost(now, dead_after))
        .map(|h| h.node.as_str())
        .filter(|n| spec.agent.as_deref().is_none_or(|want| want == *n))
        .collect();
    let agent = alive
        .iter()
        .find(|n| !busy.iter().any(|b| b == *n))
        .ok_or_else(|| match (&spec.agent, alive.is_empty()) {
            (Some(want), true) => format!(
                "drill agent {want:?} of cluster {cluster:?} is not alive (start it with \
                 `tidemark agent --drill-dir DIR --node-id {want} --cluster {cluster}`)"
            ),
            (None, true) => format!(
                "no drill agent of cluster {cluster:?} is alive (start one with `tidemark agent \
                 --drill-dir DIR --node-id NAME --cluster {cluster}`)"
            ),
            (_, false) => format!(
                "every drill agent that may run it is busy with another drill ({})",
                alive.join(", ")
            ),
        })?;
    let reason = format!(
        "run {run} of drill {name:?} ({} {}) is due: restores backup {:?}, the newest good one \
         of schedule {:?}, on drill agent {agent:?}; the cluster is not touched",
        spec.cron, spec.timezone, backup.name, spec.schedule
    );
    Ok((
        Action::RunDrill {
            drill: name.to_string(),
            run: run.to_string(),
            cluster: cluster.to_string(),
            backup: backup.name.clone(),
            storage: backup.storage.clone(),
            agent: agent.to_string(),
            replica_sets: backup.replica_sets.iter().map(|r| r.name.clone()).collect(),
        },
        reason,
    ))
}

/// The namespaces whose `dbHash` backups of `schedule` record: every drill of it asks.
pub fn hash_namespaces(desired: &DesiredState, schedule: &str) -> Vec<String> {
    let mut out: Vec<String> = desired
        .drills()
        .filter(|(_, d)| d.schedule == schedule)
        .flat_map(|(_, d)| d.checks.db_hash.iter().cloned())
        .collect();
    out.sort();
    out.dedup();
    out
}
