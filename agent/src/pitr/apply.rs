//! From oplog entries to `applyOps` batches, for a point-in-time replay. Pure: the replay
//! stage feeds it every entry of a replica set's chunks, in order, and sends the batches
//! it returns.
//!
//! What it applies, and what it does not (docs/pitr.md lists each with its reason):
//! - entries at or before the base's last write are in the base already; a boundary entry
//!   that two chunks share is seen once;
//! - replay ends at the first entry the target does not keep, so what is applied is a
//!   prefix of the oplog;
//! - a transaction is applied whole at its commit entry (a `partialTxn` chain is held until
//!   then, even when it began before the base), and not at all when the commit is past
//!   the target; its operations go into the batch one by one;
//! - an index build is applied at its commit, as `createIndexes`; its start and abort are
//!   skipped, as are no-ops and the namespaces [`skipped_namespace`] names;
//! - `dropDatabase` goes alone in its batch, as `applyOps` requires.

use std::collections::HashMap;

use bson::{Bson, Document, doc};
use tidemark_schema::control::ReplayTarget;
use tidemark_schema::manifest::OpTime;

/// Operations per `applyOps` command, and their BSON size: large enough that a command's
/// round trip is small against its work, well under the 16 MiB command limit.
pub const MAX_BATCH_OPS: usize = 5_000;
pub const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// What cannot be replayed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ReplayError {
    #[error("oplog entry {at}: {what}")]
    Malformed { at: String, what: String },
    #[error(
        "the transaction committed at {commit} is not whole in the chunks replayed (it began \
         before the oldest one, or a part of it is missing): it cannot be applied"
    )]
    TransactionStart { commit: OpTime },
    #[error(
        "the transaction prepared at {prepared} was neither committed nor aborted at the \
         target: a cross-shard transaction in flight, which shards could keep differently; \
         choose a target before its prepare or after its outcome"
    )]
    PreparedAtTarget { prepared: OpTime },
}

/// One `applyOps` command's operations.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub ops: Vec<Document>,
    /// Oplog entries this batch completes (a transaction's commit counts once).
    pub entries: u64,
    /// The newest entry the batch applies.
    pub last: OpTime,
}

/// Counts of what a replay did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplayStats {
    /// Entries read from the chunks, duplicates and entries of the base included.
    pub read: u64,
    /// Entries applied (a committed transaction counts once).
    pub applied: u64,
    /// Operations sent (a transaction's operations each count).
    pub ops: u64,
    pub skipped_noop: u64,
    pub skipped_namespace: u64,
    pub skipped_index_build: u64,
    /// Transactions whose commit is past the target: never applied.
    pub uncommitted_transactions: u64,
    /// The newest entry applied (or the base's last write when none was).
    pub reached: Option<OpTime>,
    /// Seconds from the first chunk's download to the last batch applied.
    pub seconds: f64,
}

/// A transaction seen in part: its operations so far, the optime of its last part, and
/// whether every part since its first (the one whose `prevOpTime` is null) was seen.
struct OpenTxn {
    ops: Vec<Document>,
    last: OpTime,
    whole: bool,
    /// Prepared (its outcome is a later `commitTransaction` or `abortTransaction`).
    prepared: bool,
}

/// The state of one replica set's replay.
pub struct Replayer {
    from: OpTime,
    target: ReplayTarget,
    last_seen: Option<OpTime>,
    /// Transactions seen in part (a `partialTxn` chain, a prepared transaction), until
    /// their commit.
    open_txns: HashMap<String, OpenTxn>,
    batch: Batch,
    batch_bytes: usize,
    /// Set at the first entry past the target: everything after it is ignored.
    ended: bool,
    pub stats: ReplayStats,
}

fn optime_of(e: &Document) -> Option<OpTime> {
    match e.get("ts") {
        Some(Bson::Timestamp(t)) => Some(OpTime {
            t: t.time,
            i: t.increment,
        }),
        _ => None,
    }
}

/// Namespaces never replayed: they describe the old cluster's sessions, topology and
/// routing caches rather than user data, or they are rewritten by the restore itself.
pub fn skipped_namespace(ns: &str) -> bool {
    let (db, coll) = ns.split_once('.').unwrap_or((ns, ""));
    match db {
        "local" => true,
        "admin" => coll == "system.version",
        // The sharding catalog is replayed (chunks, collections, databases, zones); the
        // rest is topology the restore rewrites (shards, version), sessions, caches,
        // locks, logs and balancer settings.
        "config" => !matches!(
            coll,
            "chunks" | "collections" | "databases" | "tags" | "$cmd"
        ),
        _ => false,
    }
}

impl Replayer {
    /// Replays the entries after `from` (the base's last write) that `target` keeps.
    pub fn new(from: OpTime, target: ReplayTarget) -> Self {
        Replayer {
            from,
            target,
            last_seen: None,
            open_txns: HashMap::new(),
            batch: Batch {
                ops: Vec::new(),
                entries: 0,
                last: from,
            },
            batch_bytes: 0,
            ended: false,
            stats: ReplayStats {
                reached: Some(from),
                ..ReplayStats::default()
            },
        }
    }

    /// Whether an entry past the target was seen: no later entry matters.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// The newest entry read: replay covered the target once this reaches
    /// [`ReplayTarget::needs`] (or replay ended).
    pub fn last_seen(&self) -> Option<OpTime> {
        self.last_seen
    }

    /// Takes one entry; returns the batches it completed.
    pub fn push(&mut self, e: Document) -> Result<Vec<Batch>, ReplayError> {
        let mut out = Vec::new();
        if self.ended {
            return Ok(out);
        }
        let ts = optime_of(&e).ok_or_else(|| ReplayError::Malformed {
            at: format!("{e}").chars().take(120).collect(),
            what: "no ts timestamp".into(),
        })?;
        self.stats.read += 1;
        if self.last_seen.is_some_and(|l| ts <= l) {
            return Ok(out); // the boundary entry two chunks share
        }
        self.last_seen = Some(ts);
        let wall = e.get_datetime("wall").ok().map(|d| d.timestamp_millis());
        if ts > self.from && !self.target.keeps(ts, wall) {
            self.ended = true;
            self.stats.uncommitted_transactions = self.open_txns.len() as u64;
            return Ok(out);
        }
        let op = e.get_str("op").unwrap_or_default();
        // A transaction's parts are kept from wherever they start, even inside the base:
        // its commit may come after the base's last write.
        if op == "c"
            && let Ok(o) = e.get_document("o")
        {
            if o.contains_key("applyOps") {
                return self.transaction_entry(ts, &e, &mut out).map(|()| out);
            }
            if o.contains_key("commitTransaction") || o.contains_key("abortTransaction") {
                return self.prepared_outcome(ts, &e, &mut out).map(|()| out);
            }
        }
        if ts <= self.from {
            return Ok(out);
        }
        match op {
            "n" => self.stats.skipped_noop += 1,
            "i" | "u" | "d" => self.add(ts, vec![clean(&e)], 1, &mut out),
            "c" => self.command(ts, &e, &mut out)?,
            other => {
                return Err(ReplayError::Malformed {
                    at: ts.to_string(),
                    what: format!("unknown op {other:?}"),
                });
            }
        }
        Ok(out)
    }

    /// The last, partial batch; refused when a prepared transaction is still open at the
    /// target (see [`ReplayError::PreparedAtTarget`]).
    pub fn finish(&mut self) -> Result<Option<Batch>, ReplayError> {
        if !self.ended {
            self.stats.uncommitted_transactions = self.open_txns.len() as u64;
        }
        if let Some(t) = self
            .open_txns
            .values()
            .filter(|t| t.prepared)
            .map(|t| t.last)
            .min()
        {
            return Err(ReplayError::PreparedAtTarget { prepared: t });
        }
        Ok(self.take())
    }

    fn take(&mut self) -> Option<Batch> {
        if self.batch.ops.is_empty() && self.batch.entries == 0 {
            return None;
        }
        let last = self.batch.last;
        self.batch_bytes = 0;
        Some(std::mem::replace(
            &mut self.batch,
            Batch {
                ops: Vec::new(),
                entries: 0,
                last,
            },
        ))
    }

    /// Adds the operations of one entry; a full batch is flushed first.
    fn add(&mut self, ts: OpTime, ops: Vec<Document>, entries: u64, out: &mut Vec<Batch>) {
        let (keep, skipped): (Vec<Document>, Vec<Document>) = ops
            .into_iter()
            .partition(|o| !skipped_namespace(o.get_str("ns").unwrap_or_default()));
        self.stats.skipped_namespace += skipped.len() as u64;
        for o in keep {
            let size = bson_size(&o);
            if !self.batch.ops.is_empty()
                && (self.batch.ops.len() >= MAX_BATCH_OPS
                    || self.batch_bytes + size > MAX_BATCH_BYTES)
            {
                out.extend(self.take());
            }
            self.batch_bytes += size;
            self.batch.ops.push(o);
            self.stats.ops += 1;
        }
        self.batch.entries += entries;
        self.batch.last = ts;
        self.stats.applied += entries;
        self.stats.reached = Some(ts);
    }

    fn command(
        &mut self,
        ts: OpTime,
        e: &Document,
        out: &mut Vec<Batch>,
    ) -> Result<(), ReplayError> {
        let o = e.get_document("o").map_err(|_| ReplayError::Malformed {
            at: ts.to_string(),
            what: "a command entry without o".into(),
        })?;
        let name = o.keys().next().map(String::as_str).unwrap_or_default();
        if acted_on(e, o, name).iter().any(|ns| skipped_namespace(ns)) {
            self.stats.skipped_namespace += 1;
            return Ok(());
        }
        match name {
            "startIndexBuild" | "abortIndexBuild" => self.stats.skipped_index_build += 1,
            "commitIndexBuild" => {
                let ops = index_builds(ts, e, o)?;
                self.add(ts, ops, 1, out);
            }
            "dropDatabase" => {
                out.extend(self.take());
                self.add(ts, vec![clean(e)], 1, out);
                out.extend(self.take());
            }
            _ => self.add(ts, vec![clean(e)], 1, out),
        }
        Ok(())
    }

    /// A transaction's `applyOps` entry: held while `partialTxn` or prepared, applied
    /// whole at its commit.
    fn transaction_entry(
        &mut self,
        ts: OpTime,
        e: &Document,
        out: &mut Vec<Batch>,
    ) -> Result<(), ReplayError> {
        let o = e.get_document("o").expect("checked by the caller");
        let Ok(ops) = o.get_array("applyOps") else {
            return Err(ReplayError::Malformed {
                at: ts.to_string(),
                what: "applyOps is not an array".into(),
            });
        };
        let ops: Vec<Document> = ops
            .iter()
            .filter_map(Bson::as_document)
            .map(clean)
            .collect();
        let key = txn_key(e);
        let held = self.open_txns.remove(&key);
        // Whole only if every part back to the first was seen, linked by `prevOpTime`.
        let (mut all, whole) = match (prev_optime(e), held) {
            (None, Some(h)) => {
                return Err(ReplayError::Malformed {
                    at: ts.to_string(),
                    what: format!(
                        "a transaction starts while the one of the same session and number \
                         from {} is still open",
                        h.last
                    ),
                });
            }
            (None, None) => (Vec::new(), true),
            (Some(prev), Some(h)) => {
                let whole = h.whole && h.last == prev;
                (h.ops, whole)
            }
            (Some(_), None) => (Vec::new(), false),
        };
        all.extend(ops);
        let prepared = o.get_bool("prepare").unwrap_or(false);
        if o.get_bool("partialTxn").unwrap_or(false) || prepared {
            // A prepared transaction waits for its `commitTransaction` entry.
            self.open_txns.insert(
                key,
                OpenTxn {
                    ops: all,
                    last: ts,
                    whole,
                    prepared,
                },
            );
            return Ok(());
        }
        if ts <= self.from {
            return Ok(()); // committed inside the base
        }
        if !whole {
            return Err(ReplayError::TransactionStart { commit: ts });
        }
        self.add(ts, all, 1, out);
        Ok(())
    }

    /// A prepared transaction's commit (applied whole, here) or abort (dropped).
    fn prepared_outcome(
        &mut self,
        ts: OpTime,
        e: &Document,
        out: &mut Vec<Batch>,
    ) -> Result<(), ReplayError> {
        let held = self.open_txns.remove(&txn_key(e));
        let committed = e
            .get_document("o")
            .is_ok_and(|o| o.contains_key("commitTransaction"));
        if !committed || ts <= self.from {
            return Ok(());
        }
        match held {
            Some(h) if h.whole => {
                self.add(ts, h.ops, 1, out);
                Ok(())
            }
            _ => Err(ReplayError::TransactionStart { commit: ts }),
        }
    }
}

/// The optime of the transaction's previous part; `None` for its first (a null
/// `prevOpTime`, or none at all).
fn prev_optime(e: &Document) -> Option<OpTime> {
    match e.get_document("prevOpTime").ok()?.get("ts") {
        Some(Bson::Timestamp(t)) if t.time != 0 || t.increment != 0 => Some(OpTime {
            t: t.time,
            i: t.increment,
        }),
        _ => None,
    }
}

/// The namespaces a command entry acts on: its namespace is `db.$cmd`, the collection is
/// the command's value (`db.<value>`); a rename names both namespaces whole.
fn acted_on(e: &Document, o: &Document, name: &str) -> Vec<String> {
    let db = e
        .get_str("ns")
        .unwrap_or_default()
        .split('.')
        .next()
        .unwrap_or_default();
    match (name, o.get_str(name)) {
        ("renameCollection", Ok(from)) => {
            let mut v = vec![from.to_string()];
            v.extend(o.get_str("to").ok().map(str::to_string));
            v
        }
        // The whole database: skipped where its collections are (`config`).
        ("dropDatabase", _) => vec![format!("{db}.")],
        (_, Ok(coll)) => vec![format!("{db}.{coll}")],
        _ => Vec::new(),
    }
}

/// The BSON size of a document, counted without serializing it (for the batch limit).
fn bson_size(d: &Document) -> usize {
    5 + d
        .iter()
        .map(|(k, v)| 2 + k.len() + value_size(v))
        .sum::<usize>()
}

fn value_size(v: &Bson) -> usize {
    match v {
        Bson::Document(d) => bson_size(d),
        Bson::Array(a) => {
            5 + a
                .iter()
                .enumerate()
                .map(|(i, v)| 2 + i.to_string().len() + value_size(v))
                .sum::<usize>()
        }
        Bson::String(s) | Bson::Symbol(s) | Bson::JavaScriptCode(s) => 5 + s.len(),
        Bson::Binary(b) => 5 + b.bytes.len(),
        Bson::Boolean(_) => 1,
        Bson::Int32(_) => 4,
        Bson::Null | Bson::Undefined | Bson::MinKey | Bson::MaxKey => 0,
        Bson::ObjectId(_) => 12,
        Bson::Decimal128(_) => 16,
        Bson::RegularExpression(r) => r.pattern.len() + r.options.len() + 2,
        Bson::JavaScriptCodeWithScope(c) => 14 + c.code.len() + bson_size(&c.scope),
        Bson::DbPointer(_) => 24,
        Bson::Double(_) | Bson::Int64(_) | Bson::DateTime(_) | Bson::Timestamp(_) => 8,
    }
}

/// The identity of a transaction: its whole session id (an internal session adds
/// `txnNumber` and `txnUUID` to the parent's `id`) and its number.
fn txn_key(e: &Document) -> String {
    format!("{:?}/{:?}", e.get_document("lsid").ok(), e.get("txnNumber"))
}

/// An entry as `applyOps` takes it: the operation, nothing of the session or the oplog's
/// bookkeeping (`ts`, `t`, `v`, `wall`, `lsid`, `txnNumber`, `stmtId`, `prevOpTime`).
fn clean(e: &Document) -> Document {
    let mut c = Document::new();
    for k in ["op", "ns", "ui", "o", "o2", "b"] {
        if let Some(v) = e.get(k) {
            c.insert(k, v.clone());
        }
    }
    c
}

/// A committed index build as one `createIndexes` entry per index, in the oplog's form.
fn index_builds(ts: OpTime, e: &Document, o: &Document) -> Result<Vec<Document>, ReplayError> {
    let coll = o
        .get_str("commitIndexBuild")
        .map_err(|_| ReplayError::Malformed {
            at: ts.to_string(),
            what: "commitIndexBuild names no collection".into(),
        })?;
    let specs = o.get_array("indexes").map_err(|_| ReplayError::Malformed {
        at: ts.to_string(),
        what: "commitIndexBuild has no indexes".into(),
    })?;
    let mut ops = Vec::new();
    for spec in specs.iter().filter_map(Bson::as_document) {
        let mut create = doc! {"createIndexes": coll};
        for (k, v) in spec {
            create.insert(k, v.clone());
        }
        let mut op = doc! {"op": "c", "ns": e.get_str("ns").unwrap_or_default(), "o": create};
        if let Some(ui) = e.get("ui") {
            op.insert("ui", ui.clone());
        }
        ops.push(op);
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::Timestamp;

    fn ts(t: u32, i: u32) -> Bson {
        Bson::Timestamp(Timestamp {
            time: t,
            increment: i,
        })
    }

    fn at(t: u32, i: u32) -> OpTime {
        OpTime { t, i }
    }

    fn insert(t: u32, i: u32, id: i32) -> Document {
        doc! {"ts": ts(t, i), "t": 1i64, "op": "i", "ns": "db.c", "o": {"_id": id}, "wall": bson::DateTime::from_millis(i64::from(t) * 1000 + i64::from(i))}
    }

    fn upto(t: u32, i: u32) -> ReplayTarget {
        ReplayTarget {
            until: at(t, i),
            wall: None,
        }
    }

    fn run(r: &mut Replayer, entries: Vec<Document>) -> Vec<Batch> {
        let mut out = Vec::new();
        for e in entries {
            out.extend(r.push(e).unwrap());
        }
        out.extend(r.finish().unwrap());
        out
    }

    fn ids(batches: &[Batch]) -> Vec<i32> {
        batches
            .iter()
            .flat_map(|b| &b.ops)
            .filter_map(|o| o.get_document("o").ok()?.get_i32("_id").ok())
            .collect()
    }

    #[test]
    fn applies_the_entries_after_the_base_up_to_and_including_the_target() {
        let mut r = Replayer::new(at(10, 1), upto(12, 1));
        let b = run(
            &mut r,
            vec![
                insert(10, 1, 1),
                insert(11, 1, 2),
                insert(11, 1, 2), // a boundary entry seen twice
                insert(12, 1, 3),
                insert(12, 2, 4),
                insert(13, 1, 5),
            ],
        );
        assert_eq!(ids(&b), vec![2, 3]);
        assert!(r.ended());
        assert_eq!(r.stats.reached, Some(at(12, 1)));
        assert_eq!(r.stats.applied, 2);
        // What applyOps gets: the operation only, none of the oplog's bookkeeping.
        assert_eq!(b[0].ops[0], doc! {"op": "i", "ns": "db.c", "o": {"_id": 2}});
    }

    #[test]
    fn a_wall_clock_target_splits_its_second_by_wall_time_and_stops_at_the_first_later_entry() {
        let limit = chrono::DateTime::from_timestamp_millis(12_000 + 2).unwrap();
        let mut r = Replayer::new(at(10, 1), ReplayTarget::at_wall(limit).unwrap());
        // Walls 12.001, 12.002, 12.003, then 12.001 again: replay is a prefix, so the
        // last one (after a later one) is not applied either.
        let b = run(
            &mut r,
            vec![insert(12, 1, 1), insert(12, 2, 2), insert(12, 3, 3), {
                let mut e = insert(12, 4, 4);
                e.insert("wall", bson::DateTime::from_millis(12_001));
                e
            }],
        );
        assert_eq!(ids(&b), vec![1, 2]);
    }

    fn txn(t: u32, ops: Vec<Document>, partial: bool, prev: Option<(u32, u32)>) -> Document {
        let mut o = doc! {"applyOps": ops};
        if partial {
            o.insert("partialTxn", true);
        }
        let (pt, pi) = prev.unwrap_or((0, 0));
        doc! {"ts": ts(t, 1), "op": "c", "ns": "admin.$cmd", "o": o, "lsid": {"id": 7}, "txnNumber": 3i64, "prevOpTime": {"ts": ts(pt, pi), "t": -1i64}}
    }

    fn inner(id: i32) -> Document {
        doc! {"op": "i", "ns": "db.c", "o": {"_id": id}}
    }

    #[test]
    fn a_transaction_is_applied_whole_at_its_commit_even_when_it_began_inside_the_base() {
        let mut r = Replayer::new(at(10, 1), upto(20, 0));
        let b = run(
            &mut r,
            vec![
                txn(9, vec![inner(1), inner(2)], true, None),
                insert(10, 1, 100),
                txn(11, vec![inner(3)], false, Some((9, 1))),
            ],
        );
        assert_eq!(ids(&b), vec![1, 2, 3]);
        assert_eq!(r.stats.applied, 1);
    }

    #[test]
    fn a_transaction_committed_after_the_target_is_not_applied_at_all() {
        let mut r = Replayer::new(at(10, 1), upto(12, 1));
        let b = run(
            &mut r,
            vec![
                txn(11, vec![inner(1)], true, None),
                insert(12, 1, 2),
                txn(13, vec![inner(3)], false, Some((11, 1))),
            ],
        );
        assert_eq!(ids(&b), vec![2]);
        assert_eq!(r.stats.uncommitted_transactions, 1);
    }

    #[test]
    fn a_chain_whose_start_was_never_read_is_an_error_not_a_half_transaction() {
        let mut r = Replayer::new(at(10, 1), upto(20, 0));
        let err = r
            .push(txn(11, vec![inner(3)], false, Some((5, 1))))
            .unwrap_err();
        assert_eq!(err, ReplayError::TransactionStart { commit: at(11, 1) });
    }

    fn prepared(t: u32, ops: Vec<Document>) -> Document {
        let mut e = txn(t, ops, false, None);
        e.get_document_mut("o").unwrap().insert("prepare", true);
        e
    }

    fn outcome(t: u32, how: &str) -> Document {
        doc! {"ts": ts(t, 1), "op": "c", "ns": "admin.$cmd", "o": {how: 1, "commitTimestamp": ts(t, 1)}, "lsid": {"id": 7}, "txnNumber": 3i64, "prevOpTime": {"ts": ts(t - 1, 1), "t": 1i64}}
    }

    #[test]
    fn a_prepared_transaction_is_applied_at_its_commit_and_never_when_aborted_or_later() {
        let mut r = Replayer::new(at(10, 1), upto(20, 0));
        let b = run(
            &mut r,
            vec![
                prepared(11, vec![inner(1)]),
                outcome(12, "commitTransaction"),
            ],
        );
        assert_eq!(ids(&b), vec![1]);
        let mut r = Replayer::new(at(10, 1), upto(20, 0));
        let b = run(
            &mut r,
            vec![
                prepared(11, vec![inner(1)]),
                outcome(12, "abortTransaction"),
            ],
        );
        assert!(ids(&b).is_empty());
        // In flight at the target: refused, since another shard may hold its commit.
        let mut r = Replayer::new(at(10, 1), upto(12, 0));
        r.push(prepared(11, vec![inner(1)])).unwrap();
        r.push(outcome(12, "commitTransaction")).unwrap();
        assert_eq!(
            r.finish().unwrap_err(),
            ReplayError::PreparedAtTarget {
                prepared: at(11, 1)
            }
        );
    }

    #[test]
    fn a_chain_with_a_missing_middle_part_is_an_error() {
        let mut r = Replayer::new(at(10, 1), upto(20, 0));
        r.push(txn(11, vec![inner(1)], true, None)).unwrap();
        // Links back to 12, which was never read.
        let err = r
            .push(txn(13, vec![inner(3)], false, Some((12, 1))))
            .unwrap_err();
        assert_eq!(err, ReplayError::TransactionStart { commit: at(13, 1) });
    }

    #[test]
    fn an_index_build_is_applied_at_its_commit_as_create_indexes() {
        let mut r = Replayer::new(at(10, 1), upto(20, 0));
        let spec = doc! {"v": 2, "key": {"a": 1}, "name": "a_1", "unique": true};
        let entry = |i: u32, cmd: &str| doc! {"ts": ts(11, i), "op": "c", "ns": "db.$cmd", "ui": 5, "o": {cmd: "c", "indexBuildUUID": 1, "indexes": [spec.clone()]}};
        let b = run(
            &mut r,
            vec![entry(1, "startIndexBuild"), entry(2, "commitIndexBuild")],
        );
        assert_eq!(
            b[0].ops,
            vec![
                doc! {"op": "c", "ns": "db.$cmd", "o": {"createIndexes": "c", "v": 2, "key": {"a": 1}, "name": "a_1", "unique": true}, "ui": 5}
            ]
        );
        assert_eq!(r.stats.skipped_index_build, 1);
    }

    #[test]
    fn sessions_topology_and_noops_are_skipped() {
        let mut r = Replayer::new(at(10, 1), upto(20, 0));
        let e = |ns: &str, i: u32, op: &str| doc! {"ts": ts(11, i), "op": op, "ns": ns, "o": {"_id": 1}};
        let b = run(
            &mut r,
            vec![
                e("config.system.sessions", 1, "i"),
                e("config.transactions", 2, "u"),
                e("config.shards", 3, "u"),
                e("admin.system.version", 4, "u"),
                e("config.chunks", 5, "i"),
                e("", 6, "n"),
                e("db.c", 7, "i"),
            ],
        );
        let kept: Vec<&str> = b[0].ops.iter().map(|o| o.get_str("ns").unwrap()).collect();
        assert_eq!(kept, vec!["config.chunks", "db.c"]);
        assert_eq!(r.stats.skipped_namespace, 4);
        assert_eq!(r.stats.skipped_noop, 1);
    }

    #[test]
    fn a_command_on_a_skipped_namespace_is_skipped_whichever_side_it_names() {
        let mut r = Replayer::new(at(10, 1), upto(20, 0));
        let c = |i: u32, ns: &str, o: Document| doc! {"ts": ts(11, i), "op": "c", "ns": ns, "o": o};
        let b = run(
            &mut r,
            vec![
                c(
                    1,
                    "app.$cmd",
                    doc! {"renameCollection": "app.a", "to": "config.shards"},
                ),
                c(
                    2,
                    "config.$cmd",
                    doc! {"commitIndexBuild": "transactions", "indexes": []},
                ),
                c(
                    3,
                    "app.$cmd",
                    doc! {"renameCollection": "app.a", "to": "app.b"},
                ),
            ],
        );
        assert_eq!(b[0].ops.len(), 1, "{b:?}");
        assert_eq!(r.stats.skipped_namespace, 2);
    }

    #[test]
    fn sizes_are_counted_as_bson_writes_them() {
        let d = doc! {"op": "i", "ns": "db.c", "o": {"_id": 1, "a": [1i64, "x", true, null], "t": ts(1, 2), "b": bson::Binary {subtype: bson::spec::BinarySubtype::Generic, bytes: vec![1, 2, 3]}, "f": 1.5}};
        assert_eq!(bson_size(&d), d.to_vec().unwrap().len());
    }

    #[test]
    fn drop_database_goes_alone_and_big_runs_split_into_batches() {
        let mut r = Replayer::new(at(0, 1), upto(u32::MAX, 0));
        let mut entries: Vec<Document> = (1..=MAX_BATCH_OPS as u32 + 10)
            .map(|i| insert(1, i, i as i32))
            .collect();
        entries.push(doc! {"ts": ts(2, 1), "op": "c", "ns": "db.$cmd", "o": {"dropDatabase": 1}});
        entries.push(insert(3, 1, 0));
        let b = run(&mut r, entries);
        let sizes: Vec<usize> = b.iter().map(|b| b.ops.len()).collect();
        assert_eq!(sizes, vec![MAX_BATCH_OPS, 10, 1, 1]);
        assert!(
            b[2].ops[0]
                .get_document("o")
                .unwrap()
                .contains_key("dropDatabase")
        );
    }
}
