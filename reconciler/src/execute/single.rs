//! One-shots whose op names a single agent (a drill run, a selective restore): that
//! agent's view, and the decision taken once from its final report.

use chrono::{DateTime, Utc};
use tidemark_schema::control::{OneShotRecord, Op, OpResult, RunStatus};

use super::context::{ExecError, Executor, NodeView, Progress};

/// The op, its decision if one was taken, and its one agent's view.
pub struct Single {
    pub op: Op,
    pub decided: Option<OpResult>,
    pub view: NodeView,
}

impl Single {
    /// Whether there is nothing to decide yet: no decision and the agent still working.
    pub fn running(&self) -> bool {
        self.decided.is_none() && !self.view.settled()
    }

    /// The agent's last heartbeat, for a "stopped reporting" reason.
    pub fn last_heartbeat(&self) -> String {
        self.view
            .heartbeat
            .as_ref()
            .map_or("never".to_string(), |h| h.at.to_rfc3339())
    }
}

impl Executor {
    /// Reads the one-shot's op and its agent's view.
    pub async fn single(
        &self,
        record: &OneShotRecord,
        now: DateTime<Utc>,
    ) -> Result<Single, ExecError> {
        let op = self.op_of(record).await?;
        let decided: Option<OpResult> = self.own_result(&op.id).await?;
        let view = self
            .views(&op, now)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| {
                ExecError::Invalid(format!(
                    "{}: a {} op without a target",
                    op.id,
                    op.command.name()
                ))
            })?;
        Ok(Single { op, decided, view })
    }

    /// Decides the op once (an earlier decision wins) and ends the one-shot's record,
    /// which carries whatever figures the caller put in it.
    pub async fn end_single(
        &self,
        record: &OneShotRecord,
        op_id: &str,
        (status, reason): (RunStatus, String),
        now: DateTime<Utc>,
    ) -> Result<Progress, ExecError> {
        let result = self
            .decide_once(OpResult {
                op_id: op_id.to_string(),
                status,
                decided_at: now,
                reason,
                nodes: Vec::new(),
                epoch: None,
            })
            .await?;
        self.finish_record(record, result.status, result.reason, now)
            .await
    }
}
