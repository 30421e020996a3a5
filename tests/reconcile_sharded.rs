//! End-to-end: a sharded cluster (two shards of three and a three-node config server,
//! mongod-sim with `$clusterTime` gossip) backed up while writes keep arriving on both
//! shards, then restored. Every replica set extends its backup cursor to one cluster
//! time (the highest `oplogEnd` when the cursors opened), so after the restore each shard
//! holds exactly the writes at or before that time and none after, document by document.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bson::{Timestamp, doc};
use mongod_sim::client::BlockingConn;
use mongod_sim::harness::{ReplicaSet, ShardedCluster, binary};
use serde_json::Value;

const CLUSTER: &str = "sharded";

struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn agent(control: &Path, rs: &ReplicaSet, i: usize, log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["agent", "--cluster", CLUSTER, "--control"])
        .arg(control)
        .arg("--mongod-uri")
        .arg(format!("mongodb://{}/?directConnection=true", rs.host(i)))
        .arg("--dbpath")
        .arg(rs.dbpath(i))
        .arg("--mongod-bin")
        .arg(binary().unwrap())
        .args(["--node-id", &rs.host(i), "--replica-set", &rs.name])
        .args(["--heartbeat-interval", "1s", "--poll-interval", "200ms"])
        .args(["--cursor-keepalive", "1s", "--mongod-timeout", "60s"])
        .args([
            "--standalone-arg=--sim-checkpoint-interval-ms",
            "--standalone-arg=300",
        ])
        .env("TIDEMARK_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

fn members(rs: &ReplicaSet) -> String {
    (0..3)
        .map(|i| format!("\"{}\"", rs.host(i)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn oneshot(control: &Path, kind: &str, name: &str) -> Option<Value> {
    let path = control.join(format!("ledger/oneshots/{kind}/{name}.json"));
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn wait_end(control: &Path, kind: &str, name: &str, logs: &dyn Fn() -> String) -> Value {
    let started = Instant::now();
    loop {
        if let Some(v) = oneshot(control, kind, name)
            && matches!(v["status"].as_str(), Some("done" | "partlyDone" | "error"))
        {
            return v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "{kind} {name} never ended\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `_id`s of `app.items` on the shard's primary, once one serves.
fn ids_on(rs: &ReplicaSet) -> Vec<i64> {
    let started = Instant::now();
    loop {
        for i in 0..3 {
            let Ok(mut c) = BlockingConn::connect(&rs.host(i), Duration::from_secs(2)) else {
                continue;
            };
            let Ok(hello) = c.command("admin", doc! {"hello": 1}) else {
                continue;
            };
            if !hello.get_bool("isWritablePrimary").unwrap_or(false) {
                continue;
            }
            if let Ok(r) = c.command(
                "app",
                doc! {"find": "items", "filter": {}, "batchSize": 100000},
            ) {
                let mut ids: Vec<i64> = r
                    .get_document("cursor")
                    .and_then(|c| c.get_array("firstBatch"))
                    .map(|b| {
                        b.iter()
                            .filter_map(|d| d.as_document()?.get_i64("_id").ok())
                            .collect()
                    })
                    .unwrap_or_default();
                ids.sort();
                return ids;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "shard {} has no primary",
            rs.name
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn a_sharded_backup_restores_every_shard_to_one_cluster_time() {
    let cluster = ShardedCluster::start(2, 3).unwrap();
    let control = tempfile::TempDir::new().unwrap();
    let storage = tempfile::TempDir::new().unwrap();
    let policies = tempfile::TempDir::new().unwrap();
    let sets: Vec<&ReplicaSet> = std::iter::once(&cluster.config)
        .chain(cluster.shards.iter())
        .collect();
    let mut procs = Procs(Vec::new());
    for rs in &sets {
        for i in 0..3 {
            let log = control.path().join(format!("agent-{}-{i}.log", rs.name));
            procs.0.push(agent(control.path(), rs, i, &log));
        }
    }
    let (a, b) = (&cluster.shards[0], &cluster.shards[1]);
    std::fs::write(
        policies.path().join("cluster.yaml"),
        format!(
            "apiVersion: tidemark/v1\nkind: Cluster\nmetadata:\n  name: {CLUSTER}\nspec:\n  \
             configServer:\n    name: {}\n    members: [{}]\n  replicaSets:\n    - name: {}\n      \
             members: [{}]\n    - name: {}\n      members: [{}]\n---\napiVersion: tidemark/v1\n\
             kind: BackupStorage\nmetadata:\n  name: local\nspec:\n  url: file://{}\n",
            cluster.config.name,
            members(&cluster.config),
            a.name,
            members(a),
            b.name,
            members(b),
            storage.path().display()
        ),
    )
    .unwrap();
    let logs = || {
        let mut out = String::new();
        for e in std::fs::read_dir(control.path()).unwrap().flatten() {
            if e.file_name().to_string_lossy().ends_with(".log") {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                out.push_str(&format!("--- {}\n", e.file_name().to_string_lossy()));
                for l in tail.into_iter().rev() {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
        out
    };

    // Writes alternate between the shards, each sent with the cluster time the previous
    // reply carried (as mongos gossips it), recording the time each write got.
    let stop = Arc::new(AtomicBool::new(false));
    let hosts: Vec<Vec<String>> = [a, b]
        .iter()
        .map(|rs| (0..3).map(|i| rs.host(i)).collect())
        .collect();
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let primary = |hosts: &[String]| -> BlockingConn {
                loop {
                    for h in hosts {
                        if let Ok(mut c) = BlockingConn::connect(h, Duration::from_secs(2))
                            && c.command("admin", doc! {"hello": 1})
                                .is_ok_and(|r| r.get_bool("isWritablePrimary").unwrap_or(false))
                        {
                            return c;
                        }
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            };
            let mut conns = [primary(&hosts[0]), primary(&hosts[1])];
            let mut gossip: Option<bson::Document> = None;
            let mut written: Vec<(usize, i64, Timestamp)> = Vec::new();
            let mut n: i64 = 0;
            while !stop.load(Ordering::SeqCst) {
                let shard = (n % 2) as usize;
                let mut cmd =
                    doc! {"insert": "items", "documents": [{"_id": n, "shard": shard as i32}]};
                if let Some(g) = &gossip {
                    cmd.insert("$clusterTime", g.clone());
                }
                let r = conns[shard].command("app", cmd).expect("write");
                assert_eq!(r.get_f64("ok").unwrap_or(0.0), 1.0, "{r}");
                gossip = r.get_document("$clusterTime").ok().cloned();
                written.push((shard, n, r.get_timestamp("operationTime").unwrap()));
                n += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            written
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(
        policies.path().join("backup.yaml"),
        tidemark_testkit::backup_yaml("b1", CLUSTER, "local"),
    )
    .unwrap();
    let reconciler = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["reconcile", "--policies"])
        .arg(policies.path())
        .arg("--control")
        .arg(control.path())
        .args(["--interval", "1s", "--follow-interval", "300ms"])
        .args(["--dead-after", "5s", "--lease-ttl", "2s"])
        .env("TIDEMARK_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(control.path().join("reconciler.log")).unwrap())
        .spawn()
        .unwrap();
    procs.0.push(reconciler);
    let v = wait_end(control.path(), "backup", "b1", &logs);
    assert_eq!(v["status"], "done", "{v:#}\n{}", logs());
    std::thread::sleep(Duration::from_millis(500)); // writes after the backup, to be gone
    stop.store(true, Ordering::SeqCst);
    let written = writer.join().unwrap();

    // One cluster time for every replica set, config server included.
    let marker: Value =
        serde_json::from_slice(&std::fs::read(storage.path().join("b1/backup.json")).unwrap())
            .unwrap();
    let t = Timestamp {
        time: marker["clusterTime"]["t"].as_u64().expect("a cluster time") as u32,
        increment: marker["clusterTime"]["i"].as_u64().unwrap() as u32,
    };
    for rs in &sets {
        let m: Value = serde_json::from_slice(
            &std::fs::read(storage.path().join(format!("b1/{}/manifest.json", rs.name))).unwrap(),
        )
        .unwrap();
        assert_eq!(
            (m["lastWrite"]["t"].as_u64(), m["lastWrite"]["i"].as_u64()),
            (Some(t.time as u64), Some(t.increment as u64)),
            "{} restores to the cluster time",
            rs.name
        );
        let role = if rs.name == cluster.config.name {
            "configsvr"
        } else {
            "shardsvr"
        };
        assert_eq!(m["clusterRole"], role, "{m:#}");
    }
    for shard in 0..2 {
        let before = written.iter().filter(|w| w.0 == shard && w.2 <= t).count();
        let after = written.iter().filter(|w| w.0 == shard && w.2 > t).count();
        assert!(
            before > 0 && after > 0,
            "shard {shard}: {before} before, {after} after"
        );
        eprintln!("shard {shard}: {before} writes at or before {t:?}, {after} after");
    }

    std::fs::write(
        policies.path().join("restore.yaml"),
        format!(
            "apiVersion: tidemark/v1\nkind: Restore\nmetadata:\n  name: r1\nspec:\n  cluster: \
             {CLUSTER}\n  source:\n    backup: b1\n  fallbackEnabled: true\n  postRestore:\n    \
             startNodes: true\n"
        ),
    )
    .unwrap();
    let v = wait_end(control.path(), "restore", "r1", &logs);
    assert_eq!(v["status"], "done", "{v:#}\n{}", logs());
    for (shard, rs) in [a, b].iter().enumerate() {
        let want: Vec<i64> = written
            .iter()
            .filter(|w| w.0 == shard && w.2 <= t)
            .map(|w| w.1)
            .collect();
        assert_eq!(
            ids_on(rs),
            want,
            "shard {} holds exactly the writes up to {t:?}",
            rs.name
        );
    }
}
