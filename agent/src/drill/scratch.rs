//! The drill's scratch space: `<drill-dir>/tidemark-drill-<op>/<replica set>/`. Only
//! entries named `tidemark-drill-*` are ever removed, so a `--drill-dir` shared with
//! other files loses nothing else.

use std::path::{Path, PathBuf};

use tidemark_schema::manifest::ReplicaSetManifest;

use crate::error::AgentError;
use crate::node::Node;
use crate::restore::Captured;
use crate::restore::recover::{replay_oplog, reset_replication};

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

/// A node on a scratch dbPath (created here), for the download and the standalone starts;
/// it reports as the agent itself.
pub fn scratch_node(node: &Node, dbpath: &Path) -> Result<Node, AgentError> {
    std::fs::create_dir_all(dbpath).map_err(|e| AgentError::io(dbpath, e))?;
    Ok(Node {
        cfg: crate::config::AgentConfig {
            dbpath: dbpath.to_path_buf(),
            ..node.cfg.clone()
        },
        control: node.control.clone(),
        cluster: node.cluster.clone(),
        replica_set: node.replica_set.clone(),
        id: node.id.clone(),
        epochs: Default::default(),
        slicing: Default::default(),
        doorbell: Default::default(),
        working: Default::default(),
        trust: node.trust.clone(),
    })
}

/// What the standalone starts need to open the backup's files: the backup's own storage
/// options (its layout), never a cluster node's; the agent's `--standalone-arg`s add the
/// key source an encrypted backup needs.
pub fn captured_for(m: &ReplicaSetManifest) -> Captured {
    Captured {
        argv: Vec::new(),
        replset_config: serde_json::Value::Null,
        role: "scratch".into(),
        version: m.mongod_version.clone(),
        standalone_args: crate::mongod::encryption::layout_args(&m.storage_options),
        cluster_role: None,
    }
}

/// Recovers a downloaded backup on its scratch dbPath to the backup's point, with the
/// standalone starts a restore uses: replication metadata reset, oplog replayed.
pub async fn recover(scratch: &Node, m: &ReplicaSetManifest) -> Result<Captured, AgentError> {
    let captured = captured_for(m);
    let ts = bson::Timestamp {
        time: m.last_write.t,
        increment: m.last_write.i,
    };
    reset_replication(scratch, &captured, ts).await?;
    replay_oplog(scratch, &captured).await?;
    Ok(captured)
}
