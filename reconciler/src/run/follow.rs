//! Following one one-shot that has not ended: a step of its pipeline per pass, or a wait
//! while its failing step backs off (kube-rs's error policy), shown in its retry record.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use tidemark_schema::control::{OneShotKind, OneShotRecord, Retry};
use tidemark_schema::validate::DesiredState;

use super::backoff;
use super::bookkeeping::show_retry;
use super::pass::PassReport;
use crate::execute::{Executor, Progress};
use crate::{backup, restore};

/// One one-shot not ended yet, advanced by a pass with its partition's executor.
pub(super) struct OneShotStep<'a> {
    pub ex: &'a Executor,
    pub kind: OneShotKind,
    pub name: &'a str,
    pub record: &'a OneShotRecord,
    pub desired: Option<&'a DesiredState>,
    pub now: DateTime<Utc>,
}

impl OneShotStep<'_> {
    /// Moves the one-shot on one step, or waits out its backoff; a failing step backs off
    /// (kube-rs's error policy) and is shown in its retry record.
    pub async fn advance(
        &self,
        retries: &mut BTreeMap<(OneShotKind, String), Retry>,
        report: &mut PassReport,
    ) {
        let (kind, name, record, desired, now) =
            (self.kind, self.name, self.record, self.desired, self.now);
        let key = (kind, name.to_string());
        if record.is_final() {
            // Ended (here or by another reconciler) while its step was failing.
            if retries.contains_key(&key) {
                match show_retry(self.ex, kind, name, None).await {
                    Ok(()) => drop(retries.remove(&key)),
                    Err(e) => report.errors.push(format!("{kind} {name}: {e}")),
                }
            }
            return;
        }
        if let Some(retry) = retries.get(&key).filter(|r| !backoff::due(Some(r), now)) {
            report.running.push(format!(
                "{kind} {name} (failed {} time(s); next try at {})",
                retry.failures,
                retry.next_at.to_rfc3339()
            ));
            return;
        }
        let progress = match kind {
            OneShotKind::Restore if crate::selective::is_selective(record) => {
                crate::selective::advance(self.ex, record, now).await
            }
            OneShotKind::Restore => restore::advance(self.ex, record, desired, now).await,
            OneShotKind::Backup => backup::advance(self.ex, record, now).await,
            OneShotKind::RestoreDrill => crate::drill::advance(self.ex, record, now).await,
        };
        let outcome = match &progress {
            Ok(_) => None,
            Err(e) => Some(e.to_string()),
        };
        match progress {
            Ok(Progress::Running) => report.running.push(format!("{kind} {name}")),
            Ok(Progress::Finished(s)) => report.finished.push(format!("{kind} {name}: {s}")),
            Err(e) => {
                report.running.push(format!("{kind} {name}"));
                report.errors.push(format!("{kind} {name}: {e}"));
            }
        }
        let shown = match outcome {
            Some(e) => {
                let retry = backoff::failed(retries.get(&key), e, now);
                tracing::warn!(%kind, %name, failures = retry.failures, next = %retry.next_at, error = %retry.error, "one-shot step failed; backing off");
                let shown = show_retry(self.ex, kind, name, Some(&retry)).await;
                retries.insert(key, retry);
                shown
            }
            None if retries.contains_key(&key) => {
                let shown = show_retry(self.ex, kind, name, None).await;
                if shown.is_ok() {
                    retries.remove(&key);
                }
                shown
            }
            None => Ok(()),
        };
        if let Err(e) = shown {
            report.errors.push(format!("{kind} {name}: {e}"));
        }
    }
}
