//! An incremental backup on this node: the cursor opened with the chain's names, each
//! changed file stored as its merged changed ranges, and every file's block hashes carried
//! forward from the backup it continues, so a restore can prove the rebuilt file whole.

use bson::{Document, doc};
use tidemark_schema::control::{IncrementalBackup, Phase, StorageTarget};
use tidemark_schema::manifest::{
    FileEntry, ManifestIncrement, RangeEntry, ReplicaSetManifest, incremental_cursor_name, layout,
};

use crate::error::AgentError;
use crate::mongod::{BackupCursor, CursorFile, MongodClient};
use crate::node::{InPhase, Node, PhaseFailure};
use crate::storage::{BackupStore, Span};

/// What this node's part of an incremental backup continues.
pub struct Chain {
    pub link: ManifestIncrement,
    /// The manifest of the backup this one continues (`None` for a base).
    pub source: Option<ReplicaSetManifest>,
}

impl Chain {
    pub fn block_size(&self) -> u64 {
        self.link.block_size
    }
}

/// Reads the source's manifest and checks that this node holds the chain's history, then
/// gives the `$backupCursor` options. A new base first clears the node's history (PBM does
/// the same), so that no older tracking survives into the new chain.
pub async fn prepare(
    node: &Node,
    client: &MongodClient,
    store: &BackupStore,
    backup: &str,
    inc: &IncrementalBackup,
) -> Result<(Chain, Document), PhaseFailure> {
    const PHASE: Phase = Phase::Cursor;
    let this_name = incremental_cursor_name(backup);
    let mut options = doc! {
        "incrementalBackup": true,
        "thisBackupName": &this_name,
        "blockSize": inc.block_size_mb as i32,
    };
    let source = match &inc.source {
        None => {
            let cursor = BackupCursor::open_with(
                client,
                node.cfg.cursor_keepalive,
                doc! {"disableIncrementalBackup": true},
            )
            .await
            .in_phase(PHASE)?;
            cursor.close().await.in_phase(PHASE)?;
            None
        }
        Some(source) => {
            let m = source_manifest(node, store, source).await.in_phase(PHASE)?;
            let theirs = m.incremental.as_ref().map_or(0, |i| i.block_size);
            if theirs != u64::from(inc.block_size_mb) << 20 {
                return Err(AgentError::Refused(format!(
                    "backup {source} tracks blocks of {theirs} B, this increment asks for \
                     {} MB: a chain keeps one block size",
                    inc.block_size_mb
                )))
                .in_phase(PHASE);
            }
            let link = m.incremental.as_ref().expect("checked by source_manifest");
            options.insert("srcBackupName", link.this_name.clone());
            Some(m)
        }
    };
    let link = ManifestIncrement {
        this_name,
        source: inc.source.clone(),
        base: inc.base.clone(),
        block_size: u64::from(inc.block_size_mb) << 20,
    };
    Ok((Chain { link, source }, options))
}

/// The manifest of the backup an increment continues, refused unless it was taken on this
/// node with the same block size: the node's block tracking knows only its own backups.
async fn source_manifest(
    node: &Node,
    store: &BackupStore,
    source: &str,
) -> Result<ReplicaSetManifest, AgentError> {
    let key = layout::rs_manifest_key(source, &node.replica_set);
    let bytes = crate::restore::validate::read_object(store, &key)
        .await?
        .ok_or_else(|| {
            AgentError::Refused(format!(
                "backup {source}, which this increment continues, has no manifest at {key}"
            ))
        })?;
    let m = ReplicaSetManifest::from_json(&bytes)
        .map_err(|e| AgentError::Refused(format!("{key}: {e}")))?;
    if m.incremental.is_none() {
        return Err(AgentError::Refused(format!(
            "backup {source} is not incremental: an increment can only continue a chain"
        )));
    }
    if m.node != node.id {
        return Err(AgentError::Refused(format!(
            "backup {source} was taken on {}, not on this node ({}): only that node's block \
             tracking knows it, so the next backup of the chain must be a new base",
            m.node, node.id
        )));
    }
    Ok(m)
}

/// The changed ranges of a listed file, sorted, merged where adjacent or overlapping and
/// cut at the file's size (WiredTiger may list a last block running past the end).
pub fn merged_ranges(f: &CursorFile, size: u64) -> Vec<(u64, u64)> {
    let mut ranges: Vec<(u64, u64)> = f
        .ranges
        .iter()
        .filter(|(offset, _)| *offset < size)
        .map(|&(offset, length)| (offset, (offset + length).min(size)))
        .collect();
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged.into_iter().map(|(s, e)| (s, e - s)).collect()
}

/// How a listed file is stored in this increment.
pub enum Copy {
    /// Whole, as in a full backup: the base's files, new files, WiredTiger's own files
    /// (always listed whole) and files changed end to end.
    Whole,
    /// As its changed ranges over the source's copy (none: unchanged).
    Patch(Vec<(u64, u64)>),
}

pub fn how(chain: &Chain, f: &CursorFile, size: u64) -> Copy {
    let Some(source) = &chain.source else {
        return Copy::Whole;
    };
    let ranges = merged_ranges(f, size);
    let known = source.files.iter().any(|e| e.path == f.relative);
    let end_to_end = size > 0 && ranges.first() == Some(&(0, size));
    // Extension files (journal) carry no size and are new by nature.
    if !known || end_to_end || f.size.is_none() {
        return Copy::Whole;
    }
    Copy::Patch(ranges)
}

/// Stores a file's changed ranges and works out its block hashes: hashed on upload for
/// changed blocks, carried from the source for unchanged ones that kept their extent,
/// read here for any other (a shrunk last block).
pub async fn copy_patch(
    node: &Node,
    store: &BackupStore,
    (backup, storage): (&str, &StorageTarget),
    f: &CursorFile,
    (size, ranges): (u64, Vec<(u64, u64)>),
    chain: &Chain,
) -> Result<FileEntry, AgentError> {
    let bs = chain.block_size();
    let mut blocks: Vec<Option<String>> = vec![None; size.div_ceil(bs) as usize];
    let mut entries = Vec::with_capacity(ranges.len());
    for (offset, length) in ranges {
        let key = layout::range_object_key(
            backup,
            &node.replica_set,
            &f.relative,
            (offset, length),
            storage.compression,
        );
        let span = Span {
            offset,
            end: offset + length,
            block_size: Some(bs),
        };
        let stored = store
            .upload_span(
                &f.path,
                &key,
                storage.compression,
                storage.compression_level,
                span,
            )
            .await?;
        let first = (offset / bs) as usize;
        for (i, h) in stored.blocks.into_iter().enumerate() {
            blocks[first + i] = Some(h);
        }
        entries.push(RangeEntry {
            offset,
            length,
            stored_size: stored.stored_size,
            checksum: stored.checksum,
            object: key,
        });
    }
    let source = chain
        .source
        .as_ref()
        .and_then(|s| s.files.iter().find(|e| e.path == f.relative));
    let blocks = fill_blocks(blocks, source, size, bs, &f.path).await?;
    let meta = tokio::fs::metadata(&f.path)
        .await
        .map_err(|e| AgentError::io(&f.path, e))?;
    use std::os::unix::fs::PermissionsExt;
    Ok(FileEntry {
        path: f.relative.clone(),
        size,
        stored_size: entries.iter().map(|r| r.stored_size).sum(),
        uncompressed_size: entries.iter().map(|r| r.length).sum(),
        checksum: String::new(),
        mode: meta.permissions().mode() & 0o7777,
        object: None,
        ranges: entries,
        blocks,
    })
}

/// Fills the blocks no range covered: from the source's hashes where the block has the
/// same extent in both, else by reading the block here (the cursor keeps it stable).
async fn fill_blocks(
    blocks: Vec<Option<String>>,
    source: Option<&FileEntry>,
    size: u64,
    bs: u64,
    path: &std::path::Path,
) -> Result<Vec<String>, AgentError> {
    let mut out = Vec::with_capacity(blocks.len());
    for (i, b) in blocks.into_iter().enumerate() {
        if let Some(h) = b {
            out.push(h);
            continue;
        }
        let start = i as u64 * bs;
        let end = (start + bs).min(size);
        let same_extent = source.is_some_and(|s| (start + bs).min(s.size) == end);
        match source.and_then(|s| s.blocks.get(i)).filter(|_| same_extent) {
            Some(h) => out.push(h.clone()),
            None => {
                let p = path.to_path_buf();
                let hashed = tokio::task::spawn_blocking(move || {
                    crate::storage::hash_blocks(&p, start, end, bs)
                })
                .await
                .map_err(|e| AgentError::Refused(format!("hashing a block failed: {e}")))?
                .map_err(|e| AgentError::io(path, e))?;
                out.extend(hashed);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(ranges: &[(u64, u64)]) -> CursorFile {
        CursorFile {
            path: "/d/a.wt".into(),
            relative: "a.wt".into(),
            size: Some(100),
            ranges: ranges.to_vec(),
        }
    }

    #[test]
    fn adjacent_blocks_merge_and_a_block_past_the_end_is_cut() {
        let f = file(&[(32, 16), (0, 16), (16, 16), (96, 16), (112, 16)]);
        assert_eq!(merged_ranges(&f, 100), [(0, 48), (96, 4)]);
        assert_eq!(merged_ranges(&file(&[]), 100), []);
    }
}
