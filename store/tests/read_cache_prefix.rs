//! The read cache's eviction by listing prefix works on whole path segments. Alone in its
//! binary, as the request counts are the process's.

use tempfile::TempDir;
use tidemark_store::control::{ControlPlane, RequestKind, control_requests};

/// Listing `agents/c1` keeps what was read under `agents/c10`: prefixes are whole path
/// segments, so two clusters whose names share a beginning do not evict each other.
#[tokio::test]
async fn a_listing_keeps_what_a_sibling_prefix_cached() {
    let dir = TempDir::new().unwrap();
    let writer = ControlPlane::open_writable(dir.path().to_str().unwrap()).unwrap();
    writer.put("agents/c1/a.json", &1).await.unwrap();
    writer.put("agents/c10/b.json", &2).await.unwrap();
    let reader = ControlPlane::open(dir.path().to_str().unwrap())
        .unwrap()
        .with_read_cache();
    let gets = || control_requests().get(RequestKind::Get);
    assert_eq!(reader.all::<i32>("agents/c10").await.unwrap(), [2]);
    assert_eq!(reader.all::<i32>("agents/c1").await.unwrap(), [1]);
    let before = gets();
    assert_eq!(reader.all::<i32>("agents/c10").await.unwrap(), [2]);
    assert_eq!(gets() - before, 0, "c10's record stayed cached");
}
