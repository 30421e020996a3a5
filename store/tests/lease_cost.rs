//! What the lease costs at rest: a holder renews with one write per tick, and lists the
//! epochs only every few ticks. Alone in its binary, as the request counts are the
//! process's.

use std::time::Duration;

use tempfile::TempDir;
use tidemark_store::control::{ControlPlane, Lease, RequestKind, Standing, control_requests};

#[tokio::test]
async fn a_holder_renews_with_one_write_per_tick() {
    let dir = TempDir::new().unwrap();
    let control = ControlPlane::open_writable(dir.path().to_str().unwrap()).unwrap();
    let lease = Lease::new(control, "host/1/a".into(), Duration::from_secs(30));
    assert_eq!(lease.tick().await.unwrap(), Standing::Leader { epoch: 1 });
    let count = |k| control_requests().get(k);
    let before: Vec<u64> = RequestKind::ALL.iter().map(|k| count(*k)).collect();
    for _ in 0..16 {
        assert_eq!(lease.tick().await.unwrap(), Standing::Leader { epoch: 1 });
    }
    let spent: Vec<(&str, u64)> = RequestKind::ALL
        .iter()
        .zip(before)
        .map(|(k, b)| (k.as_str(), count(*k) - b))
        .collect();
    assert_eq!(
        spent,
        [
            ("list", 2),
            ("get", 0),
            ("put", 16),
            ("head", 0),
            ("delete", 0)
        ]
    );
}
