//! Multi-document transactions, the simplest faithful subset: `insert`/`update`/`delete`
//! with `lsid`, `txnNumber`, `autocommit: false` (and `startTransaction: true` on the first)
//! are kept in the session's transaction, each statement seeing the ones before it, and
//! `commitTransaction` applies them at once and logs them as a 7.0 primary does:
//! `{op: "c", ns: "admin.$cmd", o: {applyOps: [ops]}, lsid, txnNumber, prevOpTime}`, or a
//! chain of `partialTxn: true` entries linked by `prevOpTime` whose last one carries `count`.
//! Reads inside a transaction see committed data only.

use crate::catalog::{Catalog, id_key};
use crate::crud::Sink;
use crate::node::{CmdError, Inner, Node, OPLOG_NS, target_ns};
use bson::{Bson, Document, Timestamp, doc};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;

/// mongod's limit on one oplog entry's operations (16 MB less room for the entry's fields).
const MAX_ENTRY_BYTES: usize = 16 * 1024 * 1024 - 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Active,
    Committed,
    /// Kept, so the session still knows its highest transaction number.
    Aborted,
}

/// One session's transaction.
pub struct Txn {
    number: i64,
    lsid: Document,
    state: State,
    /// The statements' writes in oplog form, in order.
    ops: Vec<Document>,
    /// The collections the statements touched, with their writes applied: what the next
    /// statement reads.
    scratch: Catalog,
}

/// The transactions by session id.
pub type Txns = HashMap<Vec<u8>, Txn>;

/// A statement that belongs to a transaction (`autocommit: false`).
pub fn in_transaction(cmd: &Document) -> bool {
    cmd.get_bool("autocommit").ok() == Some(false)
}

fn no_such_txn(number: i64) -> CmdError {
    CmdError::new(
        251,
        "NoSuchTransaction",
        format!("Transaction with {{ txnNumber: {number} }} has been aborted."),
    )
}

/// The session key and transaction number of a command, checked as mongod checks them.
fn session(g: &Inner, cmd: &Document) -> Result<(Vec<u8>, Document, i64), CmdError> {
    if !g.repl.enabled() {
        return Err(CmdError::new(
            20,
            "IllegalOperation",
            "Transaction numbers are only allowed on a replica set member or mongos",
        ));
    }
    let lsid = cmd.get_document("lsid").map_err(|_| {
        CmdError::new(
            72,
            "InvalidOptions",
            "Transaction number requires a session ID to also be specified",
        )
    })?;
    let number = match cmd.get("txnNumber") {
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Int32(n)) => i64::from(*n),
        _ => {
            return Err(CmdError::new(
                72,
                "InvalidOptions",
                "'autocommit' field requires a transaction number to also be specified",
            ));
        }
    };
    let id = lsid.get("id").cloned().unwrap_or(Bson::Null);
    Ok((id_key(&id), lsid.clone(), number))
}

/// Statements write to the transaction's scratch copy and keep the ops for the commit.
struct TxnSink<'a> {
    txn: &'a mut Txn,
}

impl Sink for TxnSink<'_> {
    fn catalog(&self) -> &Catalog {
        &self.txn.scratch
    }
    fn write(&mut self, ops: Vec<Document>) -> Result<(), CmdError> {
        for op in &ops {
            self.txn.scratch.apply(op);
        }
        self.txn.ops.extend(ops);
        Ok(())
    }
}

/// Runs one write statement in the session's transaction, starting it on
/// `startTransaction: true`. A write error aborts the transaction, as in mongod.
pub fn run_statement(
    node: &Arc<Node>,
    ns: &str,
    cmd: &Document,
    stmts: fn(&mut dyn Sink, &str, &Document) -> Result<Document, CmdError>,
) -> Result<Document, CmdError> {
    let mut g = node.lock();
    let (key, lsid, number) = session(&g, cmd)?;
    if cmd.get_bool("startTransaction").unwrap_or(false) {
        if let Some(t) = g.txns.get(&key)
            && t.number >= number
        {
            return Err(CmdError::new(
                225,
                "TransactionTooOld",
                format!(
                    "Cannot start transaction {number} on session because a newer transaction {} has already started",
                    t.number
                ),
            ));
        }
        let txn = Txn {
            number,
            lsid,
            state: State::Active,
            ops: Vec::new(),
            scratch: Catalog::default(),
        };
        g.txns.insert(key.clone(), txn);
    }
    let inner = &mut *g;
    let txn = match inner.txns.get_mut(&key) {
        Some(t) if t.number == number && t.state == State::Active => t,
        _ => return Err(no_such_txn(number)),
    };
    if !txn.scratch.colls.contains_key(ns)
        && let Some(c) = inner.catalog.colls.get(ns)
    {
        txn.scratch.colls.insert(ns.to_string(), c.clone());
    }
    let reply = stmts(&mut TxnSink { txn }, ns, cmd);
    if reply
        .as_ref()
        .map_or(true, |r| r.contains_key("writeErrors"))
    {
        inner.txns.remove(&key);
    }
    reply
}

/// `commitTransaction` or `abortTransaction`, which run on `admin` only.
pub fn command(
    node: &Arc<Node>,
    db: &str,
    name: &str,
    cmd: &Document,
) -> Result<Document, CmdError> {
    if db != "admin" {
        return Err(CmdError::new(
            13,
            "Unauthorized",
            format!("{name} may only be run against the admin database."),
        ));
    }
    match name {
        "commitTransaction" => commit(node, cmd),
        _ => abort(node, cmd),
    }
}

/// `commitTransaction` (on admin): applies the transaction's writes and logs them; a commit
/// retried after it succeeded succeeds again.
pub fn commit(node: &Arc<Node>, cmd: &Document) -> Result<Document, CmdError> {
    let max_ops = node
        .opts
        .parameters
        .get("maxNumberOfTransactionOperationsInSingleOplogEntry")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(usize::MAX)
        .max(1);
    let mut g = node.lock();
    let (key, _, number) = session(&g, cmd)?;
    let (lsid, ops) = match g.txns.get_mut(&key) {
        Some(t) if t.number == number && t.state == State::Committed => {
            return Ok(doc! {"ok": 1.0});
        }
        Some(t) if t.number == number && t.state == State::Active => {
            t.state = State::Committed;
            t.scratch = Catalog::default();
            (t.lsid.clone(), std::mem::take(&mut t.ops))
        }
        _ => return Err(no_such_txn(number)),
    };
    if !ops.is_empty() {
        g.commit_txn(&lsid, number, ops, max_ops)?;
    }
    drop(g);
    node.oplog_changed.notify_waiters();
    Ok(doc! {"ok": 1.0})
}

fn txn_abort(inner: &mut Inner, key: &[u8]) {
    if let Some(t) = inner.txns.get_mut(key) {
        t.state = State::Aborted;
        t.ops.clear();
        t.scratch = Catalog::default();
    }
}

/// `abortTransaction` (on admin): the writes are dropped; nothing is logged.
pub fn abort(node: &Arc<Node>, cmd: &Document) -> Result<Document, CmdError> {
    let mut g = node.lock();
    let (key, _, number) = session(&g, cmd)?;
    match g.txns.get(&key) {
        Some(t) if t.number == number && t.state == State::Active => {
            txn_abort(&mut g, &key);
            Ok(doc! {"ok": 1.0})
        }
        _ => Err(no_such_txn(number)),
    }
}

/// The `lsid` as the oplog carries it: the session id and the hash of its user (no user
/// here: the SHA-256 of the empty string, as mongod without authentication writes).
fn logged_lsid(lsid: &Document) -> Document {
    let uid = bson::Binary {
        subtype: bson::spec::BinarySubtype::Generic,
        bytes: Sha256::digest(b"").to_vec(),
    };
    doc! {"id": lsid.get("id").cloned().unwrap_or(Bson::Null), "uid": uid}
}

/// Splits the ops into entries of at most `max_ops` ops and about 16 MB each.
fn chunks(ops: Vec<Document>, max_ops: usize) -> Vec<Vec<Document>> {
    let mut out: Vec<Vec<Document>> = vec![Vec::new()];
    let mut bytes = 0;
    for op in ops {
        let size = op.to_vec().map_or(0, |v| v.len());
        let last = out.last_mut().expect("never empty");
        if !last.is_empty() && (last.len() >= max_ops || bytes + size > MAX_ENTRY_BYTES) {
            out.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        out.last_mut().expect("never empty").push(op);
    }
    out
}

impl Inner {
    /// Applies a committed transaction's writes and logs them as one `applyOps` entry, or a
    /// chain of them (`partialTxn: true` on all but the last, which carries `count`), each
    /// with `lsid`, `txnNumber` and `prevOpTime` (`{ts: Timestamp(0, 0), t: -1}` on the first).
    pub fn commit_txn(
        &mut self,
        lsid: &Document,
        number: i64,
        ops: Vec<Document>,
        max_ops: usize,
    ) -> Result<(), CmdError> {
        let mut journal = Vec::new();
        self.ensure_oplog(&mut journal);
        let mut logged = Vec::new();
        for mut op in self.with_implicit_creates(ops) {
            let target = target_ns(&op);
            self.catalog.apply(&op);
            let mut inner = doc! {"op": op.get_str("op").unwrap_or("n"), "ns": op.get_str("ns").unwrap_or_default()};
            if let Some(c) = self.catalog.colls.get(&target) {
                inner.insert("ui", c.uuid.clone());
            }
            for key in ["o", "o2"] {
                if let Some(v) = op.get(key) {
                    inner.insert(key, v.clone());
                }
            }
            logged.push(inner);
            op.insert("l", true);
            journal.push(op);
        }
        let total = logged.len() as i64;
        let parts = chunks(logged, max_ops);
        let n = parts.len();
        let mut prev = doc! {"ts": Timestamp { time: 0, increment: 0 }, "t": -1i64};
        let mut ts = self.last_ts;
        for (k, part) in parts.into_iter().enumerate() {
            let mut o = doc! {"applyOps": part};
            if k + 1 < n {
                o.insert("partialTxn", true);
            } else if n > 1 {
                o.insert("count", total);
            }
            let fields = doc! {
                "lsid": logged_lsid(lsid), "txnNumber": number, "op": "c", "ns": "admin.$cmd",
                "o": o, "prevOpTime": prev,
            };
            ts = self.append_oplog(fields, &mut journal);
            prev = doc! {"ts": ts, "t": self.repl.term};
        }
        self.store
            .journal_append(&doc! {"ts": ts, "ops": journal})?;
        self.update_commit_point();
        self.reclaim_oplog()?;
        Ok(())
    }
}

fn ops_of(o: &Document) -> Vec<Document> {
    o.get_array("applyOps")
        .into_iter()
        .flatten()
        .filter_map(|op| op.as_document().cloned())
        .collect()
}

fn prev_ts(entry: &Document) -> Option<Timestamp> {
    let ts = entry
        .get_document("prevOpTime")
        .ok()?
        .get_timestamp("ts")
        .ok()?;
    (ts.time != 0 || ts.increment != 0).then_some(ts)
}

/// The ops an `applyOps` oplog entry applies when an applier reaches it: none for a
/// `partialTxn` (or prepared) entry, whose ops wait for the chain's last entry; for the last
/// one, the ops of every entry its `prevOpTime` chain links, oldest first, found in the oplog.
pub fn entry_ops(catalog: &Catalog, o: &Document, entry: &Document) -> Vec<Document> {
    if o.get_bool("partialTxn").unwrap_or(false) || o.get_bool("prepare").unwrap_or(false) {
        return Vec::new();
    }
    let mut parts = vec![ops_of(o)];
    let mut prev = prev_ts(entry);
    let oplog = catalog.colls.get(OPLOG_NS);
    while let (Some(ts), Some(log)) = (prev, oplog) {
        let Some(e) = log.get(&Bson::Timestamp(ts)) else {
            break;
        };
        parts.push(ops_of(&e.get_document("o").cloned().unwrap_or_default()));
        prev = prev_ts(e);
    }
    parts.into_iter().rev().flatten().collect()
}
