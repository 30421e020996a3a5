//! `DiskFull` on a really full filesystem. The outer test re-runs this test binary inside
//! a private user + mount namespace (`unshare -rm`), where a 2 MiB tmpfs is mounted over
//! a temp dir, and the inner test restores a 4 MiB file into it. Hosts that refuse user
//! namespaces skip the test with a message.

use std::io::Write;
use std::process::Command;

use tidemark_schema::control::StorageTarget;
use tidemark_schema::manifest::FileEntry;
use tidemark_schema::model::Compression;
use tidemark_store::storage::{BackupStore, StorageError};

/// Set (to the tmpfs mount point) only in the re-executed inner run.
const FULL_DIR_VAR: &str = "TIDEMARK_TEST_FULL_DIR";
const MARKER: &str = "disk-full-check-passed";

#[test]
fn restore_onto_a_full_disk_is_disk_full() {
    let probe = Command::new("unshare").args(["-rm", "true"]).status();
    if !matches!(probe, Ok(s) if s.success()) {
        eprintln!("skipped: this host cannot create a user + mount namespace (unshare -rm)");
        return;
    }
    let mount_point = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("unshare")
        .args([
            "-rm",
            "sh",
            "-c",
            r#"mount -t tmpfs -o size=2m tmpfs "$0" && exec "$1" --exact inner_restore_onto_tmpfs --nocapture --test-threads=1"#,
        ])
        .arg(mount_point.path())
        .arg(&exe)
        .env(FULL_DIR_VAR, mount_point.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains(MARKER),
        "inner run failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
}

/// Does nothing unless run by the test above, inside the namespace.
#[test]
fn inner_restore_onto_tmpfs() {
    let Some(full) = std::env::var_os(FULL_DIR_VAR) else {
        return;
    };
    let full = std::path::PathBuf::from(full);
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let storage = tempfile::tempdir().unwrap();
        let store = BackupStore::open(&StorageTarget {
            url: format!("file://{}", storage.path().join("backups").display()),
            compression: Compression::Zstd,
            compression_level: None,
            options: Default::default(),
        })
        .unwrap();
        let src = storage.path().join("collection-1-1.wt");
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let data: Vec<u8> = (0..4 * 1024 * 1024 / 8)
            .flat_map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()
            })
            .collect();
        std::fs::File::create(&src)
            .unwrap()
            .write_all(&data)
            .unwrap();
        let key = "bk1/rs0/files/collection-1-1.wt.zst";
        let stored = store
            .upload_file(&src, key, Compression::Zstd, None, data.len() as u64)
            .await
            .unwrap();
        let entry = FileEntry {
            path: "collection-1-1.wt".into(),
            size: stored.uncompressed_size,
            stored_size: stored.stored_size,
            uncompressed_size: stored.uncompressed_size,
            checksum: stored.checksum,
            mode: 0o600,
            object: Some(key.into()),
            ranges: Vec::new(),
            blocks: Vec::new(),
        };
        let dest = full.join("db/collection-1-1.wt");
        let err = store
            .download_file(&entry, Compression::Zstd, &dest)
            .await
            .unwrap_err();
        let StorageError::DiskFull {
            ref path,
            written,
            expected,
            ..
        } = err
        else {
            panic!("expected DiskFull, got {err:?}");
        };
        assert_eq!(path, &dest);
        assert_eq!(expected, data.len() as u64);
        assert!(written > 0 && written < expected, "{written}");
        let msg = err.to_string();
        assert!(
            msg.contains("no space left") && msg.contains("collection-1-1.wt"),
            "{msg}"
        );
        assert!(!dest.exists(), "the partial file must be removed");
        println!("{MARKER}: {msg}");
    });
}
