//! End-to-end selective restores against a mongod-sim replica set: `shop.orders` damaged by
//! a `delete_many`, `shop.customers` written to after the backup. A selective restore of
//! `shop.orders` refuses an existing target by default, brings its backup-time documents,
//! indexes and options back beside it (`renameTo`), in its place (`onExisting: replace`)
//! or merged into it (`onExisting: merge`), leaves `shop.customers` alone, never restarts a
//! node and leaves no scratch directory and no staging collection. A drill agent killed
//! mid-copy leaves the target as it was, and its restart drops the staging collection and
//! says so; a cancel mid-copy does the same and ends the restore cancelled.

#[path = "support/rig.rs"]
mod rig;
#[path = "support/world.rs"]
mod world;

use bson::{Document, doc};
use serde_json::Value;
use tidemark_schema::control::{DRILL_REPLICA_SET, phase_key};
use world::*;

fn on_primary(w: &World, db: &str, cmd: Document) -> Document {
    w.on_primary(db, cmd)
}

fn batch(reply: &Document) -> Vec<Document> {
    reply
        .get_document("cursor")
        .and_then(|c| c.get_array("firstBatch"))
        .map(|a| a.iter().filter_map(|d| d.as_document().cloned()).collect())
        .unwrap_or_default()
}

/// Every document of `shop.<coll>` on the primary, by `_id`.
fn docs(w: &World, coll: &str) -> Vec<Document> {
    batch(&on_primary(
        w,
        "shop",
        doc! {"find": coll, "sort": {"_id": 1}, "batchSize": 1_000_000},
    ))
}

fn ids(w: &World, coll: &str) -> Vec<i32> {
    docs(w, coll)
        .iter()
        .map(|d| d.get_i32("_id").unwrap())
        .collect()
}

/// `shop`'s collections with their options, and the index names of `coll`.
fn shape(w: &World, coll: &str) -> (Vec<(String, Document)>, Vec<String>) {
    let colls = batch(&on_primary(w, "shop", doc! {"listCollections": 1}))
        .into_iter()
        .map(|c| {
            (
                c.get_str("name").unwrap().to_string(),
                c.get_document("options").unwrap().clone(),
            )
        })
        .collect();
    let indexes = batch(&on_primary(w, "shop", doc! {"listIndexes": coll}))
        .iter()
        .map(|i| i.get_str("name").unwrap().to_string())
        .collect();
    (colls, indexes)
}

fn options_of(w: &World, coll: &str) -> Option<Document> {
    shape(w, "orders")
        .0
        .into_iter()
        .find(|(n, _)| n == coll)
        .map(|(_, o)| o)
}

/// Waits until every member holds `want` documents in `shop.<coll>`: a write the other
/// members have not applied could be lost to an election (mongod-sim has no rollback).
fn everywhere(w: &World, coll: &str, want: i64) {
    let counts = || -> Vec<Option<i64>> {
        (0..3)
            .map(|i| {
                w.rig
                    .rs
                    .process(i)
                    .unwrap()
                    .command("shop", doc! {"count": coll})
                    .ok()
                    .and_then(|r| r.get_i64("n").ok())
            })
            .collect()
    };
    let started = std::time::Instant::now();
    while counts().iter().any(|n| *n != Some(want)) {
        assert!(
            started.elapsed() < rig::LONG,
            "never {want} documents in shop.{coll} on every member: {:?}\n{}",
            counts(),
            w.repl_summary()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn order(i: i32) -> Document {
    doc! {"_id": i, "sku": format!("s{i}"), "qty": i, "pad": "o".repeat(100)}
}

/// `shop.orders` (a validator, a unique index, `orders` documents) and `shop.customers`
/// (0..10), a backup `b1` of them taken through the reconciler, then the damage: every
/// order deleted, customers 10..20 added.
fn damaged_after_backup(name: &str, orders: i32) -> World {
    let mut w = World::new(name);
    on_primary(
        &w,
        "shop",
        doc! {"create": "orders", "validator": {"qty": {"$gte": 0}}},
    );
    on_primary(
        &w,
        "shop",
        doc! {"createIndexes": "orders", "indexes": [{"key": {"sku": 1}, "name": "sku_1", "unique": true}]},
    );
    for chunk in (0..orders).collect::<Vec<_>>().chunks(1000) {
        let batch: Vec<Document> = chunk.iter().map(|i| order(*i)).collect();
        on_primary(&w, "shop", doc! {"insert": "orders", "documents": batch});
    }
    let customers: Vec<Document> = (0..10).map(|i| doc! {"_id": i}).collect();
    on_primary(
        &w,
        "shop",
        doc! {"insert": "customers", "documents": customers},
    );
    for i in 0..3 {
        w.rig.start_agent(i);
    }
    w.start_reconciler();
    w.backup("b1");
    on_primary(
        &w,
        "shop",
        doc! {"delete": "orders", "deletes": [{"q": {}, "limit": 0}]},
    );
    let newer: Vec<Document> = (10..20).map(|i| doc! {"_id": i}).collect();
    on_primary(&w, "shop", doc! {"insert": "customers", "documents": newer});
    everywhere(&w, "orders", 0);
    everywhere(&w, "customers", 20);
    w
}

fn selective(w: &World, name: &str, extra: &str) -> Value {
    w.restore_yaml(name, "b1", extra);
    w.wait_end("restore", name)
}

fn staging_left(w: &World) -> Vec<String> {
    shape(w, "orders")
        .0
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| n.starts_with("tidemark_restore_"))
        .collect()
}

/// Declares selective restore `name` of `shop.orders` (`replace`) and waits until its
/// agent has begun copying (its first `import` report).
fn copy_begun(w: &World, name: &str) {
    w.restore_yaml(
        name,
        "b1",
        "  namespaces: [shop.orders]\n  onExisting: replace\n",
    );
    let op = w.op_of("restore", name);
    let import = w
        .rig
        .control
        .path()
        .join(phase_key(&op, DRILL_REPLICA_SET, "drill-1", "import"));
    wait_until(w, "the copy has begun", || import.exists());
}

#[test]
fn one_collection_comes_back_renamed_replaced_or_merged_and_no_node_stops() {
    let w = damaged_after_backup("selective", 50);
    let scratch = tempfile::TempDir::new().unwrap();
    let mut agent = w.drill_agent(scratch.path(), "drill-1", &[]);
    let before = w.uptimes();
    let backup_time: Vec<i32> = (0..50).collect();
    // The preview plans on a live drill agent: wait for its first heartbeat.
    let beat = w
        .rig
        .control
        .path()
        .join(format!("agents/{}/_drill/drill-1.json", rig::CLUSTER));
    let started = std::time::Instant::now();
    while !beat.exists() {
        assert!(
            started.elapsed() < rig::LONG,
            "no heartbeat from the drill agent"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    // The preview: what is copied, from which backup, and its size in the backup.
    let preview = tempfile::TempDir::new().unwrap();
    for f in std::fs::read_dir(w.policies.path()).unwrap().flatten() {
        std::fs::copy(f.path(), preview.path().join(f.file_name())).unwrap();
    }
    std::fs::write(
        preview.path().join("restore-preview.yaml"),
        format!(
            "apiVersion: tidemark/v1\nkind: Restore\nmetadata:\n  name: preview\nspec:\n  \
             cluster: {}\n  source:\n    backup: b1\n  namespaces: [shop.orders]\n",
            rig::CLUSTER
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["diff", "-o", "json", "--policies"])
        .arg(preview.path())
        .arg("--control")
        .arg(&w.rig.control_url)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let diff: Value = serde_json::from_slice(&out.stdout).unwrap();
    let step = diff["plan"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["action"] == "startSelectiveRestore")
        .unwrap_or_else(|| panic!("{diff:#}"));
    let ns = &step["namespaces"][0];
    assert_eq!(ns["source"], "shop.orders", "{step:#}");
    assert_eq!(ns["documents"], 50, "{step:#}");
    assert!(ns["bytes"].as_u64().unwrap() > 50 * 100, "{step:#}");

    // The damaged collection still exists (empty): refused by default, nothing written.
    let v = selective(&w, "r-refuse", "  namespaces: [shop.orders]\n");
    assert_eq!(v["status"], "error", "{v:#}");
    let reason = v["reason"].as_str().unwrap();
    assert!(
        reason.contains("shop.orders already exist") && reason.contains("onExisting: replace"),
        "{reason}"
    );
    assert!(ids(&w, "orders").is_empty());

    // Beside the damaged one, under another name: documents, index and options.
    let v = selective(
        &w,
        "r-rename",
        "  namespaces: [shop.orders]\n  renameTo:\n    shop.orders: shop.orders_restored\n",
    );
    assert_eq!(v["status"], "done", "{v:#}\n{}", w.logs());
    assert_eq!(ids(&w, "orders_restored"), backup_time);
    assert_eq!(docs(&w, "orders_restored")[7], order(7));
    assert_eq!(
        shape(&w, "orders_restored").1,
        vec!["_id_".to_string(), "sku_1".to_string()]
    );
    assert_eq!(
        options_of(&w, "orders_restored"),
        Some(doc! {"validator": {"qty": {"$gte": 0}}})
    );
    assert!(
        ids(&w, "orders").is_empty(),
        "the damaged one is left as it is"
    );

    // In its place.
    let v = selective(
        &w,
        "r-replace",
        "  namespaces: [shop.orders]\n  onExisting: replace\n",
    );
    assert_eq!(v["status"], "done", "{v:#}\n{}", w.logs());
    assert_eq!(ids(&w, "orders"), backup_time);
    assert_eq!(
        shape(&w, "orders").1,
        vec!["_id_".to_string(), "sku_1".to_string()]
    );
    let d = w.describe("restore", "r-replace");
    let ns = &d["selective"]["namespaces"][0];
    assert_eq!(ns["targetState"], "replaced", "{d:#}");
    assert_eq!(ns["documents"], 50, "{d:#}");
    assert_eq!(ns["indexes"], 1, "{d:#}");

    // Merged into a collection changed since: backup documents come back as they were,
    // a document the backup does not hold stays.
    on_primary(
        &w,
        "shop",
        doc! {"delete": "orders", "deletes": [{"q": {"_id": {"$lt": 25}}, "limit": 0}]},
    );
    on_primary(
        &w,
        "shop",
        doc! {"update": "orders", "updates": [{"q": {"_id": 30}, "u": {"$set": {"qty": 999}}}]},
    );
    on_primary(
        &w,
        "shop",
        doc! {"insert": "orders", "documents": [{"_id": 1000}]},
    );
    let v = selective(
        &w,
        "r-merge",
        "  namespaces: [shop.orders]\n  onExisting: merge\n",
    );
    assert_eq!(v["status"], "done", "{v:#}\n{}", w.logs());
    let mut want = backup_time.clone();
    want.push(1000);
    assert_eq!(ids(&w, "orders"), want);
    assert_eq!(docs(&w, "orders")[30], order(30));

    // Everything else as it was; nothing left behind; no node ever restarted.
    assert_eq!(ids(&w, "customers"), (0..20).collect::<Vec<_>>());
    assert!(staging_left(&w).is_empty(), "{:?}", staging_left(&w));
    wait_until(&w, "the scratch directory is removed", || {
        scratch_left(scratch.path()).is_empty()
    });
    let after = w.uptimes();
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        assert!(a > b, "member {i} restarted: uptime {b} then {a}");
    }
    let _ = agent.kill();
    let _ = agent.wait();
}

#[test]
fn a_drill_agent_killed_mid_copy_leaves_the_target_as_it_was() {
    let w = damaged_after_backup("selective-kill", 3000);
    let scratch = tempfile::TempDir::new().unwrap();
    // Each batch read from the restored standalone takes 2 s: the copy outlasts the kill
    // below by seconds.
    let mut agent = w.drill_agent(scratch.path(), "drill-1", &["--sim-slow-find-ms=2000"]);
    copy_begun(&w, "r-kill");
    assert_eq!(
        staging_left(&w).len(),
        1,
        "the copy goes into a staging collection"
    );
    agent.kill().unwrap(); // SIGKILL
    let _ = agent.wait();
    assert!(
        ids(&w, "orders").is_empty(),
        "the target is untouched: {} documents; staging {:?}\n{:#}\n{}",
        ids(&w, "orders").len(),
        staging_left(&w),
        w.describe("restore", "r-kill"),
        std::fs::read_to_string(w.rig.control.path().join("drill-1.log")).unwrap_or_default()
    );

    // Its restart finds the op interrupted: the staging collection is dropped and the
    // restore ends in error, naming the state of the target.
    let mut agent = w.drill_agent(scratch.path(), "drill-1", &[]);
    let v = w.wait_end("restore", "r-kill");
    assert_eq!(v["status"], "error", "{v:#}");
    let reason = v["reason"].as_str().unwrap();
    assert!(
        reason.contains("phase Import") || reason.contains("phase import"),
        "{reason}"
    );
    assert!(
        reason.contains("no target collection was changed"),
        "{reason}"
    );
    assert!(
        reason.contains("staging collections were dropped"),
        "{reason}"
    );
    assert!(staging_left(&w).is_empty(), "{:?}", staging_left(&w));
    assert!(ids(&w, "orders").is_empty());
    let _ = agent.kill();
    let _ = agent.wait();

    // Cancelled mid-copy: the agent stops at its next batch, drops the staging collection
    // and the restore ends cancelled, the target untouched.
    let mut agent = w.drill_agent(scratch.path(), "drill-1", &["--sim-slow-find-ms=2000"]);
    copy_begun(&w, "r-cancel");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args([
            "cancel-restore",
            "r-cancel",
            "-o",
            "json",
            "--wait",
            "60s",
            "--control",
        ])
        .arg(&w.rig.control_url)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}\n{}", w.logs());
    let v = w.wait_end("restore", "r-cancel");
    assert_eq!(v["status"], "cancelled", "{v:#}");
    let reason = v["reason"].as_str().unwrap();
    assert!(reason.contains("shop.orders untouched"), "{reason}");
    assert!(
        reason.contains("staging collections were dropped"),
        "{reason}"
    );
    assert!(staging_left(&w).is_empty(), "{:?}", staging_left(&w));
    assert!(ids(&w, "orders").is_empty());
    wait_until(&w, "the scratch directory is removed", || {
        scratch_left(scratch.path()).is_empty()
    });
    let _ = agent.kill();
    let _ = agent.wait();
}
