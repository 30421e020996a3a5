//! The oplog-chunk index as readers see it: a record that does not parse is skipped and
//! named, the others are read; a one-shot reader starts from the leader's summary and
//! still drops what the summary lists but the index no longer holds.

use tempfile::TempDir;
use tidemark_schema::control::{ChunkIndex, ChunkRecord, chunk_index_key, chunk_key};
use tidemark_schema::manifest::OpTime;
use tidemark_schema::model::Compression;
use tidemark_store::control::{ChunkCache, ControlPlane};

fn record(after: Option<u32>, first: u32, last: u32) -> ChunkRecord {
    let t = |s| OpTime { t: s, i: 1 };
    ChunkRecord {
        cluster: "c".into(),
        storage: "s".into(),
        replica_set: "rs".into(),
        after: after.map(t),
        first: t(first),
        last: t(last),
        entries: 2,
        object: format!("_pitr/c/rs/{first}-{last}.x.oplog"),
        stored_bytes: 10,
        raw_bytes: 20,
        checksum: "00".into(),
        compression: Compression::Zstd,
        node: "n:1".into(),
        written_at: chrono::Utc::now(),
        gap: None,
    }
}

#[tokio::test]
async fn a_corrupt_record_is_named_and_skipped_and_a_stale_summary_is_corrected() {
    let dir = TempDir::new().unwrap();
    let control = ControlPlane::open_writable(dir.path().to_str().unwrap()).unwrap();
    let (a, b) = (record(None, 100, 200), record(Some(200), 200, 300));
    for r in [&a, &b] {
        control.create(&r.key(), r).await.unwrap();
    }
    let broken = chunk_key("c", "s", "rs", Some(OpTime { t: 300, i: 1 }));
    std::fs::write(dir.path().join(&broken), b"{ not json").unwrap();
    let (records, warnings) = ChunkCache::for_one_shot().read(&control).await.unwrap();
    assert_eq!(records.len(), 2, "{records:?}");
    assert!(
        warnings.iter().any(|w| w.contains(&broken)),
        "the corrupt record is named: {warnings:?}"
    );
    // A summary still listing `a`, deleted since: the reader drops it.
    let index = ChunkIndex {
        records: vec![a.clone(), b.clone()],
    };
    control
        .put(&chunk_index_key("c", "s", "rs"), &index)
        .await
        .unwrap();
    control.delete(&a.key()).await.unwrap();
    let (records, _) = ChunkCache::for_one_shot().read(&control).await.unwrap();
    assert_eq!(records, vec![b], "only what the index holds");
}
