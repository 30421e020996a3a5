//! External (snapshot) backups: the cursor pins the files, the operator's tooling copies
//! them. The agent publishes the file list, reports `copyReady`, then waits for
//! `tidemark backup-finish` — or runs the op's snapshot command itself.

use std::path::Path;
use tidemark_schema::control::Phase;

use serde_json::json;
use tidemark_schema::control::{Op, finish_key};
use tidemark_schema::manifest::FileEntry;

use crate::error::AgentError;
use crate::mongod::CursorFile;
use crate::node::{Details, InPhase, Node, PhaseFailure};

/// Manifest entries for files that are copied by someone else: no object, no checksum.
pub fn entries(files: &[CursorFile]) -> Result<Vec<FileEntry>, AgentError> {
    use std::os::unix::fs::PermissionsExt;
    files
        .iter()
        .map(|f| {
            let meta = std::fs::metadata(&f.path).map_err(|e| AgentError::io(&f.path, e))?;
            let size = f.size.unwrap_or(meta.len());
            Ok(FileEntry {
                path: f.relative.clone(),
                size,
                stored_size: 0,
                uncompressed_size: size,
                checksum: String::new(),
                mode: meta.permissions().mode() & 0o7777,
                object: None,
                ranges: Vec::new(),
                blocks: Vec::new(),
            })
        })
        .collect()
}

pub async fn hand_over(
    node: &Node,
    op: &Op,
    dbpath: &Path,
    files: &[CursorFile],
    snapshot_command: Option<&[String]>,
) -> Result<Vec<FileEntry>, PhaseFailure> {
    let list = entries(files).in_phase(Phase::CopyReady)?;
    let mut d = Details::new();
    d.insert("dbpath".into(), json!(dbpath));
    d.insert(
        "files".into(),
        json!(
            list.iter()
                .map(|e| json!({"path": e.path, "size": e.size}))
                .collect::<Vec<_>>()
        ),
    );
    let how = if snapshot_command.is_some() {
        "the agent runs the snapshot command"
    } else {
        "copy or snapshot the files, then run `tidemark backup-finish` with this op id"
    };
    node.done(
        op,
        Phase::CopyReady,
        format!("{} files are ready to copy; {how}", list.len()),
        d,
    )
    .await?;
    match snapshot_command {
        Some(argv) => run_snapshot(node, op, dbpath, files, argv)
            .await
            .in_phase(Phase::Snapshot)?,
        None => node
            .wait_for(op, &finish_key(&op.id), "backup-finish")
            .await
            .in_phase(Phase::CopyReady)?,
    }
    Ok(list)
}

async fn run_snapshot(
    node: &Node,
    op: &Op,
    dbpath: &Path,
    files: &[CursorFile],
    argv: &[String],
) -> Result<(), AgentError> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| AgentError::Refused("the snapshot command is empty".into()))?;
    let list_path = std::env::temp_dir().join(format!("tidemark-{}-files.txt", op.id));
    let listing: String = files
        .iter()
        .map(|f| format!("{}\n", f.path.display()))
        .collect();
    std::fs::write(&list_path, listing).map_err(|e| AgentError::io(&list_path, e))?;
    node.running(op, Phase::Snapshot, format!("running {program}"))
        .await
        .ok();
    let status = tokio::process::Command::new(program)
        .args(args)
        .env("TIDEMARK_DBPATH", dbpath)
        .env("TIDEMARK_FILE_LIST", &list_path)
        .env("TIDEMARK_OP_ID", &op.id)
        .status()
        .await
        .map_err(|e| AgentError::Refused(format!("cannot run snapshot command {program}: {e}")));
    let _ = std::fs::remove_file(&list_path);
    let status = status?;
    if !status.success() {
        return Err(AgentError::Refused(format!(
            "snapshot command {program} failed ({status}); the backup is not complete"
        )));
    }
    Ok(())
}
