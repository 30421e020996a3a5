//! Replica sets of `mongod-sim` through the official driver: discovery, replication, elections,
//! initial sync, and the standalone restarts of a physical restore with the truncate point.

use bson::{Document, Timestamp, doc};
use mongod_sim::harness::{MemberSpec, ReplicaSet, ShardedCluster};
use mongodb::Client;
use mongodb::options::{ReadPreference, SelectionCriteria};
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(30);

fn count_on(rs: &ReplicaSet, i: usize, db: &str, coll: &str) -> i64 {
    rs.process(i)
        .unwrap()
        .command(db, doc! {"count": coll})
        .map(|r| r.get_i64("n").unwrap_or(-1))
        .unwrap_or(-1)
}

fn wait_count(rs: &ReplicaSet, i: usize, db: &str, coll: &str, want: i64) {
    let deadline = Instant::now() + LONG;
    while count_on(rs, i, db, coll) != want {
        assert!(
            Instant::now() < deadline,
            "member {i} never reached {want} docs in {db}.{coll} (has {})",
            count_on(rs, i, db, coll)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until member `i`'s `replSetGetStatus` shows `want` (heartbeats refresh its view).
fn wait_member_states(rs: &ReplicaSet, i: usize, want: &[i32]) {
    let deadline = Instant::now() + LONG;
    loop {
        let status = rs
            .process(i)
            .unwrap()
            .command("admin", doc! {"replSetGetStatus": 1})
            .unwrap();
        let states: Vec<i32> = status
            .get_array("members")
            .unwrap()
            .iter()
            .map(|m| m.as_document().unwrap().get_i32("state").unwrap())
            .collect();
        if states == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "member {i} reports {states:?}, expected {want:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_and_replication() {
    let rs = ReplicaSet::start("rs0", 3).unwrap();
    let client = Client::with_uri_str(rs.uri()).await.unwrap();
    let coll = client.database("app").collection::<Document>("items");
    coll.insert_many((0..25).map(|i| doc! {"_id": i, "v": i}))
        .await
        .unwrap();
    coll.update_one(doc! {"_id": 1}, doc! {"$set": {"v": 100}})
        .await
        .unwrap();
    coll.delete_one(doc! {"_id": 2}).await.unwrap();
    // The driver found the primary on its own (SDAM) — the writes above went to it.
    let primary = rs.wait_for_primary(LONG).unwrap();
    assert_eq!(count_on(&rs, primary, "app", "items"), 24);
    for i in 0..3 {
        wait_count(&rs, i, "app", "items", 24);
        let r = rs
            .process(i)
            .unwrap()
            .command("app", doc! {"find": "items", "filter": {"_id": 1}})
            .unwrap();
        let first = r
            .get_document("cursor")
            .unwrap()
            .get_array("firstBatch")
            .unwrap()[0]
            .as_document()
            .unwrap()
            .clone();
        assert_eq!(first.get_i32("v").unwrap(), 100);
    }
    let hashes: Vec<String> = (0..3)
        .map(|i| {
            rs.process(i)
                .unwrap()
                .command("app", doc! {"dbHash": 1})
                .unwrap()
                .get_str("md5")
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(hashes.iter().all(|h| h == &hashes[0]), "{hashes:?}");
    // Reads from a secondary through the driver.
    let n = coll
        .count_documents(doc! {})
        .selection_criteria(SelectionCriteria::ReadPreference(
            ReadPreference::Secondary { options: None },
        ))
        .await
        .unwrap();
    assert_eq!(n, 24);
    // Heartbeats refresh each member's view of the others; wait for one round.
    let deadline = Instant::now() + LONG;
    loop {
        let status = client
            .database("admin")
            .run_command(doc! {"replSetGetStatus": 1})
            .await
            .unwrap();
        let mut states: Vec<i32> = status
            .get_array("members")
            .unwrap()
            .iter()
            .map(|m| m.as_document().unwrap().get_i32("state").unwrap())
            .collect();
        states.sort();
        if states == vec![1, 2, 2] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "states never became one PRIMARY and two SECONDARY: {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn election_follows_priority_and_failover() {
    let specs = vec![
        MemberSpec {
            priority: Some(1.0),
            ..Default::default()
        },
        MemberSpec {
            priority: Some(5.0),
            ..Default::default()
        },
        MemberSpec {
            priority: Some(2.0),
            ..Default::default()
        },
    ];
    let mut rs = ReplicaSet::start_with("rsp", specs, &[]).unwrap();
    let deadline = Instant::now() + LONG;
    while rs.wait_for_primary(LONG).unwrap() != 1 {
        assert!(
            Instant::now() < deadline,
            "member 1 (priority 5) never became primary"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    rs.kill(1);
    let deadline = Instant::now() + LONG;
    while rs.wait_for_primary(LONG).unwrap() != 2 {
        assert!(
            Instant::now() < deadline,
            "member 2 (priority 2) never took over"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = rs
        .process(2)
        .unwrap()
        .command("admin", doc! {"replSetStepDown": 60, "force": true})
        .unwrap();
    assert_eq!(r.get_f64("ok").unwrap(), 1.0, "{r}");
    let deadline = Instant::now() + LONG;
    while rs.wait_for_primary(LONG).unwrap() != 0 {
        assert!(
            Instant::now() < deadline,
            "member 0 never took over after the step-down"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn arbiter_hidden_and_delayed_are_reported() {
    let specs = vec![
        MemberSpec::default(),
        MemberSpec {
            hidden: true,
            ..Default::default()
        },
        MemberSpec {
            delay_secs: Some(3600),
            ..Default::default()
        },
        MemberSpec {
            arbiter: true,
            ..Default::default()
        },
    ];
    let rs = ReplicaSet::start_with("rsa", specs, &[]).unwrap();
    let hellos: Vec<Document> = rs.hellos().into_iter().map(Option::unwrap).collect();
    assert!(hellos[0].get_bool("isWritablePrimary").unwrap());
    assert!(hellos[1].get_bool("hidden").unwrap());
    assert!(hellos[2].get_bool("passive").unwrap());
    assert_eq!(hellos[2].get_i64("secondaryDelaySecs").unwrap(), 3600);
    assert!(hellos[3].get_bool("arbiterOnly").unwrap());
    let hosts = hellos[0].get_array("hosts").unwrap();
    assert_eq!(
        hosts.len(),
        1,
        "hidden, passive and arbiter members are not in hosts: {hosts:?}"
    );
    wait_member_states(&rs, 0, &[1, 2, 2, 7]);
    // The delayed member holds writes back; the hidden one applies them.
    rs.process(0)
        .unwrap()
        .command("app", doc! {"insert": "c", "documents": [{"_id": 1}]})
        .unwrap();
    wait_count(&rs, 1, "app", "c", 1);
    assert_eq!(count_on(&rs, 2, "app", "c"), 0);
    let cfg = rs
        .process(0)
        .unwrap()
        .command("admin", doc! {"replSetGetConfig": 1})
        .unwrap();
    let members = cfg
        .get_document("config")
        .unwrap()
        .get_array("members")
        .unwrap();
    assert!(
        members[3]
            .as_document()
            .unwrap()
            .get_bool("arbiterOnly")
            .unwrap()
    );
}

#[test]
fn initial_sync_of_a_wiped_member() {
    let mut rs = ReplicaSet::start("rsi", 3).unwrap();
    let p = rs.wait_for_primary(LONG).unwrap();
    let victim = (p + 1) % 3;
    let docs: Vec<Document> = (0..500)
        .map(|i| doc! {"_id": i, "pad": "y".repeat(50)})
        .collect();
    rs.process(p)
        .unwrap()
        .command("app", doc! {"insert": "big", "documents": docs})
        .unwrap();
    wait_count(&rs, victim, "app", "big", 500);
    rs.stop(victim).unwrap();
    rs.wipe(victim).unwrap();
    rs.process(p)
        .unwrap()
        .command("app", doc! {"insert": "big", "documents": [{"_id": 1000}]})
        .unwrap();
    rs.restart(victim).unwrap();
    rs.wait_for_state(victim, 2, LONG).unwrap();
    wait_count(&rs, victim, "app", "big", 501);
    let log = rs.process(victim).unwrap().log_lines();
    assert!(log.iter().any(|l| l["msg"] == "Starting initial sync"));
    assert!(
        log.iter().any(|l| l["attr"]["newState"] == "STARTUP2"),
        "STARTUP2 was reported"
    );
    // Later writes keep flowing to it.
    rs.process(p)
        .unwrap()
        .command("app", doc! {"insert": "big", "documents": [{"_id": 1001}]})
        .unwrap();
    wait_count(&rs, victim, "app", "big", 502);
}

fn ts_of_last_oplog(rs: &ReplicaSet, i: usize) -> Timestamp {
    let r = rs
        .process(i)
        .unwrap()
        .command(
            "local",
            doc! {"find": "oplog.rs", "sort": {"$natural": -1}, "limit": 1},
        )
        .unwrap();
    r.get_document("cursor")
        .unwrap()
        .get_array("firstBatch")
        .unwrap()[0]
        .as_document()
        .unwrap()
        .get_timestamp("ts")
        .unwrap()
}

/// The physical-restore flow (the agent's `recover`, docs/agent.md): copy a backup cursor's files, extend it, and bring the
/// copy up standalone with the truncate point; documents written after that point are gone.
#[test]
fn backup_restore_with_truncate_point() {
    let rs = ReplicaSet::start("rsb", 3).unwrap();
    let p = rs.wait_for_primary(LONG).unwrap();
    let prim = rs.process(p).unwrap();
    prim.command(
        "app",
        doc! {"insert": "c", "documents": (0..10).map(|i| doc! {"_id": i}).collect::<Vec<_>>()},
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(700)); // let a checkpoint happen
    let mut conn = prim.connect().unwrap();
    let r = conn.command("admin", doc! {"aggregate": 1, "pipeline": [{"$backupCursor": {}}], "cursor": {"batchSize": 1000}}).unwrap();
    let cursor = r.get_document("cursor").unwrap();
    let id = cursor.get_i64("id").unwrap();
    let batch = cursor.get_array("firstBatch").unwrap();
    let meta = batch[0]
        .as_document()
        .unwrap()
        .get_document("metadata")
        .unwrap()
        .clone();
    let backup_id = meta.get("backupId").unwrap().clone();
    assert!(meta.get_timestamp("checkpointTimestamp").is_ok());
    let files: Vec<(String, i64)> = batch[1..]
        .iter()
        .map(|d| {
            let d = d.as_document().unwrap();
            (
                d.get_str("filename").unwrap().to_string(),
                d.get_i64("fileSize").unwrap(),
            )
        })
        .collect();
    // Written after the cursor opened: kept (before the extend point) and dropped (after it).
    prim.command("app", doc! {"insert": "c", "documents": [{"_id": "kept"}]})
        .unwrap();
    let keep_ts = ts_of_last_oplog(&rs, p);
    prim.command("app", doc! {"insert": "c", "documents": [{"_id": "gone"}]})
        .unwrap();
    let r = conn.command("admin", doc! {"aggregate": 1, "pipeline": [{"$backupCursorExtend": {"backupId": backup_id, "timestamp": keep_ts}}], "cursor": {}}).unwrap();
    let extra: Vec<String> = r
        .get_document("cursor")
        .unwrap()
        .get_array("firstBatch")
        .unwrap()
        .iter()
        .map(|d| {
            d.as_document()
                .unwrap()
                .get_str("filename")
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(!extra.is_empty(), "{r}");
    // Copy into a fresh dbPath, as the agent would.
    let target = tempfile::tempdir().unwrap();
    let db = target.path().join("db");
    let src = std::fs::canonicalize(meta.get_str("dbpath").unwrap()).unwrap();
    for (f, size) in &files {
        let rel = std::path::Path::new(f).strip_prefix(&src).unwrap();
        let bytes = std::fs::read(f).unwrap();
        assert_eq!(bytes.len() as i64, *size);
        std::fs::create_dir_all(db.join(rel).parent().unwrap()).unwrap();
        std::fs::write(db.join(rel), bytes).unwrap();
    }
    for f in &extra {
        let rel = std::path::Path::new(f).strip_prefix(&src).unwrap();
        std::fs::copy(f, db.join(rel)).unwrap();
    }
    conn.command(
        "admin",
        doc! {"killCursors": "$cmd.aggregate", "cursors": [id]},
    )
    .unwrap();
    let flags = mongod_sim::harness::fast_flags();
    let log = target.path().join("restore.log");
    // Run 1: standalone; reset replication state and set the truncate point.
    let mut p1 = mongod_sim::harness::Process::spawn(
        &db,
        &log,
        mongod_sim::harness::free_port().unwrap(),
        &flags,
    )
    .unwrap();
    p1.wait_ready(LONG).unwrap();
    for coll in [
        "replset.minvalid",
        "replset.oplogTruncateAfterPoint",
        "replset.election",
    ] {
        p1.command(
            "local",
            doc! {"delete": coll, "deletes": [{"q": {}, "limit": 0}]},
        )
        .unwrap();
    }
    p1.command("local", doc! {"insert": "replset.oplogTruncateAfterPoint", "documents": [{"_id": "oplogTruncateAfterPoint", "oplogTruncateAfterPoint": keep_ts}]}).unwrap();
    assert_eq!(p1.shutdown(false).unwrap().code(), Some(0));
    // Run 2: replay the oplog up to the truncate point and persist it.
    let mut args = flags.clone();
    args.extend(
        [
            "--setParameter",
            "recoverFromOplogAsStandalone=true",
            "--setParameter",
            "takeUnstableCheckpointOnShutdown=true",
        ]
        .map(String::from),
    );
    let mut p2 = mongod_sim::harness::Process::spawn(
        &db,
        &log,
        mongod_sim::harness::free_port().unwrap(),
        &args,
    )
    .unwrap();
    p2.wait_ready(LONG).unwrap();
    assert_eq!(p2.shutdown(false).unwrap().code(), Some(0));
    // Run 3: plain standalone sees exactly the data up to the truncate point.
    let mut p3 = mongod_sim::harness::Process::spawn(
        &db,
        &log,
        mongod_sim::harness::free_port().unwrap(),
        &flags,
    )
    .unwrap();
    p3.wait_ready(LONG).unwrap();
    let r = p3
        .command("app", doc! {"find": "c", "filter": {}, "batchSize": 100})
        .unwrap();
    let ids: Vec<String> = r
        .get_document("cursor")
        .unwrap()
        .get_array("firstBatch")
        .unwrap()
        .iter()
        .map(|d| d.as_document().unwrap().get("_id").unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 11, "{ids:?}");
    assert!(ids.contains(&"\"kept\"".to_string()), "{ids:?}");
    assert!(!ids.contains(&"\"gone\"".to_string()), "{ids:?}");
}

#[test]
fn standalone_restart_of_a_member_without_recovery_sees_the_checkpoint() {
    let mut rs = ReplicaSet::start("rss", 3).unwrap();
    let p = rs.wait_for_primary(LONG).unwrap();
    let victim = (p + 1) % 3;
    rs.process(p)
        .unwrap()
        .command(
            "app",
            doc! {"insert": "c", "documents": [{"_id": 1}, {"_id": 2}]},
        )
        .unwrap();
    wait_count(&rs, victim, "app", "c", 2);
    rs.stop(victim).unwrap();
    let mut s = rs.start_standalone_on(victim, &[]).unwrap();
    let hello = s.command("admin", doc! {"hello": 1}).unwrap();
    assert!(
        !hello.contains_key("setName"),
        "started without --replSet it runs standalone: {hello}"
    );
    assert!(hello.get_bool("isWritablePrimary").unwrap());
    let r = s.command("app", doc! {"count": "c"}).unwrap();
    assert_eq!(r.get_i64("n").unwrap(), 2);
    assert_eq!(s.shutdown(false).unwrap().code(), Some(0));
    rs.restart(victim).unwrap();
    rs.wait_for_state(victim, 2, LONG).unwrap();
}

#[test]
fn sharded_layout_keeps_shard_identity() {
    let cluster = ShardedCluster::start(1, 1).unwrap();
    let p = cluster.config.wait_for_primary(LONG).unwrap();
    let r = cluster
        .config
        .process(p)
        .unwrap()
        .command("config", doc! {"find": "shards"})
        .unwrap();
    assert_eq!(
        r.get_document("cursor")
            .unwrap()
            .get_array("firstBatch")
            .unwrap()
            .len(),
        1
    );
    let hello = cluster
        .config
        .process(p)
        .unwrap()
        .command("admin", doc! {"hello": 1})
        .unwrap();
    assert_eq!(hello.get_i32("configsvr").unwrap(), 2);
    let shard = &cluster.shards[0];
    let r = shard
        .process(0)
        .unwrap()
        .command(
            "admin",
            doc! {"find": "system.version", "filter": {"_id": "shardIdentity"}},
        )
        .unwrap();
    let id = r
        .get_document("cursor")
        .unwrap()
        .get_array("firstBatch")
        .unwrap()[0]
        .as_document()
        .unwrap()
        .clone();
    assert_eq!(id.get_str("shardName").unwrap(), "rs0");
}

#[test]
fn kill9_member_recovers_journal_and_oplog() {
    let mut rs = ReplicaSet::start("rsk", 3).unwrap();
    let p = rs.wait_for_primary(LONG).unwrap();
    let victim = (p + 1) % 3;
    // Restart the victim with checkpoints effectively off, so everything after is only journaled.
    rs.stop(victim).unwrap();
    rs.start_member_with_args(victim, &["--sim-checkpoint-interval-ms", "600000"])
        .unwrap();
    rs.process_mut(victim).unwrap().wait_ready(LONG).unwrap();
    rs.wait_for_state(victim, 2, LONG).unwrap();
    let docs: Vec<Document> = (0..40).map(|i| doc! {"_id": i}).collect();
    rs.process(p)
        .unwrap()
        .command("app", doc! {"insert": "k", "documents": docs})
        .unwrap();
    wait_count(&rs, victim, "app", "k", 40);
    rs.kill(victim);
    // Started standalone, it sees only its last checkpoint: the replicated writes live in the
    // oplog, which only replica-set start-up (or recoverFromOplogAsStandalone) replays.
    let mut s = rs.start_standalone_on(victim, &[]).unwrap();
    assert_eq!(
        s.command("app", doc! {"count": "k"})
            .unwrap()
            .get_i64("n")
            .unwrap(),
        0
    );
    let oplog = s
        .command(
            "local",
            doc! {"count": "oplog.rs", "query": {"ns": "app.k"}},
        )
        .unwrap();
    assert_eq!(
        oplog.get_i64("n").unwrap(),
        40,
        "the oplog itself was recovered from the journal"
    );
    s.kill();
    rs.restart(victim).unwrap();
    rs.wait_for_state(victim, 2, LONG).unwrap();
    assert_eq!(count_on(&rs, victim, "app", "k"), 40);
}

#[test]
fn reconfig_spreads_to_every_member() {
    let rs = ReplicaSet::start("rsr", 3).unwrap();
    let p = rs.wait_for_primary(LONG).unwrap();
    let mut cfg = rs
        .process(p)
        .unwrap()
        .command("admin", doc! {"replSetGetConfig": 1})
        .unwrap()
        .get_document("config")
        .unwrap()
        .clone();
    let mut members = cfg.get_array("members").unwrap().clone();
    members[2]
        .as_document_mut()
        .unwrap()
        .insert("priority", 0.0);
    members[2].as_document_mut().unwrap().insert("hidden", true);
    cfg.insert("members", members);
    cfg.insert("version", 2);
    cfg.remove("term");
    let stale = rs
        .process(p)
        .unwrap()
        .command("admin", doc! {"replSetReconfig": cfg.clone()})
        .unwrap();
    assert_eq!(stale.get_f64("ok").unwrap(), 1.0, "{stale}");
    cfg.insert("version", 2);
    let again = rs
        .process(p)
        .unwrap()
        .command("admin", doc! {"replSetReconfig": cfg})
        .unwrap();
    assert_eq!(
        again.get_i32("code").unwrap(),
        103,
        "a version that is not newer is refused: {again}"
    );
    let deadline = Instant::now() + LONG;
    loop {
        let h = rs
            .process(2)
            .unwrap()
            .command("admin", doc! {"hello": 1})
            .unwrap();
        if h.get_i32("setVersion").unwrap() == 2 && h.get_bool("hidden").unwrap_or(false) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "member 2 never adopted version 2: {h}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `$clusterTime` gossip as mongod does it: every reply of a member carries the cluster
/// time; a write on shard B sent with the time seen on shard A sorts after A's writes,
/// whatever B's own clock says; and an idle shard whose primary has seen a later cluster
/// time writes a no-op, so that its optime reaches that time (what `$backupCursorExtend`
/// waits for).
#[test]
fn cluster_time_is_gossiped_across_shards_and_an_idle_shard_catches_up() {
    let c = ShardedCluster::start(2, 2).unwrap();
    let (a, b) = (&c.shards[0], &c.shards[1]);
    let (pa, pb) = (
        a.wait_for_primary(LONG).unwrap(),
        b.wait_for_primary(LONG).unwrap(),
    );
    let mut last_a = Timestamp {
        time: 0,
        increment: 0,
    };
    // Many writes within the same second on A: B's own counter is far behind.
    for i in 0..200 {
        let r = a
            .process(pa)
            .unwrap()
            .command("app", doc! {"insert": "x", "documents": [{"_id": i}]})
            .unwrap();
        let ct = r
            .get_document("$clusterTime")
            .unwrap()
            .get_timestamp("clusterTime")
            .unwrap();
        let op = r.get_timestamp("operationTime").unwrap();
        assert!(ct >= op, "{r}");
        last_a = op;
    }
    let gossip = |ts: Timestamp| doc! {"clusterTime": ts, "signature": {"hash": bson::Binary {subtype: bson::spec::BinarySubtype::Generic, bytes: vec![0; 20]}, "keyId": 0i64}};
    let r = b
        .process(pb)
        .unwrap()
        .command(
            "app",
            doc! {"insert": "y", "documents": [{"_id": 1}], "$clusterTime": gossip(last_a)},
        )
        .unwrap();
    let on_b = r.get_timestamp("operationTime").unwrap();
    assert!(on_b > last_a, "B's write {on_b:?} after A's {last_a:?}");

    // B goes idle; A writes on. Told A's newer time (a ping carrying it), B's primary
    // writes a no-op at or above it.
    let r = a
        .process(pa)
        .unwrap()
        .command("app", doc! {"insert": "x", "documents": [{"_id": 1000}]})
        .unwrap();
    let newer = r.get_timestamp("operationTime").unwrap();
    b.process(pb)
        .unwrap()
        .command("admin", doc! {"ping": 1, "$clusterTime": gossip(newer)})
        .unwrap();
    let deadline = Instant::now() + LONG;
    loop {
        let top = b
            .process(pb)
            .unwrap()
            .command(
                "local",
                doc! {"find": "oplog.rs", "sort": {"$natural": -1}, "limit": 1},
            )
            .unwrap();
        let ts = top
            .get_document("cursor")
            .and_then(|c| c.get_array("firstBatch"))
            .ok()
            .and_then(|b| b.first())
            .and_then(|d| d.as_document())
            .and_then(|d| d.get_timestamp("ts").ok());
        if ts.is_some_and(|ts| ts >= newer) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B's oplog never reached {newer:?}: {top}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
