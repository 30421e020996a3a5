//! Incremental backups end to end, on a mongod-sim replica set: a base, then about 1 % of
//! a larger collection changed in place, then increments. Each increment stores a small
//! fraction of the base's bytes, on the node that took the base; restoring one (a chain of
//! two, then of three) leaves every node with exactly the data of that increment, with
//! fallback, and with a node that fails its recovery (PartlyDone: it initial-syncs). When
//! the chain's node stops for good, the next scheduled run is a new base on another node,
//! and `status` and `diff` said why first; no increment is ever taken elsewhere. A drill
//! restores an increment on a scratch node, `tidemark list` shows where it sits in its
//! chain, and a point-in-time restore starts from an increment and replays the oplog.

#[path = "support/rig.rs"]
mod rig;
#[path = "support/world.rs"]
mod world;

use std::time::{Duration, Instant};

use bson::{Document, doc};
use mongod_sim::client::BlockingConn;
use serde_json::Value;
use world::*;

/// Documents in `big.docs`, and the size of each one's payload.
const DOCS: i32 = 6000;
const PAYLOAD: usize = 4000;

/// A payload that does not compress to nothing: generation `g` of document `id`.
fn payload(id: i32, g: u32) -> String {
    let mut x = (id as u64).wrapping_mul(6364136223846793005)
        ^ u64::from(g).wrapping_mul(1442695040888963407);
    let mut s = String::with_capacity(PAYLOAD);
    while s.len() < PAYLOAD {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        s.push_str(&format!("{:016x}", x));
    }
    s.truncate(PAYLOAD);
    s
}

fn fill_big(w: &World) {
    for chunk in (0..DOCS).collect::<Vec<_>>().chunks(500) {
        let docs: Vec<Document> = chunk
            .iter()
            .map(|&i| doc! {"_id": i, "g": 0, "v": payload(i, 0)})
            .collect();
        w.on_primary("big", doc! {"insert": "docs", "documents": docs});
    }
}

/// Rewrites documents `ids` in place to generation `g` (same size: only their blocks
/// change).
fn change(w: &World, ids: std::ops::Range<i32>, g: i32) {
    let updates: Vec<Document> = ids
        .map(|i| doc! {"q": {"_id": i}, "u": {"$set": {"g": g, "v": payload(i, g as u32)}}})
        .collect();
    w.on_primary("big", doc! {"update": "docs", "updates": updates});
}

/// `(id, generation)` of every document of `big.docs` on node `i`, or `None`.
fn generations(w: &World, i: usize) -> Option<Vec<(i32, i32)>> {
    let mut c = BlockingConn::connect(&w.rig.node(i), Duration::from_secs(2)).ok()?;
    let r = c
        .command(
            "big",
            doc! {"find": "docs", "filter": {}, "projection": {"g": 1}, "batchSize": 100000, "sort": {"_id": 1}, "$readPreference": {"mode": "secondaryPreferred"}},
        )
        .ok()?;
    let batch = r
        .get_document("cursor")
        .ok()?
        .get_array("firstBatch")
        .ok()?;
    Some(
        batch
            .iter()
            .filter_map(|d| {
                let d = d.as_document()?;
                Some((d.get_i32("_id").ok()?, d.get_i32("g").ok()?))
            })
            .collect(),
    )
}

fn wait_generations(w: &World, want: &[(i32, i32)]) {
    for i in 0..3 {
        let started = Instant::now();
        loop {
            let got = generations(w, i);
            if got.as_deref() == Some(want) {
                break;
            }
            assert!(
                started.elapsed() < rig::LONG,
                "node {i} holds {:?} documents of big.docs, {} differ from the wanted ones\n{}",
                got.as_ref().map(Vec::len),
                got.map_or(0, |g| g.iter().zip(want).filter(|(a, b)| a != b).count()),
                w.logs()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

/// The documents' generations after changing `changed` (each range to its generation).
fn expected(changed: &[(std::ops::Range<i32>, i32)]) -> Vec<(i32, i32)> {
    (0..DOCS)
        .map(|id| {
            let g = changed
                .iter()
                .rev()
                .find(|(r, _)| r.contains(&id))
                .map_or(0, |(_, g)| *g);
            (id, g)
        })
        .collect()
}

fn incremental_yaml(w: &World, name: &str, extra: &str) {
    w.write(
        &format!("backup-{name}.yaml"),
        &format!(
            "apiVersion: tidemark/v1\nkind: Backup\nmetadata:\n  name: {name}\nspec:\n  \
             cluster: {}\n  storage: local\n  type: incremental\n{extra}",
            rig::CLUSTER
        ),
    );
}

fn catalog(w: &World, name: &str) -> Value {
    w.control_json(&format!("catalog/{name}.json"))
        .unwrap_or_else(|| panic!("backup {name} in the catalog\n{}", w.logs()))
}

fn take(w: &World, name: &str, extra: &str) -> Value {
    incremental_yaml(w, name, extra);
    let v = w.wait_end("backup", name);
    assert_eq!(v["status"], "done", "{v:#}\n{}", w.reconciler_log());
    catalog(w, name)
}

fn node_of(record: &Value) -> String {
    record["replicaSets"][0]["node"]
        .as_str()
        .unwrap()
        .to_string()
}

fn stored(record: &Value) -> u64 {
    record["replicaSets"][0]["storedBytes"].as_u64().unwrap()
}

/// A base, then two increments over about 1 % changes each; every node settled.
fn chain_of_three(w: &mut World) -> Vec<(std::ops::Range<i32>, i32)> {
    w.rig.insert(0..50);
    fill_big(w);
    for i in 0..3 {
        w.rig.start_agent(i);
    }
    w.start_reconciler();
    // Every member holds the writes before each backup, whichever member takes it (one
    // lagging behind takes a consistent backup of an earlier point).
    settled(w, &[], std::slice::from_ref(&(0..50)));
    let base = take(w, "b0", "  base: true\n  blockSizeMB: 1\n");
    assert!(base["incremental"]["source"].is_null(), "{base:#}");
    let changed = vec![(100..160, 1)];
    change(w, 100..160, 1);
    w.rig.insert(100..105);
    settled(w, &changed, &[0..50, 100..105]);
    let i1 = take(w, "i1", "");
    assert_eq!(i1["incremental"]["source"], "b0", "{i1:#}");
    assert_eq!(i1["incremental"]["position"], 1, "{i1:#}");
    assert_eq!(
        node_of(&i1),
        node_of(&base),
        "an increment runs where its history is"
    );
    assert!(
        stored(&i1) * 5 < stored(&base),
        "the increment stores {} B, the base {} B",
        stored(&i1),
        stored(&base)
    );
    let mut changed = changed;
    changed.push((3000..3060, 2));
    change(w, 3000..3060, 2);
    w.rig.insert(200..205);
    settled(w, &changed, &[0..50, 100..105, 200..205]);
    let i2 = take(w, "i2", "");
    assert_eq!(i2["incremental"]["source"], "i1", "{i2:#}");
    assert_eq!(node_of(&i2), node_of(&base));
    // Written after the last increment: a restore must not bring these back.
    change(w, 5000..5060, 3);
    w.rig.insert(300..305);
    changed
}

/// Waits until every member holds `changed` in `big.docs` and exactly `ids` in
/// `app.items`.
fn settled(w: &World, changed: &[(std::ops::Range<i32>, i32)], ids: &[std::ops::Range<i32>]) {
    wait_generations(w, &expected(changed));
    for i in 0..3 {
        w.wait_ids(i, &items(ids));
    }
}

fn items(upto: &[std::ops::Range<i32>]) -> Vec<i32> {
    upto.iter().flat_map(|r| r.clone()).collect()
}

#[test]
fn a_chain_restores_exactly_the_data_of_each_increment_on_every_node() {
    let mut w = World::new("incr");
    let changed = chain_of_three(&mut w);
    // The chain of two: the data of i1, on every node.
    let v = w.restore(
        "r1",
        "i1",
        "  fallbackEnabled: true\n  postRestore:\n    startNodes: true\n",
    );
    assert_eq!(v["status"], "done", "{v:#}\n{}", w.logs());
    wait_generations(&w, &expected(&changed[..1]));
    for i in 0..3 {
        w.wait_ids(i, &items(&[0..50, 100..105]));
    }
    // The chain of three, fetched from its base: the data of i2.
    let v = w.restore(
        "r2",
        "i2",
        "  fallbackEnabled: true\n  postRestore:\n    startNodes: true\n",
    );
    assert_eq!(v["status"], "done", "{v:#}\n{}", w.logs());
    wait_generations(&w, &expected(&changed));
    for i in 0..3 {
        w.wait_ids(i, &items(&[0..50, 100..105, 200..205]));
    }
}

#[test]
fn a_node_that_fails_an_increments_restore_initial_syncs_from_the_others() {
    if rig::sim_only("a standalone start that fails (--sim-fail-startup)") {
        return;
    }
    let mut w = World::new("incp");
    let changed = chain_of_three(&mut w);
    // Node 2's next standalone start fails: its recovery fails after the rebuild.
    w.rig.kill_agent(2);
    w.rig
        .start_agent_with(2, &["--standalone-arg=--sim-fail-startup=injected fault"]);
    let v = w.restore(
        "r1",
        "i2",
        "  fallbackEnabled: true\n  allowPartlyDone: true\n  postRestore:\n    startNodes: true\n",
    );
    assert_eq!(v["status"], "partlyDone", "{v:#}\n{}", w.logs());
    assert_eq!(node_view(&w, &v, 2)["outcome"], "failed", "{v:#}");
    wait_generations(&w, &expected(&changed));
    for i in 0..3 {
        w.wait_ids(i, &items(&[0..50, 100..105, 200..205]));
    }
}

#[test]
fn when_the_chains_node_stops_for_good_the_next_run_is_a_new_base_elsewhere() {
    let mut w = World::new("incn");
    w.rig.insert(0..50);
    for i in 0..3 {
        w.rig.start_agent(i);
    }
    let schedule = |suspend: bool| {
        format!(
            "apiVersion: tidemark/v1\nkind: BackupSchedule\nmetadata:\n  name: every3s\n\
             spec:\n  cluster: {}\n  storage: local\n  type: incremental\n  \
             cron: \"*/3 * * * * *\"\n  suspend: {suspend}\n  incremental:\n    \
             blockSizeMB: 1\n",
            rig::CLUSTER
        )
    };
    w.write("schedule.yaml", &schedule(false));
    w.start_reconciler();
    // A base and an increment of it.
    let records = all_records;
    let good = |r: &Value| r["status"] == "done" && r["complete"] == true;
    let started = Instant::now();
    let chain_node = loop {
        let rs = records(&w);
        if let Some(inc) = rs
            .iter()
            .find(|r| good(r) && r["incremental"]["position"] == 1)
        {
            break node_of(inc);
        }
        assert!(
            started.elapsed() < rig::LONG,
            "no increment yet: {rs:#?}\n{}",
            w.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let held = (0..3).find(|&i| w.rig.node(i) == chain_node).unwrap();
    // Suspended, so the node goes away between two backups, not in the middle of one.
    w.write("schedule.yaml", &schedule(true));
    let started = Instant::now();
    while !w.status().0["operations"]
        .as_array()
        .is_some_and(|o| o.is_empty())
    {
        assert!(started.elapsed() < rig::LONG, "{}", w.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    // The chain's node goes away for good: its agent and its mongod.
    w.rig.kill_agent(held);
    w.rig.rs.kill(held);
    let started = Instant::now();
    loop {
        let why = w.status().0["schedules"][0]["nextIncremental"]["why"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if why.starts_with("new base")
            && why.contains(&chain_node)
            && why.contains("cannot take it")
        {
            break;
        }
        assert!(started.elapsed() < rig::LONG, "status says: {why:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let seen = records(&w).len();
    w.write("schedule.yaml", &schedule(false));
    let started = Instant::now();
    let base = loop {
        let rs = records(&w);
        if let Some(b) = rs[seen.min(rs.len())..]
            .iter()
            .find(|r| good(r) && r["incremental"]["source"].is_null())
        {
            break b.clone();
        }
        assert!(
            started.elapsed() < rig::LONG,
            "no new base: {rs:#?}\n{}",
            w.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let reason = base["incremental"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("new base") && reason.contains(&chain_node),
        "the catalog says why: {base:#}"
    );
    assert_ne!(node_of(&base), chain_node, "{base:#}");
    // Every increment ever taken ran on the node of its chain's base.
    let all = records(&w);
    for r in all
        .iter()
        .filter(|r| r["incremental"]["source"].is_string())
    {
        let base = all
            .iter()
            .find(|b| b["name"] == r["incremental"]["base"])
            .unwrap();
        assert_eq!(node_of(r), node_of(base), "{r:#}");
    }
}

/// Every catalog record, oldest first.
fn all_records(w: &World) -> Vec<Value> {
    let dir = w.rig.control.path().join("catalog");
    let mut out: Vec<Value> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
                .collect()
        })
        .unwrap_or_default();
    out.sort_by(|a: &Value, b| a["startedAt"].as_str().cmp(&b["startedAt"].as_str()));
    out
}

#[test]
fn a_drill_restores_an_increment_and_list_shows_the_chain() {
    let mut w = World::new("incd");
    w.rig.insert(0..50);
    for i in 0..3 {
        w.rig.start_agent(i);
    }
    let scratch = tempfile::TempDir::new().unwrap();
    let _drill_agent = w.drill_agent(scratch.path(), "drill-1", &[]);
    w.write(
        "schedule.yaml",
        &format!(
            "apiVersion: tidemark/v1\nkind: BackupSchedule\nmetadata:\n  name: every3s\n\
             spec:\n  cluster: {}\n  storage: local\n  type: incremental\n  \
             cron: \"*/3 * * * * *\"\n  incremental:\n    blockSizeMB: 1\n---\n\
             apiVersion: tidemark/v1\nkind: RestoreDrill\nmetadata:\n  name: proof\nspec:\n  \
             schedule: every3s\n  cron: \"*/2 * * * * *\"\n  checks:\n    collections:\n      \
             - namespace: app.items\n        minDocuments: 50\n",
            rig::CLUSTER
        ),
    );
    w.start_reconciler();
    // A drill run that passed on a backup that is an increment.
    let started = Instant::now();
    let backup = loop {
        let records = all_records(&w);
        let increments: Vec<&str> = records
            .iter()
            .filter(|r| r["incremental"]["source"].is_string())
            .filter_map(|r| r["name"].as_str())
            .collect();
        let dir = w.rig.control.path().join("ledger/oneshots/restoredrill");
        let passed = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .find_map(|e| {
                let r: Value = serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
                let b = r["startedWith"]["settings"]["backup"].as_str()?.to_string();
                (r["status"] == "done" && increments.contains(&b.as_str())).then_some(b)
            });
        if let Some(b) = passed {
            break b;
        }
        assert!(
            started.elapsed() < rig::LONG,
            "no drill passed on an increment: {records:#?}\n{}",
            w.logs()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    // `tidemark list` shows where it sits.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["list", "-o", "json", "--control"])
        .arg(w.rig.control.path())
        .output()
        .unwrap();
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let entry = listed["backups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == backup.as_str())
        .cloned()
        .unwrap();
    assert!(
        entry["incremental"]["position"].as_u64().unwrap() >= 1,
        "{entry:#}"
    );
    let text = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["list", "--control"])
        .arg(w.rig.control.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!(
            "increment {} of chain {}",
            entry["incremental"]["position"],
            entry["incremental"]["base"].as_str().unwrap()
        )),
        "{text}"
    );
}

#[test]
fn a_point_in_time_restore_starts_from_an_increment() {
    let mut w = World::with_sim_args("incpit", &["--setParameter", "periodicNoopIntervalSecs=1"]);
    w.rig.insert(0..50);
    for i in 0..3 {
        w.rig.start_agent(i);
    }
    w.write(
        "schedule.yaml",
        &format!(
            "apiVersion: tidemark/v1\nkind: BackupSchedule\nmetadata:\n  name: pitr\nspec:\n  \
             cluster: {}\n  storage: local\n  type: incremental\n  cron: \"0 0 1 1 *\"\n  \
             incremental:\n    blockSizeMB: 1\n  pitr:\n    enabled: true\n    oplogSpan: 2s\n",
            rig::CLUSTER
        ),
    );
    w.start_reconciler();
    take(&w, "b0", "  base: true\n  blockSizeMB: 1\n");
    w.rig.insert(100..110);
    let i1 = take(&w, "i1", "");
    assert_eq!(i1["incremental"]["source"], "b0", "{i1:#}");
    // Written after the increment, then the target, then a mistake.
    w.rig.insert(200..210);
    let r = w.on_primary("app", doc! {"insert": "items", "documents": [{"_id": 211}]});
    let ts = r.get_timestamp("operationTime").expect("an operationTime");
    w.on_primary(
        "app",
        doc! {"delete": "items", "deletes": [{"q": {}, "limit": 0}]},
    );
    let target = tidemark_schema::manifest::OpTime {
        t: ts.time,
        i: ts.increment,
    };
    wait_until(&w, "the oplog sliced past the target", || {
        w.chunk_records().iter().any(|c| c.last > target)
    });
    w.write(
        "restore-undo.yaml",
        &format!(
            "apiVersion: tidemark/v1\nkind: Restore\nmetadata:\n  name: undo\nspec:\n  \
             cluster: {}\n  source:\n    pointInTime: {{t: {}, i: {}}}\n  \
             fallbackEnabled: true\n  postRestore:\n    startNodes: true\n",
            rig::CLUSTER,
            target.t,
            target.i
        ),
    );
    let v = w.wait_end("restore", "undo");
    assert_eq!(v["status"], "done", "{v:#}\n{}", w.logs());
    let d = w.describe("restore", "undo");
    let base = d["pointInTime"]["baseReason"].as_str().unwrap_or_default();
    assert!(
        base.contains("\"i1\""),
        "the newest base before the target is the increment: {d:#}"
    );
    for i in 0..3 {
        w.wait_ids(i, &items(&[0..50, 100..110, 200..210, 211..212]));
    }
}
