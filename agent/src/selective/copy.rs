//! Copying one collection from the scratch standalone into the running cluster: its
//! options and indexes on a staging collection, then its documents in batches (read and
//! written at once, so the copy goes at the speed of the slower side), or, for `merge`,
//! its documents upserted by `_id` into the existing target. Progress goes into the op's
//! `import` report at most every two seconds.

use std::time::{Duration, Instant};

use bson::{Bson, Document, RawDocumentBuf, doc};
use futures::TryStreamExt;
use serde_json::json;
use tidemark_schema::control::{Op, Phase, PhaseStatus};

use super::live::{Live, Ns};
use super::plan::NsCopy;
use crate::error::AgentError;
use crate::mongod::{MongodClient, MongodError};
use crate::node::{Details, Node};

/// Documents per batch and the bytes a batch stops at. Inserts go in large batches (few
/// round trips; the driver splits them under mongod's 48 MB message limit); upserts in
/// smaller ones, as each is one `update` command under the 16 MB command limit.
const INSERT_BATCH: (usize, usize) = (10_000, 32 << 20);
const UPSERT_BATCH: (usize, usize) = (1_000, 8 << 20);
/// Batches read ahead of the writer.
const READ_AHEAD: usize = 4;
const REPORT_EVERY: Duration = Duration::from_secs(2);
/// Tries of one upsert batch when the set does not answer (a failover takes seconds).
const UPSERT_ATTEMPTS: u32 = 5;

/// Progress over the whole restore, reported to the control plane.
pub struct Progress<'a> {
    node: &'a Node,
    op: &'a Op,
    began: Instant,
    last: Option<Instant>,
    pub done: u64,
    pub total: u64,
    /// Merge targets written to so far (they may be partly merged if the agent dies).
    pub merging: Vec<String>,
    /// When the control plane was last asked whether the op was cancelled.
    asked: Instant,
}

impl<'a> Progress<'a> {
    pub fn new(node: &'a Node, op: &'a Op, total: u64) -> Progress<'a> {
        Progress {
            node,
            op,
            began: Instant::now(),
            last: None,
            done: 0,
            total,
            merging: Vec::new(),
            asked: Instant::now(),
        }
    }

    /// Stops the copy once the op's author ended it (a cancel writes `abort.json`; a
    /// reconciler that lost this agent writes the result): asked at most every two seconds
    /// unless `now`, so it takes effect within a batch or two. A control plane that does
    /// not answer is no reason to stop.
    pub async fn check_ended(&mut self, now: bool) -> Result<(), AgentError> {
        if !now && self.asked.elapsed() < REPORT_EVERY {
            return Ok(());
        }
        self.asked = Instant::now();
        match self.node.author_ended(self.op).await {
            Ok(Some(why)) => Err(AgentError::EndedByAuthor(why)),
            Ok(None) => Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read whether the op was cancelled");
                Ok(())
            }
        }
    }

    /// Counts `n` more documents of `c`; reports when the last report is old enough or
    /// `force`. A report that cannot be written is logged, never fatal to the copy.
    pub async fn advance(&mut self, c: &NsCopy, ns_done: u64, n: u64, force: bool) {
        self.done += n;
        if !force && self.last.is_some_and(|l| l.elapsed() < REPORT_EVERY) {
            return;
        }
        self.last = Some(Instant::now());
        let secs = self.began.elapsed().as_secs_f64().max(1e-3);
        let rate = self.done as f64 / secs;
        let eta = (rate > 0.0).then(|| (self.total.saturating_sub(self.done)) as f64 / rate);
        let message = format!(
            "{} → {}: {ns_done} of {} documents; all: {} of {} ({:.0}/s{})",
            c.source,
            c.target,
            c.documents,
            self.done,
            self.total,
            rate,
            eta.map_or(String::new(), |e| format!(", ETA {e:.0} s"))
        );
        let mut d = Details::new();
        d.insert("namespace".into(), json!(c.source.to_string()));
        d.insert("documentsCopied".into(), json!(self.done));
        d.insert("documentsTotal".into(), json!(self.total));
        d.insert("documentsPerSecond".into(), json!(rate));
        d.insert("etaSeconds".into(), json!(eta));
        d.insert("merging".into(), json!(self.merging));
        let wrote = self
            .node
            .report(self.op, Phase::Import, PhaseStatus::Running, message, d)
            .await;
        if let Err(e) = wrote {
            tracing::warn!(error = %e, "cannot write the import progress report");
        }
    }
}

/// Creates `dest` with the collection's options and secondary indexes.
pub async fn create_like(live: &Live, c: &NsCopy, dest: &Ns) -> Result<(), AgentError> {
    let mut create = doc! {"create": &dest.coll};
    create.extend(c.options.clone());
    live.command(&dest.db, create).await?;
    if !c.indexes.is_empty() {
        let specs: Vec<Bson> = c.indexes.iter().cloned().map(Bson::Document).collect();
        live.command(
            &dest.db,
            doc! {"createIndexes": &dest.coll, "indexes": specs},
        )
        .await?;
    }
    Ok(())
}

/// Copies every document of `c.source` into `dest`: inserted (a fresh staging
/// collection) or upserted by `_id` (`merge`). Returns the documents written.
pub async fn documents(
    standalone: &MongodClient,
    live: &Live,
    c: &NsCopy,
    dest: &Ns,
    upsert: bool,
    progress: &mut Progress<'_>,
) -> Result<u64, AgentError> {
    let (tx, mut rx) =
        tokio::sync::mpsc::channel::<Result<Vec<RawDocumentBuf>, AgentError>>(READ_AHEAD);
    let bounds = if upsert { UPSERT_BATCH } else { INSERT_BATCH };
    let reader = tokio::spawn(read_batches(
        standalone.clone(),
        c.source.clone(),
        bounds,
        tx,
    ));
    let coll = live
        .client()
        .database(&dest.db)
        .collection::<RawDocumentBuf>(&dest.coll);
    let mut written = 0u64;
    let mut batch_no = 0u64;
    while let Some(batch) = rx.recv().await {
        let batch = batch?;
        batch_no += 1;
        let n = batch.len() as u64;
        let first = written + 1;
        let wrote = if upsert {
            upsert_batch(live, dest, batch).await
        } else {
            // The backup's documents met the validator of their time; a stricter one
            // since must not refuse them.
            let inserted = coll
                .insert_many(&batch)
                .ordered(false)
                .bypass_document_validation(true)
                .await;
            match inserted {
                Ok(_) => Ok(()),
                // A failover mid-batch: part of it may be written. The same documents go
                // again as upserts by `_id`, which repeat safely (and wait out the
                // election).
                Err(e) if insert_transient(&e) => {
                    tracing::warn!(error = %e, "insert batch failed; writing it again as upserts");
                    upsert_in_chunks(live, dest, batch).await
                }
                Err(e) => Err(e.to_string()),
            }
        };
        wrote.map_err(|message| {
            AgentError::Mongod(MongodError::Command {
                node: live.name.clone(),
                command: if upsert { "update" } else { "insert" }.into(),
                message: format!(
                    "{} → {dest}: batch {batch_no} (documents {first}–{}): {message}",
                    c.source,
                    written + n
                ),
            })
        })?;
        written += n;
        progress.advance(c, written, n, false).await;
        progress.check_ended(false).await?;
    }
    reader
        .await
        .map_err(|e| AgentError::Refused(format!("the reader of {} stopped: {e}", c.source)))?;
    Ok(written)
}

/// Whether an insert batch failed the way a failover fails it (the batch may be partly
/// written, and writing it again as upserts is safe), not on a document of its own.
fn insert_transient(e: &mongodb::error::Error) -> bool {
    use mongodb::error::ErrorKind;
    match e.kind.as_ref() {
        ErrorKind::Command(c) => transient(Some(c.code)),
        ErrorKind::InsertMany(m) => m.write_errors.as_ref().is_none_or(Vec::is_empty),
        ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::ServerSelection { .. } => true,
        _ => false,
    }
}

/// A batch of the insert's size, upserted in batches of the upsert's bounds (one
/// `update` command must stay under mongod's 16 MB limit).
async fn upsert_in_chunks(
    live: &Live,
    dest: &Ns,
    batch: Vec<RawDocumentBuf>,
) -> Result<(), String> {
    let (max_docs, max_bytes) = UPSERT_BATCH;
    let mut chunk = Vec::new();
    let mut bytes = 0;
    for d in batch {
        let len = d.as_bytes().len();
        if !chunk.is_empty() && (chunk.len() >= max_docs || bytes + len > max_bytes) {
            upsert_batch(live, dest, std::mem::take(&mut chunk)).await?;
            bytes = 0;
        }
        bytes += len;
        chunk.push(d);
    }
    if chunk.is_empty() {
        return Ok(());
    }
    upsert_batch(live, dest, chunk).await
}

/// Errors a failover or a lost connection gives: the same idempotent batch may go again.
fn transient(code: Option<i32>) -> bool {
    // NotWritablePrimary, InterruptedAtShutdown, InterruptedDueToReplStateChange,
    // NotPrimaryNoSecondaryOk, PrimarySteppedDown, ShutdownInProgress, WriteConcernFailed,
    // HostUnreachable, NetworkTimeout, HostNotFound.
    const CODES: &[i32] = &[10107, 11600, 11602, 13435, 189, 91, 64, 6, 89, 7];
    code.is_none_or(|c| CODES.contains(&c))
}

/// Reads `ns` from the standalone in natural order, in batches bounded by count and bytes.
async fn read_batches(
    standalone: MongodClient,
    ns: Ns,
    (max_docs, max_bytes): (usize, usize),
    tx: tokio::sync::mpsc::Sender<Result<Vec<RawDocumentBuf>, AgentError>>,
) {
    let coll = standalone
        .client()
        .database(&ns.db)
        .collection::<RawDocumentBuf>(&ns.coll);
    let fail = |e: mongodb::error::Error| {
        AgentError::Mongod(MongodError::Command {
            node: standalone.node.clone(),
            command: "find".into(),
            message: format!("{ns}: {e}"),
        })
    };
    // The standalone is ours alone: its cursor must outlive a writer that waits long on
    // the running set.
    let mut cursor = match coll
        .find(doc! {})
        .batch_size(max_docs as u32)
        .no_cursor_timeout(true)
        .await
    {
        Ok(c) => c,
        Err(e) => {
            let _ = tx.send(Err(fail(e))).await;
            return;
        }
    };
    let mut batch = Vec::with_capacity(max_docs);
    let mut bytes = 0usize;
    loop {
        match cursor.try_next().await {
            Ok(Some(d)) => {
                let len = d.as_bytes().len();
                // Sent before it would grow past the bound: one command stays under
                // mongod's 16 MB limit whatever the documents' sizes.
                if !batch.is_empty() && (batch.len() >= max_docs || bytes + len > max_bytes) {
                    bytes = 0;
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(max_docs));
                    if tx.send(Ok(full)).await.is_err() {
                        return; // the writer stopped
                    }
                }
                bytes += len;
                batch.push(d);
            }
            Ok(None) => break,
            Err(e) => {
                let _ = tx.send(Err(fail(e))).await;
                return;
            }
        }
    }
    if !batch.is_empty() {
        let _ = tx.send(Ok(batch)).await;
    }
}

/// One `update` command of upserts by `_id`, each a whole-document replacement; asked
/// again (the same batch: upserts by `_id` repeat safely) when the set could not answer,
/// as across a failover.
async fn upsert_batch(live: &Live, dest: &Ns, batch: Vec<RawDocumentBuf>) -> Result<(), String> {
    let mut updates = Vec::with_capacity(batch.len());
    for raw in batch {
        let d = Document::try_from(raw.as_ref()).map_err(|e| e.to_string())?;
        let id = d.get("_id").cloned().unwrap_or(Bson::Null);
        // `$eq`: an `_id` that is a regular expression must match itself only.
        updates.push(Bson::Document(
            doc! {"q": {"_id": {"$eq": id}}, "u": d, "upsert": true},
        ));
    }
    let cmd = doc! {
        "update": &dest.coll,
        "updates": updates,
        "ordered": false,
        "bypassDocumentValidation": true,
    };
    let mut attempt = 1;
    let reply = loop {
        match live.command(&dest.db, cmd.clone()).await {
            Ok(reply) => break reply,
            Err(e) if attempt < UPSERT_ATTEMPTS && transient(e.code) => {
                tracing::warn!(attempt, error = %e.error, "upsert batch failed; trying it again");
                attempt += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e.error.to_string()),
        }
    };
    // Write errors come in an `ok: 1` reply.
    match reply.get_array("writeErrors") {
        Ok(errors) if !errors.is_empty() => Err(format!(
            "{} of the upserts failed, the first: {}",
            errors.len(),
            errors[0]
        )),
        _ => Ok(()),
    }
}
