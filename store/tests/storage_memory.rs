//! Memory stays bounded whatever the file size: a 256 MiB file goes up and comes back
//! through the streaming pipelines while the process's peak RSS (VmHWM) grows by far
//! less than the file. Alone in its binary so no other test moves the peak.

use std::io::Write;

use tidemark_schema::control::StorageTarget;
use tidemark_schema::manifest::FileEntry;
use tidemark_schema::model::Compression;
use tidemark_store::storage::BackupStore;

const MIB: u64 = 1024 * 1024;
const FILE: u64 = 256 * MIB;

/// Peak resident set size of this process, in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/self/status");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_file_streams_in_bounded_memory() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("collection-0-1.wt");
    {
        // Written in 1 MiB pieces of noise so the test itself never holds the file.
        let mut f = std::io::BufWriter::new(std::fs::File::create(&src).unwrap());
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut piece = vec![0u8; MIB as usize];
        for _ in 0..FILE / MIB {
            for word in piece.chunks_exact_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                word.copy_from_slice(&x.to_le_bytes());
            }
            f.write_all(&piece).unwrap();
        }
    }
    let store = BackupStore::open(&StorageTarget {
        url: format!("file://{}", work.path().join("backups").display()),
        compression: Compression::Zstd,
        compression_level: Some(1),
        options: Default::default(),
    })
    .unwrap();
    let before = peak_rss();
    let key = "bk1/rs0/files/collection-0-1.wt.zst";
    let stored = store
        .upload_file(&src, key, Compression::Zstd, Some(1), FILE)
        .await
        .unwrap();
    let after_upload = peak_rss();
    let entry = FileEntry {
        path: "collection-0-1.wt".into(),
        size: FILE,
        stored_size: stored.stored_size,
        uncompressed_size: stored.uncompressed_size,
        checksum: stored.checksum,
        mode: 0o600,
        object: Some(key.into()),
        ranges: Vec::new(),
        blocks: Vec::new(),
    };
    let dest = work.path().join("dbpath/collection-0-1.wt");
    store
        .download_file(&entry, Compression::Zstd, &dest)
        .await
        .unwrap();
    let after_download = peak_rss();
    eprintln!(
        "peak RSS: {} MiB before, {} MiB after upload, {} MiB after download ({} MiB file)",
        before / MIB,
        after_upload / MIB,
        after_download / MIB,
        FILE / MIB
    );
    assert_eq!(std::fs::metadata(&dest).unwrap().len(), FILE);
    assert!(
        after_download - before < 96 * MIB,
        "peak RSS grew by {} MiB for a {} MiB file",
        (after_download - before) / MIB,
        FILE / MIB
    );
}
