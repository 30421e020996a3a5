//! The `applyOps` command as mongod 7.0 runs it: entries applied in order and not
//! atomically, an insert of an existing `_id` replacing it (so a retried batch is
//! idempotent), mongod's error shapes, and on a primary every applied write logged as its
//! own entry and replicated.

mod common;

use bson::{Document, doc};
use common::*;
use mongod_sim::harness::{Process, ReplicaSet, Standalone, free_port};

fn docs(p: &Process, coll: &str) -> Vec<Document> {
    first_batch(&cmd(
        p,
        "app",
        doc! {"find": coll, "filter": {}, "sort": {"_id": 1}, "batchSize": 1000},
    ))
}

fn batch() -> Vec<Document> {
    vec![
        doc! {"op": "c", "ns": "app.$cmd", "o": {"create": "c", "validator": {"n": {"$gte": 0}}}},
        doc! {"op": "c", "ns": "app.$cmd", "o": {"createIndexes": "c", "v": 2, "key": {"k": 1}, "name": "k_1"}},
        doc! {"op": "i", "ns": "app.c", "o": {"_id": 1, "n": 1, "x": {"y": 1}}},
        doc! {"op": "i", "ns": "app.c", "o": {"_id": 2, "n": 2}},
        doc! {"op": "n", "ns": "", "o": {"msg": "skipped, not counted"}},
        doc! {"op": "u", "ns": "app.c", "o": {"$v": 2, "diff": {"u": {"n": 5}, "sx": {"i": {"z": 2}}}}, "o2": {"_id": 1}},
        doc! {"op": "u", "ns": "app.c", "o": {"_id": 2, "whole": true}, "o2": {"_id": 2}},
        doc! {"op": "i", "ns": "app.c", "o": {"_id": 3}},
        doc! {"op": "d", "ns": "app.c", "o": {"_id": 3}},
        doc! {"op": "c", "ns": "app.$cmd", "o": {"applyOps": [{"op": "i", "ns": "app.c", "o": {"_id": 4}}]}},
    ]
}

fn want() -> Vec<Document> {
    vec![
        doc! {"_id": 1, "n": 5, "x": {"y": 1, "z": 2}},
        doc! {"_id": 2, "whole": true},
        doc! {"_id": 4},
    ]
}

fn apply(p: &Process, ops: Vec<Document>) -> Document {
    cmd(p, "admin", doc! {"applyOps": ops})
}

#[test]
fn a_standalone_applies_a_batch_idempotently_and_journals_it() {
    let mut s = Standalone::start(&["--sim-checkpoint-interval-ms", "600000"]).unwrap();
    let p = &s.process;
    let r = apply(p, batch());
    assert_eq!(
        r,
        doc! {"applied": 9, "results": [true, true, true, true, true, true, true, true, true], "ok": 1.0}
    );
    assert_eq!(docs(p, "c"), want());
    // A retried batch (a replay that stopped half-way) changes nothing and succeeds.
    let again = apply(p, batch());
    assert!(ok(&again), "{again}");
    assert_eq!(docs(p, "c"), want());
    let names: Vec<String> = first_batch(&cmd(p, "app", doc! {"listIndexes": "c"}))
        .iter()
        .map(|i| i.get_str("name").unwrap().to_string())
        .collect();
    assert_eq!(names, ["_id_", "k_1"]);

    errors_stop_the_batch_or_mark_an_entry(p);
    index_builds_and_refusals(p);
    // Journaled: a kill -9 keeps it all.
    let before = docs(p, "c");
    s.process.kill();
    let mut again = Process::spawn(
        &s.process.dbpath,
        &s.process.logpath,
        free_port().unwrap(),
        &s.process.args.clone(),
    )
    .unwrap();
    again.wait_ready(LONG).unwrap();
    assert_eq!(docs(&again, "c"), before);
}

fn errors_stop_the_batch_or_mark_an_entry(p: &Process) {
    // A thrown error stops the batch: the entries before it stay applied.
    let r = apply(
        p,
        vec![
            doc! {"op": "i", "ns": "app.c", "o": {"_id": 5}},
            doc! {"op": "i", "ns": "app.nothing", "o": {"_id": 1}},
            doc! {"op": "i", "ns": "app.c", "o": {"_id": 6}},
        ],
    );
    assert_eq!(r.get_i32("applied").unwrap(), 2, "{r}");
    assert_eq!(r.get_i32("code").unwrap(), 26, "{r}");
    assert_eq!(r.get_str("codeName").unwrap(), "NamespaceNotFound");
    assert!(
        r.get_str("errmsg").unwrap().starts_with(
            "cannot apply insert or update operation on a non-existent namespace app.nothing"
        ),
        "{r}"
    );
    assert_eq!(
        r.get_array("results").unwrap(),
        &vec![true.into(), false.into()]
    );
    assert!(!ok(&r));
    // An update that finds no document is a false result; the batch goes on.
    let r = apply(
        p,
        vec![
            doc! {"op": "u", "ns": "app.c", "o": {"$v": 2, "diff": {"u": {"n": 1}}}, "o2": {"_id": 99}},
            doc! {"op": "i", "ns": "app.c", "o": {"_id": 6}},
        ],
    );
    assert_eq!(r.get_i32("code").unwrap(), 8, "{r}");
    assert_eq!(
        r.get_array("results").unwrap(),
        &vec![false.into(), true.into()]
    );
    // ...unless in InitialSync mode, which skips it.
    let r = cmd(
        p,
        "admin",
        doc! {"applyOps": [{"op": "u", "ns": "app.c", "o": {"$v": 2, "diff": {"u": {"n": 1}}}, "o2": {"_id": 99}}], "oplogApplicationMode": "InitialSync"},
    );
    assert!(ok(&r), "{r}");
}

fn index_builds_and_refusals(p: &Process) {
    // Two-phase index build entries: refused in ApplyOps mode, applied as initial sync does.
    let build = vec![
        doc! {"op": "c", "ns": "app.$cmd", "o": {"startIndexBuild": "c", "indexBuildUUID": bson::Uuid::new(), "indexes": [{"v": 2, "key": {"m": 1}, "name": "m_1"}]}},
        doc! {"op": "c", "ns": "app.$cmd", "o": {"commitIndexBuild": "c", "indexBuildUUID": bson::Uuid::new(), "indexes": [{"v": 2, "key": {"m": 1}, "name": "m_1"}]}},
    ];
    let r = apply(p, build.clone());
    assert_eq!(r.get_i32("code").unwrap(), 115, "{r}");
    assert_eq!(
        r.get_str("errmsg").unwrap(),
        "The startIndexBuild operation is not supported in applyOps mode"
    );
    let r = cmd(
        p,
        "admin",
        doc! {"applyOps": build, "oplogApplicationMode": "InitialSync"},
    );
    assert!(ok(&r), "{r}");
    let names = first_batch(&cmd(p, "app", doc! {"listIndexes": "c"}));
    assert_eq!(names.len(), 3, "{names:?}");
    // The command's own refusals.
    let r = apply(
        p,
        vec![doc! {"op": "c", "ns": "app.$cmd", "o": {"applyOps": [], "partialTxn": true}}],
    );
    assert_eq!(r.get_i32("code").unwrap(), 31056, "{r}");
    let r = apply(
        p,
        vec![
            doc! {"op": "c", "ns": "app.$cmd", "o": {"dropDatabase": 1}},
            doc! {"op": "i", "ns": "app.c", "o": {"_id": 7}},
        ],
    );
    assert_eq!(r.get_i32("code").unwrap(), 6275900, "{r}");
}

#[test]
fn a_primary_logs_each_applied_write_and_secondaries_follow() {
    let rs = ReplicaSet::start("aops", 2).unwrap();
    let p = rs.wait_for_primary(LONG).unwrap();
    let pp = rs.process(p).unwrap();
    let r = apply(pp, batch());
    assert!(ok(&r), "{r}");
    let entries = first_batch(&cmd(
        pp,
        "local",
        doc! {"find": "oplog.rs", "filter": {"$or": [{"ns": "app.c"}, {"ns": "app.$cmd"}]}, "batchSize": 1000},
    ));
    let kinds: Vec<String> = entries
        .iter()
        .map(|e| {
            let o = e.get_document("o").unwrap();
            match e.get_str("op").unwrap() {
                "c" => o.keys().next().unwrap().to_string(),
                op => op.to_string(),
            }
        })
        .collect();
    // mongod 7.0 runs applyOps non-atomically: each write is its own entry, none is an
    // `applyOps` entry (the nested one too is unpacked).
    assert_eq!(
        kinds,
        ["create", "createIndexes", "i", "i", "u", "u", "i", "d", "i"]
    );
    assert!(entries.iter().all(|e| e.get("ui").is_some()), "{entries:?}");
    let s = 1 - p;
    wait_for("the secondary to apply the batch", || {
        (docs(rs.process(s).unwrap(), "c") == want()).then_some(())
    });
    // The secondary's collection has the primary's UUID, so `ui` means the same everywhere.
    let uuid = |i: usize| {
        first_batch(&cmd(
            rs.process(i).unwrap(),
            "app",
            doc! {"listCollections": 1},
        ))[0]
            .get_document("info")
            .unwrap()
            .get("uuid")
            .cloned()
    };
    assert_eq!(uuid(p), uuid(s));
    let r = apply(rs.process(s).unwrap(), batch());
    assert_eq!(r.get_i32("code").unwrap(), 10107, "{r}");
}

/// A collection keeps its UUID across a restart, as in mongod: an oplog entry of the
/// replica set, replayed on the member restarted as a standalone, finds its collection by
/// `ui` (a point-in-time replay does exactly this).
#[test]
fn an_entrys_ui_finds_its_collection_after_a_restart_as_a_standalone() {
    let mut rs = ReplicaSet::start("ui-restart", 2).unwrap();
    let p = rs.wait_for_primary(LONG).unwrap();
    let s = 1 - p;
    insert(rs.process(p).unwrap(), "items", doc! {"_id": 1});
    let entry = wait_for("the insert on the secondary", || {
        first_batch(&cmd(
            rs.process(s).unwrap(),
            "local",
            doc! {"find": "oplog.rs", "filter": {"ns": "app.items", "op": "i"}},
        ))
        .into_iter()
        .next()
    });
    rs.stop(s).unwrap();
    let sp = rs.start_standalone_on(s, &[]).unwrap();
    let mut op = doc! {"op": "i", "ns": "app.items", "o": {"_id": 2}};
    op.insert("ui", entry.get("ui").unwrap().clone());
    let r = cmd(&sp, "admin", doc! {"applyOps": [op]});
    assert!(ok(&r), "{r}");
    assert_eq!(docs(&sp, "items"), vec![doc! {"_id": 1}, doc! {"_id": 2}]);
}
