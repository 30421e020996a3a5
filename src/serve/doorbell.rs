//! `GET /v1/doorbell/{cluster}?seen=TOKEN` on `reconcile --listen ADDR`: the long-poll
//! agents wait on instead of listing `ops/`. It answers at once when the cluster's token
//! is not the one the agent saw, otherwise at the next ring or after `wait` (10 s by
//! default, at most 60 s), with the token either way. A reconciler that does not lead
//! answers 503, and the agent falls back to the doorbell record in the control plane.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tidemark_reconciler::execute::Bell;
use tidemark_store::control::{LeaseClock, Standing};

/// What the endpoint needs: the bell and whether this process leads, in which epoch, and
/// until when its last renewal lets it.
#[derive(Clone)]
pub struct Doorbell {
    pub bell: Bell,
    pub standing: Arc<Mutex<Option<Standing>>>,
    pub until: LeaseClock,
}

#[derive(Deserialize)]
pub struct Wait {
    seen: Option<String>,
    /// Milliseconds to hold the request when nothing rang.
    wait: Option<u64>,
}

const DEFAULT_WAIT: Duration = Duration::from_secs(10);
const LONGEST_WAIT: Duration = Duration::from_secs(60);

impl Doorbell {
    /// The epoch this process leads in, while its lease is valid: a leader whose renewals
    /// stall (the control plane unreachable from it) stops answering as one, so that its
    /// agents go to the record, where a new leader's address will appear.
    fn epoch(&self) -> Option<u64> {
        let valid = self
            .until
            .lock()
            .expect("not poisoned")
            .is_some_and(|t| std::time::Instant::now() < t);
        match self.standing.lock().expect("not poisoned").as_ref() {
            Some(Standing::Leader { epoch }) if valid => Some(*epoch),
            _ => None,
        }
    }
}

pub async fn wait(
    State(d): State<Doorbell>,
    Path(cluster): Path<String>,
    Query(q): Query<Wait>,
) -> Response {
    let wait = q
        .wait
        .map_or(DEFAULT_WAIT, Duration::from_millis)
        .min(LONGEST_WAIT);
    let deadline = tokio::time::Instant::now() + wait;
    let mut rings = d.bell.subscribe();
    loop {
        let Some(epoch) = d.epoch() else {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "this reconciler does not lead: read the doorbell record\n",
            )
                .into_response();
        };
        let answer = d.bell.answer(&cluster, epoch);
        if q.seen.as_deref() != Some(answer.token.as_str())
            || tokio::time::Instant::now() >= deadline
        {
            return Json(answer).into_response();
        }
        // A ring of any cluster wakes every waiter, each compares its own token; a lost
        // lead is seen within a second.
        let slice = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .min(Duration::from_secs(1));
        let _ = tokio::time::timeout(slice, rings.changed()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doorbell(until: Option<std::time::Instant>) -> Doorbell {
        Doorbell {
            bell: Bell::default(),
            standing: Arc::new(Mutex::new(Some(Standing::Leader { epoch: 7 }))),
            until: Arc::new(Mutex::new(until)),
        }
    }

    #[test]
    fn a_leader_whose_renewals_lapsed_does_not_answer_as_one() {
        let later = std::time::Instant::now() + Duration::from_secs(30);
        assert_eq!(doorbell(Some(later)).epoch(), Some(7));
        // Renewals failing (the store out of its reach): another may lead by now.
        assert_eq!(doorbell(None).epoch(), None);
        let past = std::time::Instant::now() - Duration::from_millis(1);
        assert_eq!(doorbell(Some(past)).epoch(), None);
    }
}
