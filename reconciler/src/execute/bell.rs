//! The doorbell, leader side: after the leader writes something a cluster's agents must
//! act on (an op, a slicing assignment) it rings that cluster. A ring changes the
//! cluster's token in memory, which answers the agents waiting on the leader's long-poll
//! endpoint at once, and rewrites `doorbell/<cluster>.json`, which agents that cannot
//! reach the leader read instead of listing `ops/`. The ring carries no authority: agents
//! then read the control plane as always. A ring comes after the write it announces, so
//! an agent woken by it always finds what woke it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tidemark_schema::control::{DoorbellAnswer, DoorbellRecord, doorbell_key};
use tidemark_schema::validate::DesiredState;
use tidemark_store::control::ObservedState;
use tokio::sync::watch;

use super::context::Executor;

/// The leader's tokens, one per cluster. Cheap to clone; one per reconciler process.
#[derive(Clone, Debug)]
pub struct Bell {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The long-poll address announced to agents, if this process serves one.
    url: Option<String>,
    holder: String,
    /// Tells tokens of two processes with the same epoch apart (a control plane that was
    /// emptied and started again at epoch 1).
    tag: String,
    state: Mutex<State>,
    /// Bumped at every ring: long-polls wait on it.
    changed: watch::Sender<u64>,
}

/// The rings of every cluster, each in the epoch of its partition's lease.
#[derive(Debug, Default)]
struct State {
    clusters: BTreeMap<String, ClusterBell>,
}

#[derive(Debug, Default)]
struct ClusterBell {
    /// The epoch the rings below were made in; a new epoch starts every count over.
    epoch: u64,
    rings: u64,
    /// Its record could not be written yet, or the write its ring followed failed (it
    /// may land later): rung again next pass.
    unwritten: bool,
    /// Announced in this epoch.
    announced: bool,
    /// When it was last rung (this process's clock).
    rung_at: Option<std::time::Instant>,
}

/// How often a cluster with an operation just started is rung again.
const RING_FRESH_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

impl State {
    /// The cluster's bell, started over when `epoch` is new: tokens of a new epoch are new.
    fn enter(&mut self, cluster: &str, epoch: u64) -> &mut ClusterBell {
        let bell = self.clusters.entry(cluster.to_string()).or_default();
        if bell.epoch != epoch {
            *bell = ClusterBell {
                epoch,
                ..ClusterBell::default()
            };
        }
        bell
    }
}

impl Default for Bell {
    fn default() -> Self {
        Bell::new(None, String::new())
    }
}

impl Bell {
    /// A bell announcing `url` (or no address) on behalf of `holder`.
    pub fn new(url: Option<String>, holder: String) -> Bell {
        let tag = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| format!("{:08x}", d.subsec_nanos() ^ std::process::id()))
            .unwrap_or_default();
        Bell {
            inner: Arc::new(Inner {
                url,
                holder,
                tag,
                state: Mutex::default(),
                changed: watch::channel(0).0,
            }),
        }
    }

    /// The cluster's current token in `epoch`: what a long-poll answers.
    pub fn answer(&self, cluster: &str, epoch: u64) -> DoorbellAnswer {
        let state = self.inner.state.lock().expect("not poisoned");
        let rings = state
            .clusters
            .get(cluster)
            .filter(|b| b.epoch == epoch)
            .map_or(0, |b| b.rings);
        DoorbellAnswer {
            token: format!("{epoch}.{}.{rings}", self.inner.tag),
            epoch,
        }
    }

    /// Wakes at every ring.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }

    /// Counts one ring of `cluster` in `epoch` and returns the record to write.
    fn bump(&self, cluster: &str, epoch: u64) -> DoorbellRecord {
        {
            let mut state = self.inner.state.lock().expect("not poisoned");
            let bell = state.enter(cluster, epoch);
            bell.rings += 1;
            bell.rung_at = Some(std::time::Instant::now());
        }
        self.inner.changed.send_modify(|n| *n += 1);
        DoorbellRecord {
            token: self.answer(cluster, epoch).token,
            url: self.inner.url.clone(),
            epoch,
            holder: self.inner.holder.clone(),
            at: Utc::now(),
        }
    }

    /// The clusters to ring this pass beyond what it writes: each cluster once per epoch,
    /// when it first appears (agents then learn the new leader's address and token);
    /// those whose record or announced write failed; and, every few seconds, those with
    /// an operation just started (`fresh`), whose agents must not miss it for a whole
    /// resync whatever happened to a ring.
    fn owed(
        &self,
        epoch: u64,
        clusters: &BTreeSet<String>,
        fresh: &BTreeSet<String>,
    ) -> BTreeSet<String> {
        let mut state = self.inner.state.lock().expect("not poisoned");
        let mut owed = BTreeSet::new();
        for cluster in clusters {
            let bell = state.enter(cluster, epoch);
            let unwritten = std::mem::take(&mut bell.unwritten);
            let unannounced = !std::mem::replace(&mut bell.announced, true);
            let fresh_due = fresh.contains(cluster)
                && bell
                    .rung_at
                    .is_none_or(|at| at.elapsed() >= RING_FRESH_EVERY);
            if unwritten || unannounced || fresh_due {
                owed.insert(cluster.clone());
            }
        }
        owed
    }

    /// Rings `cluster` again next pass: a write its ring followed reported an error, and
    /// may land after agents looked.
    pub fn again_next_pass(&self, cluster: &str) {
        self.unwritten(cluster);
    }

    fn unwritten(&self, cluster: &str) {
        let mut state = self.inner.state.lock().expect("not poisoned");
        if let Some(bell) = state.clusters.get_mut(cluster) {
            bell.unwritten = true;
        }
    }
}

impl Executor {
    /// Rings `cluster`: call after the write its agents must see. Only a leader rings
    /// (a handle without an epoch, the CLI's, does nothing); a record that cannot be
    /// written is logged and written again next pass, never an error of the step.
    pub async fn ring(&self, cluster: &str) {
        let Some(epoch) = self.control.epoch() else {
            return;
        };
        let record = self.bell.bump(cluster, epoch);
        if let Err(e) = self.control.put(&doorbell_key(cluster), &record).await {
            tracing::warn!(cluster, error = %e, "the doorbell record was not written; again next pass");
            self.bell.unwritten(cluster);
        }
    }

    /// Rings what a pass owes beyond its own writes (see [`Bell::owed`]).
    pub async fn ring_owed(&self, clusters: &BTreeSet<String>, fresh: &BTreeSet<String>) {
        let Some(epoch) = self.control.epoch() else {
            return;
        };
        for cluster in self.bell.owed(epoch, clusters, fresh) {
            self.ring(&cluster).await;
        }
    }
}

/// The clusters a pass may owe a ring (see [`Bell::owed`]): every cluster of the desired
/// state and of a one-shot still running (a restore goes on after its cluster left the
/// desired state); and, of those, the ones with a one-shot started within the last
/// minute, rung again every few seconds so that its agents never wait a whole resync for
/// it, whatever became of a ring.
pub fn clusters_to_ring(
    desired: Option<&DesiredState>,
    observed: &ObservedState,
    now: DateTime<Utc>,
) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut clusters: BTreeSet<String> = desired
        .map(|s| s.clusters().map(|(name, _)| name.to_string()).collect())
        .unwrap_or_default();
    let mut fresh = BTreeSet::new();
    for record in observed.oneshots.values().filter(|r| !r.is_final()) {
        let Some(cluster) = record.cluster() else {
            continue;
        };
        clusters.insert(cluster.to_string());
        // A start stamped ahead of this clock (another host's) is not fresh: its first
        // ring and this epoch's announcement cover it, and it must not ring for as long
        // as the clocks disagree.
        let age = now - record.started_at;
        if age >= chrono::Duration::zero() && age < chrono::Duration::seconds(60) {
            fresh.insert(cluster.to_string());
        }
    }
    (clusters, fresh)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_changes_the_token_of_its_cluster_only() {
        let bell = Bell::new(None, "me".into());
        let (a, b) = (bell.answer("a", 3), bell.answer("b", 3));
        let record = bell.bump("a", 3);
        assert_eq!(record.token, bell.answer("a", 3).token);
        assert_ne!(bell.answer("a", 3).token, a.token);
        assert_eq!(bell.answer("b", 3).token, b.token);
    }

    #[test]
    fn a_new_epoch_gives_every_cluster_a_token_no_agent_has_seen() {
        let bell = Bell::new(None, "me".into());
        bell.bump("a", 3);
        let before = bell.answer("a", 3).token;
        assert_ne!(bell.answer("a", 4).token, before);
        assert_ne!(bell.answer("b", 4).token, bell.answer("b", 3).token);
    }

    #[test]
    fn every_cluster_is_owed_a_ring_once_per_epoch() {
        let bell = Bell::new(None, "me".into());
        let none = BTreeSet::new();
        let a: BTreeSet<String> = ["a".to_string()].into();
        let all: BTreeSet<String> = ["a".to_string(), "b".to_string()].into();
        assert!(bell.owed(1, &none, &none).is_empty());
        assert_eq!(bell.owed(1, &a, &none), a, "announced once it appears");
        // The rings of the announcement do not start the epoch over.
        bell.bump("a", 1);
        assert_eq!(bell.owed(1, &all, &none), ["b".to_string()].into());
        bell.bump("b", 1);
        assert!(bell.owed(1, &all, &none).is_empty());
        bell.again_next_pass("b");
        assert_eq!(bell.owed(1, &all, &none), ["b".to_string()].into());
        assert_eq!(bell.owed(2, &all, &none), all);
    }

    #[test]
    fn a_cluster_with_a_fresh_operation_is_rung_again_every_few_seconds() {
        let bell = Bell::new(None, "me".into());
        let a: BTreeSet<String> = ["a".to_string()].into();
        bell.bump("a", 1);
        assert!(bell.owed(1, &a, &a).len() == 1, "announced");
        bell.bump("a", 1);
        assert!(bell.owed(1, &a, &a).is_empty(), "just rung");
        // The last ring was longer ago than the period: owed again while fresh, not after.
        {
            let mut state = bell.inner.state.lock().unwrap();
            let at = state
                .clusters
                .get_mut("a")
                .unwrap()
                .rung_at
                .as_mut()
                .unwrap();
            *at = at.checked_sub(RING_FRESH_EVERY).unwrap();
        }
        assert_eq!(bell.owed(1, &a, &a).len(), 1, "rung again after the period");
        assert!(
            bell.owed(1, &a, &BTreeSet::new()).is_empty(),
            "no longer fresh: not rung again"
        );
    }
}
