//! `tidemark reconcile`: the long-running reconciler, or one pass with `--once`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidemark_reconciler::execute::{Bell, Executor};
use tidemark_reconciler::run::{LoopOptions, Reconciler, run_loop};
use tidemark_store::control::{Lease, Standing};

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
    let lease = Arc::new(
        Lease::new(control.clone(), holder, args.lease_ttl).with_doorbell(doorbell_url.clone()),
    );
    tracing::info!(source = %source.describe(), control = %args.control, holder = %lease.holder(), "starting reconciler");
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        // Before any lease, ledger or gate is written: all of them are create-once.
        control.prove_create_if_absent(lease.holder()).await?;
        let standing = Arc::new(Mutex::new(None));
        let mut rec = Reconciler::new(source, ex);
        rec.standing = Some(standing.clone());
        rec.lease_until = Some(lease.valid_until());
        rec.keep_ops = chrono::Duration::from_std(args.keep_ops)?;
        if args.once {
            // One pass needs the lease: wait for it up to a TTL and a bit (a holder that
            // stopped renewing is taken over after one TTL).
            let deadline = std::time::Instant::now() + args.lease_ttl + args.lease_ttl / 2;
            let now_standing = loop {
                let s = lease.tick().await?;
                if matches!(s, Standing::Leader { .. }) || std::time::Instant::now() >= deadline
                {
                    break s;
                }
                tokio::time::sleep(args.lease_ttl / 4).await;
            };
            if let Standing::Follower { epoch, holder } = &now_standing {
                eprintln!("another reconciler leads ({holder}, epoch {epoch}); nothing done");
                return Ok(ExitStatus::NotLeader);
            }
            *standing.lock().expect("not poisoned") = Some(now_standing);
            let renewals = tokio::spawn(renew(lease.clone(), standing.clone()));
            let report = rec.pass(chrono::Utc::now()).await;
            // Verifications the pass started run beside it; exiting would kill them.
            rec.verifier.wait_all().await;
            renewals.abort();
            if let Err(e) = lease.release().await {
                tracing::warn!(error = %e, "cannot release the lease; the next reconciler waits one TTL");
            }
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
                    standing: standing.clone(),
                    until: lease.valid_until(),
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
        let renewals = tokio::spawn(renew(lease.clone(), standing));
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
        if let Err(e) = lease.release().await {
            tracing::warn!(error = %e, "cannot release the lease; the next reconciler waits one TTL");
        }
        Ok(ExitStatus::Ok)
    })
}

/// Renews (or contends for) the lease every third of its TTL, independent of passes, so a
/// long pass never lets it lapse. A failed renewal makes this process a follower at once:
/// better to pause than to act on a lease that may have run out; a slow one leaves the
/// lease's validity to gate the writes.
/// It runs until aborted, after the last pass: stopping it earlier would let the lease
/// lapse under a pass still writing.
async fn renew(lease: Arc<Lease>, standing: Arc<Mutex<Option<Standing>>>) {
    let every = (lease.ttl() / 3).max(Duration::from_millis(50));
    // At a fixed rate, not a sleep after each tick: a slow tick must not push the next
    // one (and the lease's validity) back.
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        ticks.tick().await;
        // A renewal that is merely slow (the store busy behind a restore's flushes) keeps
        // the standing as it was: every write is gated by the lease's own validity (two
        // thirds of a TTL after the last renewal that succeeded), so a leader whose
        // renewals stall stops writing on time without also pausing for a follower's
        // interval each time one renewal is late. A renewal that fails, or finds another
        // leader, makes this process a follower at once.
        let now = match tokio::time::timeout(every, lease.tick()).await {
            Err(_) => {
                tracing::warn!(after = ?every, "a lease renewal is slow; acting only while the last one is valid");
                continue;
            }
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot renew or read the lease; not acting until it can");
                Standing::Follower {
                    epoch: 0,
                    holder: format!("unknown (the lease cannot be read: {e})"),
                }
            }
        };
        {
            let mut current = standing.lock().expect("not poisoned");
            if current.as_ref() != Some(&now) {
                match &now {
                    Standing::Leader { epoch } => tracing::info!(epoch, "this reconciler leads"),
                    Standing::Follower { epoch, holder } => {
                        tracing::info!(epoch, %holder, "another reconciler leads; following")
                    }
                }
            }
            *current = Some(now);
        }
    }
}
