//! An incremental chain as a restore reads it: the manifests from the base to the backup
//! being restored, checked to belong together, and for every file of that backup the
//! objects that rebuild it (the newest full copy, then each later increment's ranges).

use crate::manifest::{FileEntry, ReplicaSetManifest};

/// How one file of the restored backup is rebuilt.
#[derive(Debug, PartialEq)]
pub struct FilePlan<'a> {
    pub path: &'a str,
    /// The newest full copy: its link's index in the chain, and its entry.
    pub full: (usize, &'a FileEntry),
    /// The later links' entries, in chain order: each one's ranges are written at their
    /// offsets, then the file is cut to that entry's size.
    pub patches: Vec<(usize, &'a FileEntry)>,
    /// The restored backup's entry: the file's final size, mode and block hashes.
    pub last: &'a FileEntry,
}

impl FilePlan<'_> {
    /// Which blocks of the rebuilt file must be read back and hashed to prove it: those a
    /// range wrote, and those past the smallest size along the chain (cut, or grown back).
    /// Every other block still holds the full copy's bytes, which its checksum proved on
    /// download, so the full copy's hash of it stands for it.
    pub fn dirty_blocks(&self, block_size: u64) -> Vec<bool> {
        let block_size = block_size.max(1);
        let n = self.last.size.div_ceil(block_size) as usize;
        let smallest = self
            .patches
            .iter()
            .map(|(_, e)| e.size)
            .chain([self.full.1.size])
            .min()
            .unwrap_or(0);
        let mut dirty: Vec<bool> = (0..n)
            .map(|b| (b as u64 + 1) * block_size > smallest || self.full.1.blocks.get(b).is_none())
            .collect();
        for range in self.patches.iter().flat_map(|(_, e)| &e.ranges) {
            let first = (range.offset / block_size) as usize;
            let end = (range.offset + range.length).div_ceil(block_size) as usize;
            for d in dirty.iter_mut().take(end).skip(first) {
                *d = true;
            }
        }
        dirty
    }
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum ChainError {
    #[error("an empty chain")]
    Empty,
    #[error("backup {backup} is an increment of {needs}, whose manifest is not in the chain")]
    MissingSource { backup: String, needs: String },
    #[error("backup {backup} starts the chain but is not a full (base) backup")]
    NotABase { backup: String },
    #[error(
        "backup {backup} continues {found:?}, not {expected} (the previous backup of its chain)"
    )]
    Broken {
        backup: String,
        expected: String,
        found: Option<String>,
    },
    #[error("backup {backup} differs from its chain's base {base} in {what}")]
    Mismatch {
        backup: String,
        base: String,
        what: &'static str,
    },
    #[error("file {path} of backup {backup} has no full copy in the chain")]
    NoFullCopy { path: String, backup: String },
    #[error(
        "file {path} is missing from backup {backup}, between its full copy and the backup restored"
    )]
    MissingFile { path: String, backup: String },
    #[error("chain of {0} backups is longer than the {MAX_CHAIN} a restore follows")]
    TooLong(usize),
}

/// A restore follows at most this many links: a loop of `source`s in a damaged storage
/// must end in an error, not in an endless walk.
pub const MAX_CHAIN: usize = 10_000;

/// Checks that `links` (base first) form one chain: each increment continues the one
/// before it, and all share the base, replica set, block size, encryption and layout.
pub fn check_links(links: &[ReplicaSetManifest]) -> Result<(), ChainError> {
    let (Some(base), Some(last)) = (links.first(), links.last()) else {
        return Err(ChainError::Empty);
    };
    if links.len() > MAX_CHAIN {
        return Err(ChainError::TooLong(links.len()));
    }
    if let Some(source) = base.incremental.as_ref().and_then(|i| i.source.clone()) {
        return Err(if links.len() == 1 {
            ChainError::MissingSource {
                backup: last.backup.clone(),
                needs: source,
            }
        } else {
            ChainError::NotABase {
                backup: base.backup.clone(),
            }
        });
    }
    for pair in links.windows(2) {
        let (prev, link) = (&pair[0], &pair[1]);
        let found = link.incremental.as_ref().and_then(|i| i.source.clone());
        if found.as_deref() != Some(prev.backup.as_str()) {
            return Err(ChainError::Broken {
                backup: link.backup.clone(),
                expected: prev.backup.clone(),
                found,
            });
        }
        if let Some(what) = mismatch(base, link) {
            return Err(ChainError::Mismatch {
                backup: link.backup.clone(),
                base: base.backup.clone(),
                what,
            });
        }
    }
    Ok(())
}

/// What a chain's link must share with its base, or `None`.
fn mismatch(base: &ReplicaSetManifest, link: &ReplicaSetManifest) -> Option<&'static str> {
    let (b, l) = (base.incremental.as_ref()?, link.incremental.as_ref()?);
    if l.base != base.backup {
        Some("its recorded base")
    } else if l.block_size != b.block_size {
        Some("block size")
    } else if link.replica_set != base.replica_set || link.cluster != base.cluster {
        Some("cluster or replica set")
    } else if link.encryption != base.encryption {
        Some("encryption at rest")
    } else if link.storage_options != base.storage_options {
        Some("storage options")
    } else {
        None
    }
}

/// For every file of the last link, how it is rebuilt. `links` must have passed
/// [`check_links`].
pub fn file_plans(links: &[ReplicaSetManifest]) -> Result<Vec<FilePlan<'_>>, ChainError> {
    let last = links.last().ok_or(ChainError::Empty)?;
    let mut plans = Vec::with_capacity(last.files.len());
    for entry in &last.files {
        let mut patches = Vec::new();
        let mut full = None;
        for (i, link) in links.iter().enumerate().rev() {
            let Some(e) = link.files.iter().find(|f| f.path == entry.path) else {
                return Err(ChainError::MissingFile {
                    path: entry.path.clone(),
                    backup: link.backup.clone(),
                });
            };
            if link.is_patch(e) {
                patches.push((i, e));
            } else {
                full = Some((i, e));
                break;
            }
        }
        let full = full.ok_or_else(|| ChainError::NoFullCopy {
            path: entry.path.clone(),
            backup: last.backup.clone(),
        })?;
        patches.reverse();
        plans.push(FilePlan {
            path: &entry.path,
            full,
            patches,
            last: entry,
        });
    }
    Ok(plans)
}

/// What a restore of the chain writes, summed over every link (the fallback disk check's
/// figure: PBM counts all increments too).
pub fn uncompressed_bytes(links: &[ReplicaSetManifest]) -> u64 {
    links.iter().map(|m| m.uncompressed_bytes).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{MANIFEST_FORMAT, ManifestIncrement, RangeEntry};

    fn file(path: &str, object: bool, ranges: &[(u64, u64)]) -> FileEntry {
        FileEntry {
            path: path.into(),
            size: 8,
            stored_size: ranges.iter().map(|r| r.1).sum(),
            uncompressed_size: if object {
                8
            } else {
                ranges.iter().map(|r| r.1).sum()
            },
            checksum: if object {
                "blake3:x".into()
            } else {
                String::new()
            },
            mode: 0o600,
            object: object.then(|| format!("o/{path}")),
            ranges: ranges
                .iter()
                .map(|&(offset, length)| RangeEntry {
                    offset,
                    length,
                    stored_size: length,
                    checksum: "blake3:r".into(),
                    object: format!("r/{path}.{offset}"),
                })
                .collect(),
            blocks: vec!["b".into(); 2],
        }
    }

    fn link(name: &str, source: Option<&str>, files: Vec<FileEntry>) -> ReplicaSetManifest {
        let json = serde_json::json!({
            "format": MANIFEST_FORMAT, "backup": name, "cluster": "c", "replicaSet": "rs0",
            "node": "db1:27017", "type": "incremental", "compression": "none",
            "startedAt": "2026-03-01T00:00:00Z", "finishedAt": "2026-03-01T00:01:00Z",
            "backupId": "x", "checkpointTimestamp": {"t": 1, "i": 1}, "flavor": "psmdb",
            "storageOptions": {}, "lastWrite": {"t": 1, "i": 1}, "mongodVersion": "7.0.14",
            "files": [], "uncompressedBytes": 0, "storedBytes": 0,
        });
        let mut m: ReplicaSetManifest = serde_json::from_value(json).unwrap();
        m.incremental = Some(ManifestIncrement {
            this_name: name.into(),
            source: source.map(str::to_string),
            base: "b".into(),
            block_size: 4,
        });
        m.uncompressed_bytes = files.iter().map(|f| f.uncompressed_size).sum();
        m.files = files;
        m
    }

    #[test]
    fn a_file_starts_from_its_newest_full_copy_and_takes_every_later_range() {
        let chain = vec![
            link(
                "b",
                None,
                vec![file("a.wt", true, &[]), file("j1", true, &[])],
            ),
            link(
                "i1",
                Some("b"),
                vec![file("a.wt", false, &[(0, 4)]), file("n.wt", true, &[])],
            ),
            link(
                "i2",
                Some("i1"),
                vec![file("a.wt", false, &[]), file("n.wt", false, &[(4, 4)])],
            ),
        ];
        check_links(&chain).unwrap();
        let plans = file_plans(&chain).unwrap();
        assert_eq!(plans.len(), 2, "only the last backup's files: j1 is gone");
        assert_eq!(plans[0].path, "a.wt");
        assert_eq!(plans[0].full.0, 0);
        assert_eq!(
            plans[0].patches.iter().map(|p| p.0).collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!(plans[1].full.0, 1, "n.wt is new in i1");
        assert_eq!(
            plans[1].patches.iter().map(|p| p.0).collect::<Vec<_>>(),
            [2]
        );
        assert_eq!(uncompressed_bytes(&chain), 16 + 12 + 4);
    }

    #[test]
    fn only_blocks_a_range_wrote_or_a_size_cut_are_read_back() {
        // Blocks of 4 B; files of 8 B (two blocks), one range over the second block.
        let chain = vec![
            link("b", None, vec![file("a.wt", true, &[])]),
            link("i1", Some("b"), vec![file("a.wt", false, &[(4, 4)])]),
        ];
        let plans = file_plans(&chain).unwrap();
        assert_eq!(plans[0].dirty_blocks(4), [false, true]);
        let mut cut = chain.clone();
        cut[1].files[0].size = 6;
        cut[1].files[0].ranges.clear();
        cut[1].files[0].stored_size = 0;
        let plans = file_plans(&cut).unwrap();
        assert_eq!(plans[0].dirty_blocks(4), [false, true], "the cut block");
    }

    #[test]
    fn a_chain_with_a_missing_or_foreign_link_is_refused() {
        let base = link("b", None, vec![file("a.wt", true, &[])]);
        let i1 = link("i1", Some("b"), vec![file("a.wt", false, &[])]);
        let i2 = link("i2", Some("i1"), vec![file("a.wt", false, &[])]);
        assert!(matches!(
            check_links(std::slice::from_ref(&i2)),
            Err(ChainError::MissingSource { .. })
        ));
        assert!(matches!(
            check_links(&[base.clone(), i2.clone()]),
            Err(ChainError::Broken { .. })
        ));
        let mut other = i1.clone();
        other.incremental.as_mut().unwrap().block_size = 8;
        assert!(matches!(
            check_links(&[base.clone(), other]),
            Err(ChainError::Mismatch {
                what: "block size",
                ..
            })
        ));
        let gone = link("i1", Some("b"), vec![]);
        let err = file_plans(&[base, gone, i2]).unwrap_err();
        assert!(
            matches!(err, ChainError::MissingFile { ref backup, .. } if backup == "i1"),
            "{err}"
        );
    }
}
