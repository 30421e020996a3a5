//! The playground from start to Ctrl-C: take the directory, start the nodes and form the
//! replica set, write the starter policies, start the agents and the reconciler, say what
//! to try, and on Ctrl-C (or SIGTERM) stop everything in order: the reconciler, the
//! agents, then the nodes.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use tokio::signal::unix::{Signal, SignalKind, signal};

use super::layout::{Layout, REPLICA_SET};
use super::nodes::{self, host};
use super::procs::{self, Proc};
use super::topology;

pub struct Settings {
    pub dir: PathBuf,
    pub policies: Option<PathBuf>,
    pub nodes: usize,
    pub base_port: u16,
    /// The starter schedule's cron (six fields: seconds first).
    pub cron: String,
    /// mongod-sim even when a real `mongod` is on `PATH`.
    pub sim: bool,
    pub stop_leftovers: bool,
    /// The node whose restore-time starts fail (a mongod-sim fault, for the demo).
    pub break_node: Option<usize>,
    /// A sharded cluster: a config server and two shards, `nodes` members each.
    pub sharded: bool,
    /// Where the reconciler serves its metrics.
    pub metrics: Option<std::net::SocketAddr>,
}

pub fn run(s: Settings) -> anyhow::Result<()> {
    if s.nodes == 0 || s.nodes > 7 {
        bail!("--nodes must be between 1 and 7 (a replica set has at most 7 voting members)");
    }
    let total = s.nodes * if s.sharded { 3 } else { 1 };
    if let Some(n) = s.break_node
        && n >= total
    {
        bail!(
            "--break-node {n}: the nodes are numbered 0 to {}",
            total - 1
        );
    }
    let layout = Layout::new(&s.dir)?;
    // Held for the whole run; dropped (unlocked) on every way out.
    let _lock = layout.lock(s.stop_leftovers)?;
    let ports: Vec<u16> = (0..total).map(|i| s.base_port + i as u16).collect();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(run_locked(&s, &layout, &ports))
}

/// Ctrl-C, SIGTERM and a closed terminal (SIGHUP), listened to from the very start, so
/// that a stop during start-up stops what was started too.
struct Stops {
    int: Signal,
    term: Signal,
    hup: Signal,
}

impl Stops {
    fn new() -> anyhow::Result<Stops> {
        Ok(Stops {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
            _ = self.hup.recv() => {}
        }
    }
}

async fn run_locked(s: &Settings, layout: &Layout, ports: &[u16]) -> anyhow::Result<()> {
    let mut stops = Stops::new()?;
    nodes::check_ports(ports)?;
    let mongod = nodes::pick_mongod(layout, s.sim)?;
    if s.break_node.is_some() && !mongod.simulated {
        bail!(
            "--break-node injects a mongod-sim fault; with a real mongod ({}) add --sim",
            mongod.bin.display()
        );
    }
    println!(
        "starting {} node(s) of {} with {} in {}{}",
        ports.len(),
        if s.sharded {
            "a sharded cluster (a config server and two shards)".to_string()
        } else {
            format!("replica set {REPLICA_SET}")
        },
        if mongod.simulated {
            "mongod-sim (no mongod on PATH; a stand-in, see tests/mongod-sim/README.md)".to_string()
        } else {
            mongod.bin.display().to_string()
        },
        shown(&layout.root),
        s.break_node
            .map(|n| format!(" (node {n} is broken: it cannot start during a restore)"))
            .unwrap_or_default()
    );
    let mut children: Vec<Proc> = Vec::new();
    // From the first node started on, every way out goes through the one clean-up below.
    let started = tokio::select! {
        r = start(s, layout, ports, &mongod, &mut children) => Some(r),
        _ = stops.recv() => None,
    };
    let outcome = match started {
        Some(Ok(())) => {
            wait_for_stop(&mut stops, &mut children).await;
            Ok(())
        }
        Some(Err(e)) => Err(e),
        None => {
            println!("stopped during start-up");
            Ok(())
        }
    };
    println!("stopping: the reconciler, the agents, then the nodes");
    // The reconciler first, so it starts nothing new while the agents stop.
    let (mut rec, mut agents): (Vec<Proc>, Vec<Proc>) =
        children.into_iter().partition(|p| p.name == "reconciler");
    procs::stop_children(&mut rec);
    procs::stop_children(&mut agents);
    nodes::stop_all(layout, ports).await;
    println!(
        "stopped; the data stays in {} (run `tidemark playground` again to go on)",
        shown(&layout.root)
    );
    outcome
}

/// Nodes, replica set, starter policies, agents and reconciler; then the banner.
async fn start(
    s: &Settings,
    layout: &Layout,
    ports: &[u16],
    mongod: &nodes::Mongod,
    children: &mut Vec<Proc>,
) -> anyhow::Result<()> {
    let sets = topology::sets(s.nodes, s.sharded);
    for (i, p) in ports.iter().enumerate() {
        nodes::start(layout, mongod, topology::set_of(&sets, i), i, *p)?;
    }
    let mut primaries = Vec::new();
    for set in &sets {
        primaries.push((
            set.clone(),
            nodes::form_replica_set(layout, set, ports).await?,
        ));
    }
    if s.sharded {
        nodes::register_shards(&primaries, ports).await?;
    }
    let named: Vec<(String, Vec<String>)> = sets
        .iter()
        .map(|set| {
            let hosts = set.nodes.clone().map(|i| host(ports[i])).collect();
            (set.name.clone(), hosts)
        })
        .collect();
    let policies = s
        .policies
        .clone()
        .unwrap_or_else(|| layout.root.join("policies"));
    if layout.write_starter_policies(&policies, &named, s.sharded, &s.cron)? {
        println!("wrote starter policies to {}", shown(&policies));
    }
    layout.ensure_signing_key()?;
    for (i, p) in ports.iter().enumerate() {
        let broken = s.break_node == Some(i);
        let set = topology::set_of(&sets, i);
        children.push(procs::start_agent(
            layout, mongod, &set.name, i, *p, broken,
        )?);
    }
    children.push(procs::start_reconciler(layout, &policies, s.metrics)?);
    print_banner(layout, &policies, &named);
    Ok(())
}

/// A path as the user would type it: relative to the working directory when inside it.
fn shown(path: &std::path::Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(|p| p.display().to_string()))
        .unwrap_or_else(|| path.display().to_string())
}

fn print_banner(layout: &Layout, policies: &std::path::Path, sets: &[(String, Vec<String>)]) {
    // Absolute: the export must still work after a `cd`.
    let control = layout.control().display().to_string();
    let root = shown(&layout.root);
    let policies = shown(policies);
    println!(
        "\nthe playground is running (Ctrl-C stops it all)\n\n\
         connect:   {}\n\
         policies:  {policies}   (the reconciler watches this directory)\n\
         logs:      {root}/logs/\n\n\
         in another shell, so that `status`, `list` and `describe-*` need no --control:\n  \
         export TIDEMARK_CONTROL={control}\n\n\
         try:\n  \
         tidemark status\n  \
         tidemark list      (backups, and the windows a point-in-time restore can reach)\n  \
         tidemark diff --policies {policies}\n  \
         edit {policies}/schedule.yaml (the cron), then `tidemark status` again\n  \
         write a Restore into {policies}/ (see docs/tutorial.md), then\n  \
         (to undo a mistake, give it `source: {{pointInTime: <a time just before it>}}`)\n  \
         tidemark describe-restore NAME --wait\n  \
         tidemark logs --follow\n  \
         kill a node (its pid is in {root}/db/n1/mongod.lock) and watch `tidemark status`\n",
        sets.iter()
            .map(|(name, hosts)| format!("mongodb://{}/?replicaSet={name}", hosts.join(",")))
            .collect::<Vec<_>>()
            .join("\n           "),
    );
}

/// Until Ctrl-C, SIGTERM or SIGHUP. A child that exits on its own is reported with its
/// log, once.
async fn wait_for_stop(stops: &mut Stops, children: &mut [Proc]) {
    let mut reported = vec![false; children.len()];
    loop {
        tokio::select! {
            _ = stops.recv() => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        for (i, p) in children.iter_mut().enumerate() {
            if !reported[i]
                && let Ok(Some(status)) = p.child.try_wait()
            {
                reported[i] = true;
                eprintln!("{} exited ({status}); see {}", p.name, p.log.display());
            }
        }
    }
}
