//! Secondary indexes beyond their specs: unique indexes enforced (code 11000 with mongod's
//! message), `dropIndexes` and `collMod`, each written to the oplog in mongod 7.0's form.

use crate::catalog::{Catalog, Collection, id_key};
use crate::crud::writable;
use crate::node::{CmdError, Inner, Node};
use crate::query::{compare, get_path, matches};
use bson::{Bson, Document, doc};
use std::cmp::Ordering;
use std::sync::Arc;

/// A unique index a document would break.
#[derive(Debug, Clone)]
pub struct DupKey {
    pub ns: String,
    pub index: String,
    pub key_pattern: Document,
    pub key_value: Document,
}

impl DupKey {
    /// mongod's `E11000 duplicate key error collection: db.c index: a_1 dup key: { a: 1 }`.
    pub fn errmsg(&self) -> String {
        let fields: Vec<String> = self
            .key_value
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        format!(
            "E11000 duplicate key error collection: {} index: {} dup key: {{ {} }}",
            self.ns,
            self.index,
            fields.join(", ")
        )
    }

    pub fn to_error(&self) -> CmdError {
        CmdError::new(11000, "DuplicateKey", self.errmsg())
    }

    /// The `writeErrors` element of an insert or update.
    pub fn write_error(&self, index: usize) -> Document {
        doc! {"index": index as i32, "code": 11000, "errmsg": self.errmsg(), "keyPattern": self.key_pattern.clone(), "keyValue": self.key_value.clone()}
    }
}

/// The key of `doc` in the index `spec`, `None` when the document is not in the index (a
/// partial index's filter does not match it; a sparse index and every key field missing).
/// A missing field is `null`, as in mongod.
fn key_of(spec: &Document, doc: &Document) -> Option<Document> {
    let key = spec.get_document("key").ok()?;
    if let Ok(filter) = spec.get_document("partialFilterExpression")
        && !matches(doc, filter).unwrap_or(false)
    {
        return None;
    }
    let mut out = Document::new();
    let mut any = false;
    for field in key.keys() {
        let v = get_path(doc, field).cloned();
        any |= v.is_some();
        out.insert(field.clone(), v.unwrap_or(Bson::Null));
    }
    (any || !spec.get_bool("sparse").unwrap_or(false)).then_some(out)
}

fn same_key(a: &Document, b: &Document) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b.iter())
            .all(|((_, x), (_, y))| compare(x, y) == Ordering::Equal)
}

fn unique_specs(c: &Collection) -> impl Iterator<Item = &Document> {
    c.indexes
        .iter()
        .filter(|s| s.get_bool("unique").unwrap_or(false) && s.get_str("name").ok() != Some("_id_"))
}

/// The unique index `doc` would break in `ns`, against the collection's other documents
/// (another `_id`) and `pending` ones about to be written with it.
pub fn check_unique(
    catalog: &Catalog,
    ns: &str,
    doc: &Document,
    pending: &[Document],
) -> Option<DupKey> {
    let c = catalog.colls.get(ns)?;
    let me = id_key(doc.get("_id").unwrap_or(&Bson::Null));
    for spec in unique_specs(c) {
        let Some(key) = key_of(spec, doc) else {
            continue;
        };
        let clash = c.docs().chain(pending.iter()).any(|other| {
            id_key(other.get("_id").unwrap_or(&Bson::Null)) != me
                && key_of(spec, other).is_some_and(|k| same_key(&k, &key))
        });
        if clash {
            return Some(DupKey {
                ns: ns.to_string(),
                index: spec.get_str("name").unwrap_or_default().to_string(),
                key_pattern: spec.get_document("key").cloned().unwrap_or_default(),
                key_value: key,
            });
        }
    }
    None
}

/// Index key (hashed) → the `_id` (as `id_key`) of the document holding it.
type KeyHolders = std::collections::HashMap<Vec<u8>, Vec<u8>>;

/// A key as a hashable value: numbers by value (`1` and `1.0` are one key, as `compare`
/// says), everything else by its BSON type and bytes.
fn key_hash(key: &Document) -> Vec<u8> {
    let mut out = Vec::new();
    for (_, v) in key {
        match v {
            Bson::Int32(n) => out.extend(format!("n{}|", f64::from(*n)).bytes()),
            Bson::Int64(n) => out.extend(format!("n{}|", *n as f64).bytes()),
            Bson::Double(n) => out.extend(format!("n{n}|").bytes()),
            other => {
                out.extend(id_key(other));
                out.push(b'|');
            }
        }
    }
    out
}

/// The keys of every unique index of one collection, built once for a batch of inserts:
/// checking each document against the whole collection would cost a scan per document,
/// and a 1,000-document insert would hold the node for seconds (mongod uses the index).
pub struct UniqueKeys {
    /// Per unique index: its spec, and key → the `_id` holding it.
    indexes: Vec<(Document, KeyHolders)>,
    ns: String,
}

impl UniqueKeys {
    pub fn new(catalog: &Catalog, ns: &str) -> UniqueKeys {
        let mut indexes = Vec::new();
        if let Some(c) = catalog.colls.get(ns) {
            for spec in unique_specs(c) {
                let mut keys = std::collections::HashMap::new();
                for d in c.docs() {
                    if let Some(k) = key_of(spec, d) {
                        keys.insert(key_hash(&k), id_key(d.get("_id").unwrap_or(&Bson::Null)));
                    }
                }
                indexes.push((spec.clone(), keys));
            }
        }
        UniqueKeys {
            indexes,
            ns: ns.to_string(),
        }
    }

    /// The unique index `doc` would break, if any.
    pub fn check(&self, doc: &Document) -> Option<DupKey> {
        let me = id_key(doc.get("_id").unwrap_or(&Bson::Null));
        for (spec, keys) in &self.indexes {
            let Some(key) = key_of(spec, doc) else {
                continue;
            };
            if keys
                .get(&key_hash(&key))
                .is_some_and(|holder| *holder != me)
            {
                return Some(DupKey {
                    ns: self.ns.clone(),
                    index: spec.get_str("name").unwrap_or_default().to_string(),
                    key_pattern: spec.get_document("key").cloned().unwrap_or_default(),
                    key_value: key,
                });
            }
        }
        None
    }

    /// Records `doc`'s keys (it is written with the batch).
    pub fn add(&mut self, doc: &Document) {
        let me = id_key(doc.get("_id").unwrap_or(&Bson::Null));
        for (spec, keys) in &mut self.indexes {
            if let Some(k) = key_of(spec, doc) {
                keys.insert(key_hash(&k), me.clone());
            }
        }
    }
}

/// The first two documents of `ns` a new unique index `spec` would find equal.
pub fn existing_dup(catalog: &Catalog, ns: &str, spec: &Document) -> Option<DupKey> {
    if !spec.get_bool("unique").unwrap_or(false) {
        return None;
    }
    let c = catalog.colls.get(ns)?;
    let mut seen: Vec<Document> = Vec::new();
    for d in c.docs() {
        let Some(key) = key_of(spec, d) else {
            continue;
        };
        if seen.iter().any(|k| same_key(k, &key)) {
            return Some(DupKey {
                ns: ns.to_string(),
                index: spec.get_str("name").unwrap_or_default().to_string(),
                key_pattern: spec.get_document("key").cloned().unwrap_or_default(),
                key_value: key,
            });
        }
        seen.push(key);
    }
    None
}

fn ns_not_found(ns: &str) -> CmdError {
    CmdError::new(26, "NamespaceNotFound", format!("ns not found {ns}"))
}

fn key_string(key: &Document) -> String {
    let fields: Vec<String> = key.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!("{{ {} }}", fields.join(", "))
}

/// The names `dropIndexes`'s `index` field picks: a name, a key pattern, `"*"` (every index
/// but `_id_`) or a list of names.
fn pick(c: &Collection, ns: &str, which: &Bson) -> Result<Vec<String>, CmdError> {
    let by_name = |name: &str| -> Result<String, CmdError> {
        if name == "_id_" {
            return Err(CmdError::new(72, "InvalidOptions", "cannot drop _id index"));
        }
        c.indexes
            .iter()
            .find(|i| i.get_str("name").ok() == Some(name))
            .map(|_| name.to_string())
            .ok_or_else(|| {
                CmdError::new(
                    27,
                    "IndexNotFound",
                    format!("index not found with name [{name}]"),
                )
            })
    };
    match which {
        Bson::String(s) if s == "*" => Ok(c
            .indexes
            .iter()
            .filter_map(|i| i.get_str("name").ok().map(str::to_string))
            .collect()),
        Bson::String(s) => Ok(vec![by_name(s)?]),
        Bson::Array(names) => names
            .iter()
            .map(|n| by_name(n.as_str().unwrap_or_default()))
            .collect(),
        Bson::Document(key) if key == &doc! {"_id": 1} => {
            Err(CmdError::new(72, "InvalidOptions", "cannot drop _id index"))
        }
        Bson::Document(key) => c
            .indexes
            .iter()
            .find(|i| i.get_document("key").ok() == Some(key))
            .and_then(|i| i.get_str("name").ok().map(|n| vec![n.to_string()]))
            .ok_or_else(|| {
                CmdError::new(
                    27,
                    "IndexNotFound",
                    format!("can't find index with key: {}", key_string(key)),
                )
            }),
        _ => Err(CmdError::new(
            14,
            "TypeMismatch",
            format!("dropIndexes on {ns}: 'index' must be a string, an object or an array"),
        )),
    }
}

/// `dropIndexes` on a locked node: one `{dropIndexes: <coll>, index: <name>}` entry per index
/// (its spec in `o2`), as mongod logs them.
pub fn drop_indexes_inner(
    g: &mut Inner,
    log: bool,
    db: &str,
    cmd: &Document,
) -> Result<Document, CmdError> {
    let coll = cmd.get_str("dropIndexes").unwrap_or_default().to_string();
    let ns = format!("{db}.{coll}");
    let c = g.catalog.colls.get(&ns).ok_or_else(|| ns_not_found(&ns))?;
    let which = cmd.get("index").cloned().unwrap_or(Bson::Null);
    let names = pick(c, &ns, &which)?;
    let was = c.indexes.len() as i32 + 1;
    let ops: Vec<Document> = names
        .iter()
        .map(|n| {
            let spec = c
                .indexes
                .iter()
                .find(|i| i.get_str("name").ok() == Some(n))
                .cloned()
                .unwrap_or_default();
            doc! {"op": "c", "ns": format!("{db}.$cmd"), "o": {"dropIndexes": &coll, "index": n}, "o2": spec}
        })
        .collect();
    if !ops.is_empty() {
        g.write(ops, log)?;
    }
    let mut reply = doc! {"nIndexesWas": was};
    if which.as_str() == Some("*") {
        reply.insert("msg", "non-_id indexes dropped for collection");
    }
    reply.insert("ok", 1.0);
    Ok(reply)
}

pub async fn drop_indexes(
    node: &Arc<Node>,
    db: &str,
    cmd: &Document,
) -> Result<Document, CmdError> {
    writable(node, db).await?;
    let mut g = node.lock();
    let log = g.should_log();
    drop_indexes_inner(&mut g, log, db, cmd)
}

/// What `collMod` accepts (besides the session and write-concern fields every command takes).
const COLL_MOD_FIELDS: &[&str] = &["validator", "validationLevel", "validationAction", "index"];

/// Applies a `collMod` (command or oplog form) to a collection's options and index specs.
pub fn apply_coll_mod(c: &mut Collection, o: &Document) {
    for key in ["validator", "validationLevel", "validationAction"] {
        if let Some(v) = o.get(key) {
            c.options.insert(key, v.clone());
        }
    }
    if let Some(size) = o.get("cappedSize") {
        c.options.insert("size", size.clone());
    }
    let Ok(index) = o.get_document("index") else {
        return;
    };
    let Some(spec) = c.indexes.iter_mut().find(|i| {
        index
            .get_str("name")
            .is_ok_and(|n| i.get_str("name").ok() == Some(n))
            || index
                .get_document("keyPattern")
                .is_ok_and(|k| i.get_document("key").ok() == Some(k))
    }) else {
        return;
    };
    match index.get_bool("hidden") {
        Ok(true) => {
            spec.insert("hidden", true);
        }
        Ok(false) => {
            spec.remove("hidden");
        }
        Err(_) => {}
    }
    if let Some(secs) = index.get("expireAfterSeconds") {
        spec.insert("expireAfterSeconds", secs.clone());
    }
}

/// `collMod` on a locked node: `validator`, `validationLevel`, `validationAction` and
/// `index: {name | keyPattern, hidden, expireAfterSeconds}`; the oplog entry is the command
/// (the index named by name) with the old options in `o2`.
pub fn coll_mod_inner(
    g: &mut Inner,
    log: bool,
    db: &str,
    cmd: &Document,
) -> Result<Document, CmdError> {
    let coll = cmd.get_str("collMod").unwrap_or_default().to_string();
    let ns = format!("{db}.{coll}");
    let c = g.catalog.colls.get(&ns).ok_or_else(|| {
        CmdError::new(26, "NamespaceNotFound", format!("ns does not exist: {ns}"))
    })?;
    let mut o = doc! {"collMod": &coll};
    for (k, v) in cmd.iter().skip(1) {
        if COLL_MOD_FIELDS.contains(&k.as_str()) {
            o.insert(k.clone(), v.clone());
        } else if !k.starts_with('$') && !crate::ddl::GENERIC_FIELDS.contains(&k.as_str()) {
            return Err(CmdError::new(
                40415,
                "Location40415",
                format!("BSON field 'collMod.{k}' is an unknown field."),
            ));
        }
    }
    let mut old = doc! {"uuid": c.uuid.clone()};
    old.extend(c.options.clone());
    let mut o2 = doc! {"collectionOptions_old": old};
    let mut reply = Document::new();
    if let Ok(index) = cmd.get_document("index") {
        let spec = c
            .indexes
            .iter()
            .find(|i| {
                index
                    .get_str("name")
                    .is_ok_and(|n| i.get_str("name").ok() == Some(n))
                    || index
                        .get_document("keyPattern")
                        .is_ok_and(|k| i.get_document("key").ok() == Some(k))
            })
            .ok_or_else(|| {
                CmdError::new(
                    27,
                    "IndexNotFound",
                    format!("cannot find index {index} for ns {ns}"),
                )
            })?;
        let mut logged = doc! {"name": spec.get_str("name").unwrap_or_default()};
        let mut old_index = Document::new();
        if let Ok(h) = index.get_bool("hidden") {
            let was = spec.get_bool("hidden").unwrap_or(false);
            reply.insert("hidden_old", was);
            reply.insert("hidden_new", h);
            old_index.insert("hidden", was);
            logged.insert("hidden", h);
        }
        if let Some(secs) = index.get("expireAfterSeconds") {
            if let Some(was) = spec.get("expireAfterSeconds") {
                reply.insert("expireAfterSeconds_old", was.clone());
                old_index.insert("expireAfterSeconds", was.clone());
            }
            reply.insert("expireAfterSeconds_new", secs.clone());
            logged.insert("expireAfterSeconds", secs.clone());
        }
        o.insert("index", logged);
        o2.insert("indexOptions_old", old_index);
    }
    g.write(
        vec![doc! {"op": "c", "ns": format!("{db}.$cmd"), "o": o, "o2": o2}],
        log,
    )?;
    reply.insert("ok", 1.0);
    Ok(reply)
}

pub async fn coll_mod(node: &Arc<Node>, db: &str, cmd: &Document) -> Result<Document, CmdError> {
    writable(node, db).await?;
    let mut g = node.lock();
    let log = g.should_log();
    coll_mod_inner(&mut g, log, db, cmd)
}
