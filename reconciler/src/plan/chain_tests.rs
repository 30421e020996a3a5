//! The chain rules, one per test: when an increment continues, when a new base starts and
//! why, and that retention never cuts a chain below a kept backup.

use super::*;
use crate::plan::model::RetentionDecision;
use tidemark_schema::control::{RunStatus, VerificationStatus};
use tidemark_schema::model::ReplicaSetSpec;

fn at(h: i64) -> DateTime<Utc> {
    "2026-03-10T00:00:00Z".parse::<DateTime<Utc>>().unwrap() + chrono::Duration::hours(h)
}

fn record(name: &str, h: i64, source: Option<&str>, base: &str, pos: u32) -> BackupRecord {
    serde_json::from_value(serde_json::json!({
        "name": name, "cluster": "c", "storage": "s", "schedule": "hourly",
        "type": "incremental", "status": "done", "complete": true,
        "startedAt": at(h), "lastWrite": at(h),
        "replicaSets": [{"name": "rs0", "node": "db2:1", "mongodVersion": "7.0.14",
            "uncompressedBytes": 100, "storedBytes": 50}],
        "incremental": {"base": base, "source": source, "position": pos, "blockSizeMB": 16},
    }))
    .unwrap()
}

fn chain() -> Vec<BackupRecord> {
    vec![
        record("b", 0, None, "b", 0),
        record("i1", 1, Some("b"), "b", 1),
        record("i2", 2, Some("i1"), "b", 2),
    ]
}

fn beat(node: &str, role: &str) -> Heartbeat {
    serde_json::from_value(serde_json::json!({
        "cluster": "c", "replicaSet": "rs0", "node": node, "at": at(3),
        "agentVersion": "test", "healthy": true, "role": role,
        "flavor": "psmdb", "mongodVersion": "7.0.14", "backupCursor": true,
    }))
    .unwrap()
}

fn cluster() -> ClusterSpec {
    ClusterSpec {
        replica_sets: vec![ReplicaSetSpec {
            name: "rs0".into(),
            members: vec!["db1:1".into(), "db2:1".into()],
        }],
        config_server: None,
    }
}

fn rules() -> ChainRules {
    ChainRules {
        block_size_mb: Some(16),
        max_increments: Some(10),
        new_base_after: tidemark_schema::model::parse_max_age("7d").ok(),
        force_base: false,
    }
}

fn decide(backups: &[BackupRecord], beats: &[Heartbeat], rules: &ChainRules) -> IncrementChoice {
    decide_after(backups, beats, rules, &BTreeMap::new())
}

fn decide_after(
    backups: &[BackupRecord],
    beats: &[Heartbeat],
    rules: &ChainRules,
    oneshots: &BTreeMap<(tidemark_schema::control::OneShotKind, String), OneShotRecord>,
) -> IncrementChoice {
    let c = cluster();
    plan_increment(
        rules,
        &ChainView {
            cluster_name: "c",
            storage: "s",
            cluster: &c,
            backups,
            oneshots,
            heartbeats: beats,
            now: at(3),
            dead_after: chrono::Duration::seconds(30),
        },
    )
}

fn healthy() -> Vec<Heartbeat> {
    vec![beat("db1:1", "PRIMARY"), beat("db2:1", "SECONDARY")]
}

#[test]
fn an_increment_continues_the_newest_link_on_the_node_that_took_it() {
    let choice = decide(&chain(), &healthy(), &rules());
    assert_eq!(choice.plan.link.source.as_deref(), Some("i2"));
    assert_eq!(choice.plan.link.base.as_deref(), Some("b"));
    assert_eq!(choice.plan.link.position, 3);
    assert_eq!(choice.pinned["rs0"].node.as_deref(), Some("db2:1"));
    assert_eq!(choice.plan.expected_bytes, Some(100));
}

#[test]
fn a_lost_node_starts_a_new_base_and_says_which() {
    let beats = vec![beat("db1:1", "PRIMARY")];
    let choice = decide(&chain(), &beats, &rules());
    assert_eq!(choice.plan.link.source, None);
    assert!(choice.pinned.is_empty());
    assert!(
        choice.plan.why.contains("db2:1") && choice.plan.why.contains("no heartbeat"),
        "{}",
        choice.plan.why
    );
}

#[test]
fn a_failed_or_foreign_increment_after_the_chain_breaks_it() {
    let mut failed = chain();
    let mut f = record("i3", 3, Some("i2"), "b", 3);
    f.status = RunStatus::Error;
    f.complete = false;
    failed.push(f);
    let why = decide(&failed, &healthy(), &rules()).plan.why;
    assert!(why.contains("i3") && why.contains("not good"), "{why}");

    let mut other = chain();
    let mut o = record("x0", 3, None, "x0", 0);
    o.storage = "elsewhere".into();
    other.push(o);
    let why = decide(&other, &healthy(), &rules()).plan.why;
    assert!(why.contains("x0") && why.contains("elsewhere"), "{why}");

    let mut unverified = chain();
    unverified[2].verification = Some(tidemark_schema::control::Verification {
        status: VerificationStatus::Failed,
        ..tidemark_schema::control::Verification::pending(tidemark_schema::model::VerifyLevel::Data)
    });
    let why = decide(&unverified, &healthy(), &rules()).plan.why;
    assert!(why.contains("verification failed"), "{why}");
}

#[test]
fn the_schedules_limits_start_a_new_base() {
    let full = ChainRules {
        max_increments: Some(2),
        ..rules()
    };
    let why = decide(&chain(), &healthy(), &full).plan.why;
    assert!(why.contains("maxIncrements 2"), "{why}");
    let old = ChainRules {
        new_base_after: tidemark_schema::model::parse_max_age("2h").ok(),
        ..rules()
    };
    let why = decide(&chain(), &healthy(), &old).plan.why;
    assert!(why.contains("newBaseAfter 2h"), "{why}");
    let resized = ChainRules {
        block_size_mb: Some(4),
        ..rules()
    };
    let choice = decide(&chain(), &healthy(), &resized);
    assert_eq!(choice.plan.link.block_size_mb, 4);
    assert!(
        choice.plan.why.contains("16 MB to 4 MB"),
        "{}",
        choice.plan.why
    );
}

fn decision(name: &str, keep: bool) -> RetentionDecision {
    RetentionDecision {
        backup: name.into(),
        schedule: "hourly".into(),
        keep,
        reasons: vec![if keep {
            "kept".into()
        } else {
            "kept by no rule".into()
        }],
        orphaned: false,
    }
}

#[test]
fn retention_never_cuts_a_chain_below_a_kept_backup() {
    let backups = chain();
    // Only the middle increment is kept by a rule: its base stays, the tail may go.
    let mut d = vec![
        decision("i2", false),
        decision("i1", true),
        decision("b", false),
    ];
    keep_chains(&mut d, &backups);
    assert!(!d[0].keep, "nothing is built on the tail: {:?}", d[0]);
    assert!(
        d[0].reasons
            .iter()
            .any(|r| r.contains("increment 2 of chain b"))
    );
    assert!(d[2].keep, "the base outlives its last kept increment");
    assert!(
        d[2].reasons[0].contains("kept backup i1 is built on it"),
        "{:?}",
        d[2]
    );
}

#[test]
fn a_restore_needs_every_link_and_names_a_missing_one() {
    let backups = chain();
    let names: Vec<&str> = chain_of(&backups[2], &backups)
        .unwrap()
        .iter()
        .map(|b| b.name.as_str())
        .collect();
    assert_eq!(names, ["b", "i1", "i2"]);
    let gone = vec![backups[0].clone(), backups[2].clone()];
    let why = chain_of(&gone[1], &gone).unwrap_err();
    assert!(why.contains("\"i1\"") && why.contains("broken"), "{why}");
}

#[test]
fn a_restore_of_the_cluster_after_the_chain_starts_a_new_base() {
    let restore: OneShotRecord = serde_json::from_value(serde_json::json!({
        "kind": "Restore", "name": "undo", "opId": "op1", "startedAt": at(2) + chrono::Duration::minutes(1),
        "status": "done", "message": "",
        "startedWith": {"settings": {"cluster": "c", "backup": "i1"}},
    }))
    .unwrap();
    let oneshots = BTreeMap::from([((restore.kind, restore.name.clone()), restore)]);
    let why = decide_after(&chain(), &healthy(), &rules(), &oneshots)
        .plan
        .why;
    assert!(why.contains("Restore \"undo\""), "{why}");
}

#[test]
fn a_pending_verification_does_not_stop_the_chain() {
    let mut pending = chain();
    pending[2].verification = Some(tidemark_schema::control::Verification::pending(
        tidemark_schema::model::VerifyLevel::Metadata,
    ));
    let choice = decide(&pending, &healthy(), &rules());
    assert_eq!(
        choice.plan.link.source.as_deref(),
        Some("i2"),
        "{}",
        choice.plan.why
    );
}

#[test]
fn a_running_increment_pins_its_source_against_retention_and_forget() {
    let running: OneShotRecord = serde_json::from_value(serde_json::json!({
        "kind": "Backup", "name": "i3", "opId": "op3", "startedAt": at(3),
        "status": "running", "message": "",
        "startedWith": {"settings": {"cluster": "c", "incremental":
            {"base": "b", "source": "i2", "position": 3, "blockSizeMB": 16}}},
    }))
    .unwrap();
    let mut observed = crate::control::ObservedState {
        backups: chain(),
        ..Default::default()
    };
    observed
        .oneshots
        .insert((running.kind, running.name.clone()), running);
    let pinned = crate::plan::pinned_backups(None, &observed, at(3));
    assert!(pinned.contains("i2"), "{pinned:?}");
}

#[test]
fn an_increment_whose_chain_lost_a_link_does_not_count_for_retention() {
    let spec = keep_last_one();
    // i1 is gone: i2 restores nothing, so the base stays the newest restorable backup.
    let backups = vec![chain()[0].clone(), chain()[2].clone()];
    let decisions =
        super::super::retention::decide("hourly", &spec, &backups, &Default::default(), at(3));
    let base = decisions.iter().find(|d| d.backup == "b").unwrap();
    assert!(base.keep, "{decisions:#?}");
    let broken = decisions.iter().find(|d| d.backup == "i2").unwrap();
    assert!(!broken.keep, "{decisions:#?}");
    assert!(
        broken.reasons[0].contains("\"i1\"") && broken.reasons[0].contains("cannot be restored"),
        "{broken:?}"
    );
}

#[test]
fn a_cancelled_base_clears_the_history_of_the_chain_before_it() {
    let cancelled: OneShotRecord = serde_json::from_value(serde_json::json!({
        "kind": "Backup", "name": "b2", "opId": "op2", "startedAt": at(2) + chrono::Duration::minutes(1),
        "status": "cancelled", "message": "",
        "startedWith": {"settings": {"cluster": "c", "incremental":
            {"base": "b2", "position": 0, "blockSizeMB": 16}}},
    }))
    .unwrap();
    let oneshots = BTreeMap::from([((cancelled.kind, cancelled.name.clone()), cancelled)]);
    let why = decide_after(&chain(), &healthy(), &rules(), &oneshots)
        .plan
        .why;
    assert!(why.contains("\"b2\" was cancelled"), "{why}");
}

#[test]
fn an_increment_whose_link_waits_for_verification_is_neither_counted_nor_deleted() {
    let spec = keep_last_one();
    let mut backups = chain();
    // The base's data check takes longer than its increments' checks.
    backups[0].verification = Some(tidemark_schema::control::Verification::pending(
        tidemark_schema::model::VerifyLevel::Data,
    ));
    let decisions =
        super::super::retention::decide("hourly", &spec, &backups, &Default::default(), at(3));
    assert!(
        decisions.iter().all(|d| d.keep),
        "nothing is deleted while the base is checked: {decisions:#?}"
    );
}

/// An hourly incremental schedule of `c` into `s` that keeps one backup.
fn keep_last_one() -> tidemark_schema::model::BackupScheduleSpec {
    serde_json::from_value(serde_json::json!({
        "cluster": "c", "storage": "s", "type": "incremental", "cron": "0 * * * *",
        "retention": {"keepLast": 1},
    }))
    .unwrap()
}
