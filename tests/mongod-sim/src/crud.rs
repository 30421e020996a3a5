//! CRUD commands on any namespace, cursors (`find`, `getMore`, `killCursors`) and the
//! non-backup part of `aggregate`.

use crate::catalog::{Catalog, id_key, new_id};
use crate::node::{CmdError, Inner, Node, OPLOG_NS};
use crate::query::{self, apply_update, matches, project, sort_docs, upsert_seed};
use crate::repl::PRIMARY;
use bson::{Bson, Document, doc};
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

fn bad_value(msg: impl Into<String>) -> CmdError {
    CmdError::new(2, "BadValue", msg)
}

fn num(v: Option<&Bson>) -> Option<i64> {
    match v {
        Some(Bson::Int32(i)) => Some(*i as i64),
        Some(Bson::Int64(i)) => Some(*i),
        Some(Bson::Double(d)) => Some(*d as i64),
        _ => None,
    }
}

fn coll_name(cmd: &Document, name: &str) -> Result<String, CmdError> {
    cmd.get_str(name).map(str::to_string).map_err(|_| {
        CmdError::new(
            73,
            "InvalidNamespace",
            format!("collection name must be a string for {name}"),
        )
    })
}

/// Refuses client writes where mongod would: on a replica-set member that is not primary
/// (except to `local`), and waits while `fsync` holds its lock.
pub async fn writable(node: &Node, db: &str) -> Result<(), CmdError> {
    loop {
        {
            let g = node.lock();
            if g.repl.set_name.is_some() && db != "local" && g.repl.state != PRIMARY {
                return Err(CmdError::new(10107, "NotWritablePrimary", "not primary"));
            }
            if g.fsync_lock == 0 {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn snapshot(catalog: &Catalog, ns: &str, filter: &Document) -> Result<Vec<Document>, CmdError> {
    let Some(c) = catalog.colls.get(ns) else {
        return Ok(vec![]);
    };
    // mongod's IDHACK: a filter on `_id` alone (`{_id: v}` or `{_id: {$eq: v}}`) is one
    // lookup in the `_id` index, not a scan.
    if let Some(id) = id_only(filter) {
        // Index keys compare numbers by value: 5, 5i64 and 5.0 are one key.
        let same: Vec<Bson> = match id {
            Bson::Int32(n) => vec![
                Bson::Int32(*n),
                Bson::Int64(i64::from(*n)),
                Bson::Double(f64::from(*n)),
            ],
            Bson::Int64(n) => vec![
                Bson::Int64(*n),
                Bson::Double(*n as f64),
                i32::try_from(*n).map_or(Bson::Null, Bson::Int32),
            ],
            Bson::Double(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => vec![
                Bson::Double(*f),
                Bson::Int64(*f as i64),
                i32::try_from(*f as i64).map_or(Bson::Null, Bson::Int32),
            ],
            other => vec![other.clone()],
        };
        return Ok(same
            .iter()
            .filter(|v| !matches!(v, Bson::Null) || matches!(id, Bson::Null))
            .find_map(|v| c.get(v))
            .into_iter()
            .cloned()
            .collect());
    }
    let mut out = Vec::new();
    for d in c.docs() {
        if matches(d, filter).map_err(bad_value)? {
            out.push(d.clone());
        }
    }
    Ok(out)
}

/// The value of a filter that names one `_id` and nothing else (not an operator document
/// other than `$eq`, which may hold regular expressions or ranges).
fn id_only(filter: &Document) -> Option<&Bson> {
    if filter.len() != 1 {
        return None;
    }
    match filter.get("_id")? {
        Bson::Document(d) if d.len() == 1 && d.contains_key("$eq") => d.get("$eq"),
        Bson::Document(d) if d.keys().any(|k| k.starts_with('$')) => None,
        Bson::RegularExpression(_) => None,
        v => Some(v),
    }
}

/// A majority read of the oplog sees the entries up to the committed snapshot (entries are
/// written at their own timestamps, so a read at that timestamp hides the later ones). Other
/// collections are read as they are: the sim keeps no older versions of documents.
fn oplog_visible(
    mut docs: Vec<Document>,
    ns: &str,
    read_point: Option<bson::Timestamp>,
) -> Vec<Document> {
    if let (Some(point), true) = (read_point, ns == OPLOG_NS) {
        docs.retain(|d| d.get_timestamp("ts").is_ok_and(|t| t <= point));
    }
    docs
}

/// The oplog's `_id` is our storage key, not part of real oplog entries.
fn present(ns: &str, mut d: Document) -> Document {
    if ns == OPLOG_NS {
        d.remove("_id");
    }
    d
}

pub fn cursor_reply(
    inner: &mut Inner,
    ns: &str,
    mut docs: VecDeque<Document>,
    batch: usize,
    single: bool,
) -> Document {
    let first: Vec<Document> = docs.drain(..batch.min(docs.len())).collect();
    let id = if docs.is_empty() || single {
        0
    } else {
        inner.new_cursor(ns.to_string(), docs, false)
    };
    doc! {"cursor": {"firstBatch": first, "id": id, "ns": ns}, "ok": 1.0}
}

pub async fn find(node: &Arc<Node>, db: &str, cmd: &Document) -> Result<Document, CmdError> {
    let coll = coll_name(cmd, "find")?;
    let ns = format!("{db}.{coll}");
    let filter = cmd.get_document("filter").cloned().unwrap_or_default();
    let await_data = cmd.get_bool("awaitData").unwrap_or(false) && ns == OPLOG_NS;
    let majority = crate::commit::read_concern_level(cmd) == "majority";
    let notified = node.oplog_changed.notified();
    tokio::pin!(notified);
    notified.as_mut().enable();
    let read_point = if majority {
        crate::commit::majority_read_point(node, num(cmd.get("maxTimeMS"))).await?
    } else {
        None
    };
    let mut docs = oplog_visible(
        snapshot(&node.lock().catalog, &ns, &filter)?,
        &ns,
        read_point,
    );
    if docs.is_empty() && await_data {
        let wait = num(cmd.get("maxTimeMS")).unwrap_or(1000).clamp(1, 60_000) as u64;
        let _ = tokio::time::timeout(Duration::from_millis(wait), notified).await;
        let read_point = match read_point {
            Some(_) => node.lock().majority_snapshot().map(|s| s.op.ts),
            None => None,
        };
        docs = oplog_visible(
            snapshot(&node.lock().catalog, &ns, &filter)?,
            &ns,
            read_point,
        );
    }
    if let Ok(sort) = cmd.get_document("sort") {
        sort_docs(&mut docs, sort);
    }
    let skip = num(cmd.get("skip")).unwrap_or(0).max(0) as usize;
    let limit = num(cmd.get("limit")).unwrap_or(0);
    let proj = cmd.get_document("projection").cloned().unwrap_or_default();
    let mut out: VecDeque<Document> = docs
        .into_iter()
        .skip(skip)
        .map(|d| project(present(&ns, d), &proj))
        .collect();
    if limit != 0 {
        out.truncate(limit.unsigned_abs() as usize);
    }
    let batch = num(cmd.get("batchSize"))
        .map(|b| b.max(0) as usize)
        .unwrap_or(101);
    let single = cmd.get_bool("singleBatch").unwrap_or(false) || limit < 0;
    let slow = node.faults().slow_find_ms;
    if slow > 0 && batch > 0 && !out.is_empty() && ns != OPLOG_NS {
        tokio::time::sleep(Duration::from_millis(slow)).await;
    }
    Ok(cursor_reply(&mut node.lock(), &ns, out, batch, single))
}

pub async fn get_more(node: &Arc<Node>, db: &str, cmd: &Document) -> Result<Document, CmdError> {
    let id = num(cmd.get("getMore")).ok_or_else(|| bad_value("getMore needs a cursor id"))?;
    let batch = num(cmd.get("batchSize"))
        .map(|b| b.max(1) as usize)
        .unwrap_or(usize::MAX);
    let (slow, slow_find) = {
        let f = node.faults();
        (f.slow_reads_ms, f.slow_find_ms)
    };
    let (next, ns, done, backup) = {
        let mut g = node.lock();
        let c = g.cursors.get_mut(&id).ok_or_else(|| {
            CmdError::new(43, "CursorNotFound", format!("cursor id {id} not found"))
        })?;
        c.last_used = std::time::Instant::now();
        let next: Vec<Document> = c.pending.drain(..batch.min(c.pending.len())).collect();
        let ns = c.ns.clone();
        let done = c.pending.is_empty() && !c.backup;
        if done {
            g.cursors.remove(&id);
        }
        let backup = g.backup.as_ref().is_some_and(|b| b.cursor_id == id);
        (next, ns, done, backup)
    };
    if backup && slow > 0 && !next.is_empty() {
        tokio::time::sleep(Duration::from_millis(slow)).await;
    }
    if !backup && slow_find > 0 && !next.is_empty() && ns != OPLOG_NS {
        tokio::time::sleep(Duration::from_millis(slow_find)).await;
    }
    let _ = db;
    Ok(doc! {"cursor": {"nextBatch": next, "id": if done { 0 } else { id }, "ns": ns}, "ok": 1.0})
}

pub fn kill_cursors(node: &Node, cmd: &Document) -> Result<Document, CmdError> {
    let ids: Vec<i64> = cmd
        .get_array("cursors")
        .into_iter()
        .flatten()
        .filter_map(|v| num(Some(v)))
        .collect();
    let (mut killed, mut missing) = (Vec::new(), Vec::new());
    let mut g = node.lock();
    for id in ids {
        if g.cursors.remove(&id).is_some() {
            killed.push(id);
            if g.backup.as_ref().is_some_and(|b| b.cursor_id == id) {
                crate::backup::close(&mut g);
            }
        } else {
            missing.push(id);
        }
    }
    Ok(
        doc! {"cursorsKilled": killed, "cursorsNotFound": missing, "cursorsAlive": [], "cursorsUnknown": [], "ok": 1.0},
    )
}

/// Where a write statement's effects go: the node (applied, journaled, logged on a primary)
/// or an open transaction (kept until it commits).
pub trait Sink {
    fn catalog(&self) -> &Catalog;
    fn write(&mut self, ops: Vec<Document>) -> Result<(), CmdError>;
}

/// Writes straight to the node.
pub struct NodeSink<'a> {
    pub inner: &'a mut Inner,
    pub log: bool,
}

impl Sink for NodeSink<'_> {
    fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }
    fn write(&mut self, ops: Vec<Document>) -> Result<(), CmdError> {
        self.inner.write(ops, self.log)?;
        Ok(())
    }
}

/// Runs one of `insert`, `update`, `delete` on the node, or in the session's transaction
/// when the command carries `autocommit: false`.
async fn run_write(
    node: &Arc<Node>,
    db: &str,
    cmd: &Document,
    stmts: fn(&mut dyn Sink, &str, &Document) -> Result<Document, CmdError>,
) -> Result<Document, CmdError> {
    let name = cmd.keys().next().cloned().unwrap_or_default();
    let coll = coll_name(cmd, &name)?;
    writable(node, db).await?;
    let ns = format!("{db}.{coll}");
    if crate::txn::in_transaction(cmd) {
        return crate::txn::run_statement(node, &ns, cmd, stmts);
    }
    let mut g = node.lock();
    let log = g.should_log();
    let reply = stmts(&mut NodeSink { inner: &mut g, log }, &ns, cmd)?;
    drop(g);
    node.oplog_changed.notify_waiters();
    Ok(reply)
}

pub async fn insert(node: &Arc<Node>, db: &str, cmd: &Document) -> Result<Document, CmdError> {
    run_write(node, db, cmd, insert_docs).await
}

pub async fn update(node: &Arc<Node>, db: &str, cmd: &Document) -> Result<Document, CmdError> {
    run_write(node, db, cmd, update_stmts).await
}

pub async fn delete(node: &Arc<Node>, db: &str, cmd: &Document) -> Result<Document, CmdError> {
    run_write(node, db, cmd, delete_stmts).await
}

fn with_write_errors(mut reply: Document, errors: Vec<Document>) -> Document {
    if !errors.is_empty() {
        reply.insert("writeErrors", errors);
    }
    reply.insert("ok", 1.0);
    reply
}

/// The documents of an `insert`: a duplicate `_id` or unique key is a write error (the
/// rest go on unless `ordered`).
pub fn insert_docs(sink: &mut dyn Sink, ns: &str, cmd: &Document) -> Result<Document, CmdError> {
    let ordered = cmd.get_bool("ordered").unwrap_or(true);
    let mut seen: HashSet<Vec<u8>> = HashSet::new();
    let mut docs: Vec<Document> = Vec::new();
    let mut errors = Vec::new();
    let existing = sink.catalog().colls.get(ns);
    let mut unique = crate::indexes::UniqueKeys::new(sink.catalog(), ns);
    for (i, d) in cmd.get_array("documents").into_iter().flatten().enumerate() {
        let Bson::Document(d) = d else { continue };
        let mut d = d.clone();
        if !d.contains_key("_id") {
            let mut with_id = doc! {"_id": new_id()};
            with_id.extend(d);
            d = with_id;
        }
        let id = d.get("_id").cloned().unwrap_or(Bson::Null);
        let key = id_key(&id);
        if existing.is_some_and(|c| c.get(&id).is_some()) || seen.contains(&key) {
            errors.push(doc! {"index": i as i32, "code": 11000, "errmsg": format!("E11000 duplicate key error collection: {ns} index: _id_ dup key: {{ _id: {id} }}"), "keyPattern": {"_id": 1}, "keyValue": {"_id": id}});
        } else if let Some(dup) = unique.check(&d) {
            errors.push(dup.write_error(i));
        } else {
            seen.insert(key);
            unique.add(&d);
            docs.push(d);
            continue;
        }
        if ordered {
            break;
        }
    }
    let n = docs.len() as i32;
    if !docs.is_empty() {
        sink.write(
            docs.into_iter()
                .map(|d| doc! {"op": "i", "ns": ns, "o": d})
                .collect(),
        )?;
    }
    Ok(with_write_errors(doc! {"n": n}, errors))
}

/// What one update statement does: its oplog-form writes, matched and modified counts and
/// upserted `_id`; or the unique index it would break.
enum Stmt {
    Done(Vec<Document>, i32, i32, Option<Bson>),
    Dup(Box<crate::indexes::DupKey>),
}

fn update_one(sink: &dyn Sink, ns: &str, u: &Document) -> Result<Stmt, CmdError> {
    let q = u.get_document("q").cloned().unwrap_or_default();
    let Ok(upd) = u.get_document("u") else {
        return Err(CmdError::new(
            9,
            "FailedToParse",
            "pipeline-style updates are not modelled by mongod-sim",
        ));
    };
    let multi = u.get_bool("multi").unwrap_or(false);
    if multi && !query::is_operator_update(upd) {
        return Err(CmdError::new(
            9,
            "FailedToParse",
            "multi update is not supported for replacement-style update",
        ));
    }
    let mut hits = snapshot(sink.catalog(), ns, &q)?;
    if !multi {
        hits.truncate(1);
    }
    if hits.is_empty() && u.get_bool("upsert").unwrap_or(false) {
        let mut d = apply_update(&upsert_seed(&q), upd, true).map_err(bad_value)?;
        if !d.contains_key("_id") {
            let mut with_id = doc! {"_id": q.get("_id").cloned().unwrap_or_else(new_id)};
            with_id.extend(d);
            d = with_id;
        }
        if let Some(dup) = crate::indexes::check_unique(sink.catalog(), ns, &d, &[]) {
            return Ok(Stmt::Dup(Box::new(dup)));
        }
        let id = d.get("_id").cloned();
        return Ok(Stmt::Done(
            vec![doc! {"op": "i", "ns": ns, "o": d}],
            1,
            0,
            id,
        ));
    }
    let (mut n, mut modified, mut ops) = (0, 0, Vec::new());
    let mut changed = Vec::new();
    for h in hits {
        let new = apply_update(&h, upd, false).map_err(bad_value)?;
        n += 1;
        if new == h {
            continue;
        }
        if let Some(dup) = crate::indexes::check_unique(sink.catalog(), ns, &new, &changed) {
            return Ok(Stmt::Dup(Box::new(dup)));
        }
        modified += 1;
        let o2 = doc! {"_id": h.get("_id").cloned().unwrap_or(Bson::Null)};
        // Operator updates are logged as mongod 5.0+ logs them, as a `$v: 2` diff;
        // replacements as the whole new document.
        let o = if query::is_operator_update(upd) {
            crate::diff::update_entry(&h, upd, &new).unwrap_or_else(|| new.clone())
        } else {
            new.clone()
        };
        changed.push(new);
        ops.push(doc! {"op": "u", "ns": ns, "o": o, "o2": o2});
    }
    Ok(Stmt::Done(ops, n, modified, None))
}

/// The statements of an `update`; each sees the writes of the ones before it, as in mongod.
pub fn update_stmts(sink: &mut dyn Sink, ns: &str, cmd: &Document) -> Result<Document, CmdError> {
    let ordered = cmd.get_bool("ordered").unwrap_or(true);
    let (mut n, mut modified) = (0i32, 0i32);
    let mut upserted = Vec::new();
    let mut errors = Vec::new();
    for (i, u) in cmd.get_array("updates").into_iter().flatten().enumerate() {
        let Bson::Document(u) = u else { continue };
        match update_one(sink, ns, u)? {
            Stmt::Done(ops, hit, changed, id) => {
                n += hit;
                modified += changed;
                if let Some(id) = id {
                    upserted.push(doc! {"index": i as i32, "_id": id});
                }
                if !ops.is_empty() {
                    sink.write(ops)?;
                }
            }
            Stmt::Dup(dup) => {
                errors.push(dup.write_error(i));
                if ordered {
                    break;
                }
            }
        }
    }
    let mut reply = doc! {"n": n, "nModified": modified};
    if !upserted.is_empty() {
        reply.insert("upserted", upserted);
    }
    Ok(with_write_errors(reply, errors))
}

/// The statements of a `delete` (`limit: 1` deletes the first match only).
pub fn delete_stmts(sink: &mut dyn Sink, ns: &str, cmd: &Document) -> Result<Document, CmdError> {
    let mut ops = Vec::new();
    let mut gone: HashSet<Vec<u8>> = HashSet::new();
    for d in cmd.get_array("deletes").into_iter().flatten() {
        let Bson::Document(d) = d else { continue };
        let q = d.get_document("q").cloned().unwrap_or_default();
        let mut hits = snapshot(sink.catalog(), ns, &q)?;
        hits.retain(|h| !gone.contains(&id_key(h.get("_id").unwrap_or(&Bson::Null))));
        if num(d.get("limit")).unwrap_or(0) == 1 {
            hits.truncate(1);
        }
        for h in hits {
            let id = h.get("_id").cloned().unwrap_or(Bson::Null);
            gone.insert(id_key(&id));
            ops.push(doc! {"op": "d", "ns": ns, "o": {"_id": id}});
        }
    }
    let n = ops.len() as i32;
    if !ops.is_empty() {
        sink.write(ops)?;
    }
    Ok(doc! {"n": n, "ok": 1.0})
}

pub fn count(node: &Node, db: &str, cmd: &Document) -> Result<Document, CmdError> {
    let ns = format!("{db}.{}", coll_name(cmd, "count")?);
    let q = cmd.get_document("query").cloned().unwrap_or_default();
    let n = snapshot(&node.lock().catalog, &ns, &q)?.len();
    Ok(doc! {"n": n as i64, "ok": 1.0})
}

pub async fn ddl(
    node: &Arc<Node>,
    db: &str,
    name: &str,
    cmd: &Document,
) -> Result<Document, CmdError> {
    writable(node, db).await?;
    let mut g = node.lock();
    let log = g.should_log();
    ddl_inner(&mut g, log, db, name, cmd, None)
}

/// `drop`, `create` (with `ui`, the UUID `applyOps` may give it) and `dropDatabase` on a
/// locked node. A drop is logged `{drop: <coll>}` with `o2: {numRecords}`; `dropDatabase`
/// drops each collection (one `drop` entry each) and then logs `{dropDatabase: 1}`, as mongod
/// 4.2+ does, and writes nothing for a database that does not exist.
pub fn ddl_inner(
    g: &mut Inner,
    log: bool,
    db: &str,
    name: &str,
    cmd: &Document,
    ui: Option<&Bson>,
) -> Result<Document, CmdError> {
    let cmd_ns = format!("{db}.$cmd");
    let drop_op = |g: &Inner, coll: &str| {
        let records = g
            .catalog
            .colls
            .get(&format!("{db}.{coll}"))
            .map_or(0, |c| c.len() as i64);
        doc! {"op": "c", "ns": &cmd_ns, "o": {"drop": coll}, "o2": {"numRecords": records}}
    };
    match name {
        "drop" => {
            let coll = coll_name(cmd, "drop")?;
            let ns = format!("{db}.{coll}");
            let was = g.catalog.colls.get(&ns).map(|c| c.indexes.len() as i32 + 1);
            if let Some(was) = was {
                let op = drop_op(g, &coll);
                g.write(vec![op], log)?;
                return Ok(doc! {"nIndexesWas": was, "ns": ns, "ok": 1.0});
            }
            Ok(doc! {"ok": 1.0})
        }
        "create" => {
            let coll = coll_name(cmd, "create")?;
            let ns = format!("{db}.{coll}");
            if g.catalog.colls.contains_key(&ns) {
                return Err(CmdError::new(
                    48,
                    "NamespaceExists",
                    format!("Collection {ns} already exists."),
                ));
            }
            let mut o = doc! {"create": &coll};
            o.extend(crate::ddl::create_options(cmd)?);
            let mut op = doc! {"op": "c", "ns": &cmd_ns};
            if let Some(ui) = ui {
                op.insert("ui", ui.clone());
            }
            op.insert("o", o);
            g.write(vec![op], log)?;
            Ok(doc! {"ok": 1.0})
        }
        _ => {
            let prefix = format!("{db}.");
            let colls: Vec<String> = g
                .catalog
                .colls
                .keys()
                .filter_map(|ns| ns.strip_prefix(&prefix).map(str::to_string))
                .collect();
            if colls.is_empty() {
                return Ok(doc! {"ok": 1.0});
            }
            let mut ops: Vec<Document> = colls.iter().map(|c| drop_op(g, c)).collect();
            ops.push(doc! {"op": "c", "ns": &cmd_ns, "o": {"dropDatabase": 1}});
            g.write(ops, log)?;
            Ok(doc! {"dropped": db, "ok": 1.0})
        }
    }
}

pub fn list_collections(node: &Node, db: &str, cmd: &Document) -> Result<Document, CmdError> {
    let filter = cmd.get_document("filter").cloned().unwrap_or_default();
    let name_only = cmd.get_bool("nameOnly").unwrap_or(false);
    let mut g = node.lock();
    let prefix = format!("{db}.");
    let mut out = VecDeque::new();
    for (ns, c) in g
        .catalog
        .colls
        .iter()
        .filter(|(ns, _)| ns.starts_with(&prefix))
    {
        let name = &ns[prefix.len()..];
        let d = if name_only {
            doc! {"name": name, "type": "collection"}
        } else {
            doc! {"name": name, "type": "collection", "options": c.options.clone(), "info": {"readOnly": false, "uuid": c.uuid.clone()}, "idIndex": {"v": 2, "key": {"_id": 1}, "name": "_id_"}}
        };
        if matches(&d, &filter).map_err(bad_value)? {
            out.push_back(d);
        }
    }
    Ok(cursor_reply(
        &mut g,
        &format!("{db}.$cmd.listCollections"),
        out,
        usize::MAX,
        true,
    ))
}

pub fn list_databases(node: &Node, cmd: &Document) -> Document {
    let g = node.lock();
    let name_only = cmd.get_bool("nameOnly").unwrap_or(false);
    let dbs = g.catalog.databases();
    let total: u64 = dbs.values().sum();
    let list: Vec<Document> = dbs
        .into_iter()
        .map(|(name, size)| {
            if name_only {
                doc! {"name": name}
            } else {
                doc! {"name": name, "sizeOnDisk": size as i64, "empty": size == 0}
            }
        })
        .collect();
    doc! {"databases": list, "totalSize": total as i64, "totalSizeMb": (total / 1_048_576) as i64, "ok": 1.0}
}

/// `$match`, `$sort`, `$skip`, `$limit`, `$project` and `$count` over one collection.
pub fn aggregate_plain(
    node: &Node,
    db: &str,
    cmd: &Document,
    pipeline: &[Document],
) -> Result<Document, CmdError> {
    let coll = cmd.get_str("aggregate").map_err(|_| {
        CmdError::new(
            73,
            "InvalidNamespace",
            "aggregate: 1 is only for $backupCursor stages in mongod-sim",
        )
    })?;
    let ns = format!("{db}.{coll}");
    let mut g = node.lock();
    let mut docs: Vec<Document> = g
        .catalog
        .colls
        .get(&ns)
        .map(|c| c.docs().cloned().map(|d| present(&ns, d)).collect())
        .unwrap_or_default();
    for stage in pipeline {
        let (name, arg) = stage
            .iter()
            .next()
            .ok_or_else(|| bad_value("empty pipeline stage"))?;
        match (name.as_str(), arg) {
            ("$match", Bson::Document(f)) => {
                let mut kept = Vec::new();
                for d in docs {
                    if matches(&d, f).map_err(bad_value)? {
                        kept.push(d);
                    }
                }
                docs = kept;
            }
            ("$sort", Bson::Document(s)) => sort_docs(&mut docs, s),
            ("$skip", v) => {
                docs = docs
                    .into_iter()
                    .skip(num(Some(v)).unwrap_or(0) as usize)
                    .collect()
            }
            ("$limit", v) => docs.truncate(num(Some(v)).unwrap_or(0) as usize),
            ("$project", Bson::Document(p)) => {
                docs = docs.into_iter().map(|d| project(d, p)).collect()
            }
            ("$count", Bson::String(field)) => docs = vec![doc! {field: docs.len() as i32}],
            // Only the whole-collection form drivers use for countDocuments: {_id: <const>, f: {$sum: n}}.
            ("$group", Bson::Document(g)) => {
                let mut out = doc! {"_id": g.get("_id").cloned().unwrap_or(Bson::Null)};
                for (k, v) in g.iter().filter(|(k, _)| *k != "_id") {
                    let per = v
                        .as_document()
                        .and_then(|d| num(d.get("$sum")))
                        .ok_or_else(|| {
                            bad_value("mongod-sim models $group only with constant $sum")
                        })?;
                    out.insert(k.clone(), per * docs.len() as i64);
                }
                docs = if docs.is_empty() { vec![] } else { vec![out] };
            }
            (other, _) => {
                return Err(CmdError::new(
                    40324,
                    "Location40324",
                    format!("Unrecognized pipeline stage name: '{other}'"),
                ));
            }
        }
    }
    let batch = cmd
        .get_document("cursor")
        .ok()
        .and_then(|c| num(c.get("batchSize")))
        .map(|b| b as usize)
        .unwrap_or(101);
    Ok(cursor_reply(&mut g, &ns, docs.into(), batch, false))
}
