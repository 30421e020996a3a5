//! PSMDB's `$backupCursor` and `$backupCursorExtend`: list the files to copy and keep them
//! byte-stable (no checkpoint, journal rotated) until the cursor is closed or times out.

use crate::backup_opts::BackupOptions;
use crate::incr::{Listing, Refusal};
use crate::node::{BackupState, CmdError, Inner, Node};
use crate::options::Flavor;
use crate::slog;
use crate::storage::Store;
use bson::{Bson, Document, Timestamp, doc};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn unrecognized(stage: &str) -> CmdError {
    CmdError::new(
        40324,
        "Location40324",
        format!("Unrecognized pipeline stage name: '{stage}'"),
    )
}

fn abs(p: &std::path::Path) -> String {
    std::fs::canonicalize(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .to_string_lossy()
        .into_owned()
}

/// Opens the backup cursor: the metadata document first, then the files to copy (see
/// [`file_docs`]).
pub fn open(node: &Arc<Node>, cmd: &Document) -> Result<Document, CmdError> {
    if node.opts.flavor == Flavor::Community {
        return Err(unrecognized("$backupCursor"));
    }
    let o = BackupOptions::parse(cmd)?;
    let mut g = node.lock();
    if g.backup.is_some() {
        return Err(CmdError::new(
            50886,
            "Location50886",
            "The existing backup cursor must be closed before $backupCursor can succeed.",
        ));
    }
    node.crash_point("backup-cursor-open");
    if let Some(this) = &o.this_name {
        g.store
            .incr
            .check(this, o.src_name.as_deref())
            .map_err(refused)?;
    }
    // Rotating makes every listed journal file final; later writes go to a new file.
    g.store.rotate_journal()?;
    let backup_id = bson::Binary {
        subtype: bson::spec::BinarySubtype::Uuid,
        bytes: bson::Uuid::new().bytes().to_vec(),
    };
    let mut docs = VecDeque::new();
    docs.push_back(doc! {"metadata": metadata(node, &g, &o, &backup_id)});
    docs.extend(file_docs(&mut g.store, &o)?);
    let listed_journal_to = g.store.journal_no();
    let batch = cmd
        .get_document("cursor")
        .ok()
        .and_then(|c| c.get("batchSize"))
        .and_then(Bson::as_i32)
        .map(|b| b as usize)
        .unwrap_or(101);
    let first: Vec<Document> = docs.drain(..batch.min(docs.len())).collect();
    let id = g.new_cursor("admin.$cmd.aggregate".into(), docs, true);
    g.backup = Some(BackupState {
        backup_id: backup_id.clone(),
        cursor_id: id,
        listed_journal_to,
    });
    slog!(
        I,
        "STORAGE",
        24200,
        "conn",
        "Opened backup cursor",
        doc! {"backupId": backup_id, "term": g.repl.term}
    );
    Ok(doc! {"cursor": {"firstBatch": first, "id": id, "ns": "admin.$cmd.aggregate"}, "ok": 1.0})
}

/// The first document. As PSMDB's, it copies the options asked for: `blockSize` is the one
/// asked (default 16), even when tracking already runs with another.
fn metadata(node: &Node, g: &Inner, o: &BackupOptions, backup_id: &bson::Binary) -> Document {
    let mut meta = doc! {"backupId": backup_id.clone(), "dbpath": abs(&node.opts.dbpath)};
    if let (Some(start), Some(end)) = (g.oplog_start(), g.oplog_top()) {
        meta.insert("oplogStart", doc! {"ts": start, "t": -1i64});
        meta.insert("oplogEnd", doc! {"ts": end, "t": g.repl.term});
        meta.insert("checkpointTimestamp", g.checkpoint_ts);
    }
    meta.insert("disableIncrementalBackup", o.disable);
    meta.insert("incrementalBackup", o.incremental);
    meta.insert("blockSize", o.block_mb);
    if let Some(this) = &o.this_name {
        meta.insert("thisBackupName", this);
    }
    if let Some(src) = &o.src_name {
        meta.insert("srcBackupName", src);
    }
    meta
}

/// The documents after the metadata, in the listing's order (data files sorted, then journal
/// files): `{filename, fileSize}` for a full backup and for a file unchanged since the
/// source; `{…, offset: 0, length: fileSize}` for a whole file (every file of a base, a
/// WiredTiger file, a file the source does not know); one `{…, offset, length: blockSize}`
/// per changed block otherwise. `disableIncrementalBackup` lists nothing. Registers
/// `thisBackupName` once the listing is made.
fn file_docs(store: &mut Store, o: &BackupOptions) -> Result<Vec<Document>, CmdError> {
    if o.disable {
        store.incr.disable(&store.dbpath)?;
        return Ok(Vec::new());
    }
    let files = store.backup_files();
    let block = store.incr.block_size() as i64;
    let mut out = Vec::with_capacity(files.len());
    let mut names = Vec::with_capacity(files.len());
    for (path, size) in &files {
        let filename = path.to_string_lossy().into_owned();
        let name = path
            .strip_prefix(&store.dbpath)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned();
        let size = *size as i64;
        let listing = match (&o.this_name, &o.src_name) {
            (None, _) => Listing::Unchanged,
            (Some(_), None) => Listing::Whole,
            (Some(_), Some(src)) => store.incr.listing(src, &name),
        };
        match listing {
            Listing::Unchanged => out.push(file_doc(&filename, size, 0, 0)),
            Listing::Whole => out.push(file_doc(&filename, size, 0, size)),
            Listing::Blocks(blocks) => out.extend(
                blocks
                    .into_iter()
                    .map(|b| file_doc(&filename, size, b as i64 * block, block)),
            ),
        }
        names.push(name);
    }
    if let Some(this) = &o.this_name {
        let mb = o.block_mb as u64;
        store
            .incr
            .register(&store.dbpath, this, o.src_name.as_deref(), mb, &names)?;
    }
    Ok(out)
}

/// mongod leaves out `offset` and `length` when both are 0.
fn file_doc(filename: &str, size: i64, offset: i64, length: i64) -> Document {
    let mut d = doc! {"filename": filename, "fileSize": size};
    if offset != 0 || length != 0 {
        d.insert("offset", offset);
        d.insert("length", length);
    }
    d
}

fn refused(r: Refusal) -> CmdError {
    // What WiredTiger's errors become in mongod's reply.
    match r {
        Refusal::NoSuchSource => CmdError::new(8, "UnknownError", "2: No such file or directory"),
        Refusal::NameInUse => CmdError::new(2, "BadValue", "22: Invalid argument"),
    }
}

/// Waits until we have applied `timestamp`, then returns the journal files written since the
/// cursor was opened (or last extended).
pub async fn extend(
    node: &Arc<Node>,
    cmd: &Document,
    arg: &Document,
) -> Result<Document, CmdError> {
    if node.opts.flavor == Flavor::Community {
        return Err(unrecognized("$backupCursorExtend"));
    }
    let want_id = arg.get("backupId").cloned().ok_or_else(|| {
        CmdError::new(
            40414,
            "Location40414",
            "BSON field '$backupCursorExtend.backupId' is missing but a required field",
        )
    })?;
    let ts = arg.get_timestamp("timestamp").map_err(|_| {
        CmdError::new(
            40414,
            "Location40414",
            "BSON field '$backupCursorExtend.timestamp' is missing but a required field",
        )
    })?;
    let deadline = Instant::now()
        + Duration::from_millis(
            cmd.get("maxTimeMS")
                .and_then(Bson::as_i64)
                .unwrap_or(60_000)
                .max(1) as u64,
        );
    loop {
        let notified = node.oplog_changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let mut g = node.lock();
            let Some(b) = g.backup.as_ref() else {
                return Err(CmdError::new(
                    51011,
                    "Location51011",
                    "Cannot extend backup cursor: no backup cursor is open",
                ));
            };
            if Bson::Binary(b.backup_id.clone()) != want_id {
                return Err(CmdError::new(
                    51011,
                    "Location51011",
                    format!("Cannot extend backup cursor, backupId was not found: {want_id}"),
                ));
            }
            let top = g.oplog_top().unwrap_or(Timestamp {
                time: 0,
                increment: 0,
            });
            if top >= ts {
                let from = b.listed_journal_to;
                g.store.rotate_journal()?;
                let to = g.store.journal_no();
                let files: Vec<Document> = g
                    .store
                    .journal_files(from, to)
                    .into_iter()
                    .map(|(p, _)| doc! {"filename": p.to_string_lossy().into_owned()})
                    .collect();
                if let Some(b) = g.backup.as_mut() {
                    b.listed_journal_to = to;
                }
                slog!(
                    I,
                    "STORAGE",
                    24202,
                    "conn",
                    "Backup cursor has been extended",
                    doc! {"backupId": want_id, "extendTo": ts}
                );
                return Ok(
                    doc! {"cursor": {"firstBatch": files, "id": 0i64, "ns": "admin.$cmd.aggregate"}, "ok": 1.0},
                );
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(CmdError::new(
                50,
                "MaxTimeMSExpired",
                format!("operation exceeded time limit waiting for {ts} to be applied"),
            ));
        }
        let _ = tokio::time::timeout(left.min(Duration::from_millis(200)), notified).await;
    }
}

/// Releases the pinned files; checkpoints resume.
pub fn close(inner: &mut Inner) {
    if let Some(b) = inner.backup.take() {
        inner.cursors.remove(&b.cursor_id);
        slog!(
            I,
            "STORAGE",
            24203,
            "conn",
            "Closed backup cursor",
            doc! {"backupId": b.backup_id}
        );
    }
}

/// Kills cursors idle longer than `cursorTimeoutMillis`, the backup cursor included.
pub fn reap(node: &Node) {
    let timeout = Duration::from_millis(node.opts.cursor_timeout_ms());
    let mut g = node.lock();
    let dead: Vec<i64> = g
        .cursors
        .iter()
        .filter(|(_, c)| c.last_used.elapsed() > timeout)
        .map(|(id, _)| *id)
        .collect();
    for id in dead {
        g.cursors.remove(&id);
        slog!(
            I,
            "QUERY",
            20529,
            "clientcursormon",
            "Cursor timed out",
            doc! {"cursorId": id}
        );
        if g.backup.as_ref().is_some_and(|b| b.cursor_id == id) {
            close(&mut g);
        }
    }
}

pub fn is_backup_stage(pipeline: &[Document]) -> Option<(&str, Document)> {
    let first = pipeline.first()?;
    let (name, arg) = first.iter().next()?;
    match name.as_str() {
        "$backupCursor" | "$backupCursorExtend" => Some((
            name.as_str(),
            arg.as_document().cloned().unwrap_or_default(),
        )),
        _ => None,
    }
}
