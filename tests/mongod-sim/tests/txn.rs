//! Multi-document transactions in the oplog as a 7.0 primary writes them: one `applyOps`
//! entry with `lsid`, `txnNumber` and a null `prevOpTime`, or a chain of `partialTxn`
//! entries linked by `prevOpTime` whose last one carries `count`; secondaries and crash
//! recovery apply the whole chain at its last entry.

mod common;

use bson::{Bson, Document, Timestamp, doc};
use common::*;
use mongod_sim::harness::{Process, ReplicaSet, Standalone};

fn lsid() -> Document {
    doc! {"id": bson::Binary {subtype: bson::spec::BinarySubtype::Uuid, bytes: bson::Uuid::new().bytes().to_vec()}}
}

/// One statement of transaction `n` on session `s`.
fn stmt(p: &Process, s: &Document, n: i64, first: bool, mut c: Document) -> Document {
    c.insert("lsid", s.clone());
    c.insert("txnNumber", n);
    c.insert("autocommit", false);
    if first {
        c.insert("startTransaction", true);
    }
    cmd(p, "app", c)
}

fn end(p: &Process, s: &Document, n: i64, how: &str) -> Document {
    cmd(
        p,
        "admin",
        doc! {how: 1, "lsid": s.clone(), "txnNumber": n, "autocommit": false},
    )
}

fn docs(p: &Process) -> Vec<Document> {
    first_batch(&cmd(
        p,
        "app",
        doc! {"find": "t", "filter": {}, "sort": {"_id": 1}, "batchSize": 1000},
    ))
}

fn txn_entries(p: &Process) -> Vec<Document> {
    first_batch(&cmd(
        p,
        "local",
        doc! {"find": "oplog.rs", "filter": {"ns": "admin.$cmd", "o.applyOps": {"$exists": true}}, "batchSize": 1000},
    ))
}

fn null_optime() -> Document {
    doc! {"ts": Timestamp { time: 0, increment: 0 }, "t": -1i64}
}

#[test]
fn a_small_transaction_is_one_apply_ops_entry() {
    let rs = ReplicaSet::start("txs", 2).unwrap();
    let p = rs.wait_for_primary(LONG).unwrap();
    let pp = rs.process(p).unwrap();
    insert(pp, "t", doc! {"_id": 0, "n": 0});
    let s = lsid();
    let r = stmt(
        pp,
        &s,
        1,
        true,
        doc! {"insert": "t", "documents": [{"_id": 1, "n": 1}]},
    );
    assert!(ok(&r), "{r}");
    // Each statement sees the ones before it; other readers see nothing until commit.
    let r = stmt(
        pp,
        &s,
        1,
        false,
        doc! {"update": "t", "updates": [{"q": {"_id": 1}, "u": {"$inc": {"n": 1}}}, {"q": {"_id": 0}, "u": {"$set": {"k": 1}}}]},
    );
    assert_eq!(r.get_i32("nModified").unwrap(), 2, "{r}");
    stmt(
        pp,
        &s,
        1,
        false,
        doc! {"delete": "t", "deletes": [{"q": {"_id": 0}, "limit": 1}]},
    );
    assert_eq!(docs(pp), vec![doc! {"_id": 0, "n": 0}]);
    assert!(ok(&end(pp, &s, 1, "commitTransaction")));
    assert_eq!(docs(pp), vec![doc! {"_id": 1, "n": 2}]);
    let e = txn_entries(pp);
    assert_eq!(e.len(), 1, "{e:?}");
    let e = &e[0];
    assert_eq!(e.get_str("op").unwrap(), "c");
    assert_eq!(e.get_i64("txnNumber").unwrap(), 1);
    assert_eq!(e.get_document("lsid").unwrap().get("id"), s.get("id"));
    assert!(e.get_document("lsid").unwrap().contains_key("uid"));
    assert_eq!(e.get_document("prevOpTime").unwrap(), &null_optime());
    let o = e.get_document("o").unwrap();
    assert_eq!(
        o.keys().collect::<Vec<_>>(),
        ["applyOps"],
        "no partialTxn, no count"
    );
    let ops: Vec<Document> = o
        .get_array("applyOps")
        .unwrap()
        .iter()
        .map(|op| {
            let mut op = op.as_document().unwrap().clone();
            assert!(op.remove("ui").is_some(), "{op}");
            op
        })
        .collect();
    assert_eq!(
        ops,
        vec![
            doc! {"op": "i", "ns": "app.t", "o": {"_id": 1, "n": 1}},
            doc! {"op": "u", "ns": "app.t", "o": {"$v": 2, "diff": {"u": {"n": 2}}}, "o2": {"_id": 1}},
            doc! {"op": "u", "ns": "app.t", "o": {"$v": 2, "diff": {"i": {"k": 1}}}, "o2": {"_id": 0}},
            doc! {"op": "d", "ns": "app.t", "o": {"_id": 0}},
        ]
    );
    retries_aborts_and_refusals(pp, &s);
    wait_for("the secondary to apply the transaction", || {
        (docs(rs.process(1 - p).unwrap()) == docs(pp)).then_some(())
    });
}

fn retries_aborts_and_refusals(pp: &Process, s: &Document) {
    // A retried commit succeeds; an aborted transaction leaves no trace.
    assert!(ok(&end(pp, s, 1, "commitTransaction")));
    stmt(
        pp,
        s,
        2,
        true,
        doc! {"insert": "t", "documents": [{"_id": 9}]},
    );
    assert!(ok(&end(pp, s, 2, "abortTransaction")));
    let r = end(pp, s, 2, "commitTransaction");
    assert_eq!(r.get_i32("code").unwrap(), 251, "{r}");
    let r = stmt(
        pp,
        s,
        1,
        true,
        doc! {"insert": "t", "documents": [{"_id": 8}]},
    );
    assert_eq!(r.get_i32("code").unwrap(), 225, "{r}");
    assert_eq!(txn_entries(pp).len(), 1);
    let st = Standalone::start(&[]).unwrap();
    let r = stmt(
        &st.process,
        s,
        1,
        true,
        doc! {"insert": "t", "documents": [{"_id": 1}]},
    );
    assert_eq!(r.get_i32("code").unwrap(), 20, "{r}");
}

#[test]
fn a_large_transaction_is_a_chain_applied_at_its_last_entry() {
    let mut rs = ReplicaSet::start_with(
        "txl",
        vec![Default::default(); 2],
        &[
            "--setParameter",
            "maxNumberOfTransactionOperationsInSingleOplogEntry=2",
            "--sim-checkpoint-interval-ms",
            "600000",
        ],
    )
    .unwrap();
    let p = rs.wait_for_primary(LONG).unwrap();
    let pp = rs.process(p).unwrap();
    let s = lsid();
    for i in 0..5 {
        let r = stmt(
            pp,
            &s,
            7,
            i == 0,
            doc! {"insert": "t", "documents": [{"_id": i}]},
        );
        assert!(ok(&r), "{r}");
    }
    assert!(ok(&end(pp, &s, 7, "commitTransaction")));
    let e = txn_entries(pp);
    // The collection is created inside the transaction: 6 ops in entries of 2.
    assert_eq!(e.len(), 3, "{e:?}");
    let o = |i: usize| e[i].get_document("o").unwrap();
    assert!(o(0).get_bool("partialTxn").unwrap());
    assert!(o(1).get_bool("partialTxn").unwrap());
    assert!(!o(2).contains_key("partialTxn"));
    assert_eq!(o(2).get_i64("count").unwrap(), 6);
    let first_op = o(0).get_array("applyOps").unwrap()[0]
        .as_document()
        .unwrap();
    assert_eq!(
        first_op
            .get_document("o")
            .unwrap()
            .get_str("create")
            .unwrap(),
        "t"
    );
    assert_eq!(e[0].get_document("prevOpTime").unwrap(), &null_optime());
    for i in 1..3 {
        let prev = e[i].get_document("prevOpTime").unwrap();
        assert_eq!(prev.get("ts"), e[i - 1].get("ts"));
        assert_eq!(prev.get("t"), e[i - 1].get("t"));
        assert!(e[i].get("lsid").is_some() && e[i].get("txnNumber") == Some(&Bson::Int64(7)));
    }
    let want: Vec<Document> = (0..5).map(|i| doc! {"_id": i}).collect();
    assert_eq!(docs(pp), want);
    let sec = 1 - p;
    wait_for("the secondary to apply the chain", || {
        (docs(rs.process(sec).unwrap()) == want).then_some(())
    });
    // Crash recovery replays the chain from the oplog.
    rs.kill(sec);
    rs.restart(sec).unwrap();
    assert_eq!(docs(rs.process(sec).unwrap()), want);
}
