//! The playground's tidemark processes (one agent per node, one reconciler) and stopping
//! processes in order: a signal, a grace period, then SIGKILL, never a hang.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::layout::{CLUSTER, Layout};
use super::nodes::{Mongod, host};

/// A child this run started, with what it is and where it logs.
pub struct Proc {
    pub name: String,
    pub log: std::path::PathBuf,
    pub child: Child,
}

fn spawn(layout: &Layout, name: &str, args: &[String]) -> anyhow::Result<Proc> {
    let log = layout.log(name);
    let me = std::env::current_exe()?;
    let child = Command::new(me)
        .args(args)
        .env(
            "TIDEMARK_LOG",
            std::env::var("TIDEMARK_LOG").unwrap_or("info".into()),
        )
        // The playground signs with its own key: a key or trust setting of the user's
        // shell would contradict the flags given here.
        .env_remove(crate::cli::keys::SIGNING_KEY_VAR)
        .env_remove("TIDEMARK_SIGNING_KEY_FILE")
        .env_remove("TIDEMARK_TRUSTED_KEYS")
        .env_remove("TIDEMARK_INSECURE_ACCEPT_UNSIGNED")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        // Its own process group: Ctrl-C reaches the playground, which stops it in order.
        .process_group(0)
        .spawn()?;
    Ok(Proc {
        name: name.to_string(),
        log,
        child,
    })
}

use std::os::unix::process::CommandExt;

/// One agent per node, at a demo's pace (a beat a second, ops seen within half a second).
/// A `broken` node's agent starts its restore-time mongods with a mongod-sim fault.
pub fn start_agent(
    layout: &Layout,
    mongod: &Mongod,
    replica_set: &str,
    i: usize,
    port: u16,
    broken: bool,
) -> anyhow::Result<Proc> {
    let s = |v: &dyn std::fmt::Display| v.to_string();
    let mut args = vec![
        s(&"agent"),
        s(&"--control"),
        s(&layout.control().display()),
        s(&"--cluster"),
        s(&CLUSTER),
        s(&"--replica-set"),
        replica_set.to_string(),
        s(&"--node-id"),
        host(port),
        s(&"--mongod-uri"),
        format!("mongodb://{}/?directConnection=true", host(port)),
        s(&"--dbpath"),
        s(&layout.dbpath(i).display()),
        s(&"--mongod-bin"),
        s(&mongod.bin.display()),
        s(&"--heartbeat-interval"),
        s(&"1s"),
        s(&"--poll-interval"),
        s(&"500ms"),
        s(&"--trusted-keys"),
        format!("{}.pub", layout.signing_key().display()),
    ];
    if broken {
        args.push(
            "--standalone-arg=--sim-fail-startup=broken on purpose by `tidemark playground --break-node`"
                .into(),
        );
    }
    spawn(layout, &format!("agent-{i}"), &args)
}

/// The reconciler, watching `policies`.
pub fn start_reconciler(
    layout: &Layout,
    policies: &Path,
    metrics: Option<std::net::SocketAddr>,
) -> anyhow::Result<Proc> {
    let mut args: Vec<String> = vec![
        "reconcile".into(),
        "--policies".into(),
        policies.display().to_string(),
        "--control".into(),
        layout.control().display().to_string(),
        "--interval".into(),
        "5s".into(),
        "--resync-interval".into(),
        "5s".into(),
        "--dead-after".into(),
        "15s".into(),
        "--lease-ttl".into(),
        "5s".into(),
        "--signing-key-file".into(),
        layout.signing_key().display().to_string(),
    ];
    if let Some(addr) = metrics {
        args.extend(["--metrics".into(), addr.to_string()]);
    }
    spawn(layout, "reconciler", &args)
}

/// Stops `pids`: `first` (if any), then up to `grace` for them to exit, then SIGKILL.
pub fn stop(pids: Vec<u32>, first: Option<Signal>, grace: Duration) {
    let alive = |pid: u32| Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid);
    if let Some(sig) = first {
        for pid in &pids {
            let _ = kill(Pid::from_raw(*pid as i32), sig);
        }
    }
    let started = Instant::now();
    while pids.iter().any(|p| alive(*p)) && started.elapsed() < grace {
        std::thread::sleep(Duration::from_millis(100));
    }
    for pid in pids.iter().filter(|p| alive(**p)) {
        eprintln!("pid {pid} did not stop within {grace:?}; killing it");
        let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .map(|r| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// Stops our own children: SIGTERM, a grace, SIGKILL, and reaps them.
pub fn stop_children(procs: &mut [Proc]) {
    stop(
        procs.iter().map(|p| p.child.id()).collect(),
        Some(Signal::SIGTERM),
        Duration::from_secs(10),
    );
    for p in procs.iter_mut() {
        let _ = p.child.wait();
    }
}
