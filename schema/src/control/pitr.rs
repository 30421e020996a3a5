//! Oplog slicing records: who slices each replica set's oplog, and the index of the
//! chunks written so far. A chunk's record is its create-once claim on the range that
//! follows the previous chunk, which is what keeps two slicers off one range.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ops::StorageTarget;
use crate::manifest::OpTime;

/// Prefix of slicing assignments: `pitr/slicing/<cluster>/<rs>.json`.
pub const SLICING_PREFIX: &str = "pitr/slicing";
/// Prefix of the chunk index: `pitr/chunks/<cluster>/<storage>/<rs>/<after>.json`.
pub const CHUNKS_PREFIX: &str = "pitr/chunks";
/// Where chunk data goes in the backup storage. Resource names are lowercase letters,
/// digits and `-`, so no backup's prefix can be this one.
pub const CHUNK_DATA_PREFIX: &str = "_pitr";

/// `pitr/slicing/<cluster>/<rs>.json`: the streams a replica set's oplog is sliced into,
/// and which node slices each. Written by the leading reconciler only.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlicingAssignment {
    pub cluster: String,
    pub replica_set: String,
    /// One per schedule with `pitr.enabled` (one per storage); empty when slicing stopped.
    pub streams: Vec<SliceStream>,
    /// The epoch of the reconciler that wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// Its seal as read (see `signature.rs`), kept so that the reconciler can tell its own
    /// assignment from one someone else wrote; never set when writing.
    #[serde(default, rename = "signature", skip_serializing_if = "Option::is_none")]
    pub seal: Option<serde_json::Value>,
}

/// One slicing stream: a replica set's oplog into one storage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SliceStream {
    pub schedule: String,
    /// The `BackupStorage` name: part of the chunk index's keys.
    pub storage_name: String,
    pub storage: StorageTarget,
    /// Seconds of oplog per chunk.
    pub span_seconds: u64,
    /// The node that slices (`host:port`).
    pub node: String,
    /// Why this node, as the plan said.
    pub reason: String,
    /// Where a timeline with no chunk yet starts: the newest good backup's last write of
    /// this replica set, so the first window opens at a base; else the newest entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<OpTime>,
    /// When this node was given the stream: a node that has written no chunk two spans
    /// (and a minute) after it is handed over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
}

/// A range of the oplog the slicer found gone: entries after `from` and before `to` were
/// truncated from the oplog before they were sliced. No restore can cross it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Gap {
    /// The end of the last chunk before the gap.
    pub from: OpTime,
    /// The oldest entry the oplog still held: the first of the chunk after the gap.
    pub to: OpTime,
    pub found_at: DateTime<Utc>,
}

/// `pitr/chunks/<cluster>/<storage>/<rs>/<after>.json`: one chunk of oplog in storage.
/// Created once; its key is the end of the chunk it continues (`after`), so of two
/// slicers continuing one timeline exactly one can write the next chunk.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChunkRecord {
    pub cluster: String,
    pub storage: String,
    pub replica_set: String,
    /// The last entry of the previous chunk; `None` for a timeline's first chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<OpTime>,
    /// The chunk's first and last entries: it holds every entry in `first..=last`. Without
    /// a gap, `first == after` (the boundary entry is in both chunks).
    pub first: OpTime,
    pub last: OpTime,
    pub entries: u64,
    /// The object in the backup storage, relative to its URL.
    pub object: String,
    pub stored_bytes: u64,
    /// The BSON bytes before compression.
    pub raw_bytes: u64,
    /// blake3 of the stored object, hex.
    pub checksum: String,
    pub compression: crate::model::Compression,
    pub node: String,
    pub written_at: DateTime<Utc>,
    /// Set when the oplog no longer held `after`: the entries between were lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap: Option<Gap>,
}

/// A slicer's state as its agent's heartbeat carries it: `status` shows a slicer that
/// fails (a storage it cannot write, a mongod it cannot read) by its error, not only by a
/// growing lag.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlicerReport {
    pub schedule: String,
    pub storage: String,
    /// The last entry of the newest chunk this slicer knows of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest: Option<OpTime>,
    /// The last failure, until a chunk is written again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Nothing majority-committed to slice for longer than a span and half a minute: the
    /// commit point is stuck, which another node would not change; the reconciler keeps
    /// the stream where it is.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stalled: bool,
    pub at: DateTime<Utc>,
}

/// Prefix of the chunk-index summaries: `pitr/index/<cluster>/<storage>/<rs>.json`.
pub const CHUNK_INDEX_PREFIX: &str = "pitr/index";

/// `pitr/index/<cluster>/<storage>/<rs>.json`: every chunk record of one timeline in one
/// object, rewritten by the leading reconciler when chunks come or go. A reader takes it,
/// then reads only the records listed under `pitr/chunks/` that it does not hold: one GET
/// instead of one per chunk. The records under `pitr/chunks/` stay the truth.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChunkIndex {
    pub records: Vec<ChunkRecord>,
}

pub fn chunk_index_key(cluster: &str, storage: &str, rs: &str) -> String {
    format!("{CHUNK_INDEX_PREFIX}/{cluster}/{storage}/{rs}.json")
}

/// A timestamp as a key part that sorts like the timestamp: `tttttttttt.iiiiiiiiii`.
pub fn optime_key_part(t: OpTime) -> String {
    format!("{:010}.{:010}", t.t, t.i)
}

/// The name the first chunk of a timeline is claimed under.
pub const FIRST_CHUNK: &str = "first";

pub fn slicing_key(cluster: &str, rs: &str) -> String {
    format!("{SLICING_PREFIX}/{cluster}/{rs}.json")
}

pub fn chunks_prefix(cluster: &str, storage: &str, rs: &str) -> String {
    format!("{CHUNKS_PREFIX}/{cluster}/{storage}/{rs}/")
}

/// The claim of the chunk that continues after `after` (the first chunk: `None`).
pub fn chunk_key(cluster: &str, storage: &str, rs: &str, after: Option<OpTime>) -> String {
    let link = after.map_or_else(|| FIRST_CHUNK.to_string(), optime_key_part);
    format!("{}{link}.json", chunks_prefix(cluster, storage, rs))
}

/// The chunk's data in the backup storage; `nonce` keeps two writers' objects apart until
/// one of them wins the claim.
pub fn chunk_object_key(
    cluster: &str,
    rs: &str,
    first: OpTime,
    last: OpTime,
    nonce: &str,
) -> String {
    format!(
        "{CHUNK_DATA_PREFIX}/{cluster}/{rs}/{}-{}.{nonce}.oplog",
        optime_key_part(first),
        optime_key_part(last)
    )
}

impl ChunkRecord {
    /// This record's key in the control plane.
    pub fn key(&self) -> String {
        chunk_key(&self.cluster, &self.storage, &self.replica_set, self.after)
    }
}

/// Which oplog entries a point-in-time restore applies: every entry at or before `until`;
/// with a wall-clock target (`wall`), those of `until`'s second only while their `wall` is
/// at or before it. The entries applied are always a prefix of the oplog: replay stops at
/// the first entry not kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplayTarget {
    pub until: OpTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall: Option<DateTime<Utc>>,
}

impl ReplayTarget {
    /// The target of a wall-clock instant; `None` outside a timestamp's seconds.
    pub fn at_wall(at: DateTime<Utc>) -> Option<Self> {
        let t = u32::try_from(at.timestamp()).ok()?;
        Some(ReplayTarget {
            until: OpTime { t, i: u32::MAX },
            wall: Some(at),
        })
    }

    /// Whether the entry at `ts`, written at `wall_ms` (its `wall`, ms since the epoch),
    /// is applied.
    pub fn keeps(&self, ts: OpTime, wall_ms: Option<i64>) -> bool {
        if ts > self.until {
            return false;
        }
        match (self.wall, wall_ms) {
            (Some(limit), Some(w)) if ts.t == self.until.t => w <= limit.timestamp_millis(),
            _ => true,
        }
    }

    /// The oplog a replica set must have sliced to prove it holds every kept entry: the
    /// target itself for a cluster time; for a wall time, an entry of a later second.
    pub fn needs(&self) -> OpTime {
        match self.wall {
            None => self.until,
            Some(_) => OpTime {
                t: self.until.t.saturating_add(1),
                i: 0,
            },
        }
    }

    /// The newest base point a replay can start from: a base must not already hold a
    /// write after the target (of a wall-clock target's second, its wall is unknown).
    pub fn latest_base(&self) -> OpTime {
        match self.wall {
            None => self.until,
            Some(_) => OpTime {
                t: self.until.t.saturating_sub(1),
                i: u32::MAX,
            },
        }
    }
}

impl std::fmt::Display for ReplayTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.wall {
            Some(w) => write!(
                f,
                "{} (wall clock)",
                w.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            ),
            None => write!(f, "{}", self.until),
        }
    }
}

/// One chunk a point-in-time restore downloads and applies, as its record names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChunkRef {
    pub object: String,
    pub first: OpTime,
    pub last: OpTime,
    pub entries: u64,
    pub stored_bytes: u64,
    pub raw_bytes: u64,
    pub checksum: String,
    pub compression: crate::model::Compression,
}

impl From<&ChunkRecord> for ChunkRef {
    fn from(c: &ChunkRecord) -> Self {
        ChunkRef {
            object: c.object.clone(),
            first: c.first,
            last: c.last,
            entries: c.entries,
            stored_bytes: c.stored_bytes,
            raw_bytes: c.raw_bytes,
            checksum: c.checksum.clone(),
            compression: c.compression,
        }
    }
}

impl PointInTimeReplay {
    /// The time each node may take, before `ready`, to download and check its chunks
    /// (at a pessimistic 4 MiB/s, plus a minute): added to the restore's go timeout, so a
    /// long oplog does not abort the restore at its gate.
    pub fn check_allowance(&self) -> std::time::Duration {
        let most: u64 = self
            .chunks
            .values()
            .map(|c| c.iter().map(|c| c.stored_bytes).sum())
            .max()
            .unwrap_or(0);
        std::time::Duration::from_secs(60 + most / (4 << 20))
    }
}

/// The oplog replay of a point-in-time restore, carried by its op: after recovering the
/// base, every node applies its replica set's chunks from the base's last write up to
/// the target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PointInTimeReplay {
    pub target: ReplayTarget,
    /// The backup's replica-set name → its chunks, oldest first; they cover the base's
    /// last write through the target without a hole. In the backup's storage.
    pub chunks: std::collections::BTreeMap<String, Vec<ChunkRef>>,
}
