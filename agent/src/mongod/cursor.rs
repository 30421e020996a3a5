//! PSMDB's `$backupCursor`: open it, read the file list, keep it alive while files are
//! copied, extend it to a cluster-wide point, close it.
//!
//! The cursor pins the listed files: mongod takes no checkpoint over them while it is open.
//! PSMDB kills a backup cursor that sees no `getMore` for a while, so a task sends one on
//! an interval until the cursor is closed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bson::{Bson, Document, doc};
use mongodb::ClientSession;
use tidemark_schema::manifest::OpTime;
use tokio::sync::Mutex;

use super::client::{MongodClient, MongodError};

#[derive(Clone, Debug, PartialEq)]
pub struct CursorMetadata {
    pub backup_id: Bson,
    pub dbpath: PathBuf,
    pub oplog_start: Option<OpTime>,
    pub oplog_end: Option<OpTime>,
    pub checkpoint_timestamp: Option<OpTime>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CursorFile {
    pub path: PathBuf,
    /// `/`-separated, relative to the dbPath.
    pub relative: String,
    /// The bytes to copy (`fileSize`); extension files carry none and are copied whole.
    pub size: Option<u64>,
    /// An incremental cursor's changed ranges of the file (`offset`, `length`), in the
    /// order listed; empty when it listed the file without a range (unchanged since the
    /// source, or not an incremental cursor).
    pub ranges: Vec<(u64, u64)>,
}

pub struct BackupCursor {
    client: MongodClient,
    session: Arc<Mutex<ClientSession>>,
    cursor_id: i64,
    pub metadata: CursorMetadata,
    pub files: Vec<CursorFile>,
    keepalive: Option<tokio::task::JoinHandle<()>>,
    /// The first keep-alive failure: once the cursor is gone, files are no longer pinned
    /// and the backup must not be trusted.
    lost: Arc<std::sync::Mutex<Option<String>>>,
}

const NS: &str = "$cmd.aggregate";

fn optime(doc: Option<&Bson>) -> Option<OpTime> {
    match doc? {
        Bson::Timestamp(ts) => Some(OpTime {
            t: ts.time,
            i: ts.increment,
        }),
        Bson::Document(d) => optime(d.get("ts")),
        _ => None,
    }
}

fn to_ts(t: OpTime) -> bson::Timestamp {
    bson::Timestamp {
        time: t.t,
        increment: t.i,
    }
}

impl BackupCursor {
    /// Opens the cursor and reads the whole file list.
    pub async fn open(
        client: &MongodClient,
        keepalive: Duration,
    ) -> Result<BackupCursor, MongodError> {
        Self::open_with(client, keepalive, Document::new()).await
    }

    /// Opens the cursor with `$backupCursor`'s options (`incrementalBackup`,
    /// `thisBackupName`, …) and reads the whole file list.
    pub async fn open_with(
        client: &MongodClient,
        keepalive: Duration,
        options: Document,
    ) -> Result<BackupCursor, MongodError> {
        let err = |command: &str, e: mongodb::error::Error| MongodError::Command {
            node: client.node.clone(),
            command: command.to_string(),
            message: e.to_string(),
        };
        let mut session = client
            .client()
            .start_session()
            .await
            .map_err(|e| err("startSession", e))?;
        let reply = client
            .client()
            .database("admin")
            .run_command(
                doc! {"aggregate": 1, "pipeline": [{"$backupCursor": options}], "cursor": {}},
            )
            .session(&mut session)
            .await
            .map_err(|e| err("$backupCursor", e))?;
        let cursor = reply
            .get_document("cursor")
            .map_err(|_| unexpected(client, "no cursor in the $backupCursor reply"))?;
        let cursor_id = cursor.get_i64("id").unwrap_or(0);
        let mut docs: Vec<Document> = batch(cursor, "firstBatch");
        let mut id = cursor_id;
        // Read until the list is exhausted. A PSMDB backup cursor stays open after its last
        // document; it answers further getMores with empty batches until it is killed.
        while id != 0 {
            let more = client
                .client()
                .database("admin")
                .run_command(doc! {"getMore": id, "collection": NS})
                .session(&mut session)
                .await
                .map_err(|e| err("getMore", e))?;
            let c = more
                .get_document("cursor")
                .map_err(|_| unexpected(client, "no cursor in a getMore reply"))?;
            let next = batch(c, "nextBatch");
            id = c.get_i64("id").unwrap_or(0);
            if next.is_empty() {
                break;
            }
            docs.extend(next);
        }
        let mut iter = docs.into_iter();
        let meta = iter
            .next()
            .and_then(|d| d.get_document("metadata").ok().cloned())
            .ok_or_else(|| {
                unexpected(client, "the backup cursor's first document has no metadata")
            })?;
        let dbpath = PathBuf::from(meta.get_str("dbpath").unwrap_or_default());
        let metadata = CursorMetadata {
            backup_id: meta.get("backupId").cloned().unwrap_or(Bson::Null),
            oplog_start: optime(meta.get("oplogStart")),
            oplog_end: optime(meta.get("oplogEnd")),
            checkpoint_timestamp: optime(meta.get("checkpointTimestamp")),
            dbpath,
        };
        let mut files: Vec<CursorFile> = Vec::new();
        for d in iter {
            let f = cursor_file(client, &metadata.dbpath, &d)?;
            // An incremental cursor lists a changed file once per changed block.
            match files.last_mut() {
                Some(last) if last.relative == f.relative => last.ranges.extend(f.ranges),
                _ => files.push(f),
            }
        }
        let session = Arc::new(Mutex::new(session));
        let lost = Arc::new(std::sync::Mutex::new(None));
        let keepalive = (cursor_id != 0).then(|| {
            spawn_keepalive(
                client.clone(),
                session.clone(),
                cursor_id,
                keepalive,
                lost.clone(),
            )
        });
        Ok(BackupCursor {
            client: client.clone(),
            session,
            cursor_id,
            metadata,
            files,
            keepalive,
            lost,
        })
    }

    /// The `$clusterTime` the node sent with the cursor (its session's), as extended
    /// JSON: what another replica set's node is told so that it reaches this point.
    pub async fn cluster_time(&self) -> Option<serde_json::Value> {
        let session = self.session.lock().await;
        let ct = session.cluster_time()?;
        bson::serialize_to_bson(ct)
            .ok()
            .map(|b| b.into_canonical_extjson())
    }

    /// `$backupCursorExtend`: waits until the node has `timestamp` and returns the journal
    /// files written since the cursor opened, to be copied whole. `gossip` is a
    /// `$clusterTime` from the replica set that reached `timestamp`, sent along so that an
    /// idle node's clock (and its primary's periodic no-op) moves past it.
    pub async fn extend(
        &self,
        timestamp: OpTime,
        gossip: Option<&serde_json::Value>,
    ) -> Result<Vec<CursorFile>, MongodError> {
        let mut session = self.session.lock().await;
        if let Some(ct) = gossip
            .and_then(|g| bson::Bson::try_from(g.clone()).ok())
            .and_then(|b| bson::deserialize_from_bson::<mongodb::ClusterTime>(b).ok())
        {
            session.advance_cluster_time(&ct);
        }
        let reply = self
            .client
            .client()
            .database("admin")
            .run_command(doc! {
                "aggregate": 1,
                "pipeline": [{"$backupCursorExtend": {"backupId": self.metadata.backup_id.clone(), "timestamp": to_ts(timestamp)}}],
                "cursor": {},
            })
            .session(&mut *session)
            .await
            .map_err(|e| MongodError::Command {
                node: self.client.node.clone(),
                command: "$backupCursorExtend".into(),
                message: e.to_string(),
            })?;
        let cursor = reply
            .get_document("cursor")
            .map_err(|_| unexpected(&self.client, "no cursor in the $backupCursorExtend reply"))?;
        batch(cursor, "firstBatch")
            .iter()
            .map(|d| cursor_file(&self.client, &self.metadata.dbpath, d))
            .map(|f| f.map(|f| CursorFile { size: None, ..f }))
            .collect()
    }

    /// Closes the cursor; mongod may checkpoint over the files again.
    pub async fn close(mut self) -> Result<(), MongodError> {
        if let Some(k) = self.keepalive.take() {
            k.abort();
        }
        if let Some(why) = self.lost.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(unexpected(
                &self.client,
                &format!(
                    "the backup cursor was lost while files were copied ({why}): the files \
                     were no longer pinned, so this backup cannot be trusted"
                ),
            ));
        }
        if self.cursor_id == 0 {
            return Ok(());
        }
        // The driver refuses killCursors inside a session; cursors are killed by id.
        let reply = self
            .client
            .client()
            .database("admin")
            .run_command(doc! {"killCursors": NS, "cursors": [self.cursor_id]})
            .await
            .map_err(|e| MongodError::Command {
                node: self.client.node.clone(),
                command: "killCursors".into(),
                message: e.to_string(),
            })?;
        // A cursor mongod no longer knew had died earlier: the copy was not pinned.
        if reply
            .get_array("cursorsNotFound")
            .is_ok_and(|a| !a.is_empty())
        {
            return Err(unexpected(
                &self.client,
                "the backup cursor was already gone when the copy ended; this backup cannot be trusted",
            ));
        }
        Ok(())
    }
}

impl Drop for BackupCursor {
    fn drop(&mut self) {
        if let Some(k) = self.keepalive.take() {
            k.abort();
        }
    }
}

fn spawn_keepalive(
    client: MongodClient,
    session: Arc<Mutex<ClientSession>>,
    id: i64,
    every: Duration,
    lost: Arc<std::sync::Mutex<Option<String>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let mut s = session.lock().await;
            let result = client
                .client()
                .database("admin")
                .run_command(doc! {"getMore": id, "collection": NS})
                .session(&mut *s)
                .await;
            if let Err(e) = result {
                tracing::warn!(node = %client.node, error = %e, "backup cursor keep-alive failed");
                lost.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert_with(|| e.to_string());
                return;
            }
        }
    })
}

fn batch(cursor: &Document, key: &str) -> Vec<Document> {
    cursor
        .get_array(key)
        .map(|a| a.iter().filter_map(Bson::as_document).cloned().collect())
        .unwrap_or_default()
}

fn unexpected(client: &MongodClient, message: &str) -> MongodError {
    MongodError::Unexpected {
        node: client.node.clone(),
        message: message.to_string(),
    }
}

/// A listed file, made relative to the dbPath. A file outside it is refused: a backup
/// must never copy (or later restore) anything outside the data directory.
fn cursor_file(
    client: &MongodClient,
    dbpath: &Path,
    d: &Document,
) -> Result<CursorFile, MongodError> {
    let name = d
        .get_str("filename")
        .map_err(|_| unexpected(client, "a backup cursor document has no filename"))?;
    let path = PathBuf::from(name);
    let relative = path
        .strip_prefix(dbpath)
        .map_err(|_| {
            unexpected(
                client,
                &format!(
                    "the backup cursor lists {name}, outside the dbPath {}",
                    dbpath.display()
                ),
            )
        })?
        .to_string_lossy()
        .replace('\\', "/");
    let number = |key: &str| match d.get(key) {
        Some(Bson::Int64(n)) => Some(*n as u64),
        Some(Bson::Int32(n)) => Some(*n as u64),
        _ => None,
    };
    let ranges = match (number("offset"), number("length")) {
        (Some(offset), Some(length)) if length > 0 => vec![(offset, length)],
        _ => Vec::new(),
    };
    Ok(CursorFile {
        path,
        relative,
        size: number("fileSize"),
        ranges,
    })
}
