//! The drill's scratch space: `<drill-dir>/tidemark-drill-<op>/<replica set>/`. Only
//! entries named `tidemark-drill-*` are ever removed, so a `--drill-dir` shared with
//! other files loses nothing else.

use std::path::{Path, PathBuf};

const PREFIX: &str = "tidemark-drill-";

/// The directory of one drill op.
pub fn op_dir(root: &Path, op_id: &str) -> PathBuf {
    root.join(format!("{PREFIX}{op_id}"))
}

/// Stops any standalone still running on a scratch dbPath under `dir` and removes `dir`.
pub async fn remove(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if let Some(pid) = crate::mongod::kill_leftover_standalone(&e.path()).await {
                tracing::warn!(pid, dbpath = %e.path().display(), "stopped a drill standalone left running");
            }
        }
    }
    let path = dir.to_path_buf();
    let removed = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&path)).await;
    match removed {
        Ok(Ok(())) => tracing::info!(dir = %dir.display(), "scratch directory removed"),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
        Ok(Err(e)) => {
            tracing::error!(dir = %dir.display(), error = %e, "cannot remove the scratch directory")
        }
        Err(e) => tracing::error!(error = %e, "scratch removal did not run"),
    }
}

/// At agent start: the scratch directories of drills a killed agent left behind (their
/// op is failed as interrupted by the runner; nothing in them is worth keeping).
pub async fn clean_leftovers(root: &Path) -> std::io::Result<usize> {
    std::fs::create_dir_all(root)?;
    let mut n = 0;
    for e in std::fs::read_dir(root)?.flatten() {
        if e.file_name().to_string_lossy().starts_with(PREFIX) && e.path().is_dir() {
            tracing::warn!(dir = %e.path().display(), "removing a drill's leftover scratch directory");
            remove(&e.path()).await;
            n += 1;
        }
    }
    Ok(n)
}

/// The drill directory's lock, held for the agent's life: a second agent on the same
/// directory (an overlapping restart, a copy-pasted unit) would kill the first one's
/// standalone and delete its scratch at start.
pub fn lock(root: &Path) -> std::io::Result<nix::fcntl::Flock<std::fs::File>> {
    use nix::fcntl::{Flock, FlockArg};
    std::fs::create_dir_all(root)?;
    let path = root.join(".tidemark-drill.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        std::io::Error::new(
            std::io::ErrorKind::WouldBlock,
            format!(
                "{} is locked by another drill agent ({e}); one drill agent per drill directory",
                path.display()
            ),
        )
    })
}
