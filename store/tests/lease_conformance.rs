//! The lease, run against every control-plane backend (a local directory and a real S3
//! API on moto): one leader at a time, takeover only after a TTL without renewal, a
//! lapsed leader's writes refused before anyone takes over, a deposed one's after, and an
//! immediate handover on release.

use std::sync::Arc;
use std::time::Duration;

use tempfile::TempDir;
use tidemark_store::control::{ControlError, ControlPlane, Lease, Standing};
use tidemark_testkit::Moto;

const TTL: Duration = Duration::from_millis(600);

fn epoch(s: &Standing) -> u64 {
    match s {
        Standing::Leader { epoch } | Standing::Follower { epoch, .. } => *epoch,
    }
}

async fn conformance(control: ControlPlane) {
    let a = Lease::new(control.clone(), "host/1/a".into(), TTL);
    let b = Lease::new(control.clone(), "host/2/b".into(), TTL);
    assert_eq!(a.tick().await.unwrap(), Standing::Leader { epoch: 1 });
    let s = b.tick().await.unwrap();
    assert!(
        matches!(&s, Standing::Follower { holder, .. } if holder == "host/1/a"),
        "{s:?}"
    );
    assert!(a.valid_until().lock().unwrap().is_some());
    assert!(b.valid_until().lock().unwrap().is_none());

    // A's writes go through while its renewal is fresh.
    let writer = control.fenced_until(1, a.valid_until());
    writer.put("ledger/probe.json", &1).await.unwrap();
    // A renews for longer than a TTL: B never takes over meanwhile.
    for _ in 0..6 {
        tokio::time::sleep(TTL / 3).await;
        assert_eq!(a.tick().await.unwrap(), Standing::Leader { epoch: 1 });
        assert!(matches!(b.tick().await.unwrap(), Standing::Follower { .. }));
    }
    writer.put("ledger/probe.json", &2).await.unwrap();

    // A stalls: two thirds of a TTL later its writes are refused, before B can lead.
    tokio::time::sleep(TTL * 2 / 3 + Duration::from_millis(50)).await;
    let e = writer.put("ledger/probe.json", &3).await.unwrap_err();
    assert!(
        matches!(e, ControlError::LeaseLapsed { epoch: 1, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("ledger/probe.json"), "{e}");
    assert!(
        !control
            .exists(&tidemark_schema::control::lease_key(2))
            .await
            .unwrap()
    );

    // B takes over once it has seen no renewal for a whole TTL.
    let mut standing = b.tick().await.unwrap();
    let deadline = std::time::Instant::now() + TTL * 3;
    while matches!(standing, Standing::Follower { .. }) {
        assert!(
            std::time::Instant::now() < deadline,
            "B took over: {standing:?}"
        );
        tokio::time::sleep(TTL / 6).await;
        standing = b.tick().await.unwrap();
    }
    assert_eq!(standing, Standing::Leader { epoch: 2 });
    // A, deposed: plain fenced writes are refused too, and its next tick follows B.
    let e = control
        .fenced(1)
        .put("ledger/probe.json", &4)
        .await
        .unwrap_err();
    assert!(matches!(e, ControlError::Deposed { epoch: 1, .. }), "{e}");
    let s = a.tick().await.unwrap();
    assert!(
        matches!(&s, Standing::Follower { holder, .. } if holder == "host/2/b"),
        "{s:?}"
    );
    assert_eq!(epoch(&s), 2);
    assert!(a.valid_until().lock().unwrap().is_none());
    let stored: i32 = control.get("ledger/probe.json").await.unwrap().unwrap();
    assert_eq!(stored, 2, "no refused write landed");

    // A clean stop hands over at once, without a TTL's wait.
    b.release().await.unwrap();
    assert_eq!(a.tick().await.unwrap(), Standing::Leader { epoch: 3 });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_on_a_local_directory() {
    let dir = TempDir::new().unwrap();
    conformance(ControlPlane::open_writable(dir.path().to_str().unwrap()).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_on_s3() {
    let moto = Moto::start();
    conformance(ControlPlane::from_store(
        "s3://lease",
        Arc::new(moto.store("lease")),
    ))
    .await;
}
