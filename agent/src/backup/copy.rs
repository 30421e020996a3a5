//! Copies the listed files to storage, several at a time, reporting progress. Each file is
//! streamed (compressed and checksummed on the way), never held whole in memory.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tidemark_schema::control::Phase;

use futures::StreamExt;
use serde_json::json;
use tidemark_schema::control::{Op, StorageTarget};
use tidemark_schema::manifest::{FileEntry, layout};

use super::increment::{self, Chain};
use crate::error::AgentError;
use crate::mongod::CursorFile;
use crate::node::{Details, InPhase, Node, PhaseFailure};
use crate::storage::{BackupStore, Span};

/// `chain`: an incremental backup's chain, which decides per file between a whole copy
/// and its changed ranges.
pub async fn copy_files(
    node: &Node,
    op: &Op,
    store: &BackupStore,
    backup: &str,
    files: &[CursorFile],
    storage: &StorageTarget,
    chain: Option<&Chain>,
) -> Result<Vec<FileEntry>, PhaseFailure> {
    let total_bytes: u64 = files.iter().filter_map(|f| f.size).sum();
    let done_files = AtomicU64::new(0);
    let done_bytes = AtomicU64::new(0);
    let last_progress = std::sync::Mutex::new(Instant::now());
    node.running(
        op,
        Phase::Copy,
        format!("copying {} files ({total_bytes} B)", files.len()),
    )
    .await?;
    // Set once the op's author ended it, or a file failed: no new file starts and the ones
    // in flight finish, so that every object this node writes exists before its final
    // report (the reconciler deletes a cancelled backup's objects after that report; an
    // upload dropped mid-way can go on, on a blocking thread, and land after the deletion).
    let stop: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);
    let copy = futures::stream::iter(files.iter())
        .map(|f| async {
            if stop.lock().expect("not poisoned").is_some() {
                return Ok(None);
            }
            let entry = match copy_one(node, store, backup, f, storage, chain).await {
                Ok(entry) => entry,
                Err(e) => {
                    stop.lock()
                        .expect("not poisoned")
                        .get_or_insert_with(|| "another file failed".into());
                    return Err(e);
                }
            };
            done_files.fetch_add(1, Ordering::Relaxed);
            done_bytes.fetch_add(entry.uncompressed_size, Ordering::Relaxed);
            let due = {
                let mut last = last_progress.lock().expect("not poisoned");
                let due = last.elapsed() > Duration::from_secs(2);
                if due {
                    *last = Instant::now();
                }
                due
            };
            if due {
                // Progress for `status` and the logs; a failed write only delays it.
                let msg = format!(
                    "{}/{} files, {}/{} B",
                    done_files.load(Ordering::Relaxed),
                    files.len(),
                    done_bytes.load(Ordering::Relaxed),
                    total_bytes
                );
                let _ = node.running(op, Phase::Copy, msg).await;
            }
            Ok::<_, AgentError>(Some(entry))
        })
        .buffer_unordered(node.cfg.parallel_files.max(1))
        .collect::<Vec<Result<Option<FileEntry>, AgentError>>>();
    // A cancel stops the copy at the next file (the caller closes the cursor, and the
    // reconciler deletes what was written); the watch never ends the copy by itself.
    let watch = async {
        let why = node.ended_by_author(op).await;
        *stop.lock().expect("not poisoned") = Some(why);
        std::future::pending::<()>().await
    };
    let results = tokio::select! {
        results = copy => results,
        () = watch => unreachable!("the watch never ends"),
    };
    let mut entries = Vec::with_capacity(results.len());
    for r in results {
        if let Some(entry) = r.in_phase(Phase::Copy)? {
            entries.push(entry);
        }
    }
    if let Some(why) = stop.lock().expect("not poisoned").take() {
        // Every file either failed (returned above) or was skipped: a cancel.
        return Err(AgentError::Refused(why)).in_phase(Phase::Copy);
    }
    let mut d = Details::new();
    d.insert("files".into(), json!(entries.len()));
    d.insert(
        "uncompressedBytes".into(),
        json!(entries.iter().map(|e| e.uncompressed_size).sum::<u64>()),
    );
    d.insert(
        "storedBytes".into(),
        json!(entries.iter().map(|e| e.stored_size).sum::<u64>()),
    );
    node.done(
        op,
        Phase::Copy,
        format!("{} files copied", entries.len()),
        d,
    )
    .await?;
    Ok(entries)
}

async fn copy_one(
    node: &Node,
    store: &BackupStore,
    backup: &str,
    f: &CursorFile,
    storage: &StorageTarget,
    chain: Option<&Chain>,
) -> Result<FileEntry, AgentError> {
    let meta = tokio::fs::metadata(&f.path)
        .await
        .map_err(|e| AgentError::io(&f.path, e))?;
    // Files listed with a size are copied up to it (later bytes belong to writes after the
    // checkpoint); extension journal files are copied as they are now.
    let limit = f.size.unwrap_or(meta.len());
    if let Some(chain) = chain
        && let increment::Copy::Patch(ranges) = increment::how(chain, f, limit)
    {
        return increment::copy_patch(node, store, (backup, storage), f, (limit, ranges), chain)
            .await;
    }
    let key = layout::file_object_key(backup, &node.replica_set, &f.relative, storage.compression);
    let span = Span {
        offset: 0,
        end: limit,
        block_size: chain.map(Chain::block_size),
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
    use std::os::unix::fs::PermissionsExt;
    Ok(FileEntry {
        path: f.relative.clone(),
        size: limit,
        stored_size: stored.stored_size,
        uncompressed_size: stored.uncompressed_size,
        checksum: stored.checksum,
        mode: meta.permissions().mode() & 0o7777,
        object: Some(key),
        ranges: Vec::new(),
        blocks: stored.blocks,
    })
}
