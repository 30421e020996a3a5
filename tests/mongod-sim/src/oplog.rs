//! The oplog as mongod keeps it: a capped collection sized when it is created
//! (`--oplogSize`), whose oldest entries go once it is over its size but never past the
//! majority commit point or the last checkpoint, resized by `replSetResizeOplog`; and the
//! primary's periodic no-op writer.

use crate::node::{CmdError, Inner, Node, OPLOG_NS};
use crate::storage::StorageError;
use bson::{Bson, DateTime, Document, Timestamp, doc};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

const MIB: i64 = 1024 * 1024;

/// What `collStats.maxSize` reports for an oplog created without `--oplogSize`: mongod would
/// size it at 5% of the disk, at least 990 MB; the sim leaves such an oplog unbounded.
pub const DEFAULT_REPORTED_MAX_SIZE: i64 = 990 * MIB;

impl Inner {
    /// Creates the oplog, if there is none yet, with the options mongod gives it
    /// (`{capped: true, size, autoIndexId: false}`), journaling the creation; the size is
    /// `--oplogSize`'s, read only now, as mongod reads it only when it creates the oplog.
    pub fn ensure_oplog(&mut self, journal: &mut Vec<Document>) {
        if self.catalog.colls.contains_key(OPLOG_NS) {
            return;
        }
        let mut o = doc! {"create": "oplog.rs", "capped": true};
        if let Some(mb) = self.oplog_size_mb {
            o.insert("size", mb as i64 * MIB);
        }
        o.insert("autoIndexId", false);
        let op = doc! {"op": "c", "ns": "local.$cmd", "o": o};
        self.catalog.apply(&op);
        let mut op = op;
        op.insert("l", false);
        journal.push(op);
    }

    /// The size the oplog is held to, in bytes; `None` when it is unbounded.
    pub fn oplog_cap(&self) -> Option<u64> {
        let c = self.catalog.colls.get(OPLOG_NS)?;
        match c.options.get("size") {
            Some(Bson::Int64(n)) => Some((*n).max(0) as u64),
            Some(Bson::Int32(n)) => Some(i64::from(*n).max(0) as u64),
            Some(Bson::Double(n)) => Some(n.max(0.0) as u64),
            _ => None,
        }
    }

    /// `collStats.maxSize` of the oplog.
    pub fn oplog_max_size(&self) -> i64 {
        self.oplog_cap()
            .map_or(DEFAULT_REPORTED_MAX_SIZE, |n| n as i64)
    }

    /// Entries at or after this timestamp are kept whatever the size (mongod's
    /// `getPinnedOplog`): those the majority has not committed (a rollback or a lagging
    /// member may need them) and those the last checkpoint does not cover (crash recovery
    /// replays them; an open backup cursor holds checkpoints, so it pins them too).
    fn oplog_pin(&self) -> Option<Timestamp> {
        if self.recovering_standalone || !self.repl.enabled() {
            return None;
        }
        let committed = self.majority_snapshot()?.op.ts;
        Some(committed.min(self.checkpoint_ts))
    }

    /// Deletes the oldest entries while the oplog is over its size, never the newest, never
    /// one the pin holds, never one younger than `minRetentionHours`; each delete is
    /// journaled, so a restart sees the same oplog.
    pub fn reclaim_oplog(&mut self) -> Result<usize, StorageError> {
        let Some(cap) = self.oplog_cap() else {
            return Ok(0);
        };
        let Some(c) = self.catalog.colls.get(OPLOG_NS) else {
            return Ok(0);
        };
        if c.data_size() <= cap {
            return Ok(0);
        }
        let Some(pin) = self.oplog_pin() else {
            return Ok(0);
        };
        let hours = self.oplog_min_retention_hours;
        let keep_after = (hours > 0.0).then(|| {
            DateTime::from_millis(DateTime::now().timestamp_millis() - (hours * 3_600_000.0) as i64)
        });
        let (mut size, mut len) = (c.data_size(), c.len());
        let mut gone = Vec::new();
        for e in c.docs() {
            let Ok(ts) = e.get_timestamp("ts") else { break };
            let young = keep_after.is_some_and(|k| e.get_datetime("wall").is_ok_and(|w| *w > k));
            if size <= cap || len <= 1 || ts >= pin || young {
                break;
            }
            size -= (e.to_vec().map_or(0, |v| v.len()) as u64).min(size);
            len -= 1;
            gone.push(ts);
        }
        if gone.is_empty() {
            return Ok(0);
        }
        let oplog = self.catalog.coll_mut(OPLOG_NS);
        let mut ops = Vec::with_capacity(gone.len());
        for ts in &gone {
            oplog.remove(&Bson::Timestamp(*ts));
            ops.push(doc! {"op": "d", "ns": OPLOG_NS, "o": {"_id": *ts}, "l": false});
        }
        self.oplog_truncations += 1;
        self.store
            .journal_append(&doc! {"ts": self.last_ts, "ops": ops})?;
        Ok(gone.len())
    }

    /// `serverStatus.oplogTruncation`.
    pub fn truncation_status(&self) -> Document {
        doc! {
            "totalTimeProcessingMicros": 0i64,
            "processingMethod": "scanning",
            "oplogMinRetentionHours": self.oplog_min_retention_hours,
            "totalTimeTruncatingMicros": 0i64,
            "truncateCount": self.oplog_truncations as i64,
        }
    }
}

/// The `capped`/`maxSize` fields of `collStats` (mongod reports both for capped collections,
/// `capped: false` otherwise).
pub fn capped_stats(inner: &Inner, ns: &str, out: &mut Document) {
    let Some(c) = inner.catalog.colls.get(ns) else {
        return;
    };
    if ns == OPLOG_NS {
        out.insert("capped", true);
        out.insert("maxSize", inner.oplog_max_size());
    } else if c.options.get_bool("capped").unwrap_or(false) {
        out.insert("capped", true);
        if let Some(max) = c.options.get("max") {
            out.insert("max", max.clone());
        }
        out.insert(
            "maxSize",
            c.options.get("size").cloned().unwrap_or(Bson::Int64(0)),
        );
    } else {
        out.insert("capped", false);
    }
}

/// mongod's name for a BSON type, as its IDL parser's errors print it.
fn type_name(v: &Bson) -> &'static str {
    match v {
        Bson::Double(_) => "double",
        Bson::String(_) => "string",
        Bson::Document(_) => "object",
        Bson::Array(_) => "array",
        Bson::Boolean(_) => "bool",
        Bson::Null => "null",
        Bson::Int32(_) => "int",
        Bson::Int64(_) => "long",
        Bson::Decimal128(_) => "decimal",
        _ => "unknown",
    }
}

/// One optional `double` field of `replSetResizeOplog`, checked as its IDL parser checks it.
fn double_field(cmd: &Document, name: &str, min: f64, max: f64) -> Result<Option<f64>, CmdError> {
    let path = format!("replSetResizeOplog.{name}");
    let v = match cmd.get(name) {
        None | Some(Bson::Null) => return Ok(None),
        Some(Bson::Double(v)) => *v,
        Some(other) => {
            return Err(CmdError::new(
                14,
                "TypeMismatch",
                format!(
                    "BSON field '{path}' is the wrong type '{}', expected type 'double'",
                    type_name(other)
                ),
            ));
        }
    };
    let bad = |op: &str, bound: f64| {
        CmdError::new(
            51024,
            "Location51024",
            format!("BSON field '{path}' value must be {op} {bound}, actual value '{v}'"),
        )
    };
    if v.is_nan() || v < min {
        return Err(bad(">=", min));
    }
    if v > max {
        return Err(bad("<=", max));
    }
    Ok(Some(v))
}

/// `replSetResizeOplog: 1, size: <MB, double>, minRetentionHours: <double>`: the new size is
/// kept in the oplog's catalog entry (so it outlives a restart), the retention only in memory,
/// as in mongod.
pub fn resize(node: &Node, db: &str, cmd: &Document) -> Result<Document, CmdError> {
    if db != "admin" {
        return Err(CmdError::new(
            13,
            "Unauthorized",
            "replSetResizeOplog may only be run against the admin database.",
        ));
    }
    let mut g = node.lock();
    if !g.catalog.colls.contains_key(OPLOG_NS) {
        return Err(CmdError::new(
            26,
            "NamespaceNotFound",
            "oplog does not exist",
        ));
    }
    let size = double_field(cmd, "size", 990.0, 1_073_741_824.0)?;
    let hours = double_field(cmd, "minRetentionHours", 0.0, f64::MAX)?;
    if let Some(mb) = size {
        let bytes = (mb * MIB as f64) as i64;
        g.write(
            vec![doc! {"op": "c", "ns": "local.$cmd", "o": {"collMod": "oplog.rs", "cappedSize": bytes}}],
            false,
        )?;
    }
    if let Some(h) = hours {
        g.oplog_min_retention_hours = h;
    }
    g.reclaim_oplog()?;
    let mut attr = doc! {"size": g.oplog_max_size()};
    attr.insert("minRetentionHours", g.oplog_min_retention_hours);
    crate::slog!(
        I,
        "STORAGE",
        20497,
        "conn",
        "replSetResizeOplog success",
        attr
    );
    Ok(doc! {"ok": 1.0})
}

/// mongod's `NoopWriter`: every `periodicNoopIntervalSecs`, a primary whose last entry has not
/// moved since the previous look writes `{op: "n", ns: "", o: {msg: "periodic noop"}}`, so an
/// idle replica set's optime (and commit point) keeps moving.
pub async fn noop_loop(node: Arc<Node>) {
    let every = Duration::from_secs(node.opts.periodic_noop_interval_secs.max(1));
    let mut last_known = None;
    loop {
        tokio::time::sleep(every).await;
        if node.shutting_down.load(Ordering::SeqCst) {
            return;
        }
        let wrote = {
            let mut g = node.lock();
            let top = g.applied().map(|s| s.op);
            let idle = g.should_log() && top.is_some() && top == last_known;
            let wrote = idle
                && g.write(
                    vec![doc! {"op": "n", "ns": "", "o": {"msg": "periodic noop"}}],
                    true,
                )
                .is_ok();
            last_known = g.applied().map(|s| s.op);
            wrote
        };
        if wrote {
            node.oplog_changed.notify_waiters();
        }
    }
}
