//! The in-memory collections of one node: documents by record id, an `_id` index, and dirtiness
//! for the next checkpoint.

use bson::{Bson, Document, oid::ObjectId};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Index key for `_id` values: their BSON encoding.
pub fn id_key(id: &Bson) -> Vec<u8> {
    let mut d = Document::new();
    d.insert("", id.clone());
    d.to_vec().unwrap_or_default()
}

/// The documents of a collection and its `_id` index.
#[derive(Debug, Clone, Default)]
struct Body {
    next_rid: u64,
    /// BSON bytes of every document, worked out from the documents themselves.
    data_size: u64,
    docs: BTreeMap<u64, Document>,
    ids: HashMap<Vec<u8>, u64>,
}

#[derive(Debug, Clone)]
pub struct Collection {
    pub ident: String,
    pub idx_ident: String,
    pub uuid: bson::Binary,
    /// Read from the dbPath on first use, as WiredTiger reads a table's pages only when they
    /// are needed: start-up costs what the metadata costs, not what the data does.
    body: OnceLock<Body>,
    /// The dbPath an unread body lives in; `None` for a collection made in memory.
    on_disk: Option<PathBuf>,
    /// What the checkpoint's metadata says about an unread body: its record count
    /// (`sizeStorer.wt`) and, for the oplog, its newest entry (mongod finds the top of the
    /// oplog by reading one page from the end, not the whole table).
    stored_len: usize,
    stored_last: Option<Document>,
    /// `sizeStorer.wt`'s figure, used only while the body is unread: like mongod's, it
    /// can be stale after a crash, and reading the documents corrects it.
    stored_data_size: u64,
    /// Changed since the last checkpoint, so its files must be rewritten.
    pub dirty: bool,
    /// The options it was created with (`capped`, `validator`, `collation` …), kept in the
    /// catalog and reported by `listCollections`; not enforced.
    pub options: Document,
    /// Its secondary index specs (`{v, key, name, …}`), kept in the catalog and reported by
    /// `listIndexes` after `_id_`; queries never use them.
    pub indexes: Vec<Document>,
}

impl Collection {
    pub fn new(ident: String, idx_ident: String) -> Collection {
        let uuid = bson::Binary {
            subtype: bson::spec::BinarySubtype::Uuid,
            bytes: bson::Uuid::new().bytes().to_vec(),
        };
        Collection {
            ident,
            idx_ident,
            uuid,
            body: OnceLock::from(Body {
                next_rid: 1,
                ..Body::default()
            }),
            on_disk: None,
            stored_len: 0,
            stored_last: None,
            stored_data_size: 0,
            dirty: true,
            options: Document::new(),
            indexes: Vec::new(),
        }
    }

    /// A collection of the last checkpoint whose files are read when it is first used;
    /// `data_size` comes from `sizeStorer.wt`, as mongod's does.
    pub fn on_disk(
        ident: String,
        idx_ident: String,
        uuid: bson::Binary,
        dbpath: &Path,
        stored: Stored,
    ) -> Collection {
        Collection {
            ident,
            idx_ident,
            uuid,
            body: OnceLock::new(),
            on_disk: Some(dbpath.to_path_buf()),
            stored_len: stored.records,
            stored_last: stored.last,
            stored_data_size: stored.data_size,
            dirty: false,
            options: Document::new(),
            indexes: Vec::new(),
        }
    }

    /// Reads and verifies the collection and index files. A checksum failure here is what
    /// WiredTiger reports when it reads a bad page: fatal, the process ends.
    fn load(&self) -> Body {
        let dbpath = self.on_disk.as_deref().unwrap_or(Path::new("."));
        match crate::storage::read_collection(dbpath, &self.ident, &self.idx_ident) {
            Ok(docs) => {
                let mut body = Body {
                    next_rid: 1,
                    ..Body::default()
                };
                for d in docs {
                    body.data_size += Self::doc_size(&d);
                    let key = id_key(d.get("_id").unwrap_or(&Bson::Null));
                    body.ids.insert(key, body.next_rid);
                    body.docs.insert(body.next_rid, d);
                    body.next_rid += 1;
                }
                body
            }
            Err(e) => {
                crate::log::log(
                    crate::log::Sev::E,
                    "STORAGE",
                    22435,
                    "conn",
                    "WiredTiger error message",
                    bson::doc! {"error": -31802, "message": e.to_string()},
                );
                crate::log::log(
                    crate::log::Sev::F,
                    "ASSERT",
                    50853,
                    "conn",
                    "Fatal assertion",
                    bson::doc! {"error": e.to_string()},
                );
                std::process::abort()
            }
        }
    }

    fn body(&self) -> &Body {
        self.body.get_or_init(|| self.load())
    }

    fn body_mut(&mut self) -> &mut Body {
        self.body();
        self.body.get_mut().expect("initialised just above")
    }

    fn doc_size(doc: &Document) -> u64 {
        doc.to_vec().map(|v| v.len() as u64).unwrap_or(0)
    }

    pub fn len(&self) -> usize {
        match self.body.get() {
            Some(body) => body.docs.len(),
            None => self.stored_len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// BSON bytes of the documents (`dataSize`).
    pub fn data_size(&self) -> u64 {
        match self.body.get() {
            Some(body) => body.data_size,
            None => self.stored_data_size,
        }
    }

    /// The newest document in natural order, read without the rest when the checkpoint
    /// recorded it.
    pub fn last(&self) -> Option<&Document> {
        match (self.body.get(), &self.stored_last) {
            (None, Some(last)) => Some(last),
            (None, None) if self.stored_len == 0 => None,
            _ => self.body().docs.values().next_back(),
        }
    }

    pub fn docs(&self) -> impl DoubleEndedIterator<Item = &Document> {
        self.body().docs.values()
    }

    pub fn get(&self, id: &Bson) -> Option<&Document> {
        let body = self.body();
        body.ids.get(&id_key(id)).and_then(|rid| body.docs.get(rid))
    }

    /// Inserts; fails with the duplicate `_id` when one exists.
    pub fn insert(&mut self, doc: Document) -> Result<(), Bson> {
        let id = doc.get("_id").cloned().unwrap_or(Bson::Null);
        let key = id_key(&id);
        if self.body().ids.contains_key(&key) {
            return Err(id);
        }
        let size = Self::doc_size(&doc);
        let body = self.body_mut();
        body.data_size += size;
        let rid = body.next_rid;
        body.next_rid += 1;
        body.docs.insert(rid, doc);
        body.ids.insert(key, rid);
        self.dirty = true;
        Ok(())
    }

    /// Replaces the document with the same `_id`, or inserts it: how journal and oplog
    /// entries (full images) are applied, which makes replaying them idempotent.
    pub fn upsert(&mut self, doc: Document) {
        let id = doc.get("_id").cloned().unwrap_or(Bson::Null);
        if let Some(rid) = self.body().ids.get(&id_key(&id)).copied() {
            let new_size = Self::doc_size(&doc);
            let body = self.body_mut();
            let old = body.docs.insert(rid, doc);
            body.data_size =
                body.data_size + new_size - old.map(|o| Self::doc_size(&o)).unwrap_or(0);
            self.dirty = true;
        } else {
            let _ = self.insert(doc);
        }
    }

    pub fn remove(&mut self, id: &Bson) -> Option<Document> {
        let body = self.body_mut();
        let rid = body.ids.remove(&id_key(id))?;
        let doc = body.docs.remove(&rid)?;
        body.data_size -= Self::doc_size(&doc).min(body.data_size);
        self.dirty = true;
        Some(doc)
    }

    /// Removes every document matching `keep == false`, in natural order, returning them.
    pub fn retain(&mut self, mut keep: impl FnMut(&Document) -> bool) -> Vec<Document> {
        let gone: Vec<Bson> = self
            .docs()
            .filter(|d| !keep(d))
            .map(|d| d.get("_id").cloned().unwrap_or(Bson::Null))
            .collect();
        gone.iter().filter_map(|id| self.remove(id)).collect()
    }
}

/// What a checkpoint's metadata records about a collection, enough to use it unread.
#[derive(Debug, Default)]
pub struct Stored {
    pub records: usize,
    pub data_size: u64,
    pub last: Option<Document>,
}

/// All collections of a node, keyed by namespace (`db.coll`).
#[derive(Debug, Default)]
pub struct Catalog {
    pub colls: BTreeMap<String, Collection>,
    pub next_ident: u64,
    /// WiredTiger-like ident suffix, fixed per dbPath.
    pub suffix: u64,
    /// Files of dropped collections, deleted at the next checkpoint (never while a backup cursor is open).
    pub dropped: Vec<String>,
    pub catalog_dirty: bool,
}

impl Catalog {
    pub fn new(suffix: u64) -> Catalog {
        Catalog {
            suffix,
            catalog_dirty: true,
            ..Default::default()
        }
    }

    /// The collection for `ns`, created (implicitly, as mongod does on first write) when missing.
    pub fn coll_mut(&mut self, ns: &str) -> &mut Collection {
        if !self.colls.contains_key(ns) {
            let n = self.next_ident;
            self.next_ident += 2;
            let c = Collection::new(
                format!("collection-{n}-{}", self.suffix),
                format!("index-{}-{}", n + 1, self.suffix),
            );
            self.colls.insert(ns.to_string(), c);
            self.catalog_dirty = true;
        }
        self.colls.get_mut(ns).expect("just inserted")
    }

    pub fn drop_coll(&mut self, ns: &str) -> bool {
        match self.colls.remove(ns) {
            Some(c) => {
                self.dropped.push(c.ident);
                self.dropped.push(c.idx_ident);
                self.catalog_dirty = true;
                true
            }
            None => false,
        }
    }

    /// Moves a collection to another namespace, keeping its files (as mongod's rename within
    /// a database does); with `drop_target`, an existing target is dropped first.
    pub fn rename(&mut self, from: &str, to: &str, drop_target: bool) -> bool {
        if !self.colls.contains_key(from) || (self.colls.contains_key(to) && !drop_target) {
            return false;
        }
        self.drop_coll(to);
        let c = self.colls.remove(from).expect("checked above");
        self.colls.insert(to.to_string(), c);
        self.catalog_dirty = true;
        true
    }

    pub fn databases(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for (ns, c) in &self.colls {
            let db = ns.split_once('.').map(|(d, _)| d).unwrap_or(ns);
            *out.entry(db.to_string()).or_insert(0) += c.data_size();
        }
        out
    }

    /// Applies one journal/oplog-form operation (`op` i/u/d/c/n). Returns false when the
    /// op is of a kind we do not know.
    pub fn apply(&mut self, entry: &Document) -> bool {
        let ns = entry.get_str("ns").unwrap_or_default();
        let o = entry.get_document("o").cloned().unwrap_or_default();
        match entry.get_str("op").unwrap_or_default() {
            "u" if o.get_i32("$v").ok() == Some(2) => {
                // mongod 5.0+'s update form: a diff against the document `o2` names. A
                // document gone since (a replay over newer data, initial sync) is skipped,
                // as mongod's idempotent application does.
                let id = entry
                    .get_document("o2")
                    .ok()
                    .and_then(|o2| o2.get("_id"))
                    .cloned()
                    .unwrap_or(Bson::Null);
                let diff = o.get_document("diff").cloned().unwrap_or_default();
                if let Some(c) = self.colls.get_mut(ns)
                    && let Some(old) = c.get(&id)
                {
                    let new = crate::diff::apply(old, &diff);
                    c.upsert(new);
                }
            }
            "i" | "u" => self.coll_with_uuid(ns, entry).upsert(o),
            "d" => {
                if let Some(c) = self.colls.get_mut(ns) {
                    c.remove(o.get("_id").unwrap_or(&Bson::Null));
                }
            }
            "c" => self.apply_command(ns, &o, entry),
            "n" => {}
            _ => return false,
        }
        true
    }

    /// The collection for `ns`, created when missing with the UUID the entry's `ui` names:
    /// a secondary's collection has its primary's UUID, as in mongod, so an entry's `ui`
    /// means the same collection on every member and on a node restored from any of them.
    fn coll_with_uuid(&mut self, ns: &str, entry: &Document) -> &mut Collection {
        let fresh = !self.colls.contains_key(ns);
        let c = self.coll_mut(ns);
        if fresh && let Some(Bson::Binary(ui)) = entry.get("ui") {
            c.uuid = bson::Binary {
                subtype: bson::spec::BinarySubtype::Uuid,
                bytes: ui.bytes.clone(),
            };
        }
        c
    }

    /// A command entry (`op: "c"`): DDL, index builds, and `applyOps` (transactions).
    fn apply_command(&mut self, ns: &str, o: &Document, entry: &Document) {
        let db = ns.split_once('.').map(|(d, _)| d).unwrap_or(ns).to_string();
        let full = |coll: &str| format!("{db}.{coll}");
        if let Ok(coll) = o.get_str("drop") {
            self.drop_coll(&full(coll));
        } else if let Ok(coll) = o.get_str("create") {
            let mut options = o.clone();
            options.remove("create");
            options.remove("idIndex");
            self.coll_with_uuid(&full(coll), entry).options = options;
            self.catalog_dirty = true;
        } else if let Ok(coll) = o.get_str("createIndexes") {
            let mut spec = o.clone();
            spec.remove("createIndexes");
            self.add_indexes(&full(coll), entry, vec![spec]);
        } else if let Ok(coll) = o.get_str("commitIndexBuild") {
            // A two-phase build's index is ready (listed) once its commit is applied.
            let specs = o
                .get_array("indexes")
                .into_iter()
                .flatten()
                .filter_map(|i| i.as_document().cloned())
                .collect();
            self.add_indexes(&full(coll), entry, specs);
        } else if let Ok(coll) = o.get_str("dropIndexes") {
            if let (Some(c), Ok(name)) = (self.colls.get_mut(&full(coll)), o.get_str("index")) {
                c.indexes.retain(|i| i.get_str("name").ok() != Some(name));
                self.catalog_dirty = true;
            }
        } else if let Ok(coll) = o.get_str("collMod") {
            if let Some(c) = self.colls.get_mut(&full(coll)) {
                crate::indexes::apply_coll_mod(c, o);
                self.catalog_dirty = true;
            }
        } else if let (Ok(from), Ok(to)) = (o.get_str("renameCollection"), o.get_str("to")) {
            self.rename(from, to, o.get_bool("dropTarget").unwrap_or(false));
        } else if o.contains_key("dropDatabase") {
            let prefix = format!("{db}.");
            let names: Vec<String> = self
                .colls
                .keys()
                .filter(|k| k.starts_with(&prefix))
                .cloned()
                .collect();
            for n in names {
                self.drop_coll(&n);
            }
        } else if o.contains_key("applyOps") {
            for op in crate::txn::entry_ops(self, o, entry) {
                self.apply(&op);
            }
        }
        // startIndexBuild and abortIndexBuild change nothing a reader sees.
    }

    /// Adds index specs not already there (by name), creating the collection if needed.
    fn add_indexes(&mut self, ns: &str, entry: &Document, specs: Vec<Document>) {
        let c = self.coll_with_uuid(ns, entry);
        for spec in specs {
            let name = spec.get_str("name").unwrap_or_default().to_string();
            if !c
                .indexes
                .iter()
                .any(|i| i.get_str("name").ok() == Some(&name))
            {
                c.indexes.push(spec);
            }
        }
        self.catalog_dirty = true;
    }
}

/// A fresh `_id` for documents inserted without one, as drivers and mongod add.
pub fn new_id() -> Bson {
    Bson::ObjectId(ObjectId::new())
}
