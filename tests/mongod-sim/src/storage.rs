//! The dbPath on disk, shaped like WiredTiger's: checksummed checkpoint files, a journal of
//! timestamped operations, `storage.bson` and `mongod.lock`.

use crate::catalog::{Catalog, Collection, Stored};
use crate::incr::Tracking;
use bson::{Bson, Document, Timestamp, doc};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Every `.wt` file opens with this magic, then a CRC-32 and the payload length.
const MAGIC: &[u8; 8] = b"WTSIM\x01\0\0";
const HEADER: usize = 8 + 4 + 8;

#[derive(Debug, Error)]
pub enum StorageError {
    #[error("Data directory {0} not found")]
    NoDbPath(PathBuf),
    #[error("checksum error reading file {file}: {why}")]
    Corrupt { file: PathBuf, why: String },
    #[error("missing file {0}, listed in the catalog")]
    Missing(PathBuf),
    #[error("i/o error on {0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// The master key does not open the data (or encryption is on for plain data, or off
    /// for encrypted data).
    #[error("{0}")]
    Encryption(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
    move |e| StorageError::Io(path.to_path_buf(), e)
}

/// CRC-32 (IEEE), the checksum WiredTiger blocks carry. `crc32fast` uses the CPU's carry-less
/// multiply, so verifying a file costs about what reading it from the page cache does; a table
/// loop here made start-up, not the restore under test, dominate the orchestration benchmark.
pub fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

/// The keystream nonce of a data file: its name, the same wherever the file is copied.
fn file_nonce(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Writes a checksummed list of documents through a temporary file and a rename, so a crash
/// leaves either the old or the new file.
pub fn write_file(path: &Path, docs: &[&Document]) -> Result<(), StorageError> {
    write_bytes(path, &encode_file(path, docs)?)
}

/// The bytes [`write_file`] writes for `docs` at `path`.
fn encode_file(path: &Path, docs: &[&Document]) -> Result<Vec<u8>, StorageError> {
    let mut payload = Vec::new();
    for d in docs {
        d.to_writer(&mut payload)
            .map_err(|e| StorageError::Io(path.to_path_buf(), std::io::Error::other(e)))?;
    }
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&crc32(&payload).to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    // Encrypted at rest with --enableEncryption; the checksum is of the plain payload.
    crate::crypt::apply(file_nonce(path).as_bytes(), &mut payload);
    out.extend_from_slice(&payload);
    Ok(out)
}

fn write_bytes(path: &Path, bytes: &[u8]) -> Result<(), StorageError> {
    let tmp = path.with_extension("wt.tmp");
    fs::write(&tmp, bytes).map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))
}

/// Reads and verifies a file written by [`write_file`].
pub fn read_file(path: &Path) -> Result<Vec<Document>, StorageError> {
    let bytes = fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => StorageError::Missing(path.to_path_buf()),
        _ => StorageError::Io(path.to_path_buf(), e),
    })?;
    let corrupt = |why: &str| StorageError::Corrupt {
        file: path.to_path_buf(),
        why: why.to_string(),
    };
    if bytes.len() < HEADER || &bytes[..8] != MAGIC {
        return Err(corrupt("bad file header"));
    }
    let crc = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    let len = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes")) as usize;
    let mut plain = bytes[HEADER..].to_vec();
    crate::crypt::apply(file_nonce(path).as_bytes(), &mut plain);
    let payload = &plain[..];
    if payload.len() != len {
        return Err(corrupt("file size does not match its header"));
    }
    if crc32(payload) != crc {
        return Err(corrupt(
            "calculated block checksum doesn't match expected checksum",
        ));
    }
    let mut docs = Vec::new();
    let mut rest = payload;
    while !rest.is_empty() {
        let n = i32::from_le_bytes(
            rest[..4.min(rest.len())]
                .try_into()
                .map_err(|_| corrupt("truncated"))?,
        ) as usize;
        let d = Document::from_reader(rest.get(..n).ok_or_else(|| corrupt("truncated document"))?)
            .map_err(|_| corrupt("invalid document"))?;
        docs.push(d);
        rest = &rest[n..];
    }
    Ok(docs)
}

/// Checks what opening a file checks: it exists, carries the magic, and is as long as its
/// header says. The payload's checksum is left to [`read_file`].
pub fn check_header(path: &Path) -> Result<(), StorageError> {
    use std::io::Read;
    let mut f = File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => StorageError::Missing(path.to_path_buf()),
        _ => StorageError::Io(path.to_path_buf(), e),
    })?;
    let mut header = [0u8; HEADER];
    let corrupt = |why: &str| StorageError::Corrupt {
        file: path.to_path_buf(),
        why: why.to_string(),
    };
    f.read_exact(&mut header)
        .map_err(|_| corrupt("bad file header"))?;
    if &header[..8] != MAGIC {
        return Err(corrupt("bad file header"));
    }
    let len = u64::from_le_bytes(header[12..20].try_into().expect("8 bytes"));
    let size = f.metadata().map_err(io(path))?.len();
    if size != HEADER as u64 + len {
        return Err(corrupt("file size does not match its header"));
    }
    Ok(())
}

/// Reads one collection's documents and checks its `_id` index file against them.
pub fn read_collection(
    dbpath: &Path,
    ident: &str,
    idx_ident: &str,
) -> Result<Vec<Document>, StorageError> {
    let docs = read_file(&dbpath.join(format!("{ident}.wt")))?;
    let ids = read_file(&dbpath.join(format!("{idx_ident}.wt")))?;
    if ids.len() != docs.len() {
        return Err(StorageError::Corrupt {
            file: dbpath.join(format!("{idx_ident}.wt")),
            why: "index does not match its collection".into(),
        });
    }
    Ok(docs)
}

pub fn journal_name(n: u64) -> String {
    format!("WiredTigerLog.{n:010}")
}

/// What start-up recovered from disk.
pub struct Recovered {
    pub catalog: Catalog,
    pub checkpoint_ts: Timestamp,
    /// Journal records since the checkpoint, oldest first.
    pub journal: Vec<Document>,
    pub fresh: bool,
}

/// Owns the files of one dbPath.
pub struct Store {
    pub dbpath: PathBuf,
    journal_no: u64,
    journal: File,
    /// First journal file that the last checkpoint does not cover.
    journal_start: u64,
    slow_reads_ms: u64,
    /// Records of one command, written to the journal file at once when it ends (see
    /// [`Store::begin_group`]).
    group: Option<Vec<u8>>,
    /// Incremental-backup history: the IDs and the blocks modified since each.
    pub incr: Tracking,
}

impl Store {
    /// Journal records from here on go to the file together, at [`Store::end_group`]: as
    /// WiredTiger's log buffer takes each operation of a batch in memory and hands the
    /// buffer to the OS once, not one write per operation. A `kill -9` inside the group
    /// loses the group's records, as it would lose an unflushed log buffer; none is lost
    /// once the command has answered.
    pub fn begin_group(&mut self) {
        self.group.get_or_insert_with(Vec::new);
    }

    pub fn end_group(&mut self) -> Result<(), StorageError> {
        let Some(bytes) = self.group.take() else {
            return Ok(());
        };
        let p = self
            .dbpath
            .join("journal")
            .join(journal_name(self.journal_no));
        self.journal.write_all(&bytes).map_err(io(&p))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dbpath.join(name)
    }

    fn open_journal(dbpath: &Path, n: u64) -> Result<File, StorageError> {
        let p = dbpath.join("journal").join(journal_name(n));
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .map_err(io(&p))
    }

    fn slow(&self) {
        if self.slow_reads_ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(self.slow_reads_ms));
        }
    }

    /// Opens a dbPath, creating the files of a new one, verifying every checksum of an old one.
    pub fn open(
        dbpath: &Path,
        slow_reads_ms: u64,
        storage_options: Document,
    ) -> Result<(Store, Recovered), StorageError> {
        if !dbpath.is_dir() {
            return Err(StorageError::NoDbPath(dbpath.to_path_buf()));
        }
        let jdir = dbpath.join("journal");
        fs::create_dir_all(&jdir).map_err(io(&jdir))?;
        let fresh = !dbpath.join("WiredTiger").exists();
        crate::crypt::check_keydb(dbpath, fresh).map_err(StorageError::Encryption)?;
        if fresh {
            let suffix = (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
                % 9_000_000_000_000_000_000) as u64;
            let mut store = Store {
                dbpath: dbpath.to_path_buf(),
                journal: Self::open_journal(dbpath, 1)?,
                journal_no: 1,
                journal_start: 1,
                slow_reads_ms,
                group: None,
                incr: Tracking::default(),
            };
            write_file(
                &store.path("WiredTiger"),
                &[&doc! {"version": "WiredTiger 11.2.0: (August 2, 2023)"}],
            )?;
            let sb = doc! {"storage": {"engine": "wiredTiger", "options": storage_options}};
            let sbp = store.path("storage.bson");
            fs::write(&sbp, sb.to_vec().unwrap_or_default()).map_err(io(&sbp))?;
            let mut catalog = Catalog::new(suffix);
            store.checkpoint(
                &mut catalog,
                Timestamp {
                    time: 0,
                    increment: 0,
                },
            )?;
            return Ok((
                store,
                Recovered {
                    catalog,
                    checkpoint_ts: Timestamp {
                        time: 0,
                        increment: 0,
                    },
                    journal: vec![],
                    fresh: true,
                },
            ));
        }
        let read = |name: &str| -> Result<Vec<Document>, StorageError> {
            if slow_reads_ms > 0 {
                std::thread::sleep(std::time::Duration::from_millis(slow_reads_ms));
            }
            read_file(&dbpath.join(name))
        };
        read("WiredTiger")?;
        let sbp = dbpath.join("storage.bson");
        let sb = fs::read(&sbp).map_err(io(&sbp))?;
        Document::from_reader(&sb[..]).map_err(|_| StorageError::Corrupt {
            file: sbp.clone(),
            why: "invalid BSON".into(),
        })?;
        let turtle = read("WiredTiger.turtle")?
            .into_iter()
            .next()
            .unwrap_or_default();
        let checkpoint_ts = turtle
            .get_timestamp("checkpointTimestamp")
            .unwrap_or(Timestamp {
                time: 0,
                increment: 0,
            });
        let journal_start = turtle.get_i64("journalStart").unwrap_or(1) as u64;
        let suffix = turtle.get_i64("identSuffix").unwrap_or(0) as u64;
        read("WiredTiger.wt")?;
        let sizes: std::collections::HashMap<String, (usize, u64)> = read("sizeStorer.wt")?
            .into_iter()
            .map(|d| {
                let ident = d.get_str("ident").unwrap_or_default().to_string();
                let records = d.get_i64("numRecords").unwrap_or(0).max(0) as usize;
                (
                    ident,
                    (records, d.get_i64("dataSize").unwrap_or(0).max(0) as u64),
                )
            })
            .collect();
        let entries = read("_mdb_catalog.wt")?;
        let mut catalog = Catalog::new(suffix);
        // The catalog is written before the turtle: after a crash between the two it can
        // hold idents the turtle's counter has not passed, and reusing one would overwrite
        // a live collection's file.
        let highest = entries
            .iter()
            .flat_map(|e| [e.get_str("ident"), e.get_str("idxIdent")])
            .filter_map(|i| i.ok()?.split('-').nth(1)?.parse::<u64>().ok())
            .max();
        catalog.next_ident = (turtle.get_i64("nextIdent").unwrap_or(0) as u64)
            .max(highest.map(|h| h + 1).unwrap_or(0));
        for e in &entries {
            let ns = e.get_str("ns").unwrap_or_default().to_string();
            let ident = e.get_str("ident").unwrap_or_default().to_string();
            let idx = e.get_str("idxIdent").unwrap_or_default().to_string();
            // Kept across restarts, as mongod keeps it: oplog entries name collections by
            // it (`ui`), and a replay after a restart must find them.
            let uuid = match e.get("uuid") {
                Some(bson::Bson::Binary(u)) => bson::Binary {
                    subtype: bson::spec::BinarySubtype::Uuid,
                    bytes: u.bytes.clone(),
                },
                _ => Collection::new(String::new(), String::new()).uuid,
            };
            let (records, data_size) = sizes.get(&ident).copied().unwrap_or_default();
            let stored = Stored {
                records,
                data_size,
                last: e.get_document("last").ok().cloned(),
            };
            let mut coll = Collection::on_disk(ident, idx, uuid, dbpath, stored);
            coll.options = e.get_document("options").cloned().unwrap_or_default();
            coll.indexes = e
                .get_array("indexes")
                .into_iter()
                .flatten()
                .filter_map(|i| i.as_document().cloned())
                .collect();
            catalog.colls.insert(ns, coll);
        }
        // Every .wt file is opened, as WiredTiger opens each table's file and reads its
        // descriptor: a missing or truncated file fails start-up. Pages (here: the payload's
        // checksum) are verified when first read.
        for e in &entries {
            for key in ["ident", "idxIdent"] {
                check_header(&dbpath.join(format!("{}.wt", e.get_str(key).unwrap_or_default())))?;
            }
        }
        let verified: std::collections::HashSet<String> = entries
            .iter()
            .flat_map(|e| {
                ["ident", "idxIdent"].map(|k| format!("{}.wt", e.get_str(k).unwrap_or_default()))
            })
            .chain(
                ["WiredTiger.wt", "sizeStorer.wt", "_mdb_catalog.wt"]
                    .into_iter()
                    .map(String::from),
            )
            .collect();
        for entry in fs::read_dir(dbpath).map_err(io(dbpath))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".wt") && !verified.contains(&name) && !dbpath.join(&name).is_dir() {
                read(&name)?;
            }
            if name.ends_with(".wt.tmp") {
                let _ = fs::remove_file(entry.path());
            }
        }
        catalog.catalog_dirty = false;
        // Journal: every file from the checkpoint's start on; a torn record ends the newest file
        // (what kill -9 leaves), anywhere else it is corruption.
        let mut numbers: Vec<u64> = fs::read_dir(&jdir)
            .map_err(io(&jdir))?
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_string_lossy()
                    .strip_prefix("WiredTigerLog.")
                    .and_then(|n| n.parse().ok())
            })
            .filter(|n| *n >= journal_start)
            .collect();
        numbers.sort();
        let mut journal = Vec::new();
        for (i, n) in numbers.iter().enumerate() {
            let p = jdir.join(journal_name(*n));
            let bytes = fs::read(&p).map_err(io(&p))?;
            let last = i + 1 == numbers.len();
            let mut pos = 0;
            while pos < bytes.len() {
                match read_record(&bytes[pos..]) {
                    Some((d, used)) => {
                        journal.push(d);
                        pos += used;
                    }
                    None if last => break,
                    None => {
                        return Err(StorageError::Corrupt {
                            file: p.clone(),
                            why: "torn journal record".into(),
                        });
                    }
                }
            }
        }
        let next = numbers
            .last()
            .copied()
            .unwrap_or(journal_start)
            .max(journal_start)
            + 1;
        let store = Store {
            dbpath: dbpath.to_path_buf(),
            journal: Self::open_journal(dbpath, next)?,
            journal_no: next,
            journal_start,
            slow_reads_ms,
            group: None,
            incr: Tracking::load(dbpath)?,
        };
        store.slow();
        Ok((
            store,
            Recovered {
                catalog,
                checkpoint_ts,
                journal,
                fresh: false,
            },
        ))
    }

    /// Appends one record; the OS has it once `write` returns, which is what `kill -9` needs.
    pub fn journal_append(&mut self, rec: &Document) -> Result<(), StorageError> {
        let body = rec
            .to_vec()
            .map_err(|e| StorageError::Io(self.dbpath.clone(), std::io::Error::other(e)))?;
        let mut body = body;
        let crc = crc32(&body);
        let mut out = Vec::with_capacity(body.len() + 8);
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc.to_le_bytes());
        crate::crypt::apply(&journal_nonce(crc, body.len()), &mut body);
        out.extend_from_slice(&body);
        if let Some(group) = self.group.as_mut() {
            group.extend_from_slice(&out);
            return Ok(());
        }
        let p = self
            .dbpath
            .join("journal")
            .join(journal_name(self.journal_no));
        self.journal.write_all(&out).map_err(io(&p))
    }

    /// Switches to a new journal file so the previous ones never change again.
    pub fn rotate_journal(&mut self) -> Result<(), StorageError> {
        // A group's records belong to the file they were written after.
        let grouping = self.group.is_some();
        self.end_group()?;
        if grouping {
            self.begin_group();
        }
        self.journal_no += 1;
        self.journal = Self::open_journal(&self.dbpath, self.journal_no)?;
        Ok(())
    }

    pub fn journal_no(&self) -> u64 {
        self.journal_no
    }

    /// Journal files with numbers in `[from, to)`, with their sizes.
    pub fn journal_files(&self, from: u64, to: u64) -> Vec<(PathBuf, u64)> {
        (from..to)
            .map(|n| self.dbpath.join("journal").join(journal_name(n)))
            .filter_map(|p| fs::metadata(&p).ok().map(|m| (p, m.len())))
            .collect()
    }

    /// Every file a backup must copy, with its size now: all but `mongod.lock`.
    pub fn backup_files(&self) -> Vec<(PathBuf, u64)> {
        let mut out: Vec<(PathBuf, u64)> = fs::read_dir(&self.dbpath)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_file())
            .filter(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                // The incremental history is the node's own: a node restored from the
                // listed files starts without one.
                n != "mongod.lock"
                    && n != crate::incr::STATE_FILE
                    && !n.ends_with(".tmp")
                    && !n.starts_with('.')
            })
            .filter_map(|e| e.metadata().ok().map(|m| (e.path(), m.len())))
            .collect();
        // The key database of an encrypted node: without it a restore cannot open a file.
        let keydb = self.dbpath.join(crate::crypt::KEYDB_FILE);
        if let Ok(m) = fs::metadata(&keydb) {
            out.push((keydb, m.len()));
        }
        out.sort();
        out.extend(self.journal_files(self.journal_start, self.journal_no));
        out
    }

    /// Writes the checkpoint: dirty collection and index files, the catalog, sizes, metadata and
    /// last the turtle, which commits it. Journal files it covers are then removed. With
    /// incremental backups on, the history is written first with the names of the files about
    /// to be rewritten (a crash amid them is then caught at start-up), and again at the end.
    pub fn checkpoint(&mut self, catalog: &mut Catalog, ts: Timestamp) -> Result<(), StorageError> {
        self.rotate_journal()?;
        if self.incr.is_on() {
            let mut pending: Vec<String> = catalog
                .colls
                .values()
                .filter(|c| c.dirty)
                .flat_map(|c| [format!("{}.wt", c.ident), format!("{}.wt", c.idx_ident)])
                .collect();
            pending.extend(["_mdb_catalog.wt".to_string(), "sizeStorer.wt".to_string()]);
            self.incr.persist(&self.dbpath, &pending)?;
        }
        for c in catalog.colls.values_mut().filter(|c| c.dirty) {
            let docs: Vec<&Document> = c.docs().collect();
            self.write_tracked(&format!("{}.wt", c.ident), &docs)?;
            let ids: Vec<Document> = c
                .docs()
                .map(|d| doc! {"_id": d.get("_id").cloned().unwrap_or(Bson::Null)})
                .collect();
            self.write_tracked(
                &format!("{}.wt", c.idx_ident),
                &ids.iter().collect::<Vec<_>>(),
            )?;
            c.dirty = false;
        }
        let entries = catalog_entries(catalog);
        self.write_tracked("_mdb_catalog.wt", &entries.iter().collect::<Vec<_>>())?;
        let sizes: Vec<Document> = catalog
            .colls
            .values()
            .map(|c| doc! {"ident": &c.ident, "numRecords": c.len() as i64, "dataSize": c.data_size() as i64})
            .collect();
        self.write_tracked("sizeStorer.wt", &sizes.iter().collect::<Vec<_>>())?;
        let mut files: Vec<String> = catalog
            .colls
            .values()
            .flat_map(|c| [c.ident.clone(), c.idx_ident.clone()])
            .collect();
        files.extend(["_mdb_catalog".to_string(), "sizeStorer".to_string()]);
        write_file(
            &self.path("WiredTiger.wt"),
            &[&doc! {"files": files, "checkpointTimestamp": ts}],
        )?;
        write_file(
            &self.path("WiredTiger.turtle"),
            &[&doc! {
                "checkpointTimestamp": ts,
                "journalStart": self.journal_no as i64,
                "identSuffix": catalog.suffix as i64,
                "nextIdent": catalog.next_ident as i64,
            }],
        )?;
        let live: std::collections::HashSet<&String> = catalog
            .colls
            .values()
            .flat_map(|c| [&c.ident, &c.idx_ident])
            .collect();
        let dropped: Vec<String> = catalog.dropped.drain(..).collect();
        for ident in dropped.iter().filter(|i| !live.contains(i)) {
            let name = format!("{ident}.wt");
            let _ = fs::remove_file(self.path(&name));
            self.incr.removed(&name);
        }
        catalog.catalog_dirty = false;
        self.incr.persist(&self.dbpath, &[])?;
        for (p, _) in self.journal_files(self.journal_start, self.journal_no) {
            let _ = fs::remove_file(p);
        }
        self.journal_start = self.journal_no;
        Ok(())
    }

    /// Writes a dbPath file the incremental history tracks (named relative to the dbPath).
    fn write_tracked(&mut self, name: &str, docs: &[&Document]) -> Result<(), StorageError> {
        let path = self.path(name);
        let bytes = encode_file(&path, docs)?;
        write_bytes(&path, &bytes)?;
        self.incr.wrote(name, &bytes);
        Ok(())
    }

    pub fn write_lock_file(&self, pid: Option<u32>) -> Result<(), StorageError> {
        let p = self.path("mongod.lock");
        fs::write(&p, pid.map(|p| format!("{p}\n")).unwrap_or_default()).map_err(io(&p))
    }
}

/// `_mdb_catalog.wt`'s entries: one per collection, with its idents, UUID, options, indexes.
fn catalog_entries(catalog: &Catalog) -> Vec<Document> {
    catalog
        .colls
        .iter()
        .map(|(ns, c)| {
            let mut entry = doc! {"ns": ns, "ident": &c.ident, "idxIdent": &c.idx_ident, "uuid": c.uuid.clone()};
            if !c.options.is_empty() {
                entry.insert("options", c.options.clone());
            }
            if !c.indexes.is_empty() {
                entry.insert("indexes", c.indexes.clone());
            }
            // The oplog's top, so start-up finds it without reading the oplog.
            if ns == crate::node::OPLOG_NS
                && let Some(last) = c.last()
            {
                entry.insert("last", last.clone());
            }
            entry
        })
        .collect()
}

/// The keystream nonce of a journal record: its checksum and length (in its header).
fn journal_nonce(crc: u32, len: usize) -> Vec<u8> {
    let mut n = b"journal".to_vec();
    n.extend_from_slice(&crc.to_le_bytes());
    n.extend_from_slice(&(len as u64).to_le_bytes());
    n
}

fn read_record(b: &[u8]) -> Option<(Document, usize)> {
    if b.len() < 8 {
        return None;
    }
    let len = u32::from_le_bytes(b[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(b[4..8].try_into().ok()?);
    let mut body = b.get(8..8 + len)?.to_vec();
    crate::crypt::apply(&journal_nonce(crc, len), &mut body);
    if crc32(&body) != crc {
        return None;
    }
    Some((Document::from_reader(&body[..]).ok()?, 8 + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_reference() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn flipped_byte_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.wt");
        write_file(&p, &[&doc! {"a": 1}]).unwrap();
        assert_eq!(read_file(&p).unwrap(), vec![doc! {"a": 1}]);
        let mut bytes = fs::read(&p).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0xFF;
        fs::write(&p, bytes).unwrap();
        assert!(matches!(read_file(&p), Err(StorageError::Corrupt { .. })));
    }

    #[test]
    fn checkpoint_and_journal_recover() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, rec) = Store::open(dir.path(), 0, Document::new()).unwrap();
        assert!(rec.fresh);
        let mut cat = rec.catalog;
        cat.coll_mut("d.c").insert(doc! {"_id": 1}).unwrap();
        store
            .checkpoint(
                &mut cat,
                Timestamp {
                    time: 5,
                    increment: 1,
                },
            )
            .unwrap();
        store
            .journal_append(&doc! {"op": "i", "ns": "d.c", "o": {"_id": 2}})
            .unwrap();
        drop(store);
        let (_store, rec) = Store::open(dir.path(), 0, Document::new()).unwrap();
        assert_eq!(
            rec.checkpoint_ts,
            Timestamp {
                time: 5,
                increment: 1
            }
        );
        assert_eq!(rec.catalog.colls["d.c"].len(), 1);
        assert_eq!(rec.journal.len(), 1);
    }

    /// A crash after the catalog was written but before the turtle: the older turtle's
    /// ident counter must not hand out an ident the catalog already uses, and a stale
    /// `sizeStorer` figure is corrected once the documents are read.
    #[test]
    fn a_crash_before_the_turtle_reuses_no_ident_and_sizes_heal() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, rec) = Store::open(dir.path(), 0, Document::new()).unwrap();
        let mut cat = rec.catalog;
        let ts = Timestamp {
            time: 5,
            increment: 1,
        };
        store.checkpoint(&mut cat, ts).unwrap();
        let turtle_before = fs::read(dir.path().join("WiredTiger.turtle")).unwrap();
        cat.coll_mut("d.a")
            .insert(doc! {"_id": 1, "v": "x"})
            .unwrap();
        cat.coll_mut("d.b")
            .insert(doc! {"_id": 1, "v": "y"})
            .unwrap();
        store.checkpoint(&mut cat, ts).unwrap();
        let real_size = cat.colls["d.a"].data_size();
        assert!(real_size > 0);
        drop(store);
        // Put back the turtle of the first checkpoint, and zero the sizes.
        fs::write(dir.path().join("WiredTiger.turtle"), turtle_before).unwrap();
        let sizes: Vec<Document> = read_file(&dir.path().join("sizeStorer.wt"))
            .unwrap()
            .into_iter()
            .map(|mut d| {
                d.insert("dataSize", 0i64);
                d
            })
            .collect();
        write_file(
            &dir.path().join("sizeStorer.wt"),
            &sizes.iter().collect::<Vec<_>>(),
        )
        .unwrap();

        let (_store, rec) = Store::open(dir.path(), 0, Document::new()).unwrap();
        let mut cat = rec.catalog;
        let used: Vec<String> = cat.colls.values().map(|c| c.ident.clone()).collect();
        let fresh = cat.coll_mut("d.new").ident.clone();
        assert!(!used.contains(&fresh), "{fresh} reuses one of {used:?}");
        assert_eq!(
            cat.colls["d.a"].data_size(),
            0,
            "unread: sizeStorer's figure"
        );
        assert_eq!(cat.colls["d.a"].docs().count(), 1);
        assert_eq!(
            cat.colls["d.a"].data_size(),
            real_size,
            "read: worked out again"
        );
    }
}
