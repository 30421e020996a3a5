//! The oplog as a point-in-time reader sees it: capped at `--oplogSize` (never truncated past
//! the majority commit point), resized by `replSetResizeOplog`, its first entry the oldest
//! held across restarts and `kill -9`, and moved on by periodic no-ops when idle.

mod common;

use bson::{Document, doc};
use common::*;
use mongod_sim::harness::{MemberSpec, Process, ReplicaSet, Standalone, free_port};

const MIB: i64 = 1024 * 1024;

fn oplog_size(p: &Process) -> (i64, i64, i64) {
    let s = coll_stats(p, "local", "oplog.rs");
    assert!(s.get_bool("capped").unwrap(), "{s}");
    (num(&s, "size"), num(&s, "maxSize"), num(&s, "count"))
}

/// Waits until the oplog fits its size again, and returns its timestamps.
fn wait_within_cap(p: &Process) -> Vec<bson::Timestamp> {
    wait_for("the oplog to be truncated to its size", || {
        let (size, max, _) = oplog_size(p);
        (size <= max).then(|| oplog_ts(p))
    })
}

#[test]
fn a_capped_oplog_keeps_its_size_and_its_first_entry_across_restarts() {
    let mut rs =
        ReplicaSet::start_with("cap", vec![MemberSpec::default()], &["--oplogSize", "1"]).unwrap();
    let p = rs.process(0).unwrap();
    assert_eq!(oplog_size(p).1, MIB);
    let colls = cmd(
        p,
        "local",
        doc! {"listCollections": 1, "filter": {"name": "oplog.rs"}},
    );
    let options = first_batch(&colls)[0]
        .get_document("options")
        .unwrap()
        .clone();
    assert_eq!(
        options,
        doc! {"capped": true, "size": MIB, "autoIndexId": false}
    );
    let initiated = oplog_end(p, 1).get_timestamp("ts").unwrap();
    let written: Vec<_> = (0..40).map(|i| insert(p, "c", big(i, 64))).collect();
    let held = wait_within_cap(p);
    let first = oplog_end(p, 1);
    assert_eq!(first.get_timestamp("ts").unwrap(), held[0]);
    assert!(held[0] > initiated, "the oldest entries went: {first}");
    assert_eq!(
        *held.last().unwrap(),
        *written.last().unwrap(),
        "the newest stays"
    );
    assert!(
        held.windows(2).all(|w| w[0] < w[1]),
        "natural order is ts order"
    );
    // No gap: every write from the first entry held on is still there.
    let from_first: Vec<_> = written.iter().filter(|t| **t >= held[0]).collect();
    assert!(from_first.iter().all(|t| held.contains(t)));
    assert_eq!(oplog_size(p).2, held.len() as i64);

    // A clean stop: the copy started standalone holds the same oplog and size; started
    // again with another --oplogSize it keeps its size (mongod reads the option only when it
    // creates the oplog).
    rs.stop(0).unwrap();
    let mut s = rs.start_standalone_on(0, &[]).unwrap();
    assert_eq!(oplog_ts(&s), held);
    assert_eq!(oplog_size(&s).1, MIB);
    s.shutdown(false).unwrap();
    rs.start_member_with_args(0, &["--oplogSize", "5"])
        .unwrap()
        .wait_ready(LONG)
        .unwrap();
    rs.wait_for_primary(LONG).unwrap();
    let p = rs.process(0).unwrap();
    assert_eq!(oplog_size(p).1, MIB);

    // kill -9 after truncations only journaled: the copy started standalone sees them.
    for i in 100..130 {
        insert(p, "c", big(i, 64));
    }
    let held = wait_within_cap(p);
    rs.kill(0);
    let s = rs.start_standalone_on(0, &[]).unwrap();
    assert_eq!(oplog_ts(&s)[..held.len()], held[..]);
    assert_eq!(oplog_size(&s).1, MIB);
}

/// A secondary is down in a PSA set: the primary keeps every entry after the commit point,
/// past its size, so the secondary can catch up when it returns (mongod 4.4+).
#[test]
fn the_oplog_grows_past_its_size_rather_than_past_the_commit_point() {
    let first = MemberSpec {
        priority: Some(2.0),
        ..MemberSpec::default()
    };
    let arbiter = MemberSpec {
        arbiter: true,
        ..MemberSpec::default()
    };
    let specs = vec![first, MemberSpec::default(), arbiter];
    let mut rs = ReplicaSet::start_with("pin", specs, &["--oplogSize", "1"]).unwrap();
    assert_eq!(rs.wait_for_primary(LONG).unwrap(), 0);
    let w0 = insert(rs.process(0).unwrap(), "c", doc! {"_id": -1});
    wait_for("w0 to commit", || {
        (optime(&status(rs.process(0).unwrap()), "lastCommittedOpTime").0 >= w0).then_some(())
    });
    rs.kill(1);
    let p = rs.process(0).unwrap();
    let written: Vec<_> = (0..30).map(|i| insert(p, "c", big(i, 64))).collect();
    let last = *written.last().unwrap();
    // Once a checkpoint covers every write, only the commit point holds the entries.
    wait_for("a checkpoint after the writes", || {
        (status(p)
            .get_timestamp("lastStableRecoveryTimestamp")
            .unwrap()
            >= last)
            .then_some(())
    });
    let (size, max, _) = oplog_size(p);
    assert!(size > max, "{size} > {max}");
    let committed = optime(&status(p), "lastCommittedOpTime").0;
    assert!(committed < written[0]);
    let first = oplog_end(p, 1).get_timestamp("ts").unwrap();
    assert!(first <= committed, "nothing after the commit point went");
    rs.restart(1).unwrap();
    wait_for("the secondary to catch up", || {
        let r = cmd(rs.process(1).unwrap(), "app", doc! {"count": "c"});
        (r.get_i64("n").ok() == Some(31)).then_some(())
    });
    wait_within_cap(rs.process(0).unwrap());
}

fn code(reply: &Document) -> (i32, String, String) {
    (
        reply.get_i32("code").unwrap_or(0),
        reply.get_str("codeName").unwrap_or_default().to_string(),
        reply.get_str("errmsg").unwrap_or_default().to_string(),
    )
}

#[test]
fn repl_set_resize_oplog_answers_as_mongod() {
    let mut rs =
        ReplicaSet::start_with("rsz", vec![MemberSpec::default()], &["--oplogSize", "1"]).unwrap();
    let p = rs.process(0).unwrap();
    let resize = |c: Document| {
        let mut full = doc! {"replSetResizeOplog": 1};
        full.extend(c);
        cmd(rs.process(0).unwrap(), "admin", full)
    };
    assert_eq!(
        code(&resize(doc! {"size": 100.0})),
        (
            51024,
            "Location51024".into(),
            "BSON field 'replSetResizeOplog.size' value must be >= 990, actual value '100'".into()
        )
    );
    assert_eq!(
        code(&resize(doc! {"size": 2000})),
        (
            14,
            "TypeMismatch".into(),
            "BSON field 'replSetResizeOplog.size' is the wrong type 'int', expected type 'double'"
                .into()
        )
    );
    assert_eq!(code(&resize(doc! {"minRetentionHours": -1.0})).0, 51024);
    let r = cmd(p, "local", doc! {"replSetResizeOplog": 1, "size": 1000.0});
    assert_eq!(code(&r).0, 13, "{r}");

    // minRetentionHours keeps young entries past the size.
    assert!(ok(&resize(doc! {"minRetentionHours": 1.0})));
    let ss = cmd(p, "admin", doc! {"serverStatus": 1});
    let trunc = ss.get_document("oplogTruncation").unwrap();
    assert_eq!(trunc.get_f64("oplogMinRetentionHours").unwrap(), 1.0);
    let oldest = oplog_end(p, 1).get_timestamp("ts").unwrap();
    let written: Vec<_> = (0..30).map(|i| insert(p, "c", big(i, 64))).collect();
    let last = *written.last().unwrap();
    wait_for("a checkpoint after the writes", || {
        (status(p)
            .get_timestamp("lastStableRecoveryTimestamp")
            .unwrap()
            >= last)
            .then_some(())
    });
    assert_eq!(oplog_end(p, 1).get_timestamp("ts").unwrap(), oldest);
    assert!(oplog_size(p).0 > MIB);
    assert!(ok(&resize(doc! {"minRetentionHours": 0.0})));
    let (size, max, _) = oplog_size(p);
    assert!(size <= max, "truncated at once: {size} <= {max}");

    // A new size is kept by the oplog's catalog entry: journaled, so even kill -9 keeps it.
    assert!(ok(&resize(doc! {"size": 1000.0})));
    assert_eq!(oplog_size(p).1, 1000 * MIB);
    rs.kill(0);
    rs.restart(0).unwrap();
    assert_eq!(oplog_size(rs.process(0).unwrap()).1, 1000 * MIB);

    let alone = Standalone::start(&[]).unwrap();
    let r = cmd(
        &alone.process,
        "admin",
        doc! {"replSetResizeOplog": 1, "size": 1000.0},
    );
    assert_eq!(code(&r).0, 26, "{r}");
    assert_eq!(code(&r).2, "oplog does not exist");
}

/// `periodicNoopIntervalSecs=1`: an idle primary writes a no-op each second, so the optime and
/// the commit point of an idle set keep moving; out of 1..=10 the start fails as mongod's.
#[test]
fn an_idle_primary_writes_periodic_noops() {
    let rs = ReplicaSet::start_with(
        "noop",
        vec![MemberSpec::default(); 2],
        &["--setParameter", "periodicNoopIntervalSecs=1"],
    )
    .unwrap();
    let p = rs.wait_for_primary(LONG).unwrap();
    let pp = rs.process(p).unwrap();
    let r = cmd(
        pp,
        "admin",
        doc! {"getParameter": 1, "periodicNoopIntervalSecs": 1},
    );
    assert_eq!(r.get_i32("periodicNoopIntervalSecs").unwrap(), 1, "{r}");
    let noops = wait_for("two periodic no-ops", || {
        let r = cmd(
            pp,
            "local",
            doc! {"find": "oplog.rs", "filter": {"op": "n", "o.msg": "periodic noop"}},
        );
        let b = first_batch(&r);
        (b.len() >= 2).then_some(b)
    });
    let e = &noops[0];
    assert_eq!(e.get_str("ns").unwrap(), "");
    assert_eq!(e.get_document("o").unwrap(), &doc! {"msg": "periodic noop"});
    assert!(
        e.get_i64("t").is_ok() && e.get_datetime("wall").is_ok(),
        "{e}"
    );
    let wall = |d: &Document| d.get_datetime("wall").unwrap().timestamp_millis();
    assert!(wall(&noops[1]) - wall(&noops[0]) >= 900, "{noops:?}");
    let second = noops[1].get_timestamp("ts").unwrap();
    let s = rs.process(1 - p).unwrap();
    wait_for("the secondary's commit point to reach the no-op", || {
        (optime(&status(s), "lastCommittedOpTime").0 >= second).then_some(())
    });

    // The default, and mongod's range.
    let plain = Standalone::start(&[]).unwrap();
    let r = cmd(&plain.process, "admin", doc! {"getParameter": "*"});
    assert_eq!(r.get_i32("periodicNoopIntervalSecs").unwrap(), 10);
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<String> = ["--setParameter", "periodicNoopIntervalSecs=11"]
        .map(String::from)
        .to_vec();
    let mut bad = Process::spawn(
        &dir.path().join("db"),
        &dir.path().join("log"),
        free_port().unwrap(),
        &args,
    )
    .unwrap();
    assert_eq!(bad.wait_exit(LONG).unwrap().code(), Some(2));
}
