//! End-to-end: a sharded cluster (two shards of three and a three-node config server,
//! mongod-sim with `$clusterTime` gossip) backed up while writes keep arriving on both
//! shards, then restored. Every replica set extends its backup cursor to one cluster
//! time (the highest `oplogEnd` when the cursors opened), so after the restore each shard
//! holds exactly the writes at or before that time and none after, document by document.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bson::{Timestamp, doc};
use mongod_sim::client::BlockingConn;
use mongod_sim::harness::ReplicaSet;
use serde_json::Value;

#[path = "support/sharded.rs"]
mod sharded;
use sharded::*;

#[test]
fn a_sharded_backup_restores_every_shard_to_one_cluster_time() {
    let (mut f, _one) = Fixture::new();
    f.start_reconciler();
    let sets: Vec<&ReplicaSet> = (0..3).map(|k| f.set(k)).collect();
    let (a, b) = (f.set(1), f.set(2));
    // Writes alternate between the shards, each sent with the cluster time the previous
    // reply carried (as mongos gossips it), recording the time each write got.
    let stop = Arc::new(AtomicBool::new(false));
    let hosts: Vec<Vec<String>> = [a, b]
        .iter()
        .map(|rs| (0..3).map(|i| rs.host(i)).collect())
        .collect();
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let primary = |hosts: &[String]| -> BlockingConn {
                loop {
                    for h in hosts {
                        if let Ok(mut c) = BlockingConn::connect(h, Duration::from_secs(2))
                            && c.command("admin", doc! {"hello": 1})
                                .is_ok_and(|r| r.get_bool("isWritablePrimary").unwrap_or(false))
                        {
                            return c;
                        }
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            };
            let mut conns = [primary(&hosts[0]), primary(&hosts[1])];
            let mut gossip: Option<bson::Document> = None;
            let mut written: Vec<(usize, i64, Timestamp)> = Vec::new();
            let mut n: i64 = 0;
            while !stop.load(Ordering::SeqCst) {
                let shard = (n % 2) as usize;
                let mut cmd =
                    doc! {"insert": "items", "documents": [{"_id": n, "shard": shard as i32}]};
                if let Some(g) = &gossip {
                    cmd.insert("$clusterTime", g.clone());
                }
                let r = match conns[shard].command("app", cmd) {
                    Ok(r) if r.get_f64("ok").unwrap_or(0.0) == 1.0 => r,
                    // An election under load: find the primary again and retry this write.
                    _ => {
                        conns[shard] = primary(&hosts[shard]);
                        continue;
                    }
                };
                gossip = r.get_document("$clusterTime").ok().cloned();
                written.push((shard, n, r.get_timestamp("operationTime").unwrap()));
                n += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            written
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    f.write(
        "backup.yaml",
        &tidemark_testkit::backup_yaml("b1", CLUSTER, "local"),
    );
    let v = f.wait_end("backup", "b1");
    assert_eq!(v["status"], "done", "{v:#}\n{}", f.logs());
    std::thread::sleep(Duration::from_millis(500)); // writes after the backup, to be gone
    stop.store(true, Ordering::SeqCst);
    let written = writer.join().unwrap();

    // One cluster time for every replica set, config server included.
    let marker: Value =
        serde_json::from_slice(&std::fs::read(f.storage.path().join("b1/backup.json")).unwrap())
            .unwrap();
    let t = Timestamp {
        time: marker["clusterTime"]["t"].as_u64().expect("a cluster time") as u32,
        increment: marker["clusterTime"]["i"].as_u64().unwrap() as u32,
    };
    for rs in &sets {
        let m: Value = serde_json::from_slice(
            &std::fs::read(
                f.storage
                    .path()
                    .join(format!("b1/{}/manifest.json", rs.name)),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            (m["lastWrite"]["t"].as_u64(), m["lastWrite"]["i"].as_u64()),
            (Some(t.time as u64), Some(t.increment as u64)),
            "{} restores to the cluster time",
            rs.name
        );
        let role = if rs.name == f.cluster.config.name {
            "configsvr"
        } else {
            "shardsvr"
        };
        assert_eq!(m["clusterRole"], role, "{m:#}");
    }
    for shard in 0..2 {
        let before = written.iter().filter(|w| w.0 == shard && w.2 <= t).count();
        let after = written.iter().filter(|w| w.0 == shard && w.2 > t).count();
        assert!(
            before > 0 && after > 0,
            "shard {shard}: {before} before, {after} after"
        );
        eprintln!("shard {shard}: {before} writes at or before {t:?}, {after} after");
    }

    let v = f.restore("r1", "  postRestore:\n    startNodes: true\n");
    assert_eq!(v["status"], "done", "{v:#}\n{}", f.logs());
    // The stop order: every shard node had stopped before any config server node began.
    let op = v["opId"].as_str().unwrap();
    let stop_of = |rs: &ReplicaSet,
                   i: usize|
     -> (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) {
        let key = format!(
            "ops/{op}/{}/{}.stop.json",
            rs.name,
            rs.host(i).replace(':', "_")
        );
        let r: Value =
            serde_json::from_slice(&std::fs::read(f.control.path().join(&key)).unwrap()).unwrap();
        let done: chrono::DateTime<chrono::Utc> = r["at"].as_str().unwrap().parse().unwrap();
        let took = chrono::Duration::milliseconds(r["details"]["elapsedMs"].as_i64().unwrap());
        (done - took, done)
    };
    let shards_done = [a, b]
        .iter()
        .flat_map(|rs| (0..3).map(move |i| stop_of(rs, i).1))
        .max()
        .unwrap();
    let config_began = (0..3)
        .map(|i| stop_of(&f.cluster.config, i).0)
        .min()
        .unwrap();
    assert!(
        config_began >= shards_done - chrono::Duration::milliseconds(5),
        "config server began stopping at {config_began}, the last shard node stopped at {shards_done}"
    );
    for (shard, rs) in [a, b].iter().enumerate() {
        let want: Vec<i64> = written
            .iter()
            .filter(|w| w.0 == shard && w.2 <= t)
            .map(|w| w.1)
            .collect();
        assert_eq!(
            ids_on(rs),
            want,
            "shard {} holds exactly the writes up to {t:?}",
            rs.name
        );
    }
}

#[test]
fn a_shard_failing_everywhere_reverts_every_set_and_one_failed_node_is_partly_done() {
    let (mut f, _one) = Fixture::new();
    f.backed_up(&[900..905, 0..20, 100..120]);
    // Written after the backup: what every node must hold again after a reverted restore.
    insert(f.set(0), 905..907);
    insert(f.set(1), 20..25);
    insert(f.set(2), 120..125);
    let now = [900..907, 0..25, 100..125];
    wait_all(&f, &now);

    // Every node of shard 2 fails its recovery: no node of that shard is restored, so the
    // restore is Error and every replica set, config server and healthy shard included,
    // gets its data back from the fallback.
    for i in 0..3 {
        f.restart_agent(
            2,
            i,
            &["--standalone-arg=--sim-fail-startup=injected fault"],
        );
    }
    std::thread::sleep(Duration::from_secs(2)); // fresh heartbeats
    let v = f.restore(
        "r1",
        "  allowPartlyDone: true\n  postRestore:\n    startNodes: true\n",
    );
    assert_eq!(v["status"], "error", "{v:#}\n{}", f.logs());
    let why = v["message"].as_str().unwrap_or_default();
    assert!(
        why.contains(&format!(
            "no node was restored in replica set(s) {}",
            f.set(2).name
        )),
        "{v:#}"
    );
    wait_all(&f, &now);

    // One node of shard 1 fails, partial results accepted: PartlyDone, and that node
    // initial-syncs from a restored member of its shard.
    for i in 0..3 {
        f.restart_agent(2, i, &[]);
    }
    f.restart_agent(
        1,
        1,
        &["--standalone-arg=--sim-fail-startup=injected fault"],
    );
    std::thread::sleep(Duration::from_secs(2));
    let v = f.restore(
        "r2",
        "  allowPartlyDone: true\n  postRestore:\n    startNodes: true\n",
    );
    assert_eq!(v["status"], "partlyDone", "{v:#}\n{}", f.logs());
    wait_all(&f, &[900..905, 0..20, 100..120]);
}

/// A document of `db.coll` on the primary of `rs` (the first one, or `None`).
fn first_doc(
    rs: &ReplicaSet,
    db: &str,
    coll: &str,
    filter: bson::Document,
) -> Option<bson::Document> {
    let p = rs.wait_for_primary(Duration::from_secs(60)).ok()?;
    let r = rs
        .process(p)
        .ok()?
        .command(db, doc! {"find": coll, "filter": filter})
        .ok()?;
    r.get_document("cursor")
        .ok()?
        .get_array("firstBatch")
        .ok()?
        .first()?
        .as_document()
        .cloned()
}

#[test]
fn a_backup_restores_onto_a_cluster_with_other_replica_set_names_only_when_remapped() {
    let (mut f, _one) = Fixture::new();
    // Sharding metadata naming the old shards: a zone, a database's primary shard, a
    // chunk, and a shard's recovery point naming the old config server.
    let cfg_primary = f.set(0).wait_for_primary(Duration::from_secs(60)).unwrap();
    let cfg = f.set(0).process(cfg_primary).unwrap();
    cfg.command(
        "config",
        doc! {"update": "shards", "updates": [{"q": {"_id": "rs0"}, "u": {"$set": {"tags": ["zoneA"]}}}]},
    )
    .unwrap();
    cfg.command(
        "config",
        doc! {"insert": "databases", "documents": [{"_id": "app", "primary": "rs0"}]},
    )
    .unwrap();
    cfg.command(
        "config",
        doc! {"insert": "chunks", "documents": [{"_id": 1, "ns": "app.items", "shard": "rs1", "history": [{"validAfter": 1, "shard": "rs1"}]}]},
    )
    .unwrap();
    let rs0 = f.set(1);
    rs0.process(rs0.wait_for_primary(Duration::from_secs(60)).unwrap())
        .unwrap()
        .command(
            "admin",
            doc! {"insert": "system.version", "documents": [{"_id": "minOpTimeRecovery", "configsvrConnectionString": "cfg/old"}]},
        )
        .unwrap();
    f.backed_up(&[900..903, 0..10, 100..110]);
    std::fs::remove_file(f.policies.path().join("backup.yaml")).unwrap();

    // The cluster is rebuilt elsewhere under other names: same control plane and storage.
    let mut g = Fixture::named("cfgnew", "shard", f.into_dirs());
    g.start_reconciler();
    // Without a mapping the restore waits, saying why, and touches nothing.
    g.write_restore("r0", "");
    let waiting = g.control.path().join("ledger/waiting/restore/r0.json");
    let started = Instant::now();
    let why = loop {
        if let Some(w) = std::fs::read(&waiting)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        {
            break w["reason"].as_str().unwrap_or_default().to_string();
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{}", g.logs());
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(why.contains("replicaSetRemap"), "{why}");
    std::fs::remove_file(g.policies.path().join("restore-r0.yaml")).unwrap();

    let v = g.restore(
        "r1",
        "  replicaSetRemap:\n    cfg: cfgnew\n    rs0: shard0\n    rs1: shard1\n  postRestore:\n    \
         startNodes: true\n",
    );
    assert_eq!(v["status"], "done", "{v:#}\n{}", g.logs());
    wait_all(&g, &[900..903, 0..10, 100..110]);
    // The shards know themselves and the config server under the new names and hosts.
    let identity = first_doc(
        g.set(1),
        "admin",
        "system.version",
        doc! {"_id": "shardIdentity"},
    )
    .expect("shardIdentity");
    assert_eq!(
        identity.get_str("shardName").unwrap(),
        "shard0",
        "{identity}"
    );
    assert!(
        identity
            .get_str("configsvrConnectionString")
            .unwrap()
            .starts_with(&format!("cfgnew/{}", g.set(0).host(0))),
        "{identity}"
    );
    let shards =
        first_doc(g.set(0), "config", "shards", doc! {"_id": "shard1"}).expect("config.shards");
    assert_eq!(
        shards.get_str("host").unwrap(),
        format!(
            "shard1/{}",
            (0..3)
                .map(|i| g.set(2).host(i))
                .collect::<Vec<_>>()
                .join(",")
        ),
        "{shards}"
    );
    assert!(
        first_doc(g.set(0), "config", "shards", doc! {"_id": "rs0"}).is_none(),
        "the old shard names are gone"
    );
    let zoned = first_doc(g.set(0), "config", "shards", doc! {"_id": "shard0"}).unwrap();
    assert_eq!(
        zoned.get_array("tags").unwrap().len(),
        1,
        "other fields are kept: {zoned}"
    );
    let db = first_doc(g.set(0), "config", "databases", doc! {"_id": "app"}).unwrap();
    assert_eq!(db.get_str("primary").unwrap(), "shard0", "{db}");
    let chunk = first_doc(g.set(0), "config", "chunks", doc! {"_id": 1}).unwrap();
    assert_eq!(chunk.get_str("shard").unwrap(), "shard1", "{chunk}");
    let history = chunk.get_array("history").unwrap()[0]
        .as_document()
        .unwrap();
    assert_eq!(history.get_str("shard").unwrap(), "shard1", "{chunk}");
    assert!(
        first_doc(
            g.set(1),
            "admin",
            "system.version",
            doc! {"_id": "minOpTimeRecovery"}
        )
        .is_none(),
        "the recovery point naming the old config server is gone"
    );
}

/// A sharded cluster's increment: every shard and the config server continue the chain
/// on the node that took their part of the base, all extend to one cluster time, and a
/// restore of the increment puts every replica set back to it.
#[test]
fn a_sharded_increment_meets_at_one_cluster_time_and_restores_every_replica_set() {
    let (mut f, _one) = Fixture::new();
    for k in 0..3 {
        insert(f.set(k), 0..10);
    }
    f.start_reconciler();
    let take = |f: &Fixture, name: &str, extra: &str| -> Value {
        f.write(
            &format!("backup-{name}.yaml"),
            &format!(
                "apiVersion: tidemark/v1\nkind: Backup\nmetadata:\n  name: {name}\nspec:\n  \
                 cluster: {CLUSTER}\n  storage: local\n  type: incremental\n{extra}"
            ),
        );
        let v = f.wait_end("backup", name);
        assert_eq!(v["status"], "done", "{v:#}\n{}", f.logs());
        let raw = std::fs::read(f.control.path().join(format!("catalog/{name}.json"))).unwrap();
        serde_json::from_slice(&raw).unwrap()
    };
    let base = take(&f, "b0", "  base: true\n  blockSizeMB: 1\n");
    for k in 0..3 {
        insert(f.set(k), 10..20);
    }
    let inc = take(&f, "i1", "");
    assert_eq!(inc["incremental"]["source"], "b0", "{inc:#}");
    let parts = |r: &Value| -> Vec<(String, String, Value)> {
        r["replicaSets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_string(),
                    p["node"].as_str().unwrap().to_string(),
                    p["lastWriteOptime"].clone(),
                )
            })
            .collect()
    };
    let (b, i) = (parts(&base), parts(&inc));
    assert_eq!(i.len(), 3, "{inc:#}");
    for (rs, node, _) in &i {
        let held = b.iter().find(|(r, _, _)| r == rs).map(|(_, n, _)| n);
        assert_eq!(
            held,
            Some(node),
            "replica set {rs} continues on its base's node"
        );
    }
    assert!(
        i.windows(2).all(|w| w[0].2 == w[1].2),
        "one cluster time: {i:?}"
    );
    // Written after the increment: gone after its restore.
    for k in 0..3 {
        insert(f.set(k), 20..30);
    }
    f.write(
        "restore-r1.yaml",
        &format!(
            "apiVersion: tidemark/v1\nkind: Restore\nmetadata:\n  name: r1\nspec:\n  \
             cluster: {CLUSTER}\n  source:\n    backup: i1\n  fallbackEnabled: true\n  \
             postRestore:\n    startNodes: true\n"
        ),
    );
    let v = f.wait_end("restore", "r1");
    assert_eq!(v["status"], "done", "{v:#}\n{}", f.logs());
    wait_all(&f, &[0..20, 0..20, 0..20]);
}
