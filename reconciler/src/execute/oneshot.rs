//! Starting a one-shot exactly once: its ledger record is created (create-if-absent)
//! before its op, so a crash between the two never runs it twice, and a restarted
//! reconciler finds the record and writes the op it holds.

use chrono::{DateTime, Utc};
use serde_json::json;
use tidemark_schema::control::{
    OneShotRecord, Op, RunStatus, WaitingRecord, oneshot_key, op_key, waiting_key,
};
use tidemark_store::control::Created;

use super::context::{ExecError, Executor};

impl Executor {
    /// Records and starts a one-shot. Returns false when the ledger already had it (another
    /// pass or reconciler started it first); nothing is written then.
    pub async fn start_oneshot(
        &self,
        kind: &str,
        name: &str,
        op: &Op,
        settings: serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<bool, ExecError> {
        let record = OneShotRecord {
            kind: kind.to_string(),
            name: name.to_string(),
            op_id: op.id.clone(),
            started_at: now,
            finished_at: None,
            status: RunStatus::Running,
            message: String::new(),
            started_with: Some(json!({ "op": op, "settings": settings })),
        };
        let key = oneshot_key(&kind.to_lowercase(), name);
        if self.control.create(&key, &record).await? == Created::Existed {
            return Ok(false);
        }
        self.control.create(&op_key(&op.id), op).await?;
        self.control
            .delete(&waiting_key(&kind.to_lowercase(), name))
            .await?;
        tracing::info!(kind, name, op = %op.id, "started");
        Ok(true)
    }

    /// Records a one-shot as refused before it touched anything: it ran once, with status
    /// `error`, and no op was ever written. Returns false when the ledger already had it.
    pub async fn start_oneshot_refused(
        &self,
        kind: &str,
        name: &str,
        op: &Op,
        settings: serde_json::Value,
        why: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, ExecError> {
        let record = OneShotRecord {
            kind: kind.to_string(),
            name: name.to_string(),
            op_id: op.id.clone(),
            started_at: now,
            finished_at: Some(now),
            status: RunStatus::Error,
            message: format!("refused before touching any node: {why}"),
            started_with: Some(json!({ "op": op, "settings": settings, "refused": true })),
        };
        let key = oneshot_key(&kind.to_lowercase(), name);
        let created = self.control.create(&key, &record).await? == Created::New;
        self.control
            .delete(&waiting_key(&kind.to_lowercase(), name))
            .await?;
        Ok(created)
    }

    /// The op of a one-shot; written now from the ledger record when a crash came between
    /// the record and the op.
    pub async fn op_of(&self, record: &OneShotRecord) -> Result<Op, ExecError> {
        if let Some(op) = self.control.op(&record.op_id).await? {
            return Ok(op);
        }
        let op: Op = record
            .started_with
            .as_ref()
            .and_then(|s| serde_json::from_value(s["op"].clone()).ok())
            .ok_or_else(|| {
                ExecError::Invalid(format!(
                    "{} {:?}: its op {} is missing and the ledger record does not hold it",
                    record.kind, record.name, record.op_id
                ))
            })?;
        self.control.create(&op_key(&op.id), &op).await?;
        tracing::warn!(op = %op.id, "wrote the op of a one-shot whose start was interrupted");
        Ok(op)
    }

    /// The settings a one-shot was started with.
    pub fn settings_of<T: serde::de::DeserializeOwned>(
        record: &OneShotRecord,
    ) -> Result<T, ExecError> {
        record
            .started_with
            .as_ref()
            .and_then(|s| serde_json::from_value(s["settings"].clone()).ok())
            .ok_or_else(|| {
                ExecError::Invalid(format!(
                    "{} {:?}: the ledger record holds no readable settings",
                    record.kind, record.name
                ))
            })
    }

    /// Says why a one-shot waits (`describe-*` and `status` show it).
    pub async fn waiting(
        &self,
        kind: &str,
        name: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(), ExecError> {
        let record = WaitingRecord {
            kind: kind.to_string(),
            name: name.to_string(),
            at: now,
            reason: reason.to_string(),
        };
        Ok(self
            .control
            .put(&waiting_key(&kind.to_lowercase(), name), &record)
            .await?)
    }
}
