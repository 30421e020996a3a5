//! Incremental-backup history, as WiredTiger keeps it for PSMDB's `$backupCursor`: at most
//! two backup IDs, each with the blocks of every file modified since it was taken, kept in a
//! dbPath file written at checkpoints.
//!
//! WiredTiger records the blocks its checkpoints write. The sim instead keeps a hash of every
//! block of each tracked file and, when it rewrites the file, compares the new bytes' hashes
//! with the old: that names exactly the blocks whose bytes changed (WiredTiger may name more,
//! never fewer, so a backup tool relying on the ranges copies at least what changed).

use crate::storage::{StorageError, read_file, write_file};
use bson::{Bson, Document, doc};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// The history's file in the dbPath. Not listed by `$backupCursor`, so a node restored from
/// a backup starts without history.
pub const STATE_FILE: &str = "WiredTigerIncr.sim";
/// WiredTiger's `WT_BLKINCR_MAX`: the IDs it remembers.
const SLOTS: usize = 2;
const MB: u64 = 1 << 20;

/// WiredTiger's own files (metadata, turtle, log files, the key database's) are always
/// copied whole: its incremental cursor forces a full copy for every name with this prefix.
pub fn always_whole(file: &str) -> bool {
    Path::new(file)
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("WiredTiger"))
}

/// What an incremental backup from a source ID lists for one file.
#[derive(Debug, PartialEq, Eq)]
pub enum Listing {
    /// The whole file (`offset: 0, length: fileSize`).
    Whole,
    /// No block changed: `{filename, fileSize}` alone.
    Unchanged,
    /// These blocks (by index, ascending) changed.
    Blocks(Vec<u64>),
}

/// Why WiredTiger refuses an incremental backup cursor.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `srcBackupName` is not one of the IDs (WiredTiger: ENOENT).
    NoSuchSource,
    /// `thisBackupName` is already an ID (WiredTiger: EINVAL).
    NameInUse,
}

#[derive(Debug, Clone)]
struct BackupId {
    name: String,
    /// Every file known to this ID, with the blocks modified since it was taken.
    modified: BTreeMap<String, BTreeSet<u64>>,
}

#[derive(Debug, Default)]
pub struct Tracking {
    /// The block size in bytes, fixed when tracking starts; 0 while it is off.
    block: u64,
    slots: [Option<BackupId>; SLOTS],
    /// Per-block hashes of every tracked file's bytes on disk, by name relative to the dbPath.
    hashes: BTreeMap<String, Vec<u64>>,
    /// Changed since the state file was written.
    dirty: bool,
    /// The state file exists.
    on_disk: bool,
}

fn block_hashes(bytes: &[u8], block: u64) -> Vec<u64> {
    bytes
        .chunks(block.max(1) as usize)
        .map(|c| {
            let h = blake3::hash(c);
            u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
        })
        .collect()
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
    move |e| StorageError::Io(path.to_path_buf(), e)
}

impl Tracking {
    pub fn is_on(&self) -> bool {
        self.slots.iter().any(Option::is_some)
    }

    /// Block size in bytes (0 when off).
    pub fn block_size(&self) -> u64 {
        self.block
    }

    /// Holds changes the next checkpoint must write.
    pub fn dirty(&self) -> bool {
        self.dirty
    }

    /// The IDs, in slot order.
    pub fn names(&self) -> Vec<String> {
        self.slots
            .iter()
            .flatten()
            .map(|s| s.name.clone())
            .collect()
    }

    fn slot_of(&self, name: &str) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.name == name))
    }

    /// WiredTiger's checks, in its order: the source first, then the new name.
    pub fn check(&self, this: &str, src: Option<&str>) -> Result<(), Refusal> {
        if let Some(src) = src
            && self.slot_of(src).is_none()
        {
            return Err(Refusal::NoSuchSource);
        }
        if self.slot_of(this).is_some() || src == Some(this) {
            return Err(Refusal::NameInUse);
        }
        Ok(())
    }

    /// Registers `this` (already [checked](Self::check)) with every file in `files` (names
    /// relative to `dbpath`) known and unmodified. The block size is taken only when tracking
    /// starts. The ID takes the first slot that is not the source's, as WiredTiger's
    /// `__backup_add_id` does: a base taken while both slots are full replaces the first.
    pub fn register(
        &mut self,
        dbpath: &Path,
        this: &str,
        src: Option<&str>,
        block_mb: u64,
        files: &[String],
    ) -> Result<(), StorageError> {
        if !self.is_on() {
            self.block = block_mb.max(1) * MB;
            self.hashes.clear();
        }
        let src_slot = src.and_then(|s| self.slot_of(s));
        let slot = (0..SLOTS)
            .find(|i| Some(*i) != src_slot)
            .expect("two slots, at most one is the source");
        let tracked: Vec<&String> = files.iter().filter(|f| !always_whole(f)).collect();
        for f in &tracked {
            if !self.hashes.contains_key(*f) {
                let p = dbpath.join(f);
                let bytes = fs::read(&p).map_err(io(&p))?;
                self.hashes
                    .insert((*f).clone(), block_hashes(&bytes, self.block));
            }
        }
        self.slots[slot] = Some(BackupId {
            name: this.to_string(),
            modified: tracked
                .into_iter()
                .map(|f| (f.clone(), BTreeSet::new()))
                .collect(),
        });
        self.dirty = true;
        Ok(())
    }

    /// What an increment from `src` lists for `file`. A file the source does not know
    /// (WiredTiger: no block information for the ID) is listed whole.
    pub fn listing(&self, src: &str, file: &str) -> Listing {
        if always_whole(file) {
            return Listing::Whole;
        }
        let id = self.slot_of(src).and_then(|i| self.slots[i].as_ref());
        match id.and_then(|id| id.modified.get(file)) {
            None => Listing::Whole,
            Some(blocks) if blocks.is_empty() => Listing::Unchanged,
            Some(blocks) => Listing::Blocks(blocks.iter().copied().collect()),
        }
    }

    /// The sim wrote `bytes` as `file`: every block whose hash changed, and every block past
    /// the old end, is modified for every ID. A file new to an ID (created after it) gets all
    /// its blocks, as WiredTiger sets up a new file's block list at its first checkpoint.
    /// Free when tracking is off.
    pub fn wrote(&mut self, file: &str, bytes: &[u8]) {
        if !self.is_on() || always_whole(file) {
            return;
        }
        let new = block_hashes(bytes, self.block);
        let old = self.hashes.get(file);
        let changed: Vec<u64> = new
            .iter()
            .enumerate()
            .filter(|(i, h)| old.and_then(|o| o.get(*i)) != Some(*h))
            .map(|(i, _)| i as u64)
            .collect();
        for id in self.slots.iter_mut().flatten() {
            id.modified
                .entry(file.to_string())
                .or_default()
                .extend(&changed);
        }
        self.hashes.insert(file.to_string(), new);
        self.dirty = true;
    }

    /// A removed file (a dropped collection's) leaves the history.
    pub fn removed(&mut self, file: &str) {
        if self.hashes.remove(file).is_some() {
            self.dirty = true;
        }
        for id in self.slots.iter_mut().flatten() {
            id.modified.remove(file);
        }
    }

    /// `disableIncrementalBackup`: every ID and all tracking go, durably at once (WiredTiger
    /// forces a checkpoint for it).
    pub fn disable(&mut self, dbpath: &Path) -> Result<(), StorageError> {
        let on_disk = self.on_disk;
        *self = Tracking {
            on_disk,
            ..Tracking::default()
        };
        self.persist(dbpath, &[])
    }

    /// Writes the state file (removes it when tracking is off). `pending` names the files a
    /// checkpoint is about to rewrite: after a crash amid them, start-up compares those files
    /// with the hashes again (see [`Tracking::load`]).
    pub fn persist(&mut self, dbpath: &Path, pending: &[String]) -> Result<(), StorageError> {
        let path = dbpath.join(STATE_FILE);
        if !self.is_on() {
            if self.on_disk {
                fs::remove_file(&path).map_err(io(&path))?;
                self.on_disk = false;
            }
            self.dirty = false;
            return Ok(());
        }
        write_file(&path, &[&self.to_doc(pending)])?;
        self.on_disk = true;
        self.dirty = !pending.is_empty();
        Ok(())
    }

    fn to_doc(&self, pending: &[String]) -> Document {
        let ids: Vec<Bson> = self
            .slots
            .iter()
            .map(|s| match s {
                None => Bson::Null,
                Some(id) => {
                    let files: Vec<Document> = id
                        .modified
                        .iter()
                        .map(|(f, b)| doc! {"file": f, "blocks": b.iter().map(|b| *b as i64).collect::<Vec<_>>()})
                        .collect();
                    Bson::Document(doc! {"name": &id.name, "files": files})
                }
            })
            .collect();
        let hashes: Vec<Document> = self
            .hashes
            .iter()
            .map(|(f, h)| {
                let bytes: Vec<u8> = h.iter().flat_map(|h| h.to_le_bytes()).collect();
                doc! {"file": f, "hashes": bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes }}
            })
            .collect();
        doc! {"blockSize": self.block as i64, "ids": ids, "hashes": hashes, "pending": pending}
    }

    /// Reads the state file at start-up (none: no history). Files gone since are dropped;
    /// files a crashed checkpoint was rewriting are compared with their hashes again, so the
    /// history matches the bytes on disk.
    pub fn load(dbpath: &Path) -> Result<Tracking, StorageError> {
        let path = dbpath.join(STATE_FILE);
        if !path.exists() {
            return Ok(Tracking::default());
        }
        let d = read_file(&path)?.into_iter().next().unwrap_or_default();
        let mut t = Tracking::from_doc(&d);
        t.on_disk = true;
        let gone: Vec<String> = t
            .hashes
            .keys()
            .filter(|f| !dbpath.join(f).is_file())
            .cloned()
            .collect();
        for f in gone {
            t.removed(&f);
        }
        for f in d.get_array("pending").into_iter().flatten() {
            let Some(f) = f.as_str() else { continue };
            if let Ok(bytes) = fs::read(dbpath.join(f)) {
                t.wrote(f, &bytes);
            }
        }
        Ok(t)
    }

    fn from_doc(d: &Document) -> Tracking {
        let mut t = Tracking {
            block: d.get_i64("blockSize").unwrap_or(0).max(0) as u64,
            ..Tracking::default()
        };
        for (i, s) in d.get_array("ids").into_iter().flatten().enumerate() {
            let Some(s) = s.as_document().filter(|_| i < SLOTS) else {
                continue;
            };
            let modified = s
                .get_array("files")
                .into_iter()
                .flatten()
                .filter_map(Bson::as_document)
                .map(|f| {
                    let blocks = f.get_array("blocks").into_iter().flatten();
                    let blocks = blocks.filter_map(Bson::as_i64).map(|b| b as u64).collect();
                    (f.get_str("file").unwrap_or_default().to_string(), blocks)
                })
                .collect();
            let name = s.get_str("name").unwrap_or_default().to_string();
            t.slots[i] = Some(BackupId { name, modified });
        }
        for h in d
            .get_array("hashes")
            .into_iter()
            .flatten()
            .filter_map(Bson::as_document)
        {
            let bytes = h.get_binary_generic("hashes").cloned().unwrap_or_default();
            let hashes = bytes
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect();
            t.hashes
                .insert(h.get_str("file").unwrap_or_default().to_string(), hashes);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> Vec<String> {
        vec!["collection-0-1.wt".into(), "WiredTiger.wt".into()]
    }

    #[test]
    fn two_slots_and_the_source_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("collection-0-1.wt"), vec![1u8; 10]).unwrap();
        let mut t = Tracking::default();
        t.register(dir.path(), "A", None, 1, &files()).unwrap();
        t.check("B", Some("A")).unwrap();
        t.register(dir.path(), "B", Some("A"), 1, &files()).unwrap();
        t.register(dir.path(), "C", Some("B"), 1, &files()).unwrap();
        assert_eq!(t.names(), ["C", "B"]);
        assert_eq!(t.check("D", Some("A")), Err(Refusal::NoSuchSource));
        assert_eq!(t.check("C", Some("B")), Err(Refusal::NameInUse));
        assert_eq!(t.check("B", Some("B")), Err(Refusal::NameInUse));
        t.register(dir.path(), "D", Some("B"), 1, &files()).unwrap();
        assert_eq!(t.names(), ["D", "B"]);
    }

    #[test]
    fn changed_blocks_and_growth_are_recorded_and_survive_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let name = "collection-0-1.wt";
        let mut bytes = vec![0u8; 3 * MB as usize];
        fs::write(dir.path().join(name), &bytes).unwrap();
        let mut t = Tracking::default();
        t.register(dir.path(), "A", None, 1, &files()).unwrap();
        assert_eq!(t.listing("A", name), Listing::Unchanged);
        assert_eq!(t.listing("A", "WiredTiger.wt"), Listing::Whole);
        bytes[MB as usize + 5] = 9;
        bytes.extend_from_slice(&[7u8; 10]);
        fs::write(dir.path().join(name), &bytes).unwrap();
        t.wrote(name, &bytes);
        assert_eq!(t.listing("A", name), Listing::Blocks(vec![1, 3]));
        t.wrote("collection-2-1.wt", &[1u8; 10]);
        assert_eq!(
            t.listing("A", "collection-2-1.wt"),
            Listing::Blocks(vec![0])
        );
        t.persist(dir.path(), &[]).unwrap();
        let back = Tracking::load(dir.path()).unwrap();
        assert_eq!(back.names(), ["A"]);
        assert_eq!(back.listing("A", name), Listing::Blocks(vec![1, 3]));
        // The second collection has no file on disk: it left the history.
        assert_eq!(back.listing("A", "collection-2-1.wt"), Listing::Whole);
    }

    /// A checkpoint dies after rewriting a file but before writing the history again: the
    /// file was named as pending, so start-up compares it and finds the changed block.
    #[test]
    fn a_crash_amid_a_checkpoint_is_caught_at_start_up() {
        let dir = tempfile::tempdir().unwrap();
        let name = "collection-0-1.wt";
        let mut bytes = vec![0u8; 2 * MB as usize];
        fs::write(dir.path().join(name), &bytes).unwrap();
        let mut t = Tracking::default();
        t.register(dir.path(), "A", None, 1, &files()).unwrap();
        t.persist(dir.path(), &[name.to_string()]).unwrap();
        bytes[MB as usize] = 1;
        fs::write(dir.path().join(name), &bytes).unwrap();
        let back = Tracking::load(dir.path()).unwrap();
        assert_eq!(back.listing("A", name), Listing::Blocks(vec![1]));
        assert!(back.dirty(), "the next checkpoint writes the history again");
    }
}
