//! Helpers shared by the oplog tests: waiting on a condition, reading `replSetGetStatus`
//! optimes, the oplog's ends and `collStats`.

#![allow(dead_code)]

use bson::{Bson, Document, Timestamp, doc};
use mongod_sim::harness::Process;
use std::time::{Duration, Instant};

pub const LONG: Duration = Duration::from_secs(30);

/// Polls `f` every 20 ms until it returns `Some`, failing after `LONG` with `what`.
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + LONG;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn cmd(p: &Process, db: &str, c: Document) -> Document {
    p.command(db, c).unwrap()
}

pub fn ok(reply: &Document) -> bool {
    reply.get_f64("ok").unwrap_or(0.0) == 1.0
}

pub fn status(p: &Process) -> Document {
    cmd(p, "admin", doc! {"replSetGetStatus": 1})
}

/// `optimes.<name>` of a `replSetGetStatus` reply, as (ts, t).
pub fn optime(status: &Document, name: &str) -> (Timestamp, i64) {
    let o = status
        .get_document("optimes")
        .unwrap()
        .get_document(name)
        .unwrap_or_else(|_| panic!("no optimes.{name} in {status}"));
    (o.get_timestamp("ts").unwrap(), o.get_i64("t").unwrap())
}

pub fn first_batch(reply: &Document) -> Vec<Document> {
    reply
        .get_document("cursor")
        .unwrap_or_else(|_| panic!("not a cursor reply: {reply}"))
        .get_array("firstBatch")
        .unwrap()
        .iter()
        .filter_map(|d| d.as_document().cloned())
        .collect()
}

/// The oplog entry at one end: `1` the oldest held, `-1` the newest.
pub fn oplog_end(p: &Process, dir: i32) -> Document {
    let r = cmd(
        p,
        "local",
        doc! {"find": "oplog.rs", "sort": {"$natural": dir}, "limit": 1},
    );
    first_batch(&r).remove(0)
}

/// Every oplog entry's timestamp, in natural order.
pub fn oplog_ts(p: &Process) -> Vec<Timestamp> {
    let r = cmd(
        p,
        "local",
        doc! {"find": "oplog.rs", "filter": {}, "projection": {"ts": 1}, "batchSize": 1_000_000},
    );
    first_batch(&r)
        .iter()
        .map(|d| d.get_timestamp("ts").unwrap())
        .collect()
}

pub fn coll_stats(p: &Process, db: &str, coll: &str) -> Document {
    cmd(p, db, doc! {"collStats": coll})
}

pub fn num(d: &Document, key: &str) -> i64 {
    match d.get(key) {
        Some(Bson::Int32(n)) => i64::from(*n),
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Double(n)) => *n as i64,
        other => panic!("{key} is {other:?} in {d}"),
    }
}

/// Inserts one document and returns the timestamp of its oplog entry.
pub fn insert(p: &Process, coll: &str, d: Document) -> Timestamp {
    let id = d.get("_id").cloned().unwrap();
    let r = cmd(p, "app", doc! {"insert": coll, "documents": [d]});
    assert!(ok(&r) && r.get_i32("n").ok() == Some(1), "{r}");
    let e = first_batch(&cmd(
        p,
        "local",
        doc! {"find": "oplog.rs", "filter": {"ns": format!("app.{coll}"), "o._id": id}},
    ));
    e[0].get_timestamp("ts").unwrap()
}

/// A document of about `kib` KiB.
pub fn big(id: i32, kib: usize) -> Document {
    let payload = bson::Binary {
        subtype: bson::spec::BinarySubtype::Generic,
        bytes: vec![0x5a; kib * 1024],
    };
    doc! {"_id": id, "payload": payload}
}
