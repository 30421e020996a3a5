//! The test rig shared by the agent's end-to-end suites: a mongod-sim replica set, one
//! `tidemark agent` per member, a control-plane directory and a backup storage. Tests play
//! the reconciler: they write ops through the schema types and read the agents' reports.
// Each suite uses a subset of the rig.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bson::{Document, doc};
use mongod_sim::harness::{ReplicaSet, binary, real_mongod};
use tempfile::TempDir;
use tidemark_agent::storage::BackupStore;
use tidemark_schema::control::{
    Op, OpCommand, OpTarget, PhaseReport, StorageTarget, op_key, phase_key,
};
use tidemark_schema::manifest::{OpTime, ReplicaSetManifest, layout};
use tidemark_schema::model::{BackupType, Compression};
use tidemark_testkit::Moto;

pub const CLUSTER: &str = "c1";
/// With `MONGOD_BIN` set (a real mongod), a test that needs a fault only mongod-sim can
/// inject says so and passes without running; the rest of the suite runs for real.
pub fn sim_only(what: &str) -> bool {
    let real = real_mongod().is_some();
    if real {
        eprintln!("not run against a real mongod: {what} needs a mongod-sim fault");
    }
    real
}

/// Set only in a re-executed run inside a mount namespace: the small tmpfs, and a
/// directory on the normal disk for the control plane and the storage.
pub const TMPFS_VAR: &str = "TIDEMARK_TEST_TMPFS";
pub const OUTSIDE_VAR: &str = "TIDEMARK_TEST_OUTSIDE";
pub const LONG: Duration = Duration::from_secs(90);

/// A replica set, one agent per member, a control plane and a backup storage.
pub struct Rig {
    pub rs: ReplicaSet,
    /// Logs always go here; so does the control plane unless `control_url` says otherwise.
    pub control: TempDir,
    /// The `--control` every process gets: the `control` directory, or an S3 URL.
    pub control_url: String,
    pub storage_dir: TempDir,
    pub storage_url: String,
    pub agent_env: Vec<(&'static str, String)>,
    /// How the test reads storage itself (the same seam the agent uses).
    pub reader: Option<BackupStore>,
    pub agents: Vec<Option<Child>>,
    pub seq: u32,
}

impl Rig {
    pub fn new(name: &str, members: usize, sim_args: &[&str]) -> Rig {
        let rs = ReplicaSet::start_with(name, vec![Default::default(); members], sim_args)
            .expect("replica set starts");
        // Inside the small-disk namespace, only the dbPaths go on the small disk.
        let outside = || match std::env::var_os(OUTSIDE_VAR) {
            Some(dir) => TempDir::new_in(dir).unwrap(),
            None => TempDir::new().unwrap(),
        };
        let storage_dir = outside();
        let storage_url = format!("file://{}", storage_dir.path().display());
        let control = outside();
        Rig {
            control_url: control.path().display().to_string(),
            agents: (0..members).map(|_| None).collect(),
            rs,
            control,
            storage_dir,
            storage_url,
            agent_env: Vec::new(),
            reader: None,
            seq: 0,
        }
    }

    /// The control plane in S3 too, under a prefix (every process gets the moto env).
    pub fn use_s3_control(&mut self, moto: &Moto, bucket: &str) {
        moto.create_bucket(bucket);
        self.control_url = format!("s3://{bucket}/tidemark");
        self.agent_env = moto.env();
    }

    pub fn use_s3(&mut self, moto: &Moto, bucket: &str) {
        moto.create_bucket(bucket);
        self.storage_url = format!("s3://{bucket}/backups");
        self.agent_env = moto.env();
        self.reader =
            Some(BackupStore::open_with_env(&self.storage(Compression::Zstd), moto.env()).unwrap());
    }

    pub fn storage(&self, compression: Compression) -> StorageTarget {
        StorageTarget {
            url: self.storage_url.clone(),
            compression,
            compression_level: None,
            options: Default::default(),
        }
    }

    /// The desired state's Cluster (every member) and a `local` BackupStorage, as YAML.
    pub fn cluster_yaml(&self) -> String {
        let members: Vec<String> = (0..self.agents.len())
            .map(|i| format!("        - {}", self.node(i)))
            .collect();
        format!(
            "apiVersion: tidemark/v1\nkind: Cluster\nmetadata:\n  name: {CLUSTER}\nspec:\n  \
             replicaSets:\n    - name: {}\n      members:\n{}\n---\napiVersion: tidemark/v1\n\
             kind: BackupStorage\nmetadata:\n  name: local\nspec:\n  url: {}\n",
            self.rs.name,
            members.join("\n"),
            self.storage_url
        )
    }

    pub fn node(&self, i: usize) -> String {
        self.rs.host(i)
    }

    pub fn start_agent(&mut self, i: usize) {
        self.start_agent_with(i, &[]);
    }

    /// `tidemark agent` for node `i` with its identity, its log file and the agents'
    /// default intervals: what a deployment runs. Tests add faster intervals to it.
    pub fn agent_command(&self, i: usize) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidemark"));
        cmd.args(["agent", "--cluster", CLUSTER, "--control"])
            .arg(&self.control_url)
            .arg("--mongod-uri")
            .arg(format!("mongodb://{}/?directConnection=true", self.node(i)))
            .arg("--dbpath")
            .arg(self.rs.dbpath(i))
            .arg("--mongod-bin")
            .arg(binary().expect("cargo builds mongod-sim for the workspace tests"))
            .args(["--node-id", &self.node(i), "--replica-set", &self.rs.name])
            .arg("--trusted-keys")
            .arg(&tidemark_testkit::test_keys().public)
            .envs(self.agent_env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("TIDEMARK_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(self.control.path().join(format!("agent{i}.log"))).unwrap(),
            );
        cmd
    }

    /// Starts node `i`'s agent with extra flags (say, a fault for its standalone starts).
    pub fn start_agent_with(&mut self, i: usize, extra: &[&str]) {
        let child = self
            .agent_command(i)
            .args(["--heartbeat-interval", "1s", "--poll-interval", "200ms"])
            .args(["--cursor-keepalive", "1s", "--mongod-timeout", "60s"])
            .args(["--parallel-files", "2"])
            .args(extra)
            .args(if real_mongod().is_some() {
                &[][..]
            } else {
                &[
                    "--standalone-arg=--sim-checkpoint-interval-ms",
                    "--standalone-arg=300",
                ][..]
            })
            .spawn()
            .expect("tidemark agent starts");
        self.agents[i] = Some(child);
    }

    pub fn kill_agent(&mut self, i: usize) {
        if let Some(mut c) = self.agents[i].take() {
            let _ = c.kill(); // SIGKILL: no chance to clean up
            let _ = c.wait();
        }
    }

    /// Sends `signal` to node `i`'s agent (SIGSTOP freezes it mid-life, heartbeat and all;
    /// SIGCONT lets it go on).
    pub fn signal_agent(&self, i: usize, signal: nix::sys::signal::Signal) {
        let pid = self.agents[i].as_ref().expect("agent running").id();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).unwrap();
    }

    pub fn agent_log(&self, i: usize) -> String {
        std::fs::read_to_string(self.control.path().join(format!("agent{i}.log")))
            .unwrap_or_default()
    }

    /// Writes an op for `targets`, as the reconciler would; returns its id.
    pub fn op(&mut self, command: OpCommand, targets: &[usize]) -> String {
        let op = self.new_op(command, targets);
        let key = op_key(&op.id);
        self.write_record(&key, &tidemark_testkit::test_keys().signer.seal(&key, &op));
        op.id
    }

    /// An op for `targets` with a fresh id, not written yet.
    pub fn new_op(&mut self, command: OpCommand, targets: &[usize]) -> Op {
        self.seq += 1;
        let now = chrono::Utc::now();
        let id = format!(
            "{}-{:03}-{}",
            now.format("%Y%m%dT%H%M%S%3fZ"),
            self.seq,
            command.name()
        );
        Op {
            id,
            created_at: now,
            cluster: CLUSTER.into(),
            targets: targets
                .iter()
                .map(|&i| OpTarget {
                    replica_set: self.rs.name.clone(),
                    node: self.node(i),
                })
                .collect(),
            command,
            deadline: None,
            epoch: None,
            cause: None,
        }
    }

    /// Writes `value` at control-plane `key` as it is (sealed or not).
    pub fn write_record(&self, key: &str, value: &serde_json::Value) {
        let path = self.control.path().join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
    }

    /// Opens op's gate as the reconciler does: sealed.
    pub fn open_gate(&self, op: &str) {
        let key = tidemark_schema::control::go_key(op);
        let gate = tidemark_schema::control::Gate::go(chrono::Utc::now(), None);
        self.write_record(
            &key,
            &tidemark_testkit::test_keys().signer.seal(&key, &gate),
        );
    }

    pub fn report_of_last_backup_extended(&self) -> bool {
        let ops = self.control.path().join("ops");
        std::fs::read_dir(ops).unwrap().any(|e| {
            let dir = e.unwrap().path();
            dir.join(&self.rs.name).is_dir()
                && std::fs::read_dir(dir.join(&self.rs.name))
                    .unwrap()
                    .any(|f| {
                        f.unwrap()
                            .file_name()
                            .to_string_lossy()
                            .ends_with(".extend.json")
                    })
        })
    }

    pub fn report(&self, op: &str, i: usize, phase: &str) -> Option<PhaseReport> {
        let key = phase_key(op, &self.rs.name, &self.node(i), phase);
        let bytes = std::fs::read(self.control.path().join(key)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Waits for the first of `phases` that node `i` reports for `op`.
    pub fn wait_phase(&self, op: &str, i: usize, phases: &[&str]) -> PhaseReport {
        let started = Instant::now();
        loop {
            if let Some(r) = phases.iter().find_map(|p| self.report(op, i, p)) {
                return r;
            }
            assert!(
                started.elapsed() < LONG,
                "no {phases:?} report of {op} from node {i}; agent log:\n{}",
                self.agent_log(i)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for node `i`'s final report (`done` or `error`) of `op`.
    pub fn wait_final(&self, op: &str, i: usize) -> PhaseReport {
        self.wait_phase(op, i, &["done", "error"])
    }

    /// Runs `tidemark backup-finish` or `restore-finish` for `op`, as an operator does.
    pub fn finish(&self, verb: &str, op: &str) {
        let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args([verb, "--control"])
            .arg(self.control.path())
            .arg(op)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn wait_done(&self, op: &str, i: usize) -> PhaseReport {
        let r = self.wait_final(op, i);
        assert_eq!(
            r.phase,
            tidemark_schema::control::Phase::Done,
            "{}: {}\nagent log:\n{}",
            r.node,
            r.message,
            self.agent_log(i)
        );
        r
    }

    pub fn backup(&mut self, name: &str, from: usize, compression: Compression) -> PhaseReport {
        self.backup_to(name, from, compression, None)
    }

    pub fn backup_to(
        &mut self,
        name: &str,
        from: usize,
        compression: Compression,
        extend_to: Option<OpTime>,
    ) -> PhaseReport {
        let mut command = self.backup_command(name, compression);
        if let OpCommand::Backup { extend_to: e, .. } = &mut command {
            *e = extend_to;
        }
        let op = self.op(command, &[from]);
        self.wait_done(&op, from)
    }

    /// A physical backup `name` into the rig's storage.
    pub fn backup_command(&self, name: &str, compression: Compression) -> OpCommand {
        OpCommand::Backup {
            backup: name.into(),
            storage: self.storage(compression),
            backup_type: BackupType::Physical,
            extend_to: None,
            snapshot_command: None,
            hash_namespaces: Vec::new(),
            barrier: false,
            incremental: None,
        }
    }

    pub fn restore_op(&mut self, backup: &str, fallback: bool, targets: &[usize]) -> String {
        let command = self.restore_command(backup, fallback);
        self.op(command, targets)
    }

    /// A restore of `backup` from the rig's storage, without a gate.
    pub fn restore_command(&self, backup: &str, fallback: bool) -> OpCommand {
        OpCommand::Restore {
            backup: backup.into(),
            storage: self.storage(Compression::Zstd),
            fallback_enabled: fallback,
            external: false,
            wait_for_go: false,
            cannot_decrypt: Vec::new(),
            replica_set_map: Default::default(),
            sharding: None,
            stop_waves: Vec::new(),
            go_timeout_ms: None,
            point_in_time: None,
        }
    }

    /// The timestamp of the newest oplog entry on the primary.
    pub fn last_write(&self) -> OpTime {
        let p = self.primary();
        let reply = self
            .rs
            .process(p)
            .unwrap()
            .command(
                "local",
                doc! {"find": "oplog.rs", "filter": {}, "sort": {"ts": -1}, "limit": 1},
            )
            .unwrap();
        let ts = reply
            .get_document("cursor")
            .unwrap()
            .get_array("firstBatch")
            .unwrap()[0]
            .as_document()
            .unwrap()
            .get_timestamp("ts")
            .unwrap();
        OpTime {
            t: ts.time,
            i: ts.increment,
        }
    }

    pub fn primary(&self) -> usize {
        self.rs.wait_for_primary(LONG).expect("a primary")
    }

    /// Inserts on the primary; asks again when an election moved it in between.
    pub fn insert(&self, ids: std::ops::Range<i32>) {
        let docs: Vec<Document> = ids
            .map(|i| doc! {"_id": i, "payload": "x".repeat(100)})
            .collect();
        let started = Instant::now();
        loop {
            let p = self.primary();
            let reply = self
                .rs
                .process(p)
                .unwrap()
                .command("app", doc! {"insert": "items", "documents": docs.clone()})
                .unwrap();
            if reply.get_i32("code").ok() == Some(10107) && started.elapsed() < LONG {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            assert_eq!(reply.get_f64("ok").unwrap_or(0.0), 1.0, "{reply}");
            return;
        }
    }

    pub fn ids_on(&self, i: usize) -> Vec<i32> {
        let reply = self
            .rs
            .process(i)
            .unwrap()
            .command(
                "app",
                doc! {"find": "items", "filter": {}, "batchSize": 100000, "sort": {"_id": 1}},
            )
            .unwrap();
        reply
            .get_document("cursor")
            .and_then(|c| c.get_array("firstBatch"))
            .map(|b| {
                b.iter()
                    .filter_map(|d| d.as_document()?.get_i32("_id").ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn manifest(&self, backup: &str) -> ReplicaSetManifest {
        let key = layout::rs_manifest_key(backup, &self.rs.name);
        let bytes = match &self.reader {
            None => std::fs::read(self.storage_dir.path().join(&key)).expect("manifest written"),
            Some(store) => {
                use object_store::ObjectStoreExt;
                let runtime = tokio::runtime::Runtime::new().unwrap();
                runtime
                    .block_on(async {
                        store
                            .object_store()
                            .get(&object_store::path::Path::from(key.as_str()))
                            .await?
                            .bytes()
                            .await
                    })
                    .expect("manifest written")
                    .to_vec()
            }
        };
        ReplicaSetManifest::from_json(&bytes).unwrap()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        for i in 0..self.agents.len() {
            self.kill_agent(i);
        }
    }
}

/// Re-runs test `inner` of this binary inside a private mount namespace (`unshare -m`),
/// where the test may mount tmpfs disks of its own. With `tmpfs_size`, a tmpfs of that
/// size is the temp dir, so every dbPath the harness makes lives on a small real disk.
/// The inner run sees `TMPFS_VAR` (empty without `tmpfs_size`) and prints `INNER OK`.
pub fn in_mount_namespace(inner: &str, tmpfs_size: Option<&str>) {
    let tmpfs = TempDir::new().unwrap();
    let outside = TempDir::new().unwrap();
    let script = match tmpfs_size {
        Some(_) => {
            r#"mount -t tmpfs -o size="$2" tmpfs "$0" && exec "$1" --exact "$3" --nocapture --test-threads=1"#
        }
        None => r#"exec "$1" --exact "$3" --nocapture --test-threads=1"#,
    };
    let mut attempts = vec![vec!["-m"], vec!["-rm"]];
    let out = loop {
        let flags = attempts.remove(0);
        let mut cmd = Command::new("unshare");
        cmd.args(&flags)
            .args(["sh", "-c", script])
            .arg(tmpfs.path())
            .arg(std::env::current_exe().unwrap())
            .args([tmpfs_size.unwrap_or("-"), inner])
            .env(OUTSIDE_VAR, outside.path());
        match tmpfs_size {
            Some(_) => cmd.env(TMPFS_VAR, tmpfs.path()).env("TMPDIR", tmpfs.path()),
            None => cmd.env(TMPFS_VAR, ""),
        };
        let out = cmd.output().expect("unshare (util-linux) runs");
        // Without root, fall back to a user namespace that maps us to root.
        if out.status.success()
            || attempts.is_empty()
            || !String::from_utf8_lossy(&out.stderr).contains("unshare")
        {
            break out;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(&format!("INNER OK {inner}")),
        "inner run {inner} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Mounts a tmpfs of `size` on `dir` (inside `in_mount_namespace` only), keeping what
/// `dir` held: its files are copied aside, the tmpfs mounted over it, and copied back.
pub fn mount_small_disk(dir: &Path, size: &str) {
    let aside = TempDir::new().unwrap();
    let run = |cmd: &mut Command| {
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", dir.display()))
        .arg(aside.path()));
    run(Command::new("mount")
        .args(["-t", "tmpfs", "-o"])
        .arg(format!("size={size}"))
        .arg("tmpfs")
        .arg(dir));
    run(Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", aside.path().display()))
        .arg(dir));
}

/// Copies every file under `from` into `to`, keeping relative paths.
pub fn copy_tree(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let target = to.join(p.file_name().unwrap());
        if p.is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_tree(&p, &target);
        } else {
            std::fs::copy(&p, &target).unwrap();
        }
    }
}

/// A hash of every file under `root` (path, mode and bytes), skipping `skip`.
pub fn tree_hash(root: &Path, skip: Option<&str>) -> String {
    use std::os::unix::fs::PermissionsExt;
    let mut files: Vec<PathBuf> = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if skip.is_some_and(|s| p.file_name().is_some_and(|n| n == s))
                && p.parent() == Some(root)
            {
                continue;
            }
            if p.is_dir() {
                stack.push(p)
            } else {
                files.push(p)
            }
        }
    }
    files.sort();
    let mut h = blake3::Hasher::new();
    for f in files {
        h.update(f.strip_prefix(root).unwrap().to_string_lossy().as_bytes());
        h.update(
            &std::fs::metadata(&f)
                .unwrap()
                .permissions()
                .mode()
                .to_le_bytes(),
        );
        h.update(&std::fs::read(&f).unwrap());
    }
    h.finalize().to_hex().to_string()
}

/// For benchmarks: mongod-sim is another package's binary, which `cargo bench` does not
/// rebuild; built every time (a no-op when fresh) so no figure comes from a stale one.
pub fn build_release_sim() {
    tidemark_testkit::build_release_sim();
}
