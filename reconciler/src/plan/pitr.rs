//! Point-in-time recovery in the plan: which node slices each replica set's oplog into
//! each storage, and every stream's timeline for `diff`, `status` and the metrics.
//!
//! A slicer keeps its node while the node stays fit (agent alive, serving, not an arbiter
//! or delayed, replicating within one span, slicing within two spans); otherwise the
//! stream goes to the best node by the backup rules. A handover cannot slice a range twice
//! or leave a hole: every chunk is claimed under the end of the one before (see
//! `tidemark_schema::control::ChunkRecord`), so the new slicer continues where the chain
//! ends, whoever wrote its last link.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tidemark_schema::control::{Heartbeat, SliceStream, SlicingAssignment};
use tidemark_schema::manifest::OpTime;
use tidemark_schema::model::{BackupScheduleSpec, ClusterSpec, ReplicaSetSpec};
use tidemark_schema::validate::DesiredState;

use super::model::{Action, NodeChoice, Step};
use super::nodes::{BACKUP_MAX_LAG_SECONDS, choose_node, heartbeats_of, is_alive};
use super::timeline::{Timeline, base_point, bases, timeline};
use crate::control::ObservedState;

/// One schedule's slicing, as `diff` and `status` show it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PitrState {
    pub schedule: String,
    pub cluster: String,
    pub storage: String,
    pub span_seconds: u64,
    /// The slicing node of each replica set (`None`: none can slice now).
    pub slicers: Vec<SlicerState>,
    /// Seconds from the newest entry every replica set has sliced to now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<i64>,
    /// The newest point a restore can reach: the end of the newest window, or the newest
    /// good backup's last write when it is newer (or no window exists).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_point: Option<DateTime<Utc>>,
    /// With PITR on, the schedule's `rpo` applies to the recovery point: older than it.
    pub rpo_breached: bool,
    pub timeline: Timeline,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SlicerState {
    pub replica_set: String,
    pub node: Option<String>,
    pub reason: String,
    /// The slicer's last failure, as its agent's heartbeat reports it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A stream as a `setSlicing` step shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedStream {
    pub schedule: String,
    pub storage: String,
    pub node: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    pub span_seconds: u64,
}

/// Plans the slicing of every replica set: a `setSlicing` step where the assignment must
/// change, and the state of every enabled stream.
pub fn plan_slicing(
    desired: &DesiredState,
    observed: &ObservedState,
    (now, dead): (DateTime<Utc>, chrono::Duration),
    steps: &mut Vec<Step>,
) -> Vec<PitrState> {
    let mut states = Vec::new();
    let mut wanted: Vec<SlicingAssignment> = Vec::new();
    for (name, spec) in desired.schedules() {
        let (Some(pitr), Some(cluster), Some(storage)) = (
            spec.pitr_enabled(),
            desired.cluster(&spec.cluster),
            desired.storage(&spec.storage),
        ) else {
            continue;
        };
        let span = pitr.span().as_secs();
        let sets = replica_set_names(cluster);
        let good = bases(&observed.backups, &spec.cluster, &spec.storage);
        let tl = timeline(&spec.cluster, &spec.storage, &sets, &observed.chunks, &good);
        let mut slicers = Vec::new();
        for rs in cluster.all_replica_sets() {
            let newest = tl
                .replica_sets
                .iter()
                .find(|r| r.replica_set == rs.name)
                .and_then(|r| r.newest());
            let mut choice = slicer_for(name, spec, rs, observed, (span, newest), (now, dead));
            choice.error = choice.node.as_deref().and_then(|node| {
                observed
                    .heartbeats
                    .iter()
                    .find(|h| {
                        h.cluster == spec.cluster && h.replica_set == rs.name && h.node == node
                    })
                    .and_then(|h| {
                        h.slicing
                            .iter()
                            .find(|r| r.schedule == name && r.storage == spec.storage)
                    })
                    .and_then(|r| r.error.clone())
            });
            let keep = || {
                current(observed, &spec.cluster, &rs.name)
                    .and_then(|a| {
                        a.streams
                            .iter()
                            .find(|s| s.schedule == name && s.storage_name == spec.storage)
                    })
                    .cloned()
            };
            if choice.node.is_none() {
                // No node can slice now (every agent silent, say): the assignment stays,
                // and its node takes up again where the chain ends when it returns.
                if let Some(stream) = keep() {
                    assignment_of(&mut wanted, &spec.cluster, &rs.name)
                        .streams
                        .push(stream);
                }
            } else if let Some(node) = &choice.node {
                let stream = SliceStream {
                    schedule: name.to_string(),
                    storage_name: spec.storage.clone(),
                    storage: crate::execute::storage_target(storage),
                    span_seconds: span,
                    node: node.clone(),
                    reason: choice.reason.clone(),
                    start_at: start_point(observed, spec, &rs.name),
                    since: keep()
                        .filter(|cur| &cur.node == node)
                        .and_then(|cur| cur.since)
                        .or(Some(now)),
                };
                assignment_of(&mut wanted, &spec.cluster, &rs.name)
                    .streams
                    .push(stream);
            }
            slicers.push(choice);
        }
        let recovery_point = tl
            .windows
            .last()
            .and_then(|w| DateTime::<Utc>::from_timestamp(i64::from(w.to.t), 0))
            .into_iter()
            .chain(good.iter().map(|b| b.data_time()))
            .max();
        let rpo_breached = spec
            .rpo
            .as_deref()
            .and_then(|r| tidemark_schema::model::parse_max_age(r).ok())
            .and_then(|r| chrono::Duration::from_std(r.duration).ok())
            .is_some_and(|rpo| recovery_point.is_none_or(|p| now - p > rpo));
        states.push(PitrState {
            schedule: name.to_string(),
            cluster: spec.cluster.clone(),
            storage: spec.storage.clone(),
            span_seconds: span,
            slicers,
            lag_seconds: tl.lag_seconds(now),
            recovery_point,
            rpo_breached,
            timeline: tl,
        });
    }
    // Replica sets sliced today but by no enabled schedule now: their slicers stop.
    for current in &observed.slicing {
        if !current.streams.is_empty() {
            assignment_of(&mut wanted, &current.cluster, &current.replica_set);
        }
    }
    for w in wanted {
        if let Some(step) = change(observed, w) {
            steps.push(step);
        }
    }
    states
}

fn assignment_of<'a>(
    all: &'a mut Vec<SlicingAssignment>,
    cluster: &str,
    rs: &str,
) -> &'a mut SlicingAssignment {
    if let Some(i) = all
        .iter()
        .position(|a| a.cluster == cluster && a.replica_set == rs)
    {
        return &mut all[i];
    }
    all.push(SlicingAssignment {
        cluster: cluster.to_string(),
        replica_set: rs.to_string(),
        streams: Vec::new(),
        epoch: None,
        seal: None,
    });
    all.last_mut().expect("just pushed")
}

/// Every replica set of a cluster, the config server's first.
pub fn replica_set_names(cluster: &ClusterSpec) -> Vec<String> {
    cluster.all_replica_sets().map(|r| r.name.clone()).collect()
}

/// The current assignment of the replica set.
fn current<'a>(
    observed: &'a ObservedState,
    cluster: &str,
    rs: &str,
) -> Option<&'a SlicingAssignment> {
    observed
        .slicing
        .iter()
        .find(|a| a.cluster == cluster && a.replica_set == rs)
}

/// The step that turns the current assignment into `wanted`, if they differ in anything
/// but the reasons and start points (which change with every heartbeat and backup).
fn change(observed: &ObservedState, wanted: SlicingAssignment) -> Option<Step> {
    let cur = current(observed, &wanted.cluster, &wanted.replica_set);
    let key = |s: &SliceStream| {
        (
            s.schedule.clone(),
            s.storage_name.clone(),
            s.storage.clone(),
            s.span_seconds,
            s.node.clone(),
        )
    };
    let same = cur.is_some_and(|c| {
        c.streams.iter().map(key).collect::<Vec<_>>()
            == wanted.streams.iter().map(key).collect::<Vec<_>>()
    });
    if same || (cur.is_none() && wanted.streams.is_empty()) {
        return None;
    }
    let previous = |s: &SliceStream| {
        cur.and_then(|c| c.streams.iter().find(|p| p.schedule == s.schedule))
            .map(|p| p.node.clone())
    };
    let streams: Vec<PlannedStream> = wanted
        .streams
        .iter()
        .map(|s| PlannedStream {
            schedule: s.schedule.clone(),
            storage: s.storage_name.clone(),
            node: s.node.clone(),
            previous: previous(s).filter(|p| p != &s.node),
            span_seconds: s.span_seconds,
        })
        .collect();
    let reason = if wanted.streams.is_empty() {
        "no declared schedule slices this replica set's oplog any more: its slicer stops"
            .to_string()
    } else {
        wanted
            .streams
            .iter()
            .map(|s| format!("{} → {}: {}", s.schedule, s.node, s.reason))
            .collect::<Vec<_>>()
            .join("; ")
    };
    Some(Step {
        action: Action::SetSlicing {
            cluster: wanted.cluster.clone(),
            replica_set: wanted.replica_set.clone(),
            streams,
            assignment: Box::new(wanted),
        },
        reason,
    })
}

/// Where a timeline with no chunk yet starts: the newest good base's last write.
fn start_point(observed: &ObservedState, spec: &BackupScheduleSpec, rs: &str) -> Option<OpTime> {
    bases(&observed.backups, &spec.cluster, &spec.storage)
        .iter()
        .rev()
        .find_map(|b| base_point(b, rs))
}

/// The node that should slice `rs` for schedule `name`: the current one while it is fit,
/// else the best by the backup rules.
fn slicer_for(
    name: &str,
    spec: &BackupScheduleSpec,
    rs: &ReplicaSetSpec,
    observed: &ObservedState,
    (span, newest): (u64, Option<OpTime>),
    (now, dead): (DateTime<Utc>, chrono::Duration),
) -> SlicerState {
    let beats = heartbeats_of(&observed.heartbeats, &spec.cluster, &rs.name);
    let held = current(observed, &spec.cluster, &rs.name).and_then(|a| {
        a.streams
            .iter()
            .find(|s| s.schedule == name && s.storage_name == spec.storage)
    });
    let holder = held.map(|s| s.node.clone());
    let unfit = held.map(|s| {
        let hb = beats.get(s.node.as_str()).copied();
        let stalled = hb.is_some_and(|h| {
            h.slicing
                .iter()
                .any(|r| r.schedule == name && r.storage == spec.storage && r.stalled)
        });
        unfit_reason(
            hb,
            rs.members.iter().any(|m| m == &s.node),
            (span, newest, s.since, stalled),
            (now, dead),
        )
    });
    if let (Some(node), Some(None)) = (&holder, &unfit) {
        return SlicerState {
            replica_set: rs.name.clone(),
            node: Some(node.clone()),
            reason: "slicing; the node is fit".to_string(),
            error: None,
        };
    }
    // An unfit holder is not chosen again: alive and best-ranked, it may still be unable
    // to slice (no read on the oplog, no credentials for the storage).
    let others: Vec<Heartbeat> = observed
        .heartbeats
        .iter()
        .filter(|h| unfit.as_ref().is_none_or(Option::is_none) || Some(&h.node) != holder.as_ref())
        .cloned()
        .collect();
    let choice = choose_node(
        &spec.cluster,
        rs,
        &others,
        spec.priority.as_ref(),
        now,
        dead,
    );
    // The holder was left out of the choice above; say why in its own words.
    let choice = match (&holder, &unfit) {
        (Some(h), Some(Some(_))) => {
            let left_out = |text: String| {
                text.replace(
                    &format!("{h}: no heartbeat"),
                    &format!("{h}: the holder, unfit"),
                )
            };
            choice
                .map(|c| NodeChoice {
                    reason: left_out(c.reason),
                    ..c
                })
                .map_err(left_out)
        }
        _ => choice,
    };
    let handover = match (&holder, unfit.flatten()) {
        (Some(node), Some(why)) => format!("handed over from {node} ({why}); "),
        _ => String::new(),
    };
    match choice {
        Ok(c) => SlicerState {
            replica_set: rs.name.clone(),
            reason: match &c.node {
                Some(_) => format!("{handover}{}", c.reason),
                None => c.reason,
            },
            node: c.node,
            error: None,
        },
        Err(why) => SlicerState {
            replica_set: rs.name.clone(),
            node: None,
            reason: format!(
                "{handover}{}",
                why.replace("take a backup", "slice the oplog")
            ),
            error: None,
        },
    }
}

/// Why a slicing node should hand over, or `None` while it is fit.
fn unfit_reason(
    hb: Option<&Heartbeat>,
    member: bool,
    (span, newest, since, stalled): (u64, Option<OpTime>, Option<DateTime<Utc>>, bool),
    (now, dead): (DateTime<Utc>, chrono::Duration),
) -> Option<String> {
    if !member {
        return Some("no longer a member of the replica set".into());
    }
    let Some(hb) = hb else {
        return Some("its agent has never reported".into());
    };
    if !is_alive(hb, now, dead) {
        return Some(format!(
            "its agent's last heartbeat was {}s ago",
            (now - hb.at).num_seconds()
        ));
    }
    if hb.arbiter || hb.delayed || !hb.role.is_serving() {
        return Some(format!(
            "it is now {}",
            if hb.arbiter {
                "an arbiter".to_string()
            } else if hb.delayed {
                "a delayed member".to_string()
            } else {
                format!("in state {}", hb.role)
            }
        ));
    }
    // The backup rule's bound too, or a node chosen with a lag under it would be unfit at
    // the next pass and the stream would flap.
    let max_lag = (span as f64).max(BACKUP_MAX_LAG_SECONDS);
    if hb.lag_seconds >= max_lag {
        return Some(format!(
            "it replicates {:.0}s behind, more than one span ({span}s) or {BACKUP_MAX_LAG_SECONDS:.0}s",
            hb.lag_seconds
        ));
    }
    // Every node would be as stuck when the majority commit point does not move: its
    // agent says so, and the stream stays.
    if stalled {
        return None;
    }
    // Alive and replicating, but not slicing: a stuck cursor, a storage it cannot write.
    // With no chunk yet, it counts from when the node was given the stream.
    // From the newest chunk's end or from when this node was given the stream, whichever
    // is later: a node that just took over is not judged by its predecessor's last chunk.
    let behind = [newest.map(|t| i64::from(t.t)), since.map(|s| s.timestamp())]
        .into_iter()
        .flatten()
        .max()
        .map(|from| now.timestamp() - from);
    if let Some(behind) = behind
        && behind > stuck_after(span)
    {
        return Some(
            match newest.filter(|t| since.is_none_or(|s| i64::from(t.t) >= s.timestamp())) {
                Some(_) => format!(
                    "its newest chunk ends {behind}s ago, more than {}s (two spans and a minute)",
                    stuck_after(span)
                ),
                None => format!(
                    "it has written no chunk in the {behind}s since it was given the stream (more \
                 than two spans and a minute)"
                ),
            },
        );
    }
    None
}

/// How far behind a live slicer may fall before the stream moves to another node.
pub fn stuck_after(span: u64) -> i64 {
    2 * span as i64 + 60
}
