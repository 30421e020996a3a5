//! Retention: which of a schedule's backups to keep, each decision with its reasons, in
//! restic's terms (`forget --keep-*`).
//!
//! A good backup is kept if any rule keeps it: it is the newest good backup (never
//! deleted); one of the `keepLast` newest; the newest of one of the last `keepHourly`
//! hours (`keepDaily` days, `keepWeekly` ISO weeks, `keepMonthly` months, `keepYearly`
//! years) that have a backup, counted in the schedule's time zone; younger than `maxAge`;
//! or the source of a restore that has not run yet. Only good (complete, done) backups of
//! a schedule still declared are considered: deleting a schedule never deletes its
//! backups.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, Utc};
use chrono_tz::Tz;
use tidemark_schema::control::BackupRecord;
use tidemark_schema::model::{BackupScheduleSpec, Retention, parse_max_age, parse_timezone};

use super::model::RetentionDecision;

/// A calendar tier: its YAML name, and the bucket a local time falls in.
struct Tier {
    field: &'static str,
    unit: &'static str,
    count: Option<u32>,
    bucket: fn(&DateTime<Tz>) -> String,
}

fn tiers(r: &Retention) -> [Tier; 5] {
    [
        Tier {
            field: "keepHourly",
            unit: "hour",
            count: r.keep_hourly,
            bucket: |t| t.format("%Y-%m-%d %H:00").to_string(),
        },
        Tier {
            field: "keepDaily",
            unit: "day",
            count: r.keep_daily,
            bucket: |t| t.format("%Y-%m-%d").to_string(),
        },
        Tier {
            field: "keepWeekly",
            unit: "week",
            count: r.keep_weekly,
            bucket: |t| {
                let w = t.iso_week();
                format!("{}-W{:02}", w.year(), w.week())
            },
        },
        Tier {
            field: "keepMonthly",
            unit: "month",
            count: r.keep_monthly,
            bucket: |t| t.format("%Y-%m").to_string(),
        },
        Tier {
            field: "keepYearly",
            unit: "year",
            count: r.keep_yearly,
            bucket: |t| t.format("%Y").to_string(),
        },
    ]
}

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
    let tz: Tz = parse_timezone(&spec.timezone).unwrap_or(chrono_tz::UTC);
    let max_age = retention
        .max_age
        .as_deref()
        .and_then(|m| parse_max_age(m).ok());
    // Only the schedule's backups of its current cluster and storage: a schedule pointed
    // elsewhere must not prune the old cluster's backups against the new ones.
    let mut good: Vec<&BackupRecord> = backups
        .iter()
        .filter(|b| {
            b.schedule.as_deref() == Some(schedule)
                && b.cluster == spec.cluster
                && b.storage == spec.storage
                && b.is_good()
                // An increment whose chain lost a link restores nothing: it must not count
                // as one of the newest and push restorable backups out.
                && super::chain::chain_of(b, backups).is_ok()
        })
        .collect();
    // Newest first, by the data's own time.
    good.sort_by(|a, b| b.recency().cmp(&a.recency()));
    let mut reasons: Vec<Vec<String>> = vec![Vec::new(); good.len()];
    if let Some(first) = reasons.first_mut() {
        first.push("newest good backup of the schedule: never deleted".to_string());
    }
    if let Some(n) = retention.keep_last {
        for (i, r) in reasons.iter_mut().enumerate().take(n as usize) {
            r.push(format!("one of the {n} newest (keepLast): #{}", i + 1));
        }
    }
    // Each calendar tier walks the backups newest first and keeps the first (newest) of
    // each new bucket, until it has kept its count.
    for tier in tiers(retention) {
        let Some(n) = tier.count else { continue };
        let mut kept = 0;
        let mut last: Option<String> = None;
        for (i, b) in good.iter().enumerate() {
            if kept == n {
                break;
            }
            let bucket = (tier.bucket)(&b.data_time().with_timezone(&tz));
            if last.as_deref() == Some(bucket.as_str()) {
                continue;
            }
            kept += 1;
            reasons[i].push(format!(
                "newest of {} {bucket} ({} {n}: #{kept})",
                tier.unit, tier.field
            ));
            last = Some(bucket);
        }
    }
    let decided = good.iter().zip(reasons).map(|(b, mut reasons)| {
        let age = now - b.data_time();
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
            reasons.push(
                "needed by a Restore, a drill or an increment that is pending or running"
                    .to_string(),
            );
        }
        let keep = !reasons.is_empty();
        if !keep {
            let mut why = Vec::new();
            if let Some(n) = retention.keep_last {
                why.push(format!("beyond keepLast {n}"));
            }
            let calendar: Vec<&str> = tiers(retention)
                .iter()
                .filter(|t| t.count.is_some())
                .map(|t| t.field)
                .collect();
            if !calendar.is_empty() {
                why.push(format!(
                    "not the newest of a period {} keeps",
                    calendar.join("/")
                ));
            }
            if let Some(m) = &max_age {
                why.push(format!(
                    "older than maxAge {} (age {})",
                    m.text,
                    human_age(age)
                ));
            }
            reasons.push(format!("kept by no rule: {}", why.join("; ")));
        }
        RetentionDecision {
            backup: b.name.clone(),
            schedule: schedule.to_string(),
            keep,
            reasons,
            orphaned: false,
        }
    });
    decided
        .chain(broken(schedule, spec, backups, pinned))
        .collect()
}

/// The schedule's increments that can never restore because their chain lost a link for
/// good: not counted above, and deleted (unless something running needs them), saying
/// why. One whose link only waits for its verification is neither counted nor deleted.
fn broken<'a>(
    schedule: &'a str,
    spec: &'a BackupScheduleSpec,
    backups: &'a [BackupRecord],
    pinned: &'a BTreeSet<String>,
) -> impl Iterator<Item = RetentionDecision> + 'a {
    backups
        .iter()
        .filter(move |b| {
            b.schedule.as_deref() == Some(schedule)
                && b.cluster == spec.cluster
                && b.storage == spec.storage
                && b.is_good()
        })
        .filter_map(move |b| {
            let why = super::chain::broken_link(b, backups)?;
            let keep = pinned.contains(&b.name);
            Some(RetentionDecision {
                backup: b.name.clone(),
                schedule: schedule.to_string(),
                keep,
                reasons: vec![if keep {
                    format!("{why}; kept while something running needs it")
                } else {
                    format!("{why}: it cannot be restored")
                }],
                orphaned: false,
            })
        })
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
