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

/// One sharded cluster at a time: nine mongods, nine agents and a reconciler already fill
/// two cores; two such tests at once starve elections and time out.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn agent(control: &Path, rs: &ReplicaSet, i: usize, extra: &[&str]) -> Child {
    let log = control.join(format!("agent-{}-{i}.log", rs.name));
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
        .args(extra)
        .env("TIDEMARK_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .unwrap(),
        )
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

/// A control plane, a storage and a policy directory.
struct Dirs {
    control: tempfile::TempDir,
    storage: tempfile::TempDir,
    policies: tempfile::TempDir,
}

impl Dirs {
    fn new() -> Dirs {
        Dirs {
            control: tempfile::TempDir::new().unwrap(),
            storage: tempfile::TempDir::new().unwrap(),
            policies: tempfile::TempDir::new().unwrap(),
        }
    }
}

/// Two shards of three and a config server of three, an agent per member, a control
/// plane, a `file://` storage, a policy directory and (once started) a reconciler.
struct Fixture {
    cluster: ShardedCluster,
    control: tempfile::TempDir,
    storage: tempfile::TempDir,
    policies: tempfile::TempDir,
    /// Agents by (replica set, member), and the reconciler.
    agents: std::collections::BTreeMap<(String, usize), Child>,
    others: Procs,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for c in self.agents.values_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Nodes a restore started (its agents run them in their own session) are not the
        // harness's children: shut every member down over the wire.
        for k in 0..3 {
            for i in 0..3 {
                if let Ok(mut c) =
                    BlockingConn::connect(&self.set(k).host(i), Duration::from_millis(500))
                {
                    let _ = c.command("admin", doc! {"shutdown": 1, "force": true});
                }
            }
        }
    }
}

impl Fixture {
    fn new() -> (Fixture, std::sync::MutexGuard<'static, ()>) {
        let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let f = Fixture::named("cfg", "rs", Dirs::new());
        (f, guard)
    }

    /// A cluster with these replica-set names, on these directories (a second cluster
    /// can take over the first one's control plane and storage).
    fn named(config_name: &str, shard_prefix: &str, dirs: Dirs) -> Fixture {
        let cluster = ShardedCluster::start_named(config_name, shard_prefix, 2, 3).unwrap();
        let mut f = Fixture {
            cluster,
            control: dirs.control,
            storage: dirs.storage,
            policies: dirs.policies,
            agents: Default::default(),
            others: Procs(Vec::new()),
        };
        for rs in 0..3 {
            for i in 0..3 {
                f.restart_agent(rs, i, &[]);
            }
        }
        let (cfg, a, b) = (f.set(0), f.set(1), f.set(2));
        f.write(
            "cluster.yaml",
            &format!(
                "apiVersion: tidemark/v1\nkind: Cluster\nmetadata:\n  name: {CLUSTER}\nspec:\n  \
                 configServer:\n    name: {}\n    members: [{}]\n  replicaSets:\n    - name: {}\n      \
                 members: [{}]\n    - name: {}\n      members: [{}]\n---\napiVersion: tidemark/v1\n\
                 kind: BackupStorage\nmetadata:\n  name: local\nspec:\n  url: file://{}\n",
                cfg.name,
                members(cfg),
                a.name,
                members(a),
                b.name,
                members(b),
                f.storage.path().display()
            ),
        );
        f
    }

    /// Stops everything and hands the directories on.
    fn into_dirs(mut self) -> Dirs {
        let take =
            |d: &mut tempfile::TempDir| std::mem::replace(d, tempfile::TempDir::new().unwrap());
        Dirs {
            control: take(&mut self.control),
            storage: take(&mut self.storage),
            policies: take(&mut self.policies),
        }
    }

    /// Replica set `k`: 0 is the config server, 1 and 2 the shards.
    fn set(&self, k: usize) -> &ReplicaSet {
        if k == 0 {
            &self.cluster.config
        } else {
            &self.cluster.shards[k - 1]
        }
    }

    fn restart_agent(&mut self, k: usize, i: usize, extra: &[&str]) {
        let key = (self.set(k).name.clone(), i);
        if let Some(mut c) = self.agents.remove(&key) {
            let _ = c.kill();
            let _ = c.wait();
        }
        let child = agent(self.control.path(), self.set(k), i, extra);
        self.agents.insert(key, child);
    }

    fn write(&self, file: &str, text: &str) {
        std::fs::write(self.policies.path().join(file), text).unwrap();
    }

    fn start_reconciler(&mut self) {
        let reconciler = Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args(["reconcile", "--policies"])
            .arg(self.policies.path())
            .arg("--control")
            .arg(self.control.path())
            .args(["--interval", "1s", "--follow-interval", "300ms"])
            .args(["--dead-after", "5s", "--lease-ttl", "2s"])
            .env("TIDEMARK_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.control.path().join("reconciler.log")).unwrap())
            .spawn()
            .unwrap();
        self.others.0.push(reconciler);
    }

    /// The last lines of every log, for failure messages.
    fn logs(&self) -> String {
        let mut out = String::new();
        for e in std::fs::read_dir(self.control.path()).unwrap().flatten() {
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
    }

    fn wait_end(&self, kind: &str, name: &str) -> Value {
        wait_end(self.control.path(), kind, name, &|| self.logs())
    }

    /// Writes `ids[k]` into replica set `k`, starts the reconciler and takes backup `b1`.
    fn backed_up(&mut self, ids: &[std::ops::Range<i32>; 3]) {
        for (k, r) in ids.iter().enumerate() {
            insert(self.set(k), r.clone());
        }
        self.start_reconciler();
        self.write(
            "backup.yaml",
            &tidemark_testkit::backup_yaml("b1", CLUSTER, "local"),
        );
        let v = self.wait_end("backup", "b1");
        assert_eq!(v["status"], "done", "{v:#}\n{}", self.logs());
    }

    fn restore(&self, name: &str, extra: &str) -> Value {
        self.write_restore(name, extra);
        self.wait_end("restore", name)
    }

    fn write_restore(&self, name: &str, extra: &str) {
        self.write(
            &format!("restore-{name}.yaml"),
            &format!(
                "apiVersion: tidemark/v1\nkind: Restore\nmetadata:\n  name: {name}\nspec:\n  \
                 cluster: {CLUSTER}\n  source:\n    backup: b1\n  fallbackEnabled: true\n{extra}"
            ),
        );
    }
}

#[test]
fn a_sharded_backup_restores_every_shard_to_one_cluster_time() {
    let (mut f, _one) = Fixture::new();
    f.start_reconciler();
    let sets: Vec<&ReplicaSet> = (0..3).map(|k| f.set(k)).collect();
    let (a, b) = (f.set(1), f.set(2));
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
                let r = match conns[shard].command("app", cmd) {
                    Ok(r) if r.get_f64("ok").unwrap_or(0.0) == 1.0 => r,
                    // An election under load: find the primary again and retry this write.
                    _ => {
                        conns[shard] = primary(&hosts[shard]);
                        continue;
                    }
                };
                gossip = r.get_document("$clusterTime").ok().cloned();
                written.push((shard, n, r.get_timestamp("operationTime").unwrap()));
                n += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            written
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    f.write(
        "backup.yaml",
        &tidemark_testkit::backup_yaml("b1", CLUSTER, "local"),
    );
    let v = f.wait_end("backup", "b1");
    assert_eq!(v["status"], "done", "{v:#}\n{}", f.logs());
    std::thread::sleep(Duration::from_millis(500)); // writes after the backup, to be gone
    stop.store(true, Ordering::SeqCst);
    let written = writer.join().unwrap();

    // One cluster time for every replica set, config server included.
    let marker: Value =
        serde_json::from_slice(&std::fs::read(f.storage.path().join("b1/backup.json")).unwrap())
            .unwrap();
    let t = Timestamp {
        time: marker["clusterTime"]["t"].as_u64().expect("a cluster time") as u32,
        increment: marker["clusterTime"]["i"].as_u64().unwrap() as u32,
    };
    for rs in &sets {
        let m: Value = serde_json::from_slice(
            &std::fs::read(
                f.storage
                    .path()
                    .join(format!("b1/{}/manifest.json", rs.name)),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            (m["lastWrite"]["t"].as_u64(), m["lastWrite"]["i"].as_u64()),
            (Some(t.time as u64), Some(t.increment as u64)),
            "{} restores to the cluster time",
            rs.name
        );
        let role = if rs.name == f.cluster.config.name {
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

    let v = f.restore("r1", "  postRestore:\n    startNodes: true\n");
    assert_eq!(v["status"], "done", "{v:#}\n{}", f.logs());
    // The stop order: every shard node had stopped before any config server node began.
    let op = v["opId"].as_str().unwrap();
    let stop_of = |rs: &ReplicaSet,
                   i: usize|
     -> (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) {
        let key = format!(
            "ops/{op}/{}/{}.stop.json",
            rs.name,
            rs.host(i).replace(':', "_")
        );
        let r: Value =
            serde_json::from_slice(&std::fs::read(f.control.path().join(&key)).unwrap()).unwrap();
        let done: chrono::DateTime<chrono::Utc> = r["at"].as_str().unwrap().parse().unwrap();
        let took = chrono::Duration::milliseconds(r["details"]["elapsedMs"].as_i64().unwrap());
        (done - took, done)
    };
    let shards_done = [a, b]
        .iter()
        .flat_map(|rs| (0..3).map(move |i| stop_of(rs, i).1))
        .max()
        .unwrap();
    let config_began = (0..3)
        .map(|i| stop_of(&f.cluster.config, i).0)
        .min()
        .unwrap();
    assert!(
        config_began >= shards_done - chrono::Duration::milliseconds(5),
        "config server began stopping at {config_began}, the last shard node stopped at {shards_done}"
    );
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

/// Inserts `ids` into `app.items` on the primary of `rs`.
fn insert(rs: &ReplicaSet, ids: std::ops::Range<i32>) {
    let p = rs.wait_for_primary(Duration::from_secs(60)).unwrap();
    let docs: Vec<bson::Document> = ids.map(|i| doc! {"_id": i}).collect();
    let r = rs
        .process(p)
        .unwrap()
        .command("app", doc! {"insert": "items", "documents": docs})
        .unwrap();
    assert_eq!(r.get_f64("ok").unwrap_or(0.0), 1.0, "{r}");
}

/// Waits until every member of `rs` serves exactly `want` in `app.items`.
fn wait_members(f: &Fixture, rs: &ReplicaSet, want: &[i32]) {
    let started = Instant::now();
    for i in 0..3 {
        loop {
            let got = BlockingConn::connect(&rs.host(i), Duration::from_secs(2))
                .ok()
                .and_then(|mut c| c.ids("app", "items"));
            if got.as_deref() == Some(want) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "{} member {i} serves {:?} (want {} ids)\n{}",
                rs.name,
                got.map(|g| g.len()),
                want.len(),
                f.logs()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

/// Waits until every member of replica set `k` (config server first) serves `want[k]`.
fn wait_all(f: &Fixture, want: &[std::ops::Range<i32>; 3]) {
    for (k, ids) in want.iter().enumerate() {
        let ids: Vec<i32> = ids.clone().collect();
        wait_members(f, f.set(k), &ids);
    }
}

#[test]
fn a_shard_failing_everywhere_reverts_every_set_and_one_failed_node_is_partly_done() {
    let (mut f, _one) = Fixture::new();
    f.backed_up(&[900..905, 0..20, 100..120]);
    // Written after the backup: what every node must hold again after a reverted restore.
    insert(f.set(0), 905..907);
    insert(f.set(1), 20..25);
    insert(f.set(2), 120..125);
    let now = [900..907, 0..25, 100..125];
    wait_all(&f, &now);

    // Every node of shard 2 fails its recovery: no node of that shard is restored, so the
    // restore is Error and every replica set, config server and healthy shard included,
    // gets its data back from the fallback.
    for i in 0..3 {
        f.restart_agent(
            2,
            i,
            &["--standalone-arg=--sim-fail-startup=injected fault"],
        );
    }
    std::thread::sleep(Duration::from_secs(2)); // fresh heartbeats
    let v = f.restore(
        "r1",
        "  allowPartlyDone: true\n  postRestore:\n    startNodes: true\n",
    );
    assert_eq!(v["status"], "error", "{v:#}\n{}", f.logs());
    let why = v["message"].as_str().unwrap_or_default();
    assert!(
        why.contains(&format!(
            "no node was restored in replica set(s) {}",
            f.set(2).name
        )),
        "{v:#}"
    );
    wait_all(&f, &now);

    // One node of shard 1 fails, partial results accepted: PartlyDone, and that node
    // initial-syncs from a restored member of its shard.
    for i in 0..3 {
        f.restart_agent(2, i, &[]);
    }
    f.restart_agent(
        1,
        1,
        &["--standalone-arg=--sim-fail-startup=injected fault"],
    );
    std::thread::sleep(Duration::from_secs(2));
    let v = f.restore(
        "r2",
        "  allowPartlyDone: true\n  postRestore:\n    startNodes: true\n",
    );
    assert_eq!(v["status"], "partlyDone", "{v:#}\n{}", f.logs());
    wait_all(&f, &[900..905, 0..20, 100..120]);
}

/// A document of `db.coll` on the primary of `rs` (the first one, or `None`).
fn first_doc(
    rs: &ReplicaSet,
    db: &str,
    coll: &str,
    filter: bson::Document,
) -> Option<bson::Document> {
    let p = rs.wait_for_primary(Duration::from_secs(60)).ok()?;
    let r = rs
        .process(p)
        .ok()?
        .command(db, doc! {"find": coll, "filter": filter})
        .ok()?;
    r.get_document("cursor")
        .ok()?
        .get_array("firstBatch")
        .ok()?
        .first()?
        .as_document()
        .cloned()
}

#[test]
fn a_backup_restores_onto_a_cluster_with_other_replica_set_names_only_when_remapped() {
    let (mut f, _one) = Fixture::new();
    // Sharding metadata naming the old shards: a zone, a database's primary shard, a
    // chunk, and a shard's recovery point naming the old config server.
    let cfg_primary = f.set(0).wait_for_primary(Duration::from_secs(60)).unwrap();
    let cfg = f.set(0).process(cfg_primary).unwrap();
    cfg.command(
        "config",
        doc! {"update": "shards", "updates": [{"q": {"_id": "rs0"}, "u": {"$set": {"tags": ["zoneA"]}}}]},
    )
    .unwrap();
    cfg.command(
        "config",
        doc! {"insert": "databases", "documents": [{"_id": "app", "primary": "rs0"}]},
    )
    .unwrap();
    cfg.command(
        "config",
        doc! {"insert": "chunks", "documents": [{"_id": 1, "ns": "app.items", "shard": "rs1", "history": [{"validAfter": 1, "shard": "rs1"}]}]},
    )
    .unwrap();
    let rs0 = f.set(1);
    rs0.process(rs0.wait_for_primary(Duration::from_secs(60)).unwrap())
        .unwrap()
        .command(
            "admin",
            doc! {"insert": "system.version", "documents": [{"_id": "minOpTimeRecovery", "configsvrConnectionString": "cfg/old"}]},
        )
        .unwrap();
    f.backed_up(&[900..903, 0..10, 100..110]);
    std::fs::remove_file(f.policies.path().join("backup.yaml")).unwrap();

    // The cluster is rebuilt elsewhere under other names: same control plane and storage.
    let mut g = Fixture::named("cfgnew", "shard", f.into_dirs());
    g.start_reconciler();
    // Without a mapping the restore waits, saying why, and touches nothing.
    g.write_restore("r0", "");
    let waiting = g.control.path().join("ledger/waiting/restore/r0.json");
    let started = Instant::now();
    let why = loop {
        if let Some(w) = std::fs::read(&waiting)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        {
            break w["reason"].as_str().unwrap_or_default().to_string();
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{}", g.logs());
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(why.contains("replicaSetRemap"), "{why}");
    std::fs::remove_file(g.policies.path().join("restore-r0.yaml")).unwrap();

    let v = g.restore(
        "r1",
        "  replicaSetRemap:\n    cfg: cfgnew\n    rs0: shard0\n    rs1: shard1\n  postRestore:\n    \
         startNodes: true\n",
    );
    assert_eq!(v["status"], "done", "{v:#}\n{}", g.logs());
    wait_all(&g, &[900..903, 0..10, 100..110]);
    // The shards know themselves and the config server under the new names and hosts.
    let identity = first_doc(
        g.set(1),
        "admin",
        "system.version",
        doc! {"_id": "shardIdentity"},
    )
    .expect("shardIdentity");
    assert_eq!(
        identity.get_str("shardName").unwrap(),
        "shard0",
        "{identity}"
    );
    assert!(
        identity
            .get_str("configsvrConnectionString")
            .unwrap()
            .starts_with(&format!("cfgnew/{}", g.set(0).host(0))),
        "{identity}"
    );
    let shards =
        first_doc(g.set(0), "config", "shards", doc! {"_id": "shard1"}).expect("config.shards");
    assert_eq!(
        shards.get_str("host").unwrap(),
        format!(
            "shard1/{}",
            (0..3)
                .map(|i| g.set(2).host(i))
                .collect::<Vec<_>>()
                .join(",")
        ),
        "{shards}"
    );
    assert!(
        first_doc(g.set(0), "config", "shards", doc! {"_id": "rs0"}).is_none(),
        "the old shard names are gone"
    );
    let zoned = first_doc(g.set(0), "config", "shards", doc! {"_id": "shard0"}).unwrap();
    assert_eq!(
        zoned.get_array("tags").unwrap().len(),
        1,
        "other fields are kept: {zoned}"
    );
    let db = first_doc(g.set(0), "config", "databases", doc! {"_id": "app"}).unwrap();
    assert_eq!(db.get_str("primary").unwrap(), "shard0", "{db}");
    let chunk = first_doc(g.set(0), "config", "chunks", doc! {"_id": 1}).unwrap();
    assert_eq!(chunk.get_str("shard").unwrap(), "shard1", "{chunk}");
    let history = chunk.get_array("history").unwrap()[0]
        .as_document()
        .unwrap();
    assert_eq!(history.get_str("shard").unwrap(), "shard1", "{chunk}");
    assert!(
        first_doc(
            g.set(1),
            "admin",
            "system.version",
            doc! {"_id": "minOpTimeRecovery"}
        )
        .is_none(),
        "the recovery point naming the old config server is gone"
    );
}

/// `tidemark list -o json` on the fixture's control plane.
fn list(f: &Fixture) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["list", "-o", "json", "--control"])
        .arg(f.control.path())
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn optime(v: &Value) -> (u64, u64) {
    (v["t"].as_u64().unwrap_or(0), v["i"].as_u64().unwrap_or(0))
}

#[test]
fn a_sharded_clusters_pitr_window_is_the_intersection_of_its_replica_sets() {
    let (mut f, _one) = Fixture::new();
    f.backed_up(&[0..10, 0..10, 0..10]);
    f.write(
        "schedule.yaml",
        &format!(
            "apiVersion: tidemark/v1\nkind: BackupSchedule\nmetadata:\n  name: pitr\nspec:\n  \
             cluster: {CLUSTER}\n  storage: local\n  type: physical\n  cron: \"0 0 1 1 *\"\n  \
             pitr:\n    enabled: true\n    oplogSpan: 2s\n"
        ),
    );
    // Every replica set slices on its own node; the window needs all three.
    let started = Instant::now();
    let l = loop {
        let l = list(&f);
        let t = &l["timelines"][0];
        let sliced = t["replicaSets"].as_array().is_some_and(|r| {
            r.len() == 3
                && r.iter()
                    .all(|r| !r["segments"].as_array().is_none_or(|s| s.is_empty()))
        });
        if sliced && t["windows"].as_array().is_some_and(|w| w.len() == 1) {
            break l;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "a window over every replica set: {l:#}\n{}",
            f.logs()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let t = &l["timelines"][0];
    let b1 = l["backups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "b1")
        .unwrap();
    let from = b1["lastWriteOptimes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| optime(&p["optime"]))
        .max()
        .unwrap();
    // Each replica set's reach: the end of the segment holding b1's point there.
    let to = t["replicaSets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let point = b1["lastWriteOptimes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["replicaSet"] == r["replicaSet"])
                .map(|p| optime(&p["optime"]))
                .unwrap();
            r["segments"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| optime(&s["first"]) <= point && point <= optime(&s["last"]))
                .map(|s| optime(&s["last"]))
                .unwrap_or_else(|| panic!("{point:?} in no segment of {r:#}"))
        })
        .collect::<Vec<_>>();
    let w = &t["windows"][0];
    assert_eq!(optime(&w["from"]), from, "{l:#}");
    assert_eq!(optime(&w["to"]), *to.iter().min().unwrap(), "{l:#}");
    assert_eq!(t["replicaSets"].as_array().map(Vec::len), Some(3));
}
