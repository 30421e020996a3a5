//! What every executor step needs: the control plane, the clock readings of this pass and
//! the thresholds; plus the one error type of the executor and the per-node view of an op.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use tidemark_schema::control::signature::Refusal;
use tidemark_schema::control::{
    Heartbeat, OneShotRecord, Op, OpResult, PhaseReport, RunStatus, oneshot_key, result_key,
};
use tidemark_store::control::{ControlError, ControlPlane, Created};
use tidemark_store::storage::StorageError;

/// Errors of the executor: one per seam it crosses.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{0}")]
    Invalid(String),
    /// A record the reconciler reads back as its own is not sealed by its key: someone
    /// else wrote or edited it. Nothing is derived from it.
    #[error(
        "{key} is not sealed by this reconciler's key ({why}): written or edited by \
         someone without it, or sealed by a key this reconciler no longer holds (give that \
         key's public half in --previous-signing-keys); nothing is done from it"
    )]
    Untrusted { key: String, why: String },
}

/// An op's `result.json` as the reconciler reads it back.
#[derive(Debug)]
pub enum ResultRecord {
    Absent,
    /// Decided by this reconciler (or an earlier one with its key).
    Own(OpResult),
    /// Unsealed or edited, and why: it decides nothing, and agents that saw it stopped.
    Foreign(String),
}

/// Settings and handles of one reconciler.
#[derive(Clone)]
pub struct Executor {
    pub control: ControlPlane,
    /// An agent silent for longer is dead (PBM: 240 s).
    pub dead_after: chrono::Duration,
    /// A node that has not started an op by then refuses it.
    pub op_deadline: chrono::Duration,
    /// A restore's gate is never opened for an op older than this, and its nodes stop
    /// waiting for `go` after it (`--go-timeout`).
    pub go_timeout: chrono::Duration,
    /// The environment backup storage is opened with: credentials and endpoints
    /// ([`storage_env_from_process`]), or moto's in tests.
    pub storage_env: Vec<(String, String)>,
    /// Rung after each write agents must act on (see `bell.rs`).
    pub bell: super::Bell,
    /// Seals every record an agent acts on (ops, gates, common points, slicing
    /// assignments); `None` writes them unsealed, which agents refuse unless started with
    /// `--insecure-accept-unsigned`.
    pub signer: Option<std::sync::Arc<tidemark_schema::control::signature::Signer>>,
}

/// Never the storage environment's values: they are credentials.
impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("control", &self.control)
            .field("dead_after", &self.dead_after)
            .field("op_deadline", &self.op_deadline)
            .field("go_timeout", &self.go_timeout)
            .field(
                "storage_env",
                &self.storage_env.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// The variables of this process's environment that configure object storage (the
/// prefixes object_store's builders read), and nothing else: a variable that is not
/// valid UTF-8 is skipped, not a panic.
pub fn storage_env_from_process() -> Vec<(String, String)> {
    const PREFIXES: [&str; 5] = [
        "AWS_",
        "GOOGLE_",
        "AZURE_",
        "SERVICE_ACCOUNT",
        "IDENTITY_ENDPOINT",
    ];
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| PREFIXES.iter().any(|p| k.starts_with(p)))
        .collect()
}

/// How far an operation got in this pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Still running: agents are working, or a follow-up step waits.
    Running,
    /// Ended; its outcome is in the ledger.
    Finished(RunStatus),
}

/// One target node of an op as its reports and heartbeat show it.
#[derive(Clone, Debug)]
pub struct NodeView {
    pub replica_set: String,
    pub node: String,
    pub reports: Vec<PhaseReport>,
    pub heartbeat: Option<Heartbeat>,
    pub lost: bool,
}

impl NodeView {
    pub fn final_report(&self) -> Option<&PhaseReport> {
        self.reports.iter().find(|r| r.phase.is_final())
    }

    /// The furthest phase reported, the final one aside. By the phases' order, never by
    /// the reports' `at`: those come from the agent's clock, which an NTP step can move
    /// back, and a node that moved its data aside must not look as if it only stopped.
    pub fn last_phase(&self) -> Option<&PhaseReport> {
        self.reports
            .iter()
            .filter(|r| !r.phase.is_final())
            .max_by_key(|r| r.phase)
    }

    pub fn reported(&self, phase: tidemark_schema::control::Phase) -> bool {
        self.reports.iter().any(|r| r.phase == phase)
    }

    /// Ended on this node: a final report, or its agent is gone.
    pub fn settled(&self) -> bool {
        self.final_report().is_some() || self.lost
    }
}

#[cfg(test)]
impl Executor {
    /// A leaderless executor on a control plane in `dir`, with short test timeouts.
    pub(crate) fn on_directory(dir: &std::path::Path) -> Executor {
        Executor {
            control: tidemark_store::control::ControlPlane::open_writable(dir.to_str().unwrap())
                .unwrap(),
            dead_after: chrono::Duration::seconds(5),
            op_deadline: chrono::Duration::hours(1),
            go_timeout: chrono::Duration::minutes(5),
            storage_env: Vec::new(),
            bell: Default::default(),
            signer: None,
        }
    }
}

impl Executor {
    /// `record` as it is written at `key`: sealed when this process has a signing key.
    pub fn sealed<T: serde::Serialize>(&self, key: &str, record: &T) -> serde_json::Value {
        match &self.signer {
            Some(signer) => signer.seal(key, record),
            None => serde_json::to_value(record).expect("control records serialize"),
        }
    }

    /// A record this reconciler wrote, read back: refused unless it carries this
    /// process's own seal (when it has a key). Results, ops and assignments decide what is
    /// signed next, so a forged one must not be signed for.
    pub async fn own<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, ExecError> {
        let Some(value) = self.control.get::<serde_json::Value>(key).await? else {
            return Ok(None);
        };
        self.check_own(key, &value)?;
        serde_json::from_value(value)
            .map(Some)
            .map_err(|e| ExecError::Invalid(format!("{key}: {e}")))
    }

    /// `record`, read at (or stored for) `key`, carries this process's own seal; always
    /// true without a key.
    pub fn check_own(&self, key: &str, record: &serde_json::Value) -> Result<(), ExecError> {
        let Some(signer) = &self.signer else {
            return Ok(());
        };
        signer.verify_own(key, record).map_err(|refusal| {
            tracing::error!(record = key, reason = %refusal, "a record not sealed by this reconciler");
            ExecError::Untrusted {
                key: key.to_string(),
                why: refusal.to_string(),
            }
        })
    }

    /// Whether a record read as `T` (its seal kept in a `seal` field) carries this
    /// reconciler's seal; always true without a key. The ledger's applied revision is
    /// fallen back to only then: planning from someone else's documents would have this
    /// process seal ops for them.
    pub fn is_own<T: serde::Serialize>(&self, key: &str, record: &T) -> bool {
        let value = serde_json::to_value(record).unwrap_or_default();
        self.check_own(key, &value).is_ok()
    }

    /// The result of op `id` when this reconciler (or an earlier leader with its key)
    /// decided it. One unsealed or edited decides nothing: it reads as absent, and
    /// [`Executor::decide_once`] replaces it. One sealed by a key this process does not
    /// know is an error, never replaced: another reconciler of a rolling key rotation may
    /// have decided it.
    pub async fn own_result(&self, id: &str) -> Result<Option<OpResult>, ExecError> {
        Ok(match self.result_of(id).await? {
            ResultRecord::Own(r) => Some(r),
            ResultRecord::Absent | ResultRecord::Foreign(_) => None,
        })
    }

    /// What `ops/<id>/result.json` holds, as [`Executor::own_result`] judges it.
    pub async fn result_of(&self, id: &str) -> Result<ResultRecord, ExecError> {
        let key = result_key(id);
        let Some(value) = self.control.get::<serde_json::Value>(&key).await? else {
            return Ok(ResultRecord::Absent);
        };
        if let Some(signer) = &self.signer {
            match signer.verify_own(&key, &value) {
                Ok(()) => {}
                Err(refusal @ Refusal::UnknownKey { .. }) => {
                    return Err(ExecError::Untrusted {
                        key,
                        why: refusal.to_string(),
                    });
                }
                Err(refusal) => {
                    tracing::error!(record = %key, reason = %refusal, "a result not sealed by this reconciler decides nothing");
                    return Ok(ResultRecord::Foreign(refusal.to_string()));
                }
            }
        }
        serde_json::from_value(value)
            .map(ResultRecord::Own)
            .map_err(|e| ExecError::Invalid(format!("{key}: {e}")))
    }

    /// The op `id`, read back as this reconciler's own.
    pub async fn own_op(&self, id: &str) -> Result<Option<Op>, ExecError> {
        self.own(&tidemark_schema::control::op_key(id)).await
    }

    /// Every target of `op` with its reports and whether its agent is lost.
    pub async fn views(&self, op: &Op, now: DateTime<Utc>) -> Result<Vec<NodeView>, ExecError> {
        let reports = self.control.op_reports(&op.id).await?;
        let beats: BTreeMap<(String, String), Heartbeat> = self
            .control
            .heartbeats(&op.cluster)
            .await?
            .into_iter()
            .map(|h| ((h.replica_set.clone(), h.node.clone()), h))
            .collect();
        Ok(op
            .targets
            .iter()
            .map(|t| {
                let heartbeat = beats.get(&(t.replica_set.clone(), t.node.clone())).cloned();
                let mine: Vec<PhaseReport> = reports
                    .iter()
                    .filter(|r| r.replica_set == t.replica_set && r.node == t.node)
                    .cloned()
                    .collect();
                let lost = heartbeat
                    .as_ref()
                    .is_none_or(|h| h.is_lost(now, self.dead_after));
                NodeView {
                    replica_set: t.replica_set.clone(),
                    node: t.node.clone(),
                    reports: mine,
                    heartbeat,
                    lost,
                }
            })
            .collect())
    }

    /// Writes the op's result once; returns the result in force (ours or an earlier one).
    pub async fn decide_once(&self, mut result: OpResult) -> Result<OpResult, ExecError> {
        result.epoch = self.control.epoch();
        let key = result_key(&result.op_id);
        match self
            .control
            .create(&key, &self.sealed(&key, &result))
            .await?
        {
            Created::New => return Ok(result),
            Created::Existed => {}
        }
        match self.result_of(&result.op_id).await? {
            ResultRecord::Own(existing) => return Ok(existing),
            ResultRecord::Absent => {
                return Err(ExecError::Invalid(format!(
                    "{key} vanished after it existed"
                )));
            }
            ResultRecord::Foreign(_) => {}
        }
        // Unsealed or edited: it decides nothing. Ours replaces it (agents that saw it
        // only stopped; a result never makes a node act). Another leader doing the same
        // at once is fenced: only one of two epochs can still write.
        self.control.delete(&key).await?;
        match self
            .control
            .create(&key, &self.sealed(&key, &result))
            .await?
        {
            Created::New => Ok(result),
            Created::Existed => self.own_result(&result.op_id).await?.ok_or_else(|| {
                ExecError::Invalid(format!("{key} is not sealed by this reconciler"))
            }),
        }
    }

    /// Rewrites a one-shot's ledger record (one writer: the reconciler).
    pub async fn record(&self, record: &OneShotRecord) -> Result<(), ExecError> {
        let key = oneshot_key(record.kind.key(), &record.name);
        let record = OneShotRecord {
            epoch: self.control.epoch(),
            ..record.clone()
        };
        Ok(self.control.put(&key, &record).await?)
    }

    /// Ends a one-shot in the ledger with its outcome.
    pub async fn finish_record(
        &self,
        record: &OneShotRecord,
        status: RunStatus,
        message: String,
        now: DateTime<Utc>,
    ) -> Result<Progress, ExecError> {
        let mut r = record.clone();
        r.status = status;
        r.message = message;
        r.finished_at = Some(now);
        self.record(&r).await?;
        tracing::info!(kind = %r.kind, name = %r.name, %status, message = %r.message, "finished");
        Ok(Progress::Finished(status))
    }
}

/// A node's "host:port (rs)" for messages.
pub fn who(v: &NodeView) -> String {
    format!("{} ({})", v.node, v.replica_set)
}

/// A storage's settings as agents need them in an op (no credentials: those come from
/// each process's environment).
pub fn storage_target(
    spec: &tidemark_schema::model::BackupStorageSpec,
) -> tidemark_schema::control::StorageTarget {
    tidemark_schema::control::StorageTarget {
        url: spec.url.clone(),
        compression: spec.compression,
        compression_level: spec.compression_level,
        options: spec.options.clone().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_schema::control::{Phase, PhaseStatus};

    fn report(phase: Phase, at: DateTime<Utc>) -> PhaseReport {
        PhaseReport {
            op_id: "op".into(),
            replica_set: "rs".into(),
            node: "n".into(),
            phase,
            status: PhaseStatus::Done,
            at,
            message: String::new(),
            outcome: None,
            failed_phase: None,
            details: Default::default(),
        }
    }

    /// The agent's clock stepped back an hour between `stop` and `fallback`: the furthest
    /// phase is still `fallback` (the data was moved aside), whatever the timestamps say.
    #[test]
    fn last_phase_follows_the_phase_order_not_the_agent_clock() {
        let t = Utc::now();
        let hour = chrono::Duration::hours(1);
        let mut reports = vec![
            report(Phase::Ready, t),
            report(Phase::Stop, t + chrono::Duration::seconds(1)),
            report(Phase::Fallback, t - hour),
        ];
        reports.sort_by_key(|r| r.at);
        let v = NodeView {
            replica_set: "rs".into(),
            node: "n".into(),
            reports,
            heartbeat: None,
            lost: true,
        };
        assert_eq!(v.last_phase().map(|r| r.phase), Some(Phase::Fallback));
    }
}
