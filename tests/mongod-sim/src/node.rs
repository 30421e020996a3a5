//! One simulated mongod: its state behind one lock, start-up recovery, the write path
//! (journal + oplog), checkpoints and clean shutdown.

use crate::catalog::Catalog;
use crate::options::Options;
use crate::repl::ReplState;
use crate::slog;
use crate::storage::{StorageError, Store};
use bson::{Bson, DateTime, Document, Timestamp, doc};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

pub const OPLOG_NS: &str = "local.oplog.rs";
pub const TRUNCATE_NS: &str = "local.replset.oplogTruncateAfterPoint";

/// A server-side cursor (`find`, `aggregate`, `listCollections`…).
pub struct Cursor {
    pub ns: String,
    pub pending: VecDeque<Document>,
    pub last_used: Instant,
    /// The backup cursor never exhausts: getMore returns empty batches until it is killed.
    pub backup: bool,
}

/// The open `$backupCursor`, at most one.
pub struct BackupState {
    pub backup_id: bson::Binary,
    pub cursor_id: i64,
    /// Journal files numbered below this were listed by `$backupCursor`.
    pub listed_journal_to: u64,
}

pub struct Inner {
    pub catalog: Catalog,
    pub store: Store,
    /// Oplog top covered by the last checkpoint ("stable" timestamp).
    pub checkpoint_ts: Timestamp,
    pub last_ts: Timestamp,
    /// The highest cluster time this node has seen (its own writes, and every
    /// `$clusterTime` a client or a peer sent): its next oplog timestamp is above it, so a
    /// write made after one on another replica set (whose time was gossiped here) sorts
    /// after it, as mongod's hybrid logical clock guarantees.
    pub cluster_time: Timestamp,
    /// The highest cluster time clients sent (drivers, agents) here or to a member whose
    /// heartbeat relayed it: what the periodic no-op catches up with.
    pub client_time: Timestamp,
    pub repl: ReplState,
    pub cursors: HashMap<i64, Cursor>,
    pub next_cursor: i64,
    pub backup: Option<BackupState>,
    pub fsync_lock: u32,
    /// Started standalone with `recoverFromOplogAsStandalone`: no stable checkpoints are taken.
    pub recovering_standalone: bool,
    /// `--oplogSize`, for an oplog this process creates.
    pub oplog_size_mb: Option<u64>,
    /// `minRetentionHours` (startup option, changed by `replSetResizeOplog`, not persisted).
    pub oplog_min_retention_hours: f64,
    /// How many times entries were truncated (`serverStatus.oplogTruncation.truncateCount`).
    pub oplog_truncations: u64,
    /// Open and committed transactions, by session.
    pub txns: crate::txn::Txns,
}

/// Run-time fault switches (`--sim-*` flags, changeable with the `simFault` command).
#[derive(Debug, Default, Clone)]
pub struct Faults {
    pub refuse_shutdown: bool,
    pub crash_at: Option<String>,
    pub slow_reads_ms: u64,
    pub slow_find_ms: u64,
}

pub struct Node {
    pub opts: Options,
    inner: Mutex<Inner>,
    pub faults: Mutex<Faults>,
    pub oplog_changed: tokio::sync::Notify,
    pub shutdown: tokio::sync::Notify,
    pub shutting_down: AtomicBool,
    pub started: Instant,
    conn_ids: AtomicU64,
}

/// A command failure, rendered as mongod's `{ok: 0, errmsg, code, codeName}`.
#[derive(Debug, Clone)]
pub struct CmdError {
    pub code: i32,
    pub code_name: &'static str,
    pub errmsg: String,
}

impl CmdError {
    pub fn new(code: i32, code_name: &'static str, errmsg: impl Into<String>) -> CmdError {
        CmdError {
            code,
            code_name,
            errmsg: errmsg.into(),
        }
    }
    pub fn to_doc(&self) -> Document {
        doc! {"ok": 0.0, "errmsg": &self.errmsg, "code": self.code, "codeName": self.code_name}
    }
}

impl From<StorageError> for CmdError {
    fn from(e: StorageError) -> CmdError {
        CmdError::new(8, "UnknownError", e.to_string())
    }
}

/// The collection an oplog-form op is about: its `ns`, or for a command the collection its
/// first field names (`create`, `drop`, `createIndexes`, `collMod`…; a rename's source).
pub fn target_ns(op: &Document) -> String {
    let ns = op.get_str("ns").unwrap_or_default();
    if op.get_str("op").ok() != Some("c") {
        return ns.to_string();
    }
    let o = op.get_document("o").ok();
    match o.and_then(|o| o.iter().next()) {
        Some((k, Bson::String(from))) if k == "renameCollection" => from.clone(),
        Some((k, Bson::String(coll))) if k != "applyOps" => format!("{}.{coll}", db_of(ns)),
        _ => String::new(),
    }
}

pub fn db_of(ns: &str) -> &str {
    ns.split_once('.').map(|(d, _)| d).unwrap_or(ns)
}

impl Node {
    /// Opens the dbPath and runs start-up recovery.
    pub fn open(opts: Options) -> Result<Arc<Node>, StorageError> {
        let storage_options = doc! {"directoryPerDB": false, "directoryForIndexes": false};
        let (mut store, rec) = Store::open(&opts.dbpath, opts.slow_reads_ms, storage_options)?;
        let mut catalog = rec.catalog;
        let mut applied = 0;
        for record in &rec.journal {
            for op in record.get_array("ops").into_iter().flatten() {
                if let Bson::Document(op) = op
                    && !op.get_bool("l").unwrap_or(false)
                {
                    catalog.apply(op);
                    applied += 1;
                }
            }
        }
        if !rec.fresh {
            slog!(
                I,
                "STORAGE",
                22430,
                "initandlisten",
                "WiredTiger message",
                doc! {"message": format!("recovered {applied} journaled operations from {} records", rec.journal.len())}
            );
        }
        let repl_mode = opts.repl_set.is_some();
        let recovering = !repl_mode && opts.param_bool("recoverFromOplogAsStandalone");
        // The truncate point is honoured in every mode, before any oplog application.
        let mut truncate_journal = Vec::new();
        let top_of_coll =
            |c: &crate::catalog::Collection| c.last().and_then(|e| e.get_timestamp("ts").ok());
        let top_of =
            |catalog: &crate::catalog::Catalog| catalog.colls.get(OPLOG_NS).and_then(top_of_coll);
        if let Some(tdoc) = catalog
            .colls
            .get(TRUNCATE_NS)
            .and_then(|c| c.docs().next().cloned())
            && let Ok(point) = tdoc.get_timestamp("oplogTruncateAfterPoint")
            && point
                != (Timestamp {
                    time: 0,
                    increment: 0,
                })
        {
            // Entries are in timestamp order: when the top is at or before the point there
            // is nothing to read, as mongod's seek to the point finds.
            let removed = match catalog.colls.get_mut(OPLOG_NS) {
                Some(c) if top_of_coll(c).is_some_and(|top| top > point) => {
                    c.retain(|e| e.get_timestamp("ts").map(|t| t <= point).unwrap_or(true))
                }
                _ => vec![],
            };
            slog!(
                I,
                "REPL",
                21553,
                "initandlisten",
                "Truncating oplog after point",
                doc! {"truncateAfterPoint": point, "removedEntries": removed.len() as i64}
            );
            for e in removed {
                truncate_journal.push(doc! {"op": "d", "ns": OPLOG_NS, "o": {"_id": e.get("_id").cloned().unwrap_or(Bson::Null)}, "l": false});
            }
            let mut cleared = tdoc.clone();
            cleared.insert(
                "oplogTruncateAfterPoint",
                Timestamp {
                    time: 0,
                    increment: 0,
                },
            );
            catalog.coll_mut(TRUNCATE_NS).upsert(cleared.clone());
            truncate_journal.push(doc! {"op": "u", "ns": TRUNCATE_NS, "o": cleared, "l": false});
        }
        let mut checkpoint_ts = rec.checkpoint_ts;
        let oplog_top = top_of(&catalog);
        if repl_mode || recovering {
            let entries: Vec<Document> = catalog
                .colls
                .get(OPLOG_NS)
                .filter(|_| oplog_top.is_some_and(|top| top > checkpoint_ts))
                .map(|c| {
                    c.docs()
                        .filter(|e| {
                            e.get_timestamp("ts")
                                .map(|t| t > checkpoint_ts)
                                .unwrap_or(false)
                        })
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            for e in &entries {
                catalog.apply(e);
            }
            if !entries.is_empty() || recovering {
                slog!(
                    I,
                    "REPL",
                    21544,
                    "initandlisten",
                    "Recovering from stable timestamp",
                    doc! {"stableTimestamp": checkpoint_ts, "topOfOplog": oplog_top.unwrap_or(checkpoint_ts), "appliedOps": entries.len() as i64}
                );
            }
            if let Some(top) = oplog_top {
                checkpoint_ts = checkpoint_ts.max(top);
            }
        }
        if !truncate_journal.is_empty() {
            store.journal_append(&doc! {"ts": checkpoint_ts, "ops": truncate_journal})?;
        }
        let last_ts = oplog_top.unwrap_or(checkpoint_ts).max(checkpoint_ts);
        let repl = ReplState::load(&opts, &catalog, last_ts);
        // The oplog as recovered (a truncate point may have cut it).
        let cluster_time = top_of(&catalog).unwrap_or(Timestamp {
            time: 0,
            increment: 0,
        });
        store.write_lock_file(Some(std::process::id()))?;
        let faults = Faults {
            refuse_shutdown: opts.refuse_shutdown,
            crash_at: opts.crash_at.clone(),
            slow_reads_ms: opts.slow_reads_ms,
            slow_find_ms: opts.slow_find_ms,
        };
        let inner = Inner {
            catalog,
            store,
            checkpoint_ts,
            last_ts,
            cluster_time,
            client_time: Timestamp {
                time: 0,
                increment: 0,
            },
            repl,
            cursors: HashMap::new(),
            next_cursor: 1,
            backup: None,
            fsync_lock: 0,
            recovering_standalone: recovering,
            oplog_size_mb: opts.oplog_size_mb,
            oplog_min_retention_hours: opts.oplog_min_retention_hours,
            oplog_truncations: 0,
            txns: Default::default(),
        };
        Ok(Arc::new(Node {
            opts,
            inner: Mutex::new(inner),
            faults: Mutex::new(faults),
            oplog_changed: tokio::sync::Notify::new(),
            shutdown: tokio::sync::Notify::new(),
            shutting_down: AtomicBool::new(false),
            started: Instant::now(),
            conn_ids: AtomicU64::new(1),
        }))
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn next_conn_id(&self) -> u64 {
        self.conn_ids.fetch_add(1, Ordering::Relaxed)
    }

    /// Aborts the process if the named crash point is armed: the `kill -9` of tests.
    pub fn crash_point(&self, point: &str) {
        let armed = self
            .faults
            .lock()
            .map(|f| f.crash_at.as_deref() == Some(point))
            .unwrap_or(false);
        if armed {
            slog!(
                F,
                "CONTROL",
                4757800,
                "-",
                "Simulated crash",
                doc! {"point": point}
            );
            std::process::abort();
        }
    }

    pub fn faults(&self) -> Faults {
        self.faults.lock().map(|f| f.clone()).unwrap_or_default()
    }

    /// Triggers the clean shutdown that `main` performs.
    pub fn request_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.shutdown.notify_one();
    }

    /// Final checkpoint (unless recovering standalone without `takeUnstableCheckpointOnShutdown`)
    /// and an empty `mongod.lock`.
    pub fn finish_shutdown(&self) {
        let mut g = self.lock();
        let inner = &mut *g;
        let skip = inner.recovering_standalone
            && !self.opts.param_bool("takeUnstableCheckpointOnShutdown");
        if skip {
            slog!(
                I,
                "STORAGE",
                22323,
                "initandlisten",
                "Skipping checkpoint during clean shutdown because recovering from oplog as standalone"
            );
        } else {
            let ts = inner.checkpoint_ts_now();
            if let Err(e) = inner.store.checkpoint(&mut inner.catalog, ts) {
                slog!(
                    E,
                    "STORAGE",
                    22320,
                    "initandlisten",
                    "Checkpoint at shutdown failed",
                    doc! {"error": e.to_string()}
                );
            }
            inner.checkpoint_ts = ts;
        }
        let _ = inner.store.write_lock_file(None);
        slog!(I, "CONTROL", 20565, "initandlisten", "Now exiting");
        slog!(
            I,
            "CONTROL",
            23138,
            "initandlisten",
            "Shutting down",
            doc! {"exitCode": 0}
        );
    }
}

impl Inner {
    /// The timestamp a checkpoint taken now stands for.
    pub fn checkpoint_ts_now(&self) -> Timestamp {
        if self.recovering_standalone || self.repl.enabled() {
            self.oplog_top()
                .unwrap_or(self.checkpoint_ts)
                .max(self.checkpoint_ts)
        } else {
            self.checkpoint_ts
        }
    }

    pub fn oplog_top(&self) -> Option<Timestamp> {
        self.catalog
            .colls
            .get(OPLOG_NS)
            .and_then(|c| c.last())
            .and_then(|e| e.get_timestamp("ts").ok())
    }

    pub fn oplog_start(&self) -> Option<Timestamp> {
        self.catalog
            .colls
            .get(OPLOG_NS)
            .and_then(|c| c.docs().next())
            .and_then(|e| e.get_timestamp("ts").ok())
    }

    /// Takes a periodic checkpoint unless a backup cursor pins the files or we are recovering.
    pub fn maybe_checkpoint(&mut self) -> Result<bool, StorageError> {
        if self.backup.is_some() || self.recovering_standalone {
            return Ok(false);
        }
        // A backup ID registered since the last checkpoint is persisted by the next one.
        let dirty = self.catalog.catalog_dirty
            || self.store.incr.dirty()
            || self.catalog.colls.values().any(|c| c.dirty);
        if !dirty {
            return Ok(false);
        }
        let ts = self.checkpoint_ts_now();
        self.store.checkpoint(&mut self.catalog, ts)?;
        self.checkpoint_ts = ts;
        // The checkpoint no longer needs the entries before it for crash recovery.
        self.reclaim_oplog()?;
        Ok(true)
    }

    /// Takes in a cluster time gossiped by a client (directly, or relayed by a member).
    pub fn observe_client_time(&mut self, ts: Timestamp) {
        self.cluster_time = self.cluster_time.max(ts);
        self.client_time = self.client_time.max(ts);
    }

    /// The cluster time a reply carries: the highest seen, or logged here (writes to
    /// `local`, which no oplog entry records, do not move it).
    pub fn reply_cluster_time(&self) -> Timestamp {
        self.cluster_time
    }

    /// A new cluster time: mongod's hybrid logical clock, seconds plus a counter, above
    /// every cluster time this node has seen.
    pub fn next_ts(&mut self) -> Timestamp {
        let now = chrono::Utc::now().timestamp() as u32;
        let floor = self.last_ts.max(self.cluster_time);
        self.last_ts = if now > floor.time {
            Timestamp {
                time: now,
                increment: 1,
            }
        } else {
            Timestamp {
                time: floor.time,
                increment: floor.increment + 1,
            }
        };
        self.last_ts
    }

    /// Applies and journals writes given in oplog form (`{op, ns, o, o2?}`). Writes outside
    /// `local` on an initiated replica-set member also go to the oplog. Returns the last timestamp.
    pub fn write(&mut self, ops: Vec<Document>, log: bool) -> Result<Timestamp, StorageError> {
        let mut journal_ops = Vec::with_capacity(ops.len() * 2);
        let mut ts = self.last_ts;
        let logging = log && self.repl.enabled();
        if logging
            && ops
                .iter()
                .any(|op| db_of(op.get_str("ns").unwrap_or_default()) != "local")
        {
            self.ensure_oplog(&mut journal_ops);
        }
        let ops = if logging {
            self.with_implicit_creates(ops)
        } else {
            ops
        };
        for mut op in ops {
            let ns = op.get_str("ns").unwrap_or_default().to_string();
            let logged = logging && db_of(&ns) != "local";
            let target = target_ns(&op);
            let ui_before = self.catalog.colls.get(&target).map(|c| c.uuid.clone());
            self.catalog.apply(&op);
            if logged {
                let mut entry = op.clone();
                // The collection's UUID; a drop's or a rename's is the one it had.
                let ui =
                    ui_before.or_else(|| self.catalog.colls.get(&target).map(|c| c.uuid.clone()));
                if let Some(ui) = ui {
                    entry.insert("ui", ui);
                }
                ts = self.append_oplog(entry, &mut journal_ops);
            }
            op.insert("l", logged);
            journal_ops.push(op);
        }
        if !logging {
            ts = self.next_ts();
        }
        self.store
            .journal_append(&doc! {"ts": ts, "ops": journal_ops})?;
        if logging {
            // A one-member majority commits at once; a larger one moves when members report.
            self.update_commit_point();
            self.reclaim_oplog()?;
        }
        Ok(ts)
    }

    /// Logs one oplog entry made of `fields` (`op`, `ns`, `o`…) at the next timestamp,
    /// journaling its insert into `journal`.
    pub fn append_oplog(&mut self, fields: Document, journal: &mut Vec<Document>) -> Timestamp {
        let ts = self.next_ts();
        self.cluster_time = self.cluster_time.max(ts);
        let mut entry = doc! {"ts": ts, "t": self.repl.term, "v": 2i64};
        entry.extend(fields);
        entry.insert("wall", DateTime::now());
        entry.insert("_id", Bson::Timestamp(ts));
        self.catalog.coll_mut(OPLOG_NS).upsert(entry.clone());
        journal.push(doc! {"op": "i", "ns": OPLOG_NS, "o": entry, "l": false});
        ts
    }

    /// The ops with a `create` entry before the first write to each collection that does not
    /// exist yet: mongod logs an implicit creation as `{create: <coll>, idIndex}`, so an
    /// applier (a secondary, a replay through `applyOps`) has the collection, and its UUID,
    /// before the first insert.
    pub fn with_implicit_creates(&self, ops: Vec<Document>) -> Vec<Document> {
        let mut made = std::collections::HashSet::new();
        let mut out = Vec::with_capacity(ops.len());
        for op in ops {
            let ns = op.get_str("ns").unwrap_or_default().to_string();
            let data = matches!(op.get_str("op"), Ok("i" | "u"));
            if data
                && db_of(&ns) != "local"
                && !self.catalog.colls.contains_key(&ns)
                && made.insert(ns.clone())
                && let Some((db, coll)) = ns.split_once('.')
            {
                out.push(doc! {"op": "c", "ns": format!("{db}.$cmd"), "o": {"create": coll, "idIndex": {"v": 2, "key": {"_id": 1}, "name": "_id_"}}});
            }
            out.push(op);
        }
        out
    }

    /// Client writes are logged on a primary; the command layer refuses them elsewhere.
    pub fn should_log(&self) -> bool {
        self.repl.enabled() && self.repl.state == crate::repl::PRIMARY
    }

    /// Applies oplog entries fetched from a sync source, keeping them in our own oplog.
    pub fn apply_oplog(&mut self, entries: &[Document]) -> Result<(), StorageError> {
        let mut journal_ops = Vec::with_capacity(entries.len() * 2);
        if !entries.is_empty() {
            self.ensure_oplog(&mut journal_ops);
        }
        for e in entries {
            let mut e = e.clone();
            let ts = e.get_timestamp("ts").unwrap_or(self.last_ts);
            e.insert("_id", Bson::Timestamp(ts));
            self.catalog.apply(&e);
            self.catalog.coll_mut(OPLOG_NS).upsert(e.clone());
            self.last_ts = self.last_ts.max(ts);
            self.cluster_time = self.cluster_time.max(ts);
            journal_ops.push(doc! {"op": "i", "ns": OPLOG_NS, "o": &e, "l": false});
            let mut data = doc! {"op": e.get_str("op").unwrap_or("n"), "ns": e.get_str("ns").unwrap_or_default(), "l": true};
            for key in ["o", "o2"] {
                if let Some(v) = e.get(key) {
                    data.insert(key, v.clone());
                }
            }
            journal_ops.push(data);
        }
        if !journal_ops.is_empty() {
            self.store
                .journal_append(&doc! {"ts": self.last_ts, "ops": journal_ops})?;
            self.reclaim_oplog()?;
        }
        Ok(())
    }

    pub fn new_cursor(&mut self, ns: String, pending: VecDeque<Document>, backup: bool) -> i64 {
        let id = self.next_cursor;
        self.next_cursor += 1;
        self.cursors.insert(
            id,
            Cursor {
                ns,
                pending,
                last_used: Instant::now(),
                backup,
            },
        );
        id
    }
}
