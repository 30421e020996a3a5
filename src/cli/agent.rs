//! `tidemark agent`: merges flags, environment and the config file, then runs the agent
//! until SIGINT or SIGTERM.

use std::time::Duration;

use anyhow::Context;
use tidemark_agent::config::{AgentConfig, AgentFile, parse_duration};
use tidemark_agent::mongod::redact_uri;
use tidemark_agent::runner;
use tidemark_agent::trust::TrustSetting;

use super::args::AgentArgs;
use super::exit::ExitStatus;
use super::writable::open_writable_control;
use crate::serve::{AgentMetrics, Endpoints, serve};

fn duration(
    flag: Option<String>,
    file: Option<String>,
    default: Duration,
    name: &str,
) -> anyhow::Result<Duration> {
    match flag.or(file) {
        Some(text) => parse_duration(&text).map_err(|e| anyhow::anyhow!("{name}: {e}")),
        None => Ok(default),
    }
}

fn config(args: AgentArgs) -> anyhow::Result<AgentConfig> {
    let file = match &args.config {
        Some(path) => AgentFile::read(path).map_err(anyhow::Error::msg)?,
        None => AgentFile::default(),
    };
    let missing = |what: &str| {
        anyhow::anyhow!(
            "give --{what} (or TIDEMARK_{}, or `{}` in the config file)",
            what.replace('-', "_").to_uppercase(),
            camel(what)
        )
    };
    let drill_dir = args.drill_dir.or(file.drill_dir);
    // Whatever the source (flag, environment or config file): a node agent's config that
    // gained a drillDir must not silently stop serving its node.
    let node_settings = args.mongod_uri.is_some()
        || args.dbpath.is_some()
        || file.mongod_uri.is_some()
        || file.dbpath.is_some();
    if drill_dir.is_some() && node_settings {
        anyhow::bail!(
            "--drill-dir (drillDir) runs a drill agent, which serves no mongod node: it cannot \
             be given with --mongod-uri or --dbpath (mongodUri, dbpath); run one agent per \
             node and a separate drill agent"
        );
    }
    let (mongod_uri, dbpath) = match &drill_dir {
        Some(dir) => (Some(String::new()), Some(dir.clone())),
        None => (
            args.mongod_uri.or(file.mongod_uri),
            args.dbpath.or(file.dbpath),
        ),
    };
    let trusted_keys = if args.trusted_keys.is_empty() {
        file.trusted_keys.clone().unwrap_or_default()
    } else {
        args.trusted_keys.clone()
    };
    let insecure = args.insecure_accept_unsigned || file.insecure_accept_unsigned.unwrap_or(false);
    Ok(AgentConfig {
        drill_dir,
        control: args
            .control
            .or(file.control)
            .ok_or_else(|| missing("control"))?,
        cluster: args
            .cluster
            .or(file.cluster)
            .ok_or_else(|| missing("cluster"))?,
        mongod_uri: mongod_uri.ok_or_else(|| missing("mongod-uri"))?,
        dbpath: dbpath.ok_or_else(|| missing("dbpath"))?,
        mongod_bin: args
            .mongod_bin
            .or(file.mongod_bin)
            .ok_or_else(|| missing("mongod-bin"))?,
        node_id: args.node_id.or(file.node_id),
        replica_set: args.replica_set.or(file.replica_set),
        heartbeat_interval: duration(
            args.heartbeat_interval,
            file.heartbeat_interval,
            Duration::from_secs(60),
            "heartbeat-interval",
        )?,
        poll_interval: duration(
            args.poll_interval,
            file.poll_interval,
            Duration::from_secs(5),
            "poll-interval",
        )?,
        resync_interval: duration(
            args.resync_interval,
            file.resync_interval,
            Duration::from_secs(600),
            "resync-interval",
        )?,
        parallel_files: args.parallel_files.or(file.parallel_files).unwrap_or(4),
        cursor_keepalive: duration(
            args.cursor_keepalive,
            file.cursor_keepalive,
            Duration::from_secs(60),
            "cursor-keepalive",
        )?,
        standalone_args: if args.standalone_args.is_empty() {
            file.standalone_args.unwrap_or_default()
        } else {
            args.standalone_args
        },
        mongod_timeout: duration(
            args.mongod_timeout,
            file.mongod_timeout,
            Duration::from_secs(300),
            "mongod-timeout",
        )?,
        // Last: the settings a node cannot run without are named first.
        trust: trust(trusted_keys, insecure)?,
    })
}

/// Exactly one of the two: an agent that trusts nothing by accident would refuse every
/// op, and one that trusts anything must have been told so.
fn trust(keys: Vec<std::path::PathBuf>, insecure: bool) -> anyhow::Result<TrustSetting> {
    match (keys.is_empty(), insecure) {
        (false, false) => Ok(TrustSetting::Keys(keys)),
        (true, true) => {
            tracing::warn!(
                "--insecure-accept-unsigned: this agent acts on any op, so anyone who can \
                 write the control plane can stop and wipe this node"
            );
            Ok(TrustSetting::AcceptUnsigned)
        }
        (false, true) => anyhow::bail!(
            "--trusted-keys and --insecure-accept-unsigned contradict each other; give one"
        ),
        (true, false) => anyhow::bail!(
            "give --trusted-keys FILE (the reconciler's public key, from `tidemark keygen`; \
             or TIDEMARK_TRUSTED_KEYS, or `trustedKeys` in the config file) so that this \
             agent acts only on signed ops; or --insecure-accept-unsigned for a playground \
             or a test"
        ),
    }
}

fn camel(flag: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in flag.chars() {
        if c == '-' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

pub fn run(args: AgentArgs) -> anyhow::Result<ExitStatus> {
    let metrics = args.metrics;
    let cfg = config(args)?;
    match &cfg.drill_dir {
        Some(dir) => {
            tracing::info!(control = %cfg.control, drill_dir = %dir.display(), "starting drill agent")
        }
        None => tracing::info!(
            control = %cfg.control,
            mongod = %redact_uri(&cfg.mongod_uri),
            dbpath = %cfg.dbpath.display(),
            "starting agent"
        ),
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let control = open_writable_control(&cfg.control)?;
        // A node that is not a member yet is waited for; a signal meanwhile stops it.
        let node = tokio::select! {
            node = runner::identify(cfg, control) => node.context("identifying this node")?,
            _ = shutdown_signal() => return Ok(ExitStatus::Ok),
        };
        let node = std::sync::Arc::new(node);
        if let Some(addr) = metrics {
            let agent_metrics = std::sync::Arc::new(AgentMetrics::new(node.clone()));
            serve(Endpoints {
                agent_metrics: Some((addr, agent_metrics)),
                ..Default::default()
            })
            .await?;
        }
        runner::run(node, shutdown_signal()).await?;
        Ok(ExitStatus::Ok)
    })
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler can be installed");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping on signal");
}
