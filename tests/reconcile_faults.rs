//! End-to-end tests of `tidemark reconcile` when things go wrong or wait on people: a node
//! whose disk is too small, an agent killed mid-restore and never restarted, the desired
//! state in git with a commit that does not validate, and an external (snapshot) restore
//! that waits for the operator's copy.

#[path = "support/rig.rs"]
mod rig;
#[path = "support/world.rs"]
mod world;

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;
use tempfile::TempDir;
use tidemark_schema::control::heartbeat_key;

use rig::*;
use world::*;

#[test]
fn a_node_whose_disk_is_too_small_refuses_the_restore_before_any_node_is_stopped() {
    in_mount_namespace("inner_small_disk_on_one_node", None);
}

/// Node `i`'s disk figures as its agent's last heartbeat reports them, once that heartbeat
/// also shows mongod answering as a healthy member (`None` until then).
fn reported_disk(w: &World, i: usize) -> Option<(u64, u64)> {
    let hb = w.control_json(&heartbeat_key(CLUSTER, &w.rig.rs.name, &w.rig.node(i)))?;
    if hb["healthy"] != true || !matches!(hb["role"].as_str(), Some("PRIMARY" | "SECONDARY")) {
        return None;
    }
    let disk = &hb["disk"];
    Some((disk["totalBytes"].as_u64()?, disk["usedBytes"].as_u64()?))
}

/// Waits until node `i`'s heartbeat reports a disk for which `f(total, used)` holds.
fn wait_reported_disk(w: &World, i: usize, what: &str, f: impl Fn(u64, u64) -> bool) {
    let started = Instant::now();
    while !reported_disk(w, i).is_some_and(|(t, u)| f(t, u)) {
        assert!(
            started.elapsed() < LONG,
            "node {i}'s heartbeat never reported {what}: {:?}",
            reported_disk(w, i)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs only inside `in_mount_namespace`; does nothing in a normal run.
///
/// A too-small disk is caught by the node's agent at its own disk check, whatever its last
/// heartbeat said; both cases are driven here without a race: the heartbeat the reconciler
/// planned from still showed room, and the heartbeat shows the full disk (the reconciler
/// neither waits nor guesses from it). Either way the restore ends in error and no node
/// is stopped.
#[test]
fn inner_small_disk_on_one_node() {
    if std::env::var_os(TMPFS_VAR).is_none() {
        return;
    }
    let mut w = World::new("rdsk");
    // Long enough that an agent frozen below is not taken for lost while it is frozen.
    w.dead_after = "60s".into();
    let mut w = prepared(w, None);
    // Node 2's dbPath moves onto a small disk of its own.
    w.rig.rs.stop(2).unwrap();
    let db = w.rig.rs.dbpath(2);
    mount_small_disk(&db, "64m");
    w.rig.rs.restart(2).unwrap();
    let room = |total: u64, used: u64| (total * 85 / 100) as i128 - used as i128;
    wait_reported_disk(&w, 2, "the small disk with room", |t, u| {
        t <= 64 << 20 && room(t, u) > 1 << 20
    });

    // 1. The agent is frozen, so its last heartbeat still shows room, while the disk is
    //    filled to 90 %: past the 85 % rule, with room left for mongod to keep running.
    w.rig.signal_agent(2, Signal::SIGSTOP);
    let facts = tidemark_agent::disk::disk_facts(&db).unwrap();
    let ballast = (facts.total_bytes * 90 / 100).saturating_sub(facts.used_bytes);
    std::fs::write(db.join("ballast.bin"), vec![7u8; ballast as usize]).unwrap();
    w.restore_yaml("r1", "b1", "  fallbackEnabled: true\n");
    let op = w.op_of("restore", "r1");
    let started = w.describe("restore", "r1");
    assert_eq!(
        started["status"], "running",
        "planned from the old heartbeat: {started:#}"
    );
    w.rig.signal_agent(2, Signal::SIGCONT);
    let v = w.wait_end("restore", "r1");
    assert_eq!(v["status"], "error", "{v:#}");
    let reason = v["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("aborted before any node was touched"),
        "{reason}"
    );
    assert!(reason.contains(&w.rig.node(2)), "names the node: {reason}");
    assert!(
        reason.contains("not enough disk for a restore with fallback"),
        "{reason}"
    );
    let small = node_view(&w, &v, 2);
    assert_eq!(small["outcome"], "refused", "{small:#}");
    for i in 0..3 {
        assert!(!w.reported(&op, i, "stop"), "node {i} was stopped");
        assert!(!w.rig.rs.dbpath(i).join(".tidemark-fallback").exists());
        w.wait_ids(i, &all_before());
    }

    // 2. Once the heartbeat shows the full disk, the restore neither waits on it nor is
    //    refused from those (possibly stale) figures: the agent measures again and the
    //    restore is aborted on every node, untouched, partial results allowed or not.
    wait_reported_disk(&w, 2, "the full disk", |t, u| room(t, u) < 0);
    w.restore_yaml(
        "r2",
        "b1",
        "  fallbackEnabled: true\n  allowPartlyDone: true\n",
    );
    let v = w.wait_end("restore", "r2");
    assert_eq!(v["status"], "error", "{v:#}");
    let reason = v["reason"].as_str().unwrap_or_default();
    for want in [
        "aborted before any node was touched",
        "not enough disk for a restore with fallback",
        &w.rig.node(2),
    ] {
        assert!(reason.contains(want), "{want:?} missing: {reason}");
    }
    let op2 = v["opId"].as_str().expect("an op id").to_string();
    assert_ne!(op2, op);
    assert_eq!(node_view(&w, &v, 2)["outcome"], "refused", "{v:#}");
    for i in 0..3 {
        assert!(!w.reported(&op2, i, "stop"), "node {i} was stopped");
        assert!(!w.rig.rs.dbpath(i).join(".tidemark-fallback").exists());
        w.wait_ids(i, &all_before());
    }
    println!("INNER OK inner_small_disk_on_one_node");
}

#[test]
fn an_agent_killed_mid_fetch_is_a_lost_node_and_the_flow_decides_without_it() {
    let w = World::new("rlost");
    // Enough data that the download takes a moment.
    w.fill(48 << 20);
    let mut w = prepared(w, None);
    w.restore_yaml(
        "r1",
        "b1",
        "  fallbackEnabled: true\n  allowPartlyDone: true\n  postRestore:\n    startNodes: true\n",
    );
    let op = w.op_of("restore", "r1");
    let started = Instant::now();
    while !w.reported(&op, 2, "fetch") {
        assert!(started.elapsed() < LONG, "no fetch on node 2\n{}", w.logs());
        std::thread::sleep(Duration::from_millis(5));
    }
    w.rig.kill_agent(2); // SIGKILL, and it never comes back
    let path = if w.reported(&op, 2, "recover") {
        "after fetch"
    } else {
        "mid-fetch"
    };
    eprintln!("agent 2 killed {path}");

    let v = w.wait_end("restore", "r1");
    // Two of three restored in the only replica set, partial results allowed.
    assert_eq!(v["status"], "partlyDone", "{v:#}\n{}", w.logs());
    let lost = node_view(&w, &v, 2);
    assert_eq!(lost["outcome"], "lost", "{lost:#}");
    assert!(
        lost["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("node lost, last heartbeat"),
        "{lost:#}"
    );
    assert_eq!(lost["remedies"], Value::Array(vec![]), "nobody to run them");
    assert!(
        lost["note"]
            .as_str()
            .unwrap_or_default()
            .contains("when it returns it needs: wipe"),
        "{lost:#}"
    );
    // The text view says it too.
    let text = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["describe-restore", "r1", "--control"])
        .arg(w.rig.control.path())
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("node lost"),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );
    let want: Vec<i32> = (0..50).collect();
    for i in 0..2 {
        w.wait_ids(i, &want);
        assert!(!w.rig.rs.dbpath(i).join(".tidemark-fallback").exists());
    }
}

#[test]
fn a_restore_committed_to_git_is_carried_out_and_an_invalid_commit_changes_nothing() {
    let mut w = prepared(World::new_git("rgit"), None);
    let v = w.restore("r1", "b1", "  fallbackEnabled: true\n");
    assert_eq!(v["status"], "done", "{v:#}\n{}", w.logs());
    let good = w.control_json("ledger/applied.json").unwrap()["revision"]
        .as_str()
        .unwrap()
        .to_string();

    // A commit with a new Restore and a typo elsewhere: it does not validate as a whole.
    w.restore_yaml("r2", "b1", "  fallbackEnabled: true\n");
    w.write(
        "typo.yaml",
        &format!(
            "apiVersion: tidemark/v1\nkind: Backup\nmetadata:\n  name: b2\nspec:\n  cluster: \
             {CLUSTER}\n  storge: local\n"
        ),
    );
    let bad = w.commit("r2 and a typo");
    let started = Instant::now();
    let attempted = loop {
        let a = w.control_json("ledger/attempted.json");
        if let Some(a) = a.filter(|a| a["revision"] == bad.as_str()) {
            break a;
        }
        assert!(started.elapsed() < LONG, "commit {bad} never attempted");
        std::thread::sleep(Duration::from_millis(200));
    };
    let errors = attempted["errors"].to_string();
    assert!(
        errors.contains("typo.yaml") && errors.contains("storge"),
        "{attempted:#}"
    );
    assert_eq!(
        w.control_json("ledger/applied.json").unwrap()["revision"],
        good.as_str()
    );

    // A restart while the head is invalid keeps the applied revision in force.
    w.kill_reconciler();
    w.start_reconciler();
    let started = Instant::now();
    while !w
        .reconciler_log()
        .contains("keeping the ledger's applied revision in force")
    {
        assert!(started.elapsed() < LONG, "{}", w.reconciler_log());
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3)); // a pass or two more
    assert!(
        w.control_json("ledger/oneshots/restore/r2.json").is_none(),
        "the invalid commit's restore never started"
    );
    assert!(w.control_json("ledger/oneshots/backup/b2.json").is_none());
    assert_eq!(
        w.control_json("ledger/applied.json").unwrap()["revision"],
        good.as_str()
    );
    assert_eq!(w.describe("restore", "r1")["status"], "done");
}

#[test]
fn an_external_restore_waits_at_copy_ready_and_finishes_after_restore_finish() {
    let mut w = World::new("rext");
    w.rig.insert(0..50);
    for i in 0..3 {
        w.wait_ids(i, &(0..50).collect::<Vec<_>>());
        w.rig.start_agent(i);
    }
    std::thread::sleep(Duration::from_millis(800));
    w.start_reconciler();

    // An external backup: the operator's "snapshot" copies the listed files.
    w.backup_yaml("s1", "external");
    let v = w.wait_status("backup", "s1", &["copyReady"]);
    let op = v["opId"].as_str().unwrap().to_string();
    let from = (0..3)
        .find(|&i| w.reported(&op, i, "copyReady"))
        .expect("one node is ready to copy");
    let report = w.rig.report(&op, from, "copyReady").unwrap();
    let snapshot = TempDir::new().unwrap();
    for f in report.details["files"].as_array().unwrap() {
        let rel = f["path"].as_str().unwrap();
        copy_file(&w.rig.rs.dbpath(from).join(rel), &snapshot.path().join(rel));
    }
    w.rig.finish("backup-finish", &op);
    assert_eq!(w.wait_end("backup", "s1")["status"], "done");
    w.rig.insert(1000..1010);

    w.restore_yaml(
        "r1",
        "s1",
        "  external: true\n  postRestore:\n    startNodes: true\n",
    );
    let v = w.wait_status("restore", "r1", &["copyReady"]);
    let op = v["opId"].as_str().unwrap().to_string();
    let started = Instant::now();
    while !(0..3).all(|i| w.reported(&op, i, "copyReady")) {
        assert!(started.elapsed() < LONG, "{}", w.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    let v = w.describe("restore", "r1");
    assert_eq!(v["status"], "copyReady", "it waits for the operator: {v:#}");
    for i in 0..3 {
        assert!(!w.reported(&op, i, "done"), "node {i} did not wait");
        copy_tree(snapshot.path(), &w.rig.rs.dbpath(i));
    }
    w.rig.finish("restore-finish", &op);
    let v = w.wait_end("restore", "r1");
    assert_eq!(v["status"], "done", "{v:#}\n{}", w.logs());
    let want: Vec<i32> = (0..50).collect();
    for i in 0..3 {
        w.wait_ids(i, &want);
    }
}

fn copy_file(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(from, to).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
}
