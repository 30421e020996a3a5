//! `BackupSchedule.spec.pitr`: continuous oplog slicing for point-in-time recovery.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::duration::parse_max_age;

/// The span of one chunk when `oplogSpan` is not given (PBM's `oplogSpanMin` default).
pub const DEFAULT_OPLOG_SPAN: Duration = Duration::from_secs(600);
/// Bounds of `oplogSpan`: below a second every chunk is a request; above a day the newest
/// day of writes would wait in the oplog alone.
pub const MIN_OPLOG_SPAN: Duration = Duration::from_secs(1);
pub const MAX_OPLOG_SPAN: Duration = Duration::from_secs(86_400);

/// While `enabled`, the cluster's oplog is sliced continuously into the schedule's
/// storage, one chunk per `oplogSpan`, so a restore can reach any second since a backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PitrSpec {
    pub enabled: bool,
    /// How much oplog one chunk holds, such as `10m` (the default) or `30s`; between `1s`
    /// and `1d`. The newest chunk ends at most about this long before now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oplog_span: Option<String>,
}

impl PitrSpec {
    /// The span as a duration; the default when absent or (for a document that failed
    /// validation) unreadable.
    pub fn span(&self) -> Duration {
        self.oplog_span
            .as_deref()
            .and_then(|s| parse_max_age(s).ok())
            .map_or(DEFAULT_OPLOG_SPAN, |m| m.duration)
    }

    /// Why `oplogSpan` cannot work, if it cannot.
    pub fn span_problem(&self) -> Option<String> {
        let text = self.oplog_span.as_deref()?;
        match parse_max_age(text) {
            Err(e) => Some(format!("oplogSpan {e}")),
            Ok(m) if m.duration < MIN_OPLOG_SPAN || m.duration > MAX_OPLOG_SPAN => Some(format!(
                "oplogSpan {text:?} is outside 1s..1d: a chunk per {}s {}",
                m.duration.as_secs(),
                if m.duration < MIN_OPLOG_SPAN {
                    "would cost a request for every handful of writes"
                } else {
                    "would leave more than a day of writes only in the oplog"
                }
            )),
            Ok(_) => None,
        }
    }
}
