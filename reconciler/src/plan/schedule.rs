//! Which slot of a schedule is due, which were missed, and how fresh its newest good
//! backup is: pure functions of the schedule, its ledger record and the clock.
//!
//! A slot is claimed by the create-if-absent ledger record of the backup named after it
//! (`<schedule>-<slot time>`), written before the backup's op: a restart, a crash or a
//! second reconciler finds the claim and never runs the slot twice. Only the latest slot
//! at or before now is ever due (it is by definition within one interval of the cron);
//! earlier slots nobody claimed since the schedule's `since` are reported as missed.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tidemark_schema::control::OneShotKind;
use tidemark_schema::control::{BackupRecord, OneShotRecord, ScheduleRecord};
use tidemark_schema::model::{BackupScheduleSpec, parse_max_age, scheduled_backup_name};

use std::collections::BTreeMap;

/// How many slots back from now are looked at for missed ones: a seconds-level cron left
/// alone for a day must not cost every pass 86,400 cron steps.
pub const MISSED_LOOKBACK: usize = 1000;

/// A schedule as the reconciler runs it, for `diff`, `status` and the planner.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleState {
    pub schedule: String,
    pub cluster: String,
    pub suspended: bool,
    /// Slots count from here; `None` until the reconciler first recorded the schedule.
    pub since: Option<DateTime<Utc>>,
    pub next_run: Option<DateTime<Utc>>,
    /// The slot to take now, unclaimed and not older than one interval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due_slot: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due_backup: Option<String>,
    /// Earlier slots since `since` that no backup claimed (counted back at most
    /// `MISSED_LOOKBACK` slots), newest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missed_slots: Vec<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_good_backup: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_good_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpo: Option<String>,
    /// The newest good backup is older than the RPO (or there is none and the schedule is
    /// older than its RPO).
    pub rpo_breached: bool,
}

/// [`schedule_state`] from what was observed: the planner and `status` read it alike.
pub fn observed_schedule_state(
    name: &str,
    spec: &BackupScheduleSpec,
    observed: &crate::control::ObservedState,
    now: DateTime<Utc>,
) -> ScheduleState {
    schedule_state(
        name,
        spec,
        observed.schedules.get(name),
        &observed.oneshots,
        &observed.backups,
        now,
    )
}

/// Works out a schedule's state at `now`.
pub fn schedule_state(
    name: &str,
    spec: &BackupScheduleSpec,
    record: Option<&ScheduleRecord>,
    oneshots: &BTreeMap<(OneShotKind, String), OneShotRecord>,
    backups: &[BackupRecord],
    now: DateTime<Utc>,
) -> ScheduleState {
    let since = record.map(|r| r.since);
    let claimed = |slot: DateTime<Utc>| {
        oneshots.contains_key(&(OneShotKind::Backup, scheduled_backup_name(name, slot)))
    };
    let mut due_slot = None;
    let mut missed_slots = Vec::new();
    // Until the record exists (the first pass that sees the schedule writes it), and while
    // suspended, nothing is owed.
    if let (Some(since), false) = (since, spec.suspend) {
        // The walk is capped in slots looked at, claimed or not: a minutely cron a year
        // old must not cost every pass half a million cron steps.
        for (i, s) in spec
            .runs_back_from(now, since, MISSED_LOOKBACK)
            .into_iter()
            .enumerate()
        {
            if !claimed(s) {
                if i == 0 {
                    due_slot = Some(s);
                } else {
                    missed_slots.push(s);
                }
            }
        }
    }
    let last_good = backups
        .iter()
        .filter(|b| b.schedule.as_deref() == Some(name) && b.cluster == spec.cluster && b.is_good())
        .max_by(|a, b| a.recency().cmp(&b.recency()));
    let rpo = spec.rpo.as_deref().and_then(|r| parse_max_age(r).ok());
    let rpo_breached = rpo.as_ref().is_some_and(|rpo| {
        let window = chrono::Duration::from_std(rpo.duration).unwrap_or(chrono::Duration::MAX);
        match last_good {
            Some(b) => now - b.data_time() > window,
            None => since.is_some_and(|s| now - s > window),
        }
    });
    ScheduleState {
        schedule: name.to_string(),
        cluster: spec.cluster.clone(),
        suspended: spec.suspend,
        since,
        next_run: spec.next_run_after(now).filter(|_| !spec.suspend),
        due_backup: due_slot.map(|s| scheduled_backup_name(name, s)),
        due_slot,
        missed_slots,
        last_good_backup: last_good.map(|b| b.name.clone()),
        last_good_at: last_good.map(|b| b.started_at),
        rpo: spec.rpo.clone(),
        rpo_breached,
    }
}

/// The record a schedule should have now: `since` moves to `now` when the schedule is new,
/// resumed, or its cron or time zone changed (slots of the old cron are not owed).
/// `None` when the stored record is already right.
pub fn wanted_record(
    name: &str,
    spec: &BackupScheduleSpec,
    stored: Option<&ScheduleRecord>,
    now: DateTime<Utc>,
) -> Option<ScheduleRecord> {
    wanted_cron_record(
        name,
        (&spec.cron, &spec.timezone, spec.suspend),
        stored,
        now,
    )
}

/// [`wanted_record`] for anything on a cron (schedules and drills): `(cron, timezone,
/// suspended)` as declared now.
pub fn wanted_cron_record(
    name: &str,
    (cron, timezone, suspended): (&str, &str, bool),
    stored: Option<&ScheduleRecord>,
    now: DateTime<Utc>,
) -> Option<ScheduleRecord> {
    match stored {
        Some(s) if s.cron == cron && s.timezone == timezone && s.suspended == suspended => None,
        _ => Some(ScheduleRecord {
            schedule: name.to_string(),
            since: now,
            cron: cron.to_string(),
            timezone: timezone.to_string(),
            suspended,
            epoch: None,
        }),
    }
}
