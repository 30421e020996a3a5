//! The sharded cluster of the end-to-end suites: two shards of three and a three-node
//! config server (mongod-sim), an agent per member, a control plane, a `file://` storage,
//! a policy directory and a reconciler.
// Each suite uses a subset.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bson::doc;
use mongod_sim::client::BlockingConn;
use mongod_sim::harness::{ReplicaSet, ShardedCluster, binary};
use serde_json::Value;

pub const CLUSTER: &str = "sharded";

/// One sharded cluster at a time: nine mongods, nine agents and a reconciler already fill
/// two cores; two such tests at once starve elections and time out.
pub static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub struct Procs(pub Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn agent(control: &Path, rs: &ReplicaSet, i: usize, extra: &[&str]) -> Child {
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
        .arg("--trusted-keys")
        .arg(&tidemark_testkit::test_keys().public)
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

pub fn members(rs: &ReplicaSet) -> String {
    (0..3)
        .map(|i| format!("\"{}\"", rs.host(i)))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn oneshot(control: &Path, kind: &str, name: &str) -> Option<Value> {
    let path = control.join(format!("ledger/oneshots/{kind}/{name}.json"));
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

pub fn wait_end(control: &Path, kind: &str, name: &str, logs: &dyn Fn() -> String) -> Value {
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
pub fn ids_on(rs: &ReplicaSet) -> Vec<i64> {
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
pub struct Dirs {
    pub control: tempfile::TempDir,
    pub storage: tempfile::TempDir,
    pub policies: tempfile::TempDir,
}

impl Dirs {
    pub fn new() -> Dirs {
        Dirs {
            control: tempfile::TempDir::new().unwrap(),
            storage: tempfile::TempDir::new().unwrap(),
            policies: tempfile::TempDir::new().unwrap(),
        }
    }
}

/// Two shards of three and a config server of three, an agent per member, a control
/// plane, a `file://` storage, a policy directory and (once started) a reconciler.
pub struct Fixture {
    pub cluster: ShardedCluster,
    pub control: tempfile::TempDir,
    pub storage: tempfile::TempDir,
    pub policies: tempfile::TempDir,
    /// Agents by (replica set, member), and the reconciler.
    pub agents: std::collections::BTreeMap<(String, usize), Child>,
    pub others: Procs,
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
    pub fn new() -> (Fixture, std::sync::MutexGuard<'static, ()>) {
        let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let f = Fixture::named("cfg", "rs", Dirs::new());
        (f, guard)
    }

    /// A cluster with these replica-set names, on these directories (a second cluster
    /// can take over the first one's control plane and storage).
    pub fn named(config_name: &str, shard_prefix: &str, dirs: Dirs) -> Fixture {
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
    pub fn into_dirs(mut self) -> Dirs {
        let take =
            |d: &mut tempfile::TempDir| std::mem::replace(d, tempfile::TempDir::new().unwrap());
        Dirs {
            control: take(&mut self.control),
            storage: take(&mut self.storage),
            policies: take(&mut self.policies),
        }
    }

    /// Replica set `k`: 0 is the config server, 1 and 2 the shards.
    pub fn set(&self, k: usize) -> &ReplicaSet {
        if k == 0 {
            &self.cluster.config
        } else {
            &self.cluster.shards[k - 1]
        }
    }

    pub fn restart_agent(&mut self, k: usize, i: usize, extra: &[&str]) {
        let key = (self.set(k).name.clone(), i);
        if let Some(mut c) = self.agents.remove(&key) {
            let _ = c.kill();
            let _ = c.wait();
        }
        let child = agent(self.control.path(), self.set(k), i, extra);
        self.agents.insert(key, child);
    }

    pub fn write(&self, file: &str, text: &str) {
        std::fs::write(self.policies.path().join(file), text).unwrap();
    }

    pub fn start_reconciler(&mut self) {
        let reconciler = Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args(["reconcile", "--policies"])
            .arg(self.policies.path())
            .arg("--signing-key-file")
            .arg(&tidemark_testkit::test_keys().private)
            .arg("--control")
            .arg(self.control.path())
            .args(["--interval", "1s", "--follow-interval", "300ms"])
            .args(["--resync-interval", "1s"])
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
    pub fn logs(&self) -> String {
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

    pub fn wait_end(&self, kind: &str, name: &str) -> Value {
        wait_end(self.control.path(), kind, name, &|| self.logs())
    }

    /// Writes `ids[k]` into replica set `k`, starts the reconciler and takes backup `b1`.
    pub fn backed_up(&mut self, ids: &[std::ops::Range<i32>; 3]) {
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

    pub fn restore(&self, name: &str, extra: &str) -> Value {
        self.write_restore(name, extra);
        self.wait_end("restore", name)
    }

    pub fn write_restore(&self, name: &str, extra: &str) {
        self.write(
            &format!("restore-{name}.yaml"),
            &format!(
                "apiVersion: tidemark/v1\nkind: Restore\nmetadata:\n  name: {name}\nspec:\n  \
                 cluster: {CLUSTER}\n  source:\n    backup: b1\n  fallbackEnabled: true\n{extra}"
            ),
        );
    }
}

/// Inserts `ids` into `app.items` on the primary of `rs`.
pub fn insert(rs: &ReplicaSet, ids: std::ops::Range<i32>) {
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
pub fn wait_members(f: &Fixture, rs: &ReplicaSet, want: &[i32]) {
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
pub fn wait_all(f: &Fixture, want: &[std::ops::Range<i32>; 3]) {
    for (k, ids) in want.iter().enumerate() {
        let ids: Vec<i32> = ids.clone().collect();
        wait_members(f, f.set(k), &ids);
    }
}

/// `tidemark list -o json` on the fixture's control plane.
pub fn list(f: &Fixture) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["list", "-o", "json", "--control"])
        .arg(f.control.path())
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

pub fn optime(v: &Value) -> (u64, u64) {
    (v["t"].as_u64().unwrap_or(0), v["i"].as_u64().unwrap_or(0))
}
