//! Copies the listed files to storage, several at a time, reporting progress. Each file is
//! streamed (compressed and checksummed on the way), never held whole in memory.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tidemark_schema::control::Phase;

use futures::{StreamExt, TryStreamExt};
use serde_json::json;
use tidemark_schema::control::{Op, StorageTarget};
use tidemark_schema::manifest::{FileEntry, layout};

use crate::error::AgentError;
use crate::mongod::CursorFile;
use crate::node::{Details, InPhase, Node, PhaseFailure};
use crate::storage::BackupStore;

pub async fn copy_files(
    node: &Node,
    op: &Op,
    store: &BackupStore,
    backup: &str,
    files: &[CursorFile],
    storage: &StorageTarget,
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
    let copy = futures::stream::iter(files.iter())
        .map(|f| async {
            let entry = copy_one(node, store, backup, f, storage).await?;
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
            Ok::<_, AgentError>(entry)
        })
        .buffer_unordered(node.cfg.parallel_files.max(1))
        .try_collect::<Vec<FileEntry>>();
    // A cancel stops the copy within a second: the uploads in flight are dropped, the
    // cursor is closed by the caller, and the reconciler deletes what was written.
    let entries: Vec<FileEntry> = tokio::select! {
        copied = copy => copied.in_phase(Phase::Copy)?,
        why = node.ended_by_author(op) => {
            return Err(AgentError::Refused(why)).in_phase(Phase::Copy);
        }
    };
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
) -> Result<FileEntry, AgentError> {
    let meta = tokio::fs::metadata(&f.path)
        .await
        .map_err(|e| AgentError::io(&f.path, e))?;
    // Files listed with a size are copied up to it (later bytes belong to writes after the
    // checkpoint); extension journal files are copied as they are now.
    let limit = f.size.unwrap_or(meta.len());
    let key = layout::file_object_key(backup, &node.replica_set, &f.relative, storage.compression);
    let stored = store
        .upload_file(
            &f.path,
            &key,
            storage.compression,
            storage.compression_level,
            limit,
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
    })
}
