//! The restorable timeline: from the chunk index and the good backups, which stretches of
//! time a point-in-time restore can reach. Pure; `list`, `status`, the metrics and the
//! planner's chunk retention all read the same answer.
//!
//! A **segment** is a run of chunks with no hole: each chunk starts at or before the end
//! of the one before (chunks meet exactly or share their boundary entry). A chunk that
//! records a gap, or that continues a chunk no longer in the index, starts a new segment.
//! A **window** opens at a good backup's last write inside a segment and closes at the
//! segment's end; for a sharded cluster it is the intersection over its replica sets of
//! the windows one backup opens.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tidemark_schema::control::{BackupRecord, ChunkRecord, Gap};
use tidemark_schema::manifest::OpTime;

/// A stretch of one replica set's oplog held in chunks without a hole.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Segment {
    pub first: OpTime,
    pub last: OpTime,
    pub chunks: usize,
    pub stored_bytes: u64,
}

/// One replica set's slicing so far.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaSetTimeline {
    pub replica_set: String,
    pub segments: Vec<Segment>,
    /// Every gap recorded, oldest first.
    pub gaps: Vec<Gap>,
}

impl ReplicaSetTimeline {
    /// The newest sliced entry.
    pub fn newest(&self) -> Option<OpTime> {
        self.segments.last().map(|s| s.last)
    }

    /// The segment holding `t`, if any.
    pub fn segment_of(&self, t: OpTime) -> Option<&Segment> {
        self.segments.iter().find(|s| s.first <= t && t <= s.last)
    }
}

/// A span a point-in-time restore can reach, and the backups it can start from.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Window {
    pub from: OpTime,
    pub to: OpTime,
    /// The good backups whose last write opens (part of) this window, oldest first.
    pub bases: Vec<String>,
}

/// A gap no good backup taken after it bridges yet: no restore reaches past it until one is.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenGap {
    pub replica_set: String,
    #[serde(flatten)]
    pub gap: Gap,
}

/// One cluster's timeline in one storage.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Timeline {
    pub cluster: String,
    pub storage: String,
    pub replica_sets: Vec<ReplicaSetTimeline>,
    pub windows: Vec<Window>,
    /// Gaps after the newest good backup's last write.
    pub open_gaps: Vec<OpenGap>,
}

impl Timeline {
    /// The newest entry every replica set has sliced: how far a restore could reach if
    /// a base allowed it. `None` until every replica set has a chunk.
    pub fn newest(&self) -> Option<OpTime> {
        self.replica_sets
            .iter()
            .map(ReplicaSetTimeline::newest)
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .min()
    }

    /// Seconds from the newest sliced entry to `now` (never negative).
    pub fn lag_seconds(&self, now: DateTime<Utc>) -> Option<i64> {
        self.newest()
            .map(|t| (now.timestamp() - i64::from(t.t)).max(0))
    }

    pub fn chunks(&self) -> usize {
        self.replica_sets
            .iter()
            .flat_map(|r| &r.segments)
            .map(|s| s.chunks)
            .sum()
    }

    pub fn gaps(&self) -> usize {
        self.replica_sets.iter().map(|r| r.gaps.len()).sum()
    }
}

/// Builds one replica set's segments from its chunk records (any order).
pub fn replica_set_timeline(replica_set: &str, chunks: &[&ChunkRecord]) -> ReplicaSetTimeline {
    let mut sorted: Vec<&ChunkRecord> = chunks.to_vec();
    sorted.sort_by_key(|c| (c.first, c.last));
    let mut segments: Vec<Segment> = Vec::new();
    let mut gaps = Vec::new();
    for c in sorted {
        if let Some(g) = c.gap {
            gaps.push(g);
        }
        let continues = c.gap.is_none()
            && segments
                .last()
                .is_some_and(|s| c.first <= s.last && c.after.is_some_and(|a| a <= s.last));
        match segments.last_mut() {
            Some(s) if continues => {
                s.last = s.last.max(c.last);
                s.chunks += 1;
                s.stored_bytes += c.stored_bytes;
            }
            _ => segments.push(Segment {
                first: c.first,
                last: c.last,
                chunks: 1,
                stored_bytes: c.stored_bytes,
            }),
        }
    }
    ReplicaSetTimeline {
        replica_set: replica_set.to_string(),
        segments,
        gaps,
    }
}

/// A backup's last write on `rs`, when it can be a base there.
pub fn base_point(b: &BackupRecord, rs: &str) -> Option<OpTime> {
    b.replica_sets
        .iter()
        .find(|p| p.name == rs)
        .and_then(|p| p.last_write_optime)
}

/// The good backups of `cluster` in `storage`: the bases a window can open at.
pub fn bases<'a>(
    backups: &'a [BackupRecord],
    cluster: &str,
    storage: &str,
) -> Vec<&'a BackupRecord> {
    let mut out: Vec<&BackupRecord> = backups
        .iter()
        .filter(|b| b.cluster == cluster && b.storage == storage && b.is_good())
        .collect();
    out.sort_by(|a, b| a.recency().cmp(&b.recency()));
    out
}

/// The timeline of `cluster` in `storage`, over the replica sets `replica_sets` (every
/// one must reach a point for a window to include it).
pub fn timeline(
    cluster: &str,
    storage: &str,
    replica_sets: &[String],
    chunks: &[ChunkRecord],
    bases: &[&BackupRecord],
) -> Timeline {
    let rs_timelines: Vec<ReplicaSetTimeline> = replica_sets
        .iter()
        .map(|rs| {
            let mine: Vec<&ChunkRecord> = chunks
                .iter()
                .filter(|c| c.cluster == cluster && c.storage == storage && &c.replica_set == rs)
                .collect();
            replica_set_timeline(rs, &mine)
        })
        .collect();
    let mut windows: Vec<Window> = Vec::new();
    for b in bases {
        if let Some((from, to)) = base_window(b, &rs_timelines) {
            windows.push(Window {
                from,
                to,
                bases: vec![b.name.clone()],
            });
        }
    }
    let windows = merge(windows);
    let open_gaps = rs_timelines
        .iter()
        .flat_map(|r| {
            r.gaps
                .iter()
                .filter(|g| {
                    !bases
                        .iter()
                        .any(|b| base_point(b, &r.replica_set).is_some_and(|p| p >= g.to))
                })
                .map(|g| OpenGap {
                    replica_set: r.replica_set.clone(),
                    gap: *g,
                })
        })
        .collect();
    Timeline {
        cluster: cluster.to_string(),
        storage: storage.to_string(),
        replica_sets: rs_timelines,
        windows,
        open_gaps,
    }
}

/// The window one backup opens: on every replica set, from its last write there to the
/// end of the segment holding it; the intersection over replica sets.
fn base_window(b: &BackupRecord, sets: &[ReplicaSetTimeline]) -> Option<(OpTime, OpTime)> {
    let mut span: Option<(OpTime, OpTime)> = None;
    for r in sets {
        let point = base_point(b, &r.replica_set)?;
        let seg = r.segment_of(point)?;
        span = Some(match span {
            None => (point, seg.last),
            Some((from, to)) => (from.max(point), to.min(seg.last)),
        });
    }
    span.filter(|(from, to)| from <= to)
}

/// Merges overlapping windows (bases in one segment), keeping every base named.
fn merge(mut windows: Vec<Window>) -> Vec<Window> {
    windows.sort_by_key(|w| (w.from, w.to));
    let mut out: Vec<Window> = Vec::new();
    for w in windows {
        match out.last_mut() {
            Some(prev) if w.from <= prev.to => {
                prev.to = prev.to.max(w.to);
                prev.bases.extend(w.bases);
            }
            _ => out.push(w),
        }
    }
    out
}

/// An optime as people read it: its UTC second, then the exact timestamp.
pub fn optime_text(t: OpTime) -> String {
    let at = DateTime::<Utc>::from_timestamp(i64::from(t.t), 0).map_or_else(
        || "?".to_string(),
        |d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    );
    format!("{at} ({t})")
}

/// Every (cluster, storage) pair that has chunks, with its chunks: what `list` shows even
/// for a schedule no longer declared.
pub fn streams(chunks: &[ChunkRecord]) -> BTreeMap<(String, String), Vec<String>> {
    let mut out: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for c in chunks {
        let sets = out
            .entry((c.cluster.clone(), c.storage.clone()))
            .or_default();
        if !sets.contains(&c.replica_set) {
            sets.push(c.replica_set.clone());
        }
    }
    out
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use tidemark_schema::control::{BackupReplicaSet, RunStatus};
    use tidemark_schema::model::{BackupType, Compression};

    pub(in crate::plan) fn t(s: u32) -> OpTime {
        OpTime { t: s, i: 1 }
    }

    pub(in crate::plan) fn chunk(
        rs: &str,
        after: Option<u32>,
        first: u32,
        last: u32,
        gap: bool,
    ) -> ChunkRecord {
        ChunkRecord {
            cluster: "c".into(),
            storage: "s".into(),
            replica_set: rs.into(),
            after: after.map(t),
            first: t(first),
            last: t(last),
            entries: 1,
            object: String::new(),
            stored_bytes: 10,
            raw_bytes: 10,
            checksum: String::new(),
            compression: Compression::Zstd,
            node: "n".into(),
            written_at: Utc::now(),
            gap: gap.then(|| Gap {
                from: t(after.unwrap_or_default()),
                to: t(first),
                found_at: Utc::now(),
            }),
        }
    }

    pub(in crate::plan) fn base(name: &str, points: &[(&str, u32)]) -> BackupRecord {
        BackupRecord {
            name: name.into(),
            cluster: "c".into(),
            storage: "s".into(),
            schedule: None,
            backup_type: BackupType::Physical,
            status: RunStatus::Done,
            complete: true,
            started_at: Utc::now(),
            finished_at: None,
            last_write: DateTime::<Utc>::from_timestamp(i64::from(points[0].1), 0),
            replica_sets: points
                .iter()
                .map(|(rs, p)| BackupReplicaSet {
                    name: rs.to_string(),
                    node: "n".into(),
                    mongod_version: "7.0.14".into(),
                    uncompressed_bytes: 0,
                    stored_bytes: 0,
                    encryption: None,
                    encryption_recorded: false,
                    storage_options: Default::default(),
                    collections: Default::default(),
                    last_write_optime: Some(t(*p)),
                })
                .collect(),
            deleting: None,
            verification: None,
            incremental: None,
        }
    }

    fn sets(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_sharded_clusters_window_is_the_intersection_of_its_replica_sets() {
        let chunks = vec![
            chunk("cfg", None, 90, 150, false),
            chunk("cfg", Some(150), 150, 200, false),
            chunk("sh1", None, 95, 120, false),
            chunk("sh1", Some(120), 120, 170, false),
        ];
        let b = base("b", &[("cfg", 100), ("sh1", 102)]);
        let tl = timeline("c", "s", &sets(&["cfg", "sh1"]), &chunks, &[&b]);
        assert_eq!(tl.windows.len(), 1, "{tl:?}");
        assert_eq!((tl.windows[0].from, tl.windows[0].to), (t(102), t(170)));
        assert_eq!(
            tl.newest(),
            Some(t(170)),
            "the slowest replica set bounds it"
        );
        // A replica set without chunks has no window at all.
        let tl = timeline("c", "s", &sets(&["cfg", "sh1", "sh2"]), &chunks, &[&b]);
        assert!(tl.windows.is_empty(), "{tl:?}");
        assert_eq!(tl.newest(), None);
    }

    #[test]
    fn a_gap_splits_the_timeline_and_stays_open_until_a_base_follows_it() {
        let chunks = vec![
            chunk("rs", None, 100, 200, false),
            chunk("rs", Some(200), 200, 300, false),
            chunk("rs", Some(300), 400, 500, true),
            chunk("rs", Some(500), 500, 600, false),
        ];
        let before = base("before", &[("rs", 150)]);
        let tl = timeline("c", "s", &sets(&["rs"]), &chunks, &[&before]);
        assert_eq!(tl.replica_sets[0].segments.len(), 2);
        assert_eq!(tl.windows.len(), 1);
        assert_eq!((tl.windows[0].from, tl.windows[0].to), (t(150), t(300)));
        assert_eq!(tl.open_gaps.len(), 1);
        assert_eq!(
            (tl.open_gaps[0].gap.from, tl.open_gaps[0].gap.to),
            (t(300), t(400))
        );
        let after = base("after", &[("rs", 450)]);
        let tl = timeline("c", "s", &sets(&["rs"]), &chunks, &[&before, &after]);
        assert_eq!(tl.windows.len(), 2, "{tl:?}");
        assert_eq!((tl.windows[1].from, tl.windows[1].to), (t(450), t(600)));
        assert!(tl.open_gaps.is_empty(), "a base after the gap bridges it");
    }

    #[test]
    fn bases_in_one_segment_share_one_window_and_a_base_outside_the_chunks_opens_none() {
        let chunks = vec![
            chunk("rs", None, 100, 200, false),
            chunk("rs", Some(200), 200, 300, false),
        ];
        let (a, b, outside) = (
            base("a", &[("rs", 120)]),
            base("b", &[("rs", 250)]),
            base("old", &[("rs", 50)]),
        );
        let tl = timeline("c", "s", &sets(&["rs"]), &chunks, &[&outside, &a, &b]);
        assert_eq!(tl.windows.len(), 1, "{tl:?}");
        assert_eq!(tl.windows[0].bases, vec!["a".to_string(), "b".to_string()]);
        assert_eq!((tl.windows[0].from, tl.windows[0].to), (t(120), t(300)));
    }
}
