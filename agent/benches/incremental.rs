//! Benchmark of incremental backups against full ones, measured in the same run on the
//! same data: the machine is noisy, so only ratios mean something. Prints `name: value`
//! lines, each the median of the rounds with its min–max beside it.
//!
//! `cargo bench -p tidemark-agent --bench incremental` (env `TIDEMARK_BENCH_GIB`, default
//! 1; `TIDEMARK_BENCH_LINKS`, default 10; `TIDEMARK_BENCH_BLOCK_MB`, default 1;
//! `TIDEMARK_BENCH_ROUNDS`, default 5, the restore pairs).
//!
//! A one-member mongod-sim replica set holds `GIB` of 1 MiB documents, half random and
//! half repeated (like WiredTiger pages). The agent's own backup pipeline
//! (`tidemark_agent::backup::run`, to `file://` storage) takes an incremental base; then,
//! `LINKS` times, 1 % of the documents (a contiguous run, in place) are rewritten, the node
//! checkpoints, and an increment and a full physical backup of the same data are taken
//! one after the other. Each round gives `incremental_bytes_vs_full_ratio` (stored bytes;
//! target ≤ 0.03) and `incremental_seconds_vs_full_ratio` (target ≤ 0.1). Then the last
//! increment (a chain of `LINKS` increments on its base) and the last full backup are each
//! restored by the agent's restore data path (`restore::fetch`: download, rebuild, verify)
//! into an empty directory, `ROUNDS` times, each first in turn: `chain10_restore_vs_full_ratio`
//! (target ≤ 1.3). The rebuilt collection file must equal the full backup's, byte for byte.

use std::path::Path;
use std::time::{Duration, Instant};

use bson::doc;
use mongod_sim::harness::ReplicaSet;
use tidemark_agent::config::AgentConfig;
use tidemark_agent::node::Node;
use tidemark_agent::storage::BackupStore;
use tidemark_schema::control::{IncrementalBackup, Op, OpCommand, OpTarget, StorageTarget};
use tidemark_schema::manifest::{ReplicaSetManifest, layout};
use tidemark_schema::model::{BackupType, Compression};
use tidemark_store::control::ControlPlane;
use tidemark_testkit::{env_or, spread};

const DOC: usize = 1 << 20;

/// Document `id` at generation `g`: half random, half repeated.
fn payload(id: u64, g: u64) -> Vec<u8> {
    let seed = 0x2545_f491_4f6c_dd1du64 ^ id.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (g << 32);
    tidemark_testkit::half_random(seed, DOC)
}

fn bin(bytes: Vec<u8>) -> bson::Binary {
    bson::Binary {
        subtype: bson::spec::BinarySubtype::Generic,
        bytes,
    }
}

fn command(rs: &ReplicaSet, db: &str, cmd: bson::Document) -> bson::Document {
    let r = rs.process(0).unwrap().command(db, cmd.clone()).unwrap();
    assert_eq!(r.get_f64("ok").unwrap_or(0.0), 1.0, "{cmd}: {r}");
    r
}

fn write_docs(rs: &ReplicaSet, ids: std::ops::Range<u64>, g: u64) {
    for id in ids {
        let d = doc! {"_id": id as i64, "g": g as i64, "p": bin(payload(id, g))};
        if g == 0 {
            command(rs, "big", doc! {"insert": "docs", "documents": [d]});
        } else {
            command(
                rs,
                "big",
                doc! {"update": "docs", "updates": [{"q": {"_id": id as i64}, "u": d}]},
            );
        }
    }
    // A checkpoint: the changes reach the data files, where block tracking sees them.
    command(rs, "admin", doc! {"fsync": 1});
}

fn node(rs: &ReplicaSet, control: &Path, dbpath: &Path) -> Node {
    let cfg = AgentConfig {
        control: control.display().to_string(),
        cluster: "bench".into(),
        mongod_uri: format!("mongodb://{}/?directConnection=true", rs.host(0)),
        dbpath: dbpath.to_path_buf(),
        mongod_bin: "mongod-sim".into(),
        node_id: Some(rs.host(0)),
        replica_set: Some(rs.name.clone()),
        heartbeat_interval: Duration::from_secs(1),
        poll_interval: Duration::from_secs(1),
        resync_interval: Duration::from_secs(600),
        parallel_files: 4,
        cursor_keepalive: Duration::from_secs(5),
        standalone_args: Vec::new(),
        mongod_timeout: Duration::from_secs(30),
        drill_dir: None,
        trust: tidemark_agent::trust::TrustSetting::AcceptUnsigned,
    };
    Node {
        control: ControlPlane::open_writable(&cfg.control).unwrap(),
        cluster: cfg.cluster.clone(),
        replica_set: rs.name.clone(),
        id: rs.host(0),
        cfg,
        epochs: Default::default(),
        slicing: Default::default(),
        doorbell: Default::default(),
        working: Default::default(),
        trust: std::sync::Arc::new(tidemark_agent::trust::Trust::accept_unsigned()),
    }
}

fn storage(root: &Path) -> StorageTarget {
    StorageTarget {
        url: format!("file://{}", root.display()),
        compression: Compression::Zstd,
        compression_level: None,
        options: Default::default(),
    }
}

fn op(n: &Node, name: &str, target: &StorageTarget, inc: Option<IncrementalBackup>) -> Op {
    Op {
        id: format!("bench-{name}"),
        created_at: chrono::Utc::now(),
        cluster: n.cluster.clone(),
        targets: vec![OpTarget {
            replica_set: n.replica_set.clone(),
            node: n.id.clone(),
        }],
        command: OpCommand::Backup {
            backup: name.into(),
            storage: target.clone(),
            backup_type: if inc.is_some() {
                BackupType::Incremental
            } else {
                BackupType::Physical
            },
            extend_to: None,
            snapshot_command: None,
            hash_namespaces: Vec::new(),
            barrier: false,
            incremental: inc,
        },
        deadline: None,
        epoch: None,
        cause: None,
    }
}

/// Runs the agent's backup pipeline; returns its seconds and the manifest.
async fn backup(
    n: &Node,
    target: &StorageTarget,
    name: &str,
    inc: Option<IncrementalBackup>,
) -> (f64, ReplicaSetManifest) {
    let op = op(n, name, target, inc);
    let started = Instant::now();
    tidemark_agent::backup::run(n, &op)
        .await
        .unwrap_or_else(|f| panic!("backup {name}: {}", f.error));
    let secs = started.elapsed().as_secs_f64();
    let root = target.url.trim_start_matches("file://");
    let key = layout::rs_manifest_key(name, &n.replica_set);
    let m =
        ReplicaSetManifest::from_json(&std::fs::read(Path::new(root).join(key)).unwrap()).unwrap();
    (secs, m)
}

/// Restores `name` (its whole chain) into an empty `dest` with the agent's restore data
/// path; returns the seconds.
async fn restore(n: &Node, target: &StorageTarget, name: &str, dest: &Path) -> f64 {
    let _ = std::fs::remove_dir_all(dest);
    std::fs::create_dir_all(dest).unwrap();
    let scratch = Node {
        cfg: AgentConfig {
            dbpath: dest.to_path_buf(),
            ..n.cfg.clone()
        },
        control: n.control.clone(),
        cluster: n.cluster.clone(),
        replica_set: n.replica_set.clone(),
        id: n.id.clone(),
        epochs: Default::default(),
        slicing: Default::default(),
        doorbell: Default::default(),
        working: Default::default(),
        trust: n.trust.clone(),
    };
    let store = BackupStore::open(target).unwrap();
    let op = op(n, &format!("restore-{name}"), target, None);
    let started = Instant::now();
    let key = layout::rs_manifest_key(name, &n.replica_set);
    let root = target.url.trim_start_matches("file://");
    let newest =
        ReplicaSetManifest::from_json(&std::fs::read(Path::new(root).join(key)).unwrap()).unwrap();
    let links = tidemark_agent::restore::chain::links(&store, newest, false)
        .await
        .unwrap();
    tidemark_agent::restore::fetch::fetch(&scratch, &op, &store, &links)
        .await
        .unwrap_or_else(|f| panic!("restore {name}: {}", f.error));
    started.elapsed().as_secs_f64()
}

fn collection_file(m: &ReplicaSetManifest) -> String {
    m.files
        .iter()
        .filter(|f| f.path.starts_with("collection-"))
        .max_by_key(|f| f.size)
        .map(|f| f.path.clone())
        .expect("a collection file")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    tidemark_testkit::build_release_sim();
    let gib = env_or("TIDEMARK_BENCH_GIB", 1);
    let links = env_or("TIDEMARK_BENCH_LINKS", 10);
    let block_mb = env_or("TIDEMARK_BENCH_BLOCK_MB", 1) as u32;
    let docs = gib * 1024;
    let rs = ReplicaSet::start("bench", 1).expect("a one-member replica set");
    let work = tempfile::TempDir::new().unwrap();
    let target = storage(&work.path().join("storage"));
    std::fs::create_dir_all(work.path().join("storage")).unwrap();
    let n = node(&rs, &work.path().join("control"), &rs.dbpath(0));
    let filled = Instant::now();
    write_docs(&rs, 0..docs, 0);
    println!(
        "# {gib} GiB in {docs} documents written in {:.1} s; blocks of {block_mb} MB",
        filled.elapsed().as_secs_f64()
    );
    let (base_s, _) = backup(
        &n,
        &target,
        "base",
        Some(IncrementalBackup {
            base: "base".into(),
            source: None,
            block_size_mb: block_mb,
        }),
    )
    .await;
    println!("# base taken in {base_s:.2} s");
    let mut bytes_ratio = Vec::new();
    let mut secs_ratio = Vec::new();
    let mut previous = "base".to_string();
    let per = (docs / 100).max(1);
    for k in 1..=links {
        let from = (k * 7919 * per) % (docs - per);
        write_docs(&rs, from..from + per, k);
        let name = format!("inc{k}");
        let (inc_s, inc) = backup(
            &n,
            &target,
            &name,
            Some(IncrementalBackup {
                base: "base".into(),
                source: Some(previous.clone()),
                block_size_mb: block_mb,
            }),
        )
        .await;
        let full_name = format!("full{k}");
        let (full_s, full) = backup(&n, &target, &full_name, None).await;
        bytes_ratio.push(inc.stored_bytes as f64 / full.stored_bytes as f64);
        secs_ratio.push(inc_s / full_s);
        println!(
            "# link {k}: increment {} B stored in {inc_s:.2} s, full {} B in {full_s:.2} s",
            inc.stored_bytes, full.stored_bytes
        );
        if k < links {
            let _ = std::fs::remove_dir_all(work.path().join("storage").join(&full_name));
        }
        previous = name;
    }
    let last_full = format!("full{links}");
    let mut restore_ratio = Vec::new();
    let (chain_dir, full_dir) = (work.path().join("r-chain"), work.path().join("r-full"));
    for round in 0..env_or("TIDEMARK_BENCH_ROUNDS", 5) {
        // Alternately first, so the page cache favours neither.
        let (chain_s, full_s) = if round % 2 == 0 {
            let c = restore(&n, &target, &previous, &chain_dir).await;
            (c, restore(&n, &target, &last_full, &full_dir).await)
        } else {
            let f = restore(&n, &target, &last_full, &full_dir).await;
            (restore(&n, &target, &previous, &chain_dir).await, f)
        };
        restore_ratio.push(chain_s / full_s);
        println!("# restore: chain of {links} in {chain_s:.2} s, full in {full_s:.2} s");
    }
    let m = ReplicaSetManifest::from_json(
        &std::fs::read(
            work.path()
                .join("storage")
                .join(layout::rs_manifest_key(&last_full, &rs.name)),
        )
        .unwrap(),
    )
    .unwrap();
    let file = collection_file(&m);
    let same = std::fs::read(chain_dir.join(&file)).unwrap()
        == std::fs::read(full_dir.join(&file)).unwrap();
    assert!(
        same,
        "{file} rebuilt from the chain differs from the full backup's"
    );
    println!("incremental_bytes_vs_full_ratio: {}", spread(&bytes_ratio));
    println!("incremental_seconds_vs_full_ratio: {}", spread(&secs_ratio));
    println!(
        "chain{links}_restore_vs_full_ratio: {}",
        spread(&restore_ratio)
    );
}
