//! End-to-end tests of `tidemark cancel-restore` and `cancel-backup` on a 3-node set, the
//! passes run by hand (`reconcile --once`) so that each cancel lands exactly where the
//! test says: before `go`, after `go` with fallback (every dbPath byte-identical to
//! before), after `go` without fallback (refused), and a backup mid-copy (no object left).

#[path = "support/rig.rs"]
mod rig;
#[path = "support/world.rs"]
mod world;

use std::process::Command;

use nix::sys::signal::Signal;
use serde_json::Value;

use rig::*;
use world::*;

/// Runs `tidemark cancel-<kind> NAME -o json --wait WAIT`; returns its exit code and
/// output.
fn cancel(w: &World, kind: &str, name: &str, wait: &str) -> (i32, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args([
            &format!("cancel-{kind}"),
            name,
            "-o",
            "json",
            "--wait",
            wait,
        ])
        .arg("--control")
        .arg(&w.rig.control_url)
        .output()
        .unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), v)
}

/// Declares Restore `name` of `b1`, runs the pass that writes its op and waits until
/// every node is ready for go; returns the op id.
fn restore_ready(w: &World, name: &str, extra: &str) -> String {
    w.restore_yaml(name, "b1", extra);
    assert_eq!(w.reconcile_once("once.log", &[]), 3, "{}", w.logs());
    let op = w.op_of("restore", name);
    wait_until(w, "every node ready", || {
        (0..3).all(|i| w.reported(&op, i, "ready"))
    });
    op
}

#[test]
fn a_restore_cancelled_before_go_touches_no_node() {
    let mut w = prepared(World::new("cbefore"), None);
    w.kill_reconciler();
    let op = restore_ready(&w, "r1", "  fallbackEnabled: true\n");
    // No reconciler runs: the request is written and the gate closed, not decided yet (3).
    let (code, v) = cancel(&w, "restore", "r1", "0s");
    assert_eq!(code, 3, "{v:#}");
    let detail = v["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("before go"), "{v:#}");
    let gate = w.control_json(&format!("ops/{op}/go.json")).unwrap();
    let closed_by = gate["abort"].as_str().unwrap_or_default();
    assert!(closed_by.contains("cancelled by"), "{gate:#}");
    w.reconcile_once("once.log", &[]);
    let v = w.wait_end("restore", "r1");
    assert_eq!(v["status"], "cancelled", "{v:#}");
    assert!(
        v["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("cancelled by"),
        "{v:#}"
    );
    assert!(v["cancel"]["by"].is_string(), "{v:#}");
    for i in 0..3 {
        assert!(!w.reported(&op, i, "stop"), "node {i} was stopped");
        w.wait_ids(i, &all_before());
    }
    // Cancelled already: asking again says so, with 0.
    let (code, v) = cancel(&w, "restore", "r1", "0s");
    assert_eq!(
        (code, v["cancel"].as_str()),
        (0, Some("cancelled")),
        "{v:#}"
    );
}

#[test]
fn a_restore_cancelled_after_go_with_fallback_puts_every_node_back_byte_for_byte() {
    let mut w = prepared(World::new("cafter"), None);
    w.kill_reconciler();
    let op = restore_ready(&w, "r1", "  fallbackEnabled: true\n");
    assert_eq!(w.reconcile_once("once.log", &[]), 3, "{}", w.logs());
    // Every node restored (mongod stopped, its old data in the fallback directory): the
    // latest a cancel can come, before the decision.
    for i in 0..3 {
        w.rig.wait_done(&op, i);
    }
    let fallback = |i: usize| w.rig.rs.dbpath(i).join(".tidemark-fallback");
    let before: Vec<String> = (0..3)
        .map(|i| tree_hash(&fallback(i), Some(".tidemark-fallback-state.json")))
        .collect();
    let (code, v) = cancel(&w, "restore", "r1", "0s");
    assert_eq!(code, 3, "{v:#}");
    let detail = v["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("past go"), "{v:#}");
    // One pass decides and writes the revert step; the nodes revert; nothing restarts
    // them until the next pass, so their files can be compared now.
    assert_eq!(w.reconcile_once("once.log", &[]), 3, "{}", w.logs());
    let revert = format!("{op}.revert");
    for i in 0..3 {
        let r = w.rig.wait_final(&revert, i);
        assert_eq!(r.phase.as_str(), "done", "node {i}: {r:?}");
    }
    // The revert says it came from the operator's cancel, and who ran it.
    let step = w.control_json(&format!("ops/{revert}/op.json")).unwrap();
    let command = step["cause"]["command"].as_str().unwrap_or_default();
    assert!(command.starts_with("cancel-restore by "), "{step:#}");
    assert_eq!(step["cause"]["document"], "Restore/r1", "{step:#}");
    let after: Vec<String> = (0..3)
        .map(|i| tree_hash(&w.rig.rs.dbpath(i), Some(".tidemark-fallback")))
        .collect();
    assert_eq!(
        after, before,
        "every dbPath byte-identical to before the restore"
    );
    w.start_reconciler();
    let v = w.wait_end("restore", "r1");
    assert_eq!(v["status"], "cancelled", "{v:#}");
    for i in 0..3 {
        w.wait_ids(i, &all_before());
        wait_fallback_gone(&w, i);
        let n = node_view(&w, &v, i);
        assert!(
            n["now"]
                .as_str()
                .unwrap_or_default()
                .contains("started again"),
            "{n:#}"
        );
    }
}

#[test]
fn a_restore_past_go_without_fallback_cannot_be_cancelled_and_goes_on() {
    let mut w = prepared(World::new("cnofb"), None);
    w.kill_reconciler();
    let op = restore_ready(&w, "r1", "  postRestore:\n    startNodes: true\n");
    assert_eq!(w.reconcile_once("once.log", &[]), 3, "{}", w.logs());
    assert!(w.control_json(&format!("ops/{op}/go.json")).is_some());
    let (code, v) = cancel(&w, "restore", "r1", "1m");
    assert_eq!(code, 5, "{v:#}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("fallbackEnabled is false"),
        "{v:#}"
    );
    assert!(w.control_json("ledger/cancel/restore/r1.json").is_none());
    w.start_reconciler();
    let v = w.wait_end("restore", "r1");
    assert_eq!(v["status"], "done", "{v:#}");
    for i in 0..3 {
        w.wait_ids(i, &(0..50).collect::<Vec<_>>());
    }
    // Ended done: a cancel now is refused (5).
    let (code, v) = cancel(&w, "restore", "r1", "0s");
    assert_eq!(code, 5, "{v:#}");
}

#[test]
fn a_cancelled_backup_leaves_no_object_and_never_counts() {
    let mut w = World::new("cbak");
    // Enough data that the copy takes a while.
    w.fill(48 << 20);
    for i in 0..3 {
        w.rig.start_agent(i);
    }
    w.start_reconciler();
    w.backup_yaml("b1", "physical");
    let op = w.op_of("backup", "b1");
    let from = {
        let mut from = None;
        wait_until(&w, "a node copying", || {
            from = (0..3).find(|&i| w.reported(&op, i, "copy"));
            from.is_some()
        });
        from.unwrap()
    };
    // Frozen mid-copy, so that the cancel surely lands before the copy ends.
    w.rig.signal_agent(from, Signal::SIGSTOP);
    let (code, v) = cancel(&w, "backup", "b1", "0s");
    assert_eq!(code, 3, "{v:#}");
    wait_until(&w, "the reconciler tells the agent to stop", || {
        w.control_json(&format!("ops/{op}/abort.json")).is_some()
    });
    w.rig.signal_agent(from, Signal::SIGCONT);
    // Asked again, waiting: it ends cancelled (0), whether it waits or finds it ended.
    let (code, v) = cancel(&w, "backup", "b1", "1m");
    assert_eq!(
        (code, v["cancel"].as_str()),
        (0, Some("cancelled")),
        "{v:#}"
    );
    let v = w.wait_end("backup", "b1");
    assert_eq!(v["status"], "cancelled", "{v:#}");
    let report = w.rig.wait_final(&op, from);
    assert_eq!(report.phase.as_str(), "error", "{report:?}");
    // Stopped mid-copy, or at the check before its manifest: either way no manifest.
    assert!(report.message.contains("abort.json"), "{}", report.message);
    // Nothing in storage, nothing in the catalog: no retention, latestOf or restore sees it.
    let left = files_under(&w.rig.storage_dir.path().join("b1"));
    assert!(left.is_empty(), "objects left: {left:?}");
    assert!(w.control_json("ledger/catalog/b1.json").is_none());
    let (status, _) = w.status();
    assert!(
        status["schedules"]
            .as_array()
            .is_none_or(|s| s.iter().all(|s| s["lastGoodBackup"] != "b1"))
    );
    // The cursor is closed: the node can take the next backup.
    w.backup_yaml("b2", "physical");
    assert_eq!(w.wait_end("backup", "b2")["status"], "done");
}

/// A cancel request that does not parse (a truncated write, a hand edit) still counts as a
/// cancel, on the safe side: before go the restore is aborted untouched, not blocked.
#[test]
fn an_unreadable_cancel_request_before_go_aborts_untouched() {
    let mut w = prepared(World::new("cbad"), None);
    w.kill_reconciler();
    let op = restore_ready(&w, "r1", "  fallbackEnabled: true\n");
    let key = w.rig.control.path().join("ledger/cancel/restore/r1.json");
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    std::fs::write(&key, b"{\"kind\": \"restore\", \"na").unwrap();
    w.reconcile_once("once.log", &[]);
    let v = w.wait_end("restore", "r1");
    assert_eq!(v["status"], "cancelled", "{v:#}");
    let reason = v["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("an unreadable request"), "{reason}");
    for i in 0..3 {
        assert!(!w.reported(&op, i, "stop"), "node {i} was stopped");
        w.wait_ids(i, &all_before());
    }
}
