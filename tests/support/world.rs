//! The world of the reconciler's end-to-end suites: a rig (a mongod-sim replica set of 3,
//! one agent per member, a control plane, a backup storage), the desired state as YAML in
//! a directory or in a bare git repository, and a `tidemark reconcile` process.
// Each suite uses a subset of the world.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bson::doc;
use mongod_sim::client::BlockingConn;
use serde_json::Value;
use tempfile::TempDir;

use super::rig::*;

/// Where the reconciler reads the desired state from.
pub enum Source {
    /// `--policies DIR`: the policy directory itself.
    Dir,
    /// `--git BARE --ref main`: the policy directory is a work tree pushed to `bare`.
    Git {
        repo: git2::Repository,
        bare: TempDir,
        cache: TempDir,
    },
}

/// A rig plus a policy directory and a running reconciler.
pub struct World {
    pub rig: Rig,
    pub policies: TempDir,
    pub source: Source,
    pub reconciler: Option<Child>,
    /// Flags added to every reconciler this world starts (`--keep-ops 1s`, say).
    pub reconciler_args: Vec<String>,
    /// The reconcilers' `--interval` (and git poll).
    pub interval: String,
    /// The reconcilers' `--dead-after`: how long an agent may be silent before its node is
    /// lost.
    pub dead_after: String,
    /// Environment added to every reconciler this world starts.
    pub reconciler_env: Vec<(String, String)>,
}

impl World {
    pub fn new(name: &str) -> World {
        World::with_sim_args(name, &[])
    }

    /// A world whose three members all run with `sim_args` (encryption, say).
    pub fn with_sim_args(name: &str, sim_args: &[&str]) -> World {
        let rig = Rig::new(name, 3, sim_args);
        let policies = TempDir::new().unwrap();
        std::fs::write(policies.path().join("cluster.yaml"), rig.cluster_yaml()).unwrap();
        World {
            rig,
            policies,
            source: Source::Dir,
            reconciler: None,
            reconciler_args: Vec::new(),
            interval: "2s".into(),
            dead_after: "5s".into(),
            reconciler_env: Vec::new(),
        }
    }

    /// The same world, its policies kept in git: a work tree pushed to a bare repository
    /// that the reconciler clones and fetches, as it would from a git server.
    pub fn new_git(name: &str) -> World {
        let mut w = World::new(name);
        let repo = git2::Repository::init(w.policies.path()).unwrap();
        let bare = TempDir::new().unwrap();
        git2::Repository::init_bare(bare.path()).unwrap();
        w.source = Source::Git {
            repo,
            bare,
            cache: TempDir::new().unwrap(),
        };
        w.commit("cluster and storage");
        w
    }

    pub fn write(&self, file: &str, yaml: &str) {
        std::fs::write(self.policies.path().join(file), yaml).unwrap();
    }

    /// Commits the whole policy directory and pushes it; returns the commit id.
    pub fn commit(&self, message: &str) -> String {
        let Source::Git { repo, bare, .. } = &self.source else {
            panic!("commit needs a git world");
        };
        tidemark_testkit::commit_and_push(repo, bare.path(), message)
    }

    /// [`World::commit`], signed with `key` (an SSH signature, as `git commit -S` makes
    /// with `gpg.format ssh`).
    pub fn commit_signed(
        &self,
        message: &str,
        key: &tidemark_testkit::ssh_key::PrivateKey,
    ) -> String {
        let Source::Git { repo, bare, .. } = &self.source else {
            panic!("commit needs a git world");
        };
        tidemark_testkit::commit_and_push_signed(repo, bare.path(), message, Some(key))
    }

    /// One `tidemark reconcile --once` pass with `extra` flags, logging to `log` in the
    /// control directory; returns its exit code.
    pub fn reconcile_once(&self, log: &str, extra: &[&str]) -> i32 {
        let mut cmd = self.reconciler_command(log);
        cmd.arg("--once").args(extra);
        let status = cmd.status().unwrap();
        status.code().unwrap_or(-1)
    }

    pub fn start_reconciler(&mut self) {
        let child = self.spawn_reconciler("reconciler.log");
        self.reconciler = Some(child);
    }

    /// Another reconciler process on the same source and control plane, logging to `log`
    /// in the control directory; the caller owns (and kills) it.
    pub fn spawn_reconciler(&self, log: &str) -> Child {
        self.reconciler_command(log).spawn().unwrap()
    }

    /// The command line of this world's reconcilers, logging to `log`.
    fn reconciler_command(&self, log: &str) -> Command {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.rig.control.path().join(log))
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidemark"));
        cmd.arg("reconcile");
        match &self.source {
            Source::Dir => {
                cmd.arg("--policies").arg(self.policies.path());
            }
            Source::Git { bare, cache, .. } => {
                cmd.arg("--git")
                    .arg(bare.path())
                    .args(["--ref", "main", "--cache-dir"])
                    .arg(cache.path());
            }
        }
        cmd.arg("--control")
            .arg(&self.rig.control_url)
            .arg("--signing-key-file")
            .arg(&tidemark_testkit::test_keys().private)
            .envs(self.rig.agent_env.iter().map(|(k, v)| (*k, v.as_str())))
            .args(["--interval", &self.interval])
            .args(["--resync-interval", &self.interval])
            .args([
                "--follow-interval",
                "300ms",
                "--dead-after",
                &self.dead_after,
                "--lease-ttl",
                "2s",
            ])
            .args(&self.reconciler_args)
            .envs(self.reconciler_env.iter().map(|(k, v)| (k, v)))
            .env("TIDEMARK_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        cmd
    }

    /// `tidemark status -o json`, with its exit code.
    pub fn status(&self) -> (Value, i32) {
        let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args(["status", "-o", "json", "--dead-after", "5s", "--control"])
            .arg(&self.rig.control_url)
            .envs(self.rig.agent_env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap();
        let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "status -o json: {e}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (v, out.status.code().unwrap_or(-1))
    }

    /// Polls `status -o json` until `f` holds, for at most `secs`; the failure shows the
    /// status and every log, the extra reconcilers' (`reconciler-*.log`) included.
    pub fn wait_for(&self, what: &str, secs: u64, mut f: impl FnMut(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let (v, _) = self.status();
            if f(&v) {
                return v;
            }
            if started.elapsed() >= Duration::from_secs(secs) {
                let mut others = String::new();
                for e in std::fs::read_dir(self.rig.control.path())
                    .unwrap()
                    .flatten()
                {
                    let name = e.file_name().to_string_lossy().to_string();
                    if name.starts_with("reconciler-") {
                        let log = std::fs::read_to_string(e.path()).unwrap_or_default();
                        others.push_str(&format!("{name}:\n{log}\n"));
                    }
                }
                panic!(
                    "{what} within {secs}s; status:\n{v:#}\n{}\n{others}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    pub fn kill_reconciler(&mut self) {
        if let Some(mut c) = self.reconciler.take() {
            c.kill().unwrap(); // SIGKILL
            c.wait().unwrap();
        }
    }

    pub fn reconciler_log(&self) -> String {
        self.reconciler_log_named("reconciler.log")
    }

    /// The log of a reconciler this world started with `log` as its file name.
    pub fn reconciler_log_named(&self, log: &str) -> String {
        std::fs::read_to_string(self.rig.control.path().join(log)).unwrap_or_default()
    }

    pub fn logs(&self) -> String {
        format!(
            "reconciler log:\n{}\nagent logs:\n{}\n{}\n{}",
            self.reconciler_log(),
            self.rig.agent_log(0),
            self.rig.agent_log(1),
            self.rig.agent_log(2)
        )
    }

    /// A control-plane document, as JSON (`None` while it does not exist).
    pub fn control_json(&self, key: &str) -> Option<Value> {
        let bytes = std::fs::read(self.rig.control.path().join(key)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// `tidemark describe-<kind> NAME -o json`.
    pub fn describe(&self, kind: &str, name: &str) -> Value {
        let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args([&format!("describe-{kind}"), name, "-o", "json", "--control"])
            .arg(self.rig.control.path())
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// `tidemark logs --op OP -o json`: every line the agents shipped, oldest first.
    pub fn op_logs(&self, op: &str) -> Vec<Value> {
        let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args(["logs", "--op", op, "-o", "json", "--control"])
            .arg(self.rig.control.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "logs --op {op}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    /// Waits until the operation's status is one of `statuses`; returns its view.
    pub fn wait_status(&self, kind: &str, name: &str, statuses: &[&str]) -> Value {
        let started = Instant::now();
        loop {
            let v = self.describe(kind, name);
            if v["status"].as_str().is_some_and(|s| statuses.contains(&s)) {
                return v;
            }
            assert!(
                started.elapsed() < Duration::from_secs(150),
                "{kind} {name} did not reach {statuses:?}: {v:#}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Waits until the operation ended; returns its view.
    pub fn wait_end(&self, kind: &str, name: &str) -> Value {
        self.wait_status(kind, name, &["done", "partlyDone", "error", "cancelled"])
    }

    /// Ids of `app.items` on node `i`, asked over the wire (the node may have been
    /// started by its agent, not by the rig).
    pub fn ids_at(&self, i: usize) -> Option<Vec<i32>> {
        BlockingConn::connect(&self.rig.node(i), Duration::from_secs(2))
            .ok()?
            .ids("app", "items")
    }

    /// Each member's state, term and last optime as it reports them: what a replication
    /// stall needs to be understood from a CI log.
    pub fn repl_summary(&self) -> String {
        (0..3)
            .map(|i| {
                let s = self
                    .rig
                    .rs
                    .process(i)
                    .and_then(|p| p.command("admin", bson::doc! {"replSetGetStatus": 1}));
                match s {
                    Ok(s) => format!(
                        "node {i}: state {:?} term {:?} optime {:?}",
                        s.get("myState"),
                        s.get("term"),
                        s.get_document("optimes")
                            .ok()
                            .and_then(|o| o.get("appliedOpTime"))
                    ),
                    Err(e) => format!("node {i}: {e}"),
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Waits until node `i` serves exactly `want`.
    pub fn wait_ids(&self, i: usize, want: &[i32]) {
        let started = Instant::now();
        loop {
            let got = self.ids_at(i);
            if got.as_deref() == Some(want) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "node {i} serves {:?} ids (want {}): {:?}\nreplica set: {}\n{}",
                got.as_ref().map(Vec::len),
                want.len(),
                got.map(|g| g.into_iter().take(5).collect::<Vec<_>>()),
                self.repl_summary(),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Documents written, one agent per member, and `schedule.yaml`: a physical schedule
    /// of the rig's cluster every three seconds, with `extra` spec lines (indented by 2).
    pub fn scheduled(&mut self, name: &str, docs: std::ops::Range<i32>, extra: &str) {
        self.rig.insert(docs);
        for i in 0..3 {
            self.rig.start_agent(i);
        }
        self.write(
            "schedule.yaml",
            &format!(
                "apiVersion: tidemark/v1\nkind: BackupSchedule\nmetadata:\n  name: {name}\n\
                 spec:\n  cluster: {CLUSTER}\n  storage: local\n  type: physical\n  \
                 cron: \"*/3 * * * * *\"\n{extra}"
            ),
        );
    }

    pub fn backup_yaml(&self, name: &str, backup_type: &str) {
        self.write(
            &format!("backup-{name}.yaml"),
            &format!(
                "apiVersion: tidemark/v1\nkind: Backup\nmetadata:\n  name: {name}\nspec:\n  \
                 cluster: {CLUSTER}\n  storage: local\n  type: {backup_type}\n"
            ),
        );
    }

    pub fn restore_yaml(&self, name: &str, backup: &str, extra: &str) {
        self.write(
            &format!("restore-{name}.yaml"),
            &format!(
                "apiVersion: tidemark/v1\nkind: Restore\nmetadata:\n  name: {name}\nspec:\n  \
                 cluster: {CLUSTER}\n  source:\n    backup: {backup}\n{extra}"
            ),
        );
    }

    /// A physical backup through the reconciler, waited for and checked `done`.
    pub fn backup(&mut self, name: &str) {
        self.backup_yaml(name, "physical");
        if matches!(self.source, Source::Git { .. }) {
            self.commit(&format!("backup {name}"));
        }
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

    pub fn restore(&mut self, name: &str, backup: &str, extra: &str) -> Value {
        self.restore_yaml(name, backup, extra);
        if matches!(self.source, Source::Git { .. }) {
            self.commit(&format!("restore {name}"));
        }
        self.wait_end("restore", name)
    }

    /// Every oplog-chunk record of the rig's replica set in storage `local`, oldest first.
    pub fn chunk_records(&self) -> Vec<tidemark_schema::control::ChunkRecord> {
        let dir = self
            .rig
            .control
            .path()
            .join("pitr/chunks")
            .join(CLUSTER)
            .join("local")
            .join(&self.rig.rs.name);
        let mut out: Vec<tidemark_schema::control::ChunkRecord> = std::fs::read_dir(&dir)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by_key(|c| (c.first, c.last));
        out
    }

    /// The plan step `tidemark diff -o json` gives for Restore `name`, declared as `yaml`
    /// in a copy of the policies: the running reconciler never sees it. `None` when the
    /// plan has no step for it.
    pub fn preview_restore(&self, name: &str, yaml: &str) -> Option<Value> {
        let preview = TempDir::new().unwrap();
        for e in std::fs::read_dir(self.policies.path()).unwrap().flatten() {
            std::fs::copy(e.path(), preview.path().join(e.file_name())).unwrap();
        }
        std::fs::write(preview.path().join(format!("restore-{name}.yaml")), yaml).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args(["diff", "-o", "json", "--policies"])
            .arg(preview.path())
            .arg("--control")
            .arg(self.rig.control.path())
            .output()
            .unwrap();
        let plan: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        plan["plan"]["steps"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == name || s["restore"] == name)
            .cloned()
    }

    /// The restore op's id as `describe-restore` shows it, once there is one.
    pub fn op_of(&self, kind: &str, name: &str) -> String {
        let started = Instant::now();
        loop {
            if let Some(id) = self.describe(kind, name)["opId"].as_str() {
                return id.to_string();
            }
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "{kind} {name} has no op: {:#}\n{}",
                self.describe(kind, name),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether node `i` reported phase `phase` of `op`.
    pub fn reported(&self, op: &str, i: usize, phase: &str) -> bool {
        self.rig.report(op, i, phase).is_some()
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

impl World {
    /// `serverStatus.uptime` of each member, in seconds: it only grows while no member
    /// restarts.
    pub fn uptimes(&self) -> Vec<f64> {
        (0..3)
            .map(|i| {
                let reply = self
                    .rig
                    .rs
                    .process(i)
                    .unwrap()
                    .command("admin", doc! {"serverStatus": 1})
                    .unwrap();
                reply
                    .get("uptime")
                    .and_then(|u| u.as_f64().or_else(|| u.as_i64().map(|n| n as f64)))
                    .expect("serverStatus has uptime")
            })
            .collect()
    }

    /// A drill agent of the rig's cluster on `dir`, named `node_id`, logging to
    /// `<node_id>.log` in the control directory; `standalone_args` go to the mongod
    /// standalones it starts.
    pub fn drill_agent(
        &self,
        dir: &std::path::Path,
        node_id: &str,
        standalone_args: &[&str],
    ) -> DrillAgent {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.rig.control.path().join(format!("{node_id}.log")))
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidemark"));
        cmd.args(["agent", "--cluster", CLUSTER, "--control"])
            .arg(&self.rig.control_url)
            .arg("--drill-dir")
            .arg(dir)
            .args(["--node-id", node_id, "--mongod-bin"])
            .arg(
                mongod_sim::harness::binary()
                    .expect("cargo builds mongod-sim for the workspace tests"),
            )
            .args(["--heartbeat-interval", "1s", "--poll-interval", "200ms"])
            .args(["--mongod-timeout", "60s"])
            .arg("--trusted-keys")
            .arg(&tidemark_testkit::test_keys().public)
            .envs(self.rig.agent_env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("TIDEMARK_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if mongod_sim::harness::real_mongod().is_none() {
            cmd.args([
                "--standalone-arg=--sim-checkpoint-interval-ms",
                "--standalone-arg=300",
            ]);
            cmd.args(
                standalone_args
                    .iter()
                    .map(|a| format!("--standalone-arg={a}")),
            );
        }
        DrillAgent(cmd.spawn().expect("the drill agent starts"))
    }
}

/// A drill agent process, killed when dropped: a failing test must not leave it running.
pub struct DrillAgent(pub Child);

impl std::ops::Deref for DrillAgent {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for DrillAgent {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for DrillAgent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The documents every node holds after `prepared`: 0..50 before backup `b1`, then
/// 1000..1010.
pub fn all_before() -> Vec<i32> {
    (0..50).chain(1000..1010).collect()
}

/// Waits until `f` holds, naming `what` and the logs when it never does.
pub fn wait_until(w: &World, what: &str, mut f: impl FnMut() -> bool) {
    let started = Instant::now();
    while !f() {
        assert!(started.elapsed() < LONG, "never: {what}\n{}", w.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl World {
    /// Runs `cmd` on the current primary through the harness; asks again while it answers
    /// `NotWritablePrimary` (an election moved the primary in between).
    pub fn on_primary(&self, db: &str, cmd: bson::Document) -> bson::Document {
        let name = cmd.keys().next().cloned().unwrap_or_default();
        let started = Instant::now();
        loop {
            let p = self.rig.primary();
            let reply = self
                .rig
                .rs
                .process(p)
                .unwrap()
                .command(db, cmd.clone())
                .unwrap();
            if reply.get_f64("ok").unwrap_or(0.0) == 1.0 {
                return reply;
            }
            assert!(
                reply.get_i32("code").ok() == Some(10107) && started.elapsed() < LONG,
                "{name} on {db}: {reply}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Fills the primary with `bytes` of data (so that a backup's copy or a restore's
    /// download takes a moment), then waits for the set to settle: a fill that large may
    /// cost the primary its term.
    pub fn fill(&self, bytes: i64) {
        let p = self.rig.primary();
        let r = self
            .rig
            .rs
            .process(p)
            .unwrap()
            .command(
                "admin",
                doc! {"simFill": 1, "db": "big", "bytes": bytes, "collections": 4},
            )
            .unwrap();
        assert_eq!(r.get_f64("ok").unwrap_or(0.0), 1.0, "{r}");
        self.rig.rs.wait_settled(LONG).unwrap();
    }
}

/// Data written, agents and reconciler up, backup `b1` taken, then data written after it.
pub fn prepared(w: World, faulty_recover: Option<usize>) -> World {
    let mut w = w;
    w.rig.insert(0..50);
    // Every member applied the writes before the backup, whichever member takes it (a
    // lagging secondary's backup is consistent, but to an earlier point in time).
    let written: Vec<i32> = (0..50).collect();
    for i in 0..3 {
        w.wait_ids(i, &written);
    }
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

/// Every regular file under `dir`, recursively.
pub fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            out.extend(files_under(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

/// Waits until node `i`'s restore follow-ups removed its fallback directory.
pub fn wait_fallback_gone(w: &World, i: usize) {
    let fallback = w.rig.rs.dbpath(i).join(".tidemark-fallback");
    let started = Instant::now();
    while fallback.exists() {
        assert!(started.elapsed() < Duration::from_secs(60), "{}", w.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn nodes_of(v: &Value) -> Vec<Value> {
    v["replicaSets"][0]["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The pid in `status`'s leader holder (`host/pid/tag`).
pub fn holder_pid(v: &Value) -> Option<u32> {
    v["leader"]["holder"]
        .as_str()?
        .split('/')
        .nth(1)?
        .parse()
        .ok()
}

/// The view of node `i` in a describe output.
pub fn node_view(w: &World, v: &Value, i: usize) -> Value {
    nodes_of(v)
        .into_iter()
        .find(|n| n["node"] == w.rig.node(i))
        .unwrap_or(Value::Null)
}

/// The scratch directories (`tidemark-drill-*`) a drill agent left in `dir`.
pub fn scratch_left(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("tidemark-drill-"))
        .collect()
}
