//! `tidemark reconcile`: the long-running reconciler, or one pass with `--once`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tidemark_reconciler::execute::{Bell, Executor};
use tidemark_reconciler::run::{LoopOptions, Reconciler, run_loop};
use tidemark_store::control::Leadership;

use super::args::ReconcileArgs;
use super::diff::open_source;
use super::exit::ExitStatus;
use super::writable::open_writable_control;
use crate::serve::{Doorbell, Endpoints, Metrics, Webhook, serve};

/// This process among reconcilers: host, pid and a random tag (a restarted process is a
/// new candidate, never the old holder).
fn holder_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into());
    let tag: u32 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{host}/{}/{tag:08x}", std::process::id())
}

/// The address agents are told to wait at: `--advertise`, else `--listen` when it names
/// one host, else this host's name with the port of `--listen`.
fn doorbell_url(args: &ReconcileArgs) -> Option<String> {
    let listen = args.listen?;
    if let Some(url) = &args.advertise {
        return Some(url.trim_end_matches('/').to_string());
    }
    if !listen.ip().is_unspecified() {
        return Some(format!("http://{listen}"));
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    Some(format!("http://{host}:{}", listen.port()))
}

pub fn run(args: ReconcileArgs) -> anyhow::Result<ExitStatus> {
    let source = open_source(&args.source)?;
    let signer = super::keys::load_signer(
        args.signing_key_file.as_deref(),
        args.previous_signing_keys.as_deref(),
    )?;
    match &signer {
        Some(s) => {
            tracing::info!(key = %s.fingerprint(), "signing ops, gates and slicing assignments")
        }
        None => tracing::warn!(
            "no signing key (TIDEMARK_SIGNING_KEY or --signing-key-file): ops are written \
             unsigned, and agents refuse them unless started with --insecure-accept-unsigned"
        ),
    }
    // Listed records are read again only when they changed: at rest, a pass costs its
    // listings.
    let control = open_writable_control(&args.control)?.with_read_cache();
    let ex = Executor {
        control: control.clone(),
        dead_after: chrono::Duration::from_std(args.dead_after)?,
        op_deadline: chrono::Duration::from_std(args.op_deadline)?,
        go_timeout: chrono::Duration::from_std(args.go_timeout)?,
        // Storage credentials come from this process's environment, as the agents' do.
        storage_env: tidemark_reconciler::execute::storage_env_from_process(),
        bell: Default::default(),
        signer: signer.map(Arc::new),
    };
    let holder = holder_id();
    // One pass serves nothing: agents must not be sent to a doorbell that is gone.
    let doorbell_url = doorbell_url(&args).filter(|_| !args.once);
    let mut ex = ex;
    ex.bell = Bell::new(doorbell_url.clone(), holder.clone());
    // A single pass shares nothing: it takes every vacant partition it can.
    let leadership = Arc::new(Leadership::new(
        &control,
        &holder,
        args.lease_ttl,
        args.partitions,
        doorbell_url.clone(),
        !args.once,
    ));
    tracing::info!(source = %source.describe(), control = %args.control, holder = %leadership.holder(), partitions = args.partitions, "starting reconciler");
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        // Before any lease, ledger or gate is written: all of them are create-once.
        control.prove_create_if_absent(leadership.holder()).await?;
        Leadership::agree(&control, leadership.holder(), args.partitions).await?;
        let mut rec = Reconciler::new(source, ex);
        rec.leadership = Some(leadership.clone());
        rec.keep_ops = chrono::Duration::from_std(args.keep_ops)?;
        if args.once {
            // One pass needs a lease: wait for one up to a TTL and a bit (a holder that
            // stopped renewing is taken over after one TTL).
            let deadline = std::time::Instant::now() + args.lease_ttl + args.lease_ttl / 2;
            loop {
                leadership.tick().await;
                if leadership.led().len() == args.partitions as usize
                    || std::time::Instant::now() >= deadline
                {
                    break;
                }
                tokio::time::sleep(args.lease_ttl / 4).await;
            }
            if leadership.led().is_empty() {
                // A lease that cannot be read is a failure, not another leader.
                let errors = leadership.lease_errors();
                if !errors.is_empty() {
                    anyhow::bail!("cannot read or take the lease: {}", errors.join("; "));
                }
                eprintln!("{}; nothing done", leadership.followed());
                return Ok(ExitStatus::NotLeader);
            }
            if leadership.led().len() < args.partitions as usize {
                eprintln!(
                    "{}; this pass acts only for partition(s) {:?}",
                    leadership.followed(),
                    leadership.led()
                );
            }
            let renewals = tokio::spawn(renew(leadership.clone()));
            let report = rec.pass(chrono::Utc::now()).await;
            // Verifications the pass started run beside it; exiting would kill them.
            rec.verifier.wait_all().await;
            // Ended before the release: a tick still running could renew after it.
            renewals.abort();
            let _ = renewals.await;
            leadership.release_all().await;
            let report = report?;
            for line in &report.finished {
                println!("finished: {line}");
            }
            for line in &report.running {
                println!("running: {line}");
            }
            for line in &report.waiting {
                println!("waiting: {line}");
            }
            for e in &report.errors {
                eprintln!("error: {e}");
            }
            return Ok(if !report.errors.is_empty() {
                ExitStatus::Failure
            } else if !report.running.is_empty() {
                ExitStatus::Running
            } else {
                ExitStatus::Ok
            });
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("a SIGTERM handler can be installed");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::info!("stopping after the current pass");
            flag.store(true, Ordering::SeqCst);
        });
        let wake = Arc::new(AtomicBool::new(false));
        let metrics = args.metrics.map(|addr| (addr, Arc::new(Metrics::new())));
        if let Some((_, m)) = &metrics {
            let m = m.clone();
            let dead_after = rec.ex.dead_after;
            rec.on_pass = Some(Box::new(move |report| {
                m.record_pass(report, dead_after, chrono::Utc::now())
            }));
        }
        // Trimmed: a secret read from a file usually ends in a newline.
        let secret = std::env::var("TIDEMARK_WEBHOOK_SECRET")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        let webhook = match (args.listen, secret) {
            (Some(addr), Some(secret)) => Some((
                addr,
                Webhook {
                    secret,
                    // Without --ref the source follows the remote's default branch,
                    // whatever its name: then any push wakes it.
                    branch: args.source.reference.clone(),
                    wake: wake.clone(),
                },
            )),
            (Some(addr), None) => {
                tracing::info!(%addr, "no TIDEMARK_WEBHOOK_SECRET: the push webhook is off (the doorbell is served)");
                None
            }
            _ => None,
        };
        let doorbell = args.listen.map(|addr| {
            (
                addr,
                Doorbell {
                    bell: rec.ex.bell.clone(),
                    leadership: leadership.clone(),
                },
            )
        });
        if let Some(url) = &doorbell_url {
            tracing::info!(%url, "agents wait for this reconciler's doorbell here while it leads");
        }
        serve(Endpoints {
            metrics,
            webhook,
            doorbell,
            agent_metrics: None,
        })
        .await?;
        let renewals = tokio::spawn(renew(leadership.clone()));
        let opts = LoopOptions {
            interval: args.source.interval,
            resync: args.resync_interval,
            follow_interval: args.follow_interval,
            // A follower looks again soon: it must act within a TTL of a takeover.
            follower_interval: (args.lease_ttl / 3).max(Duration::from_millis(100)),
            wake: Some(wake),
        };
        run_loop(&mut rec, &opts, stop).await;
        renewals.abort();
        let _ = renewals.await;
        leadership.release_all().await;
        Ok(ExitStatus::Ok)
    })
}

/// Renews (or contends for) every partition's lease every third of the TTL, independent
/// of passes, so a long pass never lets one lapse (see `Leadership::tick`).
/// It runs until aborted, after the last pass: stopping it earlier would let a lease
/// lapse under a pass still writing.
async fn renew(leadership: Arc<Leadership>) {
    let every = (leadership.ttl() / 3).max(Duration::from_millis(50));
    // At a fixed rate, not a sleep after each tick: a slow tick must not push the next
    // one (and the leases' validity) back.
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        ticks.tick().await;
        leadership.tick().await;
    }
}
