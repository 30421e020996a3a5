//! End-to-end: three `tidemark reconcile` processes on one control plane in S3 (a real
//! moto server, under a key prefix). Exactly one leads; `kill -9` of the leader hands the
//! lease to another within the lease time, twice over; every scheduled slot runs once, and
//! no op was written by a leader after a later one had taken over.

#[path = "support/rig.rs"]
mod rig;
#[path = "support/world.rs"]
mod world;

use std::collections::BTreeMap;
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidemark_store::control::ControlPlane;
use tidemark_testkit::Moto;
use world::*;

/// The reconcilers' `--lease-ttl` (see `World::spawn_reconciler`).
const TTL: Duration = Duration::from_secs(2);

#[test]
fn three_reconcilers_on_s3_one_leads_and_a_killed_leader_is_replaced_within_the_lease() {
    let moto = Moto::start();
    let mut w = World::new("lead3");
    w.rig.use_s3_control(&moto, "ctl");
    w.scheduled("often", 0..10, "  retention:\n    keepLast: 3\n");
    let mut procs: Vec<Child> = (0..3)
        .map(|i| w.spawn_reconciler(&format!("reconciler-{i}.log")))
        .collect();

    let v = w.wait_for("a first scheduled backup", 60, |v| {
        v["schedules"][0]["lastGoodBackup"].as_str().is_some()
    });
    assert_eq!(v["leader"]["epoch"], 1, "{v:#}");

    let mut takeovers = Vec::new();
    for epoch in [2u64, 3] {
        let (v, _) = w.status();
        let leader = holder_pid(&v).expect("a leader");
        let at = procs
            .iter()
            .position(|c| c.id() == leader)
            .unwrap_or_else(|| panic!("the leader {leader} is one of ours: {v:#}"));
        let mut killed = procs.remove(at);
        killed.kill().unwrap(); // SIGKILL: no release of the lease
        killed.wait().unwrap();
        let killed_at = Instant::now();
        let v = w.wait_for(&format!("epoch {epoch}"), 30, |v| {
            v["leader"]["epoch"].as_u64() == Some(epoch)
        });
        let took = killed_at.elapsed();
        takeovers.push(took);
        let new = holder_pid(&v).unwrap();
        assert!(
            procs.iter().any(|c| c.id() == new),
            "a survivor leads: {v:#}"
        );
        // A follower waits one TTL without a renewal, looking every third of it.
        assert!(
            took < TTL * 3,
            "takeover for epoch {epoch} took {took:?}, more than 3 × the {TTL:?} lease"
        );
    }
    eprintln!("takeover after kill -9: {takeovers:?} (lease {TTL:?})");
    // The last survivor runs the schedule: a backup started after the second takeover.
    let since = chrono::Utc::now();
    w.wait_for("a backup under epoch 3", 60, |v| {
        v["schedules"][0]["lastGoodAt"]
            .as_str()
            .and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok())
            .is_some_and(|t| t > since)
    });
    for mut c in procs {
        c.kill().unwrap();
        c.wait().unwrap();
    }

    // What the leaders wrote: one op per slot, one ledger claim per op, and epochs that
    // never go back in the order the ops were created.
    let raw = object_store::prefix::PrefixStore::new(moto.store("ctl"), "tidemark");
    let control = ControlPlane::from_store("s3://ctl/tidemark", Arc::new(raw));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (ops, claims) = rt.block_on(async {
        let mut ops = Vec::new();
        for id in control.op_ids().await.unwrap() {
            if let Some(op) = control.op(&id).await.unwrap() {
                ops.push(op);
            }
        }
        let claims = control.keys("ledger/oneshots/backup/").await.unwrap();
        (ops, claims)
    });
    let mut per_backup: BTreeMap<String, usize> = BTreeMap::new();
    for op in &ops {
        if let Some((_, name)) = op.id.split_once("-backup-") {
            *per_backup.entry(name.to_string()).or_default() += 1;
        }
    }
    // The first slot, and one after the second takeover at least (slots due while the
    // cluster was busy with a backup are missed, not queued).
    assert!(per_backup.len() >= 2, "{per_backup:?}");
    assert!(per_backup.values().all(|n| *n == 1), "{per_backup:?}");
    assert_eq!(claims.len(), per_backup.len(), "{claims:?}");
    let mut by_time: Vec<(chrono::DateTime<chrono::Utc>, u64, String)> = ops
        .iter()
        .map(|o| {
            (
                o.created_at,
                o.epoch.expect("every op carries its epoch"),
                o.id.clone(),
            )
        })
        .collect();
    by_time.sort();
    for pair in by_time.windows(2) {
        assert!(
            pair[0].1 <= pair[1].1,
            "an op of epoch {} came after one of epoch {}: {by_time:?}",
            pair[1].1,
            pair[0].1
        );
    }
    assert!(by_time.iter().any(|(_, e, _)| *e == 3), "{by_time:?}");
}

/// An S3-compatible store that ignores `If-None-Match` (moto behind a proxy that drops
/// the header) would let two reconcilers both take one lease epoch and a Restore run
/// twice: the reconciler proves create-if-absent first and refuses to lead, naming it.
#[test]
fn a_store_that_ignores_conditional_puts_is_refused_at_start_up() {
    let moto = Moto::start();
    let proxy = tidemark_testkit::HeaderDroppingProxy::start(moto.port, "If-None-Match");
    let mut w = World::new("nocas");
    w.rig.use_s3_control(&moto, "ctl");
    let through_proxy: Vec<(&'static str, String)> = moto
        .env()
        .into_iter()
        .map(|(k, v)| match k {
            "AWS_ENDPOINT" => (k, proxy.endpoint()),
            _ => (k, v),
        })
        .collect();
    w.rig.agent_env = through_proxy;
    let code = w.reconcile_once("nocas.log", &[]);
    let log = w.reconciler_log_named("nocas.log");
    assert_eq!(code, 1, "{log}");
    assert!(
        log.contains("does not honour create-if-absent") && log.contains("s3://ctl/tidemark"),
        "{log}"
    );
    // Nothing was led: no lease epoch exists in the store.
    let raw = object_store::prefix::PrefixStore::new(moto.store("ctl"), "tidemark");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let keys: Vec<String> = runtime.block_on(async {
        use futures::TryStreamExt;
        use object_store::ObjectStore;
        raw.list(None)
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .unwrap()
    });
    assert!(keys.iter().all(|k| !k.starts_with("lease/")), "{keys:?}");

    // The same moto without the proxy honours it: the reconciler leads.
    w.rig.agent_env = moto.env();
    assert_eq!(
        w.reconcile_once("direct.log", &[]),
        0,
        "{}",
        w.reconciler_log_named("direct.log")
    );
}
