//! End-to-end tests of `tidemark agent` against mongod-sim replica sets: real processes,
//! a real control-plane directory, real file and S3 (moto) storage. Tests play the
//! reconciler: they write ops through the schema types and read the agents' reports.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bson::{Document, doc};
use mongod_sim::harness::{ReplicaSet, binary};
use tempfile::TempDir;
use tidemark_agent::storage::BackupStore;
use tidemark_schema::control::{
    Op, OpCommand, OpTarget, PhaseReport, StorageTarget, finish_key, op_key, phase_key,
};
use tidemark_schema::manifest::{ReplicaSetManifest, layout};
use tidemark_schema::model::{BackupType, Compression};
use tidemark_testkit::Moto;

const CLUSTER: &str = "c1";
/// Set only in a re-executed run inside a mount namespace: the small tmpfs, and a
/// directory on the normal disk for the control plane and the storage.
const TMPFS_VAR: &str = "TIDEMARK_TEST_TMPFS";
const OUTSIDE_VAR: &str = "TIDEMARK_TEST_OUTSIDE";
const LONG: Duration = Duration::from_secs(90);

/// A replica set, one agent per member, a control plane and a backup storage.
struct Rig {
    rs: ReplicaSet,
    control: TempDir,
    storage_dir: TempDir,
    storage_url: String,
    agent_env: Vec<(&'static str, String)>,
    /// How the test reads storage itself (the same seam the agent uses).
    reader: Option<BackupStore>,
    agents: Vec<Option<Child>>,
    seq: u32,
}

impl Rig {
    fn new(name: &str, members: usize, sim_args: &[&str]) -> Rig {
        let rs = ReplicaSet::start_with(name, vec![Default::default(); members], sim_args)
            .expect("replica set starts");
        // Inside the small-disk namespace, only the dbPaths go on the small disk.
        let outside = || match std::env::var_os(OUTSIDE_VAR) {
            Some(dir) => TempDir::new_in(dir).unwrap(),
            None => TempDir::new().unwrap(),
        };
        let storage_dir = outside();
        let storage_url = format!("file://{}", storage_dir.path().display());
        Rig {
            agents: (0..members).map(|_| None).collect(),
            rs,
            control: outside(),
            storage_dir,
            storage_url,
            agent_env: Vec::new(),
            reader: None,
            seq: 0,
        }
    }

    fn use_s3(&mut self, moto: &Moto, bucket: &str) {
        moto.create_bucket(bucket);
        self.storage_url = format!("s3://{bucket}/backups");
        self.agent_env = moto.env();
        self.reader =
            Some(BackupStore::open_with_env(&self.storage(Compression::Zstd), moto.env()).unwrap());
    }

    fn storage(&self, compression: Compression) -> StorageTarget {
        StorageTarget {
            url: self.storage_url.clone(),
            compression,
            compression_level: None,
            options: Default::default(),
        }
    }

    fn node(&self, i: usize) -> String {
        self.rs.host(i)
    }

    fn start_agent(&mut self, i: usize) {
        let child = Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args(["agent", "--cluster", CLUSTER, "--control"])
            .arg(self.control.path())
            .arg("--mongod-uri")
            .arg(format!("mongodb://{}/?directConnection=true", self.node(i)))
            .arg("--dbpath")
            .arg(self.rs.dbpath(i))
            .arg("--mongod-bin")
            .arg(binary().expect("cargo builds mongod-sim for the workspace tests"))
            .args(["--node-id", &self.node(i), "--replica-set", &self.rs.name])
            .args(["--heartbeat-interval", "1s", "--poll-interval", "200ms"])
            .args(["--cursor-keepalive", "1s", "--mongod-timeout", "60s"])
            .args(["--parallel-files", "2"])
            .args([
                "--standalone-arg=--sim-checkpoint-interval-ms",
                "--standalone-arg=300",
            ])
            .envs(self.agent_env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("TIDEMARK_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(self.control.path().join(format!("agent{i}.log"))).unwrap(),
            )
            .spawn()
            .expect("tidemark agent starts");
        self.agents[i] = Some(child);
    }

    fn kill_agent(&mut self, i: usize) {
        if let Some(mut c) = self.agents[i].take() {
            let _ = c.kill(); // SIGKILL: no chance to clean up
            let _ = c.wait();
        }
    }

    fn agent_log(&self, i: usize) -> String {
        std::fs::read_to_string(self.control.path().join(format!("agent{i}.log")))
            .unwrap_or_default()
    }

    /// Writes an op for `targets`, as the reconciler would; returns its id.
    fn op(&mut self, command: OpCommand, targets: &[usize]) -> String {
        self.seq += 1;
        let now = chrono::Utc::now();
        let id = format!(
            "{}-{:03}-{}",
            now.format("%Y%m%dT%H%M%S%3fZ"),
            self.seq,
            command.name()
        );
        let op = Op {
            id: id.clone(),
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
        };
        let path = self.control.path().join(op_key(&id));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, serde_json::to_vec_pretty(&op).unwrap()).unwrap();
        id
    }

    fn report(&self, op: &str, i: usize, phase: &str) -> Option<PhaseReport> {
        let key = phase_key(op, &self.rs.name, &self.node(i), phase);
        let bytes = std::fs::read(self.control.path().join(key)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Waits for node `i`'s final report (`done` or `error`) of `op`.
    fn wait_final(&self, op: &str, i: usize) -> PhaseReport {
        let started = Instant::now();
        loop {
            for phase in ["done", "error"] {
                if let Some(r) = self.report(op, i, phase) {
                    return r;
                }
            }
            assert!(
                started.elapsed() < LONG,
                "no final report of {op} from node {i}; agent log:\n{}",
                self.agent_log(i)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_done(&self, op: &str, i: usize) -> PhaseReport {
        let r = self.wait_final(op, i);
        assert_eq!(
            r.phase,
            "done",
            "{}: {}\nagent log:\n{}",
            r.node,
            r.message,
            self.agent_log(i)
        );
        r
    }

    fn backup(&mut self, name: &str, from: usize, compression: Compression) -> PhaseReport {
        let op = self.op(
            OpCommand::Backup {
                backup: name.into(),
                storage: self.storage(compression),
                backup_type: BackupType::Physical,
                extend_to: None,
                snapshot_command: None,
            },
            &[from],
        );
        self.wait_done(&op, from)
    }

    fn restore_op(&mut self, backup: &str, fallback: bool, targets: &[usize]) -> String {
        self.op(
            OpCommand::Restore {
                backup: backup.into(),
                storage: self.storage(Compression::Zstd),
                fallback_enabled: fallback,
                external: false,
            },
            targets,
        )
    }

    fn primary(&self) -> usize {
        self.rs.wait_for_primary(LONG).expect("a primary")
    }

    fn insert(&self, ids: std::ops::Range<i32>) {
        let p = self.primary();
        let docs: Vec<Document> = ids
            .map(|i| doc! {"_id": i, "payload": "x".repeat(100)})
            .collect();
        let reply = self
            .rs
            .process(p)
            .unwrap()
            .command("app", doc! {"insert": "items", "documents": docs})
            .unwrap();
        assert_eq!(reply.get_f64("ok").unwrap_or(0.0), 1.0, "{reply}");
    }

    fn ids_on(&self, i: usize) -> Vec<i32> {
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

    fn manifest(&self, backup: &str) -> ReplicaSetManifest {
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

/// A hash of every file under `root` (path, mode and bytes), skipping `skip`.
fn tree_hash(root: &Path, skip: Option<&str>) -> String {
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

/// Restores `backup` on every member, restarts them as a replica set, and returns the
/// ids found on the new primary.
fn restore_everywhere_and_read(rig: &mut Rig, backup: &str, fallback: bool) -> Vec<i32> {
    let all: Vec<usize> = (0..rig.agents.len()).collect();
    let op = rig.restore_op(backup, fallback, &all);
    for &i in &all {
        rig.wait_done(&op, i);
    }
    for &i in &all {
        assert!(
            rig.report(&op, i, "recover").is_some(),
            "recover phase reported"
        );
        assert!(
            !rig.rs.dbpath(i).join("tidemark-restore.log").exists(),
            "restore log removed on success"
        );
        rig.rs.members[i] = None;
        rig.rs.restart(i).expect("restored member starts");
    }
    let p = rig.primary();
    rig.ids_on(p)
}

fn round_trip(rig: &mut Rig) {
    rig.insert(0..50);
    for i in 0..rig.agents.len() {
        rig.start_agent(i);
    }
    // Let a checkpoint pass so the data is in files, not only in the journal.
    std::thread::sleep(Duration::from_millis(800));
    let secondary = (rig.primary() + 1) % rig.agents.len();
    let done = rig.backup("b1", secondary, Compression::Zstd);
    assert!(done.message.contains("backup b1 of"), "{}", done.message);
    let manifest = rig.manifest("b1");
    assert_eq!(manifest.node, rig.node(secondary));
    assert!(
        manifest
            .files
            .iter()
            .any(|f| f.path.starts_with("collection-")),
        "{:?}",
        manifest.files
    );
    assert!(
        manifest
            .files
            .iter()
            .all(|f| f.checksum.starts_with("blake3:"))
    );
    // Written after the backup: must be gone after the restore.
    rig.insert(1000..1010);
    let ids = restore_everywhere_and_read(rig, "b1", false);
    assert_eq!(
        ids,
        (0..50).collect::<Vec<_>>(),
        "exactly the documents written before the backup"
    );
}

#[test]
fn round_trip_with_file_storage() {
    let mut rig = Rig::new("rtf", 3, &[]);
    round_trip(&mut rig);
}

#[test]
fn round_trip_with_s3_storage() {
    let moto = Moto::start();
    let mut rig = Rig::new("rts", 3, &[]);
    rig.use_s3(&moto, "tidemark-backups");
    round_trip(&mut rig);
}

#[test]
fn a_corrupted_object_fails_the_node_and_fallback_restores_it_byte_for_byte() {
    let mut rig = Rig::new("cor", 1, &[]);
    rig.insert(0..20);
    rig.start_agent(0);
    std::thread::sleep(Duration::from_millis(800));
    rig.backup("b1", 0, Compression::None);
    rig.insert(100..105);
    // Flip bytes in the middle of the largest stored collection file.
    let manifest = rig.manifest("b1");
    let victim = manifest
        .files
        .iter()
        .filter(|f| f.path.starts_with("collection-"))
        .max_by_key(|f| f.stored_size)
        .unwrap();
    let object = rig.storage_dir.path().join(victim.object.as_ref().unwrap());
    let mut bytes = std::fs::read(&object).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&object, bytes).unwrap();

    let op = rig.restore_op("b1", true, &[0]);
    let failed = rig.wait_final(&op, 0);
    assert_eq!(failed.phase, "error", "{}", failed.message);
    assert!(failed.message.contains("phase fetch"), "{}", failed.message);
    assert!(
        failed.message.contains(&victim.path),
        "names the file: {}",
        failed.message
    );
    // The fallback holds the node's data as it was when mongod stopped.
    let dbpath = rig.rs.dbpath(0);
    let fallback = dbpath.join(".tidemark-fallback");
    let before = tree_hash(&fallback, Some(".tidemark-fallback-state.json"));

    let revert = rig.op(
        OpCommand::RevertToFallback {
            restore_op: op.clone(),
        },
        &[0],
    );
    rig.wait_done(&revert, 0);
    assert!(!fallback.exists());
    assert_eq!(
        tree_hash(&dbpath, None),
        before,
        "the dbPath is byte-identical to before the restore"
    );
    rig.rs.members[0] = None;
    rig.rs.restart(0).unwrap();
    let mut expected: Vec<i32> = (0..20).collect();
    expected.extend(100..105);
    assert_eq!(
        rig.ids_on(rig.primary()),
        expected,
        "the node has its pre-restore data"
    );
}

#[test]
fn community_mongod_refuses_a_physical_backup() {
    let mut rig = Rig::new("com", 1, &["--sim-flavor", "community"]);
    rig.start_agent(0);
    let op = rig.op(
        OpCommand::Backup {
            backup: "b1".into(),
            storage: rig.storage(Compression::Zstd),
            backup_type: BackupType::Physical,
            extend_to: None,
            snapshot_command: None,
        },
        &[0],
    );
    let r = rig.wait_final(&op, 0);
    assert_eq!(r.phase, "error");
    assert!(r.message.contains("no $backupCursor"), "{}", r.message);
    assert!(r.message.contains("community"), "{}", r.message);
    assert!(
        !rig.storage_dir.path().join("b1").exists(),
        "nothing was written to storage"
    );
}

#[test]
fn external_backup_waits_for_finish_then_writes_the_manifest() {
    let mut rig = Rig::new("ext", 1, &[]);
    rig.insert(0..5);
    rig.start_agent(0);
    let op = rig.op(
        OpCommand::Backup {
            backup: "snap1".into(),
            storage: rig.storage(Compression::Zstd),
            backup_type: BackupType::External,
            extend_to: None,
            snapshot_command: None,
        },
        &[0],
    );
    let started = Instant::now();
    let ready = loop {
        if let Some(r) = rig.report(&op, 0, "copyReady") {
            break r;
        }
        assert!(
            started.elapsed() < LONG,
            "no copyReady; {}",
            rig.agent_log(0)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let listed = ready.details["files"].as_array().unwrap().len();
    assert!(listed > 3, "{ready:?}");
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        rig.report(&op, 0, "done").is_none(),
        "waits for backup-finish"
    );
    let key = layout::rs_manifest_key("snap1", &rig.rs.name);
    assert!(
        !rig.storage_dir.path().join(&key).exists(),
        "no manifest before finish"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["backup-finish", "--control"])
        .arg(rig.control.path())
        .arg(&op)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(rig.control.path().join(finish_key(&op)).exists());
    rig.wait_done(&op, 0);
    let m = rig.manifest("snap1");
    assert_eq!(m.backup_type, BackupType::External);
    assert_eq!(m.files.len(), listed);
    assert!(
        m.files
            .iter()
            .all(|f| f.object.is_none() && f.stored_size == 0)
    );
}

#[test]
fn an_agent_killed_mid_restore_never_reports_done_for_missing_files() {
    let mut rig = Rig::new("kil", 1, &[]);
    // Enough data that the download takes a moment.
    for chunk in 0..20 {
        let p = rig.primary();
        let docs: Vec<Document> = (chunk * 500..(chunk + 1) * 500)
            .map(|i| doc! {"_id": i, "payload": format!("{i:0>2000}")})
            .collect();
        rig.rs
            .process(p)
            .unwrap()
            .command("app", doc! {"insert": "items", "documents": docs})
            .unwrap();
    }
    rig.start_agent(0);
    std::thread::sleep(Duration::from_millis(800));
    rig.backup("b1", 0, Compression::Zstd);
    let op = rig.restore_op("b1", true, &[0]);
    // Kill the agent as soon as the download starts.
    let started = Instant::now();
    while rig.report(&op, 0, "fetch").is_none() {
        assert!(started.elapsed() < LONG, "{}", rig.agent_log(0));
        std::thread::sleep(Duration::from_millis(5));
    }
    rig.kill_agent(0);
    let done_before_kill = rig.report(&op, 0, "done").is_some();
    rig.start_agent(0);
    let r = rig.wait_final(&op, 0);
    eprintln!("after the kill: {} ({})", r.phase, r.message);
    if r.phase == "done" {
        // Only acceptable if every file really is there: the node starts with all data.
        assert!(
            done_before_kill,
            "a restarted agent must not finish someone else's download"
        );
    } else {
        assert!(
            r.message.contains("restarted during phase"),
            "{}",
            r.message
        );
        assert!(
            rig.rs.dbpath(0).join(".tidemark-fallback").exists(),
            "fallback kept for the decision"
        );
        let revert = rig.op(
            OpCommand::RevertToFallback {
                restore_op: op.clone(),
            },
            &[0],
        );
        rig.wait_done(&revert, 0);
        rig.rs.members[0] = None;
        rig.rs.restart(0).unwrap();
        assert_eq!(
            rig.ids_on(rig.primary()).len(),
            10_000,
            "the node is back as before"
        );
    }
}

/// Re-runs test `inner` of this binary inside a private mount namespace where a tmpfs of
/// `size` is the temp dir, so every dbPath the harness makes lives on a small real disk.
fn on_a_small_disk(inner: &str, size: &str) {
    let tmpfs = TempDir::new().unwrap();
    let outside = TempDir::new().unwrap();
    let script = r#"mount -t tmpfs -o size="$2" tmpfs "$0" && exec "$1" --exact "$3" --nocapture --test-threads=1"#;
    let mut attempts = vec![vec!["-m"], vec!["-rm"]];
    let out = loop {
        let flags = attempts.remove(0);
        let out = Command::new("unshare")
            .args(&flags)
            .args(["sh", "-c", script])
            .arg(tmpfs.path())
            .arg(std::env::current_exe().unwrap())
            .args([size, inner])
            .env(TMPFS_VAR, tmpfs.path())
            .env(OUTSIDE_VAR, outside.path())
            .env("TMPDIR", tmpfs.path())
            .output()
            .expect("unshare (util-linux) runs");
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

fn fill(rig: &Rig, db: &str, bytes: u64) {
    let p = rig.primary();
    let r = rig
        .rs
        .process(p)
        .unwrap()
        .command(
            "admin",
            doc! {"simFill": 1, "db": db, "bytes": bytes as i64, "collections": 2},
        )
        .unwrap();
    assert_eq!(r.get_f64("ok").unwrap_or(0.0), 1.0, "{r}");
}

/// Writes a ballast file of `bytes` on the small disk (tmpfs allocates on write).
fn ballast(dir: &Path, bytes: u64) {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join("ballast")).unwrap();
    let chunk = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n]).unwrap();
        left -= n as u64;
    }
    f.sync_all().unwrap();
}

fn du(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        total += if p.is_dir() {
            du(&p)
        } else {
            std::fs::metadata(&p).map_or(0, |m| m.len())
        };
    }
    total
}

#[test]
fn the_disk_evaluation_refuses_a_fallback_restore_on_a_small_disk() {
    on_a_small_disk("inner_disk_evaluation", "96m");
}

/// Runs only inside `on_a_small_disk`; does nothing in a normal run.
#[test]
fn inner_disk_evaluation() {
    let Some(tmpfs) = std::env::var_os(TMPFS_VAR).map(PathBuf::from) else {
        return;
    };
    let mut rig = Rig::new("dsk", 1, &[]);
    rig.insert(0..10);
    fill(&rig, "big", 8 << 20);
    rig.start_agent(0);
    std::thread::sleep(Duration::from_millis(800));
    rig.backup("b1", 0, Compression::Zstd);
    let needed = rig.manifest("b1").uncompressed_bytes;
    // Fill the disk until 0.85 × total − used is half of what the backup needs.
    let facts = tidemark_agent::disk::disk_facts(&tmpfs).unwrap();
    let target_used = (facts.total_bytes as i128 * 85 / 100 - needed as i128 / 2) as u64;
    assert!(
        target_used > facts.used_bytes,
        "setup: the disk is already too full: {facts:?}"
    );
    ballast(&tmpfs, target_used - facts.used_bytes);

    let op = rig.restore_op("b1", true, &[0]);
    let r = rig.wait_final(&op, 0);
    assert_eq!(r.phase, "error", "{}", r.message);
    assert!(
        r.message
            .contains("not enough disk for a restore with fallback"),
        "{}",
        r.message
    );
    assert!(r.message.contains("nothing was touched"), "{}", r.message);
    let disk = rig
        .report(&op, 0, "disk")
        .expect("the disk phase reports its figures");
    assert_eq!(disk.details["fits"], false);
    let room = disk.details["roomBytes"].as_i64().unwrap();
    assert!(room < needed as i64, "{disk:?}");
    assert_eq!(disk.details["neededBytes"].as_u64(), Some(needed));
    assert!(
        disk.details["totalBytes"].as_u64().unwrap() > 0
            && disk.details["usedBytes"].as_u64().unwrap() > 0
    );
    assert!(
        rig.report(&op, 0, "stop").is_none(),
        "mongod was never stopped"
    );
    assert_eq!(
        rig.ids_on(0),
        (0..10).collect::<Vec<_>>(),
        "the node still serves its data"
    );
    println!("INNER OK inner_disk_evaluation");
}

#[test]
fn a_disk_that_fills_during_a_restore_without_fallback_is_a_clear_error() {
    on_a_small_disk("inner_disk_fills_during_download", "128m");
}

/// Runs only inside `on_a_small_disk`; does nothing in a normal run.
#[test]
fn inner_disk_fills_during_download() {
    let Some(tmpfs) = std::env::var_os(TMPFS_VAR).map(PathBuf::from) else {
        return;
    };
    let mut rig = Rig::new("dfl", 1, &[]);
    rig.insert(0..10);
    fill(&rig, "big", 24 << 20);
    rig.start_agent(0);
    std::thread::sleep(Duration::from_millis(800));
    rig.backup("b1", 0, Compression::Zstd);
    let needed = rig.manifest("b1").uncompressed_bytes;
    // Shrink the live data below the backup's size, then take the free space away: once
    // the restore wipes the dbPath, the backup still does not fit.
    let p = rig.primary();
    for c in ["c0", "c1"] {
        rig.rs
            .process(p)
            .unwrap()
            .command("big", doc! {"drop": c})
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(1000)); // a checkpoint removes the files
    let dbsize = du(&rig.rs.dbpath(0));
    let free = tidemark_agent::disk::disk_facts(&tmpfs)
        .unwrap()
        .available_bytes;
    let weight = (free + dbsize + (4 << 20)).saturating_sub(needed);
    assert!(
        weight + (1 << 20) < free,
        "setup: backup {needed} B, dbPath {dbsize} B, free {free} B"
    );
    ballast(&tmpfs, weight);

    let op = rig.restore_op("b1", false, &[0]);
    let r = rig.wait_final(&op, 0);
    assert_eq!(r.phase, "error", "{}", r.message);
    assert!(r.message.contains("phase fetch"), "{}", r.message);
    assert!(
        r.message.contains("no space left on the device"),
        "says the disk is full: {}",
        r.message
    );
    println!("INNER OK inner_disk_fills_during_download");
}
