//! End-to-end restore drills against a mongod-sim replica set: a drill agent restores the
//! newest good backup of a schedule into a scratch dbPath, its checks pass (documents
//! counted, a `dbHash` equal to the one recorded at backup time) and the ledger holds RTO
//! and RPO; a byte flipped in one stored object fails the next run, naming the object,
//! and `status` exits 2; the cluster's own nodes run on throughout (their uptime grows).

#[path = "support/rig.rs"]
mod rig;
#[path = "support/world.rs"]
mod world;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bson::doc;
use serde_json::Value;
use world::*;

const DRILL: &str = "proof";

/// Ended runs of the drill in the ledger, oldest first.
fn runs(w: &World) -> Vec<Value> {
    let dir = w.rig.control.path().join("ledger/oneshots/restoredrill");
    let mut out: Vec<Value> = std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
                .collect()
        })
        .unwrap_or_default();
    out.retain(|r: &Value| r["status"] == "done" || r["status"] == "error");
    out.sort_by_key(|r| r["startedAt"].as_str().unwrap_or_default().to_string());
    out
}

/// Drill runs in the ledger that have not ended.
fn running_runs(w: &World) -> usize {
    let dir = w.rig.control.path().join("ledger/oneshots/restoredrill");
    std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    serde_json::from_slice::<Value>(&std::fs::read(e.path()).ok()?).ok()
                })
                .filter(|r| r["status"] == "running")
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn a_drill_proves_the_newest_backup_on_a_scratch_node_and_a_corrupt_one_fails_by_name() {
    let mut w = World::new("drill");
    // Reference data that no write touches: its hash is stable across a backup.
    w.rig
        .rs
        .process(w.rig.primary())
        .unwrap()
        .command(
            "app",
            doc! {"insert": "products", "documents": (0..20).map(|i| doc! {"_id": i, "sku": format!("p{i}")}).collect::<Vec<_>>()},
        )
        .unwrap();
    w.scheduled("nightly", 0..50, "");
    let scratch = tempfile::TempDir::new().unwrap();
    // A leftover of a killed drill agent: removed when the agent starts.
    std::fs::create_dir_all(scratch.path().join("tidemark-drill-old/rs0")).unwrap();
    std::fs::write(scratch.path().join("unrelated.txt"), "kept").unwrap();
    let mut agent = w.drill_agent(scratch.path(), "drill-1", &[]);
    // A second drill agent on the same directory would kill the first one's standalone
    // and delete its scratch at start: it refuses to run (once the first one beats, so it
    // surely holds the lock).
    let beat = w
        .rig
        .control
        .path()
        .join(format!("agents/{}/_drill/drill-1.json", rig::CLUSTER));
    let started = Instant::now();
    while !beat.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no drill agent heartbeat"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = w.rig.control.path().join("drill-agent-2.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["agent", "--cluster", rig::CLUSTER, "--control"])
        .arg(&w.rig.control_url)
        .arg("--drill-dir")
        .arg(scratch.path())
        .args(["--node-id", "drill-2", "--mongod-bin", "/bin/false"])
        .arg("--insecure-accept-unsigned")
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let second = (code, std::fs::read_to_string(&log).unwrap_or_default());
    assert_eq!(second.0, Some(1), "{}", second.1);
    assert!(
        second.1.contains("locked by another drill agent"),
        "{}",
        second.1
    );
    w.write(
        "drill.yaml",
        &format!(
            "apiVersion: tidemark/v1\nkind: RestoreDrill\nmetadata:\n  name: {DRILL}\nspec:\n  \
             schedule: nightly\n  cron: \"*/2 * * * * *\"\n  checks:\n    collections:\n      \
             - namespace: app.items\n        minDocuments: 50\n    dbHash: [app.products]\n"
        ),
    );
    let before = w.uptimes();
    let began = Instant::now();
    w.start_reconciler();

    // A run on a backup taken after the drill was declared: its hash was recorded.
    let started = Instant::now();
    let passed = loop {
        let done = runs(&w).into_iter().find(|r| {
            r["status"] == "done"
                && r["drill"]["checks"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["check"] == "dbHash" && c["status"] == "passed")
                })
        });
        if let Some(r) = done {
            break r;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no passing drill run: {:#?}\n{}\n{}",
            runs(&w),
            w.reconciler_log(),
            std::fs::read_to_string(w.rig.control.path().join("drill-1.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let outcome = &passed["drill"];
    eprintln!(
        "drill {} passed: rto {} s, rpo {} s",
        passed["name"], outcome["rtoSeconds"], outcome["rpoSeconds"]
    );
    assert!(outcome["rtoSeconds"].as_f64().unwrap() > 0.0, "{passed:#}");
    assert!(outcome["rpoSeconds"].as_f64().unwrap() >= 0.0, "{passed:#}");
    let items = outcome["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["namespace"] == "app.items")
        .cloned()
        .unwrap();
    assert_eq!(items["status"], "passed", "{passed:#}");
    assert!(
        items["detail"]
            .as_str()
            .unwrap()
            .contains("holds 50 documents"),
        "{items:#}"
    );
    assert!(
        !std::path::Path::new(&scratch.path().join("tidemark-drill-old")).exists(),
        "a killed run's leftover is removed at start"
    );
    assert!(scratch.path().join("unrelated.txt").exists());
    let (status, code) = w.status();
    assert_eq!(code, 0, "{status:#}");
    let d = &status["drills"][0];
    assert_eq!(d["drill"], DRILL, "{status:#}");
    assert!(
        d["lastRun"]["outcome"]["rtoSeconds"].as_f64().is_some(),
        "{status:#}"
    );

    // Suspend the schedule, let any backup in flight end, then flip one byte of one
    // object of the newest good backup: the one every later run restores.
    w.write(
        "schedule.yaml",
        &std::fs::read_to_string(w.policies.path().join("schedule.yaml"))
            .unwrap()
            .replace("  type: physical\n", "  type: physical\n  suspend: true\n"),
    );
    let backup = newest_good_once_settled(&w);
    let objects: Vec<std::path::PathBuf> = files_under(&w.rig.storage_dir.path().join(&backup))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "zst"))
        .collect();
    let victim = objects
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap()
        .clone();
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&victim, &bytes).unwrap();
    let key = victim
        .strip_prefix(w.rig.storage_dir.path())
        .unwrap()
        .to_string_lossy()
        .to_string();

    let started = Instant::now();
    let failed = loop {
        // The newest good backup may move on while the schedule's suspension lands; only
        // a run of the damaged backup counts.
        let bad = runs(&w).into_iter().find(|r| {
            r["status"] == "error" && r["message"].as_str().is_some_and(|m| m.contains(&key))
        });
        if let Some(r) = bad {
            break r;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no drill run failed on {key}: {:#?}\n{}",
            runs(&w),
            std::fs::read_to_string(w.rig.control.path().join("drill-1.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        failed["message"].as_str().unwrap().contains("corrupt"),
        "{failed:#}"
    );
    eprintln!("drill {} failed: {}", failed["name"], failed["message"]);
    // `status` reports the failed drill, naming the object, and exits 2.
    let started = Instant::now();
    loop {
        let (status, code) = w.status();
        let last = &status["drills"][0]["lastRun"];
        if last["status"] == "error" {
            assert_eq!(code, 2, "{status:#}");
            assert_eq!(status["drillsFailed"][0], DRILL, "{status:#}");
            assert!(
                last["message"].as_str().unwrap().contains(&key),
                "{status:#}"
            );
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{status:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let text = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["status", "--dead-after", "5s", "--control"])
        .arg(&w.rig.control_url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("FAILED"), "{text}");
    assert!(text.contains(&key), "{text}");

    // Nothing of either run is left on the drill agent's disk, and no cluster node was
    // ever stopped: every uptime grew by the whole time the test ran.
    // Runs start every 2 s: suspend the drill and let the last run end first. A run's end
    // can also be recorded from its failed phase's report a moment before the agent has
    // removed its scratch directory; give it that moment.
    let drill_yaml = std::fs::read_to_string(w.policies.path().join("drill.yaml")).unwrap();
    w.write("drill.yaml", &format!("{drill_yaml}  suspend: true\n"));
    std::thread::sleep(Duration::from_secs(3));
    let started = Instant::now();
    while (running_runs(&w) > 0 || !scratch_left(scratch.path()).is_empty())
        && started.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = agent.kill();
    let _ = agent.wait();
    assert_eq!(scratch_left(scratch.path()), Vec::<String>::new());
    let after = w.uptimes();
    let elapsed = began.elapsed().as_secs_f64();
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        assert!(
            *a >= b + elapsed - 2.0,
            "node {i} restarted: uptime {b} then {a} over {elapsed} s"
        );
    }
}

/// The newest good backup once no backup has started or ended for a few seconds.
fn newest_good_once_settled(w: &World) -> String {
    let newest = || {
        let dir = w.rig.control.path().join("catalog");
        let mut all: Vec<Value> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
            .collect();
        all.sort_by_key(|b| b["startedAt"].as_str().unwrap_or_default().to_string());
        let running = std::fs::read_dir(w.rig.control.path().join("ledger/oneshots/backup"))
            .unwrap()
            .flatten()
            .filter_map(|e| serde_json::from_slice::<Value>(&std::fs::read(e.path()).ok()?).ok())
            .filter(|r| r["status"] == "running" || r["status"] == "starting")
            .count();
        let good = all
            .iter()
            .rev()
            .find(|b| b["status"] == "done" && b["complete"] == true)
            .and_then(|b| b["name"].as_str())
            .map(str::to_string);
        (all.len(), running, good)
    };
    let started = Instant::now();
    let mut last = newest();
    let mut since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = newest();
        if now != last {
            (last, since) = (now, Instant::now());
        } else if last.1 == 0 && since.elapsed() > Duration::from_secs(4) {
            return last.2.expect("a good backup");
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "backups never settle"
        );
    }
}
