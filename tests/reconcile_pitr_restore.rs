//! Point-in-time restores end to end, on a mongod-sim replica set whose oplog is sliced
//! every two seconds. After a base backup a writer inserts, updates, deletes, builds a
//! unique index and commits a transaction; then a second transaction's oplog chain starts
//! at the target and commits after it, and a `delete_many` wipes the collection. A
//! restore to the target (an exact cluster time inside one second) leaves, on every node,
//! exactly the documents the primary held at the target, the index, nothing of the second
//! transaction and nothing of the later writes; the set elects a primary and takes writes.
//! A node whose replay standalone dies fails in `replay`: with partial results accepted it
//! is wiped and initial-syncs (PartlyDone); without, every node goes back to its fallback
//! (Error). A newer base whose storage holds no oplog gives way to an older one that
//! reaches the target, and `diff` says why. (A target inside a gap: `reconcile_pitr.rs`,
//! where a real gap is made.)

#[path = "support/rig.rs"]
mod rig;
#[path = "support/world.rs"]
mod world;

use std::process::Command;
use std::time::{Duration, Instant};

use bson::{Bson, Document, doc};
use mongod_sim::client::BlockingConn;
use serde_json::Value;
use tidemark_schema::manifest::OpTime;
use world::*;

/// A no-op every second (the oplog and so the chunks keep up with the clock), and one
/// operation per oplog entry of a transaction, so every transaction is a `partialTxn`
/// chain.
const SIM_ARGS: &[&str] = &[
    "--setParameter",
    "periodicNoopIntervalSecs=1",
    "--setParameter",
    "maxNumberOfTransactionOperationsInSingleOplogEntry=1",
];

fn pitr_schedule(w: &World) {
    w.write(
        "schedule.yaml",
        &tidemark_testkit::pitr_schedule_yaml(rig::CLUSTER, "local", "2s"),
    );
}

/// A command on the current primary, over the wire (after a restore the agents, not the
/// harness, started the nodes).
fn on_primary(w: &World, db: &str, cmd: Document) -> Document {
    let started = Instant::now();
    loop {
        for i in 0..3 {
            let Ok(mut c) = BlockingConn::connect(&w.rig.node(i), Duration::from_secs(2)) else {
                continue;
            };
            if !c
                .hello()
                .is_ok_and(|h| h.get_bool("isWritablePrimary").unwrap_or(false))
            {
                continue;
            }
            if let Ok(r) = c.command(db, cmd.clone())
                && r.get_f64("ok").unwrap_or(0.0) == 1.0
            {
                return r;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no primary took {cmd}: {}",
            w.repl_summary()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn optime(r: &Document) -> OpTime {
    let t = r.get_timestamp("operationTime").expect("an operationTime");
    OpTime {
        t: t.time,
        i: t.increment,
    }
}

fn batch(r: &Document) -> Vec<Document> {
    r.get_document("cursor")
        .unwrap()
        .get_array("firstBatch")
        .unwrap()
        .iter()
        .filter_map(|d| d.as_document().cloned())
        .collect()
}

/// `app.items` on node `i`, sorted by `_id`; `None` while it does not answer.
fn items_at(w: &World, i: usize) -> Option<Vec<Document>> {
    let mut c = BlockingConn::connect(&w.rig.node(i), Duration::from_secs(2)).ok()?;
    let r = c
        .command(
            "app",
            doc! {"find": "items", "filter": {}, "sort": {"_id": 1}, "batchSize": 100_000},
        )
        .ok()?;
    (r.get_f64("ok").unwrap_or(0.0) == 1.0).then(|| batch(&r))
}

fn index_names_at(w: &World, i: usize) -> Vec<String> {
    let mut c = BlockingConn::connect(&w.rig.node(i), Duration::from_secs(2)).unwrap();
    let r = c.command("app", doc! {"listIndexes": "items"}).unwrap();
    batch(&r)
        .iter()
        .map(|d| d.get_str("name").unwrap().to_string())
        .collect()
}

fn lsid() -> Document {
    doc! {"id": bson::Binary {subtype: bson::spec::BinarySubtype::Uuid, bytes: bson::Uuid::new().bytes().to_vec()}}
}

/// A transaction of one statement per document, committed.
fn transaction(w: &World, ids: &[i32]) -> Document {
    let s = lsid();
    for (n, id) in ids.iter().enumerate() {
        let mut c = doc! {"insert": "items", "documents": [{"_id": id, "tx": true}], "lsid": s.clone(), "txnNumber": 1i64, "autocommit": false};
        if n == 0 {
            c.insert("startTransaction", true);
        }
        on_primary(w, "app", c);
    }
    on_primary(
        w,
        "admin",
        doc! {"commitTransaction": 1, "lsid": s.clone(), "txnNumber": 1i64, "autocommit": false},
    );
    s
}

/// The oplog entries of the transaction of session `s`, oldest first.
fn chain_of(w: &World, s: &Document) -> Vec<OpTime> {
    let r = on_primary(
        w,
        "local",
        doc! {"find": "oplog.rs", "filter": {"lsid.id": s.get("id").unwrap().clone()}, "sort": {"$natural": 1}},
    );
    batch(&r)
        .iter()
        .map(|e| {
            let t = e.get_timestamp("ts").unwrap();
            OpTime {
                t: t.time,
                i: t.increment,
            }
        })
        .collect()
}

/// What the test wrote, and what the primary held at the target.
struct History {
    target: OpTime,
    expected: Vec<Document>,
    /// `_id`s of the transaction whose commit is past the target.
    late_txn: Vec<i32>,
}

/// Agents (node `faulty`'s replay standalone crashes at its first `applyOps`), a base
/// backup, slicing, then the history the restores go back into.
fn prepared(name: &str, faulty: Option<usize>) -> (World, History) {
    let mut w = World::with_sim_args(name, SIM_ARGS);
    w.rig.insert(0..50);
    for i in 0..3 {
        match faulty {
            Some(f) if f == i => w
                .rig
                .start_agent_with(i, &["--standalone-arg=--sim-crash-at=apply-ops"]),
            _ => w.rig.start_agent(i),
        }
    }
    w.start_reconciler();
    w.backup("base");
    pitr_schedule(&w);
    wait_until(&w, "a first chunk", || {
        w.rig
            .control
            .path()
            .join("pitr/chunks")
            .join(rig::CLUSTER)
            .exists()
    });
    let docs: Vec<Document> = (100..110).map(|i| doc! {"_id": i, "a": i}).collect();
    on_primary(&w, "app", doc! {"insert": "items", "documents": docs});
    on_primary(
        &w,
        "app",
        doc! {"update": "items", "updates": [{"q": {"_id": 1}, "u": {"$set": {"changed": true}}}]},
    );
    on_primary(
        &w,
        "app",
        doc! {"delete": "items", "deletes": [{"q": {"_id": 2}, "limit": 1}]},
    );
    // A build on a non-empty collection: a two-phase build in the oplog.
    on_primary(
        &w,
        "app",
        doc! {"createIndexes": "items", "indexes": [{"key": {"a": 1}, "name": "a_1", "unique": true, "sparse": true}]},
    );
    transaction(&w, &[200, 201]);
    let expected = batch(&on_primary(
        &w,
        "app",
        doc! {"find": "items", "filter": {}, "sort": {"_id": 1}, "batchSize": 100_000},
    ));
    // Its first entry is the target; its commit, one second's entry later, is past it.
    let late_txn = vec![300, 301, 302];
    let s = transaction(&w, &late_txn);
    let chain = chain_of(&w, &s);
    assert_eq!(chain.len(), 3, "one entry per operation: {chain:?}");
    let target = chain[0];
    // The chain is written at the commit, in one go: the target splits one second.
    assert_eq!(chain[2].t, target.t, "{chain:?}");
    on_primary(
        &w,
        "app",
        doc! {"delete": "items", "deletes": [{"q": {}, "limit": 0}]},
    );
    w.rig.insert(5000..5010);
    (
        w,
        History {
            target,
            expected,
            late_txn,
        },
    )
}

fn restore_text(name: &str, source: &str, extra: &str) -> String {
    format!(
        "apiVersion: tidemark/v1\nkind: Restore\nmetadata:\n  name: {name}\nspec:\n  \
         cluster: {}\n  source:\n{source}  fallbackEnabled: true\n  postRestore:\n    \
         startNodes: true\n{extra}",
        rig::CLUSTER
    )
}

fn restore_yaml(w: &World, name: &str, source: &str, extra: &str) {
    w.write(
        &format!("restore-{name}.yaml"),
        &restore_text(name, source, extra),
    );
}

fn at_cluster_time(t: OpTime) -> String {
    format!("    pointInTime: {{t: {}, i: {}}}\n", t.t, t.i)
}

/// Every node serves exactly `want` in `app.items`.
fn wait_items(w: &World, i: usize, want: &[Document]) {
    let started = Instant::now();
    loop {
        let got = items_at(w, i);
        if got.as_deref() == Some(want) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "node {i} serves {} documents, want {}; first difference: {:?}\n{}\n{}",
            got.as_ref().map_or(0, Vec::len),
            want.len(),
            got.as_ref().and_then(|g| g
                .iter()
                .zip(want)
                .find(|(a, b)| a != b)
                .map(|(a, b)| format!("{a} != {b}"))),
            w.repl_summary(),
            w.logs()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The node report of `describe-restore` for node `i`.
fn node_report(w: &World, v: &Value, i: usize) -> Value {
    node_view(w, v, i)
}

#[test]
fn a_restore_to_a_cluster_time_keeps_exactly_the_writes_at_or_before_it() {
    let (w, h) = prepared("pitr-restore", None);
    restore_yaml(&w, "undo", &at_cluster_time(h.target), "");
    let v = w.wait_end("restore", "undo");
    assert_eq!(v["status"], "done", "{v:#}\n{}", w.logs());
    for i in 0..3 {
        wait_items(&w, i, &h.expected);
        let names = index_names_at(&w, i);
        assert!(names.contains(&"a_1".to_string()), "node {i}: {names:?}");
        let ids: Vec<Bson> = items_at(&w, i)
            .unwrap()
            .iter()
            .map(|d| d.get("_id").unwrap().clone())
            .collect();
        for id in &h.late_txn {
            assert!(
                !ids.contains(&Bson::Int32(*id)),
                "node {i}: the transaction committed after the target is not applied"
            );
        }
    }
    // `describe-restore` names the target and each node's replay.
    let d = w.describe("restore", "undo");
    assert_eq!(
        d["pointInTime"]["target"]["until"],
        serde_json::json!({"t": h.target.t, "i": h.target.i}),
        "{d:#}"
    );
    let text = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["describe-restore", "undo", "--control"])
        .arg(w.rig.control.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    assert!(
        text.contains(&format!(
            "point in time: replays the oplog up to {}",
            h.target
        )),
        "{text}"
    );
    // Each node said how far it replayed.
    for i in 0..3 {
        let n = node_report(&w, &v, i);
        assert!(
            n.to_string().contains("replayed the oplog"),
            "node {i}: {n:#}"
        );
    }
    // The restored set takes writes, and the unique index is enforced.
    on_primary(
        &w,
        "app",
        doc! {"insert": "items", "documents": [{"_id": 9000, "a": 9000}]},
    );
    let dup = on_primary(
        &w,
        "app",
        doc! {"insert": "items", "documents": [{"_id": 9001, "a": 9000}]},
    );
    assert!(dup.get_array("writeErrors").is_ok(), "{dup}");
}

#[test]
fn a_node_that_fails_its_replay_is_wiped_for_initial_sync_when_partial_results_are_accepted() {
    let (w, h) = prepared("pitr-partly", Some(2));
    restore_yaml(&w, "undo", &at_cluster_time(h.target), "");
    let v = w.wait_end("restore", "undo");
    assert_eq!(v["status"], "partlyDone", "{v:#}\n{}", w.logs());
    let failed = node_report(&w, &v, 2);
    assert!(
        failed.to_string().contains("replay"),
        "the node failed in replay: {failed:#}"
    );
    for i in 0..3 {
        wait_items(&w, i, &h.expected);
    }
}

#[test]
fn a_failed_replay_without_partial_results_puts_every_node_back() {
    let (w, h) = prepared("pitr-error", Some(1));
    let before = items_at(&w, w.rig.primary()).unwrap();
    let target = h.target;
    restore_yaml(
        &w,
        "undo",
        &at_cluster_time(target),
        "  allowPartlyDone: false\n",
    );
    let v = w.wait_end("restore", "undo");
    assert_eq!(v["status"], "error", "{v:#}\n{}", w.logs());
    for i in 0..3 {
        wait_items(&w, i, &before);
    }
}

#[test]
fn a_newer_base_without_oplog_gives_way_to_an_older_one_that_reaches_the_target() {
    let (w, h) = prepared("pitr-bases", None);
    // A newer base, in a storage no oplog is sliced into.
    let other = tempfile::TempDir::new().unwrap();
    w.write(
        "other.yaml",
        &format!(
            "apiVersion: tidemark/v1\nkind: BackupStorage\nmetadata:\n  name: other\nspec:\n  \
             url: file://{}\n",
            other.path().display()
        ),
    );
    w.write(
        "backup-newer.yaml",
        &format!(
            "apiVersion: tidemark/v1\nkind: Backup\nmetadata:\n  name: newer\nspec:\n  \
             cluster: {}\n  storage: other\n  type: physical\n",
            rig::CLUSTER
        ),
    );
    let v = w.wait_end("backup", "newer");
    assert_eq!(v["status"], "done", "{v:#}");
    let after_newer = batch(&on_primary(
        &w,
        "app",
        doc! {"find": "items", "filter": {}, "sort": {"_id": 1}, "batchSize": 100_000},
    ));
    // Past the newest base: the restore there goes from "base" through the slices.
    let r = on_primary(
        &w,
        "app",
        doc! {"insert": "items", "documents": [{"_id": 7000}]},
    );
    let target = optime(&r);
    on_primary(
        &w,
        "app",
        doc! {"insert": "items", "documents": [{"_id": 7001}]},
    );
    let mut want = after_newer.clone();
    want.push(doc! {"_id": 7000});
    let _ = h;
    // `diff` says which base and why, before anything runs: asked of a copy of the
    // policies with the restore in it, so the running reconciler cannot start it first.
    // Blocked (a note) until the slices reach the target, then a start.
    let source = at_cluster_time(target);
    let yaml = restore_text("older", &source, "");
    let mut step = None;
    wait_until(&w, "a startRestore step in the preview", || {
        step = w.preview_restore("older", &yaml);
        step.as_ref().is_some_and(|s| s["action"] == "startRestore")
    });
    let reason = step.unwrap()["reason"].as_str().unwrap().to_string();
    assert!(
        reason.contains("backup \"newer\", cannot reach it")
            && reason.contains("backup \"base\" can"),
        "{reason}"
    );
    restore_yaml(&w, "older", &source, "");
    let v = w.wait_end("restore", "older");
    assert_eq!(v["status"], "done", "{v:#}\n{}", w.logs());
    for i in 0..3 {
        wait_items(&w, i, &want);
    }
    drop(other);
}

/// The object of the chunk holding `target`, once it is sliced.
fn chunk_holding(w: &World, target: OpTime) -> String {
    let mut object = None;
    wait_until(w, "a chunk holding the target", || {
        object = w
            .chunk_records()
            .into_iter()
            .find(|c| c.first <= target && target < c.last)
            .map(|c| c.object);
        object.is_some()
    });
    object.unwrap()
}

#[test]
fn a_missing_chunk_refuses_the_restore_before_any_op_is_written() {
    let (w, h) = prepared("pitr-missing", None);
    let object = chunk_holding(&w, h.target);
    std::fs::remove_file(w.rig.storage_dir.path().join(&object)).unwrap();
    let before = items_at(&w, w.rig.primary()).unwrap();
    restore_yaml(&w, "undo", &at_cluster_time(h.target), "");
    let v = w.wait_end("restore", "undo");
    assert_eq!(v["status"], "error", "{v:#}\n{}", w.logs());
    let d = w.describe("restore", "undo");
    let reason = d["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("refused before touching any node")
            && reason.contains(&format!("oplog chunk {object} is missing")),
        "{d:#}"
    );
    for i in 0..3 {
        assert_eq!(
            items_at(&w, i).as_ref(),
            Some(&before),
            "node {i} kept its data"
        );
    }
}

#[test]
fn a_corrupt_chunk_refuses_the_restore_before_any_node_is_touched() {
    let (w, h) = prepared("pitr-corrupt", None);
    // One byte flipped, its size kept: only the agents' check can see it.
    let object = chunk_holding(&w, h.target);
    let path = w.rig.storage_dir.path().join(&object);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let before = items_at(&w, w.rig.primary()).unwrap();
    restore_yaml(&w, "undo", &at_cluster_time(h.target), "");
    let v = w.wait_end("restore", "undo");
    assert_eq!(v["status"], "error", "{v:#}\n{}", w.logs());
    let text = v.to_string();
    assert!(text.contains(&object), "the chunk is named: {v:#}");
    for i in 0..3 {
        let n = node_report(&w, &v, i);
        assert_eq!(n["outcome"], "refused", "node {i} untouched: {n:#}");
        assert_eq!(
            items_at(&w, i).as_ref(),
            Some(&before),
            "node {i} kept its data"
        );
    }
}
