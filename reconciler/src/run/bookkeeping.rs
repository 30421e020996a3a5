//! The bookkeeping a pass does beside its plan: schedule and drill records, waiting
//! records that no longer apply, and the shown backoff of a failing one-shot.

use chrono::{DateTime, Utc};
use tidemark_schema::control::{OneShotKind, Retry, retry_key, schedule_key};
use tidemark_schema::validate::DesiredState;
use tidemark_store::control::ObservedState;

use crate::execute::{ExecError, Executor};
use crate::plan::wanted_record;

/// Shows a one-shot's backoff in `ledger/retry/<kind>/<name>.json` for `describe-*` and
/// `status`, or removes it. Its own key, written only by the leader's loop: rewriting the
/// ledger record instead could race another reconciler finishing it and make an ended
/// one-shot run again. Best effort: the backoff itself is kept in memory.
pub(super) async fn show_retry(
    ex: &Executor,
    kind: OneShotKind,
    name: &str,
    retry: Option<&Retry>,
) -> Result<(), ExecError> {
    let key = retry_key(kind.key(), name);
    match retry {
        Some(r) => ex.control.put(&key, r).await?,
        None => ex.control.delete(&key).await?,
    }
    Ok(())
}

/// Brings every declared schedule's and drill's ledger record up to date (see
/// `wanted_record`), and removes the records of those no longer declared, so that one
/// declared again later owes nothing from before.
pub(super) async fn sync_schedules(
    ex: &Executor,
    desired: &DesiredState,
    observed: &mut ObservedState,
    now: DateTime<Utc>,
) -> Result<(), ExecError> {
    for (name, spec) in desired.schedules() {
        if let Some(mut record) = wanted_record(name, spec, observed.schedules.get(name), now) {
            record.epoch = ex.control.epoch();
            ex.control.put(&schedule_key(name), &record).await?;
            tracing::info!(schedule = name, since = %record.since, "schedule recorded");
            observed.schedules.insert(name.to_string(), record);
        }
    }
    for (name, spec) in desired.drills() {
        if let Some(mut record) =
            crate::plan::wanted_drill_record(name, spec, observed.drills.get(name), now)
        {
            record.epoch = ex.control.epoch();
            ex.control
                .put(&tidemark_schema::control::drill_key(name), &record)
                .await?;
            tracing::info!(drill = name, since = %record.since, "drill recorded");
            observed.drills.insert(name.to_string(), record);
        }
    }
    let gone: Vec<String> = observed
        .drills
        .keys()
        .filter(|n| desired.drill(n).is_none())
        .cloned()
        .collect();
    for name in gone {
        ex.control
            .delete(&tidemark_schema::control::drill_key(&name))
            .await?;
        observed.drills.remove(&name);
    }
    let gone: Vec<String> = observed
        .schedules
        .keys()
        .filter(|n| desired.schedule(n).is_none())
        .cloned()
        .collect();
    for name in gone {
        ex.control.delete(&schedule_key(&name)).await?;
        observed.schedules.remove(&name);
    }
    Ok(())
}

/// A slot that waited (its cluster busy) and was then overtaken by a newer slot is missed,
/// not waiting: its waiting record goes, so `status` and `describe-backup` stop showing it.
pub(super) async fn clear_superseded_waits(
    ex: &Executor,
    schedules: &[crate::plan::ScheduleState],
) -> Result<(), ExecError> {
    if schedules.is_empty() {
        return Ok(()); // no listing on every pass of a control plane without schedules
    }
    let waiting = ex.control.keys("ledger/waiting/backup").await?;
    for s in schedules {
        let prefix = format!("ledger/waiting/backup/{}-", s.schedule);
        for key in &waiting {
            let Some(stamp) = key
                .strip_prefix(&prefix)
                .and_then(|k| k.strip_suffix(".json"))
            else {
                continue;
            };
            // Only this schedule's slot names (another schedule may share the prefix).
            let is_slot = chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%SZ").is_ok();
            let current = s
                .due_backup
                .as_deref()
                .is_some_and(|due| key.ends_with(&format!("/{due}.json")));
            if is_slot && !current {
                ex.control.delete(key).await?;
            }
        }
    }
    Ok(())
}

/// A drill run's waiting record stays only while that run is its drill's due one: a run
/// overtaken by the next slot, and every run of a drill suspended or deleted, is not
/// waiting any more.
pub(super) async fn clear_drill_waits(
    ex: &Executor,
    drills: &[crate::plan::DrillState],
    had_drills: bool,
) -> Result<(), ExecError> {
    if drills.is_empty() && !had_drills {
        return Ok(()); // no listing on every pass of a control plane without drills
    }
    let prefix = format!("ledger/waiting/{}/", crate::plan::DRILL_KIND.key());
    for key in ex.control.keys(prefix.trim_end_matches('/')).await? {
        let Some(run) = key
            .strip_prefix(&prefix)
            .and_then(|k| k.strip_suffix(".json"))
        else {
            continue;
        };
        if !drills.iter().any(|d| d.due_run.as_deref() == Some(run)) {
            ex.control.delete(&key).await?;
        }
    }
    Ok(())
}

/// Leaves out of what a pass plans with the schedule and drill records it could not bring
/// up to date (another process keeps them, or the write failed): a record written for an
/// older spec (another cron or time zone, a suspension since lifted) would have the new
/// spec owe every slot since that record's start. Without a record nothing is owed yet.
pub(super) fn drop_stale_records(
    desired: &DesiredState,
    observed: &mut ObservedState,
    now: DateTime<Utc>,
) {
    observed.schedules.retain(|name, record| {
        desired
            .schedule(name)
            .is_none_or(|spec| wanted_record(name, spec, Some(record), now).is_none())
    });
    observed.drills.retain(|name, record| {
        desired.drill(name).is_none_or(|spec| {
            crate::plan::wanted_drill_record(name, spec, Some(record), now).is_none()
        })
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_schema::validate::{SourceFile, validate_files};

    /// A schedule resumed (or re-timed) whose record partition 0's leader has not
    /// rewritten yet owes nothing from before: its old record is left out of the plan.
    #[test]
    fn a_record_written_for_an_older_spec_is_left_out() {
        let yaml = "\
apiVersion: tidemark/v1
kind: BackupSchedule
metadata: {name: nightly}
spec: {cluster: c, storage: s, type: physical, cron: '0 1 * * *'}
---
apiVersion: tidemark/v1
kind: BackupSchedule
metadata: {name: hourly}
spec: {cluster: c, storage: s, type: physical, cron: '0 * * * *'}
";
        let desired = validate_files(&[SourceFile {
            path: "s.yaml".into(),
            bytes: yaml.as_bytes().to_vec(),
        }])
        .state;
        let now: DateTime<Utc> = "2026-12-05T03:00:00Z".parse().unwrap();
        let record =
            |name: &str, cron: &str, suspended: bool| tidemark_schema::control::ScheduleRecord {
                schedule: name.into(),
                since: "2026-11-01T00:00:00Z".parse().unwrap(),
                cron: cron.into(),
                timezone: "UTC".into(),
                suspended,
                epoch: None,
            };
        let mut observed = ObservedState::default();
        observed
            .schedules
            .insert("nightly".into(), record("nightly", "0 1 * * *", true));
        observed
            .schedules
            .insert("hourly".into(), record("hourly", "0 * * * *", false));
        observed
            .schedules
            .insert("gone".into(), record("gone", "0 * * * *", false));
        drop_stale_records(&desired, &mut observed, now);
        let kept: Vec<&String> = observed.schedules.keys().collect();
        assert_eq!(kept, ["gone", "hourly"], "nightly was recorded suspended");
    }
}
