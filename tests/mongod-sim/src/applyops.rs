//! The `applyOps` command as mongod 7.0 runs it: oplog-form entries applied in order, not
//! atomically; on a primary each applied write is logged like a client's (its own `i`/`u`/
//! `d`/`c` entry, never one `applyOps` entry); on a standalone it is applied and journaled.
//! A thrown error stops the batch (`{applied, code, codeName, errmsg, results, ok: 0}`); an
//! update that finds no document is a `false` result and the batch goes on, ending in
//! `UnknownError`. An insert of an existing `_id` replaces the document (mongod's applier
//! turns it into an upsert), so a retried batch is idempotent.

use crate::crud::writable;
use crate::node::{CmdError, Inner, Node};
use bson::{Bson, Document, doc};
use std::sync::Arc;

/// `oplogApplicationMode`: `ApplyOps` (the default) or `InitialSync`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    ApplyOps,
    InitialSync,
}

/// How one entry went: applied (`true` result), or failed without stopping the batch.
enum Applied {
    Ok,
    Soft,
}

/// The command's own checks, shared with a nested `applyOps` entry.
fn check_command(cmd: &Document) -> Result<Vec<Document>, CmdError> {
    if cmd.contains_key("prepare") {
        return Err(CmdError::new(
            2,
            "BadValue",
            "applyOps command can't have 'prepare' field",
        ));
    }
    if cmd.contains_key("partialTxn") {
        return Err(CmdError::new(
            31056,
            "Location31056",
            "applyOps command can't have 'partialTxn' field.",
        ));
    }
    if cmd.contains_key("count") {
        return Err(CmdError::new(
            31240,
            "Location31240",
            "applyOps command can't have 'count' field.",
        ));
    }
    let ops = match cmd.get("applyOps") {
        Some(Bson::Array(a)) => a,
        _ => {
            return Err(CmdError::new(
                14,
                "TypeMismatch",
                "BSON field 'applyOps.applyOps' is the wrong type, expected type 'array'",
            ));
        }
    };
    let ops: Vec<Document> = ops
        .iter()
        .filter_map(|o| o.as_document().cloned())
        .collect();
    let drops_db = ops.iter().any(|op| {
        op.get_str("op").ok() == Some("c")
            && op
                .get_document("o")
                .is_ok_and(|o| o.contains_key("dropDatabase"))
    });
    if drops_db && ops.len() != 1 {
        return Err(CmdError::new(
            6275900,
            "Location6275900",
            "dropDatabase in an applyOps must be the only entry",
        ));
    }
    Ok(ops)
}

pub async fn apply_ops(node: &Arc<Node>, db: &str, cmd: &Document) -> Result<Document, CmdError> {
    node.crash_point("apply-ops");
    let mode = match cmd.get_str("oplogApplicationMode") {
        Err(_) | Ok("ApplyOps") => Mode::ApplyOps,
        Ok("InitialSync") => Mode::InitialSync,
        Ok(other) => {
            return Err(CmdError::new(
                2,
                "BadValue",
                format!("Invalid oplog application mode provided: {other}"),
            ));
        }
    };
    let ops = check_command(cmd)?;
    writable(node, db).await.map_err(|_| {
        CmdError::new(
            10107,
            "NotWritablePrimary",
            format!("Not primary while applying ops to database {db}"),
        )
    })?;
    let mut g = node.lock();
    let log = g.should_log();
    let mut results: Vec<Bson> = Vec::new();
    let mut soft = 0;
    // On a standalone (nothing replicates what is not yet journaled), one journal write
    // for the batch, before it answers (see `Store::begin_group`).
    if !log {
        g.store.begin_group();
    }
    for op in ops.iter().filter(|op| op.get_str("op").ok() != Some("n")) {
        match apply_entry(&mut g, log, op, mode) {
            Ok(Applied::Ok) => results.push(true.into()),
            Ok(Applied::Soft) => {
                results.push(false.into());
                soft += 1;
            }
            Err(e) => {
                results.push(false.into());
                g.store.end_group().map_err(journal_failed)?;
                drop(g);
                node.oplog_changed.notify_waiters();
                return Ok(
                    doc! {"applied": results.len() as i32, "code": e.code, "codeName": e.code_name, "errmsg": e.errmsg, "results": results, "ok": 0.0},
                );
            }
        }
    }
    g.store.end_group().map_err(journal_failed)?;
    drop(g);
    node.oplog_changed.notify_waiters();
    let mut reply = doc! {"applied": results.len() as i32, "results": results};
    if soft > 0 {
        reply.extend(
            CmdError::new(
                8,
                "UnknownError",
                "applyOps had one or more errors applying ops",
            )
            .to_doc(),
        );
    } else {
        reply.insert("ok", 1.0);
    }
    Ok(reply)
}

/// A journal that cannot be written fails the command, as a full disk would.
fn journal_failed(e: crate::storage::StorageError) -> CmdError {
    CmdError::new(8, "UnknownError", format!("writing the journal: {e}"))
}

/// mongod's rendering of an entry in its messages.
fn show(op: &Document) -> String {
    op.to_string()
}

/// Applies one entry on a locked node.
fn apply_entry(g: &mut Inner, log: bool, op: &Document, mode: Mode) -> Result<Applied, CmdError> {
    let ns = op.get_str("ns").unwrap_or_default();
    let kind = op.get_str("op").unwrap_or_default();
    if kind == "c" {
        return apply_command(g, log, op, mode).map(|_| Applied::Ok);
    }
    if !matches!(kind, "i" | "u" | "d") {
        return Err(CmdError::new(
            14825,
            "Location14825",
            format!("error in applyOps: unknown opType {kind}"),
        ));
    }
    if !ns
        .split_once('.')
        .is_some_and(|(d, c)| !d.is_empty() && !c.is_empty())
    {
        return Err(CmdError::new(
            73,
            "InvalidNamespace",
            format!("invalid ns: {ns}"),
        ));
    }
    let c = g.catalog.colls.get(ns);
    if let Some(Bson::Binary(ui)) = op.get("ui")
        && c.is_none_or(|c| c.uuid.bytes != ui.bytes)
    {
        let uuid = bson::Uuid::from_bytes(ui.bytes.clone().try_into().unwrap_or([0; 16]));
        return Ok(soft_error(
            3318200,
            format!("Namespace '{ns}' and UUID '{uuid}' point to different collections"),
        ));
    }
    if c.is_none() {
        if kind == "d" {
            return Ok(Applied::Ok);
        }
        return Err(CmdError::new(
            26,
            "NamespaceNotFound",
            format!(
                "cannot apply insert or update operation on a non-existent namespace {ns}: {}",
                show(op)
            ),
        ));
    }
    let o = op.get_document("o").cloned().unwrap_or_default();
    match kind {
        "i" => insert(g, log, ns, op, o),
        "u" => update(g, log, ns, op, o, mode),
        _ => {
            let id = o.get("_id").cloned().unwrap_or(Bson::Null);
            if g.catalog.colls.get(ns).and_then(|c| c.get(&id)).is_some() {
                g.write(vec![doc! {"op": "d", "ns": ns, "o": {"_id": id}}], log)?;
            }
            Ok(Applied::Ok)
        }
    }
}

/// A failure mongod's applier returns rather than throws: logged, the batch goes on.
fn soft_error(code: i32, msg: String) -> Applied {
    crate::slog!(
        I,
        "REPL",
        21064,
        "conn",
        "applyOps error applying",
        doc! {"error": format!("Location{code}: {msg}")}
    );
    Applied::Soft
}

fn insert(
    g: &mut Inner,
    log: bool,
    ns: &str,
    op: &Document,
    o: Document,
) -> Result<Applied, CmdError> {
    let Some(id) = o.get("_id").cloned() else {
        return Err(CmdError::new(
            4,
            "NoSuchKey",
            format!("Failed to apply insert due to missing _id: {}", show(op)),
        ));
    };
    if let Some(dup) = crate::indexes::check_unique(&g.catalog, ns, &o, &[]) {
        return Err(dup.to_error());
    }
    // An existing `_id`: mongod's applier turns the insert into an upsert (a replacement).
    let old = g.catalog.colls.get(ns).and_then(|c| c.get(&id)).cloned();
    let write = match old {
        None => doc! {"op": "i", "ns": ns, "o": o},
        Some(old) if old == o => return Ok(Applied::Ok),
        Some(_) => doc! {"op": "u", "ns": ns, "o": o, "o2": {"_id": id}},
    };
    g.write(vec![write], log)?;
    Ok(Applied::Ok)
}

fn update(
    g: &mut Inner,
    log: bool,
    ns: &str,
    op: &Document,
    o: Document,
    mode: Mode,
) -> Result<Applied, CmdError> {
    let Some(id) = op
        .get_document("o2")
        .ok()
        .and_then(|o2| o2.get("_id"))
        .cloned()
    else {
        return Err(CmdError::new(
            4,
            "NoSuchKey",
            format!("Failed to apply update due to missing _id: {}", show(op)),
        ));
    };
    let delta = o.get_i32("$v").ok() == Some(2);
    let old = g.catalog.colls.get(ns).and_then(|c| c.get(&id)).cloned();
    let upsert = op.get_bool("b").unwrap_or(false);
    let base = match (&old, upsert) {
        (Some(d), _) => d.clone(),
        (None, true) => doc! {"_id": id.clone()},
        (None, false) if mode == Mode::InitialSync => return Ok(Applied::Ok),
        (None, false) => {
            return Ok(soft_error(
                77,
                format!("Couldn't find document: {}", show(op)),
            ));
        }
    };
    let new = if delta {
        crate::diff::apply(&base, &o.get_document("diff").cloned().unwrap_or_default())
    } else {
        let mut d = doc! {"_id": id.clone()};
        d.extend(o.clone().into_iter().filter(|(k, _)| k != "_id"));
        d
    };
    if old.as_ref() == Some(&new) {
        return Ok(Applied::Ok);
    }
    if let Some(dup) = crate::indexes::check_unique(&g.catalog, ns, &new, &[]) {
        return Err(dup.to_error());
    }
    let write = match old {
        None => doc! {"op": "i", "ns": ns, "o": new},
        Some(_) => doc! {"op": "u", "ns": ns, "o": if delta { o } else { new }, "o2": {"_id": id}},
    };
    g.write(vec![write], log)?;
    Ok(Applied::Ok)
}

/// The errors mongod's applier accepts for each command, so a replayed DDL entry whose
/// effect is already there succeeds (`applyCommand_inlock`'s acceptable errors).
fn acceptable(command: &str, code: i32) -> bool {
    let codes: &[i32] = match command {
        "create" => &[48],
        "drop" | "dropDatabase" => &[26],
        "createIndexes" | "commitIndexBuild" => &[26, 68],
        "dropIndexes" | "collMod" => &[26, 27],
        "renameCollection" => &[26, 48],
        _ => &[],
    };
    codes.contains(&code)
}

/// A command entry (`op: "c"`), run as the command it stands for.
fn apply_command(g: &mut Inner, log: bool, op: &Document, mode: Mode) -> Result<(), CmdError> {
    let ns = op.get_str("ns").unwrap_or_default();
    let db = crate::node::db_of(ns).to_string();
    let o = op.get_document("o").cloned().unwrap_or_default();
    let name = o.keys().next().cloned().unwrap_or_default();
    let result = run_command(g, log, &db, &name, &o, op, mode);
    match result {
        Err(e) if acceptable(&name, e.code) => Ok(()),
        other => other,
    }
}

fn run_command(
    g: &mut Inner,
    log: bool,
    db: &str,
    name: &str,
    o: &Document,
    op: &Document,
    mode: Mode,
) -> Result<(), CmdError> {
    let coll_exists = |g: &Inner| {
        o.get_str(name)
            .is_ok_and(|c| g.catalog.colls.contains_key(&format!("{db}.{c}")))
    };
    match name {
        "create" | "drop" | "dropDatabase" => {
            crate::crud::ddl_inner(g, log, db, name, o, op.get("ui")).map(drop)
        }
        "renameCollection" => crate::ddl::rename_inner(g, log, o).map(drop),
        "collMod" => crate::indexes::coll_mod_inner(g, log, db, o).map(drop),
        "dropIndexes" => crate::indexes::drop_indexes_inner(g, log, db, o).map(drop),
        "createIndexes" | "commitIndexBuild" if !coll_exists(g) => Err(CmdError::new(
            26,
            "NamespaceNotFound",
            format!(
                "ns does not exist: {db}.{}",
                o.get_str(name).unwrap_or_default()
            ),
        )),
        "createIndexes" => {
            let mut spec = o.clone();
            spec.remove("createIndexes");
            let cmd =
                doc! {"createIndexes": o.get_str(name).unwrap_or_default(), "indexes": [spec]};
            crate::ddl::create_indexes_inner(g, log, db, &cmd).map(drop)
        }
        "startIndexBuild" | "commitIndexBuild" | "abortIndexBuild" if mode == Mode::ApplyOps => {
            Err(CmdError::new(
                115,
                "CommandNotSupported",
                format!("The {name} operation is not supported in applyOps mode"),
            ))
        }
        // As an initial-syncing applier: the build's commit creates its indexes.
        "startIndexBuild" | "abortIndexBuild" => Ok(()),
        "commitIndexBuild" => {
            let cmd = doc! {"createIndexes": o.get_str(name).unwrap_or_default(), "indexes": o.get_array("indexes").cloned().unwrap_or_default()};
            crate::ddl::create_indexes_inner(g, log, db, &cmd).map(drop)
        }
        "applyOps" => {
            let ops = check_command(o)?;
            for nested in ops.iter().filter(|op| op.get_str("op").ok() != Some("n")) {
                if let Applied::Soft = apply_entry(g, log, nested, mode)? {
                    return Err(CmdError::new(
                        8,
                        "UnknownError",
                        "applyOps had one or more errors applying ops",
                    ));
                }
            }
            Ok(())
        }
        other => Err(CmdError::new(
            2,
            "BadValue",
            format!("Unknown oplog entry command type: {other} Object field: {o}"),
        )),
    }
}
