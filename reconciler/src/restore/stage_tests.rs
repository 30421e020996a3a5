//! Table tests of `stage`: every stage, and the record combinations a crash between two
//! writes can leave (a gate without a result, a result without its abort, a step op
//! without its result, a step closed as lost whose agent finished later, …).

use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use tidemark_schema::control::{
    CancelRequest, Heartbeat, NodeFate, NodeOutcome, NodeVerdict, OneShotRecord, Op, OpCommand,
    OpResult, OpTarget, Phase, PhaseReport, PhaseStatus, Remedy, RunStatus, StorageTarget,
};

use crate::execute::NodeView;
use crate::restore::{
    GateRecord, Progressed, RestoreRecords, RestoreSettings, RestoreStage, STAGES, StepRecords,
    stage,
};

const NODES: [&str; 3] = ["db1:27017", "db2:27017", "db3:27017"];

fn t0() -> DateTime<Utc> {
    "2026-03-10T12:00:00Z".parse().unwrap()
}

/// A minute after the op was written: inside the default go bound.
fn now() -> DateTime<Utc> {
    t0() + Duration::minutes(1)
}

const BOUND: Duration = Duration::minutes(5);

fn report(node: &str, phase: Phase, status: PhaseStatus) -> PhaseReport {
    PhaseReport {
        op_id: "op".into(),
        replica_set: "rs0".into(),
        node: node.into(),
        phase,
        status,
        at: t0(),
        message: format!("{phase} on {node}"),
        outcome: None,
        failed_phase: None,
        details: Default::default(),
    }
}

fn final_report(node: &str, outcome: NodeOutcome, failed: Option<Phase>) -> PhaseReport {
    let done = outcome == NodeOutcome::Done;
    PhaseReport {
        outcome: Some(outcome),
        failed_phase: failed,
        ..report(
            node,
            if done { Phase::Done } else { Phase::Error },
            if done {
                PhaseStatus::Done
            } else {
                PhaseStatus::Error
            },
        )
    }
}

/// A node with reports up to `phases` (each done), plus `last` when given; lost or not.
fn view(node: &str, phases: &[Phase], last: Option<PhaseReport>, lost: bool) -> NodeView {
    let mut reports: Vec<PhaseReport> = phases
        .iter()
        .map(|p| report(node, *p, PhaseStatus::Done))
        .collect();
    reports.extend(last);
    NodeView {
        replica_set: "rs0".into(),
        node: node.into(),
        reports,
        heartbeat: None,
        lost,
    }
}

fn ready(node: &str) -> NodeView {
    view(node, &[Phase::Precheck, Phase::Ready], None, false)
}

fn restored(node: &str) -> NodeView {
    view(
        node,
        &[Phase::Ready, Phase::Stop, Phase::Fallback, Phase::Fetch],
        Some(final_report(node, NodeOutcome::Done, None)),
        false,
    )
}

fn settings(fallback: bool, start_nodes: bool) -> RestoreSettings {
    RestoreSettings {
        cluster: "c1".into(),
        backup: "b1".into(),
        fallback_enabled: fallback,
        allow_partly_done: true,
        external: false,
        start_nodes,
        fresh_backup: None,
        point_in_time: None,
        cause: None,
    }
}

fn targets() -> Vec<OpTarget> {
    NODES
        .iter()
        .map(|n| OpTarget {
            replica_set: "rs0".into(),
            node: n.to_string(),
        })
        .collect()
}

fn records(settings: RestoreSettings, progress: Progressed) -> RestoreRecords {
    let record: OneShotRecord = serde_json::from_value(json!({
        "kind": "Restore", "name": "r1", "opId": "op", "startedAt": t0(), "status": "running",
    }))
    .unwrap();
    RestoreRecords {
        record,
        op: Op {
            id: "op".into(),
            created_at: t0(),
            cluster: "c1".into(),
            targets: targets(),
            command: OpCommand::Restore {
                backup: "b1".into(),
                storage: StorageTarget {
                    url: "file:///b".into(),
                    compression: Default::default(),
                    compression_level: None,
                    options: Default::default(),
                },
                fallback_enabled: settings.fallback_enabled,
                external: false,
                wait_for_go: true,
                cannot_decrypt: Vec::new(),
                replica_set_map: Default::default(),
                sharding: None,
                stop_waves: Vec::new(),
                go_timeout_ms: Some(300_000),
                point_in_time: None,
            },
            deadline: None,
            epoch: Some(1),
            cause: None,
        },
        settings,
        cancel: None,
        progress,
    }
}

fn undecided(views: Vec<NodeView>, gate: Option<GateRecord>) -> Progressed {
    Progressed::Undecided { views, gate }
}

fn cancel() -> Option<CancelRequest> {
    Some(CancelRequest {
        kind: "restore".into(),
        name: "r1".into(),
        at: t0(),
        by: "dba@host".into(),
    })
}

#[test]
fn before_the_decision() {
    use RestoreStage::*;
    let fb = || settings(true, false);
    let all_ready = || NODES.iter().map(|n| ready(n)).collect::<Vec<_>>();
    let checking = vec![
        ready(NODES[0]),
        ready(NODES[1]),
        view(NODES[2], &[Phase::Precheck], None, false),
    ];
    let refused = vec![
        ready(NODES[0]),
        ready(NODES[1]),
        view(
            NODES[2],
            &[Phase::Precheck],
            Some(final_report(
                NODES[2],
                NodeOutcome::Refused,
                Some(Phase::Disk),
            )),
            false,
        ),
    ];
    let lost = vec![
        ready(NODES[0]),
        ready(NODES[1]),
        view(NODES[2], &[Phase::Precheck], None, true),
    ];
    let mid = vec![
        restored(NODES[0]),
        view(NODES[1], &[Phase::Ready, Phase::Stop], None, false),
        ready(NODES[2]),
    ];
    let settled = || NODES.iter().map(|n| restored(n)).collect::<Vec<_>>();
    type Case = (
        &'static str,
        RestoreRecords,
        DateTime<Utc>,
        fn(&RestoreStage) -> bool,
    );
    let cases: Vec<Case> = vec![
        (
            "nodes still checking",
            records(fb(), undecided(checking.clone(), None)),
            now(),
            |s| *s == Checking,
        ),
        (
            "every node ready",
            records(fb(), undecided(all_ready(), None)),
            now(),
            |s| *s == OpenGate,
        ),
        // Crash after the gate was opened, before any node moved: restoring.
        (
            "gate open, nodes at ready",
            records(fb(), undecided(all_ready(), Some(GateRecord::Open))),
            now(),
            |s| {
                *s == Restoring {
                    cancel_refused: false,
                }
            },
        ),
        (
            "gate open, nodes under way",
            records(fb(), undecided(mid, Some(GateRecord::Open))),
            now(),
            |s| {
                *s == Restoring {
                    cancel_refused: false,
                }
            },
        ),
        (
            "a node refused its checks",
            records(fb(), undecided(refused.clone(), None)),
            now(),
            |s| matches!(s, AbortUntouched { why, cancelled: false } if why.contains("error on db3")),
        ),
        (
            "a node lost before go",
            records(fb(), undecided(lost, None)),
            now(),
            |s| matches!(s, AbortUntouched { why, .. } if why.contains("node lost")),
        ),
        (
            "the go bound passed",
            records(fb(), undecided(all_ready(), None)),
            t0() + Duration::minutes(6),
            |s| matches!(s, AbortUntouched { why, .. } if why.contains("--go-timeout")),
        ),
        // The bound never applies once the gate is open: nodes may be past go.
        (
            "the go bound passed after go",
            records(fb(), undecided(all_ready(), Some(GateRecord::Open))),
            t0() + Duration::hours(2),
            |s| matches!(s, Restoring { .. }),
        ),
        // An agent closed the gate, and the crash came before the result: abort.
        (
            "gate closed by an agent",
            records(
                fb(),
                undecided(all_ready(), Some(GateRecord::Closed("db2: no go".into()))),
            ),
            now(),
            |s| matches!(s, AbortUntouched { why, .. } if why.contains("gate closed by db2")),
        ),
        (
            "gate closed by us, refusal on record",
            records(
                fb(),
                undecided(refused, Some(GateRecord::Closed("the reconciler".into()))),
            ),
            now(),
            |s| matches!(s, AbortUntouched { .. }),
        ),
        (
            "every node settled after go",
            records(fb(), undecided(settled(), Some(GateRecord::Open))),
            now(),
            |s| *s == Decide { cancelled: false },
        ),
        (
            "a node lost after go, the others settled",
            records(
                fb(),
                undecided(
                    vec![
                        restored(NODES[0]),
                        restored(NODES[1]),
                        view(NODES[2], &[Phase::Ready], None, true),
                    ],
                    Some(GateRecord::Open),
                ),
            ),
            now(),
            |s| *s == Decide { cancelled: false },
        ),
    ];
    for (what, r, at, want) in cases {
        let got = stage(&r, BOUND, at);
        assert!(want(&got), "{what}: got {got:?}");
    }
}

#[test]
fn a_cancel_is_a_transition_of_its_own() {
    use RestoreStage::*;
    let all_ready = || NODES.iter().map(|n| ready(n)).collect::<Vec<_>>();
    let settled = || NODES.iter().map(|n| restored(n)).collect::<Vec<_>>();
    let mid = || {
        vec![
            restored(NODES[0]),
            view(NODES[1], &[Phase::Ready, Phase::Stop], None, false),
            ready(NODES[2]),
        ]
    };
    let with_cancel = |fallback: bool, p: Progressed| RestoreRecords {
        cancel: cancel(),
        ..records(settings(fallback, false), p)
    };
    // Before go: aborted untouched, whatever the fallback.
    for fallback in [true, false] {
        let got = stage(
            &with_cancel(fallback, undecided(all_ready(), None)),
            BOUND,
            now(),
        );
        assert!(
            matches!(&got, AbortUntouched { why, cancelled: true } if why.contains("dba@host")),
            "{got:?}"
        );
    }
    // After go with fallback: every node stops at its next boundary, then the decision.
    assert_eq!(
        stage(
            &with_cancel(true, undecided(mid(), Some(GateRecord::Open))),
            BOUND,
            now()
        ),
        Cancelling
    );
    assert_eq!(
        stage(
            &with_cancel(true, undecided(settled(), Some(GateRecord::Open))),
            BOUND,
            now()
        ),
        Decide { cancelled: true }
    );
    // After go without fallback: refused, the restore goes on and is decided as usual.
    assert_eq!(
        stage(
            &with_cancel(false, undecided(mid(), Some(GateRecord::Open))),
            BOUND,
            now()
        ),
        Restoring {
            cancel_refused: true
        }
    );
    assert_eq!(
        stage(
            &with_cancel(false, undecided(settled(), Some(GateRecord::Open))),
            BOUND,
            now()
        ),
        Decide { cancelled: false }
    );
}

fn verdict(node: &str, fate: NodeFate, remedies: &[Remedy]) -> NodeVerdict {
    NodeVerdict {
        replica_set: "rs0".into(),
        node: node.into(),
        fate,
        phase: None,
        message: String::new(),
        remedies: remedies.to_vec(),
        note: String::new(),
        needs_operator: false,
    }
}

fn result(status: RunStatus, nodes: Vec<NodeVerdict>) -> OpResult {
    OpResult {
        op_id: "op".into(),
        status,
        decided_at: now(),
        reason: format!("decided {status}"),
        nodes,
        epoch: None,
    }
}

fn step_op(remedy: Remedy, nodes: &[&str]) -> Op {
    Op {
        id: format!("op.{}", remedy.as_str()),
        created_at: now(),
        cluster: "c1".into(),
        targets: nodes
            .iter()
            .map(|n| OpTarget {
                replica_set: "rs0".into(),
                node: n.to_string(),
            })
            .collect(),
        command: OpCommand::StartMongod {
            restore_op: "op".into(),
        },
        deadline: None,
        epoch: None,
        cause: None,
    }
}

/// One follow-up step as a test gives it: its op, its result, its nodes' reports.
type Given = (Remedy, Option<Op>, Option<OpResult>, Vec<NodeView>);

/// The four steps, each as given (`None`: not written).
fn steps(given: Vec<Given>) -> Vec<StepRecords> {
    STAGES
        .iter()
        .map(|r| {
            let (op, result, views) = given
                .iter()
                .find(|(g, ..)| g == r)
                .map(|(_, o, res, v)| (o.clone(), res.clone(), v.clone()))
                .unwrap_or_default();
            StepRecords {
                remedy: *r,
                op,
                result,
                views,
            }
        })
        .collect()
}

fn decided(
    settings: RestoreSettings,
    result: OpResult,
    steps: Vec<StepRecords>,
    beats: Vec<Heartbeat>,
    fresh: Option<OneShotRecord>,
) -> RestoreRecords {
    records(
        settings,
        Progressed::Decided {
            result,
            steps,
            beats,
            fresh,
        },
    )
}

/// The stage of a decided restore at `now()`.
fn after(
    settings: RestoreSettings,
    result: OpResult,
    steps: Vec<StepRecords>,
    beats: Vec<Heartbeat>,
    fresh: Option<OneShotRecord>,
) -> RestoreStage {
    stage(
        &decided(settings, result, steps, beats, fresh),
        BOUND,
        now(),
    )
}

fn step_done(id: &str, nodes: &[(&str, NodeFate)]) -> OpResult {
    OpResult {
        op_id: id.into(),
        ..result(
            if nodes.iter().all(|(_, f)| *f == NodeFate::Done) {
                RunStatus::Done
            } else {
                RunStatus::Error
            },
            nodes.iter().map(|(n, f)| verdict(n, *f, &[])).collect(),
        )
    }
}

fn beat(node: &str, role: &str, at: DateTime<Utc>) -> Heartbeat {
    serde_json::from_value(json!({
        "cluster": "c1", "replicaSet": "rs0", "node": node, "at": at, "agentVersion": "t",
        "healthy": true, "role": role, "lagSeconds": 0.0, "flavor": "psmdb",
        "mongodVersion": "7.0.14", "backupCursor": true,
    }))
    .unwrap()
}

#[test]
fn after_the_decision() {
    use NodeFate::*;
    use Remedy::*;
    use RestoreStage::*;
    let partly = || {
        result(
            RunStatus::PartlyDone,
            vec![
                verdict(NODES[0], Done, &[RemoveFallback, Start]),
                verdict(NODES[1], Done, &[RemoveFallback, Start]),
                verdict(NODES[2], Failed, &[Wipe, RemoveFallback, Start]),
            ],
        )
    };
    let s = || settings(true, true);
    let all = NODES.to_vec();
    let done_views = |nodes: &[&str]| -> Vec<NodeView> {
        nodes
            .iter()
            .map(|n| {
                view(
                    n,
                    &[],
                    Some(final_report(n, NodeOutcome::Done, None)),
                    false,
                )
            })
            .collect()
    };
    let wipe_ok = (
        Wipe,
        Some(step_op(Wipe, &[NODES[2]])),
        Some(step_done("op.wipe", &[(NODES[2], Done)])),
        vec![],
    );
    let removed = (
        RemoveFallback,
        Some(step_op(RemoveFallback, &all)),
        Some(step_done(
            "op.removeFallback",
            &[(NODES[0], Done), (NODES[1], Done), (NODES[2], Done)],
        )),
        vec![],
    );
    let started = (
        Start,
        Some(step_op(Start, &all)),
        Some(step_done(
            "op.start",
            &[(NODES[0], Done), (NODES[1], Done), (NODES[2], Done)],
        )),
        vec![],
    );
    let healthy = vec![
        beat(NODES[0], "PRIMARY", now() + Duration::seconds(5)),
        beat(NODES[1], "SECONDARY", now() + Duration::seconds(5)),
        beat(NODES[2], "SECONDARY", now() + Duration::seconds(5)),
    ];
    let syncing = vec![
        beat(NODES[0], "PRIMARY", now() + Duration::seconds(5)),
        beat(NODES[1], "SECONDARY", now() + Duration::seconds(5)),
        beat(NODES[2], "STARTUP2", now() + Duration::seconds(5)),
    ];

    // Crash after the decision, before the first step: write it, for the failed node only.
    let got = after(s(), partly(), steps(vec![]), vec![], None);
    assert_eq!(
        got,
        WriteStep {
            remedy: Wipe,
            targets: vec![targets()[2].clone()]
        }
    );
    // Crash after the step op, before its nodes ended: it runs; once they did: close it.
    let running = after(
        s(),
        partly(),
        steps(vec![(
            Wipe,
            Some(step_op(Wipe, &[NODES[2]])),
            None,
            vec![view(NODES[2], &[], None, false)],
        )]),
        vec![],
        None,
    );
    assert_eq!(running, StepRunning { remedy: Wipe });
    let settled = after(
        s(),
        partly(),
        steps(vec![(
            Wipe,
            Some(step_op(Wipe, &[NODES[2]])),
            None,
            done_views(&[NODES[2]]),
        )]),
        vec![],
        None,
    );
    assert_eq!(settled, CloseStep { remedy: Wipe });
    // Closed: the next step, for every node that needs it.
    let next = after(s(), partly(), steps(vec![wipe_ok.clone()]), vec![], None);
    assert_eq!(
        next,
        WriteStep {
            remedy: RemoveFallback,
            targets: targets()
        }
    );
    // Started, not healthy yet; then healthy: finished partly done.
    let waiting = after(
        s(),
        partly(),
        steps(vec![wipe_ok.clone(), removed.clone(), started.clone()]),
        syncing,
        None,
    );
    assert!(
        matches!(&waiting, AwaitHealth { missing } if missing.contains("STARTUP2")),
        "{waiting:?}"
    );
    let end = after(
        s(),
        partly(),
        steps(vec![wipe_ok.clone(), removed.clone(), started.clone()]),
        healthy.clone(),
        None,
    );
    assert!(
        matches!(
            &end,
            Finish {
                status: RunStatus::PartlyDone,
                ..
            }
        ),
        "{end:?}"
    );
    // The fresh backup: to start, running, then its outcome in the message.
    let fresh_settings = || RestoreSettings {
        fresh_backup: Some("nightly".into()),
        point_in_time: None,
        ..s()
    };
    let done_steps = || steps(vec![wipe_ok.clone(), removed.clone(), started.clone()]);
    let got = after(
        fresh_settings(),
        partly(),
        done_steps(),
        healthy.clone(),
        None,
    );
    assert!(
        matches!(
            got,
            StartFreshBackup {
                status: RunStatus::PartlyDone,
                ..
            }
        ),
        "{got:?}"
    );
    let mut fresh: OneShotRecord = serde_json::from_value(json!({
        "kind": "Backup", "name": "r1-fresh-base", "opId": "f", "startedAt": now(), "status": "running",
    })).unwrap();
    let got = after(
        fresh_settings(),
        partly(),
        done_steps(),
        healthy.clone(),
        Some(fresh.clone()),
    );
    assert_eq!(
        got,
        FreshBackupRunning {
            backup: "r1-fresh-base".into()
        }
    );
    fresh.status = RunStatus::Done;
    let got = after(
        fresh_settings(),
        partly(),
        done_steps(),
        healthy.clone(),
        Some(fresh),
    );
    assert!(
        matches!(&got, Finish { message, .. } if message.contains("fresh base backup r1-fresh-base: done")),
        "{got:?}"
    );

    // A wipe that failed holds its set: no removal of fallbacks, no start, outcome Error.
    let wipe_failed = (
        Wipe,
        Some(step_op(Wipe, &[NODES[2]])),
        Some(step_done("op.wipe", &[(NODES[2], Failed)])),
        vec![],
    );
    let got = after(
        s(),
        partly(),
        steps(vec![wipe_failed]),
        healthy.clone(),
        None,
    );
    assert!(
        matches!(&got, Finish { status: RunStatus::Error, message } if message.contains("NOT started")),
        "{got:?}"
    );
    // Closed as lost, and its agent finished the wipe later: still held (the stage was
    // closed without it), never waited on for ever.
    let wipe_lost_then_done = (
        Wipe,
        Some(step_op(Wipe, &[NODES[2]])),
        Some(step_done("op.wipe", &[(NODES[2], Lost)])),
        done_views(&[NODES[2]]),
    );
    let got = after(
        s(),
        partly(),
        steps(vec![wipe_lost_then_done]),
        vec![],
        None,
    );
    assert!(
        matches!(
            &got,
            Finish {
                status: RunStatus::Error,
                ..
            }
        ),
        "{got:?}"
    );
    // A removal closed as lost whose agent did it after: counted done, the start goes on.
    let removal_lost_then_done = (
        RemoveFallback,
        Some(step_op(RemoveFallback, &all)),
        Some(step_done(
            "op.removeFallback",
            &[(NODES[0], Done), (NODES[1], Lost), (NODES[2], Done)],
        )),
        done_views(&all),
    );
    let got = after(
        s(),
        partly(),
        steps(vec![wipe_ok.clone(), removal_lost_then_done]),
        vec![],
        None,
    );
    assert_eq!(
        got,
        WriteStep {
            remedy: Start,
            targets: targets()
        }
    );

    // Error with fallback: revert then start every touched node; no health wait after a
    // failure.
    let error = result(
        RunStatus::Error,
        vec![
            verdict(NODES[0], Done, &[Revert, Start]),
            verdict(NODES[1], Failed, &[Revert, Start]),
        ],
    );
    let got = after(s(), error.clone(), steps(vec![]), vec![], None);
    assert!(
        matches!(&got, WriteStep { remedy: Revert, targets } if targets.len() == 2),
        "{got:?}"
    );
    let reverted = (
        Revert,
        Some(step_op(Revert, &[NODES[0], NODES[1]])),
        Some(step_done(
            "op.revert",
            &[(NODES[0], Done), (NODES[1], Done)],
        )),
        vec![],
    );
    let started2 = (
        Start,
        Some(step_op(Start, &[NODES[0], NODES[1]])),
        Some(step_done("op.start", &[(NODES[0], Done), (NODES[1], Done)])),
        vec![],
    );
    let got = after(
        s(),
        error.clone(),
        steps(vec![reverted.clone(), started2]),
        vec![],
        None,
    );
    assert!(
        matches!(
            &got,
            Finish {
                status: RunStatus::Error,
                ..
            }
        ),
        "{got:?}"
    );
    // A revert that failed: that node is never started on whatever its dbPath holds.
    let revert_failed = (
        Revert,
        Some(step_op(Revert, &[NODES[0], NODES[1]])),
        Some(step_done(
            "op.revert",
            &[(NODES[0], Done), (NODES[1], Failed)],
        )),
        vec![],
    );
    let got = after(s(), error, steps(vec![revert_failed]), vec![], None);
    assert_eq!(
        got,
        WriteStep {
            remedy: Start,
            targets: vec![targets()[0].clone()]
        }
    );

    // Notes the operator must act on are repeated in the outcome.
    let mut lost = verdict(NODES[2], Lost, &[]);
    lost.note = "node lost: it needs a wipe".into();
    lost.needs_operator = true;
    let with_lost = result(
        RunStatus::PartlyDone,
        vec![verdict(NODES[0], Done, &[]), lost],
    );
    let got = after(
        settings(false, false),
        with_lost,
        steps(vec![]),
        vec![],
        None,
    );
    assert!(
        matches!(&got, Finish { message, .. } if message.contains("db3:27017: node lost")),
        "{got:?}"
    );

    // The ledger holds the outcome: ended, whatever else is there.
    let mut r = decided(s(), partly(), steps(vec![]), vec![], None);
    r.record.status = RunStatus::Cancelled;
    assert_eq!(stage(&r, BOUND, now()), Ended(RunStatus::Cancelled));
}

/// A result naming a node the restore never targeted (forged, or from a bug) gets no
/// follow-up step for that node: only the restore's own targets are ever wiped.
#[test]
fn a_follow_up_step_only_ever_targets_the_restores_own_nodes() {
    use NodeFate::*;
    use Remedy::*;
    let outsider = "other:27017";
    let result = result(
        RunStatus::Error,
        vec![
            verdict(NODES[2], Failed, &[Wipe]),
            NodeVerdict {
                node: outsider.into(),
                ..verdict(NODES[2], Failed, &[Wipe])
            },
        ],
    );
    let got = after(settings(true, false), result, steps(vec![]), vec![], None);
    assert_eq!(
        got,
        RestoreStage::WriteStep {
            remedy: Wipe,
            targets: vec![targets()[2].clone()]
        }
    );
}
