//! One slicing stream: every span, the entries from the last chunk's end up to the
//! majority commit point become one compressed object in storage and one create-once
//! record in the chunk index.
//!
//! The record's key is the end of the chunk before, so of two slicers continuing one
//! timeline (a handover whose old slicer has not yet heard) exactly one claims the next
//! range; the other deletes its object, reads the new head and goes on from there. Before
//! each chunk the slicer proves the oplog still holds the last chunk's end (the first
//! entry read must be exactly it); when it does not, the chunk records the gap.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use tidemark_schema::control::{
    ChunkRecord, FIRST_CHUNK, Gap, SliceStream, chunk_key, chunk_object_key, chunks_prefix,
};
use tidemark_schema::manifest::OpTime;
use tidemark_store::control::Created;
use tidemark_store::storage::{BackupStore, compress};
use tokio::sync::watch;

use super::source::{entry_at_or_before, majority_point, oldest_entry, read_range};
use crate::error::AgentError;
use crate::mongod::MongodClient;
use crate::node::Node;

/// The most BSON one chunk holds: a slicer catching up after an outage writes several.
pub const MAX_CHUNK_BYTES: usize = 64 * 1024 * 1024;

/// How long to wait after a failed cut before the next try.
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// Runs the stream until `assigned` says it is no longer ours.
pub async fn run(node: Arc<Node>, mut assigned: watch::Receiver<Option<SliceStream>>) {
    let mut head: Option<Option<ChunkRecord>> = None;
    loop {
        let Some(stream) = assigned.borrow().clone() else {
            return;
        };
        let step = async {
            let store = BackupStore::open(&stream.storage)?;
            let client = node.mongod().await?;
            if head.is_none() {
                head = Some(chain_head(&node, &stream).await?);
            }
            let current = head.clone().flatten();
            let wait = due_in(current.as_ref(), stream.span_seconds);
            if !wait.is_zero() {
                return Ok::<_, AgentError>(Some(wait));
            }
            match cut(&node, &client, &store, &stream, current.as_ref()).await? {
                Cut::Written(record) => {
                    tracing::info!(
                        rs = %record.replica_set, first = %record.first, last = %record.last,
                        entries = record.entries, bytes = record.stored_bytes,
                        gap = record.gap.is_some(), "oplog chunk written"
                    );
                    head = Some(Some(*record));
                    Ok(None)
                }
                Cut::NothingNew => Ok(Some(Duration::from_secs(1))),
                Cut::Lost => {
                    tracing::info!(
                        "another slicer wrote the next chunk first; continuing after it"
                    );
                    head = None;
                    Ok(None)
                }
            }
        };
        let pause = match step.await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(schedule = %stream.schedule, error = %e, "oplog slicing failed; retrying");
                head = None;
                Some(RETRY_AFTER)
            }
        };
        if let Some(pause) = pause {
            // Woken early when the assignment changes (stopped, or handed to another node).
            let _ =
                tokio::time::timeout(pause.min(Duration::from_secs(5)), assigned.changed()).await;
        }
    }
}

/// How long until the next chunk is due: one span after the newest chunk's last entry.
fn due_in(head: Option<&ChunkRecord>, span: u64) -> Duration {
    let Some(h) = head else {
        return Duration::ZERO;
    };
    let due = i64::from(h.last.t) + span as i64;
    let now = Utc::now().timestamp();
    Duration::from_secs(due.saturating_sub(now).max(0) as u64)
}

/// The newest chunk of the stream's timeline (the one nothing continues yet).
pub async fn chain_head(
    node: &Node,
    stream: &SliceStream,
) -> Result<Option<ChunkRecord>, AgentError> {
    let prefix = chunks_prefix(&node.cluster, &stream.storage_name, &node.replica_set);
    let keys = node.control.keys(&prefix).await?;
    let newest = keys
        .iter()
        .filter(|k| k.ends_with(".json"))
        .filter(|k| !k.ends_with(&format!("/{FIRST_CHUNK}.json")))
        .max()
        .or_else(|| {
            keys.iter()
                .find(|k| k.ends_with(&format!("/{FIRST_CHUNK}.json")))
        });
    match newest {
        Some(key) => Ok(node.control.get::<ChunkRecord>(key).await?),
        None => Ok(None),
    }
}

enum Cut {
    Written(Box<ChunkRecord>),
    NothingNew,
    /// Another slicer claimed the range first.
    Lost,
}

/// Cuts the chunk after `head` (or the timeline's first) and claims it.
async fn cut(
    node: &Node,
    client: &MongodClient,
    store: &BackupStore,
    stream: &SliceStream,
    head: Option<&ChunkRecord>,
) -> Result<Cut, AgentError> {
    let Some(majority) = majority_point(client).await? else {
        return Ok(Cut::NothingNew);
    };
    let from = match head {
        Some(h) => h.last,
        None => first_start(client, stream, majority).await?,
    };
    if from > majority {
        return Ok(Cut::NothingNew);
    }
    let range = read_range(client, from, majority, MAX_CHUNK_BYTES).await?;
    let (Some(first), Some(last)) = (range.first, range.last) else {
        return Ok(Cut::NothingNew);
    };
    let gap = match head {
        Some(h) if first != h.last => Some(Gap {
            from: h.last,
            to: first,
            found_at: Utc::now(),
        }),
        _ => None,
    };
    if head.is_some() && gap.is_none() && range.entries <= 1 {
        return Ok(Cut::NothingNew); // only the boundary entry: nothing written since
    }
    if let Some(g) = &gap {
        tracing::error!(
            rs = %node.replica_set, from = %g.from, to = %g.to,
            "the oplog no longer holds the last sliced entry: the entries between were lost (a gap); slicing goes on from the oldest entry"
        );
    }
    let body = compress(
        stream.storage.compression,
        stream.storage.compression_level,
        &range.raw,
    )
    .map_err(|e| AgentError::Io {
        path: "oplog chunk (compressing)".into(),
        source: e,
    })?;
    let nonce = blake3::hash(
        format!(
            "{}{}",
            node.id,
            Utc::now().timestamp_nanos_opt().unwrap_or_default()
        )
        .as_bytes(),
    )
    .to_hex()[..8]
        .to_string();
    let object = chunk_object_key(&node.cluster, &node.replica_set, first, last, &nonce);
    let stored = store.put_blob_create(&object, Bytes::from(body)).await?;
    let record = ChunkRecord {
        cluster: node.cluster.clone(),
        storage: stream.storage_name.clone(),
        replica_set: node.replica_set.clone(),
        after: head.map(|h| h.last),
        first,
        last,
        entries: range.entries,
        object: object.clone(),
        stored_bytes: stored.stored_bytes,
        raw_bytes: range.raw.len() as u64,
        checksum: stored.checksum,
        compression: stream.storage.compression,
        node: node.id.clone(),
        written_at: Utc::now(),
        gap,
    };
    let key = chunk_key(
        &record.cluster,
        &record.storage,
        &record.replica_set,
        record.after,
    );
    match node.control.create(&key, &record).await? {
        Created::New => Ok(Cut::Written(Box::new(record))),
        Created::Existed => {
            store.delete_object(&object).await?;
            Ok(Cut::Lost)
        }
    }
}

/// Where a timeline's first chunk starts: at the newest base's last write (the entry at
/// or before it, so the base's point is inside the chunk) while the oplog still holds
/// it, else at the newest majority-committed entry (nothing older is sliced).
async fn first_start(
    client: &MongodClient,
    stream: &SliceStream,
    majority: OpTime,
) -> Result<OpTime, AgentError> {
    let oldest = oldest_entry(client).await?;
    if let (Some(s), Some(o)) = (stream.start_at, oldest)
        && o <= s
        && s <= majority
        && let Some(at) = entry_at_or_before(client, s).await?
    {
        return Ok(at);
    }
    Ok(majority)
}
