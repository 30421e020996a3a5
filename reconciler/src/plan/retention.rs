//! Retention: which of a schedule's backups to keep, each decision with its reasons.
//!
//! A backup is kept if any rule keeps it: it is the newest good backup (never deleted), one
//! of the `keepLast` newest, younger than `maxAge`, or the source of a restore that has not
//! run yet. Only good (complete, done) backups of a schedule still declared are considered:
//! deleting a schedule never deletes its backups.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use tidemark_schema::control::BackupRecord;
use tidemark_schema::model::{BackupScheduleSpec, parse_max_age};

use super::model::RetentionDecision;

/// Decides for every good backup of `schedule`. `pinned` holds backups pending restores need.
pub fn decide(
    schedule: &str,
    spec: &BackupScheduleSpec,
    backups: &[BackupRecord],
    pinned: &BTreeSet<String>,
    now: DateTime<Utc>,
) -> Vec<RetentionDecision> {
    let Some(retention) = &spec.retention else {
        return Vec::new();
    };
    let max_age = retention
        .max_age
        .as_deref()
        .and_then(|m| parse_max_age(m).ok());
    let mut good: Vec<&BackupRecord> = backups
        .iter()
        .filter(|b| b.schedule.as_deref() == Some(schedule) && b.is_good())
        .collect();
    // Newest first; the name breaks ties so the order never depends on listing order.
    good.sort_by(|a, b| (b.started_at, &b.name).cmp(&(a.started_at, &a.name)));
    let keep_last = retention.keep_last.max(1) as usize;
    good.iter()
        .enumerate()
        .map(|(i, b)| {
            let age = now - b.started_at;
            let mut reasons = Vec::new();
            if i == 0 {
                reasons.push("newest good backup of the schedule: never deleted".to_string());
            }
            if i < keep_last {
                reasons.push(format!(
                    "one of the {keep_last} newest (keepLast): #{}",
                    i + 1
                ));
            }
            if let Some(m) = &max_age
                && age.to_std().map_or(true, |a| a < m.duration)
            {
                reasons.push(format!(
                    "younger than maxAge {} (age {})",
                    m.text,
                    human_age(age)
                ));
            }
            if pinned.contains(&b.name) {
                reasons.push("source of a Restore that is pending or running".to_string());
            }
            let keep = !reasons.is_empty();
            if !keep {
                let beyond = format!("beyond keepLast {keep_last} (#{} newest)", i + 1);
                reasons.push(match &max_age {
                    Some(m) => format!(
                        "{beyond} and older than maxAge {} (age {})",
                        m.text,
                        human_age(age)
                    ),
                    None => beyond,
                });
            }
            RetentionDecision {
                backup: b.name.clone(),
                schedule: schedule.to_string(),
                keep,
                reasons,
                orphaned: false,
            }
        })
        .collect()
}

/// `41d 3h`, `5h 2m`, `40s`.
pub fn human_age(age: chrono::Duration) -> String {
    let s = age.num_seconds().max(0);
    let (d, h, m) = (s / 86_400, (s % 86_400) / 3600, (s % 3600) / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}
