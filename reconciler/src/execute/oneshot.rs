//! Starting a one-shot exactly once: its ledger record is created (create-if-absent)
//! before its op, so a crash between the two never runs it twice, and a restarted
//! reconciler finds the record and writes the op it holds.

use chrono::{DateTime, Utc};
use serde_json::json;
use tidemark_schema::control::{
    BackupRecord, CancelRequest, OneShotKind, OneShotRecord, Op, RunStatus, WaitingRecord,
    archive_key, cancel_key, catalog_key, oneshot_key, op_key, waiting_key,
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
        kind: OneShotKind,
        name: &str,
        op: &Op,
        settings: serde_json::Value,
        refused: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool, ExecError> {
        let record = OneShotRecord {
            kind,
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
            selective: None,
            forgotten: None,
        };
        let mut record = record;
        record.epoch = self.control.epoch();
        let op = &Op {
            epoch: self.control.epoch(),
            ..op.clone()
        };
        // Sealed, so that an interrupted start is finished only with the op this
        // reconciler made, never one someone wrote into the ledger record.
        // The settings too: follow-up decisions (fallback, partly done, start nodes) are
        // taken from them, and sealed again as steps.
        if let Some(with) = record.started_with.as_mut() {
            with["op"] = self.sealed(&op_key(&op.id), op);
            let settings = with["settings"].clone();
            with["settings"] = self.sealed(&settings_key(kind, name), &settings);
        }
        let key = oneshot_key(kind.key(), name);
        if self.control.create(&key, &record).await? == Created::Existed {
            return Ok(false);
        }
        if refused.is_none() {
            if let Some(why) = self.source_deleted(&record).await? {
                self.finish_record(&record, RunStatus::Error, why, now)
                    .await?;
                self.control.delete(&waiting_key(kind.key(), name)).await?;
                return Ok(true);
            }
            // Rung whatever the write said: one that failed may still have landed.
            let key = op_key(&op.id);
            let written = self.control.create(&key, &self.sealed(&key, op)).await;
            self.ring(&op.cluster).await;
            if written.is_err() {
                self.bell.again_next_pass(&op.cluster);
            }
            written?;
        }
        self.control.delete(&waiting_key(kind.key(), name)).await?;
        tracing::info!(%kind, name, op = %op.id, refused = refused.is_some(), "started");
        Ok(true)
    }

    /// The op of a one-shot; written now from the ledger record when a crash came between
    /// the record and the op.
    pub async fn op_of(&self, record: &OneShotRecord) -> Result<Op, ExecError> {
        if let Some(op) = self.own_op(&record.op_id).await? {
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
        let stored = record
            .started_with
            .as_ref()
            .map(|s| s["op"].clone())
            .unwrap_or_default();
        if !stored.is_null() {
            self.check_own(&op_key(&record.op_id), &stored)
                .map_err(|e| match e {
                    ExecError::Untrusted { why, .. } => ExecError::Untrusted {
                        key: format!(
                            "the op held by ledger record {} {:?}",
                            record.kind, record.name
                        ),
                        why,
                    },
                    other => other,
                })?;
        }
        let op: Op = serde_json::from_value::<Op>(stored)
            .ok()
            // Written now by this leader, under its epoch: agents that saw it refuse lower.
            .map(|op| Op {
                epoch: self.control.epoch().or(op.epoch),
                ..op
            })
            .ok_or_else(|| {
                ExecError::Invalid(format!(
                    "{} {:?}: its op {} is missing and the ledger record does not hold it",
                    record.kind, record.name, record.op_id
                ))
            })?;
        if let Some(why) = self.source_deleted(record).await? {
            self.finish_record(record, RunStatus::Error, why.clone(), Utc::now())
                .await?;
            return Err(ExecError::Invalid(why));
        }
        let key = op_key(&op.id);
        let written = self.control.create(&key, &self.sealed(&key, &op)).await;
        self.ring(&op.cluster).await;
        if written.is_err() {
            self.bell.again_next_pass(&op.cluster);
        }
        written?;
        tracing::warn!(op = %op.id, "wrote the op of a one-shot whose start was interrupted");
        Ok(op)
    }

    /// For a restore whose ledger record was just written: `Some(why)` when its backup is
    /// being deleted or gone. Its record pins the backup from now on (`forget-backup` and
    /// retention look for it after marking the backup `deleting`), so a deletion that
    /// began before the record shows here, and one that begins after it sees the record:
    /// never both missed. A restore that loses the race ends refused, nothing touched.
    async fn source_deleted(&self, record: &OneShotRecord) -> Result<Option<String>, ExecError> {
        if record.kind != OneShotKind::Restore {
            return Ok(None);
        }
        let Some(backup) = record
            .started_with
            .as_ref()
            .and_then(|s| s["settings"]["backup"].as_str())
        else {
            return Ok(None);
        };
        let entry: Option<BackupRecord> = self.control.get(&catalog_key(backup)).await?;
        Ok(match entry {
            None => Some(format!(
                "refused before touching any node: backup {backup:?} is no longer in the \
                 catalog (deleted while the restore was starting)"
            )),
            Some(b) => b.deleting.map(|at| {
                format!(
                    "refused before touching any node: backup {backup:?} is being deleted \
                     (marked at {}, by retention or forget-backup)",
                    at.to_rfc3339()
                )
            }),
        })
    }

    /// Whether a one-shot has ended (or its record was replaced), read afresh rather than
    /// from the caller's snapshot, or its op was compacted. Checked before (re)writing any
    /// op of it: an op written again after its end would be run again by the agents.
    pub async fn has_ended(&self, record: &OneShotRecord) -> Result<bool, ExecError> {
        let fresh: Option<OneShotRecord> = self
            .control
            .get(&oneshot_key(record.kind.key(), &record.name))
            .await?;
        Ok(fresh
            .as_ref()
            .is_none_or(|r| r.is_final() || r.op_id != record.op_id)
            || self.control.exists(&archive_key(&record.op_id)).await?)
    }

    /// The operator's request to cancel a one-shot, if any. Only `tidemark cancel-*` writes
    /// it, so one that does not parse was still meant as a cancel: it counts as one, on
    /// the safe side (before `go` nothing is touched, after it only a fallback is put
    /// back), rather than blocking the one-shot on every pass.
    pub async fn cancel_request(
        &self,
        record: &OneShotRecord,
    ) -> Result<Option<CancelRequest>, ExecError> {
        use tidemark_store::control::ControlError;
        let key = cancel_key(record.kind.key(), &record.name);
        match self.control.get::<CancelRequest>(&key).await {
            Ok(request) => Ok(request),
            Err(ControlError::Corrupt { message, .. }) => {
                tracing::warn!(%key, error = %message, "an unreadable cancel request counts as a cancel");
                Ok(Some(CancelRequest {
                    kind: record.kind.key().to_string(),
                    name: record.name.clone(),
                    at: record.started_at,
                    by: format!("an unreadable request at {key}"),
                }))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The settings a one-shot was started with.
    /// [`Executor::settings_of`], read back only when they carry this reconciler's seal.
    pub fn own_settings<T: serde::de::DeserializeOwned>(
        &self,
        record: &OneShotRecord,
    ) -> Result<T, ExecError> {
        let stored = record
            .started_with
            .as_ref()
            .map(|s| s["settings"].clone())
            .unwrap_or_default();
        self.check_own(&settings_key(record.kind, &record.name), &stored)?;
        Self::settings_of(record)
    }

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
        kind: OneShotKind,
        name: &str,
        reason: &str,
        target: Option<tidemark_schema::control::ReplayTarget>,
        now: DateTime<Utc>,
    ) -> Result<(), ExecError> {
        let key = waiting_key(kind.key(), name);
        // Passes run every few hundred milliseconds while something waits: write only when
        // the reason changes, so `at` says since when, and a long wait costs reads, not puts.
        // An unreadable record fails the pass rather than restart `since`: a restore
        // declared for the future must not look newly declared after a storage error.
        let old = self
            .control
            .get::<WaitingRecord>(&key)
            .await?
            .filter(|o| o.target == target);
        if old.as_ref().is_some_and(|o| o.reason == reason) {
            return Ok(());
        }
        let record = WaitingRecord {
            kind,
            name: name.to_string(),
            at: now,
            reason: reason.to_string(),
            since: Some(old.map_or(now, |o| o.since.unwrap_or(o.at))),
            target,
        };
        Ok(self.control.put(&key, &record).await?)
    }
}

/// What a one-shot's settings are sealed under: its ledger key and `#settings`, so that a
/// seal cannot be moved between records nor between a record's op and its settings.
fn settings_key(kind: OneShotKind, name: &str) -> String {
    format!("{}#settings", oneshot_key(kind.key(), name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_schema::control::{OpCommand, OpResult};
    use tidemark_schema::model::BackupType;

    fn executor(dir: &std::path::Path) -> Executor {
        Executor::on_directory(dir)
    }

    fn catalog_entry(deleting: Option<DateTime<Utc>>) -> BackupRecord {
        BackupRecord {
            name: "b1".into(),
            cluster: "c1".into(),
            storage: "s".into(),
            schedule: None,
            backup_type: BackupType::Physical,
            status: RunStatus::Done,
            complete: true,
            started_at: Utc::now(),
            finished_at: None,
            last_write: None,
            replica_sets: Vec::new(),
            deleting,
            verification: None,
            incremental: None,
        }
    }

    fn restore_op(now: DateTime<Utc>) -> Op {
        Op {
            id: "op-r1".into(),
            created_at: now,
            cluster: "c1".into(),
            targets: Vec::new(),
            command: OpCommand::RemoveFallback {
                restore_op: "x".into(),
            },
            deadline: None,
            epoch: None,
            cause: None,
        }
    }

    /// `forget-backup` marked the backup between the planner's read of the catalog and
    /// the restore's ledger record: the restore ends refused and no op reaches an agent.
    #[tokio::test]
    async fn a_restore_whose_backup_is_being_deleted_never_writes_its_op() {
        let dir = tempfile::TempDir::new().unwrap();
        let ex = executor(dir.path());
        let now = Utc::now();
        for (name, entry) in [("r1", Some(catalog_entry(Some(now)))), ("r2", None)] {
            if let Some(e) = &entry {
                ex.control.put(&catalog_key("b1"), e).await.unwrap();
            } else {
                ex.control.delete(&catalog_key("b1")).await.unwrap();
            }
            let op = Op {
                id: format!("op-{name}"),
                ..restore_op(now)
            };
            let settings = json!({"backup": "b1"});
            assert!(
                ex.start_oneshot(OneShotKind::Restore, name, &op, settings, None, now)
                    .await
                    .unwrap()
            );
            let record: OneShotRecord = ex
                .control
                .get(&oneshot_key("restore", name))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(record.status, RunStatus::Error, "{name}: {record:?}");
            assert!(record.message.contains("b1"), "{}", record.message);
            assert!(!ex.control.exists(&op_key(&op.id)).await.unwrap(), "{name}");
        }
        // A backup that is not being deleted starts as usual.
        ex.control
            .put(&catalog_key("b1"), &catalog_entry(None))
            .await
            .unwrap();
        let op = restore_op(now);
        ex.start_oneshot(
            OneShotKind::Restore,
            "r3",
            &op,
            json!({"backup": "b1"}),
            None,
            now,
        )
        .await
        .unwrap();
        assert!(ex.control.exists(&op_key(&op.id)).await.unwrap());
    }

    /// A writer of the bucket edits a running one-shot's ledger record (or writes one)
    /// so that its op, missing from `ops/`, is theirs: the reconciler must not write and
    /// seal it for them. Its own interrupted start is still finished.
    #[tokio::test]
    async fn an_op_someone_put_in_a_ledger_record_is_never_written_nor_sealed() {
        let dir = tempfile::TempDir::new().unwrap();
        let ex = Executor {
            signer: Some(std::sync::Arc::new(
                tidemark_schema::control::signature::Signer::generate(),
            )),
            ..executor(dir.path())
        };
        let now = Utc::now();
        let ours = restore_op(now);
        assert!(
            ex.start_oneshot(OneShotKind::Restore, "r1", &ours, json!({}), None, now)
                .await
                .unwrap()
        );
        let key = oneshot_key("restore", "r1");
        let mut record: OneShotRecord = ex.control.get(&key).await.unwrap().unwrap();
        // Crash between the record and the op: the op is written again, sealed.
        ex.control.delete(&op_key(&ours.id)).await.unwrap();
        assert_eq!(ex.op_of(&record).await.unwrap().id, ours.id);
        let written: serde_json::Value = ex.control.get(&op_key(&ours.id)).await.unwrap().unwrap();
        assert!(
            ex.signer
                .as_ref()
                .unwrap()
                .verify_own(&op_key(&ours.id), &written)
                .is_ok()
        );
        // The attacker's version: same id, a command of their choosing, no seal of ours.
        ex.control.delete(&op_key(&ours.id)).await.unwrap();
        let theirs = Op {
            command: OpCommand::WipeForInitialSync {
                restore_op: "x".into(),
            },
            ..ours.clone()
        };
        record.started_with.as_mut().unwrap()["op"] = json!(theirs);
        ex.control.put(&key, &record).await.unwrap();
        let err = ex.op_of(&record).await.unwrap_err();
        assert!(matches!(err, ExecError::Untrusted { .. }), "{err}");
        assert!(!ex.control.exists(&op_key(&ours.id)).await.unwrap());
    }

    /// A `result.json` someone wrote before the reconciler decided: it decides nothing,
    /// and the reconciler's own (sealed) result replaces it.
    #[tokio::test]
    async fn a_result_someone_else_wrote_is_replaced_by_the_reconcilers_own() {
        let dir = tempfile::TempDir::new().unwrap();
        let signer = tidemark_schema::control::signature::Signer::generate();
        let ex = Executor {
            signer: Some(std::sync::Arc::new(signer.clone())),
            ..executor(dir.path())
        };
        let key = tidemark_schema::control::result_key("op1");
        let forged =
            json!({"opId": "op1", "status": "error", "decidedAt": Utc::now(), "reason": "forged"});
        ex.control.put(&key, &forged).await.unwrap();
        let ours = OpResult {
            op_id: "op1".into(),
            status: RunStatus::Done,
            decided_at: Utc::now(),
            reason: "every node done".into(),
            nodes: Vec::new(),
            epoch: None,
        };
        let decided = ex.decide_once(ours).await.unwrap();
        assert_eq!(decided.status, RunStatus::Done);
        let stored: serde_json::Value = ex.control.get(&key).await.unwrap().unwrap();
        assert!(signer.verify_own(&key, &stored).is_ok(), "{stored}");
        assert!(matches!(
            ex.own::<OpResult>(&key).await,
            Ok(Some(OpResult {
                status: RunStatus::Done,
                ..
            }))
        ));
    }
}
