//! End-to-end tests of `tidemark reconcile` driving one `tidemark agent` per node of a
//! mongod-sim replica set of 3: a Backup and a Restore committed as YAML, carried out on
//! every node, and the documents on every node checked afterwards over the wire.

#[path = "support/rig.rs"]
mod rig;
#[path = "support/world.rs"]
mod world;

use std::path::Path;
use std::time::{Duration, Instant};

use rig::*;
use serde_json::Value;
use world::*;

#[test]
fn backup_then_restore_is_done_on_every_node_with_start_nodes() {
    let w = &mut prepared(World::new("rdone"), None);
    let v = w.restore(
        "r1",
        "b1",
        "  fallbackEnabled: true\n  postRestore:\n    startNodes: true\n",
    );
    assert_eq!(v["status"], "done", "{v:#}\n{}", w.reconciler_log());
    let want: Vec<i32> = (0..50).collect();
    for i in 0..3 {
        w.wait_ids(i, &want);
        assert!(
            !w.rig.rs.dbpath(i).join(".tidemark-fallback").exists(),
            "fallback removed on node {i}"
        );
    }
    // `tidemark logs`: every node's lines of the restore and of its follow-up steps,
    // merged by time.
    let op = v["opId"].as_str().unwrap();
    let lines = w.op_logs(op);
    for i in 0..3 {
        let node = w.rig.node(i);
        let mine: Vec<&Value> = lines.iter().filter(|l| l["node"] == node).collect();
        assert!(
            mine.iter()
                .any(|l| l["op"] == op && l["message"].as_str().unwrap().contains("op done")),
            "node {i} shipped the restore's lines: {mine:#?}"
        );
        assert!(
            mine.iter()
                .any(|l| l["op"].as_str().unwrap().ends_with(".start")),
            "node {i} shipped its start step's lines: {mine:#?}"
        );
    }
    let at: Vec<&str> = lines.iter().map(|l| l["at"].as_str().unwrap()).collect();
    let mut sorted = at.clone();
    sorted.sort();
    assert_eq!(at, sorted, "merged by time");
    let text = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["logs", "--op", op, "--control"])
        .arg(w.rig.control.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.lines()
            .any(|l| l.contains(&format!("{}/{}", w.rig.rs.name, w.rig.node(1)))),
        "text names rs/node: {text}"
    );
    audit_trail(w, &v);
}

/// Each op says what caused it, and `describe-*` shows it; so does an operator's
/// `forget-backup`, with the user and host that ran it.
fn audit_trail(w: &World, restore: &Value) {
    let (status, _) = w.status();
    let applied = status["revisions"]["applied"]["revision"].clone();
    let cause = &restore["cause"];
    assert_eq!(cause["document"], "Restore/r1", "{restore:#}");
    assert_eq!(cause["revision"], applied, "{restore:#}");
    assert!(!cause["reason"].as_str().unwrap().is_empty(), "{restore:#}");
    let op = restore["opId"].as_str().unwrap();
    let start = w.control_json(&format!("ops/{op}.start/op.json")).unwrap();
    assert!(
        start["cause"]["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("Start after restore op {op}")),
        "{start:#}"
    );
    let backup = w.describe("backup", "b1");
    assert_eq!(backup["cause"]["document"], "Backup/b1", "{backup:#}");
    let text = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["describe-restore", "r1", "--control"])
        .arg(w.rig.control.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("  cause:   Restore/r1, revision "), "{text}");

    let forget = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["forget-backup", "b1", "--control"])
        .arg(w.rig.control.path())
        .envs(w.rig.agent_env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("USER", "dba-on-call")
        .output()
        .unwrap();
    assert!(
        forget.status.success(),
        "{}",
        String::from_utf8_lossy(&forget.stderr)
    );
    let forgotten = w.describe("backup", "b1");
    assert_eq!(
        forgotten["forgotten"]["command"], "forget-backup",
        "{forgotten:#}"
    );
    assert!(
        forgotten["forgotten"]["by"]
            .as_str()
            .unwrap()
            .starts_with("dba-on-call@"),
        "{forgotten:#}"
    );
}

#[test]
fn a_node_that_cannot_recover_gives_partly_done_and_initial_syncs() {
    if sim_only("a standalone start that fails (--sim-fail-startup)") {
        return;
    }
    let mut w = World::new("rpart");
    // Ended ops are compacted a second after: the outcome must stay readable.
    w.reconciler_args = vec!["--keep-ops".into(), "1s".into()];
    let w = &mut prepared(w, Some(2));
    let v = w.restore(
        "r1",
        "b1",
        "  fallbackEnabled: true\n  allowPartlyDone: true\n  postRestore:\n    startNodes: true\n",
    );
    assert_eq!(v["status"], "partlyDone", "{v:#}");
    let bad = nodes_of(&v)
        .into_iter()
        .find(|n| n["node"] == w.rig.node(2))
        .unwrap();
    assert_eq!(bad["outcome"], "failed", "{bad:#}");
    assert_eq!(bad["phase"], "recover", "{bad:#}");
    // Wiped, then initial-synced from the restored members: it holds the data too.
    let want: Vec<i32> = (0..50).collect();
    for i in 0..3 {
        w.wait_ids(i, &want);
    }
    // Compacted: the op's directory goes, its archive holds the outcome and the logs.
    let op = v["opId"].as_str().unwrap().to_string();
    let ops = w.rig.control.path().join("ops");
    let started = Instant::now();
    while std::fs::read_dir(&ops)
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with(op.as_str()))
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{op} compacted: {}",
            w.reconciler_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        w.control_json(&format!("ledger/archive/{op}.json"))
            .is_some()
    );
    assert!(
        w.control_json(&format!("ledger/archive/{op}.wipe.json"))
            .is_some()
    );
    let after = w.describe("restore", "r1");
    assert_eq!(after["status"], "partlyDone", "{after:#}");
    assert_eq!(node_view(w, &after, 2)["phase"], "recover", "{after:#}");
    assert_eq!(node_view(w, &after, 2)["outcome"], "failed", "{after:#}");
    let lines = w.op_logs(&op);
    assert!(
        lines.iter().any(|l| l["node"] == w.rig.node(2)
            && l["level"] == "ERROR"
            && l["message"].as_str().unwrap().contains("recover")),
        "the failed node's error, from the archive: {lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["op"] == format!("{op}.wipe") && l["node"] == w.rig.node(2)),
        "the wipe step's lines, from the archive: {lines:#?}"
    );
}

#[test]
fn strict_policy_gives_error_and_every_node_is_as_before() {
    if sim_only("a standalone start that fails (--sim-fail-startup)") {
        return;
    }
    let w = &mut prepared(World::new("rerr"), Some(2));
    // Let a checkpoint put the post-backup writes into files, then record every dbPath.
    std::thread::sleep(Duration::from_millis(800));
    let before: Vec<String> = (0..3).map(|i| files_hash(&w.rig.rs.dbpath(i))).collect();
    w.restore_yaml(
        "r1",
        "b1",
        "  fallbackEnabled: true\n  allowPartlyDone: false\n",
    );
    // The data files right after the revert, before the nodes start again (a started
    // member writes to its oplog at once, so only this moment can be compared): the
    // reconciler is paused as soon as it has written the revert step, and resumed once
    // every node reverted.
    let op = w.op_of("restore", "r1");
    let revert = format!("{op}.revert");
    let started = Instant::now();
    while !w
        .rig
        .control
        .path()
        .join(format!("ops/{revert}/op.json"))
        .exists()
    {
        assert!(started.elapsed() < LONG, "a revert step: {}", w.logs());
        std::thread::sleep(Duration::from_millis(10));
    }
    let reconciler = nix::unistd::Pid::from_raw(w.reconciler.as_ref().unwrap().id() as i32);
    nix::sys::signal::kill(reconciler, nix::sys::signal::Signal::SIGSTOP).unwrap();
    for i in 0..3 {
        let r = w.rig.wait_final(&revert, i);
        assert_eq!(r.phase.as_str(), "done", "node {i} reverted: {r:?}");
    }
    let reverted: Vec<String> = (0..3).map(|i| files_hash(&w.rig.rs.dbpath(i))).collect();
    nix::sys::signal::kill(reconciler, nix::sys::signal::Signal::SIGCONT).unwrap();
    assert_eq!(
        reverted, before,
        "every dbPath's data files as before the restore"
    );
    let v = w.wait_end("restore", "r1");
    assert_eq!(v["status"], "error", "{v:#}");
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("allowPartlyDone is false"),
        "{v:#}"
    );
    let want: Vec<i32> = (0..50).chain(1000..1010).collect();
    for i in 0..3 {
        // Reverted and started again: the pre-restore documents, served.
        w.wait_ids(i, &want);
        assert!(!w.rig.rs.dbpath(i).join(".tidemark-fallback").exists());
    }
}

/// A hash of the collection and index files of a dbPath: the data a restore replaces.
fn files_hash(dbpath: &Path) -> String {
    let mut names: Vec<_> = std::fs::read_dir(dbpath)
        .unwrap()
        .filter_map(|e| {
            let n = e.ok()?.file_name().to_string_lossy().into_owned();
            (n.starts_with("collection-") || n.starts_with("index-")).then_some(n)
        })
        .collect();
    names.sort();
    let mut h = blake3::Hasher::new();
    for n in names {
        h.update(n.as_bytes());
        h.update(&std::fs::read(dbpath.join(&n)).unwrap());
    }
    h.finalize().to_hex().to_string()
}

#[test]
fn a_corrupted_backup_object_gives_error_and_the_original_data_everywhere() {
    let w = &mut prepared(World::new("rcor"), None);
    // Flip a byte in the middle of every stored collection file of the backup.
    let files = w
        .rig
        .storage_dir
        .path()
        .join("b1")
        .join(&w.rig.rs.name)
        .join("files");
    for e in std::fs::read_dir(&files).unwrap() {
        let p = e.unwrap().path();
        if p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("collection-")
        {
            let mut bytes = std::fs::read(&p).unwrap();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0xff;
            std::fs::write(&p, bytes).unwrap();
        }
    }
    let v = w.restore("r1", "b1", "  fallbackEnabled: true\n");
    assert_eq!(v["status"], "error", "{v:#}");
    for n in nodes_of(&v) {
        assert_eq!(n["outcome"], "failed", "{n:#}");
        assert_eq!(n["phase"], "fetch", "{n:#}");
    }
    let want: Vec<i32> = (0..50).chain(1000..1010).collect();
    for i in 0..3 {
        w.wait_ids(i, &want);
    }
}

#[test]
fn a_reconciler_killed_mid_restore_is_taken_over_and_the_restore_runs_once() {
    let w = &mut prepared(World::new("rkill"), None);
    w.write(
        "restore-r1.yaml",
        &format!(
            "apiVersion: tidemark/v1\nkind: Restore\nmetadata:\n  name: r1\nspec:\n  cluster: \
             {CLUSTER}\n  source:\n    backup: b1\n  fallbackEnabled: true\n  postRestore:\n    \
             startNodes: true\n"
        ),
    );
    // Kill -9 the reconciler once the nodes got `go`, in the middle of the restore.
    let ops = w.rig.control.path().join("ops");
    let started = Instant::now();
    let restore_op = loop {
        let found = std::fs::read_dir(&ops).ok().and_then(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .find(|n| {
                    n.contains("-restore-r1")
                        && !n.contains('.')
                        && std::fs::read_to_string(ops.join(n).join("go.json"))
                            .is_ok_and(|g| !g.contains("abort"))
                })
        });
        if let Some(op) = found {
            break op;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no go.json");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut old = w.reconciler.take().unwrap();
    old.kill().unwrap(); // SIGKILL
    old.wait().unwrap();
    w.start_reconciler();
    let v = w.wait_end("restore", "r1");
    assert_eq!(v["status"], "done", "{v:#}\n{}", w.reconciler_log());
    assert_eq!(
        v["opId"],
        restore_op.as_str(),
        "the new process finished the same op"
    );
    let restore_ops: Vec<String> = std::fs::read_dir(&ops)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("-restore-r1") && !n.contains('.'))
        .collect();
    assert_eq!(restore_ops, vec![restore_op], "the restore ran once");
    let want: Vec<i32> = (0..50).collect();
    for i in 0..3 {
        w.wait_ids(i, &want);
    }
}
