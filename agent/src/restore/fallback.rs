//! The fallback directory: the dbPath's content moved aside (renamed, same file system,
//! no copy) before a restore, so a failed restore can put the node back exactly as it was.
//!
//! It lives inside the dbPath, which guarantees the same file system even when the dbPath
//! is a mount point. A state file inside it records whether the move finished, so a
//! revert after a crash mid-move never deletes an original that was not moved yet.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The fallback directory's name inside the dbPath.
pub const FALLBACK_DIR: &str = ".tidemark-fallback";
const STATE_FILE: &str = ".tidemark-fallback-state.json";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FallbackState {
    /// The move started; some entries may still be in the dbPath.
    Moving,
    /// Every entry is in the fallback directory; the dbPath may hold restored files.
    Moved,
    /// A revert wiped the restored files and is moving the originals back: whatever is in
    /// the dbPath now is original, so a retried revert must not wipe again.
    Reverting,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StateRecord {
    op_id: String,
    state: FallbackState,
}

#[derive(Debug, thiserror::Error)]
pub enum FallbackError {
    #[error("fallback {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("fallback directory {0} already exists from op {1}; resolve that restore first")]
    Busy(PathBuf, String),
    #[error("fallback state {path} cannot be read ({why}); refusing to guess what it holds")]
    Unreadable { path: PathBuf, why: String },
    #[error(
        "the fallback directory {path} of op {op} is {state:?}: removing it now could lose the node's only copy"
    )]
    InTransit {
        path: PathBuf,
        op: String,
        state: FallbackState,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FallbackError + '_ {
    move |source| FallbackError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub fn fallback_dir(dbpath: &Path) -> PathBuf {
    dbpath.join(FALLBACK_DIR)
}

fn write_state(dir: &Path, op_id: &str, state: FallbackState) -> Result<(), FallbackError> {
    let path = dir.join(STATE_FILE);
    let tmp = dir.join(".tidemark-fallback-state.tmp");
    let record = StateRecord {
        op_id: op_id.to_string(),
        state,
    };
    // The state decides what a revert may delete, so it must survive a power loss before
    // anything it describes happens: write, fsync, rename, fsync the directory.
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    std::io::Write::write_all(&mut f, &serde_json::to_vec(&record).expect("serializable"))
        .and_then(|_| f.sync_all())
        .map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    fsync_dir(dir)
}

/// The state record; `None` when there is none. A record that exists but does not parse
/// is an error: "no fallback" would let a caller delete or overwrite the only copy.
fn read_state(dir: &Path) -> Result<Option<StateRecord>, FallbackError> {
    let path = dir.join(STATE_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        // No state file: no fallback, or one created by a process that died before its
        // first state write, so nothing was moved into it yet.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(FallbackError::Unreadable {
                path,
                why: e.to_string(),
            });
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| FallbackError::Unreadable {
            path,
            why: e.to_string(),
        })
}

/// The op and state of an existing fallback directory.
pub fn fallback_of(dbpath: &Path) -> Result<Option<(String, FallbackState)>, FallbackError> {
    Ok(read_state(&fallback_dir(dbpath))?.map(|r| (r.op_id, r.state)))
}

/// The dbPath's entries other than the fallback directory.
fn entries(dbpath: &Path) -> Result<Vec<PathBuf>, FallbackError> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dbpath).map_err(io(dbpath))? {
        let e = e.map_err(io(dbpath))?;
        if e.file_name() != FALLBACK_DIR {
            out.push(e.path());
        }
    }
    out.sort();
    Ok(out)
}

fn fsync_dir(dir: &Path) -> Result<(), FallbackError> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io(dir))
}

/// Moves every entry of the dbPath into the fallback directory. O(entries) renames.
pub fn move_aside(dbpath: &Path, op_id: &str) -> Result<usize, FallbackError> {
    let dir = fallback_dir(dbpath);
    if let Some(existing) = read_state(&dir)? {
        if existing.op_id == op_id && existing.state == FallbackState::Moved {
            return Ok(0); // already done: the step is idempotent
        }
        if existing.op_id != op_id {
            return Err(FallbackError::Busy(dir, existing.op_id));
        }
    }
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    // The new directory's entry must be durable before anything is moved into it.
    fsync_dir(dbpath)?;
    write_state(&dir, op_id, FallbackState::Moving)?;
    let moved = entries(dbpath)?;
    for entry in &moved {
        let target = dir.join(entry.file_name().expect("a directory entry has a name"));
        std::fs::rename(entry, &target).map_err(io(entry))?;
    }
    fsync_dir(&dir)?;
    fsync_dir(dbpath)?;
    write_state(&dir, op_id, FallbackState::Moved)?;
    Ok(moved.len())
}

/// Puts the dbPath back exactly as it was before `op_id`'s restore, and removes the
/// fallback directory.
pub fn revert(dbpath: &Path, op_id: &str) -> Result<usize, FallbackError> {
    let dir = fallback_dir(dbpath);
    let Some(record) = read_state(&dir)? else {
        // No state: either nothing was ever moved (the agent died before the state's first
        // write), or this revert already finished and removed the directory before its
        // report was written. Either way the dbPath holds its data as before the restore.
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&dir)(e)),
            _ => return Ok(0),
        }
    };
    if record.op_id != op_id {
        return Err(FallbackError::Busy(dir, record.op_id));
    }
    if record.state == FallbackState::Moved {
        // Everything in the dbPath now came from the restore.
        remove_entries(dbpath)?;
        fsync_dir(dbpath)?;
        write_state(&dir, op_id, FallbackState::Reverting)?;
    }
    let mut restored = 0;
    for e in std::fs::read_dir(&dir).map_err(io(&dir))? {
        let e = e.map_err(io(&dir))?;
        let name = e.file_name();
        if name == STATE_FILE {
            continue;
        }
        std::fs::rename(e.path(), dbpath.join(&name)).map_err(io(&e.path()))?;
        restored += 1;
    }
    fsync_dir(dbpath)?;
    std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
    Ok(restored)
}

/// Deletes every entry of the dbPath except the fallback directory.
pub fn remove_entries(dbpath: &Path) -> Result<usize, FallbackError> {
    let list = entries(dbpath)?;
    for entry in &list {
        let meta = std::fs::symlink_metadata(entry).map_err(io(entry))?;
        if meta.is_dir() {
            std::fs::remove_dir_all(entry).map_err(io(entry))?;
        } else {
            std::fs::remove_file(entry).map_err(io(entry))?;
        }
    }
    // Make the removals durable: a wiped node that crashes must not come back half-full.
    fsync_dir(dbpath)?;
    Ok(list.len())
}

/// Deletes the fallback directory of `op_id` once the restore's outcome is final. A
/// fallback of another restore is never touched; a missing one is already removed.
pub fn remove(dbpath: &Path, op_id: &str) -> Result<(), FallbackError> {
    let dir = fallback_dir(dbpath);
    if let Some(record) = read_state(&dir)? {
        if record.op_id != op_id {
            return Err(FallbackError::Busy(dir, record.op_id));
        }
        // `Moving` is accepted: this is only sent once the outcome is final, for a node
        // that was restored or wiped, so whatever half-move is in there is not needed.
        if record.state == FallbackState::Reverting {
            return Err(FallbackError::InTransit {
                path: dir,
                op: record.op_id,
                state: record.state,
            });
        }
    }
    if !dir.exists() {
        return Ok(());
    }
    // The data first and the state file last: a removal cut short keeps its state, so it
    // is finished by the next try, and a later restore never mistakes the leftovers for
    // an empty fallback directory.
    for e in std::fs::read_dir(&dir).map_err(io(&dir))? {
        let p = e.map_err(io(&dir))?.path();
        if p.file_name().is_some_and(|n| n == STATE_FILE) {
            continue;
        }
        let meta = std::fs::symlink_metadata(&p).map_err(io(&p))?;
        if meta.is_dir() {
            std::fs::remove_dir_all(&p).map_err(io(&p))?;
        } else {
            std::fs::remove_file(&p).map_err(io(&p))?;
        }
    }
    fsync_dir(&dir)?;
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&dir)(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(root: &Path) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(root, &p, out);
                } else {
                    let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                    out.push((rel, std::fs::read(&p).unwrap()));
                }
            }
        }
        walk(root, root, &mut out);
        out.sort();
        out
    }

    #[test]
    fn move_then_revert_gives_back_the_exact_tree() {
        let d = tempfile::TempDir::new().unwrap();
        std::fs::create_dir_all(d.path().join("journal")).unwrap();
        std::fs::write(d.path().join("journal/WiredTigerLog.1"), b"j").unwrap();
        std::fs::write(d.path().join("collection-1.wt"), b"data").unwrap();
        let before = tree(d.path());
        assert_eq!(move_aside(d.path(), "op1").unwrap(), 2);
        assert_eq!(move_aside(d.path(), "op1").unwrap(), 0, "idempotent");
        assert!(matches!(
            move_aside(d.path(), "op2"),
            Err(FallbackError::Busy(..))
        ));
        // The restore writes new files.
        std::fs::write(d.path().join("collection-1.wt"), b"restored").unwrap();
        std::fs::write(d.path().join("new.wt"), b"x").unwrap();
        assert_eq!(revert(d.path(), "op1").unwrap(), 2);
        assert_eq!(tree(d.path()), before);
        assert!(!fallback_dir(d.path()).exists());
    }

    #[test]
    fn a_retried_revert_never_deletes_the_originals() {
        let d = tempfile::TempDir::new().unwrap();
        std::fs::write(d.path().join("a.wt"), b"a").unwrap();
        std::fs::write(d.path().join("b.wt"), b"b").unwrap();
        let before = tree(d.path());
        move_aside(d.path(), "op1").unwrap();
        std::fs::write(d.path().join("a.wt"), b"restored").unwrap();
        // A revert that stopped after moving one original back.
        let dir = fallback_dir(d.path());
        remove_entries(d.path()).unwrap();
        write_state(&dir, "op1", FallbackState::Reverting).unwrap();
        std::fs::rename(dir.join("a.wt"), d.path().join("a.wt")).unwrap();
        revert(d.path(), "op1").unwrap();
        assert_eq!(tree(d.path()), before);
    }

    #[test]
    fn remove_leaves_another_restores_fallback_alone() {
        let d = tempfile::TempDir::new().unwrap();
        std::fs::write(d.path().join("a.wt"), b"a").unwrap();
        move_aside(d.path(), "op1").unwrap();
        assert!(matches!(
            remove(d.path(), "op0"),
            Err(FallbackError::Busy(..))
        ));
        assert!(fallback_dir(d.path()).join("a.wt").exists());
        remove(d.path(), "op1").unwrap();
        remove(d.path(), "op1").unwrap();
        assert!(!fallback_dir(d.path()).exists());
    }

    #[test]
    fn revert_after_a_crash_mid_move_deletes_nothing_original() {
        let d = tempfile::TempDir::new().unwrap();
        std::fs::write(d.path().join("a.wt"), b"a").unwrap();
        std::fs::write(d.path().join("b.wt"), b"b").unwrap();
        let before = tree(d.path());
        // Simulate a crash after moving only a.wt.
        let dir = fallback_dir(d.path());
        std::fs::create_dir_all(&dir).unwrap();
        write_state(&dir, "op1", FallbackState::Moving).unwrap();
        std::fs::rename(d.path().join("a.wt"), dir.join("a.wt")).unwrap();
        revert(d.path(), "op1").unwrap();
        assert_eq!(tree(d.path()), before);
    }

    #[test]
    fn a_revert_that_finished_before_its_report_succeeds_again() {
        let d = tempfile::TempDir::new().unwrap();
        std::fs::write(d.path().join("a.wt"), b"a").unwrap();
        let before = tree(d.path());
        move_aside(d.path(), "op1").unwrap();
        std::fs::write(d.path().join("a.wt"), b"restored").unwrap();
        revert(d.path(), "op1").unwrap();
        // The agent died before reporting; the reconciler's step runs it again.
        assert_eq!(revert(d.path(), "op1").unwrap(), 0);
        assert_eq!(tree(d.path()), before);
        // Another restore's fallback is still never taken for ours.
        move_aside(d.path(), "op2").unwrap();
        assert!(matches!(
            revert(d.path(), "op1"),
            Err(FallbackError::Busy(..))
        ));
    }

    #[test]
    fn a_removal_cut_short_keeps_its_state_and_finishes_on_the_next_try() {
        let d = tempfile::TempDir::new().unwrap();
        std::fs::write(d.path().join("a.wt"), b"a").unwrap();
        std::fs::write(d.path().join("b.wt"), b"b").unwrap();
        move_aside(d.path(), "op1").unwrap();
        // A removal that deleted one file, then died: the state is still there.
        std::fs::remove_file(fallback_dir(d.path()).join("a.wt")).unwrap();
        assert!(matches!(
            move_aside(d.path(), "op2"),
            Err(FallbackError::Busy(..))
        ));
        remove(d.path(), "op1").unwrap();
        assert!(!fallback_dir(d.path()).exists());
    }

    #[test]
    fn a_half_moved_fallback_is_removed_after_the_outcome_but_a_reverting_one_is_not() {
        let d = tempfile::TempDir::new().unwrap();
        let dir = fallback_dir(d.path());
        std::fs::create_dir_all(&dir).unwrap();
        write_state(&dir, "op1", FallbackState::Moving).unwrap();
        remove(d.path(), "op1").unwrap();
        assert!(!dir.exists());
        std::fs::create_dir_all(&dir).unwrap();
        write_state(&dir, "op1", FallbackState::Reverting).unwrap();
        assert!(matches!(
            remove(d.path(), "op1"),
            Err(FallbackError::InTransit { .. })
        ));
    }
}
