//! Conformance of the backup storage seam: one suite, run against every backend —
//! `file://` in a temp dir and S3 on a real moto server (wrapped directly, and opened
//! from a `StorageTarget` with a prefix) — plus the storage-down case on S3.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use tidemark_schema::control::StorageTarget;
use tidemark_schema::manifest::{FileEntry, layout};
use tidemark_schema::model::Compression;
use tidemark_store::storage::{BackupStore, PART_SIZE, RetryPolicy, StorageError, StoredObject};
use tidemark_testkit::Moto;

const CODECS: [Compression; 3] = [Compression::Zstd, Compression::Lz4, Compression::None];
const MIB: usize = 1024 * 1024;

/// Retries small enough for tests, still more than one attempt.
fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        attempts: 3,
        first_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
    }
}

fn target(url: &str, options: &[(&str, &str)]) -> StorageTarget {
    StorageTarget {
        url: url.into(),
        compression: Compression::Zstd,
        compression_level: None,
        options: options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// Deterministic bytes that do not compress (xorshift), so sizes cross multipart parts
/// whatever the codec.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Text-like bytes that do compress.
fn text(len: usize) -> Vec<u8> {
    let line = b"{ _id: ObjectId(\"65f0c0ffee\"), name: \"tidemark\", n: 42 }\n";
    line.iter().cycle().take(len).copied().collect()
}

fn write_file(path: &Path, data: &[u8], mode: u32) {
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(data).unwrap();
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .unwrap();
}

fn entry(path: &str, key: &str, stored: &StoredObject, mode: u32) -> FileEntry {
    FileEntry {
        path: path.into(),
        size: stored.uncompressed_size,
        stored_size: stored.stored_size,
        uncompressed_size: stored.uncompressed_size,
        checksum: stored.checksum.clone(),
        mode,
        object: Some(key.into()),
        ranges: Vec::new(),
        blocks: Vec::new(),
    }
}

/// The suite every backend must pass. `backend` only labels assertion messages.
async fn conformance(store: &BackupStore, backend: &str) {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let restored = work.path().join("dbpath");
    std::fs::create_dir_all(&src).unwrap();

    // Round trips: empty, small compressible, and 40 MiB of noise (several parts).
    let cases: [(&str, Vec<u8>); 3] = [
        ("empty.wt", Vec::new()),
        ("collection-7-123.wt", text(300_000)),
        ("journal/WiredTigerLog.0000000001", noise(40 * MIB, 7)),
    ];
    for codec in CODECS {
        for (rel, data) in &cases {
            let local = src.join(rel.replace('/', "_"));
            write_file(&local, data, 0o600);
            let key = layout::file_object_key("bk1", "rs0", rel, codec);
            let stored = store
                .upload_file(&local, &key, codec, None, data.len() as u64)
                .await
                .unwrap_or_else(|e| panic!("{backend} {codec:?} {rel}: {e}"));
            assert_eq!(stored.uncompressed_size, data.len() as u64);
            assert_eq!(
                stored.checksum,
                format!("blake3:{}", blake3::hash(data).to_hex())
            );
            let head = store
                .object_store()
                .head(&ObjectPath::parse(&key).unwrap())
                .await
                .unwrap();
            assert_eq!(head.size, stored.stored_size, "{backend} {codec:?} {rel}");
            if data.len() > 10 * MIB {
                assert!(
                    stored.stored_size > 2 * PART_SIZE as u64,
                    "{backend} {codec:?}: the big file must cross several parts"
                );
            }
            let dest = restored.join(format!("{codec:?}")).join(rel);
            store
                .download_file(&entry(rel, &key, &stored, 0o640), codec, &dest)
                .await
                .unwrap_or_else(|e| panic!("{backend} {codec:?} {rel}: {e}"));
            let back = std::fs::read(&dest).unwrap();
            assert!(back == *data, "{backend} {codec:?} {rel}: bytes differ");
            let mode = std::fs::metadata(&dest).unwrap().permissions().mode() & 0o7777;
            assert_eq!(mode, 0o640, "{backend} {codec:?} {rel}");
        }
    }

    // `limit` below the file size: only the listed bytes are copied (the file grows
    // under a backup cursor).
    let growing = src.join("growing.wt");
    let data = text(10_000);
    write_file(&growing, &data, 0o600);
    for codec in CODECS {
        let key = layout::file_object_key("bk1", "rs0", "growing.wt", codec);
        let stored = store
            .upload_file(&growing, &key, codec, Some(1), 6_000)
            .await
            .unwrap();
        assert_eq!(stored.uncompressed_size, 6_000);
        let dest = restored.join("limit").join(format!("{codec:?}.wt"));
        store
            .download_file(&entry("growing.wt", &key, &stored, 0o600), codec, &dest)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), &data[..6_000]);
    }

    // A file shorter than the cursor says: an error naming it, and no object.
    let key = layout::file_object_key("bk1", "rs0", "shrunk.wt", Compression::Zstd);
    let err = store
        .upload_file(&growing, &key, Compression::Zstd, None, 20_000)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::ShortFile {
                actual: 10_000,
                expected: 20_000,
                ..
            }
        ),
        "{backend}: {err:?}"
    );
    assert!(err.to_string().contains("growing.wt"), "{err}");
    assert!(!store.exists(&key).await.unwrap(), "{backend}: no object");

    // Corruption, flipped through the store itself: `Corrupt` naming key and path, and
    // no partial file.
    for codec in CODECS {
        let rel = "index-9-123.wt";
        let data = text(200_000);
        let local = src.join(format!("corrupt-{codec:?}"));
        write_file(&local, &data, 0o600);
        let key = layout::file_object_key("bk2", "rs0", rel, codec);
        let stored = store
            .upload_file(&local, &key, codec, None, data.len() as u64)
            .await
            .unwrap();
        let location = ObjectPath::parse(&key).unwrap();
        let raw = store
            .object_store()
            .get(&location)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let mut bad = raw.to_vec();
        let mid = bad.len() / 2;
        for b in &mut bad[mid..mid + 8] {
            *b ^= 0x5a;
        }
        store
            .object_store()
            .put(&location, bad.into())
            .await
            .unwrap();
        let dest = restored.join("corrupt").join(rel);
        let err = store
            .download_file(&entry(rel, &key, &stored, 0o600), codec, &dest)
            .await
            .unwrap_err();
        let StorageError::Corrupt {
            key: ref k,
            ref path,
            ..
        } = err
        else {
            panic!("{backend} {codec:?}: expected Corrupt, got {err:?}");
        };
        assert_eq!((k.as_str(), path.as_str()), (key.as_str(), rel));
        let msg = err.to_string();
        assert!(msg.contains(&key) && msg.contains(rel), "{msg}");
        assert!(!dest.exists(), "{backend} {codec:?}: partial file left");
    }

    // A manifest whose checksum does not match the (intact) data is corrupt too.
    let key = layout::file_object_key("bk1", "rs0", "growing.wt", Compression::None);
    let mut wrong = entry(
        "growing.wt",
        &key,
        &StoredObject {
            stored_size: 6_000,
            uncompressed_size: 6_000,
            checksum: format!("blake3:{}", blake3::hash(b"other").to_hex()),
            blocks: Vec::new(),
        },
        0o600,
    );
    let dest = restored.join("wrongsum.wt");
    let err = store
        .download_file(&wrong, Compression::None, &dest)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("checksum mismatch"), "{err}");
    assert!(!dest.exists());
    wrong.checksum = "md5:abc".into();
    assert!(matches!(
        store.download_file(&wrong, Compression::None, &dest).await,
        Err(StorageError::Corrupt { .. })
    ));

    // A missing object: `NotFound` naming the key, nothing written.
    let missing_key = layout::file_object_key("bk9", "rs0", "gone.wt", Compression::Zstd);
    let missing = FileEntry {
        object: Some(missing_key.clone()),
        checksum: format!("blake3:{}", blake3::hash(b"").to_hex()),
        ..wrong.clone()
    };
    let err = store
        .download_file(&missing, Compression::Zstd, &dest)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StorageError::NotFound { key, .. } if *key == missing_key),
        "{backend}: {err:?}"
    );
    assert!(err.to_string().contains(&missing_key), "{err}");
    assert!(!dest.exists());

    // JSON helpers and markers.
    let manifest_key = layout::rs_manifest_key("bk1", "rs0");
    assert_eq!(
        store
            .get_json::<serde_json::Value>(&manifest_key)
            .await
            .unwrap(),
        None
    );
    let doc = serde_json::json!({"format": 1, "files": ["a", "b"]});
    store.put_json(&manifest_key, &doc).await.unwrap();
    store.put_json(&manifest_key, &doc).await.unwrap();
    assert_eq!(
        store
            .get_json::<serde_json::Value>(&manifest_key)
            .await
            .unwrap(),
        Some(doc.clone())
    );
    assert!(store.exists(&manifest_key).await.unwrap());

    let marker = layout::backup_marker_key("bk1");
    store.put_json_create(&marker, &doc).await.unwrap();
    let err = store.put_json_create(&marker, &doc).await.unwrap_err();
    assert!(
        matches!(&err, StorageError::AlreadyExists { key, .. } if *key == marker),
        "{backend}: {err:?}"
    );
    assert!(err.to_string().contains(&marker), "{err}");

    // Removing a failed backup removes its objects and nothing else (`bk1` is not
    // `bk10`).
    store.put_json("bk10/backup.json", &doc).await.unwrap();
    let deleted = store.delete_prefix("bk1").await.unwrap();
    assert!(deleted >= 10, "{backend}: deleted {deleted}");
    assert!(!store.exists(&marker).await.unwrap());
    assert!(!store.exists(&manifest_key).await.unwrap());
    assert!(store.exists("bk10/backup.json").await.unwrap());
    assert_eq!(store.delete_prefix("bk1").await.unwrap(), 0);
    assert!(matches!(
        store.delete_prefix("").await,
        Err(StorageError::InvalidKey { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_backend_conforms() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("not/yet/there");
    let url = format!("file://{}", dir.display());
    let store = BackupStore::open(&target(&url, &[]))
        .unwrap()
        .with_retry(quick_retries());
    assert!(dir.is_dir(), "open creates the directory");
    conformance(&store, "file").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_backend_conforms() {
    let moto = Moto::start();
    let store = BackupStore::from_store("s3://plain", Arc::new(moto.store("plain")))
        .with_retry(quick_retries());
    conformance(&store, "s3").await;
}

/// Credentials for the S3 tests: from an explicit environment, never from options and
/// never from the process environment (tests run in parallel).
fn credentials(moto: &Moto) -> Vec<(&'static str, String)> {
    moto.env()
        .into_iter()
        .filter(|(k, _)| k.contains("KEY"))
        .collect()
}

fn s3_options(moto: &Moto) -> Vec<(&'static str, String)> {
    vec![
        ("endpoint", moto.endpoint()),
        ("allow_http", "true".into()),
        ("region", "us-east-1".into()),
    ]
}

fn open_s3(moto: &Moto, url: &str) -> BackupStore {
    let options = s3_options(moto);
    let options: Vec<(&str, &str)> = options.iter().map(|(k, v)| (*k, v.as_str())).collect();
    BackupStore::open_with_env(&target(url, &options), credentials(moto))
        .unwrap()
        .with_retry(quick_retries())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_opened_from_target_with_prefix_conforms() {
    let moto = Moto::start();
    moto.create_bucket("pre");
    let store = open_s3(&moto, "s3://pre/team/backups");
    conformance(&store, "s3+prefix").await;

    // Every key lands under the prefix.
    store.put_json("bk5/backup.json", &1).await.unwrap();
    let bucket = open_s3(&moto, "s3://pre");
    assert!(bucket.exists("team/backups/bk5/backup.json").await.unwrap());
    assert!(!bucket.exists("bk5/backup.json").await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_down_is_unavailable_naming_the_object() {
    let mut moto = Moto::start();
    moto.create_bucket("down");
    let store = open_s3(&moto, "s3://down/p");
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("WiredTiger.wt");
    write_file(&src, &text(50_000), 0o600);
    let key = layout::file_object_key("bk1", "rs0", "WiredTiger.wt", Compression::Zstd);
    let stored = store
        .upload_file(&src, &key, Compression::Zstd, None, 50_000)
        .await
        .unwrap();

    moto.kill();
    let bounded = Duration::from_secs(120);

    let err = tokio::time::timeout(
        bounded,
        store.upload_file(&src, &key, Compression::Zstd, None, 50_000),
    )
    .await
    .expect("upload against a dead storage must give up")
    .unwrap_err();
    assert!(
        matches!(&err, StorageError::Unavailable { key: k, attempts: 3, .. } if *k == key),
        "{err:?}"
    );
    let msg = err.to_string();
    eprintln!("storage down: {msg}");
    assert!(msg.contains(&key) && msg.contains("s3://down/p"), "{msg}");
    assert!(
        !msg.contains("secret") && !msg.contains("test:test"),
        "{msg}"
    );

    let dest = work.path().join("restore/WiredTiger.wt");
    let err = tokio::time::timeout(
        bounded,
        store.download_file(
            &entry("WiredTiger.wt", &key, &stored, 0o600),
            Compression::Zstd,
            &dest,
        ),
    )
    .await
    .expect("download against a dead storage must give up")
    .unwrap_err();
    assert!(
        matches!(&err, StorageError::Unavailable { key: k, .. } if *k == key),
        "{err:?}"
    );
    assert!(!dest.exists());

    let marker = layout::backup_marker_key("bk1");
    let err = tokio::time::timeout(bounded, store.put_json_create(&marker, &1))
        .await
        .expect("a marker write against a dead storage must give up")
        .unwrap_err();
    assert!(err.to_string().contains(&marker), "{err}");
}
