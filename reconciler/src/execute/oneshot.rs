//! Starting a one-shot exactly once: its ledger record is created (create-if-absent)
//! before its op, so a crash between the two never runs it twice, and a restarted
//! reconciler finds the record and writes the op it holds.

use chrono::{DateTime, Utc};
use serde_json::json;
use tidemark_schema::control::{
    OneShotRecord, Op, RunStatus, WaitingRecord, archive_key, oneshot_key, op_key, waiting_key,
};
use tidemark_store::control::Created;

use super::context::{ExecError, Executor};

impl Executor {
    /// Records and starts a one-shot: the ledger record (create-if-absent) first, then its
    /// op. With `refused`, the one-shot is recorded as ended with `error` before it touched
    /// anything, and no op is written at all. Returns false when the ledger already had it
    /// (another pass or reconciler came first); nothing more is written then.
    pub async fn start_oneshot(
        &self,
        kind: &str,
        name: &str,
        op: &Op,
        settings: serde_json::Value,
        refused: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool, ExecError> {
        let record = OneShotRecord {
            kind: kind.to_string(),
            name: name.to_string(),
            op_id: op.id.clone(),
            started_at: now,
            finished_at: refused.map(|_| now),
            status: if refused.is_some() {
                RunStatus::Error
            } else {
                RunStatus::Running
            },
            message: refused
                .map(|why| format!("refused before touching any node: {why}"))
                .unwrap_or_default(),
            started_with: Some(
                json!({ "op": op, "settings": settings, "refused": refused.is_some() }),
            ),
            epoch: None,
            drill: None,
        };
        let mut record = record;
        record.epoch = self.control.epoch();
        let op = &Op {
            epoch: self.control.epoch(),
            ..op.clone()
        };
        if let Some(with) = record.started_with.as_mut() {
            with["op"] = json!(op);
        }
        let key = oneshot_key(&kind.to_lowercase(), name);
        if self.control.create(&key, &record).await? == Created::Existed {
            return Ok(false);
        }
        if refused.is_none() {
            self.control.create(&op_key(&op.id), op).await?;
        }
        self.control
            .delete(&waiting_key(&kind.to_lowercase(), name))
            .await?;
        tracing::info!(kind, name, op = %op.id, refused = refused.is_some(), "started");
        Ok(true)
    }

    /// The op of a one-shot; written now from the ledger record when a crash came between
    /// the record and the op.
    pub async fn op_of(&self, record: &OneShotRecord) -> Result<Op, ExecError> {
        if let Some(op) = self.control.op(&record.op_id).await? {
            return Ok(op);
        }
        // Never write the op of a one-shot that has ended (its op may be compacted away):
        // agents would run it again.
        if self.has_ended(record).await? {
            return Err(ExecError::Invalid(format!(
                "{} {:?}: its op {} is gone and the one-shot has ended or been replaced; \
                 not writing it again",
                record.kind, record.name, record.op_id
            )));
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

    /// Whether a one-shot has ended (or its record was replaced), read afresh rather than
    /// from the caller's snapshot, or its op was compacted. Checked before (re)writing any
    /// op of it: an op written again after its end would be run again by the agents.
    pub async fn has_ended(&self, record: &OneShotRecord) -> Result<bool, ExecError> {
        let fresh: Option<OneShotRecord> = self
            .control
            .get(&oneshot_key(&record.kind.to_lowercase(), &record.name))
            .await?;
        Ok(fresh
            .as_ref()
            .is_none_or(|r| r.is_final() || r.op_id != record.op_id)
            || self.control.exists(&archive_key(&record.op_id)).await?)
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
        let key = waiting_key(&kind.to_lowercase(), name);
        // Passes run every few hundred milliseconds while something waits: write only when
        // the reason changes, so `at` says since when, and a long wait costs reads, not puts.
        if let Ok(Some(old)) = self.control.get::<WaitingRecord>(&key).await
            && old.reason == reason
        {
            return Ok(());
        }
        let record = WaitingRecord {
            kind: kind.to_string(),
            name: name.to_string(),
            at: now,
            reason: reason.to_string(),
        };
        Ok(self.control.put(&key, &record).await?)
    }
}
