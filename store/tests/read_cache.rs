//! A reconciler's repeated listings read only what changed: a record whose listing shows
//! the version read before comes from memory. Alone in its binary, as the request counts
//! are the process's.

use tempfile::TempDir;
use tidemark_store::control::{ControlPlane, RequestKind, control_requests};

#[tokio::test]
async fn a_second_listing_reads_only_the_records_that_changed() {
    let dir = TempDir::new().unwrap();
    let writer = ControlPlane::open_writable(dir.path().to_str().unwrap()).unwrap();
    for (k, v) in [("a", 1), ("b", 2), ("c", 3)] {
        writer.put(&format!("things/{k}.json"), &v).await.unwrap();
    }
    let reader = ControlPlane::open(dir.path().to_str().unwrap())
        .unwrap()
        .with_read_cache();
    let gets = || control_requests().get(RequestKind::Get);

    let before = gets();
    assert_eq!(reader.all::<i32>("things").await.unwrap(), [1, 2, 3]);
    assert_eq!(gets() - before, 3, "the first listing reads every record");

    let before = gets();
    assert_eq!(reader.all::<i32>("things").await.unwrap(), [1, 2, 3]);
    assert_eq!(gets() - before, 0, "nothing changed: nothing read");

    // Rewritten with the same size: the version (inode, time, size) still tells.
    writer.put("things/b.json", &7).await.unwrap();
    writer.delete("things/c.json").await.unwrap();
    let before = gets();
    assert_eq!(reader.all::<i32>("things").await.unwrap(), [1, 7]);
    assert_eq!(gets() - before, 1, "only the rewritten record is read");

    // A reader without the cache reads every record each time.
    let plain = ControlPlane::open(dir.path().to_str().unwrap()).unwrap();
    let before = gets();
    plain.all::<i32>("things").await.unwrap();
    assert_eq!(gets() - before, 2);
}
