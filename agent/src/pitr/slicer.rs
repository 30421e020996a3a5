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
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use tidemark_schema::control::{
    ChunkRecord, FIRST_CHUNK, Gap, SliceStream, SlicerReport, chunk_key, chunk_object_key,
    chunks_prefix,
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
    let mut head = Head::default();
    let mut last_key: Option<String> = None;
    // Reported until a chunk is written again: a retry that finds nothing to do yet has
    // not shown that the failure is gone.
    let mut error: Option<String> = None;
    let mut failures: u32 = 0;
    let mut idle_since: Option<Instant> = None;
    let mut stalled = false;
    let mut conn: Option<Conn> = None;
    loop {
        let Some(stream) = assigned.borrow().clone() else {
            if let Some(last) = &last_key {
                node.slicing.remove(last);
            }
            return;
        };
        let key = super::follow::stream_key(&stream);
        last_key = Some(key.clone());
        let pause = match step(&node, &stream, &mut head, &mut conn).await {
            Ok(Next::Wrote) => {
                (error, failures, idle_since, stalled) = (None, 0, None, false);
                None
            }
            Ok(Next::Due(pause)) => {
                (idle_since, stalled) = (None, false);
                Some(pause)
            }
            Ok(Next::Idle(why)) => {
                // Counted from the newest sliced entry (else from the first idle step): a
                // stall shows before the reconciler would hand the stream over.
                let started = *idle_since.get_or_insert_with(Instant::now);
                let idle = match head.chunk.clone().flatten() {
                    Some(h) => (Utc::now().timestamp() - i64::from(h.last.t)).max(0) as u64,
                    None => started.elapsed().as_secs(),
                };
                if idle > stall_after(stream.span_seconds) {
                    let text = format!("nothing to slice for {idle}s: {why}");
                    if error.as_deref() != Some(text.as_str()) {
                        tracing::warn!(schedule = %stream.schedule, "{text}");
                    }
                    (error, stalled) = (Some(text), true);
                }
                Some(Duration::from_secs(1))
            }
            Err(e) => {
                tracing::warn!(schedule = %stream.schedule, error = %e, "oplog slicing failed; retrying");
                (error, idle_since, stalled) = (Some(e.to_string()), None, false);
                failures += 1;
                (head, conn) = (Head::default(), None);
                // 2, 4, 8, 16, then 32 s: a storage that refuses every write is not asked
                // every two seconds forever.
                Some(RETRY_AFTER * 2u32.pow(failures.min(5) - 1))
            }
        };
        node.slicing.set(
            &key,
            SlicerReport {
                schedule: stream.schedule.clone(),
                storage: stream.storage_name.clone(),
                newest: head.chunk.clone().flatten().map(|h| h.last),
                error: error.clone(),
                stalled,
                at: Utc::now(),
            },
        );
        if let Some(pause) = pause {
            // Woken early when the assignment changes (stopped, or handed to another node).
            let _ =
                tokio::time::timeout(pause.min(Duration::from_secs(60)), assigned.changed()).await;
        }
    }
}

/// Seconds since the newest sliced entry, with nothing majority-committed to slice,
/// before the slicer reports a stall (mongod writes a no-op every 10 s, so a healthy
/// replica set always has something): under the reconciler's handover bound (two spans
/// and a minute), so the stall, which another node would not cure, is seen first.
fn stall_after(span: u64) -> u64 {
    span + 30
}

/// The chain's newest chunk as this slicer last saw it.
#[derive(Default)]
struct Head {
    /// `None` until read; `Some(None)` for an empty timeline.
    chunk: Option<Option<ChunkRecord>>,
    /// When it was read or written. A head older than two spans is read again before the
    /// next claim: a slicer that was paused (or partitioned) while another took over must
    /// not claim under a link retention may have freed meanwhile.
    at: Option<Instant>,
}

/// The clients a stream's steps share.
struct Conn {
    store: BackupStore,
    client: MongodClient,
    storage: tidemark_schema::control::StorageTarget,
}

/// What the slicer does after a step.
enum Next {
    /// A chunk was written (or another slicer's was found): look again at once.
    Wrote,
    /// The next chunk is due after this long.
    Due(Duration),
    /// Nothing new is majority-committed; why.
    Idle(String),
}

/// One step: wait for the next chunk to be due, or cut and claim it.
async fn step(
    node: &Node,
    stream: &SliceStream,
    head: &mut Head,
    conn: &mut Option<Conn>,
) -> Result<Next, AgentError> {
    // One mongod client and one storage client for the stream's life (a new one per step
    // would cost a handshake, and a connection, every second): dropped after a failure,
    // or when the storage settings change.
    if conn.as_ref().is_none_or(|c| c.storage != stream.storage) {
        *conn = Some(Conn {
            store: BackupStore::open(&stream.storage)?,
            client: node.mongod().await?,
            storage: stream.storage.clone(),
        });
    }
    let Some(Conn { store, client, .. }) = conn.as_ref() else {
        unreachable!("just set");
    };
    let stale = head
        .at
        .is_none_or(|at| at.elapsed() > Duration::from_secs(2 * stream.span_seconds + 5));
    if head.chunk.is_none() || stale {
        head.chunk = Some(chain_head(node, stream).await?);
        head.at = Some(Instant::now());
    }
    let current = head.chunk.clone().flatten();
    let wait = due_in(current.as_ref(), stream.span_seconds);
    if !wait.is_zero() {
        return Ok(Next::Due(wait));
    }
    match cut(node, client, store, stream, current.as_ref()).await? {
        Cut::Written(record) => {
            tracing::info!(
                rs = %record.replica_set, first = %record.first, last = %record.last,
                entries = record.entries, bytes = record.stored_bytes,
                gap = record.gap.is_some(), "oplog chunk written"
            );
            head.chunk = Some(Some(*record));
            head.at = Some(Instant::now());
            Ok(Next::Wrote)
        }
        Cut::NothingNew(why) => Ok(Next::Idle(why)),
        Cut::Lost => {
            tracing::info!("another slicer wrote the next chunk first; continuing after it");
            *head = Head::default();
            Ok(Next::Wrote)
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
    /// Nothing majority-committed past the last chunk yet; why.
    NothingNew(String),
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
        return Ok(Cut::NothingNew(format!(
            "{} reports no majority-committed entry (readConcernMajorityOpTime)",
            client.node
        )));
    };
    let from = match head {
        Some(h) => h.last,
        None => first_start(client, stream, majority).await?,
    };
    if from > majority {
        return Ok(Cut::NothingNew(format!(
            "the majority commit point {majority} on {} is behind the last sliced entry {from} \
             (is a majority of the data-bearing voting members up?)",
            client.node
        )));
    }
    let range = read_range(client, from, majority, MAX_CHUNK_BYTES).await?;
    let (Some(first), Some(last)) = (range.first, range.last) else {
        return Ok(Cut::NothingNew(format!(
            "{} holds no oplog entry from {from} to {majority}",
            client.node
        )));
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
        // Only the boundary entry: nothing majority-committed since.
        return Ok(Cut::NothingNew(format!(
            "no entry past {from} is majority-committed on {} (mongod writes a no-op every \
             10 s: is a majority of the data-bearing voting members up?)",
            client.node
        )));
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
    let created = node.control.create(&key, &record).await;
    if matches!(created, Ok(Created::New)) {
        return Ok(Cut::Written(Box::new(record)));
    }
    // Lost the race, or the answer was lost: the record now under the key says whose
    // object the timeline holds. Ours is deleted only when the record is known to name
    // another (or none is there); when that cannot be read, it stays, an orphan at worst.
    match node.control.get::<ChunkRecord>(&key).await {
        Ok(Some(r)) if r.object == object => return Ok(Cut::Written(Box::new(r))),
        Ok(_) => {
            if let Err(d) = store.delete_object(&object).await {
                tracing::warn!(object = %object, error = %d, "cannot remove an unclaimed chunk object");
            }
        }
        Err(e) => {
            tracing::warn!(object = %object, error = %e, "cannot tell whether the chunk was claimed; its object stays");
        }
    }
    match created {
        Ok(_) => Ok(Cut::Lost),
        Err(e) => Err(e.into()),
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
