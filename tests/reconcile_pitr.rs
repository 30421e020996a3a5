//! End-to-end oplog slicing against a mongod-sim replica set with a steady writer. With
//! `pitr.enabled` the chunks cover every oplog entry from the base backup's last write to
//! within a span (and a few seconds) of now; the slicer's agent killed with SIGKILL hands
//! the stream to another node without a gap and without two chunks holding one entry
//! (beyond the boundary entry chunks share); `tidemark list` shows one window. With the
//! oplog capped small and every agent stopped long enough for it to roll over, the next
//! chunk records the gap with its bounds, `status` exits 2 until a backup taken after the
//! gap bridges it, and `list` then shows two windows.

#[path = "support/rig.rs"]
mod rig;
#[path = "support/world.rs"]
mod world;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};

use bson::doc;
use mongod_sim::client::BlockingConn;
use serde_json::Value;
use tidemark_schema::control::ChunkRecord;
use tidemark_schema::manifest::OpTime;
use tidemark_store::storage::decompress;
use world::*;

/// Each member writes a no-op every second when idle, as mongod's periodic no-op writer
/// does every 10 s: the slicer's newest chunk keeps up with the clock.
const NOOP_EVERY_SECOND: &[&str] = &["--setParameter", "periodicNoopIntervalSecs=1"];

/// A span of two seconds: chunks come often enough for a test to watch several.
fn pitr_schedule(w: &World) {
    w.write(
        "schedule.yaml",
        &tidemark_testkit::pitr_schedule_yaml(rig::CLUSTER, "local", "2s"),
    );
}

/// Inserts one document at a time into the primary until stopped, asking each member in
/// turn when the primary does not answer; counts what it wrote.
struct Writer {
    stop: Arc<AtomicBool>,
    written: Arc<AtomicI32>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(w: &World, first_id: i32) -> Writer {
        let hosts: Vec<String> = (0..3).map(|i| w.rig.node(i)).collect();
        let (stop, written) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicI32::new(0)),
        );
        let (s, n) = (stop.clone(), written.clone());
        let thread = std::thread::spawn(move || {
            let mut id = first_id;
            let mut at = 0;
            while !s.load(Ordering::Relaxed) {
                let host = &hosts[at % hosts.len()];
                let ok = BlockingConn::connect(host, Duration::from_secs(2))
                    .ok()
                    .and_then(|mut c| {
                        c.command("app", doc! {"insert": "steady", "documents": [{"_id": id}]})
                            .ok()
                    })
                    .is_some_and(|r| r.get_f64("ok").unwrap_or(0.0) == 1.0);
                if ok {
                    id += 1;
                    n.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(20));
                } else {
                    at += 1;
                }
            }
        });
        Writer {
            stop,
            written,
            thread: Some(thread),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn wait_chunks(
    w: &World,
    what: &str,
    secs: u64,
    f: impl Fn(&[ChunkRecord]) -> bool,
) -> Vec<ChunkRecord> {
    let started = Instant::now();
    loop {
        let c = w.chunk_records();
        if f(&c) {
            return c;
        }
        assert!(
            started.elapsed() < Duration::from_secs(secs),
            "{what} within {secs}s; chunks: {c:#?}\n{}",
            w.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The timestamps of every entry the chunks hold, read back from storage (decompressed,
/// checked against the index's checksum and entry count), in order.
fn sliced_entries(w: &World, chunks: &[ChunkRecord]) -> Vec<OpTime> {
    let mut all = Vec::new();
    for c in chunks {
        let path = w.rig.storage_dir.path().join(&c.object);
        let stored = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", c.object));
        assert_eq!(
            blake3::hash(&stored).to_hex().to_string(),
            c.checksum,
            "{}",
            c.object
        );
        let raw = decompress(c.compression, stored.into()).unwrap();
        let mut entries = Vec::new();
        let mut at = 0;
        while at < raw.len() {
            let len = i32::from_le_bytes(raw[at..at + 4].try_into().unwrap()) as usize;
            let d = bson::Document::from_reader(&raw[at..at + len]).unwrap();
            let ts = d.get_timestamp("ts").unwrap();
            entries.push(OpTime {
                t: ts.time,
                i: ts.increment,
            });
            at += len;
        }
        assert_eq!(entries.len() as u64, c.entries, "{}", c.object);
        assert_eq!(entries.first(), Some(&c.first));
        assert_eq!(entries.last(), Some(&c.last));
        all.push(entries);
    }
    // Consecutive chunks share exactly their boundary entry: no gap, no other overlap.
    let mut flat: Vec<OpTime> = Vec::new();
    for (i, entries) in all.into_iter().enumerate() {
        let skip = usize::from(i > 0);
        if i > 0 {
            assert_eq!(
                Some(&entries[0]),
                flat.last(),
                "chunk {i} starts at the last one's end"
            );
        }
        flat.extend(entries.into_iter().skip(skip));
    }
    assert!(
        flat.windows(2).all(|p| p[0] < p[1]),
        "each entry sliced once, in order"
    );
    flat
}

/// The primary's oplog timestamps in `from..=to`.
fn oplog_entries(w: &World, from: OpTime, to: OpTime) -> Vec<OpTime> {
    let ts = |o: OpTime| bson::Timestamp {
        time: o.t,
        increment: o.i,
    };
    let reply = w
        .rig
        .rs
        .process(w.rig.primary())
        .unwrap()
        .command(
            "local",
            doc! {"find": "oplog.rs", "filter": {"ts": {"$gte": ts(from), "$lte": ts(to)}},
            "sort": {"$natural": 1}, "batchSize": 1_000_000},
        )
        .unwrap();
    reply
        .get_document("cursor")
        .unwrap()
        .get_array("firstBatch")
        .unwrap()
        .iter()
        .map(|d| {
            let t = d.as_document().unwrap().get_timestamp("ts").unwrap();
            OpTime {
                t: t.time,
                i: t.increment,
            }
        })
        .collect()
}

/// `tidemark list -o json`.
fn list(w: &World) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["list", "-o", "json"])
        .env("TIDEMARK_CONTROL", &w.rig.control_url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The reason `diff` gives for a point-in-time Restore to `target`, declared in a copy of
/// the policies (so the running reconciler never sees it).
fn restore_reason(w: &World, target: OpTime) -> String {
    let yaml = format!(
        "apiVersion: tidemark/v1\nkind: Restore\nmetadata:\n  name: back\nspec:\n  \
         cluster: {}\n  source:\n    pointInTime: {{t: {}, i: {}}}\n  fallbackEnabled: true\n",
        rig::CLUSTER,
        target.t,
        target.i
    );
    let step = w
        .preview_restore("back", &yaml)
        .expect("a step for the restore");
    assert_eq!(step["action"], "blocked", "{step:#}");
    step["reason"].as_str().unwrap().to_string()
}

fn base_point(w: &World, backup: &str) -> OpTime {
    let v = w.control_json(&format!("catalog/{backup}.json")).unwrap();
    serde_json::from_value(v["replicaSets"][0]["lastWriteOptime"].clone()).unwrap()
}

fn slicer_index(w: &World) -> Option<usize> {
    let a = w.control_json(&format!(
        "pitr/slicing/{}/{}.json",
        rig::CLUSTER,
        w.rig.rs.name
    ))?;
    let node = a["streams"][0]["node"].as_str()?.to_string();
    (0..3).find(|i| w.rig.node(*i) == node)
}

#[test]
fn slicing_hands_over_after_a_kill_without_gap_or_overlap() {
    let mut w = World::with_sim_args("pitr-handover", NOOP_EVERY_SECOND);
    w.rig.insert(0..100);
    for i in 0..3 {
        w.rig.start_agent(i);
    }
    w.start_reconciler();
    w.backup("base");
    let base = base_point(&w, "base");
    let writer = Writer::start(&w, 1000);
    pitr_schedule(&w);
    let first = wait_chunks(&w, "three chunks", 60, |c| c.len() >= 3);
    assert!(
        first[0].first <= base,
        "the first chunk starts at the base's last write"
    );
    let slicer = slicer_index(&w).expect("a slicer is assigned");
    w.rig.kill_agent(slicer);
    let killed = w.rig.node(slicer);
    let after = wait_chunks(&w, "two chunks by another node", 90, |c| {
        c.iter().filter(|c| c.node != killed).count() >= 2
    });
    let newest = after.last().unwrap().last;
    let now = chrono::Utc::now().timestamp();
    // Within a span and a few seconds of now (beats, polls, the majority point).
    assert!(
        now - i64::from(newest.t) <= 2 + 8,
        "newest chunk ends {}s ago",
        now - i64::from(newest.t)
    );
    let wrote = writer.written.load(Ordering::Relaxed);
    assert!(
        wrote >= 100,
        "the writer kept writing through the handover: {wrote}"
    );
    drop(writer);
    assert!(after.iter().all(|c| c.gap.is_none()), "{after:#?}");
    let sliced = sliced_entries(&w, &after);
    let oplog = oplog_entries(&w, sliced[0], newest);
    let (s, o): (BTreeSet<OpTime>, BTreeSet<OpTime>) = (
        sliced.iter().copied().collect(),
        oplog.iter().copied().collect(),
    );
    assert_eq!(
        o.difference(&s).count(),
        0,
        "every oplog entry from the first chunk to the newest is sliced"
    );
    let l = list(&w);
    let t = &l["timelines"][0];
    assert_eq!(t["windows"].as_array().map(Vec::len), Some(1), "{l:#}");
    assert_eq!(
        serde_json::from_value::<OpTime>(t["windows"][0]["from"].clone()).unwrap(),
        base
    );
    assert_eq!(t["gaps"], 0);
    let (status, code) = w.status();
    assert_eq!(code, 0, "{status:#}");
    assert!(
        status["pitr"][0]["lagSeconds"].as_i64().is_some(),
        "{status:#}"
    );
}

#[test]
fn a_rolled_over_oplog_is_a_recorded_gap_until_a_backup_bridges_it() {
    let mut args = NOOP_EVERY_SECOND.to_vec();
    args.extend(["--oplogSize", "1"]);
    let mut w = World::with_sim_args("pitr-gap", &args);
    w.rig.insert(0..100);
    for i in 0..3 {
        w.rig.start_agent(i);
    }
    w.start_reconciler();
    w.backup("before");
    pitr_schedule(&w);
    wait_chunks(&w, "a chunk", 60, |c| !c.is_empty());
    for i in 0..3 {
        w.rig.kill_agent(i);
    }
    let held = w.chunk_records().last().unwrap().last;
    // Writes of 100 KiB at a time roll the 1 MiB oplog over while no slicer runs (the sim,
    // as mongod, truncates only behind the commit point and the last checkpoint).
    let started = Instant::now();
    let mut batch = 0;
    while oplog_entries(&w, OpTime { t: 0, i: 0 }, OpTime { t: u32::MAX, i: 0 })[0] <= held {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the oplog never rolled over"
        );
        let docs: Vec<bson::Document> = (0..10)
            .map(|i| doc! {"_id": 10_000 + batch * 10 + i, "pad": "y".repeat(10_000)})
            .collect();
        batch += 1;
        let p = w.rig.primary();
        w.rig
            .rs
            .process(p)
            .unwrap()
            .command("app", doc! {"insert": "big", "documents": docs})
            .unwrap();
    }
    for i in 0..3 {
        w.rig.start_agent(i);
    }
    let c = wait_chunks(&w, "a chunk after the gap", 60, |c| {
        c.iter().any(|c| c.gap.is_some())
    });
    let gapped = c.iter().find(|c| c.gap.is_some()).unwrap();
    let gap = gapped.gap.unwrap();
    assert_eq!(gap.from, held, "the gap starts at the last sliced entry");
    assert!(gap.to > held && gap.to == gapped.first, "{gap:?}");
    let v = w.wait_for("status shows the gap", 30, |v| {
        v["pitrGaps"].as_array().is_some_and(|g| !g.is_empty())
    });
    let (_, code) = w.status();
    assert_eq!(code, 2, "an open gap fails status: {v:#}");
    // A restore to a point inside the gap is refused by the plan, naming the gap and the
    // nearest point that can be reached: no op is written, no node stops.
    let inside = OpTime {
        t: gap.from.t,
        i: gap.from.i + 1,
    };
    let reason = restore_reason(&w, inside);
    assert!(
        reason.contains("has a gap in its oplog from") && reason.contains(&gap.to.to_string()),
        "{reason}"
    );
    assert!(
        reason.contains("nearest reachable points: ") && reason.contains(&held.to_string()),
        "{reason}"
    );
    w.backup("after");
    // The second window opens once the chunks reach the new backup's last write.
    let started = Instant::now();
    let windows = loop {
        let l = list(&w);
        let windows = l["timelines"][0]["windows"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if windows.len() == 2 {
            break windows;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "two windows: {l:#}\n{}",
            w.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        serde_json::from_value::<OpTime>(windows[0]["to"].clone()).unwrap(),
        held,
        "the first window ends where the gap begins"
    );
    w.wait_for("the gap bridged", 30, |v| {
        v["pitrGaps"].as_array().is_some_and(|g| g.is_empty())
    });
    let (status, code) = w.status();
    assert_eq!(code, 0, "a backup after the gap bridges it: {status:#}");
}

#[test]
fn a_slicer_that_cannot_write_is_named_by_status_and_recovers() {
    let mut w = World::with_sim_args("pitr-broken", NOOP_EVERY_SECOND);
    for i in 0..3 {
        w.rig.start_agent(i);
    }
    w.start_reconciler();
    // A file where the chunks' directory goes: every chunk write fails, naming the object.
    let blocker = w.rig.storage_dir.path().join("_pitr");
    std::fs::write(&blocker, b"not a directory").unwrap();
    pitr_schedule(&w);
    let v = w.wait_for("the slicer's failure in status", 60, |v| {
        v["pitr"][0]["slicers"][0]["error"].is_string()
    });
    let error = v["pitr"][0]["slicers"][0]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.contains("_pitr/"),
        "the error names the object: {error}"
    );
    assert!(w.chunk_records().is_empty());
    let text = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .arg("status")
        .env("TIDEMARK_CONTROL", &w.rig.control_url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    assert!(
        text.contains("FAILING"),
        "{text}\n{:#}",
        w.status().0["pitr"]
    );
    std::fs::remove_file(&blocker).unwrap();
    wait_chunks(&w, "a chunk once storage takes writes", 60, |c| {
        !c.is_empty()
    });
    w.wait_for("the failure cleared", 30, |v| {
        v["pitr"][0]["slicers"][0]["error"].is_null()
    });
}
