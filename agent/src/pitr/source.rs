//! What slicing reads from mongod: the majority commit point (only entries at or before
//! it are sliced: a newer one could still be rolled back), the oldest entry the oplog
//! still holds, and a range of entries as raw BSON.

use futures::TryStreamExt;
use mongodb::bson::{Bson, RawDocumentBuf, Timestamp, doc};
use tidemark_schema::manifest::OpTime;

use crate::mongod::{MongodClient, MongodError};

fn ts(t: OpTime) -> Timestamp {
    Timestamp {
        time: t.t,
        increment: t.i,
    }
}

fn optime(b: Option<&Bson>) -> Option<OpTime> {
    match b {
        Some(Bson::Timestamp(t)) => Some(OpTime {
            t: t.time,
            i: t.increment,
        }),
        _ => None,
    }
}

fn unexpected(client: &MongodClient, message: String) -> MongodError {
    MongodError::Unexpected {
        node: client.node.clone(),
        message,
    }
}

/// The newest majority-committed entry this node has applied
/// (`replSetGetStatus.optimes.readConcernMajorityOpTime`). Not `lastCommittedOpTime`: on a
/// lagging secondary that can be ahead of what the node holds, and a read bounded by it
/// would miss the entries in between.
pub async fn majority_point(client: &MongodClient) -> Result<Option<OpTime>, MongodError> {
    let status = client.admin(doc! {"replSetGetStatus": 1}).await?;
    Ok(status
        .get_document("optimes")
        .ok()
        .and_then(|o| o.get_document("readConcernMajorityOpTime").ok())
        .and_then(|c| optime(c.get("ts")))
        .filter(|t| t.t > 0))
}

/// The oldest entry the oplog holds.
pub async fn oldest_entry(client: &MongodClient) -> Result<Option<OpTime>, MongodError> {
    let reply = client
        .client()
        .database("local")
        .run_command(doc! {
            "find": "oplog.rs", "filter": {}, "sort": {"$natural": 1}, "limit": 1,
            "projection": {"ts": 1}, "singleBatch": true,
        })
        .await
        .map_err(|e| unexpected(client, format!("reading the oldest oplog entry: {e}")))?;
    let first = reply
        .get_document("cursor")
        .ok()
        .and_then(|c| c.get_array("firstBatch").ok())
        .and_then(|b| b.first())
        .and_then(Bson::as_document)
        .and_then(|d| optime(d.get("ts")));
    Ok(first)
}

/// The newest entry at or before `t` (a backup's last write may fall between entries).
pub async fn entry_at_or_before(
    client: &MongodClient,
    t: OpTime,
) -> Result<Option<OpTime>, MongodError> {
    let reply = client
        .client()
        .database("local")
        .run_command(doc! {
            "find": "oplog.rs", "filter": {"ts": {"$lte": ts(t)}}, "sort": {"$natural": -1},
            "limit": 1, "projection": {"ts": 1}, "singleBatch": true,
        })
        .await
        .map_err(|e| unexpected(client, format!("reading the oplog at {t}: {e}")))?;
    Ok(reply
        .get_document("cursor")
        .ok()
        .and_then(|c| c.get_array("firstBatch").ok())
        .and_then(|b| b.first())
        .and_then(Bson::as_document)
        .and_then(|d| optime(d.get("ts"))))
}

/// Entries with `from <= ts <= to`, in oplog order, as raw BSON; stops after the entry
/// that passes `max_bytes`. Returns the bytes, the count and the first and last optimes.
pub struct Range {
    pub raw: Vec<u8>,
    pub entries: u64,
    pub first: Option<OpTime>,
    pub last: Option<OpTime>,
}

pub async fn read_range(
    client: &MongodClient,
    from: OpTime,
    to: OpTime,
    max_bytes: usize,
) -> Result<Range, MongodError> {
    let coll = client
        .client()
        .database("local")
        .collection::<RawDocumentBuf>("oplog.rs");
    let mut cursor = coll
        .find(doc! {"ts": {"$gte": ts(from), "$lte": ts(to)}})
        .sort(doc! {"$natural": 1})
        .batch_size(5000)
        .await
        .map_err(|e| unexpected(client, format!("reading the oplog from {from}: {e}")))?;
    let mut range = Range {
        raw: Vec::new(),
        entries: 0,
        first: None,
        last: None,
    };
    while let Some(entry) = cursor
        .try_next()
        .await
        .map_err(|e| unexpected(client, format!("reading the oplog from {from}: {e}")))?
    {
        let t = match entry.get("ts") {
            Ok(Some(mongodb::bson::RawBsonRef::Timestamp(t))) => OpTime {
                t: t.time,
                i: t.increment,
            },
            _ => {
                return Err(unexpected(
                    client,
                    "an oplog entry without a timestamp".into(),
                ));
            }
        };
        range.first.get_or_insert(t);
        range.last = Some(t);
        range.entries += 1;
        range.raw.extend_from_slice(entry.as_bytes());
        if range.raw.len() >= max_bytes {
            break;
        }
    }
    Ok(range)
}
