//! Collection options, secondary index specs and renames: kept in the catalog, written to
//! the oplog in mongod's forms (`create` with its options, one `createIndexes` entry per
//! index on an empty collection, a two-phase `startIndexBuild`/`commitIndexBuild` on a
//! replica set's non-empty one, `renameCollection`) and reported by `listCollections` and
//! `listIndexes`. The options are not enforced and queries use no secondary index.

use crate::crud::{cursor_reply, writable};
use crate::node::{CmdError, Inner, Node};
use bson::{Document, doc};
use std::collections::VecDeque;
use std::sync::Arc;

/// The `create` options mongod keeps with a collection; anything else in the command
/// (session, write concern, `$db`) is not an option. Time series and views are refused:
/// the sim has no buckets collection and no views.
const OPTIONS: &[&str] = &[
    "capped",
    "size",
    "max",
    "validator",
    "validationLevel",
    "validationAction",
    "collation",
    "expireAfterSeconds",
    "clusteredIndex",
    "changeStreamPreAndPostImages",
    "storageEngine",
    "indexOptionDefaults",
];

/// The options of a `create` command, as its oplog entry and `listCollections` carry them.
pub fn create_options(cmd: &Document) -> Result<Document, CmdError> {
    for unsupported in ["timeseries", "viewOn"] {
        if cmd.contains_key(unsupported) {
            return Err(CmdError::new(
                2,
                "BadValue",
                format!("mongod-sim does not model {unsupported} collections"),
            ));
        }
    }
    if cmd.get_bool("capped").unwrap_or(false) && !cmd.contains_key("size") {
        return Err(CmdError::new(
            72,
            "InvalidOptions",
            "the 'size' field is required when 'capped' is true",
        ));
    }
    Ok(cmd
        .iter()
        .filter(|(k, _)| OPTIONS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect())
}

/// Fields every command may carry that are not its arguments.
pub const GENERIC_FIELDS: &[&str] = &[
    "lsid",
    "txnNumber",
    "autocommit",
    "startTransaction",
    "writeConcern",
    "readConcern",
    "comment",
    "maxTimeMS",
    "apiVersion",
    "apiStrict",
    "apiDeprecationErrors",
];

pub async fn create_indexes(
    node: &Arc<Node>,
    db: &str,
    cmd: &Document,
) -> Result<Document, CmdError> {
    writable(node, db).await?;
    let mut g = node.lock();
    let log = g.should_log();
    create_indexes_inner(&mut g, log, db, cmd)
}

/// The specs of `cmd` that are new to `ns`: an index of the same name and key is already
/// there (skipped), one of the same name and another key is a conflict (code 86).
fn new_specs(g: &Inner, ns: &str, cmd: &Document) -> Result<Vec<Document>, CmdError> {
    let specs = cmd
        .get_array("indexes")
        .map_err(|_| CmdError::new(2, "BadValue", "createIndexes needs an 'indexes' array"))?;
    let mut out: Vec<Document> = Vec::new();
    for spec in specs.iter().filter_map(|i| i.as_document()) {
        let (Ok(key), Ok(name)) = (spec.get_document("key"), spec.get_str("name")) else {
            return Err(CmdError::new(
                9,
                "FailedToParse",
                "an index spec needs 'key' and 'name'",
            ));
        };
        if name == "_id_" {
            continue;
        }
        let existing = g.catalog.colls.get(ns).map(|c| c.indexes.as_slice());
        let same = existing
            .into_iter()
            .flatten()
            .chain(out.iter())
            .find(|i| i.get_str("name").ok() == Some(name));
        match same {
            Some(i) if i.get_document("key").ok() == Some(key) => continue,
            Some(_) => {
                return Err(CmdError::new(
                    86,
                    "IndexKeySpecsConflict",
                    format!("An existing index has the same name as the requested index: {name}"),
                ));
            }
            None => {}
        }
        let mut spec = spec.clone();
        if !spec.contains_key("v") {
            let mut with_v = doc! {"v": 2};
            with_v.extend(spec);
            spec = with_v;
        }
        out.push(spec);
    }
    Ok(out)
}

/// `createIndexes` on a locked node. On an empty collection (or one this command creates)
/// each index is one `{createIndexes: <coll>, v, key, name, …}` entry, as mongod 4.4+ builds
/// them at once; on a replica set's non-empty collection the build is two-phase:
/// `startIndexBuild` then `commitIndexBuild` (or `abortIndexBuild` when a unique index finds
/// duplicates), each `{<kind>: <coll>, indexBuildUUID, indexes: [specs]}`.
pub fn create_indexes_inner(
    g: &mut Inner,
    log: bool,
    db: &str,
    cmd: &Document,
) -> Result<Document, CmdError> {
    let coll = cmd.get_str("createIndexes").unwrap_or_default().to_string();
    let ns = format!("{db}.{coll}");
    let specs = new_specs(g, &ns, cmd)?;
    let existed = g.catalog.colls.contains_key(&ns);
    let empty = g.catalog.colls.get(&ns).is_none_or(|c| c.is_empty());
    let before = g.catalog.colls.get(&ns).map_or(0, |c| c.indexes.len()) + 1;
    let cmd_ns = format!("{db}.$cmd");
    let dup = specs
        .iter()
        .find_map(|s| crate::indexes::existing_dup(&g.catalog, &ns, s));
    let mut reply = doc! {
        "numIndexesBefore": before as i32,
        "numIndexesAfter": (before + specs.len()) as i32,
        "createdCollectionAutomatically": !existed,
    };
    if empty || !log || specs.is_empty() {
        if let Some(d) = dup {
            return Err(d.to_error());
        }
        let mut ops = Vec::new();
        if !existed {
            ops.push(doc! {"op": "c", "ns": &cmd_ns, "o": {"create": &coll}});
        }
        for spec in specs {
            let mut o = doc! {"createIndexes": &coll};
            o.extend(spec);
            ops.push(doc! {"op": "c", "ns": &cmd_ns, "o": o});
        }
        if !ops.is_empty() {
            g.write(ops, log)?;
        }
    } else {
        let build = bson::Binary {
            subtype: bson::spec::BinarySubtype::Uuid,
            bytes: bson::Uuid::new().bytes().to_vec(),
        };
        let entry = |kind: &str| doc! {"op": "c", "ns": &cmd_ns, "o": {kind: &coll, "indexBuildUUID": build.clone(), "indexes": specs.clone()}};
        g.write(vec![entry("startIndexBuild")], log)?;
        if let Some(d) = dup {
            let mut abort = entry("abortIndexBuild");
            if let Ok(o) = abort.get_document_mut("o") {
                o.insert("cause", d.to_error().to_doc());
            }
            g.write(vec![abort], log)?;
            let uuid = bson::Uuid::from_bytes(build.bytes.clone().try_into().unwrap_or([0; 16]));
            return Err(CmdError::new(
                11000,
                "DuplicateKey",
                format!(
                    "Index build failed: {uuid}: Collection {ns} :: caused by :: {}",
                    d.errmsg()
                ),
            ));
        }
        g.write(vec![entry("commitIndexBuild")], log)?;
        reply.insert("commitQuorum", "votingMembers");
    }
    reply.insert("ok", 1.0);
    Ok(reply)
}

/// `listIndexes`: `_id_` and the secondary specs, or `NamespaceNotFound` (26).
pub fn list_indexes(node: &Node, db: &str, cmd: &Document) -> Result<Document, CmdError> {
    let ns = format!("{db}.{}", cmd.get_str("listIndexes").unwrap_or_default());
    let mut g = node.lock();
    let Some(c) = g.catalog.colls.get(&ns) else {
        return Err(CmdError::new(
            26,
            "NamespaceNotFound",
            format!("ns does not exist: {ns}"),
        ));
    };
    let mut out: VecDeque<Document> = VecDeque::new();
    if ns != crate::node::OPLOG_NS {
        out.push_back(doc! {"v": 2, "key": {"_id": 1}, "name": "_id_"});
    }
    out.extend(c.indexes.iter().cloned());
    Ok(cursor_reply(&mut g, &ns, out, usize::MAX, true))
}

/// `collStats`: the document count and data size of a collection, and `capped`/`maxSize`
/// (`NamespaceNotFound` (26) for a missing one), as mongod 7.0 still answers the deprecated
/// command.
pub fn coll_stats(node: &Node, db: &str, cmd: &Document) -> Result<Document, CmdError> {
    let ns = format!("{db}.{}", cmd.get_str("collStats").unwrap_or_default());
    let g = node.lock();
    let Some(c) = g.catalog.colls.get(&ns) else {
        return Err(CmdError::new(
            26,
            "NamespaceNotFound",
            format!("Collection [{ns}] not found."),
        ));
    };
    let count = c.len() as i64;
    let size = c.data_size() as i64;
    let mut out = doc! {
        "ns": &ns,
        "count": count,
        "size": size,
        "avgObjSize": if count > 0 { size / count } else { 0 },
        "storageSize": size,
    };
    crate::oplog::capped_stats(&g, &ns, &mut out);
    // The oplog has no `_id` index in mongod.
    let id_index = usize::from(ns != crate::node::OPLOG_NS);
    out.insert("nindexes", (c.indexes.len() + id_index) as i32);
    out.insert("ok", 1.0);
    Ok(out)
}

/// `renameCollection` (on `admin`): source missing is `NamespaceNotFound` (26), an
/// existing target without `dropTarget` is `NamespaceExists` (48); across databases is
/// refused (the sim moves a collection's files only within one database's catalog).
pub async fn rename_collection(node: &Arc<Node>, cmd: &Document) -> Result<Document, CmdError> {
    let from = cmd.get_str("renameCollection").unwrap_or_default();
    let (Some((db, _)), Some(_)) = (
        from.split_once('.'),
        cmd.get_str("to").ok().and_then(|t| t.split_once('.')),
    ) else {
        return Err(CmdError::new(
            73,
            "InvalidNamespace",
            "Invalid namespace specified",
        ));
    };
    writable(node, db).await?;
    let mut g = node.lock();
    let log = g.should_log();
    rename_inner(&mut g, log, cmd)
}

/// `renameCollection` on a locked node, within one database.
pub fn rename_inner(g: &mut Inner, log: bool, cmd: &Document) -> Result<Document, CmdError> {
    let from = cmd.get_str("renameCollection").unwrap_or_default();
    let to = cmd.get_str("to").unwrap_or_default();
    let drop_target = cmd.get_bool("dropTarget").unwrap_or(false);
    if crate::node::db_of(from) != crate::node::db_of(to) {
        return Err(CmdError::new(
            20,
            "IllegalOperation",
            "mongod-sim renames only within one database",
        ));
    }
    if !g.catalog.colls.contains_key(from) {
        return Err(CmdError::new(
            26,
            "NamespaceNotFound",
            format!("Source collection {from} does not exist"),
        ));
    }
    if g.catalog.colls.contains_key(to) && !drop_target {
        return Err(CmdError::new(
            48,
            "NamespaceExists",
            "target namespace exists",
        ));
    }
    let o = doc! {"renameCollection": from, "to": to, "stayTemp": false, "dropTarget": drop_target};
    g.write(
        vec![doc! {"op": "c", "ns": format!("{}.$cmd", crate::node::db_of(from)), "o": o}],
        log,
    )?;
    Ok(doc! {"ok": 1.0})
}
