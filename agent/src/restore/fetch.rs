//! Downloads the backup's files into the dbPath, several at a time, verifying every
//! checksum and restoring file modes. External restores wait for the operator's copy
//! instead and then check that every listed file is there with its size.

use futures::{StreamExt, TryStreamExt};
use serde_json::json;
use tidemark_schema::chain::{FilePlan, file_plans};
use tidemark_schema::control::Op;
use tidemark_schema::control::Phase;
use tidemark_schema::manifest::ReplicaSetManifest;

use crate::error::AgentError;
use crate::node::{Details, InPhase, Node, PhaseFailure};
use crate::storage::BackupStore;

pub async fn fetch(
    node: &Node,
    op: &Op,
    store: &BackupStore,
    links: &[ReplicaSetManifest],
) -> Result<(), PhaseFailure> {
    const PHASE: Phase = Phase::Fetch;
    let started_at = chrono::Utc::now();
    let started = std::time::Instant::now();
    let manifest = links.last().expect("a chain is never empty");
    let plans = file_plans(links)
        .map_err(|e| AgentError::Refused(e.to_string()))
        .in_phase(PHASE)?;
    let stored: u64 = links.iter().map(|m| m.stored_bytes).sum();
    node.running(
        op,
        PHASE,
        match links.len() {
            1 => format!("downloading {} files ({stored} B)", manifest.files.len()),
            n => format!(
                "rebuilding {} files from a chain of {n} backups ({stored} B)",
                manifest.files.len()
            ),
        },
    )
    .await?;
    let dbpath = &node.cfg.dbpath;
    let download = futures::stream::iter(plans.iter())
        .map(|plan| async move {
            // Paths were validated when the manifest was read: relative, no `..`.
            rebuild(store, links, plan, &dbpath.join(plan.path))
                .await
                .map_err(AgentError::from)
        })
        .buffer_unordered(node.cfg.parallel_files.max(1))
        .try_collect::<Vec<()>>();
    // mongod is down for as long as this takes (hours on terabytes): say how far it got.
    // The reporter is stopped, not dropped: a report cut off mid-write could land after
    // the phase's final report and overwrite it.
    let finished = std::sync::atomic::AtomicBool::new(false);
    let (downloaded, ()) = tokio::join!(
        async {
            let r = download.await;
            finished.store(true, std::sync::atomic::Ordering::SeqCst);
            r
        },
        report_progress(node, op, manifest, started, &finished)
    );
    downloaded.in_phase(PHASE)?;
    // One flush for every file written: nothing is reported fetched before it is durable.
    let root = dbpath.clone();
    tokio::task::spawn_blocking(move || crate::storage::sync_filesystem(&root))
        .await
        .map_err(|e| AgentError::Refused(format!("flushing the restored files failed: {e}")))
        .in_phase(PHASE)?
        .in_phase(PHASE)?;
    let mut d = Details::new();
    d.insert("files".into(), json!(manifest.files.len()));
    d.insert(
        "bytes".into(),
        json!(tidemark_schema::chain::uncompressed_bytes(links)),
    );
    if links.len() > 1 {
        d.insert("chainLength".into(), json!(links.len()));
    }
    // How long the data path took, durable, so the rest of a restore can be told apart.
    d.insert("startedAt".into(), json!(started_at));
    d.insert("seconds".into(), json!(started.elapsed().as_secs_f64()));
    node.done(op, PHASE, "every file downloaded and verified", d)
        .await
}

/// Restores one file: its newest full copy (checked against its blake3), then each later
/// increment's ranges at their offsets, the file cut to that increment's size after each;
/// a rebuilt file is then proved against the last backup's block hashes (`prove`).
async fn rebuild(
    store: &BackupStore,
    links: &[ReplicaSetManifest],
    plan: &FilePlan<'_>,
    dest: &std::path::Path,
) -> Result<(), crate::storage::StorageError> {
    use crate::storage::StorageError;
    let (i, full) = plan.full;
    store
        .download_file(full, links[i].compression, dest)
        .await?;
    if plan.patches.is_empty() {
        return Ok(());
    }
    let io = |op: &'static str| {
        move |source: std::io::Error| StorageError::Io {
            op,
            path: dest.to_path_buf(),
            source,
        }
    };
    for (i, entry) in &plan.patches {
        for range in &entry.ranges {
            store
                .download_range(plan.path, range, links[*i].compression, dest)
                .await?;
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(dest)
            .map_err(io("cannot open"))?;
        file.set_len(entry.size).map_err(io("cannot cut to size"))?;
    }
    let last = plan.last;
    super::prove::prove(store.url(), links, plan, dest).await?;
    // Its mode, and one flush for all its ranges, on a blocking thread of its own, so the
    // other files' downloads go on meanwhile.
    let (path, mode) = (dest.to_path_buf(), last.mode & 0o7777);
    tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::PermissionsExt;
        let file = std::fs::File::open(&path)?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.sync_data()
    })
    .await
    .map_err(|e| io("flushing")(std::io::Error::other(e.to_string())))?
    .map_err(io("cannot set the mode of or flush"))
}

/// How often a download reports its progress at most: every heartbeat, up to this.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Bytes written, rate and ETA of the download, every few seconds, as the `fetch`
/// report's message and figures (`bytesWritten`, `bytesTotal`, `bytesPerSecond`,
/// `etaSeconds`). Measured on disk, so a large file counts as it grows. Returns once
/// `finished` is set, between two reports.
async fn report_progress(
    node: &Node,
    op: &Op,
    manifest: &ReplicaSetManifest,
    started: std::time::Instant,
    finished: &std::sync::atomic::AtomicBool,
) {
    // The files' final sizes: an increment's entries count only its changed bytes.
    let total: u64 = manifest.files.iter().map(|f| f.size).sum();
    let tick = std::time::Duration::from_millis(50);
    let every = node.cfg.heartbeat_interval.min(PROGRESS_EVERY);
    loop {
        let slept = std::time::Instant::now();
        while slept.elapsed() < every {
            if finished.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            tokio::time::sleep(tick).await;
        }
        let written: u64 = manifest
            .files
            .iter()
            .map(|f| {
                std::fs::metadata(node.cfg.dbpath.join(&f.path)).map_or(0, |m| m.len().min(f.size))
            })
            .sum();
        let secs = started.elapsed().as_secs_f64().max(0.001);
        let rate = written as f64 / secs;
        let eta = (rate > 0.0).then(|| (total.saturating_sub(written)) as f64 / rate);
        let mut d = Details::new();
        d.insert("bytesWritten".into(), json!(written));
        d.insert("bytesTotal".into(), json!(total));
        d.insert("bytesPerSecond".into(), json!(rate.round()));
        d.insert("etaSeconds".into(), json!(eta.map(f64::round)));
        let message = format!(
            "{written} of {total} B written ({:.0}%), {:.1} MiB/s, ETA {}",
            written as f64 * 100.0 / total.max(1) as f64,
            rate / (1 << 20) as f64,
            eta.map_or("unknown".to_string(), |e| format!("{e:.0} s"))
        );
        // Progress only: a report the control plane refuses now is simply the next one.
        let _ = node
            .report(
                op,
                Phase::Fetch,
                tidemark_schema::control::PhaseStatus::Running,
                message,
                d,
            )
            .await;
    }
}

/// External restore: report `copyReady`, wait for `restore-finish`, check the files.
pub async fn await_external_copy(
    node: &Node,
    op: &Op,
    manifest: &ReplicaSetManifest,
) -> Result<(), PhaseFailure> {
    let mut d = Details::new();
    d.insert("dbpath".into(), json!(node.cfg.dbpath));
    d.insert(
        "files".into(),
        json!(
            manifest
                .files
                .iter()
                .map(|f| json!({"path": f.path, "size": f.uncompressed_size}))
                .collect::<Vec<_>>()
        ),
    );
    node.done(
        op,
        Phase::CopyReady,
        "mongod is stopped and the dbPath is empty: copy the snapshot's files in, then run `tidemark restore-finish`",
        d,
    )
    .await?;
    node.wait_for(
        op,
        &tidemark_schema::control::finish_key(&op.id),
        "restore-finish",
    )
    .await
    .in_phase(Phase::CopyReady)?;
    for f in &manifest.files {
        let path = node.cfg.dbpath.join(&f.path);
        let len = std::fs::metadata(&path)
            .map_err(|e| AgentError::io(&path, e))
            .in_phase(Phase::Fetch)?
            .len();
        if len < f.uncompressed_size {
            return Err(AgentError::Refused(format!(
                "{} has {len} B after the snapshot copy; the backup lists {} B",
                path.display(),
                f.uncompressed_size
            )))
            .in_phase(Phase::Fetch);
        }
    }
    Ok(())
}
