//! End-to-end tests of the restore's safety rules, each driven through the real binaries:
//! a backup missing one object is refused before any node is touched, a node whose agent
//! froze right after `ready` never has its replica set started beside restored members,
//! and a restore that did not get its `go` in time never stops a node, however late the
//! reconciler comes back.

#[path = "support/rig.rs"]
mod rig;
#[path = "support/world.rs"]
mod world;

use nix::sys::signal::Signal;

use world::*;

/// Declares Restore `name` of `b1` and runs one pass with `flags`, which writes its op;
/// returns the op's id.
fn start_restore_once(w: &World, name: &str, extra: &str, flags: &[&str]) -> String {
    w.restore_yaml(name, "b1", extra);
    assert_eq!(w.reconcile_once("once.log", flags), 3, "{}", w.logs());
    w.op_of("restore", name)
}

#[test]
fn a_backup_missing_one_object_is_refused_and_every_node_keeps_serving_its_data() {
    let mut w = prepared(World::new("smiss"), None);
    // A lifecycle rule (or a half-finished delete) took one data object of the backup.
    let manifest = w.rig.manifest("b1");
    let object = manifest
        .files
        .iter()
        .filter_map(|f| f.object.clone())
        .find(|o| o.contains("collection"))
        .or_else(|| manifest.files.iter().find_map(|f| f.object.clone()))
        .expect("the backup has data objects");
    std::fs::remove_file(w.rig.storage_dir.path().join(&object)).unwrap();

    // Fallback off: without the check every dbPath would be wiped before the fetch failed.
    let v = w.restore("r1", "b1", "  allowPartlyDone: true\n");
    assert_eq!(v["status"], "error", "{v:#}");
    let reason = v["reason"].as_str().unwrap_or_default();
    assert!(reason.contains(&object), "names the object: {reason}");
    assert!(reason.contains("missing"), "{reason}");
    assert!(
        v["opId"]
            .as_str()
            .is_none_or(|op| !w.reported(op, 0, "stop")),
        "{v:#}"
    );
    for i in 0..3 {
        w.wait_ids(i, &all_before());
    }
}

#[test]
fn an_agent_frozen_after_ready_never_has_its_set_started_beside_restored_members() {
    let mut w = prepared(World::new("sfrz"), None);
    // Passes are run by hand from here, so that `go` opens exactly when the test says.
    w.kill_reconciler();
    let op = start_restore_once(
        &w,
        "r1",
        "  allowPartlyDone: true\n  postRestore:\n    startNodes: true\n",
        &[],
    );
    wait_until(&w, "every node ready", || {
        (0..3).all(|i| w.reported(&op, i, "ready"))
    });
    // Node 2's agent freezes after `ready`: it may have seen go or not, it says nothing.
    w.rig.signal_agent(2, Signal::SIGSTOP);
    // Not lost yet by a patient reader, but stuck: its work has not moved for a second.
    wait_until(&w, "describe-restore shows node 2 stuck at ready", || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args([
                "describe-restore",
                "r1",
                "--dead-after",
                "1h",
                "--stuck-after",
                "1s",
            ])
            .arg("--control")
            .arg(&w.rig.control_url)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        text.contains("STUCK: nothing new in phase ready")
    });
    assert_eq!(w.reconcile_once("once.log", &[]), 3, "{}", w.logs());
    assert!(
        w.control_json(&format!("ops/{op}/go.json")).is_some(),
        "go is open"
    );
    w.start_reconciler();
    let v = w.wait_end("restore", "r1");
    assert_eq!(v["status"], "error", "{v:#}\n{}", w.logs());
    let reason = v["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&w.rig.node(2)) && reason.contains("may still serve"),
        "{reason}"
    );
    let frozen = node_view(&w, &v, 2);
    assert!(
        frozen["note"]
            .as_str()
            .unwrap_or_default()
            .contains("may still serve"),
        "{frozen:#}"
    );
    // No start step was written: the restored members stay down beside the frozen node.
    assert!(
        w.control_json(&format!("ops/{op}.start/op.json")).is_none(),
        "{v:#}"
    );
    for i in 0..2 {
        assert!(w.reported(&op, i, "done"), "node {i} restored");
        assert!(w.ids_at(i).is_none(), "node {i} was started");
    }
    // Thawed, the agent finds the restore decided and leaves its node as it was.
    w.rig.signal_agent(2, Signal::SIGCONT);
    let last = w.rig.wait_final(&op, 2);
    assert_eq!(last.phase.as_str(), "error", "{last:?}");
    assert!(!w.reported(&op, 2, "stop"), "node 2 was stopped");
    w.wait_ids(2, &all_before());
}

#[test]
fn a_restore_without_go_in_time_never_stops_a_node_however_late_the_reconciler_returns() {
    let mut w = prepared(World::new("sgo"), None);
    w.kill_reconciler();

    // 1. The reconciler is back long after the agents got ready (the op allows them a
    //    minute): it never opens the gate for an op older than its own --go-timeout.
    let fallback = "  fallbackEnabled: true\n";
    let op = start_restore_once(&w, "r1", fallback, &["--go-timeout", "60s"]);
    wait_until(&w, "every node ready", || {
        (0..3).all(|i| w.reported(&op, i, "ready"))
    });
    let created = w.control_json(&format!("ops/{op}/op.json")).unwrap()["createdAt"]
        .as_str()
        .unwrap()
        .parse::<chrono::DateTime<chrono::Utc>>()
        .unwrap();
    wait_until(&w, "the op is older than 2 s", || {
        chrono::Utc::now() - created > chrono::Duration::seconds(2)
    });
    w.reconcile_once("once.log", &["--go-timeout", "2s"]);
    let v = w.wait_end("restore", "r1");
    assert_eq!(v["status"], "error", "{v:#}");
    let reason = v["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("aborted before any node was touched") && reason.contains("--go-timeout"),
        "{reason}"
    );

    // 2. No reconciler comes back at all: the agents stop waiting after the op's go
    //    timeout, close the gate and refuse, untouched.
    let op2 = start_restore_once(&w, "r2", fallback, &["--go-timeout", "3s"]);
    for i in 0..3 {
        let last = w.rig.wait_final(&op2, i);
        assert!(
            last.message.contains("no go within"),
            "node {i}: {}",
            last.message
        );
    }
    let gate = w.control_json(&format!("ops/{op2}/go.json")).unwrap();
    assert!(gate["abort"].is_string(), "{gate:#}");
    w.reconcile_once("once.log", &[]);
    let v = w.wait_end("restore", "r2");
    assert_eq!(v["status"], "error", "{v:#}");

    for op in [&op, &op2] {
        for i in 0..3 {
            assert!(!w.reported(op, i, "stop"), "node {i} was stopped by {op}");
        }
    }
    for i in 0..3 {
        assert!(!w.rig.rs.dbpath(i).join(".tidemark-fallback").exists());
        w.wait_ids(i, &all_before());
    }
}
