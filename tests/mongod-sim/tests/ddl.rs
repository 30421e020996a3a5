//! Collection options, secondary index specs and renames: reported as mongod reports them,
//! kept across a clean restart and a `kill -9`, replicated, and cloned by initial sync.

use bson::{Document, doc};
use mongod_sim::harness::{Process, ReplicaSet, Standalone, fast_flags, free_port};
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(30);

fn first_batch(reply: &Document) -> Vec<Document> {
    reply
        .get_document("cursor")
        .and_then(|c| c.get_array("firstBatch"))
        .map(|a| a.iter().filter_map(|d| d.as_document().cloned()).collect())
        .unwrap_or_default()
}

/// (collection names with their options, index names of `shop.orders`)
fn shape(p: &Process, coll: &str) -> (Vec<(String, Document)>, Vec<String>) {
    let colls = first_batch(&p.command("shop", doc! {"listCollections": 1}).unwrap())
        .into_iter()
        .map(|c| {
            (
                c.get_str("name").unwrap().to_string(),
                c.get_document("options").unwrap().clone(),
            )
        })
        .collect();
    let indexes = p
        .command("shop", doc! {"listIndexes": coll})
        .map(|r| {
            first_batch(&r)
                .iter()
                .map(|i| i.get_str("name").unwrap().to_string())
                .collect()
        })
        .unwrap_or_default();
    (colls, indexes)
}

fn make_orders(p: &Process) {
    p.command(
        "shop",
        doc! {"create": "orders", "validator": {"qty": {"$gte": 0}}, "collation": {"locale": "fr"}, "writeConcern": {"w": 1}},
    )
    .unwrap();
    p.command(
        "shop",
        doc! {"createIndexes": "orders", "indexes": [{"key": {"sku": 1}, "name": "sku_1", "unique": true}]},
    )
    .unwrap();
}

fn want_orders() -> (Vec<(String, Document)>, Vec<String>) {
    (
        vec![(
            "orders".to_string(),
            doc! {"validator": {"qty": {"$gte": 0}}, "collation": {"locale": "fr"}},
        )],
        vec!["_id_".to_string(), "sku_1".to_string()],
    )
}

#[test]
fn options_indexes_and_renames_survive_restarts_and_kill_9() {
    let mut s = Standalone::start(&[]).unwrap();
    make_orders(&s.process);
    assert_eq!(shape(&s.process, "orders"), want_orders());
    // An index of the same name with another key conflicts; the same one is a no-op.
    let again = s
        .process
        .command(
            "shop",
            doc! {"createIndexes": "orders", "indexes": [{"key": {"sku": 1}, "name": "sku_1", "unique": true}]},
        )
        .unwrap();
    assert_eq!(again.get_i32("numIndexesAfter").unwrap(), 2, "{again}");
    let conflict = s
        .process
        .command(
            "shop",
            doc! {"createIndexes": "orders", "indexes": [{"key": {"qty": 1}, "name": "sku_1"}]},
        )
        .unwrap();
    assert_eq!(conflict.get_i32("code").unwrap(), 86, "{conflict}");
    let missing = s
        .process
        .command("shop", doc! {"listIndexes": "nothing"})
        .unwrap();
    assert_eq!(missing.get_i32("code").unwrap(), 26, "{missing}");
    assert_eq!(s.process.shutdown(false).unwrap().code(), Some(0));

    let args: Vec<String> = ["--sim-checkpoint-interval-ms", "600000"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let log = s.dir.path().join("2.log");
    let mut p = Process::spawn(&s.process.dbpath, &log, free_port().unwrap(), &args).unwrap();
    p.wait_ready(LONG).unwrap();
    assert_eq!(shape(&p, "orders"), want_orders(), "after a clean restart");
    // Renames: onto an existing target only with dropTarget; the files move with it.
    p.command(
        "shop",
        doc! {"insert": "staging", "documents": [{"_id": 1}]},
    )
    .unwrap();
    let exists = p
        .command(
            "admin",
            doc! {"renameCollection": "shop.staging", "to": "shop.orders"},
        )
        .unwrap();
    assert_eq!(exists.get_i32("code").unwrap(), 48, "{exists}");
    let gone = p
        .command(
            "admin",
            doc! {"renameCollection": "shop.none", "to": "shop.x"},
        )
        .unwrap();
    assert_eq!(gone.get_i32("code").unwrap(), 26, "{gone}");
    p.command(
        "admin",
        doc! {"renameCollection": "shop.orders", "to": "shop.old"},
    )
    .unwrap();
    p.command(
        "admin",
        doc! {"renameCollection": "shop.staging", "to": "shop.old", "dropTarget": true},
    )
    .unwrap();
    p.kill();
    let log = s.dir.path().join("3.log");
    let mut p =
        Process::spawn(&s.process.dbpath, &log, free_port().unwrap(), &fast_flags()).unwrap();
    p.wait_ready(LONG).unwrap();
    let (colls, indexes) = shape(&p, "old");
    assert_eq!(colls, vec![("old".to_string(), doc! {})], "after kill -9");
    assert_eq!(indexes, vec!["_id_".to_string()]);
    let n = p.command("shop", doc! {"count": "old"}).unwrap();
    assert_eq!(n.get_i64("n").unwrap(), 1);
}

#[test]
fn options_and_indexes_replicate_and_initial_sync_clones_them() {
    let mut rs = ReplicaSet::start("rsddl", 3).unwrap();
    let p = rs.wait_for_primary(LONG).unwrap();
    make_orders(rs.process(p).unwrap());
    let s = (p + 1) % 3;
    let deadline = Instant::now() + LONG;
    while shape(rs.process(s).unwrap(), "orders") != want_orders() {
        assert!(Instant::now() < deadline, "never replicated");
        std::thread::sleep(Duration::from_millis(20));
    }
    rs.stop(s).unwrap();
    rs.wipe(s).unwrap();
    rs.restart(s).unwrap();
    rs.wait_for_state(s, 2, LONG).unwrap();
    assert_eq!(shape(rs.process(s).unwrap(), "orders"), want_orders());
}
