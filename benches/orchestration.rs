//! Benchmark of the reconciler's orchestration: a replica set of 3 restored through
//! `tidemark reconcile` and three `tidemark agent`s, all with their default poll and
//! heartbeat intervals, from the Restore file being written to the restore being Done,
//! minus the slowest node's `fetch` (the data path, benchmarked on its own in the agent's
//! `physical` bench). What is left is the time tidemark's coordination adds: the pre-flight,
//! the go barrier, stopping, moving aside, recovering, deciding and removing the fallback.
//!
//! `cargo bench --bench orchestration` (env `TIDEMARK_BENCH_GIB`, default 0.25; rounds
//! `TIDEMARK_BENCH_ROUNDS`, default 5). Prints `name: value` lines; each figure is the
//! median of the rounds with its min–max beside it, and each round's timeline on stderr.
//! mongod-sim keeps its data in memory and reads every file at each start-up (mongod does
//! not), so `recover` grows with the data here and the sims need several times the data
//! size in RAM (1 GiB takes about 24 GiB over the three members and their standalones,
//! hence the default): `restore_coordination_s` leaves the slowest recover out as well.

#[path = "../tests/support/rig.rs"]
mod rig;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bson::doc;
use chrono::{DateTime, Utc};
use rig::{CLUSTER, Rig};
use tidemark_schema::control::{
    Heartbeat, OneShotRecord, Phase, PhaseReport, PhaseStatus, heartbeat_key, oneshot_key,
    phase_key,
};
use tidemark_testkit::wait_until;

fn read<T: serde::de::DeserializeOwned>(control: &Path, key: &str) -> Option<T> {
    serde_json::from_slice(&std::fs::read(control.join(key)).ok()?).ok()
}

/// `median (min–max)` of seconds.
fn spread(mut v: Vec<f64>) -> String {
    v.sort_by(f64::total_cmp);
    format!(
        "{:.2} (min–max {:.2}–{:.2})",
        v[v.len() / 2],
        v[0],
        v[v.len() - 1]
    )
}

fn start_agent(rig: &Rig, i: usize) -> Child {
    rig.agent_command(i)
        .env("TIDEMARK_LOG", "warn")
        .spawn()
        .expect("tidemark agent starts")
}

/// The one-shot's final record.
fn wait_final(control: &Path, kind: &str, name: &str) -> OneShotRecord {
    wait_until(&format!("{kind} {name}"), Duration::from_secs(1800), || {
        read::<OneShotRecord>(control, &oneshot_key(kind, name)).filter(|r| r.is_final())
    })
}

/// Every member answers with a primary, and each agent has sent a heartbeat since `since`
/// that saw its mongod (the pre-flight needs it).
fn wait_ready(rig: &Rig, since: DateTime<Utc>) {
    rig.rs.wait_settled(Duration::from_secs(120)).unwrap();
    for i in 0..3 {
        let key = heartbeat_key(CLUSTER, &rig.rs.name, &rig.node(i));
        wait_until("a fresh heartbeat", Duration::from_secs(60), || {
            read::<Heartbeat>(rig.control.path(), &key)
                .filter(|h| h.at > since && h.role != tidemark_schema::control::MemberRole::Down)
        });
    }
}

/// Documents in `app.items` on member `i`, read there even when it is a secondary.
fn count_items(rig: &Rig, i: usize) -> Option<i64> {
    let reply = rig
        .rs
        .process(i)
        .ok()?
        .command(
            "app",
            doc! {"count": "items", "$readPreference": {"mode": "secondaryPreferred"}},
        )
        .ok()?;
    reply
        .get_i32("n")
        .map(i64::from)
        .or_else(|_| reply.get_i64("n"))
        .ok()
}

/// Where a round's time went: each step's end, in seconds from the file being written.
fn timeline(control: &Path, rig: &Rig, r: &OneShotRecord, written: DateTime<Utc>) {
    let since = |t: DateTime<Utc>| (t - written).as_seconds_f64();
    let mut line = format!("  ledger {:.2}", since(r.started_at));
    for phase in [
        "precheck", "disk", "ready", "stop", "fallback", "fetch", "recover", "done",
    ] {
        let ends: Vec<String> = (0..3)
            .filter_map(|i| {
                let key = phase_key(&r.op_id, &rig.rs.name, &rig.node(i), phase);
                read::<PhaseReport>(control, &key).map(|p| format!("{:.2}", since(p.at)))
            })
            .collect();
        line.push_str(&format!(" | {phase} {}", ends.join("/")));
    }
    if let Some(g) = read::<serde_json::Value>(control, &format!("ops/{}/go.json", r.op_id))
        && let Some(at) = g["at"]
            .as_str()
            .and_then(|a| a.parse::<DateTime<Utc>>().ok())
    {
        line.push_str(&format!(" | go {:.2}", since(at)));
    }
    if let Some(d) = read::<serde_json::Value>(control, &format!("ops/{}/result.json", r.op_id))
        && let Some(at) = d["decidedAt"]
            .as_str()
            .and_then(|a| a.parse::<DateTime<Utc>>().ok())
    {
        line.push_str(&format!(" | decided {:.2}", since(at)));
    }
    let stage = format!("{}.removeFallback", r.op_id);
    let ends: Vec<String> = (0..3)
        .filter_map(|i| {
            let key = phase_key(&stage, &rig.rs.name, &rig.node(i), "done");
            read::<PhaseReport>(control, &key).map(|p| format!("{:.2}", since(p.at)))
        })
        .collect();
    line.push_str(&format!(" | removeFallback {}", ends.join("/")));
    eprintln!("{line} | finished {:.2}", since(r.finished_at.unwrap()));
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let gib: f64 = std::env::var("TIDEMARK_BENCH_GIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.25);
    let rounds: usize = std::env::var("TIDEMARK_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    rig::build_release_sim();

    let mut rig = Rig::new("bench", 3, &[]);
    let bytes = (gib * (1u64 << 30) as f64) as i64;
    // In steps of 16 MiB, the set settling after each: one huge write starves mongod-sim's
    // fast test heartbeats and makes elections flap.
    let step = 16i64 << 20;
    let mut filled = 0;
    while filled < bytes {
        let p = rig.rs.wait_settled(Duration::from_secs(120)).unwrap();
        let reply = rig
            .rs
            .process(p)
            .unwrap()
            .command(
                "admin",
                doc! {"simFill": 1, "db": format!("big{}", filled / step), "bytes": step.min(bytes - filled), "collections": 1},
            )
            .unwrap();
        if reply.get_f64("ok").unwrap_or(0.0) == 1.0 {
            filled += step;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    rig.insert(0..10);
    // Every member holds the data before the backup (whichever member takes it).
    for i in 0..3 {
        wait_until("replication", Duration::from_secs(600), || {
            (count_items(&rig, i) == Some(10)).then_some(())
        });
    }
    let mut agents: Vec<Child> = (0..3).map(|i| start_agent(&rig, i)).collect();

    let policies = tempfile::TempDir::new().unwrap();
    std::fs::write(policies.path().join("cluster.yaml"), rig.cluster_yaml()).unwrap();
    let mut reconciler = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["reconcile", "--policies"])
        .arg(policies.path())
        .arg("--control")
        .arg(rig.control.path())
        .arg("--signing-key-file")
        .arg(&tidemark_testkit::test_keys().private)
        .env("TIDEMARK_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(rig.control.path().join("reconciler.log")).unwrap())
        .spawn()
        .unwrap();
    let control = rig.control.path().to_path_buf();
    wait_ready(&rig, Utc::now() - chrono::Duration::seconds(1));
    std::fs::write(
        policies.path().join("backup.yaml"),
        tidemark_testkit::backup_yaml("b1", CLUSTER, "local"),
    )
    .unwrap();
    let b = wait_final(&control, "backup", "b1");
    assert_eq!(b.status.to_string(), "done", "{}", b.message);
    println!("restore_gib: {gib:.2}");

    let (mut overhead, mut total, mut fetch) = (vec![], vec![], vec![]);
    let (mut recover, mut coordination) = (vec![], vec![]);
    for round in 0..rounds {
        let name = format!("r{round}");
        let written = Utc::now();
        std::fs::write(
            policies.path().join(format!("{name}.yaml")),
            format!(
                "apiVersion: tidemark/v1\nkind: Restore\nmetadata:\n  name: {name}\nspec:\n  \
                 cluster: {CLUSTER}\n  source:\n    backup: b1\n  fallbackEnabled: true\n"
            ),
        )
        .unwrap();
        let r = wait_final(&control, "restore", &name);
        assert_eq!(r.status.to_string(), "done", "{}", r.message);
        let took = (r.finished_at.unwrap() - written).as_seconds_f64();
        // Recover runs mongod-sim's standalone starts, which (unlike mongod) read every
        // data file at start-up: its time is data-bound here, so it is shown apart.
        let slowest_recover = (0..3)
            .map(|i| {
                let at = |phase: &str| {
                    let key = phase_key(&r.op_id, &rig.rs.name, &rig.node(i), phase);
                    read::<PhaseReport>(&control, &key).expect("a report").at
                };
                (at("recover") - at("fetch")).as_seconds_f64()
            })
            .fold(0.0, f64::max);
        let slowest_fetch = (0..3)
            .map(|i| {
                let key = phase_key(&r.op_id, &rig.rs.name, &rig.node(i), "fetch");
                let done: PhaseReport = read(&control, &key).expect("a fetch report");
                assert_eq!((done.phase, done.status), (Phase::Fetch, PhaseStatus::Done));
                done.details["seconds"]
                    .as_f64()
                    .expect("the fetch report says how long it took")
            })
            .fold(0.0, f64::max);
        timeline(&control, &rig, &r, written);
        total.push(took);
        fetch.push(slowest_fetch);
        overhead.push(took - slowest_fetch);
        recover.push(slowest_recover);
        coordination.push(took - slowest_fetch - slowest_recover);
        eprintln!("round {round}: {took:.2}s to done, slowest fetch {slowest_fetch:.2}s");
        // The restore leaves mongod stopped (no startNodes): start the members again.
        let since = Utc::now();
        for i in 0..3 {
            rig.rs.members[i] = None;
            rig.rs.restart(i).unwrap();
        }
        wait_ready(&rig, since);
    }
    println!("restore_seconds: {}", spread(total));
    println!("slowest_fetch_seconds: {}", spread(fetch));
    println!("slowest_recover_seconds: {}", spread(recover));
    println!("restore_orchestration_overhead_s: {}", spread(overhead));
    println!(
        "restore_coordination_s (overhead minus the slowest recover): {}",
        spread(coordination)
    );

    let _ = reconciler.kill();
    let _ = reconciler.wait();
    for a in &mut agents {
        let _ = a.kill();
        let _ = a.wait();
    }
    for i in 0..3 {
        if let Ok(p) = rig.rs.process(i) {
            let _ = p.command("admin", doc! {"shutdown": 1, "force": true});
        }
    }
}
