//! `Restore.spec.source.pointInTime`: the instant a point-in-time restore puts a cluster
//! back to, as a wall-clock time or as an exact cluster time.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::control::ReplayTarget;
use crate::manifest::OpTime;

/// The target of a point-in-time restore.
///
/// - `2026-12-04T14:02:16.9Z` (RFC 3339, fractions allowed): every write whose wall clock
///   (the oplog entry's `wall`) is at or before this instant is kept.
/// - `{t: 1796392936, i: 4}`: every oplog entry at or before this cluster time is kept;
///   exact, so it can split two writes of one second.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum PointInTime {
    ClusterTime { t: u32, i: u32 },
    Time(String),
}

impl PointInTime {
    /// The entries kept, or why the value is not a time.
    pub fn target(&self) -> Result<ReplayTarget, String> {
        match self {
            PointInTime::ClusterTime { t, i } => Ok(ReplayTarget {
                until: OpTime { t: *t, i: *i },
                wall: None,
            }),
            PointInTime::Time(s) => {
                let at = DateTime::parse_from_rfc3339(s)
                    .map_err(|e| {
                        format!(
                            "{s:?} is not an RFC 3339 time ({e}); write it like \
                             2026-12-04T14:02:16.9Z, or give a cluster time {{t: <seconds>, \
                             i: <ordinal>}}"
                        )
                    })?
                    .with_timezone(&Utc);
                ReplayTarget::at_wall(at).ok_or_else(|| {
                    format!("{s:?} is outside the range of a MongoDB timestamp (1970 to 2106)")
                })
            }
        }
    }
}

impl std::fmt::Display for PointInTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PointInTime::ClusterTime { t, i } => write!(f, "Timestamp({t}, {i})"),
            PointInTime::Time(s) => f.write_str(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wall_time_keeps_its_fraction_and_bounds_its_second() {
        let t = PointInTime::Time("2026-12-04T14:02:16.9Z".into())
            .target()
            .unwrap();
        let second = 1_796_392_936;
        assert_eq!(
            t.until,
            OpTime {
                t: second,
                i: u32::MAX
            }
        );
        assert_eq!(
            t.wall.unwrap().timestamp_millis(),
            i64::from(second) * 1000 + 900
        );
        // An entry of the boundary second is kept by its wall clock, not by its ordinal.
        assert!(t.keeps(
            OpTime { t: second, i: 7 },
            Some(i64::from(second) * 1000 + 900)
        ));
        assert!(!t.keeps(
            OpTime { t: second, i: 1 },
            Some(i64::from(second) * 1000 + 901)
        ));
        assert!(t.keeps(
            OpTime {
                t: second - 1,
                i: 99
            },
            None
        ));
        assert!(!t.keeps(
            OpTime {
                t: second + 1,
                i: 0
            },
            Some(0)
        ));
    }

    #[test]
    fn a_cluster_time_is_exact() {
        let t = PointInTime::ClusterTime { t: 100, i: 4 }.target().unwrap();
        assert!(t.keeps(OpTime { t: 100, i: 4 }, None));
        assert!(!t.keeps(OpTime { t: 100, i: 5 }, None));
        assert!(t.wall.is_none());
    }

    #[test]
    fn a_bad_time_says_how_to_write_one() {
        let e = PointInTime::Time("yesterday".into()).target().unwrap_err();
        assert!(e.contains("\"yesterday\" is not an RFC 3339 time"), "{e}");
        assert!(e.contains("{t: <seconds>, i: <ordinal>}"), "{e}");
    }
}
