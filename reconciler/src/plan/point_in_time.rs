//! Planning a point-in-time restore: the base it starts from, the chunks each replica set
//! replays, and, when the target cannot be reached, why and the nearest points that can.
//! Pure: the same answer for `diff`, the planner and the tests.
//!
//! The base is the newest good backup of the cluster whose last write (on every replica
//! set) is before the target and whose timeline reaches the target without a hole on any
//! replica set. When the newest such backup cannot (a gap after it, or slicing that
//! stopped), an older one that can is chosen and the plan says why.

use serde::Serialize;
use tidemark_schema::control::{
    BackupRecord, ChunkRecord, ChunkRef, PointInTimeReplay, ReplayTarget,
};
use tidemark_schema::manifest::OpTime;
use tidemark_schema::model::{PointInTime, RestoreSpec};

use super::timeline::{self, base_point, optime_text, replica_set_timeline};

/// What a point-in-time restore replays.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PointInTimePlan {
    /// As declared.
    pub point_in_time: PointInTime,
    pub target: ReplayTarget,
    /// The storage the base and its chunks are in.
    pub storage: String,
    /// Why this base: the newest that reaches the target, or why a newer one does not.
    pub base_reason: String,
    /// How the declared time became the target, when it is not taken as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub replica_sets: Vec<ReplayPart>,
}

/// One replica set's replay: from the base's last write there, these chunks.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplayPart {
    /// The backup's replica-set name.
    pub replica_set: String,
    /// The base's last write: replay applies the entries after it.
    pub from: OpTime,
    pub chunks: Vec<ChunkRef>,
}

impl PointInTimePlan {
    pub fn chunk_count(&self) -> usize {
        self.replica_sets.iter().map(|r| r.chunks.len()).sum()
    }

    /// Bytes of oplog every node of the replica sets downloads (compressed).
    pub fn chunk_bytes(&self) -> u64 {
        self.replica_sets
            .iter()
            .flat_map(|r| &r.chunks)
            .map(|c| c.stored_bytes)
            .sum()
    }

    pub fn stored_bytes_of(&self, replica_set: &str) -> u64 {
        self.replica_sets
            .iter()
            .filter(|r| r.replica_set == replica_set)
            .flat_map(|r| &r.chunks)
            .map(|c| c.stored_bytes)
            .sum()
    }

    /// What the op carries to the agents.
    pub fn replay(&self) -> PointInTimeReplay {
        PointInTimeReplay {
            target: self.target,
            chunks: self
                .replica_sets
                .iter()
                .map(|r| (r.replica_set.clone(), r.chunks.clone()))
                .collect(),
        }
    }
}

/// The base and the replay of a point-in-time restore, or why there is none.
pub fn plan_point_in_time<'a>(
    spec: &RestoreSpec,
    pit: &PointInTime,
    backups: &'a [BackupRecord],
    chunks: &[ChunkRecord],
) -> Result<(&'a BackupRecord, PointInTimePlan), String> {
    let mut target = pit.target()?;
    let mut candidates: Vec<&BackupRecord> = match &spec.source.backup {
        Some(_) => vec![super::restore::resolve_backup(spec, backups)?],
        None => backups
            .iter()
            .filter(|b| b.cluster == spec.cluster && b.is_good())
            // An increment whose chain lost a link restores nothing.
            .filter(|b| super::chain::chain_of(b, backups).is_ok())
            .collect(),
    };
    candidates.sort_by(|a, b| b.recency().cmp(&a.recency()));
    let note = sharded_cut(&mut target, &candidates);
    // The backups whose data is not already past the target, newest first.
    let before: Vec<&BackupRecord> = candidates
        .iter()
        .copied()
        .filter(|b| starts_before(b, &target))
        .collect();
    let mut refused: Vec<(String, String)> = Vec::new();
    for b in &before {
        match replay_parts(b, &target, chunks) {
            Ok(parts) => {
                let base_reason = match refused.first() {
                    None => format!(
                        "backup {:?} is the newest good backup whose last write is before the \
                         target",
                        b.name
                    ),
                    Some((newer, why)) => format!(
                        "the newest base before the target, backup {newer:?}, cannot reach it \
                         ({why}); backup {:?} can",
                        b.name
                    ),
                };
                let plan = PointInTimePlan {
                    point_in_time: pit.clone(),
                    target,
                    storage: b.storage.clone(),
                    base_reason,
                    note,
                    replica_sets: parts,
                };
                return Ok((b, plan));
            }
            Err(why) => refused.push((b.name.clone(), why)),
        }
    }
    Err(unreachable(
        spec,
        &target,
        &candidates,
        &before,
        &refused,
        backups,
        chunks,
    ))
}

/// On a sharded cluster a wall-clock target becomes one cluster time for every replica
/// set: each would otherwise cut its target's second by its own clock, and a transaction
/// across shards could be kept on one and not on another. The cut is at the start of the
/// second: nothing of that second is kept. Says so, for the plan.
fn sharded_cut(target: &mut ReplayTarget, candidates: &[&BackupRecord]) -> Option<String> {
    let sharded = candidates.iter().any(|b| b.replica_sets.len() > 1);
    let wall = target.wall.filter(|_| sharded)?;
    target.until.i = 0;
    target.wall = None;
    Some(format!(
        "on a sharded cluster a wall-clock target is one cluster time for every replica set: \
         {} keeps the writes before its second ({}); give a cluster time {{t, i}} to keep \
         writes inside that second",
        wall.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        target.until
    ))
}

/// Why a target is refused for being in the future (beyond a minute of clock skew).
/// Only a wall-clock target is judged: a cluster time is copied from an oplog entry that
/// exists, and a cluster's clock may run ahead of this host's.
pub fn in_the_future(pit: &PointInTime, now: chrono::DateTime<chrono::Utc>) -> Option<String> {
    let target = pit.target().ok()?;
    let at = target.wall?;
    let ahead = (at - now).num_seconds();
    (ahead > 60).then(|| {
        format!(
            "the target {target} is {ahead} s in the future: a restore never waits for a time \
             to come, and one that waited since before its target is refused when it could \
             start; correct the time (its time zone?) and give the Restore a new name"
        )
    })
}

/// The bases a point-in-time restore still waiting could start from: every good backup of
/// its cluster (or the pinned one) that holds nothing after the target. Retention keeps
/// them while it waits.
pub fn waiting_bases<'a>(
    spec: &RestoreSpec,
    backups: &'a [BackupRecord],
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<&'a BackupRecord> {
    let Some(pit) = spec.source.point_in_time.as_ref() else {
        return Vec::new();
    };
    let (Ok(target), None) = (pit.target(), in_the_future(pit, now)) else {
        return Vec::new();
    };
    backups
        .iter()
        .filter(|b| b.cluster == spec.cluster && b.is_good())
        .filter(|b| spec.source.backup.as_ref().is_none_or(|n| *n == b.name))
        .filter(|b| {
            b.replica_sets
                .iter()
                .all(|p| p.last_write_optime.is_none_or(|w| w <= target.until))
        })
        .collect()
}

/// Whether `b` holds no write after the target on any replica set.
fn starts_before(b: &BackupRecord, target: &ReplayTarget) -> bool {
    b.replica_sets.iter().all(|p| {
        p.last_write_optime
            .is_none_or(|w| w <= target.latest_base())
    })
}

/// Each replica set's chunks from `b`'s last write through the target, or why they do
/// not reach it.
fn replay_parts(
    b: &BackupRecord,
    target: &ReplayTarget,
    chunks: &[ChunkRecord],
) -> Result<Vec<ReplayPart>, String> {
    let mut parts = Vec::new();
    for p in &b.replica_sets {
        let rs = p.name.as_str();
        let Some(from) = base_point(b, rs) else {
            return Err(format!(
                "it records no last-write optime for replica set {rs:?} (taken by an older \
                 agent)"
            ));
        };
        let mine: Vec<&ChunkRecord> = chunks
            .iter()
            .filter(|c| c.cluster == b.cluster && c.storage == b.storage && c.replica_set == rs)
            .collect();
        let tl = replica_set_timeline(rs, &mine);
        let Some(seg) = tl.segment_of(from) else {
            return Err(format!(
                "no oplog of replica set {rs:?} was sliced into storage {:?} from its last \
                 write {}",
                b.storage,
                optime_text(from)
            ));
        };
        if seg.last < target.needs() {
            let gap = tl.gaps.iter().find(|g| g.from >= seg.last);
            return Err(match gap {
                Some(g) => format!(
                    "replica set {rs:?} has a gap in its oplog from {} to {}",
                    optime_text(g.from),
                    optime_text(g.to)
                ),
                None => format!(
                    "replica set {rs:?} is sliced only up to {}",
                    optime_text(seg.last)
                ),
            });
        }
        let mut sorted: Vec<&ChunkRecord> = mine
            .into_iter()
            .filter(|c| c.first >= seg.first && c.last <= seg.last && c.last > from)
            .collect();
        sorted.sort_by_key(|c| (c.first, c.last));
        let mut picked = Vec::new();
        for c in sorted {
            picked.push(ChunkRef::from(c));
            if c.last >= target.needs() {
                break;
            }
        }
        parts.push(ReplayPart {
            replica_set: rs.to_string(),
            from,
            chunks: picked,
        });
    }
    Ok(parts)
}

/// Why no base reaches the target, with the nearest points that can be reached.
fn unreachable(
    spec: &RestoreSpec,
    target: &ReplayTarget,
    candidates: &[&BackupRecord],
    before: &[&BackupRecord],
    refused: &[(String, String)],
    backups: &[BackupRecord],
    chunks: &[ChunkRecord],
) -> String {
    let mut why = if candidates.is_empty() {
        format!(
            "cluster {:?} has no good backup to start from",
            spec.cluster
        )
    } else if before.is_empty()
        && let Some(b) = candidates.iter().find(|b| {
            b.replica_sets
                .iter()
                .all(|p| p.last_write_optime.is_none_or(|w| w <= target.until))
        })
    {
        format!(
            "backup {:?} ends in the target's second, and a wall-clock target cannot tell \
             which writes of that second the backup already holds: give a cluster time \
             {{t, i}} or a target in a later second",
            b.name
        )
    } else if before.is_empty() {
        format!(
            "the target {target} is before the last write of {}",
            match &spec.source.backup {
                Some(b) => format!("backup {b:?}"),
                None => "the oldest good backup".into(),
            }
        )
    } else {
        let shown: Vec<String> = refused
            .iter()
            .take(3)
            .map(|(b, why)| format!("backup {b:?}: {why}"))
            .collect();
        format!(
            "{} the target {target}: {}{}",
            match &spec.source.backup {
                Some(b) => format!("the pinned backup {b:?} does not reach"),
                None => format!("no good backup of cluster {:?} reaches", spec.cluster),
            },
            shown.join("; "),
            match refused.len().saturating_sub(3) {
                0 => String::new(),
                n => format!("; and {n} older"),
            }
        )
    };
    why.push_str(&nearest(spec, target, backups, chunks));
    why
}

/// The reachable points nearest the target, in the storages that hold bases.
fn nearest(
    spec: &RestoreSpec,
    target: &ReplayTarget,
    backups: &[BackupRecord],
    chunks: &[ChunkRecord],
) -> String {
    let mut storages: Vec<&str> = backups
        .iter()
        .filter(|b| b.cluster == spec.cluster && b.is_good())
        .map(|b| b.storage.as_str())
        .collect();
    storages.sort_unstable();
    storages.dedup();
    let mut earlier: Option<OpTime> = None;
    let mut later: Option<OpTime> = None;
    for storage in storages {
        let bases = timeline::bases(backups, &spec.cluster, storage);
        let mut sets: Vec<String> = bases
            .iter()
            .flat_map(|b| b.replica_sets.iter().map(|r| r.name.clone()))
            .collect();
        sets.sort();
        sets.dedup();
        let tl = timeline::timeline(&spec.cluster, storage, &sets, chunks, &bases);
        for w in &tl.windows {
            if w.to < target.until {
                earlier = earlier.max(Some(w.to));
            }
            if w.from > target.until {
                later = Some(later.map_or(w.from, |l| l.min(w.from)));
            }
        }
    }
    match (earlier, later) {
        (None, None) => {
            "; no point in time is reachable yet (tidemark list shows the timeline)".into()
        }
        (e, l) => format!(
            "; nearest reachable points: {}",
            [
                e.map(|t| format!("{} (before)", optime_text(t))),
                l.map(|t| format!("{} (after)", optime_text(t))),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::timeline::tests::{base, chunk, t};

    fn spec(pit: PointInTime, pinned: Option<&str>) -> RestoreSpec {
        serde_json::from_value(serde_json::json!({
            "cluster": "c",
            "source": {"pointInTime": pit, "backup": pinned},
        }))
        .unwrap()
    }

    fn at(s: u32) -> PointInTime {
        PointInTime::ClusterTime { t: s, i: 1 }
    }

    #[test]
    fn the_newest_base_before_the_target_and_the_chunks_through_it() {
        let chunks = vec![
            chunk("rs", None, 90, 110, false),
            chunk("rs", Some(110), 110, 130, false),
            chunk("rs", Some(130), 130, 150, false),
            chunk("rs", Some(150), 150, 170, false),
        ];
        let backups = vec![base("old", &[("rs", 95)]), base("new", &[("rs", 120)])];
        let s = spec(at(140), None);
        let pit = s.source.point_in_time.clone().unwrap();
        let (b, p) = plan_point_in_time(&s, &pit, &backups, &chunks).unwrap();
        assert_eq!(b.name, "new");
        let firsts: Vec<u32> = p.replica_sets[0].chunks.iter().map(|c| c.first.t).collect();
        assert_eq!(
            firsts,
            vec![110, 130],
            "from the chunk holding 120 to the one holding 140"
        );
        assert_eq!(p.replica_sets[0].from, t(120));
    }

    #[test]
    fn a_newer_base_that_cannot_reach_gives_way_to_an_older_one_saying_why() {
        // The newer base is in a storage whose slicing has a gap before the target.
        let mut chunks = vec![
            chunk("rs", None, 90, 110, false),
            chunk("rs", Some(110), 110, 150, false),
        ];
        let mut other = vec![
            chunk("rs", None, 115, 125, false),
            chunk("rs", Some(125), 135, 160, true),
        ];
        for c in &mut other {
            c.storage = "s2".into();
        }
        chunks.extend(other);
        let mut newer = base("newer", &[("rs", 120)]);
        newer.storage = "s2".into();
        let backups = vec![base("older", &[("rs", 100)]), newer];
        let s = spec(at(140), None);
        let pit = s.source.point_in_time.clone().unwrap();
        let (b, p) = plan_point_in_time(&s, &pit, &backups, &chunks).unwrap();
        assert_eq!(b.name, "older");
        assert!(
            p.base_reason.contains("backup \"newer\", cannot reach it")
                && p.base_reason.contains("has a gap in its oplog"),
            "{}",
            p.base_reason
        );
        assert_eq!(p.storage, "s");
    }

    #[test]
    fn a_gap_on_one_replica_set_refuses_the_whole_sharded_cluster() {
        let chunks = vec![
            chunk("cfg", None, 90, 200, false),
            chunk("sh1", None, 90, 130, false),
            chunk("sh1", Some(130), 160, 200, true),
        ];
        let backups = vec![base("b", &[("cfg", 100), ("sh1", 100)])];
        let s = spec(at(140), None);
        let pit = s.source.point_in_time.clone().unwrap();
        let e = plan_point_in_time(&s, &pit, &backups, &chunks).unwrap_err();
        assert!(e.contains("replica set \"sh1\" has a gap"), "{e}");
        assert!(
            e.contains("(before)"),
            "the nearest reachable point is named: {e}"
        );
        // Before the gap, both replica sets replay to the same target.
        let s = spec(at(120), None);
        let pit = s.source.point_in_time.clone().unwrap();
        let (_, p) = plan_point_in_time(&s, &pit, &backups, &chunks).unwrap();
        assert_eq!(p.replica_sets.len(), 2);
        assert!(p.replica_sets.iter().all(|r| r.chunks.len() == 1));
    }

    #[test]
    fn a_pinned_base_is_the_only_candidate_and_a_target_before_it_is_refused() {
        let chunks = vec![chunk("rs", None, 90, 200, false)];
        let backups = vec![base("old", &[("rs", 95)]), base("new", &[("rs", 150)])];
        let s = spec(at(140), Some("old"));
        let pit = s.source.point_in_time.clone().unwrap();
        let (b, _) = plan_point_in_time(&s, &pit, &backups, &chunks).unwrap();
        assert_eq!(b.name, "old", "pinned, though \"new\" is newer");
        let s = spec(at(120), Some("new"));
        let pit = s.source.point_in_time.clone().unwrap();
        let e = plan_point_in_time(&s, &pit, &backups, &chunks).unwrap_err();
        assert!(e.contains("before the last write of backup \"new\""), "{e}");
    }

    #[test]
    fn a_wall_clock_target_in_the_bases_last_second_says_what_to_give_instead() {
        let chunks = vec![chunk("rs", None, 90, 200, false)];
        let backups = vec![base("b", &[("rs", 100)])];
        let s = spec(PointInTime::Time("1970-01-01T00:01:40.5Z".into()), None);
        let pit = s.source.point_in_time.clone().unwrap();
        let e = plan_point_in_time(&s, &pit, &backups, &chunks).unwrap_err();
        assert!(e.contains("ends in the target's second"), "{e}");
        // A second later, the same base reaches it.
        let s = spec(PointInTime::Time("1970-01-01T00:01:41.5Z".into()), None);
        let pit = s.source.point_in_time.clone().unwrap();
        assert!(plan_point_in_time(&s, &pit, &backups, &chunks).is_ok());
    }

    #[test]
    fn a_wall_clock_target_on_a_sharded_cluster_is_one_cluster_time_at_its_second() {
        let chunks = vec![
            chunk("cfg", None, 90, 200, false),
            chunk("sh1", None, 90, 200, false),
        ];
        let backups = vec![base("b", &[("cfg", 100), ("sh1", 100)])];
        let s = spec(PointInTime::Time("1970-01-01T00:02:20.5Z".into()), None);
        let pit = s.source.point_in_time.clone().unwrap();
        let (_, p) = plan_point_in_time(&s, &pit, &backups, &chunks).unwrap();
        assert_eq!(
            p.target,
            ReplayTarget {
                until: OpTime { t: 140, i: 0 },
                wall: None
            }
        );
        assert!(
            p.note
                .as_deref()
                .is_some_and(|n| n.contains("Timestamp(140, 0)")),
            "{p:?}"
        );
    }

    #[test]
    fn a_target_in_the_future_is_refused_and_a_waiting_restore_keeps_its_bases() {
        let now = chrono::DateTime::from_timestamp(1000, 0).unwrap();
        let wall = |s: &str| PointInTime::Time(s.into());
        assert!(
            in_the_future(&wall("1970-01-01T00:17:10Z"), now).is_none(),
            "within the margin"
        );
        let e = in_the_future(&wall("1970-01-01T01:23:20Z"), now).unwrap();
        assert!(e.contains("4000 s in the future"), "{e}");
        assert!(
            in_the_future(&at(5000), now).is_none(),
            "a cluster time is not judged"
        );
        let backups = vec![base("old", &[("rs", 95)]), base("new", &[("rs", 150)])];
        let names: Vec<&str> = waiting_bases(&spec(at(140), None), &backups, now)
            .iter()
            .map(|b| b.name.as_str())
            .collect();
        assert_eq!(
            names,
            vec!["old"],
            "a base after the target cannot serve it"
        );
    }

    #[test]
    fn a_target_past_the_newest_slice_waits_for_it() {
        let chunks = vec![chunk("rs", None, 90, 130, false)];
        let backups = vec![base("b", &[("rs", 100)])];
        let s = spec(at(140), None);
        let pit = s.source.point_in_time.clone().unwrap();
        let e = plan_point_in_time(&s, &pit, &backups, &chunks).unwrap_err();
        assert!(e.contains("is sliced only up to"), "{e}");
    }
}
