//! Benchmark of `verify --read-data` against the disk's cold read rate, measured in the
//! same run: the machine is noisy, so only the ratio means something. Prints `name:
//! value` lines, each the median of the rounds with its min–max beside it.
//!
//! `cargo bench -p tidemark-store --bench verify` (env `TIDEMARK_BENCH_GIB`, default 1;
//! `TIDEMARK_BENCH_ROUNDS`, default 5).
//!
//! The backup: 64 zstd objects of a half-compressible 16 MiB file each (1 GiB in all, as
//! WiredTiger pages compress), with a real manifest and completion marker in a `file://`
//! storage. Each round drops the page cache, reads every object with the verifier's
//! parallelism (the disk's cold read rate), drops it again and runs the whole `data`
//! verification (read, decompress, blake3). `verify_read_data_vs_disk_read_ratio` is the
//! fraction of the disk's read rate the verification reaches (1.0 = the disk's limit).
//! Each round also drops the cache once more and times the `zstd` CLI decompressing every
//! object on every core: `verify_read_data_vs_zstd_cli_ratio` says how near the CPU's
//! limit the verification is (it hashes as well, so 1.0 is out of reach).
//! Without the right to drop the page cache (not root) both reads are warm, and it says so.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Instant;

use tidemark_testkit::spread;

use tidemark_schema::control::{BackupMarker, BackupReplicaSet, StorageTarget};
use tidemark_schema::manifest::{FileEntry, MANIFEST_FORMAT, ReplicaSetManifest, layout};
use tidemark_schema::model::{BackupType, Compression};
use tidemark_store::storage::BackupStore;
use tidemark_store::verify::{Level, verify_backup};

const FILES: usize = 64;
const PARALLEL: usize = 4;

/// Drops the page cache so the next read comes from the disk; false when not allowed.
fn drop_caches() -> bool {
    nix::unistd::sync();
    std::fs::write("/proc/sys/vm/drop_caches", "1").is_ok()
}

/// One object: `size` bytes, every other 8 bytes random, zstd-compressed as the agent
/// stores it; returns its manifest entry.
fn make_object(root: &Path, i: usize, size: u64) -> FileEntry {
    let path = format!("collection-{i}-bench.wt");
    let key = layout::file_object_key("bench", "rs0", &path, Compression::Zstd);
    let file = root.join(&key);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let mut z = zstd::stream::Encoder::new(std::fs::File::create(&file).unwrap(), 3).unwrap();
    let mut hasher = blake3::Hasher::new();
    let mut x = 0x2545_f491_4f6c_dd1du64 ^ i as u64;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..size >> 20 {
        for (j, chunk) in block.chunks_mut(8).enumerate() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&if j % 2 == 0 {
                x.to_le_bytes()
            } else {
                *b"WTPAGE00"
            });
        }
        hasher.update(&block);
        z.write_all(&block).unwrap();
    }
    z.finish().unwrap().sync_all().unwrap();
    FileEntry {
        path,
        size,
        stored_size: std::fs::metadata(&file).unwrap().len(),
        uncompressed_size: size,
        checksum: format!("blake3:{}", hasher.finalize().to_hex()),
        mode: 0o600,
        object: Some(key),
        ranges: Vec::new(),
        blocks: Vec::new(),
    }
}

/// Reads every object with `PARALLEL` threads, as fast as the disk gives them.
fn read_all(root: &Path, entries: &[FileEntry]) -> u64 {
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let total = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..PARALLEL {
            s.spawn(|| {
                let mut buf = vec![0u8; 1 << 20];
                while let Some(e) = entries.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let mut f = std::fs::File::open(root.join(e.object.as_ref().unwrap())).unwrap();
                    loop {
                        let n = f.read(&mut buf).unwrap();
                        if n == 0 {
                            break;
                        }
                        total.fetch_add(n as u64, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    total.into_inner()
}

/// The `zstd` CLI decompressing every object to /dev/null, one process per core, each
/// over its share of the objects: the CPU's own limit for the decompression alone (the
/// verifier also hashes). `None` without a `zstd` on PATH.
fn zstd_cli(root: &Path, entries: &[FileEntry]) -> Option<f64> {
    let procs = std::thread::available_parallelism().map_or(2, |n| n.get());
    let t = Instant::now();
    let children: Vec<_> = (0..procs)
        .map(|p| {
            let files: Vec<_> = entries
                .iter()
                .skip(p)
                .step_by(procs)
                .map(|e| root.join(e.object.as_ref().unwrap()))
                .collect();
            std::process::Command::new("zstd")
                .args(["-d", "-c", "-q"])
                .args(&files)
                .stdout(std::process::Stdio::null())
                .spawn()
        })
        .collect::<Result<_, _>>()
        .ok()?;
    for mut c in children {
        if !c.wait().ok()?.success() {
            return None;
        }
    }
    Some(t.elapsed().as_secs_f64())
}

fn main() {
    let gib: u64 = std::env::var("TIDEMARK_BENCH_GIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let rounds: usize = std::env::var("TIDEMARK_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let work = match std::env::var_os("TIDEMARK_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")),
    }
    .unwrap();
    let root = work.path();
    let per_file = (gib << 30) / FILES as u64;
    let entries: Vec<FileEntry> = (0..FILES).map(|i| make_object(root, i, per_file)).collect();
    let stored: u64 = entries.iter().map(|e| e.stored_size).sum();
    let uncompressed: u64 = entries.iter().map(|e| e.uncompressed_size).sum();
    let store = BackupStore::open(&StorageTarget {
        url: format!("file://{}", root.display()),
        compression: Compression::Zstd,
        compression_level: None,
        options: Default::default(),
    })
    .unwrap();
    let manifest = ReplicaSetManifest {
        format: MANIFEST_FORMAT,
        backup: "bench".into(),
        cluster: "c1".into(),
        replica_set: "rs0".into(),
        node: "db1:27017".into(),
        cluster_role: None,
        backup_type: BackupType::Physical,
        compression: Compression::Zstd,
        started_at: chrono::Utc::now(),
        finished_at: chrono::Utc::now(),
        backup_id: "bench".into(),
        checkpoint_timestamp: Default::default(),
        last_write: Default::default(),
        mongod_version: "7.0.14".into(),
        flavor: "psmdb".into(),
        storage_options: Default::default(),
        collections: Default::default(),
        encryption: None,
        encryption_recorded: false,
        files: entries.clone(),
        uncompressed_bytes: uncompressed,
        stored_bytes: stored,
        collection_hashes: Default::default(),
        unstable_hashes: Vec::new(),
        incremental: None,
    };
    let marker = BackupMarker {
        backup: "bench".into(),
        cluster: "c1".into(),
        op_id: "bench".into(),
        completed_at: chrono::Utc::now(),
        replica_sets: vec![BackupReplicaSet {
            name: "rs0".into(),
            node: "db1:27017".into(),
            mongod_version: "7.0.14".into(),
            uncompressed_bytes: uncompressed,
            stored_bytes: stored,
            encryption: None,
            encryption_recorded: false,
            storage_options: Default::default(),
            collections: Default::default(),
            last_write_optime: None,
        }],
        cluster_time: None,
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        store
            .put_json(&layout::rs_manifest_key("bench", "rs0"), &manifest)
            .await
            .unwrap();
        store
            .put_json(&layout::backup_marker_key("bench"), &marker)
            .await
            .unwrap();
    });
    let mut cold = true;
    let (mut disk, mut verify, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    let (mut zstd, mut zstd_ratio) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        cold &= drop_caches();
        let t = Instant::now();
        assert_eq!(read_all(root, &entries), stored);
        let d = t.elapsed().as_secs_f64();
        cold &= drop_caches();
        let t = Instant::now();
        let v = rt
            .block_on(verify_backup(&store, "bench", Level::Data, &|_| {}))
            .unwrap();
        let s = t.elapsed().as_secs_f64();
        assert!(v.ok(), "{:?}", v.problems);
        assert_eq!(v.bytes_read, stored);
        disk.push(d);
        verify.push(s);
        ratio.push(d / s);
        cold &= drop_caches();
        if let Some(z) = zstd_cli(root, &entries) {
            zstd.push(z);
            zstd_ratio.push(z / s);
        }
    }
    println!(
        "verify_gib_uncompressed: {:.2}",
        uncompressed as f64 / (1u64 << 30) as f64
    );
    println!(
        "verify_stored_mib: {:.0}",
        stored as f64 / (1u64 << 20) as f64
    );
    println!("page_cache_dropped: {cold}");
    println!("disk_cold_read_seconds: {}", spread(&disk));
    println!("verify_read_data_seconds: {}", spread(&verify));
    println!("verify_read_data_vs_disk_read_ratio: {}", spread(&ratio));
    if zstd.is_empty() {
        println!("zstd_cli: not on PATH, no CPU baseline");
    } else {
        // 1.0: as fast as the zstd CLI only decompressing, on every core; the verifier
        // hashes every byte too, so this is the share of the CPU limit it reaches.
        println!("zstd_cli_decompress_seconds: {}", spread(&zstd));
        println!(
            "verify_read_data_vs_zstd_cli_ratio: {}",
            spread(&zstd_ratio)
        );
    }
}
