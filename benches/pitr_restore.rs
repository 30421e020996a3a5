//! Benchmark of point-in-time restore on a mongod-sim replica set of 3.
//!
//! `cargo bench --bench pitr_restore` (oplog entries after the base:
//! `TIDEMARK_BENCH_ENTRIES`, default 20,000; half inserts, half updates). Prints
//! `name: value` lines:
//! - `replay_ops_per_s`: the entries after the base, applied by tidemark's replayer
//!   (`applyOps` batches) to a standalone, per second;
//! - `replay_one_per_command_ops_per_s`: the same entries applied one `applyOps` command
//!   per entry, as PBM does, to another standalone in the same state, in the same run;
//! - `replay_vs_one_per_command_ratio`: the two divided (target ≥ 10);
//! - `restore_replay_ops_per_s`: what each node's replay phase applied per second during
//!   the point-in-time restore below (median over the nodes; three nodes share two cores);
//! - `plain_restore_s`, `pitr_restore_s` and `pitr_restore_overhead_ratio`: a restore of
//!   the base, then a point-in-time restore from the same base to the last write (each
//!   from its start to its decision, nodes started as members), and their ratio.

#[path = "../tests/support/rig.rs"]
mod rig;
#[path = "../tests/support/world.rs"]
mod world;

use std::time::Instant;

use bson::{Bson, Document, doc};
use mongod_sim::harness::Standalone;
use serde_json::Value;
use tidemark_agent::pitr::apply::Replayer;
use tidemark_schema::control::ReplayTarget;
use tidemark_schema::manifest::OpTime;
use world::*;

use tidemark_testkit::env_or;

fn optime(b: &Bson) -> OpTime {
    match b {
        Bson::Timestamp(t) => OpTime {
            t: t.time,
            i: t.increment,
        },
        _ => panic!("not a timestamp: {b}"),
    }
}

fn ts(o: OpTime) -> bson::Timestamp {
    bson::Timestamp {
        time: o.t,
        increment: o.i,
    }
}

/// The primary's oplog entries after `from` up to `to`.
fn oplog(w: &World, from: OpTime, to: OpTime) -> Vec<Document> {
    let p = w.rig.primary();
    let r = w
        .rig
        .rs
        .process(p)
        .unwrap()
        .command(
            "local",
            doc! {"find": "oplog.rs", "filter": {"ts": {"$gt": ts(from), "$lte": ts(to)}},
            "sort": {"$natural": 1}, "batchSize": 10_000_000},
        )
        .unwrap();
    r.get_document("cursor")
        .unwrap()
        .get_array("firstBatch")
        .unwrap()
        .iter()
        .filter_map(|d| d.as_document().cloned())
        .collect()
}

/// Writes `n` oplog entries into `app.bench`: inserts, then an update of each document.
fn write_entries(w: &World, n: u64) -> OpTime {
    let half = (n / 2) as i32;
    let mut last = OpTime::default();
    let mut run = |cmd: Document| {
        let p = w.rig.primary();
        let r = w.rig.rs.process(p).unwrap().command("app", cmd).unwrap();
        assert_eq!(r.get_f64("ok").unwrap_or(0.0), 1.0, "{r}");
        last = optime(r.get("operationTime").unwrap());
    };
    for chunk in (0..half).collect::<Vec<_>>().chunks(1000) {
        let docs: Vec<Document> = chunk
            .iter()
            .map(|i| doc! {"_id": i, "n": 0, "pad": "p".repeat(64)})
            .collect();
        run(doc! {"insert": "bench", "documents": docs});
    }
    for chunk in (0..half).collect::<Vec<_>>().chunks(1000) {
        let updates: Vec<Document> = chunk
            .iter()
            .map(|i| doc! {"q": {"_id": i}, "u": {"$set": {"n": 1}}})
            .collect();
        run(doc! {"update": "bench", "updates": updates});
    }
    last
}

/// A standalone holding an empty `app.bench`, and a driver client to it.
fn standalone(rt: &tokio::runtime::Runtime) -> (Standalone, mongodb::Client) {
    let s = Standalone::start(&[]).unwrap();
    let c = rt
        .block_on(mongodb::Client::with_uri_str(format!(
            "mongodb://{}/?directConnection=true",
            s.process.host()
        )))
        .unwrap();
    rt.block_on(async {
        c.database("app")
            .run_command(doc! {"create": "bench"})
            .await
    })
    .unwrap();
    (s, c)
}

/// The entries without their collection UUIDs (the standalones made their own
/// `app.bench`).
fn without_ui(entries: &[Document]) -> Vec<Document> {
    entries
        .iter()
        .map(|e| {
            let mut e = e.clone();
            e.remove("ui");
            e
        })
        .collect()
}

fn apply(rt: &tokio::runtime::Runtime, c: &mongodb::Client, ops: Vec<Document>) {
    rt.block_on(async {
        c.database("admin")
            .run_command(doc! {"applyOps": ops, "oplogApplicationMode": "ApplyOps"})
            .await
    })
    .unwrap();
}

fn documents(rt: &tokio::runtime::Runtime, c: &mongodb::Client) -> Vec<Document> {
    use futures::TryStreamExt;
    rt.block_on(async {
        c.database("app")
            .collection::<Document>("bench")
            .find(doc! {})
            .sort(doc! {"_id": 1})
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap()
    })
}

/// tidemark's batches and PBM's one command per entry, on the same entries.
fn replay_rates(entries: &[Document], from: OpTime, to: OpTime) -> (f64, f64) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let entries = without_ui(entries);
    let (_a, batched) = standalone(&rt);
    // Owned before the clock starts: the agent parses each entry once, and takes it.
    let owned = entries.clone();
    let started = Instant::now();
    let mut r = Replayer::new(
        from,
        ReplayTarget {
            until: to,
            wall: None,
        },
    );
    let mut batches = Vec::new();
    for e in owned {
        batches.extend(r.push(e).unwrap());
    }
    batches.extend(r.finish().unwrap());
    let planned_s = started.elapsed().as_secs_f64();
    for b in batches {
        apply(&rt, &batched, b.ops);
    }
    let batched_s = started.elapsed().as_secs_f64();
    println!(
        "replay_batching_share: {:.2} (of the batched replay's time, turning entries into \
         batches in this process)",
        planned_s / batched_s
    );
    let applied = r.stats.applied as f64;
    let (_b, single) = standalone(&rt);
    let started = Instant::now();
    for e in &entries {
        if e.get_str("op").ok() == Some("n") {
            continue;
        }
        let mut op = Document::new();
        for k in ["op", "ns", "o", "o2"] {
            if let Some(v) = e.get(k) {
                op.insert(k, v.clone());
            }
        }
        apply(&rt, &single, vec![op]);
    }
    let single_s = started.elapsed().as_secs_f64();
    assert_eq!(
        documents(&rt, &batched),
        documents(&rt, &single),
        "both ways give the same documents"
    );
    (applied / batched_s, applied / single_s)
}

fn restore(w: &World, name: &str, source: &str) -> (f64, String) {
    w.write(
        &format!("restore-{name}.yaml"),
        &format!(
            "apiVersion: tidemark/v1\nkind: Restore\nmetadata:\n  name: {name}\nspec:\n  \
             cluster: {}\n  source:\n{source}  fallbackEnabled: true\n  postRestore:\n    \
             startNodes: true\n",
            rig::CLUSTER
        ),
    );
    let v = w.wait_end("restore", name);
    assert_eq!(v["status"], "done", "{v:#}\n{}", w.logs());
    let d = w.describe("restore", name);
    let at = |k: &str| {
        chrono::DateTime::parse_from_rfc3339(d[k].as_str().unwrap())
            .unwrap()
            .timestamp_millis()
    };
    (
        (at("finishedAt") - at("startedAt")) as f64 / 1000.0,
        d["opId"].as_str().unwrap().to_string(),
    )
}

/// Each node's replay rate, from its `replay` report.
fn node_rates(w: &World, op: &str) -> Vec<f64> {
    let mut out = Vec::new();
    let dir = w
        .rig
        .control
        .path()
        .join("ops")
        .join(op)
        .join(&w.rig.rs.name);
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if !e.file_name().to_string_lossy().ends_with(".replay.json") {
            continue;
        }
        let r: Value = serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap();
        let s = &r["details"]["replay"];
        if let (Some(n), Some(secs)) = (s["applied"].as_f64(), s["seconds"].as_f64()) {
            out.push(n / secs.max(0.001));
        }
    }
    out.sort_by(f64::total_cmp);
    out
}

/// Waits until a chunk record ends at or after `target`.
fn wait_sliced(w: &World, target: OpTime) {
    wait_until(w, "the slices to reach the target", || {
        w.chunk_records().last().is_some_and(|c| c.last >= target)
    });
}

fn main() {
    rig::build_release_sim();
    let entries = env_or("TIDEMARK_BENCH_ENTRIES", 20_000);
    let mut w = World::with_sim_args(
        "pitr-restore-bench",
        &["--setParameter", "periodicNoopIntervalSecs=1"],
    );
    w.rig.insert(0..100);
    for i in 0..3 {
        w.rig.start_agent(i);
    }
    w.start_reconciler();
    w.backup("base");
    let base: OpTime = serde_json::from_value(
        w.control_json("catalog/base.json").unwrap()["replicaSets"][0]["lastWriteOptime"].clone(),
    )
    .unwrap();
    w.write(
        "schedule.yaml",
        &tidemark_testkit::pitr_schedule_yaml(rig::CLUSTER, "local", "2s"),
    );
    let target = write_entries(&w, entries);
    let logged = oplog(&w, base, target);
    let (batched, single) = replay_rates(&logged, base, target);
    println!("oplog_entries_after_base: {}", logged.len());
    println!("replay_ops_per_s: {batched:.0}");
    println!("replay_one_per_command_ops_per_s: {single:.0}");
    println!("replay_vs_one_per_command_ratio: {:.2}", batched / single);
    // The slices must hold the target before the plain restore replaces that history.
    wait_sliced(&w, target);
    let (plain, _) = restore(&w, "plain", "    backup: base\n");
    let (pitr, op) = restore(
        &w,
        "to-time",
        &format!("    pointInTime: {{t: {}, i: {}}}\n", target.t, target.i),
    );
    let rates = node_rates(&w, &op);
    let median = rates.get(rates.len() / 2).copied().unwrap_or(0.0);
    println!("restore_replay_ops_per_s: {median:.0}");
    println!("plain_restore_s: {plain:.2}");
    println!("pitr_restore_s: {pitr:.2}");
    println!("pitr_restore_overhead_ratio: {:.2}", pitr / plain);
}
