//! The node an agent serves: who it is, its settings, and how it reports phases.

use std::collections::BTreeMap;

use chrono::Utc;
use tidemark_schema::control::{NodeOutcome, Op, Phase, PhaseReport, PhaseStatus};

use crate::config::AgentConfig;
use crate::control::ControlPlane;
use crate::error::AgentError;
use crate::mongod::{MongodClient, MongodError};

pub type Details = BTreeMap<String, serde_json::Value>;

/// Why a wait ended without its key.
enum Ended {
    /// The op ended (its result, an abort, compaction, or a closed gate).
    ByAuthor(String),
    /// The key arrived, but not sealed by a trusted key.
    Untrusted(String),
}

/// How a wait for a key ended, when it did not end with the op.
enum Waited {
    Arrived(serde_json::Value),
    TimedOut,
}

/// A failed phase: which one, and why.
#[derive(Debug)]
pub struct PhaseFailure {
    pub phase: Phase,
    pub error: AgentError,
}

impl std::fmt::Display for PhaseFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "phase {}: {}", self.phase, self.error)
    }
}

/// Attaches the phase name to any error, for `?` in pipelines.
pub trait InPhase<T> {
    fn in_phase(self, phase: Phase) -> Result<T, PhaseFailure>;
}

impl<T, E: Into<AgentError>> InPhase<T> for Result<T, E> {
    fn in_phase(self, phase: Phase) -> Result<T, PhaseFailure> {
        self.map_err(|e| PhaseFailure {
            phase,
            error: e.into(),
        })
    }
}

pub struct Node {
    pub cfg: AgentConfig,
    pub control: ControlPlane,
    pub cluster: String,
    pub replica_set: String,
    /// `host:port` as in the replica-set config.
    pub id: String,
    /// The highest leader epoch seen on an op or a gate: one of a lower epoch comes from
    /// a deposed leader and is refused.
    pub epochs: EpochFence,
    /// What each oplog slicer of this agent last did, for the heartbeat.
    pub slicing: crate::pitr::SlicerReports,
    /// What the leader's doorbell said: wakes the ops loop and the slicing follower.
    pub doorbell: crate::doorbell::Doorbell,
    /// Set while an op runs here: heartbeats then go at every look, as the reconciler
    /// follows the op closely.
    pub working: std::sync::atomic::AtomicBool,
    /// Whose signatures this agent acts on; shared with the scratch nodes of drills.
    pub trust: std::sync::Arc<crate::trust::Trust>,
}

/// The highest fencing number this agent has seen. In memory: a restarted agent learns
/// it again from the next op, and a deposed leader's writes still carry the lower one.
#[derive(Debug, Default)]
pub struct EpochFence(std::sync::atomic::AtomicU64);

impl EpochFence {
    /// Records `epoch` and says whether it is current: not below the highest seen. A
    /// record without an epoch (written by hand or by an older reconciler) is let through.
    pub fn admit(&self, epoch: Option<u64>) -> Result<(), u64> {
        use std::sync::atomic::Ordering;
        let Some(epoch) = epoch else {
            return Ok(());
        };
        let seen = self.0.fetch_max(epoch, Ordering::SeqCst);
        if epoch < seen { Err(seen) } else { Ok(()) }
    }

    /// Starts over from `epoch` (the control plane was emptied and its epochs restart).
    pub fn reset(&self, epoch: u64) {
        self.0.store(epoch, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Node {
    pub fn targets_me(&self, op: &Op) -> bool {
        op.cluster == self.cluster
            && op
                .targets
                .iter()
                .any(|t| t.replica_set == self.replica_set && t.node == self.id)
    }

    pub async fn report(
        &self,
        op: &Op,
        phase: Phase,
        status: PhaseStatus,
        message: impl Into<String>,
        details: Details,
    ) -> Result<(), AgentError> {
        self.report_for(&op.id, phase, status, message, details)
            .await
    }

    /// Writes a node's final report: `done`, or `error` naming the phase that failed and
    /// whether the node was touched (machine-readable, for the reconciler's decision).
    pub async fn finish_for(
        &self,
        op_id: &str,
        failed: Option<Phase>,
        message: impl Into<String>,
        details: Details,
    ) -> Result<(), AgentError> {
        let (phase, status, outcome) = match failed {
            None => (Phase::Done, PhaseStatus::Done, NodeOutcome::Done),
            Some(p) if p.touches_node() => (Phase::Error, PhaseStatus::Error, NodeOutcome::Failed),
            Some(_) => (Phase::Error, PhaseStatus::Error, NodeOutcome::Refused),
        };
        self.write_report(
            op_id,
            phase,
            status,
            message.into(),
            details,
            Some(outcome),
            failed,
        )
        .await
    }

    /// Like `report`, for an op known only by its id (one this agent cannot read).
    pub async fn report_for(
        &self,
        op_id: &str,
        phase: Phase,
        status: PhaseStatus,
        message: impl Into<String>,
        details: Details,
    ) -> Result<(), AgentError> {
        self.write_report(op_id, phase, status, message.into(), details, None, None)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn write_report(
        &self,
        op_id: &str,
        phase: Phase,
        status: PhaseStatus,
        message: String,
        details: Details,
        outcome: Option<NodeOutcome>,
        failed_phase: Option<Phase>,
    ) -> Result<(), AgentError> {
        tracing::info!(op = %op_id, %phase, ?status, %message, "phase");
        self.control
            .report(&PhaseReport {
                op_id: op_id.to_string(),
                replica_set: self.replica_set.clone(),
                node: self.id.clone(),
                phase,
                status,
                at: Utc::now(),
                message,
                outcome,
                failed_phase,
                details,
            })
            .await
            .map_err(AgentError::from)
    }

    /// Reports a phase as running, for progress.
    pub async fn running(
        &self,
        op: &Op,
        phase: Phase,
        message: impl Into<String>,
    ) -> Result<(), PhaseFailure> {
        self.report(op, phase, PhaseStatus::Running, message, Details::new())
            .await
            .map_err(|error| PhaseFailure {
                phase: Phase::Report,
                error,
            })
    }

    /// Reports a phase as done with its figures.
    pub async fn done(
        &self,
        op: &Op,
        phase: Phase,
        message: impl Into<String>,
        details: Details,
    ) -> Result<(), PhaseFailure> {
        self.report(op, phase, PhaseStatus::Done, message, details)
            .await
            .in_phase(phase)
    }

    /// A phase boundary of a restore: if the op's author wrote `abort.json`, stop here and
    /// fail as `reached` (the last phase this node completed), so the reconciler knows
    /// exactly what the node needs. Only called between phases, never inside one.
    pub async fn boundary(&self, op: &Op, reached: Phase) -> Result<(), PhaseFailure> {
        let key = tidemark_schema::control::abort_key(&op.id);
        let result = tidemark_schema::control::result_key(&op.id);
        if self.control.exists(&key).await.in_phase(reached)?
            || self.control.exists(&result).await.in_phase(reached)?
        {
            return Err(PhaseFailure {
                phase: reached,
                error: AgentError::Refused(format!(
                    "the op was aborted or decided without this node ({key} or result.json exists); stopped after phase {reached}"
                )),
            });
        }
        // Compaction removes op.json first, then the abort and the result: an op without
        // it is over, whatever else is (no longer) there.
        // Only a definite "gone" stops the node: a control plane that does not answer
        // this one extra question is no reason to fail it (the checks above already ran).
        let op_key = tidemark_schema::control::op_key(&op.id);
        if matches!(self.control.exists(&op_key).await, Ok(false)) {
            return Err(PhaseFailure {
                phase: reached,
                error: AgentError::Refused(format!(
                    "the op is gone from the control plane ({op_key}: compacted, so it ended long ago); stopped after phase {reached}"
                )),
            });
        }
        Ok(())
    }

    /// Resolves once the op's author ended it (`abort.json` or `result.json`: a cancel,
    /// or a decision taken without this node), with why; never otherwise. Watched beside
    /// long work (a backup's copy) so that it stops at its next file, not at its end.
    pub async fn ended_by_author(&self, op: &Op) -> String {
        let every = self
            .cfg
            .quick_poll()
            .max(std::time::Duration::from_millis(500));
        loop {
            if let Ok(Some(why)) = self.author_ended(op).await {
                return why;
            }
            tokio::time::sleep(every).await;
        }
    }

    /// One look: `Some(why)` when the op's author ended it (`abort.json` or `result.json`).
    pub async fn author_ended(&self, op: &Op) -> Result<Option<String>, AgentError> {
        let abort = tidemark_schema::control::abort_key(&op.id);
        let result = tidemark_schema::control::result_key(&op.id);
        let ended = self.control.exists(&abort).await? || self.control.exists(&result).await?;
        Ok(ended.then(|| {
            format!(
                "the op was cancelled or decided without this node ({abort} or result.json \
                 exists)"
            )
        }))
    }

    /// Before a step that must not happen once the op ended (a backup's manifest): asks
    /// until the control plane answers, for up to a minute, rather than failing hours of
    /// copying on one read error.
    pub async fn still_wanted(&self, op: &Op, phase: Phase) -> Result<(), PhaseFailure> {
        let started = std::time::Instant::now();
        loop {
            match self.author_ended(op).await {
                Ok(None) => return Ok(()),
                Ok(Some(why)) => return Err(AgentError::Refused(why)).in_phase(phase),
                Err(e) if started.elapsed() > std::time::Duration::from_secs(60) => {
                    return Err(e).in_phase(phase);
                }
                Err(e) => tracing::warn!(error = %e, "control plane unreadable; asking again"),
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }

    /// Waits until `key` exists in the control plane. The op's `result.json` appearing
    /// first means its author ended it, and a key holding `abort` (a closed gate) means
    /// the wait ended without it: both are errors, and nothing more is done. A control
    /// plane that does not answer is asked again: a node must not refuse on its own while
    /// the reconciler may be opening the gate for everyone.
    pub async fn wait_for(&self, op: &Op, key: &str, what: &str) -> Result<(), AgentError> {
        self.wait_until(op, key, what, None).await.map(|_| ())
    }

    /// Looks for `key` at the quick rate until it arrives open (its value), the op ends
    /// (an error), or `deadline` passes (`TimedOut`, after at least one look).
    async fn wait_until(
        &self,
        op: &Op,
        key: &str,
        what: &str,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Waited, AgentError> {
        let result = tidemark_schema::control::result_key(&op.id);
        let abort = tidemark_schema::control::abort_key(&op.id);
        loop {
            match self.ended_or_arrived(&op.id, &result, &abort, key).await {
                Ok(None) => {}
                Ok(Some(Ok(value))) => return Ok(Waited::Arrived(value)),
                Ok(Some(Err(Ended::ByAuthor(why)))) => {
                    return Err(AgentError::Refused(format!(
                        "the op was ended while waiting for {what}: {why}"
                    )));
                }
                Ok(Some(Err(Ended::Untrusted(why)))) => {
                    return Err(AgentError::Refused(format!(
                        "{key} is not from a trusted reconciler: {why}; nothing was done \
                         after it"
                    )));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "control plane unreadable while waiting for {what}; asking again");
                }
            }
            if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                return Ok(Waited::TimedOut);
            }
            // Inside an op every node waits on the same gate: the quick rate keeps the time
            // between `go` and the last node moving short.
            tokio::time::sleep(self.cfg.quick_poll()).await;
        }
    }

    /// Looks for `key` until it arrives open, and returns it as it was read (and, when
    /// the reconciler signs it, checked): acting on what was checked, not on a second read.
    pub async fn wait_for_value(
        &self,
        op: &Op,
        key: &str,
        what: &str,
    ) -> Result<serde_json::Value, AgentError> {
        match self.wait_until(op, key, what, None).await? {
            Waited::Arrived(value) => Ok(value),
            Waited::TimedOut => unreachable!("no deadline was given"),
        }
    }

    /// One look: `Some(Ok)` when `key` arrived open, `Some(Err(_))` when the op ended or
    /// what arrived is not trusted.
    async fn ended_or_arrived(
        &self,
        op_id: &str,
        result: &str,
        abort: &str,
        key: &str,
    ) -> Result<Option<Result<serde_json::Value, Ended>>, AgentError> {
        // An end (result or abort) wins over the awaited key: two reconcilers racing may
        // write both, and a node must then stay untouched.
        if self.control.exists(result).await? || self.control.exists(abort).await? {
            return Ok(Some(Err(Ended::ByAuthor(
                "its result.json or abort.json exists".into(),
            ))));
        }
        // Compacted (op.json goes first): ended long ago.
        if !self
            .control
            .exists(&tidemark_schema::control::op_key(op_id))
            .await?
        {
            return Ok(Some(Err(Ended::ByAuthor(
                "its op.json is gone (compacted)".into(),
            ))));
        }
        let Some(v) = self.control.get::<serde_json::Value>(key).await? else {
            return Ok(None);
        };
        // Closing a gate only ever stops a node, and agents close gates themselves: a
        // closed gate is obeyed unsigned. Anything that lets a node go on must be signed,
        // but for `finish.json`, which the operator's own command writes.
        Ok(Some(match tidemark_schema::control::Gate::read(&v) {
            Err(why) => Err(Ended::ByAuthor(format!("{key} closed: {why}"))),
            Ok(()) if key == tidemark_schema::control::finish_key(op_id) => Ok(v),
            Ok(()) => match self.trust.check(key, &v) {
                Ok(()) => Ok(v),
                Err(refusal) => Err(Ended::Untrusted(refusal.to_string())),
            },
        }))
    }

    /// Waits at `ready` for a restore's gate, for at most `timeout` (measured here, on a
    /// clock no NTP step moves). Past it the node closes the gate and refuses, untouched;
    /// a gate that someone opened meanwhile is still judged: one opened longer than
    /// `timeout` after the op was created, or by a deposed leader, is refused too.
    pub async fn wait_for_go(
        &self,
        op: &Op,
        timeout: Option<std::time::Duration>,
    ) -> Result<(), AgentError> {
        let key = tidemark_schema::control::go_key(&op.id);
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        loop {
            let gate = match self.wait_until(op, &key, "go", deadline).await? {
                Waited::Arrived(gate) => gate,
                Waited::TimedOut => {
                    let why = format!(
                        "no go within the restore's go timeout ({}s) of this node being ready",
                        timeout.unwrap_or_default().as_secs()
                    );
                    match self.close_gate(&op.id, &why).await {
                        Ok(true) => {
                            return Err(AgentError::Refused(format!("{why}; nothing was touched")));
                        }
                        // Opened meanwhile: the next look reads and judges it.
                        Ok(false) => {}
                        // Not closed: the reconciler may still open it for the others, so
                        // this node must not refuse alone; it tries again.
                        Err(e) => tracing::warn!(error = %e, "cannot close the gate; trying again"),
                    }
                    tokio::time::sleep(self.cfg.quick_poll()).await;
                    continue;
                }
            };
            return self.judge_gate(op, &key, &gate, timeout);
        }
    }

    /// An open gate, as it was read, judged by its time and epoch. Pure: a control plane
    /// that fails now must not make this node refuse alone while the others go on.
    fn judge_gate(
        &self,
        op: &Op,
        key: &str,
        gate: &serde_json::Value,
        timeout: Option<std::time::Duration>,
    ) -> Result<(), AgentError> {
        let Ok(gate) = serde_json::from_value::<tidemark_schema::control::Gate>(gate.clone())
        else {
            // `{}` or a hand-written gate without a time: open, nothing to judge.
            return Ok(());
        };
        if gate.epoch.is_some() && gate.epoch < op.epoch {
            return Err(AgentError::Refused(format!(
                "{key} was opened by leader epoch {} but the op is of epoch {}: a deposed \
                 leader's gate; nothing was touched",
                gate.epoch.unwrap_or_default(),
                op.epoch.unwrap_or_default()
            )));
        }
        if let Err(seen) = self.epochs.admit(gate.epoch) {
            return Err(AgentError::Refused(format!(
                "{key} was opened by leader epoch {} but epoch {seen} has been seen: a \
                 deposed leader's gate; nothing was touched",
                gate.epoch.unwrap_or_default()
            )));
        }
        if let Some(t) = timeout
            && let Ok(t) = chrono::Duration::from_std(t)
            && gate.at - op.created_at > t
        {
            return Err(AgentError::Refused(format!(
                "{key} was opened at {}, more than the go timeout ({}s) after the restore was \
                 written ({}); nothing was touched",
                gate.at.to_rfc3339(),
                t.num_seconds(),
                op.created_at.to_rfc3339()
            )));
        }
        Ok(())
    }

    /// Closes a restore's gate before this node refuses on its own while waiting for go,
    /// so that no other node is told to go on without it. `Ok(true)`: closed (by us or
    /// earlier); `Ok(false)`: it was already open, so other nodes may be past `go`.
    pub async fn close_gate(&self, op_id: &str, why: &str) -> Result<bool, AgentError> {
        use tidemark_schema::control::{Gate, go_key};
        let key = go_key(op_id);
        let gate = Gate::abort(chrono::Utc::now(), format!("{}: {why}", self.id));
        match self.control.create(&key, &gate).await? {
            tidemark_store::control::Created::New => Ok(true),
            tidemark_store::control::Created::Existed => Ok(self
                .control
                .get::<serde_json::Value>(&key)
                .await?
                .is_some_and(|g| Gate::read(&g).is_err())),
        }
    }

    pub async fn mongod(&self) -> Result<MongodClient, MongodError> {
        MongodClient::connect(&self.cfg.mongod_uri).await
    }

    /// `host:port` of this node's mongod as the agent reaches it (from the URI).
    pub fn mongod_address(&self) -> String {
        first_host(&self.cfg.mongod_uri).unwrap_or_else(|| self.id.clone())
    }
}

/// The first `host:port` of a MongoDB URI, credentials and options stripped.
pub fn first_host(uri: &str) -> Option<String> {
    let rest = uri.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let hosts = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let first = hosts.split(',').next()?;
    if first.is_empty() {
        return None;
    }
    Some(if first.contains(':') {
        first.to_string()
    } else {
        format!("{first}:27017")
    })
}

/// A JSON value for report details.
pub fn j(v: impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    /// A deposed leader's op or gate (a lower epoch than one already seen) is refused;
    /// the current epoch, a newer one, and a record without an epoch pass.
    #[test]
    fn the_epoch_fence_refuses_what_a_deposed_leader_wrote() {
        let fence = super::EpochFence::default();
        assert_eq!(fence.admit(Some(3)), Ok(()));
        assert_eq!(fence.admit(Some(4)), Ok(()));
        assert_eq!(fence.admit(Some(4)), Ok(()));
        assert_eq!(fence.admit(Some(3)), Err(4));
        assert_eq!(fence.admit(None), Ok(()));
        assert_eq!(fence.admit(Some(5)), Ok(()));
        assert_eq!(fence.admit(Some(4)), Err(5));
    }

    #[test]
    fn first_host_strips_credentials_and_options() {
        assert_eq!(
            super::first_host("mongodb://u:p@db1:27018,db2:27018/?replicaSet=rs0").as_deref(),
            Some("db1:27018")
        );
        assert_eq!(
            super::first_host("mongodb://db1").as_deref(),
            Some("db1:27017")
        );
    }
}
