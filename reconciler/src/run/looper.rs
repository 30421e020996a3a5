//! When passes run: at once on a change of the source, otherwise every `interval`; after a
//! failed pass, sooner, with exponential backoff, so that a flapping control plane is
//! neither hammered nor left alone for a whole interval. The loop never dies of a pass.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::pass::{PassReport, Reconciler};
use crate::source::DesiredStateSource;

#[derive(Clone, Debug)]
pub struct LoopOptions {
    /// How often the source is polled (git), and passes run while oplog slicing goes on.
    pub interval: Duration,
    /// How often a pass runs at rest (nothing running, waiting or slicing) when nothing
    /// wakes it: a source change, a push webhook, a schedule or drill coming due.
    pub resync: Duration,
    /// Operations in flight are followed this often, even without a source change.
    pub follow_interval: Duration,
    /// While another reconciler leads, look this often whether this one leads now.
    pub follower_interval: Duration,
    /// Set (by a push webhook) to run the next pass now, fetching first.
    pub wake: Option<Arc<AtomicBool>>,
}

/// How long to wait after a pass: a follower looks again soon (it must act within a TTL
/// of a takeover); operations in flight are followed closely; slicing is followed every
/// `interval`; at rest the control plane is read every `resync`, or when the next
/// schedule or drill comes due.
fn next_wait(
    report: &PassReport,
    opts: &LoopOptions,
    now: chrono::DateTime<chrono::Utc>,
) -> Duration {
    if report.following.is_some() {
        return opts.follower_interval;
    }
    if !report.running.is_empty() || !report.waiting.is_empty() {
        return opts.follow_interval;
    }
    let slicing = report
        .observed
        .as_ref()
        .is_some_and(|o| !o.slicing.is_empty());
    let rest = match slicing {
        true => opts.interval.min(opts.resync),
        false => opts.resync,
    };
    // A second past the due time: the slot is due by then on the pass's clock too. The
    // planner gives a time after the pass began, which a long pass may have reached
    // already: then the next pass runs in a second (and plans a later one: no spin).
    match report.next_due {
        Some(due) => {
            let until = (due - now).to_std().unwrap_or_default();
            rest.min(until + Duration::from_secs(1))
        }
        None => rest,
    }
}

/// Runs passes until `stop` is set (checked between passes, never inside one, so a
/// SIGTERM never cuts a write sequence in half). Returns the last pass's report.
pub async fn run_loop<S: DesiredStateSource>(
    rec: &mut Reconciler<S>,
    opts: &LoopOptions,
    stop: Arc<AtomicBool>,
) -> PassReport {
    let changes = match rec.follower.source().changes() {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the source; polling every interval");
            None
        }
    };
    let mut failures = 0u32;
    let mut last = PassReport::default();
    while !stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        // Taken before the pass: a partition gained while it ran was not acted on by it.
        let led = |rec: &Reconciler<S>| rec.leadership.as_ref().map(|l| l.led());
        let led_before_pass = led(rec);
        let outcome = rec.pass(chrono::Utc::now()).await;
        if let Some(hook) = &rec.on_pass {
            match &outcome {
                Ok(report) => hook(report),
                Err(e) => hook(&PassReport {
                    errors: vec![e.to_string()],
                    ..Default::default()
                }),
            }
        }
        let wait = match outcome {
            Ok(report) => {
                failures = 0;
                for e in &report.errors {
                    tracing::error!(error = %e, "pass step failed; retrying next pass");
                }
                let wait = next_wait(&report, opts, chrono::Utc::now());
                last = report;
                wait
            }
            Err(e) => {
                failures += 1;
                let backoff = Duration::from_millis(500)
                    .saturating_mul(2u32.saturating_pow(failures.min(10)))
                    .min(opts.interval);
                tracing::error!(error = %e, failures, ?backoff, "pass failed; backing off");
                last.errors = vec![e.to_string()];
                backoff
            }
        };
        tracing::debug!(elapsed = ?started.elapsed(), "pass");
        // Sleep until the next pass, waking at once on a source change, on stop, or when
        // the partitions this process leads change: one taken over may have operations
        // in flight, which must not wait for a resync.
        let until = Instant::now() + wait;
        while !stop.load(Ordering::SeqCst) && Instant::now() < until {
            if led(rec) != led_before_pass {
                tracing::info!("the partitions this reconciler leads changed");
                break;
            }
            if opts
                .wake
                .as_ref()
                .is_some_and(|w| w.swap(false, Ordering::SeqCst))
            {
                tracing::info!("woken by a push webhook");
                break;
            }
            let slice = (until - Instant::now()).min(Duration::from_millis(200));
            let signalled = match &changes {
                Some(c) => tokio::task::block_in_place(|| c.wait(slice)),
                None => {
                    tokio::time::sleep(slice).await;
                    false
                }
            };
            // A signal (a file event, the git interval) only says "look": the source is
            // read here, and the control plane only when a new revision came.
            if signalled
                && last.following.is_none()
                && tokio::task::block_in_place(|| rec.follower.check())
            {
                tracing::info!("the source changed");
                break;
            }
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> LoopOptions {
        LoopOptions {
            interval: Duration::from_secs(60),
            resync: Duration::from_secs(600),
            follow_interval: Duration::from_millis(250),
            follower_interval: Duration::from_secs(30),
            wake: None,
        }
    }

    fn now() -> chrono::DateTime<chrono::Utc> {
        "2026-12-04T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn at_rest_a_pass_waits_for_the_resync_or_the_next_due_time() {
        let idle = PassReport::default();
        assert_eq!(next_wait(&idle, &opts(), now()), Duration::from_secs(600));
        let due = PassReport {
            next_due: Some(now() + chrono::Duration::seconds(90)),
            ..Default::default()
        };
        assert_eq!(next_wait(&due, &opts(), now()), Duration::from_secs(91));
        // Reached during a long pass: the next pass comes a second later.
        let reached = PassReport {
            next_due: Some(now() - chrono::Duration::seconds(5)),
            ..Default::default()
        };
        assert_eq!(next_wait(&reached, &opts(), now()), Duration::from_secs(1));
        // However long the pass took.
        let long = PassReport {
            next_due: Some(now() - chrono::Duration::seconds(300)),
            ..Default::default()
        };
        assert_eq!(next_wait(&long, &opts(), now()), Duration::from_secs(1));
    }

    #[test]
    fn work_in_flight_is_followed_closely_and_slicing_every_interval() {
        let busy = PassReport {
            running: vec!["backup b1".into()],
            ..Default::default()
        };
        assert_eq!(next_wait(&busy, &opts(), now()), Duration::from_millis(250));
        let slicing = PassReport {
            observed: Some(Arc::new(tidemark_store::control::ObservedState {
                slicing: vec![tidemark_schema::control::SlicingAssignment {
                    cluster: "c1".into(),
                    replica_set: "rs0".into(),
                    streams: Vec::new(),
                    epoch: None,
                    seal: None,
                }],
                ..Default::default()
            })),
            ..Default::default()
        };
        assert_eq!(next_wait(&slicing, &opts(), now()), Duration::from_secs(60));
        let following = PassReport {
            following: Some("another leads".into()),
            ..Default::default()
        };
        assert_eq!(
            next_wait(&following, &opts(), now()),
            Duration::from_secs(30)
        );
    }
}
