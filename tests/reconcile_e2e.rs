//! End-to-end tests of `tidemark reconcile` driving one `tidemark agent` per node of a
//! mongod-sim replica set of 3: a Backup and a Restore committed as YAML, carried out on
//! every node, and the documents on every node checked afterwards over the wire.

#[path = "support/rig.rs"]
mod rig;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bson::doc;
use mongod_sim::client::BlockingConn;
use serde_json::Value;
use tempfile::TempDir;

use rig::*;

/// A rig plus a policy directory and a running reconciler.
struct World {
    rig: Rig,
    policies: TempDir,
    reconciler: Option<Child>,
}

impl World {
    fn new(name: &str) -> World {
        let rig = Rig::new(name, 3, &[]);
        let policies = TempDir::new().unwrap();
        let members: Vec<String> = (0..3)
            .map(|i| format!("        - {}", rig.node(i)))
            .collect();
        std::fs::write(
            policies.path().join("cluster.yaml"),
            format!(
                "apiVersion: tidemark/v1\nkind: Cluster\nmetadata:\n  name: {CLUSTER}\nspec:\n  \
                 replicaSets:\n    - name: {}\n      members:\n{}\n---\napiVersion: tidemark/v1\n\
                 kind: BackupStorage\nmetadata:\n  name: local\nspec:\n  url: {}\n",
                rig.rs.name,
                members.join("\n"),
                rig.storage_url
            ),
        )
        .unwrap();
        World {
            rig,
            policies,
            reconciler: None,
        }
    }

    fn write(&self, file: &str, yaml: &str) {
        std::fs::write(self.policies.path().join(file), yaml).unwrap();
    }

    fn start_reconciler(&mut self) {
        let log = std::fs::File::create(self.rig.control.path().join("reconciler.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args(["reconcile", "--policies"])
            .arg(self.policies.path())
            .arg("--control")
            .arg(self.rig.control.path())
            .args([
                "--interval",
                "2s",
                "--follow-interval",
                "300ms",
                "--dead-after",
                "5s",
            ])
            .env("TIDEMARK_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.reconciler = Some(child);
    }

    fn reconciler_log(&self) -> String {
        std::fs::read_to_string(self.rig.control.path().join("reconciler.log")).unwrap_or_default()
    }

    /// `tidemark describe-<kind> NAME -o json`.
    fn describe(&self, kind: &str, name: &str) -> Value {
        let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args([&format!("describe-{kind}"), name, "-o", "json", "--control"])
            .arg(self.rig.control.path())
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// Waits until the operation ended; returns its view.
    fn wait_end(&self, kind: &str, name: &str) -> Value {
        let started = Instant::now();
        loop {
            let v = self.describe(kind, name);
            if matches!(v["status"].as_str(), Some("done" | "partlyDone" | "error")) {
                return v;
            }
            assert!(
                started.elapsed() < Duration::from_secs(150),
                "{kind} {name} did not end: {v:#}\nreconciler log:\n{}\nagent logs:\n{}\n{}\n{}",
                self.reconciler_log(),
                self.rig.agent_log(0),
                self.rig.agent_log(1),
                self.rig.agent_log(2)
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Ids of `app.items` on node `i`, asked over the wire (the node may have been
    /// started by its agent, not by the rig).
    fn ids_at(&self, i: usize) -> Option<Vec<i32>> {
        let mut c = BlockingConn::connect(&self.rig.node(i), Duration::from_secs(2)).ok()?;
        let reply = c
            .command(
                "app",
                doc! {"find": "items", "filter": {}, "batchSize": 100000, "sort": {"_id": 1}, "$readPreference": {"mode": "secondaryPreferred"}},
            )
            .ok()?;
        let batch = reply
            .get_document("cursor")
            .ok()?
            .get_array("firstBatch")
            .ok()?;
        Some(
            batch
                .iter()
                .filter_map(|d| d.as_document()?.get_i32("_id").ok())
                .collect(),
        )
    }

    /// Waits until node `i` serves exactly `want`.
    fn wait_ids(&self, i: usize, want: &[i32]) {
        let started = Instant::now();
        loop {
            let got = self.ids_at(i);
            if got.as_deref() == Some(want) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "node {i} serves {:?} ids (want {}): {:?}",
                got.as_ref().map(Vec::len),
                want.len(),
                got.map(|g| g.into_iter().take(5).collect::<Vec<_>>())
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn backup(&mut self, name: &str) {
        self.write(
            &format!("backup-{name}.yaml"),
            &format!(
                "apiVersion: tidemark/v1\nkind: Backup\nmetadata:\n  name: {name}\nspec:\n  \
                 cluster: {CLUSTER}\n  storage: local\n  type: physical\n"
            ),
        );
        let v = self.wait_end("backup", name);
        assert_eq!(v["status"], "done", "{v:#}\n{}", self.reconciler_log());
        assert!(
            self.rig
                .storage_dir
                .path()
                .join(name)
                .join("backup.json")
                .exists(),
            "the completion marker is written"
        );
    }

    fn restore(&mut self, name: &str, backup: &str, extra: &str) -> Value {
        self.write(
            &format!("restore-{name}.yaml"),
            &format!(
                "apiVersion: tidemark/v1\nkind: Restore\nmetadata:\n  name: {name}\nspec:\n  \
                 cluster: {CLUSTER}\n  source:\n    backup: {backup}\n{extra}"
            ),
        );
        self.wait_end("restore", name)
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(mut c) = self.reconciler.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Members started by agents are not the rig's children: stop them over the wire.
        for i in 0..3 {
            if let Ok(mut c) = BlockingConn::connect(&self.rig.node(i), Duration::from_millis(500))
            {
                let _ = c.command("admin", doc! {"shutdown": 1, "force": true});
            }
        }
    }
}

/// Data written, agents and reconciler up, backup `b1` taken, then data written after it.
fn prepared(name: &str, faulty_recover: Option<usize>) -> World {
    let mut w = World::new(name);
    w.rig.insert(0..50);
    for i in 0..3 {
        if Some(i) == faulty_recover {
            w.rig
                .start_agent_with(i, &["--standalone-arg=--sim-fail-startup=injected fault"]);
        } else {
            w.rig.start_agent(i);
        }
    }
    std::thread::sleep(Duration::from_millis(800));
    w.start_reconciler();
    w.backup("b1");
    w.rig.insert(1000..1010);
    w
}

fn nodes_of(v: &Value) -> Vec<Value> {
    v["replicaSets"][0]["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn backup_then_restore_is_done_on_every_node_with_start_nodes() {
    let w = &mut prepared("rdone", None);
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
}

#[test]
fn a_node_that_cannot_recover_gives_partly_done_and_initial_syncs() {
    let w = &mut prepared("rpart", Some(2));
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
}

#[test]
fn strict_policy_gives_error_and_every_node_is_as_before() {
    let w = &mut prepared("rerr", Some(2));
    // Let a checkpoint put the post-backup writes into files, then record every dbPath.
    std::thread::sleep(Duration::from_millis(800));
    let before: Vec<String> = (0..3).map(|i| files_hash(&w.rig.rs.dbpath(i))).collect();
    let v = w.restore(
        "r1",
        "b1",
        "  fallbackEnabled: true\n  allowPartlyDone: false\n",
    );
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
    // The data files are byte-identical to before the restore (mongod, started again,
    // rewrites only its lock and its diagnostics).
    for (i, b) in before.iter().enumerate() {
        assert_eq!(&files_hash(&w.rig.rs.dbpath(i)), b, "node {i} data files");
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
    let w = &mut prepared("rcor", None);
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
    let w = &mut prepared("rkill", None);
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
                        && ops.join(n).join("go.json").exists()
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
