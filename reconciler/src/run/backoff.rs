//! Backoff per one-shot, as kube-rs's per-object `error_policy`: a one-shot whose step
//! fails waits longer after each failure (1 s, 2 s, 4 s, … up to 5 minutes) before the
//! next try, instead of being retried on every follow pass (a storm of storage requests
//! and log lines). The state lives in the one-shot's ledger record, so `status` and
//! `describe-*` show the next try, and a new leader honours it.

use chrono::{DateTime, Duration, Utc};
use tidemark_schema::control::Retry;

/// The wait after the first failure.
pub const FIRST: Duration = Duration::seconds(1);
/// The longest wait between two tries.
pub const CAP: Duration = Duration::minutes(5);

/// The wait after the `failures`-th failure in a row.
pub fn delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(20);
    (FIRST * 2i32.pow(doublings)).min(CAP)
}

/// The record of one more failure, after `previous`.
pub fn failed(previous: Option<&Retry>, error: String, now: DateTime<Utc>) -> Retry {
    let failures = previous.map_or(0, |r| r.failures) + 1;
    Retry {
        failures,
        error,
        next_at: now + delay(failures),
    }
}

/// Whether the one-shot's step may be tried at `now`: once its wait is over, or when the
/// clock reads earlier than the failure itself (it was stepped back; waiting for the old
/// time would add the whole step to the wait).
pub fn due(retry: Option<&Retry>, now: DateTime<Utc>) -> bool {
    retry.is_none_or(|r| now >= r.next_at || now < r.next_at - delay(r.failures))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_waits_twice_as_long_up_to_the_cap() {
        let waits: Vec<i64> = (1..=12).map(|n| delay(n).num_seconds()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(delay(u32::MAX), CAP);
    }

    #[test]
    fn a_step_is_due_only_once_its_wait_is_over() {
        let t0: DateTime<Utc> = "2026-03-10T12:00:00Z".parse().unwrap();
        let first = failed(None, "boom".into(), t0);
        assert_eq!(first.failures, 1);
        assert!(!due(Some(&first), t0 + Duration::milliseconds(999)));
        assert!(due(Some(&first), t0 + FIRST));
        let second = failed(Some(&first), "boom".into(), t0 + FIRST);
        assert_eq!(
            (second.failures, second.next_at),
            (2, t0 + Duration::seconds(3))
        );
        assert!(due(None, t0));
        // The clock stepped back an hour after the failure: due, not an hour late.
        assert!(due(Some(&second), t0 - Duration::hours(1)));
    }
}
