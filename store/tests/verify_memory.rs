//! `verify --read-data` reads a 1 GiB file's object in bounded memory: the process's peak
//! RSS (VmHWM) grows by far less than 128 MiB while the object is downloaded, decompressed
//! and hashed. The object is written as a zstd stream from generated data (about 128 MiB
//! stored), so the test needs no 1 GiB file on disk. Alone in its binary so no other test moves the peak.

use std::io::Write;

use tidemark_schema::manifest::FileEntry;
use tidemark_schema::model::Compression;
use tidemark_store::storage::BackupStore;

const MIB: u64 = 1024 * 1024;
const FILE: u64 = 1024 * MIB;

fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .expect("VmHWM in /proc/self/status");
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_data_of_a_gibibyte_stays_under_128_mib() {
    let work = tempfile::tempdir().unwrap();
    let key = "bk1/rs0/files/collection-0-1.wt.zst";
    let object = work.path().join(key);
    std::fs::create_dir_all(object.parent().unwrap()).unwrap();
    let mut hasher = blake3::Hasher::new();
    {
        let file = std::fs::File::create(&object).unwrap();
        let mut z = zstd::stream::Encoder::new(file, 1).unwrap();
        // An eighth of each 4 KiB page is noise: the object is about 128 MiB, so the
        // download side streams a real amount too, while the disk writes stay modest.
        let mut piece = vec![0u8; MIB as usize];
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..FILE / MIB {
            for page in piece.chunks_exact_mut(4096) {
                for word in page[..512].chunks_exact_mut(8) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    word.copy_from_slice(&x.to_le_bytes());
                }
            }
            hasher.update(&piece);
            z.write_all(&piece).unwrap();
        }
        z.finish().unwrap();
    }
    let stored = std::fs::metadata(&object).unwrap().len();
    let entry = FileEntry {
        path: "collection-0-1.wt".into(),
        size: FILE,
        stored_size: stored,
        uncompressed_size: FILE,
        checksum: format!("blake3:{}", hasher.finalize().to_hex()),
        mode: 0o600,
        object: Some(key.into()),
        ranges: Vec::new(),
        blocks: Vec::new(),
    };
    let url = format!("file://{}", work.path().display());
    let store = BackupStore::from_store(
        &url,
        std::sync::Arc::new(
            object_store::local::LocalFileSystem::new_with_prefix(work.path()).unwrap(),
        ),
    );
    let before = peak_rss();
    let read = store.check_object(&entry, Compression::Zstd).await.unwrap();
    let after = peak_rss();
    eprintln!(
        "verify --read-data of {} MiB ({} MiB stored): peak RSS {} MiB before, {} MiB after",
        FILE / MIB,
        stored / MIB,
        before / MIB,
        after / MIB
    );
    assert_eq!(read, stored);
    assert!(
        after < 128 * MIB && after - before < 64 * MIB,
        "peak RSS {} MiB (grew by {} MiB) for a {} MiB file",
        after / MIB,
        (after - before) / MIB,
        FILE / MIB
    );
    // And a flipped byte in the stream is found.
    let mut bytes = std::fs::read(&object).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&object, &bytes).unwrap();
    let e = store
        .check_object(&entry, Compression::Zstd)
        .await
        .unwrap_err();
    assert!(e.to_string().contains(key), "{e}");
}
