//! Partitions of the fleet, run against every control-plane backend (a local directory
//! and a real S3 API on moto): one reconciler alone leads every partition; three share
//! them, each partition led by exactly one at every moment; one that stops ticking (as a
//! `kill -9` leaves it) loses its partitions to the others within the lease time; a
//! reconciler that disagrees on the partition count is refused; a partition's fence
//! refuses a deposed leader's writes without touching the other partitions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tidemark_store::control::{ControlError, ControlPlane, Leadership};
use tidemark_testkit::Moto;

const TTL: Duration = Duration::from_millis(900);
const PARTITIONS: u32 = 12;

fn leaders(all: &[&Leadership], p: u32) -> Vec<String> {
    all.iter()
        .filter(|l| l.leading(p).is_some())
        .map(|l| l.holder().to_string())
        .collect()
}

/// Ticks every member of `all` once, then checks that no partition has two leaders.
async fn round(all: &[&Leadership]) {
    for l in all {
        l.tick().await;
    }
    for p in 0..PARTITIONS {
        let who = leaders(all, p);
        assert!(who.len() <= 1, "partition {p} led by {who:?}");
    }
}

/// Rounds every third of the TTL until `done` holds, for at most `within`.
async fn until(
    all: &[&Leadership],
    what: &str,
    within: Duration,
    done: impl Fn(&[&Leadership]) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        round(all).await;
        if done(all) {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(TTL / 3).await;
    }
}

fn every_partition_led(all: &[&Leadership]) -> bool {
    (0..PARTITIONS).all(|p| leaders(all, p).len() == 1)
}

async fn conformance(control: ControlPlane) {
    // Alone, one reconciler leads every partition.
    let solo = Leadership::new(&control, "solo", TTL, 4, None, true);
    solo.tick().await;
    assert_eq!(solo.led(), [0, 1, 2, 3]);
    solo.release_all().await;

    let a = Leadership::new(&control, "host/1/a", TTL, PARTITIONS, None, true);
    let b = Leadership::new(&control, "host/2/b", TTL, PARTITIONS, None, true);
    let c = Leadership::new(&control, "host/3/c", TTL, PARTITIONS, None, true);
    let all = [&a, &b, &c];
    // Each of the three ends up leading some partitions, every partition exactly one.
    until(
        &all,
        "three members share the partitions",
        TTL * 12,
        |all| every_partition_led(all) && all.iter().all(|l| !l.led().is_empty()),
    )
    .await;
    let of_c = c.led();
    eprintln!("a {:?} b {:?} c {:?}", a.led(), b.led(), c.led());

    // A fence of one partition: a write as c's leader goes through.
    let p = of_c[0];
    let writer = c.fenced(&control, p).expect("c leads it");
    writer.put("ledger/probe.json", &1).await.unwrap();

    // c stops ticking (kill -9): only a and b tick from here. They lead its partitions
    // within the lease time, and never while c's own lease still lets it write (each
    // round checks that no partition has two leaders, c included).
    let took = until(&[&a, &b], "c's partitions move", TTL * 4, |all| {
        of_c.iter().all(|p| leaders(all, *p).len() == 1)
    })
    .await;
    for p in &of_c {
        assert!(leaders(&[&a, &b, &c], *p).len() == 1);
    }
    eprintln!(
        "c's {} partition(s) moved after {took:?} (lease {TTL:?})",
        of_c.len()
    );
    assert!(took < TTL * 3, "took {took:?}");
    assert!(c.leading(p).is_none(), "c's lease lapsed");
    // c's writes are refused: its lease lapsed, and a later epoch exists.
    let e = writer.put("ledger/probe.json", &2).await.unwrap_err();
    assert!(
        matches!(
            e,
            ControlError::LeaseLapsed { .. } | ControlError::Deposed { .. }
        ),
        "{e}"
    );
    let stored: i32 = control.get("ledger/probe.json").await.unwrap().unwrap();
    assert_eq!(stored, 1);

    // A clean stop of b hands its partitions to a at once (no TTL's wait).
    b.release_all().await;
    until(&[&a], "a leads everything", TTL * 2, |all| {
        all[0].led().len() == PARTITIONS as usize
    })
    .await;

    // Another count is refused, naming both.
    Leadership::agree(&control, "a", PARTITIONS).await.unwrap();
    let e = Leadership::agree(&control, "d", 3).await.unwrap_err();
    assert!(
        matches!(
            e,
            ControlError::Partitions {
                stored: PARTITIONS,
                wanted: 3,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("--partitions 3"), "{e}");
}

/// A leader handing a partition over to a member that joined stops writing at once, but
/// releases the lease only once its last renewal's validity ran out: a write it had under
/// way cannot land after the next leader's.
async fn handover(control: ControlPlane) {
    let a = Leadership::new(&control, "host/1/a", TTL, 4, None, true);
    a.tick().await;
    assert_eq!(a.led(), [0, 1, 2, 3]);
    let writers: Vec<ControlPlane> = (0..4).map(|p| a.fenced(&control, p).unwrap()).collect();
    let b = Leadership::new(&control, "host/2/b", TTL, 4, None, true);
    let started = Instant::now();
    loop {
        round(&[&a, &b]).await;
        let handed: Vec<u32> = (0..4).filter(|p| a.leading(*p).is_none()).collect();
        if let Some(p) = handed.first() {
            // Decided this tick: refused at once, released not yet.
            let e = writers[*p as usize]
                .put("ledger/probe.json", &1)
                .await
                .unwrap_err();
            assert!(matches!(e, ControlError::LeaseLapsed { .. }), "{e}");
            let prefix = tidemark_schema::control::lease_prefix(*p);
            let renewal: tidemark_schema::control::LeaseRenewal = control
                .get(&tidemark_schema::control::lease_renewal_key_in(&prefix, 1))
                .await
                .unwrap()
                .unwrap();
            assert!(!renewal.released, "released before a's writes ran out");
            break;
        }
        assert!(
            started.elapsed() < TTL * 12,
            "a never handed a partition to b"
        );
        tokio::time::sleep(TTL / 3).await;
    }
    until(&[&a, &b], "b leads its share", TTL * 6, |all| {
        !all[1].led().is_empty() && (0..4).all(|p| leaders(all, p).len() == 1)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handover_on_a_local_directory() {
    let dir = TempDir::new().unwrap();
    handover(ControlPlane::open_writable(dir.path().to_str().unwrap()).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handover_on_s3() {
    let moto = Moto::start();
    handover(ControlPlane::from_store(
        "s3://handover",
        Arc::new(moto.store("handover")),
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_on_a_local_directory() {
    let dir = TempDir::new().unwrap();
    conformance(ControlPlane::open_writable(dir.path().to_str().unwrap()).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_on_s3() {
    let moto = Moto::start();
    conformance(ControlPlane::from_store(
        "s3://partitions",
        Arc::new(moto.store("partitions")),
    ))
    .await;
}

/// A reconciler of a version without partitions holds the single lease: starting with
/// partitions is refused, naming it, while it renews; once it is gone (killed without
/// releasing, or stopped cleanly) partitions start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_leader_without_partitions_refuses_partitioning() {
    use tidemark_schema::control::{LeaseRecord, LeaseRenewal, lease_key, lease_renewal_key};
    let dir = TempDir::new().unwrap();
    let control = ControlPlane::open_writable(dir.path().to_str().unwrap()).unwrap();
    let old = LeaseRecord {
        epoch: 1,
        holder: "old-host/7/a".into(),
        acquired_at: chrono::Utc::now(),
        ttl_ms: 900,
        doorbell: None,
        partitions: None,
    };
    control.put(&lease_key(1), &old).await.unwrap();
    let renewal = |seq, released| LeaseRenewal {
        seq,
        at: chrono::Utc::now(),
        released,
    };
    control
        .put(&lease_renewal_key(1), &renewal(0, false))
        .await
        .unwrap();
    // The old leader renews every third of its TTL meanwhile.
    let renewer = {
        let control = control.clone();
        tokio::spawn(async move {
            for seq in 1.. {
                tokio::time::sleep(Duration::from_millis(300)).await;
                control
                    .put(&lease_renewal_key(1), &renewal(seq, false))
                    .await
                    .unwrap();
            }
        })
    };
    let e = Leadership::agree(&control, "new", 8).await.unwrap_err();
    assert!(
        matches!(
            e,
            ControlError::LeaderOfOtherCount {
                count: 1,
                wanted: 8,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("old-host/7/a"), "{e}");
    // Killed without releasing: after one of its TTLs without a renewal, partitions start.
    renewer.abort();
    let _ = renewer.await;
    let started = Instant::now();
    Leadership::agree(&control, "new", 8).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "waited its TTL"
    );
    // With one partition the single lease is the same as before: nothing to refuse.
    let other = TempDir::new().unwrap();
    let control = ControlPlane::open_writable(other.path().to_str().unwrap()).unwrap();
    control.put(&lease_key(1), &old).await.unwrap();
    control
        .put(&lease_renewal_key(1), &renewal(0, false))
        .await
        .unwrap();
    Leadership::agree(&control, "new", 1).await.unwrap();
}

/// A running member that finds another partition count recorded hands every lease over
/// and leaves the membership (others then stop handing it partitions), until it agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_count_is_no_longer_recorded_leads_nothing() {
    use tidemark_schema::control::{PARTITIONS_KEY, PartitionsRecord, member_key};
    let dir = TempDir::new().unwrap();
    let control = ControlPlane::open_writable(dir.path().to_str().unwrap()).unwrap();
    Leadership::agree(&control, "a", 4).await.unwrap();
    let a = Leadership::new(&control, "host/1/a", TTL, 4, None, true);
    round(&[&a]).await;
    assert_eq!(a.led(), [0, 1, 2, 3]);
    assert!(control.exists(&member_key("host/1/a")).await.unwrap());
    let other = PartitionsRecord {
        partitions: 6,
        created_at: chrono::Utc::now(),
        by: "b".into(),
    };
    control.put(PARTITIONS_KEY, &other).await.unwrap();
    until(&[&a], "a hands everything over", TTL * 6, |all| {
        all[0].led().is_empty()
    })
    .await;
    until(
        &[&a],
        "a leaves the membership and releases",
        TTL * 6,
        |_| {
            let rt = tokio::runtime::Handle::current();
            let (member, released) = tokio::task::block_in_place(|| {
                rt.block_on(async {
                    let member = control.exists(&member_key("host/1/a")).await.unwrap();
                    let renewal: tidemark_schema::control::LeaseRenewal = control
                        .get(&tidemark_schema::control::lease_renewal_key(1))
                        .await
                        .unwrap()
                        .unwrap();
                    (member, renewal.released)
                })
            });
            !member && released
        },
    )
    .await;
}
