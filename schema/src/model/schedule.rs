//! `BackupSchedule`: when to back a cluster up, where to, and how long to keep it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How a backup is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BackupType {
    /// `$backupCursor` file copies streamed to object storage.
    Physical,
    /// Snapshot-based: tidemark opens the cursor, the operator's snapshot copies the files.
    External,
    /// Physical, copying only the blocks changed since the previous backup of its chain
    /// (PSMDB's block tracking); a chain starts with a full copy, its base.
    Incremental,
}

impl std::fmt::Display for BackupType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackupType::Physical => "physical",
            BackupType::External => "external",
            BackupType::Incremental => "incremental",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackupScheduleSpec {
    /// The `Cluster` to back up.
    pub cluster: String,
    /// The `BackupStorage` to write to.
    pub storage: String,
    #[serde(rename = "type")]
    pub backup_type: BackupType,
    /// 5 fields (`min hour dom month dow`), or 6 with seconds first.
    pub cron: String,
    /// IANA time zone the cron expression is read in.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// A suspended schedule takes no new backups; retention still applies.
    #[serde(default)]
    pub suspend: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    /// `host:port` → score; replaces PBM's default scores (primary 0.5, secondary 1.0,
    /// hidden 2.0). The highest score wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<BTreeMap<String, f64>>,
    /// Recovery point objective, such as `26h`: `tidemark status` flags the schedule (and
    /// exits 2) when its newest good backup is older.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo: Option<String>,
    /// Check each backup after it completes: `metadata` (marker, manifests, every object
    /// and its size) or `data` (every object read back and checksummed). Until it passes,
    /// a backup is not counted as good: not by retention, `latestOf` or `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifyLevel>,
    /// Point-in-time recovery: slice the cluster's oplog into this storage continuously.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pitr: Option<super::PitrSpec>,
    /// `type: incremental` only: when a chain starts over, and its block size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<super::IncrementalSpec>,
}

impl BackupScheduleSpec {
    /// The oplog-slicing settings when slicing is on.
    pub fn pitr_enabled(&self) -> Option<&super::PitrSpec> {
        self.pitr.as_ref().filter(|p| p.enabled)
    }
}

/// How deep a schedule's backups are checked after they complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum VerifyLevel {
    Metadata,
    Data,
}

fn default_timezone() -> String {
    "UTC".to_string()
}

/// Which of a schedule's good backups to keep, in restic's terms: the `keepLast` newest;
/// the newest of each of the last `keepHourly` hours, `keepDaily` days, `keepWeekly` ISO
/// weeks, `keepMonthly` months and `keepYearly` years that have a backup (in the
/// schedule's time zone); and any younger than `maxAge`. The newest good backup is never
/// deleted. At least one rule must be given.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Retention {
    /// The newest N good backups.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present_count"
    )]
    #[schemars(with = "u32")]
    pub keep_last: Option<u32>,
    /// The newest backup of each of the last N hours that have one.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present_count"
    )]
    #[schemars(with = "u32")]
    pub keep_hourly: Option<u32>,
    /// The newest backup of each of the last N days that have one.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present_count"
    )]
    #[schemars(with = "u32")]
    pub keep_daily: Option<u32>,
    /// The newest backup of each of the last N ISO weeks that have one.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present_count"
    )]
    #[schemars(with = "u32")]
    pub keep_weekly: Option<u32>,
    /// The newest backup of each of the last N months that have one.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present_count"
    )]
    #[schemars(with = "u32")]
    pub keep_monthly: Option<u32>,
    /// The newest backup of each of the last N years that have one.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present_count"
    )]
    #[schemars(with = "u32")]
    pub keep_yearly: Option<u32>,
    /// Such as `30d`, `12h`, `1w2d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
}

/// A retention count that is given must be a number: an empty `keepLast:` (YAML null)
/// is an error, never a silent "not used" that would let retention delete more.
fn present_count<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    u32::deserialize(d).map(Some)
}

/// Parses a cron expression of 5 fields, or 6 with seconds first.
pub fn parse_cron(expr: &str) -> Result<Cron, String> {
    let fields = expr.split_whitespace().count();
    if fields != 5 && fields != 6 {
        return Err(format!(
            "{expr:?} has {fields} fields; a cron expression has 5 (minute hour day-of-month \
             month day-of-week) or 6 (seconds first)"
        ));
    }
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(expr)
        .map_err(|e| format!("{expr:?} is not a valid cron expression: {e}"))
}

/// Parses an IANA time zone name such as `Europe/Berlin`.
pub fn parse_timezone(name: &str) -> Result<chrono_tz::Tz, String> {
    name.parse::<chrono_tz::Tz>().map_err(|_| {
        let close = chrono_tz::TZ_VARIANTS
            .iter()
            .map(|tz| tz.name())
            .filter(|candidate| strsim::jaro_winkler(candidate, name) > 0.9)
            .max_by(|a, b| strsim::jaro_winkler(a, name).total_cmp(&strsim::jaro_winkler(b, name)));
        match close {
            Some(c) => format!("{name:?} is not an IANA time zone; did you mean {c:?}?"),
            None => format!("{name:?} is not an IANA time zone (such as UTC or Europe/Berlin)"),
        }
    })
}

impl BackupScheduleSpec {
    /// The times the schedule fired at or before `now`, newest first, back to (not
    /// including) `after`, at most `limit` of them.
    pub fn runs_back_from(
        &self,
        now: DateTime<Utc>,
        after: DateTime<Utc>,
        limit: usize,
    ) -> Vec<DateTime<Utc>> {
        runs_back_from(&self.cron, &self.timezone, now, after, limit)
    }

    /// The next time the schedule fires strictly after `now`, in UTC.
    pub fn next_run_after(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        next_run_after(&self.cron, &self.timezone, now)
    }
}

/// The times a cron in time zone `timezone` fired at or before `now`, newest first, back
/// to (not including) `after`, at most `limit` of them. The cron is parsed once: this
/// runs for every schedule and drill on every pass and every `status`.
pub fn runs_back_from(
    cron: &str,
    timezone: &str,
    now: DateTime<Utc>,
    after: DateTime<Utc>,
    limit: usize,
) -> Vec<DateTime<Utc>> {
    use chrono::SubsecRound;
    let (Ok(cron), Ok(tz)) = (parse_cron(cron), parse_timezone(timezone)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut from = now.trunc_subsecs(0);
    while out.len() < limit {
        let Ok(t) = cron.find_previous_occurrence(&from.with_timezone(&tz), true) else {
            break;
        };
        let t = t.with_timezone(&Utc);
        if t <= after {
            break;
        }
        out.push(t);
        from = t - chrono::Duration::seconds(1);
    }
    out
}

/// The next time a cron in `timezone` fires strictly after `now`, in UTC. `None` when
/// the expression or zone does not parse (validation reports those).
pub fn next_run_after(cron: &str, timezone: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let cron = parse_cron(cron).ok()?;
    let tz = parse_timezone(timezone).ok()?;
    cron.find_next_occurrence(&now.with_timezone(&tz), false)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The name of a backup that a schedule takes at `at`: `<schedule>-YYYYMMDDTHHMMSSZ`.
pub fn scheduled_backup_name(schedule: &str, at: DateTime<Utc>) -> String {
    format!("{schedule}-{}", at.format("%Y%m%dT%H%M%SZ"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_accepts_five_and_six_fields() {
        assert!(parse_cron("0 2 * * *").is_ok());
        assert!(parse_cron("30 0 2 * * *").is_ok());
        assert!(parse_cron("0 2 * *").is_err());
        assert!(parse_cron("0 2 * * * * 2030").is_err());
        assert!(parse_cron("61 2 * * *").is_err());
    }

    #[test]
    fn timezone_suggests_close_names() {
        assert!(parse_timezone("Europe/Berlin").is_ok());
        let err = parse_timezone("Europe/Berln").unwrap_err();
        assert!(err.contains("Europe/Berlin"), "{err}");
    }

    fn nightly_in_berlin() -> BackupScheduleSpec {
        BackupScheduleSpec {
            cluster: "c".into(),
            storage: "s".into(),
            backup_type: BackupType::Physical,
            cron: "0 2 * * *".into(),
            timezone: "Europe/Berlin".into(),
            suspend: false,
            retention: None,
            priority: None,
            rpo: None,
            verify: None,
            pitr: None,
            incremental: None,
        }
    }

    #[test]
    fn runs_back_from_walks_whole_seconds_across_a_dst_change() {
        let spec = nightly_in_berlin();
        // Berlin moves to summer time on 2026-03-29: 02:00 local is 01:00 UTC before,
        // 00:00 UTC after (02:00 itself is skipped that night; croner takes 03:00 CEST).
        let now = "2026-03-31T12:00:00.700Z".parse().unwrap();
        let since = "2026-03-26T12:00:00Z".parse().unwrap();
        let runs: Vec<String> = spec
            .runs_back_from(now, since, 10)
            .iter()
            .map(|t| t.to_rfc3339())
            .collect();
        assert_eq!(
            runs.first().unwrap(),
            "2026-03-31T00:00:00+00:00",
            "{runs:?}"
        );
        assert_eq!(
            runs.last().unwrap(),
            "2026-03-27T01:00:00+00:00",
            "{runs:?}"
        );
        assert_eq!(runs.len(), 5, "{runs:?}");
        assert_eq!(spec.runs_back_from(now, since, 2).len(), 2);
    }

    #[test]
    fn the_repeated_hour_of_a_fall_back_runs_a_slot_once() {
        // Berlin falls back on 2026-10-25: 02:30 local is 00:30 UTC (summer time), then
        // again 01:30 UTC (winter time). Its first occurrence is the slot; the repeat is
        // not a second one, whether the walk goes forward (next run) or back (due slots).
        let walk = |cron: &str| {
            let mut spec = nightly_in_berlin();
            spec.cron = cron.into();
            let now: DateTime<Utc> = "2026-10-25T05:00:00Z".parse().unwrap();
            let since: DateTime<Utc> = "2026-10-24T20:00:00Z".parse().unwrap();
            let mut back: Vec<String> = spec
                .runs_back_from(now, since, 20)
                .iter()
                .map(|t| t.format("%H:%M").to_string())
                .collect();
            back.reverse();
            let mut forward = Vec::new();
            let mut t = since;
            while let Some(n) = spec.next_run_after(t).filter(|n| *n <= now) {
                forward.push(n.format("%H:%M").to_string());
                t = n;
            }
            assert_eq!(back, forward, "{cron}");
            back
        };
        assert_eq!(walk("0 30 2 * * *"), ["00:30"]);
        // Hourly: the repeated 02:30 is the same slot too (croner), so UTC 01:30 has none.
        assert_eq!(
            walk("0 30 * * * *"),
            [
                "20:30", "21:30", "22:30", "23:30", "00:30", "02:30", "03:30", "04:30"
            ]
        );
    }

    #[test]
    fn next_run_respects_the_time_zone() {
        let spec = nightly_in_berlin();
        let now = "2026-01-10T12:00:00Z".parse().unwrap();
        // 02:00 in Berlin in winter is 01:00 UTC.
        assert_eq!(
            spec.next_run_after(now).unwrap().to_rfc3339(),
            "2026-01-11T01:00:00+00:00"
        );
        assert_eq!(
            scheduled_backup_name("nightly", spec.next_run_after(now).unwrap()),
            "nightly-20260111T010000Z"
        );
    }
}
