//! `GET /v1/doorbell/{cluster}?seen=TOKEN` on `reconcile --listen ADDR`: the long-poll
//! agents wait on instead of listing `ops/`. It answers at once when the cluster's token
//! is not the one the agent saw, otherwise at the next ring or after `wait` (10 s by
//! default, at most 60 s), with the token either way. A reconciler that does not lead
//! answers 503, and the agent falls back to the doorbell record in the control plane.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tidemark_reconciler::execute::Bell;
use tidemark_store::control::Leadership;

/// What the endpoint needs: the bell, and which partitions this process leads, in which
/// epochs, and until when their last renewals let it.
#[derive(Clone)]
pub struct Doorbell {
    pub bell: Bell,
    pub leadership: Arc<Leadership>,
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
    /// The epoch this process leads `cluster`'s partition in, while its lease is valid: a
    /// leader whose renewals stall (the control plane unreachable from it) stops
    /// answering as one, so that its agents go to the record, where a new leader's
    /// address will appear; so does one that leads other partitions only.
    fn epoch(&self, cluster: &str) -> Option<u64> {
        self.leadership
            .leading(self.leadership.partition_of(cluster))
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
        let Some(epoch) = d.epoch(&cluster) else {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "this reconciler does not lead this cluster: read the doorbell record\n",
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
    use tidemark_store::control::ControlPlane;

    #[tokio::test]
    async fn only_the_leader_of_a_clusters_partition_answers_for_it() {
        let dir = tempfile::TempDir::new().unwrap();
        let control = ControlPlane::open_writable(dir.path().to_str().unwrap()).unwrap();
        let ttl = Duration::from_secs(30);
        let leader = Arc::new(Leadership::new(&control, "a", ttl, 1, None, true));
        let other = Arc::new(Leadership::new(&control, "b", ttl, 1, None, true));
        leader.tick().await;
        other.tick().await;
        let answers = |l: &Arc<Leadership>| {
            Doorbell {
                bell: Bell::default(),
                leadership: l.clone(),
            }
            .epoch("prod")
        };
        assert_eq!(answers(&leader), Some(1));
        assert_eq!(answers(&other), None, "b follows");
    }
}
