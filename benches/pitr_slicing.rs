//! Benchmark of oplog slicing under a sustained write load on a mongod-sim replica set of
//! 3, with the control plane and the backup storage on S3 (moto) behind counting proxies.
//!
//! `cargo bench --bench pitr_slicing` (span `TIDEMARK_BENCH_SPAN_S`, default 5; load
//! seconds `TIDEMARK_BENCH_SECONDS`, default 60). Prints `name: value` lines:
//! - `slicing_lag_p99_s` and `slicing_lag_vs_limit_ratio`: the 99th percentile of the lag
//!   (now minus the newest sliced entry, sampled twice a second while the writer runs)
//!   against its limit, the span plus 5 s (target ≤ 1);
//! - `writes_per_s`: what the writer sustained (each write is one oplog entry; the writer
//!   aims at about 1,000 a second);
//! - `slicing_agent_requests_per_rs_hour{kind}`: the S3 requests the agents made for
//!   slicing (assignment reads, chunk objects, chunk records, listings), per replica-set
//!   hour, and their cost at S3 list prices (PUT/LIST $0.005 per 1,000, GET $0.0004);
//! - `slicing_reconciler_requests_per_hour{kind}`: the reconciler's reads of the slicing
//!   records at this bench's 2 s pass interval (it scales with `--interval`).

#[path = "../tests/support/rig.rs"]
mod rig;
#[path = "../tests/support/world.rs"]
mod world;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bson::doc;
use mongod_sim::client::BlockingConn;
use serde_json::Value;
use tidemark_testkit::{CountingProxy, Counts, Moto, s3_price};
use world::*;

use tidemark_testkit::env_or;

/// `tidemark list -o json`, straight to moto (not counted).
fn list(w: &World, moto: &Moto) -> Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["list", "-o", "json", "--control", &w.rig.control_url])
        .envs(moto.env())
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn per_hour(c: &Counts, secs: f64) -> Vec<(String, f64)> {
    c.iter()
        .map(|(k, n)| (k.clone(), *n as f64 * 3600.0 / secs))
        .collect()
}

fn dollars(per_hour: &[(String, f64)]) -> f64 {
    per_hour.iter().map(|(k, n)| n * s3_price(k)).sum()
}

fn main() {
    rig::build_release_sim();
    let span = env_or("TIDEMARK_BENCH_SPAN_S", 5);
    let seconds = env_or("TIDEMARK_BENCH_SECONDS", 60);
    let moto = Moto::start();
    let agents_proxy = CountingProxy::start(moto.port, "pitr");
    let reconciler_proxy = CountingProxy::start(moto.port, "pitr");
    let mut w = World::with_sim_args(
        "slicebench",
        &["--setParameter", "periodicNoopIntervalSecs=1"],
    );
    w.rig.use_s3_control(&moto, "ctl");
    w.rig.use_s3(&moto, "backups");
    w.rig.agent_env = moto.env_via(agents_proxy.endpoint());
    w.reconciler_env = moto
        .env_via(reconciler_proxy.endpoint())
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    w.write("cluster.yaml", &w.rig.cluster_yaml());
    w.rig.insert(0..1000);
    for i in 0..3 {
        w.rig.start_agent(i);
    }
    w.start_reconciler();
    w.backup_yaml("base", "physical");
    let started = Instant::now();
    while !list(&w, &moto)["backups"]
        .as_array()
        .is_some_and(|b| b.iter().any(|b| b["name"] == "base" && b["good"] == true))
    {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no base:\n{}",
            w.logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    w.write(
        "schedule.yaml",
        &format!(
            "apiVersion: tidemark/v1\nkind: BackupSchedule\nmetadata:\n  name: pitr\nspec:\n  \
             cluster: {}\n  storage: local\n  type: physical\n  cron: \"0 0 1 1 *\"\n  \
             pitr:\n    enabled: true\n    oplogSpan: {span}s\n",
            rig::CLUSTER
        ),
    );
    // The first chunk, then the load.
    let started = Instant::now();
    while list(&w, &moto)["timelines"][0]["newest"].is_null() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no chunk:\n{}",
            w.logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let primary = w.rig.node(w.rig.primary());
    let writer = {
        let (stop, written) = (stop.clone(), written.clone());
        std::thread::spawn(move || {
            let mut conn = BlockingConn::connect(&primary, Duration::from_secs(5)).unwrap();
            let mut id = 1_000_000i64;
            while !stop.load(Ordering::Relaxed) {
                let docs: Vec<bson::Document> = (0..50)
                    .map(|k| doc! {"_id": id + k, "pad": "p".repeat(200)})
                    .collect();
                id += 50;
                let r = conn
                    .command(
                        "app",
                        doc! {"insert": "load", "documents": docs, "ordered": false},
                    )
                    .unwrap();
                if r.get_f64("ok").unwrap_or(0.0) == 1.0 {
                    written.fetch_add(50, Ordering::Relaxed);
                }
                // About 1,000 writes a second, sustained: a busy production replica set,
                // not a saturated one (two cores run three members, the agents and moto).
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let (a0, r0) = (agents_proxy.counts(), reconciler_proxy.counts());
    let load_started = Instant::now();
    let mut lags = Vec::new();
    while load_started.elapsed() < Duration::from_secs(seconds) {
        let v = list(&w, &moto);
        if let Some(t) = v["timelines"][0]["newest"]["t"].as_u64() {
            let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
            lags.push((now - t as f64).max(0.0));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let elapsed = load_started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let diff = |after: Counts, before: &Counts| -> Counts {
        after
            .into_iter()
            .map(|(k, n)| {
                let b = before.get(&k).copied().unwrap_or(0);
                (k, n - b)
            })
            .collect()
    };
    let agents = per_hour(&diff(agents_proxy.counts(), &a0), elapsed);
    let reconciler = per_hour(&diff(reconciler_proxy.counts(), &r0), elapsed);
    lags.sort_by(f64::total_cmp);
    let p99 = lags[((lags.len() as f64 * 0.99).ceil() as usize).saturating_sub(1)];
    let limit = span as f64 + 5.0;
    println!("slicing_span_s: {span}");
    println!("slicing_lag_samples: {}", lags.len());
    println!("slicing_lag_median_s: {:.2}", lags[lags.len() / 2]);
    println!("slicing_lag_p99_s: {p99:.2}");
    println!(
        "slicing_lag_vs_limit_ratio: {:.3} (limit span + 5 s = {limit} s)",
        p99 / limit
    );
    println!(
        "writes_per_s: {:.0}",
        written.load(Ordering::Relaxed) as f64 / elapsed
    );
    for (k, n) in &agents {
        println!("slicing_agent_requests_per_rs_hour{{kind={k}}}: {n:.0}");
    }
    println!(
        "slicing_agent_dollars_per_rs_month: {:.3}",
        dollars(&agents) * 730.0
    );
    for (k, n) in &reconciler {
        println!("slicing_reconciler_requests_per_hour{{kind={k}}}: {n:.0} (2 s passes)");
    }
    assert!(
        p99 <= limit,
        "the slicer fell behind: p99 lag {p99:.1}s > {limit}s"
    );
}
