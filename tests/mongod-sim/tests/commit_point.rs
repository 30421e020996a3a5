//! The majority commit point as mongod 7.0 keeps and reports it: computed by the primary from
//! what a write majority of voting data-bearing members applied, learned by the others, and
//! what `readConcern: majority` reads of the oplog stop at.

mod common;

use bson::doc;
use common::*;
use mongod_sim::harness::{MemberSpec, Process, ReplicaSet, Standalone, free_port};

fn majority_find(p: &Process, filter: bson::Document) -> bson::Document {
    cmd(
        p,
        "local",
        doc! {"find": "oplog.rs", "filter": filter, "readConcern": {"level": "majority"}, "maxTimeMS": 5000},
    )
}

/// Primary–secondary–arbiter: the arbiter votes, so the primary stays primary without the
/// secondary, but it holds no data, so nothing new commits until the secondary is back.
#[test]
fn psa_commits_only_what_both_data_bearing_members_hold() {
    let arbiter = MemberSpec {
        arbiter: true,
        ..MemberSpec::default()
    };
    let first = MemberSpec {
        priority: Some(2.0),
        ..MemberSpec::default()
    };
    let mut rs =
        ReplicaSet::start_with("psa", vec![first, MemberSpec::default(), arbiter], &[]).unwrap();
    let p = rs.wait_for_primary(LONG).unwrap();
    assert_eq!(p, 0);
    let s = status(rs.process(0).unwrap());
    assert_eq!(s.get_i32("majorityVoteCount").unwrap(), 2, "{s}");
    assert_eq!(s.get_i32("writeMajorityCount").unwrap(), 2, "{s}");
    assert_eq!(s.get_i32("votingMembersCount").unwrap(), 3, "{s}");
    assert_eq!(s.get_i32("writableVotingMembersCount").unwrap(), 2, "{s}");

    let w1 = insert(rs.process(0).unwrap(), "c", doc! {"_id": 1});
    for i in 0..3 {
        wait_for(
            &format!("member {i} to know a commit point at {w1:?}"),
            || {
                let (ts, _) = optime(&status(rs.process(i).unwrap()), "lastCommittedOpTime");
                (ts >= w1).then_some(())
            },
        );
    }
    let hello = cmd(rs.process(0).unwrap(), "admin", doc! {"hello": 1});
    let last_write = hello.get_document("lastWrite").unwrap();
    let majority = last_write.get_document("majorityOpTime").unwrap();
    assert!(majority.get_timestamp("ts").unwrap() >= w1, "{hello}");

    // Without the secondary a write is applied on the primary but never committed.
    rs.kill(1);
    let w2 = insert(rs.process(0).unwrap(), "c", doc! {"_id": 2});
    let s = status(rs.process(0).unwrap());
    assert_eq!(s.get_i32("myState").unwrap(), 1, "still primary: {s}");
    assert!(optime(&s, "appliedOpTime").0 >= w2, "{s}");
    let (committed, _) = optime(&s, "lastCommittedOpTime");
    assert!(committed >= w1 && committed < w2, "{s}");
    assert!(optime(&s, "readConcernMajorityOpTime").0 < w2, "{s}");
    let p0 = rs.process(0).unwrap();
    let local = cmd(p0, "local", doc! {"find": "oplog.rs", "filter": {"ts": w2}});
    assert_eq!(first_batch(&local).len(), 1, "{local}");
    let majority = majority_find(p0, doc! {"ts": {"$gte": w2}});
    assert!(
        ok(&majority) && first_batch(&majority).is_empty(),
        "{majority}"
    );
    let upto = majority_find(p0, doc! {"ts": {"$lte": w2}});
    let newest = first_batch(&upto)
        .last()
        .unwrap()
        .get_timestamp("ts")
        .unwrap();
    assert_eq!(
        newest, committed,
        "a majority read ends at the commit point"
    );

    // The secondary comes back, catches up, and the commit point reaches w2.
    rs.restart(1).unwrap();
    wait_for(
        "the commit point to reach w2 once the secondary is back",
        || {
            let r = majority_find(rs.process(0).unwrap(), doc! {"ts": w2});
            (first_batch(&r).len() == 1).then_some(())
        },
    );
    let s = status(rs.process(0).unwrap());
    assert!(optime(&s, "lastCommittedOpTime").0 >= w2, "{s}");
}

/// A member that lags (here a delayed one) learns the commit point from its sync source in
/// the same term before it applies it: mongod's `lastCommittedOpTime` is then ahead of its
/// `appliedOpTime`, while `readConcernMajorityOpTime` (what it can read) never is.
#[test]
fn a_lagging_member_knows_a_commit_point_it_has_not_applied() {
    let delayed = MemberSpec {
        delay_secs: Some(3),
        ..MemberSpec::default()
    };
    let specs = vec![MemberSpec::default(), MemberSpec::default(), delayed];
    let rs = ReplicaSet::start_with("lag", specs, &[]).unwrap();
    let p = rs.wait_for_primary(LONG).unwrap();
    let term = status(rs.process(p).unwrap()).get_i64("term").unwrap();
    let d = rs.process(2).unwrap();
    // Until it applied an entry of this term it takes no commit point past its own entry.
    wait_for(
        "the delayed member to apply an entry of the current term",
        || (optime(&status(d), "appliedOpTime").1 == term).then_some(()),
    );
    let w = insert(rs.process(p).unwrap(), "c", doc! {"_id": 1});
    let s = wait_for("the delayed member to learn the commit point", || {
        let s = status(d);
        (optime(&s, "lastCommittedOpTime").0 >= w).then_some(s)
    });
    let applied = optime(&s, "appliedOpTime").0;
    assert!(applied < w, "learned before applied (delay 3 s): {s}");
    assert!(optime(&s, "readConcernMajorityOpTime").0 <= applied, "{s}");
    let hello = cmd(d, "admin", doc! {"hello": 1});
    let lw = hello.get_document("lastWrite").unwrap();
    let op_ts = |k: &str| lw.get_document(k).unwrap().get_timestamp("ts").unwrap();
    assert!(op_ts("majorityOpTime") <= op_ts("opTime"), "{hello}");
    wait_for("the delayed member to apply and read w", || {
        let s = status(d);
        (optime(&s, "readConcernMajorityOpTime").0 >= w).then_some(())
    });
}

/// A one-member set commits each write as it makes it; a standalone has no commit point and
/// reads everything with `majority`; an uninitiated member refuses majority reads.
#[test]
fn one_member_sets_standalones_and_uninitiated_members() {
    let rs = ReplicaSet::start("one", 1).unwrap();
    let p = rs.process(0).unwrap();
    let w = insert(p, "c", doc! {"_id": 1});
    let s = status(p);
    assert_eq!(
        optime(&s, "lastCommittedOpTime"),
        optime(&s, "appliedOpTime")
    );
    assert_eq!(optime(&s, "lastCommittedOpTime").0, w);
    assert_eq!(
        optime(&s, "lastCommittedOpTime").1,
        s.get_i64("term").unwrap()
    );
    assert_eq!(s.get_i32("writeMajorityCount").unwrap(), 1);
    assert!(
        s.get_timestamp("lastStableRecoveryTimestamp").is_ok(),
        "{s}"
    );
    let majority = majority_find(p, doc! {"ts": w});
    assert_eq!(first_batch(&majority).len(), 1, "{majority}");

    let alone = Standalone::start(&[]).unwrap();
    let a = &alone.process;
    insert_plain(a);
    let r = cmd(
        a,
        "app",
        doc! {"find": "c", "filter": {}, "readConcern": {"level": "majority"}},
    );
    assert_eq!(first_batch(&r).len(), 1, "{r}");
    let r = cmd(a, "admin", doc! {"replSetGetStatus": 1});
    assert_eq!(r.get_i32("code").unwrap(), 76, "{r}");
    assert!(
        cmd(a, "admin", doc! {"hello": 1})
            .get("lastWrite")
            .is_none()
    );

    let dir = tempfile::tempdir().unwrap();
    let args = vec!["--replSet".to_string(), "un".to_string()];
    let mut u = Process::spawn(
        &dir.path().join("db"),
        &dir.path().join("log"),
        free_port().unwrap(),
        &args,
    )
    .unwrap();
    u.wait_ready(LONG).unwrap();
    let r = majority_find(&u, doc! {});
    assert_eq!(r.get_i32("code").unwrap(), 94, "{r}");
    assert_eq!(r.get_str("codeName").unwrap(), "NotYetInitialized");
    let r = cmd(&u, "admin", doc! {"replSetGetStatus": 1});
    assert_eq!(r.get_i32("code").unwrap(), 94, "{r}");
}

fn insert_plain(p: &Process) {
    let r = cmd(p, "app", doc! {"insert": "c", "documents": [{"_id": 1}]});
    assert!(ok(&r), "{r}");
}
