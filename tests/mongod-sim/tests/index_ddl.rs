//! Index builds and DDL in the oplog as mongod 7.0 writes them (two-phase builds on a
//! non-empty collection, `createIndexes` on an empty one, `dropIndexes`, `collMod`, `drop`,
//! `dropDatabase`), and unique indexes enforced with mongod's `E11000` errors.

mod common;

use bson::{Bson, Document, doc};
use common::*;
use mongod_sim::harness::{Process, ReplicaSet, Standalone};

/// The `o` of every oplog entry on `app.$cmd`, in order.
fn ddl_entries(p: &Process) -> Vec<Document> {
    first_batch(&cmd(
        p,
        "local",
        doc! {"find": "oplog.rs", "filter": {"ns": "app.$cmd"}, "batchSize": 1000},
    ))
}

fn index_names(p: &Process, coll: &str) -> Vec<String> {
    first_batch(&cmd(p, "app", doc! {"listIndexes": coll}))
        .iter()
        .map(|i| i.get_str("name").unwrap().to_string())
        .collect()
}

fn o(e: &Document) -> &Document {
    e.get_document("o").unwrap()
}

#[test]
fn index_builds_and_ddl_are_logged_as_mongod_7_writes_them() {
    let rs = ReplicaSet::start("idx", 2).unwrap();
    let p = rs.wait_for_primary(LONG).unwrap();
    let pp = rs.process(p).unwrap();
    // Empty (here: created by the command): one createIndexes entry per index.
    let r = cmd(
        pp,
        "app",
        doc! {"createIndexes": "e", "indexes": [{"key": {"a": 1}, "name": "a_1"}]},
    );
    assert!(r.get_bool("createdCollectionAutomatically").unwrap(), "{r}");
    // Non-empty: a two-phase build.
    insert(pp, "c", doc! {"_id": 1, "a": 1, "b": 1});
    insert(pp, "c", doc! {"_id": 2, "a": 2, "b": 1});
    let r = cmd(
        pp,
        "app",
        doc! {"createIndexes": "c", "indexes": [{"key": {"a": 1}, "name": "a_1", "unique": true}, {"key": {"b": -1}, "name": "b_-1", "expireAfterSeconds": 60}]},
    );
    assert_eq!(r.get_i32("numIndexesAfter").unwrap(), 3, "{r}");
    assert_eq!(r.get_str("commitQuorum").unwrap(), "votingMembers");
    // A unique index over duplicates aborts its build.
    let r = cmd(
        pp,
        "app",
        doc! {"createIndexes": "c", "indexes": [{"key": {"b": 1}, "name": "b_1", "unique": true}]},
    );
    assert_eq!(r.get_i32("code").unwrap(), 11000, "{r}");
    assert!(
        r.get_str("errmsg")
            .unwrap()
            .ends_with("E11000 duplicate key error collection: app.c index: b_1 dup key: { b: 1 }"),
        "{r}"
    );
    let e = ddl_entries(pp);
    let kinds: Vec<&str> = e
        .iter()
        .map(|e| o(e).keys().next().unwrap().as_str())
        .collect();
    assert_eq!(
        kinds,
        [
            "create",
            "createIndexes",
            "create",
            "startIndexBuild",
            "commitIndexBuild",
            "startIndexBuild",
            "abortIndexBuild"
        ]
    );
    assert_eq!(
        o(&e[1]),
        &doc! {"createIndexes": "e", "v": 2, "key": {"a": 1}, "name": "a_1"}
    );
    assert_eq!(
        o(&e[2]).get_document("idIndex").unwrap(),
        &doc! {"v": 2, "key": {"_id": 1}, "name": "_id_"},
        "an implicit create"
    );
    let (start, commit) = (o(&e[3]), o(&e[4]));
    assert_eq!(start.get("indexBuildUUID"), commit.get("indexBuildUUID"));
    assert_eq!(start.get_array("indexes").unwrap().len(), 2);
    assert_eq!(
        start.get_array("indexes").ok(),
        commit.get_array("indexes").ok()
    );
    assert_eq!(
        o(&e[6])
            .get_document("cause")
            .unwrap()
            .get_i32("code")
            .unwrap(),
        11000
    );
    assert!(e[3..].iter().all(|e| e.get("ui").is_some()));
    drops_and_coll_mod(&rs, p);
}

fn drops_and_coll_mod(rs: &ReplicaSet, p: usize) {
    let pp = rs.process(p).unwrap();
    // dropIndexes by key, then "*"; collMod; drop; dropDatabase.
    let r = cmd(pp, "app", doc! {"dropIndexes": "c", "index": {"b": -1}});
    assert_eq!(r.get_i32("nIndexesWas").unwrap(), 3, "{r}");
    let r = cmd(pp, "app", doc! {"dropIndexes": "c", "index": "nope"});
    assert_eq!(r.get_i32("code").unwrap(), 27, "{r}");
    let r = cmd(pp, "app", doc! {"dropIndexes": "c", "index": "_id_"});
    assert_eq!(r.get_i32("code").unwrap(), 72, "{r}");
    let r = cmd(
        pp,
        "app",
        doc! {"collMod": "c", "validator": {"a": {"$type": "int"}}, "validationLevel": "moderate", "index": {"name": "a_1", "hidden": true}},
    );
    assert!(ok(&r), "{r}");
    assert_eq!(
        (r.get_bool("hidden_old").ok(), r.get_bool("hidden_new").ok()),
        (Some(false), Some(true))
    );
    let listed = first_batch(&cmd(pp, "app", doc! {"listIndexes": "c"}));
    assert!(listed[1].get_bool("hidden").unwrap(), "{listed:?}");
    let opts = first_batch(&cmd(
        pp,
        "app",
        doc! {"listCollections": 1, "filter": {"name": "c"}},
    ));
    assert_eq!(
        opts[0].get_document("options").unwrap(),
        &doc! {"validator": {"a": {"$type": "int"}}, "validationLevel": "moderate"}
    );
    let s = 1 - p;
    wait_for("the secondary to apply the DDL", || {
        let sp = rs.process(s).unwrap();
        // NamespaceNotFound until the secondary has created the collection.
        let r = cmd(sp, "app", doc! {"listIndexes": "c"});
        (ok(&r) && first_batch(&r) == listed).then_some(())
    });
    let r = cmd(pp, "app", doc! {"dropIndexes": "c", "index": "*"});
    assert_eq!(
        r.get_str("msg").unwrap(),
        "non-_id indexes dropped for collection"
    );
    assert_eq!(index_names(pp, "c"), ["_id_"]);
    cmd(pp, "app", doc! {"drop": "c"});
    cmd(pp, "app", doc! {"dropDatabase": 1});
    let e = ddl_entries(pp);
    let tail: Vec<Document> = e[7..].iter().map(|e| o(e).clone()).collect();
    assert_eq!(tail[0], doc! {"dropIndexes": "c", "index": "b_-1"});
    assert_eq!(
        e[7].get_document("o2").unwrap().get_str("name").unwrap(),
        "b_-1"
    );
    assert_eq!(tail[1].get_str("collMod").unwrap(), "c");
    assert_eq!(
        tail[1].get_document("index").unwrap(),
        &doc! {"name": "a_1", "hidden": true}
    );
    assert_eq!(tail[2], doc! {"dropIndexes": "c", "index": "a_1"});
    assert_eq!(tail[3], doc! {"drop": "c"});
    assert_eq!(
        e[10].get_document("o2").unwrap(),
        &doc! {"numRecords": 2i64}
    );
    assert_eq!(tail[4], doc! {"drop": "e"});
    assert_eq!(tail[5], doc! {"dropDatabase": 1});
    wait_for("the secondary to drop the database", || {
        let l = cmd(rs.process(s).unwrap(), "app", doc! {"listCollections": 1});
        first_batch(&l).is_empty().then_some(())
    });
}

#[test]
fn unique_indexes_reject_duplicates_as_mongod_does() {
    let s = Standalone::start(&[]).unwrap();
    let p = &s.process;
    cmd(
        p,
        "app",
        doc! {"createIndexes": "u", "indexes": [{"key": {"a": 1}, "name": "a_1", "unique": true}]},
    );
    let r = cmd(
        p,
        "app",
        doc! {"insert": "u", "documents": [{"_id": 1, "a": 1}, {"_id": 2, "a": 1}, {"_id": 3, "a": 3}]},
    );
    assert_eq!(r.get_i32("n").unwrap(), 1, "{r}");
    let err = r.get_array("writeErrors").unwrap()[0]
        .as_document()
        .unwrap()
        .clone();
    assert_eq!(
        err,
        doc! {"index": 1, "code": 11000, "errmsg": "E11000 duplicate key error collection: app.u index: a_1 dup key: { a: 1 }", "keyPattern": {"a": 1}, "keyValue": {"a": 1}}
    );
    // Documents missing the field are null in the index: only one may be.
    let r = cmd(
        p,
        "app",
        doc! {"insert": "u", "documents": [{"_id": 4}, {"_id": 5}]},
    );
    assert_eq!(r.get_i32("n").unwrap(), 1, "{r}");
    let err = r.get_array("writeErrors").unwrap()[0]
        .as_document()
        .unwrap();
    assert!(
        err.get_str("errmsg")
            .unwrap()
            .ends_with("dup key: { a: null }"),
        "{err}"
    );
    // An update onto another document's key, and an upsert.
    let r = cmd(
        p,
        "app",
        doc! {"update": "u", "updates": [{"q": {"_id": 4}, "u": {"$set": {"a": 1}}}]},
    );
    let err = r.get_array("writeErrors").unwrap()[0]
        .as_document()
        .unwrap();
    assert_eq!(err.get_i32("code").unwrap(), 11000, "{r}");
    assert_eq!(r.get_i32("nModified").unwrap(), 0);
    let r = cmd(
        p,
        "app",
        doc! {"update": "u", "updates": [{"q": {"_id": 1}, "u": {"$set": {"a": 7, "b": 1}}}]},
    );
    assert_eq!(
        r.get_i32("nModified").unwrap(),
        1,
        "its own key may change: {r}"
    );
    // Through applyOps: a thrown DuplicateKey stops the batch.
    let r = cmd(
        p,
        "admin",
        doc! {"applyOps": [{"op": "i", "ns": "app.u", "o": {"_id": 9, "a": 7}}]},
    );
    assert_eq!(r.get_i32("code").unwrap(), 11000, "{r}");
    assert_eq!(r.get_str("codeName").unwrap(), "DuplicateKey");
    assert_eq!(
        r.get_str("errmsg").unwrap(),
        "E11000 duplicate key error collection: app.u index: a_1 dup key: { a: 7 }"
    );
    let n = cmd(p, "app", doc! {"count": "u"});
    // _id 1 (ordered: the batch stopped at 2) and 4.
    assert_eq!(n.get("n"), Some(&Bson::Int64(2)), "{n}");
}
