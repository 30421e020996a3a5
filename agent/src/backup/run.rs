//! Runs a backup op on this node: refuse non-PSMDB nodes, open `$backupCursor`, copy or
//! hand over the files, extend to the cluster-wide point, close, then write the manifest.
//! Data first, manifest last: a backup without its manifest is never trusted.

use chrono::Utc;
use serde_json::json;
use tidemark_schema::control::Phase;
use tidemark_schema::control::{Op, OpCommand};
use tidemark_schema::model::BackupType;

use super::{copy, external, increment, manifest};
use crate::error::AgentError;
use crate::mongod::{BackupCursor, CursorFile};
use crate::node::{Details, InPhase, Node, PhaseFailure, j};
use crate::storage::BackupStore;

pub async fn run(node: &Node, op: &Op) -> Result<(String, Details), PhaseFailure> {
    let OpCommand::Backup {
        backup,
        storage,
        backup_type,
        extend_to,
        snapshot_command,
        hash_namespaces,
        barrier,
        incremental,
    } = &op.command
    else {
        unreachable!("dispatched on the command kind");
    };
    let client = node.mongod().await.in_phase(Phase::Cursor)?;
    let facts = client.facts().await.in_phase(Phase::Cursor)?;
    if !facts.backup_cursor {
        return Err(AgentError::Refused(format!(
            "mongod {} is {} {}: it has no $backupCursor, so it cannot take a physical \
             backup (that needs Percona Server for MongoDB); nothing was copied",
            node.id, facts.flavor, facts.version
        )))
        .in_phase(Phase::Cursor);
    }
    let cmdline = client.cmd_line_opts().await.in_phase(Phase::Cursor)?;
    let started_at = Utc::now();
    // Hashed before the cursor opens and again after it closes: a namespace equal at both
    // ends is exactly what this backup restores, whatever point in between it ends at.
    // Best effort: a hash a drill would like is never worth a failed backup.
    let hashes_before = if hash_namespaces.is_empty() {
        None
    } else {
        client
            .db_hashes(hash_namespaces)
            .await
            .inspect_err(|e| tracing::warn!(error = %e, "dbHash before the backup failed; no hash is recorded"))
            .ok()
    };
    node.running(op, Phase::Cursor, "opening $backupCursor")
        .await?;
    let (chain, options) = match incremental {
        Some(inc) => {
            let store = BackupStore::open(storage).in_phase(Phase::Cursor)?;
            let (chain, options) = increment::prepare(node, &client, &store, backup, inc).await?;
            (Some(chain), options)
        }
        None => (None, bson::Document::new()),
    };
    let cursor = BackupCursor::open_with(&client, node.cfg.cursor_keepalive, options)
        .await
        .map_err(|e| explain_cursor_error(e, chain.as_ref()))
        .in_phase(Phase::Cursor)?;
    let mut d = Details::new();
    d.insert("files".into(), json!(cursor.files.len()));
    d.insert("oplogEnd".into(), j(cursor.metadata.oplog_end));
    d.insert("dbpath".into(), json!(cursor.metadata.dbpath));
    // For the barrier: the reconciler passes the highest replica set's on to the others.
    if let Some(ct) = cursor.cluster_time().await {
        d.insert("clusterTime".into(), ct);
    }
    node.done(
        op,
        Phase::Cursor,
        format!("{} files listed", cursor.files.len()),
        d,
    )
    .await?;

    // Whatever happens next, the cursor is closed: an open one blocks checkpoints.
    let body = async {
        let store = BackupStore::open(storage).in_phase(Phase::Copy)?;
        let mut last_write = cursor.metadata.oplog_end.unwrap_or_default();
        let extended;
        // A snapshot must include the journal up to the extension point, so an external
        // backup extends before it hands the files over; a physical one extends after
        // copying, and copies the extra journal files.
        // The point to extend to: fixed in the op, or (with a barrier) the common point
        // the reconciler writes once every replica set's cursor is open.
        let extend = |files: Vec<CursorFile>| async {
            let (target, gossip) = match (extend_to, barrier) {
                (Some(t), _) => (*t, None),
                (None, true) => {
                    let t = common_point(node, op).await?;
                    (t.target, t.cluster_time)
                }
                (None, false) => return Ok::<_, PhaseFailure>((files, Vec::new(), None)),
            };
            node.running(
                op,
                Phase::Extend,
                format!("extending the cursor to {target}"),
            )
            .await?;
            let extra: Vec<CursorFile> = cursor
                .extend(target, gossip.as_ref())
                .await
                .in_phase(Phase::Extend)?;
            let mut d = Details::new();
            d.insert("extraFiles".into(), json!(extra.len()));
            node.done(op, Phase::Extend, format!("extended to {target}"), d)
                .await?;
            Ok((files, extra, Some(target)))
        };
        let entries = match backup_type {
            BackupType::Physical | BackupType::Incremental => {
                let chain = chain.as_ref();
                let mut entries =
                    copy::copy_files(node, op, &store, backup, &cursor.files, storage, chain)
                        .await?;
                let (_, extra, target) = extend(Vec::new()).await?;
                extended = target;
                if !extra.is_empty() {
                    let added =
                        copy::copy_files(node, op, &store, backup, &extra, storage, chain).await?;
                    // A journal file listed again by the extension replaces its shorter copy.
                    entries.retain(|e| !added.iter().any(|a| a.path == e.path));
                    entries.extend(added);
                }
                entries
            }
            BackupType::External => {
                let (mut files, extra, target) = extend(cursor.files.clone()).await?;
                extended = target;
                files.retain(|f| !extra.iter().any(|x| x.relative == f.relative));
                files.extend(extra);
                external::hand_over(
                    node,
                    op,
                    &cursor.metadata.dbpath,
                    &files,
                    snapshot_command.as_deref(),
                )
                .await?
            }
        };
        if let Some(target) = extended {
            last_write = last_write.max(target);
        }
        Ok::<_, PhaseFailure>((store, entries, last_write))
    }
    .await;
    let checkpoint = cursor.metadata.checkpoint_timestamp;
    let closed = cursor.close().await.in_phase(Phase::Close);
    let (store, mut entries, last_write) = body?;
    closed?;
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let (collection_hashes, unstable_hashes) = match hashes_before {
        None => (Default::default(), hash_namespaces.clone()),
        Some(before) => match client.db_hashes(hash_namespaces).await {
            Ok(after) => stable_hashes(before, after),
            Err(e) => {
                tracing::warn!(error = %e, "dbHash after the backup failed; no hash is recorded");
                (Default::default(), hash_namespaces.clone())
            }
        },
    };
    let mut m = manifest::build(manifest::Input {
        node,
        backup,
        backup_type: *backup_type,
        compression: storage.compression,
        started_at,
        facts: &facts,
        cmdline: &cmdline,
        checkpoint: checkpoint.unwrap_or(last_write),
        last_write,
        files: entries,
        incremental: chain.map(|c| c.link),
    });
    m.collection_hashes = collection_hashes;
    m.unstable_hashes = unstable_hashes;
    // After the cursor closed: sizes for a selective restore's plan, never a reason to
    // fail a backup.
    m.collections = client.collection_sizes().await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "collection sizes not recorded");
        Default::default()
    });
    // Cancelled (or decided without this node) since the copy: no manifest, ever.
    node.still_wanted(op, Phase::Close).await?;
    // The data must be durable before the manifest that vouches for it exists.
    store.flush().await.in_phase(Phase::Manifest)?;
    manifest::write(&store, &m)
        .await
        .in_phase(Phase::Manifest)?;
    store.flush().await.in_phase(Phase::Manifest)?;
    let mut d = Details::new();
    d.insert("files".into(), json!(m.files.len()));
    d.insert("uncompressedBytes".into(), json!(m.uncompressed_bytes));
    d.insert("storedBytes".into(), json!(m.stored_bytes));
    d.insert("lastWrite".into(), j(m.last_write));
    Ok((
        format!(
            "backup {backup} of {} complete: {} files, {} B ({} B stored), restores to {}",
            node.replica_set,
            m.files.len(),
            m.uncompressed_bytes,
            m.stored_bytes,
            m.last_write
        ),
        d,
    ))
}

/// A cursor refused for an increment: mongod's own words (`2: No such file or directory`
/// when the source is unknown to this node) say little, so the reason is added.
fn explain_cursor_error(
    e: crate::mongod::MongodError,
    chain: Option<&increment::Chain>,
) -> AgentError {
    match chain.and_then(|c| c.link.source.as_deref()) {
        Some(source) => AgentError::Refused(format!(
            "{e}: this node's block tracking does not know backup {source} any more (mongod \
             was restored, resynced, or its history moved on); the next backup of the chain \
             is a new base"
        )),
        None => e.into(),
    }
}

/// Waits for the backup's common point (`extend.json`), written once every replica set's
/// cursor is open.
async fn common_point(
    node: &Node,
    op: &tidemark_schema::control::Op,
) -> Result<tidemark_schema::control::ExtendTarget, PhaseFailure> {
    let key = tidemark_schema::control::extend_key(&op.id);
    node.running(
        op,
        Phase::Extend,
        "waiting for the cluster time every replica set extends to",
    )
    .await?;
    let value = node
        .wait_for_value(op, &key, "the common cluster time")
        .await
        .in_phase(Phase::Extend)?;
    serde_json::from_value(value)
        .map_err(|e| crate::error::AgentError::Refused(format!("{key}: {e}")))
        .in_phase(Phase::Extend)
}

/// The hashes equal before and after, and the namespaces whose hash changed (or that
/// appeared or went away) while the backup ran.
fn stable_hashes(
    before: std::collections::BTreeMap<String, String>,
    after: std::collections::BTreeMap<String, String>,
) -> (std::collections::BTreeMap<String, String>, Vec<String>) {
    let mut stable = std::collections::BTreeMap::new();
    let mut unstable = Vec::new();
    for (ns, hash) in &before {
        if after.get(ns) == Some(hash) {
            stable.insert(ns.clone(), hash.clone());
        } else {
            unstable.push(ns.clone());
        }
    }
    unstable.extend(after.keys().filter(|ns| !before.contains_key(*ns)).cloned());
    if !unstable.is_empty() {
        tracing::warn!(
            ?unstable,
            "collections changed while the backup ran: their dbHash is not recorded"
        );
    }
    (stable, unstable)
}

#[cfg(test)]
mod tests {
    use super::stable_hashes;

    #[test]
    fn only_hashes_equal_at_both_ends_are_recorded() {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let (stable, unstable) = stable_hashes(
            map(&[("a.x", "1"), ("a.y", "2"), ("a.gone", "3")]),
            map(&[("a.x", "1"), ("a.y", "9"), ("a.new", "4")]),
        );
        assert_eq!(stable, map(&[("a.x", "1")]));
        assert_eq!(unstable, ["a.gone", "a.y", "a.new"]);
    }
}
