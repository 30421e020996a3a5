//! End-to-end: how agents learn of new ops. With the leader's `--listen` doorbell an idle
//! agent asks the control plane for nothing but its heartbeat and picks an op up at once;
//! with the doorbell unreachable it reads the doorbell record every `--poll-interval`; with
//! the leader stopped and another taking over, the agents follow the new leader's doorbell.

#[path = "support/rig.rs"]
mod rig;
#[path = "support/world.rs"]
mod world;

use std::io::{Read, Write};
use std::process::Child;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;
use world::*;

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// Starts node `i`'s agent at the default intervals but `poll` (how often it reads the
/// doorbell record when the leader's doorbell does not answer), serving metrics at
/// `metrics`.
fn start_agent(w: &mut World, i: usize, poll: &str, metrics: &str) {
    let child = w
        .rig
        .agent_command(i)
        .args(["--poll-interval", poll, "--heartbeat-interval", "1s"])
        .args(["--metrics", metrics])
        .spawn()
        .unwrap();
    w.rig.agents[i] = Some(child);
}

/// `GET /metrics` of an agent, over a plain socket.
fn scrape(addr: &str) -> String {
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

fn requests(addr: &str, op: &str) -> f64 {
    sample(
        &scrape(addr),
        &format!("tidemark_control_requests_total{{op=\"{op}\"}}"),
    )
    .unwrap_or(f64::NAN)
}

fn wait_until(what: &str, secs: u64, w: &World, mut f: impl FnMut() -> bool) {
    let started = Instant::now();
    while !f() {
        assert!(
            started.elapsed() < Duration::from_secs(secs),
            "{what} within {secs}s\n{}",
            w.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Milliseconds from the backup's op creation to the first report of its node.
fn pickup_ms(w: &World, backup: &str) -> i64 {
    let ops = w.rig.control.path().join("ops");
    let id = std::fs::read_dir(&ops)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .find(|n| n.ends_with(&format!("-backup-{backup}")))
        .expect("the backup's op");
    let op = w.control_json(&format!("ops/{id}/op.json")).unwrap();
    let created: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(op["createdAt"].clone()).unwrap();
    let rs = op["targets"][0]["replicaSet"].as_str().unwrap().to_string();
    let first = std::fs::read_dir(ops.join(&id).join(&rs))
        .unwrap()
        .flatten()
        .filter_map(|e| serde_json::from_slice::<Value>(&std::fs::read(e.path()).ok()?).ok())
        .filter_map(|r| {
            serde_json::from_value::<chrono::DateTime<chrono::Utc>>(r["at"].clone()).ok()
        })
        .min()
        .expect("a report");
    (first - created).num_milliseconds()
}

fn listen_args(listen: &str, advertise: Option<&str>) -> Vec<String> {
    let mut args = vec!["--listen".to_string(), listen.to_string()];
    if let Some(url) = advertise {
        args.extend(["--advertise".to_string(), url.to_string()]);
    }
    args
}

#[test]
fn with_the_doorbell_an_idle_agent_reads_nothing_and_picks_an_op_up_at_once() {
    let mut w = World::new("bell");
    let listen = free_addr();
    w.reconciler_args = listen_args(&listen, None);
    w.rig.insert(0..10);
    let metrics: Vec<String> = (0..3).map(|_| free_addr()).collect();
    for (i, m) in metrics.iter().enumerate() {
        // Without the doorbell, an op would wait up to 30 s for a look.
        start_agent(&mut w, i, "30s", m);
    }
    w.start_reconciler();
    wait_until("every agent waiting on the doorbell", 60, &w, || {
        metrics
            .iter()
            .all(|m| sample(&scrape(m), "tidemark_agent_doorbell_connected") == Some(1.0))
    });
    let url = format!("http://{listen}");
    for i in 0..3 {
        assert!(w.rig.agent_log(i).contains(&url), "{}", w.rig.agent_log(i));
    }
    // `status` says where the leader listens and how each agent learns of ops.
    let v = w.wait_for("every agent reported waiting on the doorbell", 30, |v| {
        v["agents"]
            .as_array()
            .is_some_and(|a| a.len() == 3 && a.iter().all(|a| a["pickup"] == "doorbell"))
    });
    assert_eq!(v["leader"]["doorbell"], url.as_str(), "{v:#}");

    // At rest: heartbeats only.
    let before: Vec<(f64, f64, f64)> = metrics
        .iter()
        .map(|m| (requests(m, "list"), requests(m, "get"), requests(m, "head")))
        .collect();
    std::thread::sleep(Duration::from_secs(4));
    for (m, (list, get, head)) in metrics.iter().zip(before) {
        assert_eq!(requests(m, "list"), list, "an idle agent listed something");
        assert_eq!(requests(m, "get"), get, "an idle agent read something");
        assert_eq!(requests(m, "head"), head, "an idle agent checked something");
        assert!(requests(m, "put") > 0.0, "heartbeats are written");
    }

    w.backup_yaml("rung", "physical");
    let b = w.wait_end("backup", "rung");
    assert_eq!(b["status"], "done", "{b:#}");
    let ms = pickup_ms(&w, "rung");
    assert!(
        ms < 5_000,
        "picked up {ms} ms after its creation: the doorbell did not ring\n{}",
        w.logs()
    );
}

#[test]
fn with_the_doorbell_unreachable_agents_read_the_record_and_miss_no_op() {
    let mut w = World::new("nobell");
    // The address agents are told is closed: as if the leader's port were firewalled.
    let closed = free_addr();
    w.reconciler_args = listen_args(&free_addr(), Some(&format!("http://{closed}")));
    w.rig.insert(0..10);
    let metrics: Vec<String> = (0..3).map(|_| free_addr()).collect();
    for (i, m) in metrics.iter().enumerate() {
        start_agent(&mut w, i, "1s", m);
    }
    w.start_reconciler();
    wait_until("every agent falling back to the record", 60, &w, || {
        (0..3).all(|i| w.rig.agent_log(i).contains("does not answer"))
    });
    for m in &metrics {
        assert_eq!(
            sample(&scrape(m), "tidemark_agent_doorbell_connected"),
            Some(0.0)
        );
    }
    w.wait_for("every agent reported reading the record", 30, |v| {
        v["agents"]
            .as_array()
            .is_some_and(|a| a.len() == 3 && a.iter().all(|a| a["pickup"] == "record"))
    });
    for name in ["cut1", "cut2"] {
        w.backup_yaml(name, "physical");
        let b = w.wait_end("backup", name);
        assert_eq!(b["status"], "done", "{b:#}");
        // Bounded by the poll interval (1 s) and the time to list and read the op.
        let ms = pickup_ms(&w, name);
        assert!(ms < 4_000, "picked up {ms} ms after creation\n{}", w.logs());
    }
}

#[test]
fn a_takeover_moves_the_agents_to_the_new_leaders_doorbell() {
    let mut w = World::new("movebell");
    let (first, second) = (free_addr(), free_addr());
    w.rig.insert(0..10);
    let metrics: Vec<String> = (0..3).map(|_| free_addr()).collect();
    for (i, m) in metrics.iter().enumerate() {
        start_agent(&mut w, i, "1s", m);
    }
    w.reconciler_args = listen_args(&first, None);
    w.start_reconciler();
    let first_url = format!("http://{first}");
    wait_until("every agent on the first leader's doorbell", 60, &w, || {
        (0..3).all(|i| w.rig.agent_log(i).contains(&first_url))
            && metrics
                .iter()
                .all(|m| sample(&scrape(m), "tidemark_agent_doorbell_connected") == Some(1.0))
    });
    w.reconciler_args = listen_args(&second, None);
    let mut standby: Child = w.spawn_reconciler("reconciler-2.log");
    // The leader freezes: its doorbell accepts connections and never answers.
    let leader = w.reconciler.as_ref().unwrap().id() as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(leader), Signal::SIGSTOP).unwrap();
    w.backup_yaml("moved", "physical");
    let b = w.wait_end("backup", "moved");
    let second_url = format!("http://{second}");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(leader), Signal::SIGCONT).unwrap();
    w.kill_reconciler();
    assert_eq!(b["status"], "done", "{b:#}");
    // Created by the new leader; agents then still waited on the frozen one for at most
    // the long-poll's 10 s and its 3 s of grace, then read the record.
    let ms = pickup_ms(&w, "moved");
    assert!(
        ms < 16_000,
        "picked up {ms} ms after creation\n{}",
        w.logs()
    );
    wait_until("every agent on the new leader's doorbell", 60, &w, || {
        (0..3).all(|i| {
            w.rig
                .agent_log(i)
                .rsplit_once("waiting for the leader's doorbell")
                .is_some_and(|(_, after)| after.contains(&second_url))
        })
    });
    let _ = standby.kill();
    let _ = standby.wait();
}
