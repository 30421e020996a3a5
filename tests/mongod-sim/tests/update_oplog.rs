//! Updates in the oplog as mongod 7.0 writes them: operator updates as `$v: 2` diffs,
//! replacements as whole documents; secondaries, crash recovery and
//! `recoverFromOplogAsStandalone` apply the diffs.

mod common;

use bson::{Document, doc};
use common::*;
use mongod_sim::harness::{Process, ReplicaSet, Standalone};

fn update(p: &Process, q: Document, u: Document) {
    let r = cmd(
        p,
        "app",
        doc! {"update": "c", "updates": [{"q": q, "u": u}]},
    );
    assert!(ok(&r) && r.get_i32("nModified").ok() == Some(1), "{r}");
}

fn docs(p: &Process) -> Vec<Document> {
    let r = cmd(
        p,
        "app",
        doc! {"find": "c", "filter": {}, "sort": {"_id": 1}, "batchSize": 1000},
    );
    first_batch(&r)
}

/// The `o` of the newest update entry for `_id`.
fn last_update(p: &Process, id: i32) -> Document {
    let r = cmd(
        p,
        "local",
        doc! {"find": "oplog.rs", "filter": {"op": "u", "o2._id": id}, "sort": {"$natural": -1}, "limit": 1},
    );
    let e = first_batch(&r).remove(0);
    assert_eq!(e.get_document("o2").unwrap(), &doc! {"_id": id});
    assert!(e.get("ui").is_some(), "{e}");
    e.get_document("o").unwrap().clone()
}

#[test]
fn operator_updates_are_logged_as_diffs_and_every_applier_applies_them() {
    // No periodic checkpoint: the members' oplogs hold every update past their checkpoint.
    let mut rs = ReplicaSet::start_with(
        "dif",
        vec![Default::default(); 3],
        &["--sim-checkpoint-interval-ms", "600000"],
    )
    .unwrap();
    let p = rs.wait_for_primary(LONG).unwrap();
    let pp = rs.process(p).unwrap();
    let r = cmd(
        pp,
        "app",
        doc! {"insert": "c", "documents": [{"_id": 1, "n": 1, "x": {"y": 2}, "gone": true}, {"_id": 2, "k": 1}]},
    );
    assert!(ok(&r), "{r}");
    update(
        pp,
        doc! {"_id": 1},
        doc! {"$inc": {"n": 2}, "$set": {"x.z": 3, "new": "v"}, "$unset": {"gone": ""}},
    );
    assert_eq!(
        last_update(pp, 1),
        doc! {"$v": 2, "diff": {"d": {"gone": false}, "u": {"n": 3}, "i": {"new": "v"}, "sx": {"i": {"z": 3}}}}
    );
    update(
        pp,
        doc! {"_id": 1},
        doc! {"$unset": {"x.y": 1}, "$set": {"a.b": 1}},
    );
    assert_eq!(
        last_update(pp, 1),
        doc! {"$v": 2, "diff": {"i": {"a": {"b": 1}}, "sx": {"d": {"y": false}}}}
    );
    update(pp, doc! {"_id": 2}, doc! {"k": 2, "whole": true});
    assert_eq!(
        last_update(pp, 2),
        doc! {"_id": 2, "k": 2, "whole": true},
        "a replacement is logged whole"
    );
    let want = docs(pp);
    assert_eq!(
        want[0],
        doc! {"_id": 1, "n": 3, "x": {"z": 3}, "new": "v", "a": {"b": 1}}
    );
    for i in 0..3 {
        wait_for(&format!("member {i} to apply the diffs"), || {
            (docs(rs.process(i).unwrap()) == want).then_some(())
        });
    }
    // A member killed with the updates only in its oplog and journal: replayed both as a
    // member and standalone with recoverFromOplogAsStandalone.
    let victim = (p + 1) % 3;
    rs.kill(victim);
    let mut s = rs
        .start_standalone_on(
            victim,
            &["--setParameter", "recoverFromOplogAsStandalone=true"],
        )
        .unwrap();
    assert_eq!(docs(&s), want);
    s.shutdown(false).unwrap();
    rs.restart(victim).unwrap();
    assert_eq!(docs(rs.process(victim).unwrap()), want);
}

/// A standalone journals its updates in the same form, and recovers them after `kill -9`.
#[test]
fn a_standalone_recovers_diff_updates_from_its_journal() {
    let mut s = Standalone::start(&["--sim-checkpoint-interval-ms", "600000"]).unwrap();
    let p = &s.process;
    let r = cmd(
        p,
        "app",
        doc! {"insert": "c", "documents": [{"_id": 1, "n": 1}]},
    );
    assert!(ok(&r), "{r}");
    update(
        p,
        doc! {"_id": 1},
        doc! {"$inc": {"n": 1}, "$set": {"m.k": "v"}},
    );
    let want = docs(p);
    assert_eq!(want, vec![doc! {"_id": 1, "n": 2, "m": {"k": "v"}}]);
    s.process.kill();
    let args: Vec<String> = s.process.args.clone();
    let mut again = Process::spawn(
        &s.process.dbpath,
        &s.process.logpath,
        mongod_sim::harness::free_port().unwrap(),
        &args,
    )
    .unwrap();
    again.wait_ready(LONG).unwrap();
    assert_eq!(docs(&again), want);
}
