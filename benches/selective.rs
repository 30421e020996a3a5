//! Benchmark of a selective restore's copy: 100,000 documents of one collection, restored
//! through `tidemark reconcile` and a drill agent into a running replica set of 3, against
//! the limit the copy cannot beat, measured in the same run: the same documents inserted
//! straight into the same set with the driver in large unordered batches.
//!
//! `cargo bench --bench selective` (documents `TIDEMARK_BENCH_DOCS`, default 100000;
//! rounds `TIDEMARK_BENCH_ROUNDS`, default 3). Prints `name: value` lines, each the median
//! of the rounds with its min–max:
//! - `selective_copy_vs_insert_ratio`: insert seconds / copy seconds (target ≥ 0.8), where
//!   the copy is the agent's `import` phase (staging collection created with its index,
//!   documents read from the restored standalone and written) plus its `swap`;
//! - `selective_scratch_ready_s`: from the op's creation to the restored standalone
//!   answering (download, recovery, start): the part of a selective restore that grows with
//!   the backup's size, not the collection's.

#[path = "../tests/support/rig.rs"]
mod rig;
#[path = "../tests/support/world.rs"]
mod world;

use std::time::Instant;

use bson::{Document, doc};
use chrono::{DateTime, Utc};
use tidemark_schema::control::{DRILL_REPLICA_SET, Op, PhaseReport, op_key, phase_key};
use world::*;

fn order(i: i64) -> Document {
    doc! {"_id": i, "sku": format!("s{i}"), "qty": i, "pad": "o".repeat(150)}
}

fn read<T: serde::de::DeserializeOwned>(w: &World, key: &str) -> T {
    serde_json::from_slice(&std::fs::read(w.rig.control.path().join(key)).unwrap()).unwrap()
}

fn at(w: &World, op: &str, phase: &str) -> DateTime<Utc> {
    read::<PhaseReport>(w, &phase_key(op, DRILL_REPLICA_SET, "drill-1", phase)).at
}

/// Inserts on the primary, in batches of 1,000, waiting for the set to apply each.
fn load(w: &World, coll: &str, n: i64) {
    for start in (0..n).step_by(1000) {
        let docs: Vec<Document> = (start..(start + 1000).min(n)).map(order).collect();
        loop {
            let p = w.rig.primary();
            let r = w
                .rig
                .rs
                .process(p)
                .unwrap()
                .command("shop", doc! {"insert": coll, "documents": docs.clone(), "writeConcern": {"w": "majority"}})
                .unwrap();
            if r.get_f64("ok").unwrap_or(0.0) == 1.0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

/// Inserts `docs`, waiting out an election as the copy does: a batch refused as not
/// primary goes again, and on a retry the documents the first try wrote (duplicate keys)
/// count as written.
async fn insert_through_elections(coll: &mongodb::Collection<Document>, docs: &[Document]) {
    let mut retried = false;
    loop {
        match coll.insert_many(docs).ordered(false).await {
            Ok(_) => return,
            Err(e) => {
                let only_duplicates = retried
                    && matches!(e.kind.as_ref(), mongodb::error::ErrorKind::InsertMany(m)
                        if m.write_concern_error.is_none()
                            && m.write_errors.as_ref().is_some_and(|w| w.iter().all(|w| w.code == 11000)));
                if only_duplicates {
                    return;
                }
                assert!(
                    matches!(e.kind.as_ref(), mongodb::error::ErrorKind::Command(c) if c.code == 10107),
                    "{e}"
                );
                retried = true;
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
    }
}

fn main() {
    let n: i64 = std::env::var("TIDEMARK_BENCH_DOCS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rounds: usize = std::env::var("TIDEMARK_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    rig::build_release_sim();
    // WiredTiger's checkpoint period on the live set: mongod-sim rewrites a dirty
    // collection's whole file at each checkpoint (WiredTiger writes only changed pages),
    // so the tests' 300 ms would charge a long copy for many full rewrites a plain insert
    // finishing between two checkpoints never pays. And mongod's 2 s heartbeats: the
    // tests' 100 ms make a loaded 2-core machine elect a new primary mid-measurement.
    let mut w = World::with_sim_args(
        "bench-selective",
        &[
            "--sim-checkpoint-interval-ms",
            "60000",
            "--sim-heartbeat-interval-ms",
            "2000",
        ],
    );
    load(&w, "orders", n);
    for i in 0..3 {
        w.rig.start_agent(i);
    }
    w.start_reconciler();
    w.backup("b1");
    let scratch = tempfile::TempDir::new().unwrap();
    // Killed whatever happens: a drill agent outlives a panicking benchmark otherwise.
    let _agent = w.drill_agent(scratch.path(), "drill-1", &[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = runtime
        .block_on(mongodb::Client::with_uri_str(format!(
            "mongodb://{}/?replicaSet={}&w=majority",
            (0..3).map(|i| w.rig.node(i)).collect::<Vec<_>>().join(","),
            w.rig.rs.name
        )))
        .unwrap();
    let (mut ratios, mut copies, mut inserts, mut ready) = (vec![], vec![], vec![], vec![]);
    for round in 0..rounds {
        let name = format!("r{round}");
        w.restore_yaml(
            &name,
            "b1",
            &format!(
                "  namespaces: [shop.orders]\n  renameTo:\n    shop.orders: shop.copy{round}\n"
            ),
        );
        let v = w.wait_end("restore", &name);
        assert_eq!(v["status"], "done", "{v:#}");
        let op_id = w.op_of("restore", &name);
        let op: Op = read(&w, &op_key(&op_id));
        let copy = (at(&w, &op_id, "swap") - at(&w, &op_id, "check")).as_seconds_f64();
        let to_ready = (at(&w, &op_id, "check") - op.created_at).as_seconds_f64();
        let docs: Vec<Document> = (0..n).map(order).collect();
        let coll = client
            .database("shop")
            .collection::<Document>(&format!("naive{round}"));
        // In the copy's batch size (10,000): one huge insert holds mongod-sim's lock long
        // enough for its heartbeats to lapse and the set to elect another primary.
        let began = Instant::now();
        for chunk in docs.chunks(10_000) {
            runtime.block_on(insert_through_elections(&coll, chunk));
        }
        let insert = began.elapsed().as_secs_f64();
        eprintln!(
            "round {round}: copy {copy:.3} s, insert {insert:.3} s, scratch ready {to_ready:.3} s"
        );
        ratios.push(insert / copy);
        copies.push(copy);
        inserts.push(insert);
        ready.push(to_ready);
    }
    println!("selective_documents: {n}");
    println!(
        "selective_copy_vs_insert_ratio: {}",
        tidemark_testkit::spread(&ratios)
    );
    println!("selective_copy_s: {}", tidemark_testkit::spread(&copies));
    println!("selective_insert_s: {}", tidemark_testkit::spread(&inserts));
    println!(
        "selective_scratch_ready_s: {}",
        tidemark_testkit::spread(&ready)
    );
}
