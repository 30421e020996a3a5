//! Runs a selective restore op on a drill agent, as a checklist: check the backup and the
//! targets, download the backup's replica set into a scratch dbPath, recover it as a
//! standalone, select the collections, copy them into staging collections of the running
//! cluster (or merge them), rename the copies onto their targets, and remove the scratch
//! directory whatever happened. A copy that stops partway drops its staging collections,
//! so every target is either as it was or named in the error with its state.

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::json;
use tidemark_schema::control::{
    NamespaceOutcome, Op, OpCommand, Phase, PhaseStatus, SelectiveOutcome, TargetState,
};
use tidemark_schema::model::{NsPattern, OnExisting, target_namespace};

use super::copy::{self, Progress};
use super::live::{Live, NAMESPACE_EXISTS, Ns, PlannedSwap, staging, target_dbs};
use super::plan::{self, Mode, NsCopy};
use crate::drill::{scratch, select};
use crate::error::AgentError;
use crate::mongod::MongodClient;
use crate::node::{Details, InPhase, Node, PhaseFailure};
use crate::restore::fetch::fetch;
use crate::restore::recover::with_standalone;

/// The op's declared settings, borrowed.
struct Want<'a> {
    backup: &'a str,
    namespaces: &'a [String],
    rename_to: &'a BTreeMap<String, String>,
    on_existing: OnExisting,
}

pub async fn run(node: &Node, op: &Op) -> Result<(String, Details), PhaseFailure> {
    let OpCommand::SelectiveRestore {
        restore,
        backup,
        storage,
        replica_set,
        namespaces,
        rename_to,
        on_existing,
        target,
    } = &op.command
    else {
        unreachable!("dispatched on the command kind");
    };
    let want = Want {
        backup,
        namespaces,
        rename_to,
        on_existing: *on_existing,
    };
    let Some(root) = node.cfg.drill_dir.clone() else {
        return Err(AgentError::Refused(
            "this agent serves a mongod node; selective restores run on a drill agent (one \
             with --drill-dir); nothing was done"
                .into(),
        ))
        .in_phase(Phase::Precheck);
    };
    let began = Instant::now();
    let dir = scratch::op_dir(&root, &op.id);
    let result = async {
        node.running(
            op,
            Phase::Precheck,
            format!("checking backup {backup} and the targets"),
        )
        .await?;
        let selected = select::select(backup, storage, std::slice::from_ref(replica_set), &root)
            .await
            .in_phase(Phase::Precheck)?;
        let live = Live::connect(target).await.in_phase(Phase::Precheck)?;
        refuse_existing_early(&live, &want)
            .await
            .in_phase(Phase::Precheck)?;
        node.done(
            op,
            Phase::Precheck,
            "backup and targets checked",
            Details::new(),
        )
        .await?;
        let m = &selected.manifests[0];
        let scratch_node =
            scratch::scratch_node(node, &dir.join(&m.replica_set)).in_phase(Phase::Fetch)?;
        fetch(&scratch_node, op, &selected.store, &selected.chains[0]).await?;
        ended_here(node, op, Phase::Fetch).await?;
        node.running(
            op,
            Phase::Recover,
            format!("recovering to {} as a standalone", m.last_write),
        )
        .await?;
        let captured = scratch::recover(&scratch_node, m)
            .await
            .in_phase(Phase::Recover)?;
        ended_here(node, op, Phase::Recover).await?;
        // The copy's own result stands even when stopping the standalone afterwards
        // fails: by then targets may have been put in place, and the result names them
        // (the scratch removal below stops a standalone left running).
        let copied = std::sync::Mutex::new(None);
        let stopped = with_standalone(&scratch_node, &captured, &[], |c| {
            let (live, want, copied) = (&live, &want, &copied);
            async move {
                let result = copy_into(node, op, live, &c, want).await;
                *copied.lock().expect("not poisoned") = Some(result);
                Ok(())
            }
        })
        .await;
        match (copied.into_inner().expect("not poisoned"), stopped) {
            (Some(result), Err(e)) => {
                tracing::warn!(error = %e, "the restored standalone did not stop cleanly");
                result
            }
            (Some(result), Ok(())) => result,
            (None, Err(e)) => Err(e).in_phase(Phase::Import),
            (None, Ok(())) => unreachable!("the work ran"),
        }
    }
    .await;
    scratch::remove(&dir).await;
    let outcome = SelectiveOutcome {
        backup: backup.clone(),
        agent: node.id.clone(),
        namespaces: result?,
        elapsed_seconds: began.elapsed().as_secs_f64(),
    };
    let message = format!(
        "restore {restore}: {} from backup {backup} in {:.1} s",
        outcome
            .namespaces
            .iter()
            .map(|n| format!(
                "{} → {} {} ({} documents)",
                n.source,
                n.target,
                n.target_state.as_str(),
                n.documents
            ))
            .collect::<Vec<_>>()
            .join(", "),
        outcome.elapsed_seconds
    );
    let mut d = Details::new();
    d.insert("selective".into(), json!(outcome));
    Ok((message, d))
}

/// Between phases: stops, as ended by its author, once a cancel or a decision taken
/// without this agent exists (a control plane that does not answer is no reason).
async fn ended_here(node: &Node, op: &Op, reached: Phase) -> Result<(), PhaseFailure> {
    match node.author_ended(op).await {
        Ok(Some(why)) => Err(AgentError::EndedByAuthor(format!(
            "{why}; stopped after phase {reached}"
        )))
        .in_phase(reached),
        Ok(None) => Ok(()),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read whether the op was cancelled");
            Ok(())
        }
    }
}

/// Before anything is downloaded: the running set answers (its target databases are
/// listed, whatever `onExisting` says: an unreachable set must not cost a download), and
/// with `refuse`, exactly named targets that exist are refused (patterns `db.*` are
/// checked again once the backup's collections are known).
async fn refuse_existing_early(live: &Live, want: &Want<'_>) -> Result<(), AgentError> {
    let mut dbs: Vec<String> = want
        .namespaces
        .iter()
        .filter_map(|ns| Ns::parse(&target_namespace(ns, Some(want.rename_to))))
        .map(|ns| ns.db)
        .collect();
    dbs.sort();
    dbs.dedup();
    for db in &dbs {
        live.collections(db).await?;
    }
    if want.on_existing != OnExisting::Refuse {
        return Ok(());
    }
    let mut copies: Vec<NsCopy> = want
        .namespaces
        .iter()
        .filter(|ns| NsPattern::parse(ns).is_some_and(|p| p.collection.is_some()))
        .filter_map(|ns| {
            Some(NsCopy {
                source: Ns::parse(ns)?,
                target: Ns::parse(&target_namespace(ns, Some(want.rename_to)))?,
                options: Default::default(),
                indexes: Vec::new(),
                documents: 0,
                mode: Mode::Staged { replace: false },
            })
        })
        .collect();
    plan::decide(live, &mut copies, OnExisting::Refuse).await
}

/// Select, check, import and swap, against the restored standalone. On a failure the
/// staging collections are dropped and the error names every target's state.
async fn copy_into(
    node: &Node,
    op: &Op,
    live: &Live,
    standalone: &MongodClient,
    want: &Want<'_>,
) -> Result<Vec<NamespaceOutcome>, PhaseFailure> {
    if let Some(why) = node.author_ended(op).await.in_phase(Phase::Check)? {
        return Err(AgentError::EndedByAuthor(why)).in_phase(Phase::Check);
    }
    node.running(op, Phase::Check, "selecting the collections")
        .await?;
    let plan::Selection {
        mut copies,
        skipped,
    } = plan::select(standalone, want.backup, want.namespaces, want.rename_to)
        .await
        .in_phase(Phase::Check)?;
    plan::decide(live, &mut copies, want.on_existing)
        .await
        .in_phase(Phase::Check)?;
    let mut d = Details::new();
    d.insert(
        "namespaces".into(),
        json!(copies.iter().map(|c| json!({"source": c.source.to_string(), "target": c.target.to_string(), "documents": c.documents, "indexes": c.indexes.len()})).collect::<Vec<_>>()),
    );
    d.insert("skipped".into(), json!(skipped));
    let passed_over = if skipped.is_empty() {
        String::new()
    } else {
        format!("; passed over: {}", skipped.join(", "))
    };
    node.done(
        op,
        Phase::Check,
        format!("{} collection(s) selected{passed_over}", copies.len()),
        d,
    )
    .await?;
    let mut outcomes: Vec<NamespaceOutcome> = copies
        .iter()
        .map(|c| NamespaceOutcome {
            source: c.source.to_string(),
            target: c.target.to_string(),
            documents: 0,
            indexes: 0,
            target_state: TargetState::Untouched,
        })
        .collect();
    let done = import_and_swap(node, op, live, standalone, &copies, &mut outcomes).await;
    match done {
        Ok(()) => Ok(outcomes),
        Err(failure) => Err(stopped(live, op, failure, &outcomes).await),
    }
}

async fn import_and_swap(
    node: &Node,
    op: &Op,
    live: &Live,
    standalone: &MongodClient,
    copies: &[NsCopy],
    outcomes: &mut [NamespaceOutcome],
) -> Result<(), PhaseFailure> {
    let total = copies.iter().map(|c| c.documents).sum();
    let mut progress = Progress::new(node, op, total);
    // Each staging collection's UUID, which its target takes in the rename.
    let mut uuids: Vec<Option<String>> = vec![None; copies.len()];
    // Staged copies first, merges after: a merge is the only write a stop cannot undo.
    let order = copies
        .iter()
        .enumerate()
        .filter(|(_, c)| c.mode != Mode::Merge)
        .chain(
            copies
                .iter()
                .enumerate()
                .filter(|(_, c)| c.mode == Mode::Merge),
        );
    for (i, c) in order {
        progress.check_ended(true).await.in_phase(Phase::Import)?;
        let dest = match c.mode {
            Mode::Merge => {
                progress.merging.push(c.target.to_string());
                // Written before the first upsert, or not begun: an agent restarted later
                // must be able to say this target may be partly merged.
                let mut d = Details::new();
                d.insert("merging".into(), json!(progress.merging));
                node.report(
                    op,
                    Phase::Import,
                    PhaseStatus::Running,
                    format!("merging {} into {}", c.source, c.target),
                    d,
                )
                .await
                .in_phase(Phase::Import)?;
                outcomes[i].target_state = TargetState::PartlyMerged;
                c.target.clone()
            }
            Mode::Staged { .. } => {
                let dest = staging(&op.id, &c.target);
                copy::create_like(live, c, &dest)
                    .await
                    .in_phase(Phase::Import)?;
                uuids[i] = live.uuid(&dest).await.in_phase(Phase::Import)?;
                outcomes[i].indexes = c.indexes.len();
                dest
            }
        };
        progress.advance(c, 0, 0, true).await;
        let upsert = c.mode == Mode::Merge;
        outcomes[i].documents = copy::documents(standalone, live, c, &dest, upsert, &mut progress)
            .await
            .in_phase(Phase::Import)?;
        if upsert {
            outcomes[i].target_state = TargetState::Merged;
        }
    }
    let mut d = Details::new();
    d.insert("merging".into(), json!(progress.merging));
    node.done(
        op,
        Phase::Import,
        format!("{} documents copied", progress.done),
        d,
    )
    .await?;
    swap(
        node,
        op,
        live,
        (copies, &uuids),
        outcomes,
        &progress.merging,
    )
    .await
}

/// Renames each staging collection onto its target. The planned renames, with each
/// staging collection's UUID, are reported before the first one (or none happens), so an
/// agent restarted meanwhile can tell from the cluster which targets were put in place.
async fn swap(
    node: &Node,
    op: &Op,
    live: &Live,
    (copies, uuids): (&[NsCopy], &[Option<String>]),
    outcomes: &mut [NamespaceOutcome],
    merging: &[String],
) -> Result<(), PhaseFailure> {
    let staged: Vec<(usize, &NsCopy, bool)> = copies
        .iter()
        .enumerate()
        .filter_map(|(i, c)| match c.mode {
            Mode::Staged { replace } => Some((i, c, replace)),
            Mode::Merge => None,
        })
        .collect();
    // A target created while the copy ran stops the restore before its first rename,
    // so that no target is put in place while another is not.
    for (_, c, replace) in &staged {
        if !replace && live.exists(&c.target).await.in_phase(Phase::Swap)? {
            return Err(AgentError::Refused(format!(
                "target {} was created in {} while the restore ran; it is not overwritten \
                 (only onExisting: replace does that) and no target was put in place",
                c.target, live.name
            )))
            .in_phase(Phase::Swap);
        }
    }
    let planned: Vec<PlannedSwap> = staged
        .iter()
        .map(|(i, c, _)| PlannedSwap {
            staging: staging(&op.id, &c.target).to_string(),
            target: c.target.to_string(),
            uuid: uuids[*i].clone().unwrap_or_default(),
        })
        .collect();
    let report = |swapped: &[String]| {
        let mut d = Details::new();
        d.insert("planned".into(), json!(planned));
        d.insert("swapped".into(), json!(swapped));
        d.insert("merging".into(), json!(merging));
        d
    };
    node.report(
        op,
        Phase::Swap,
        PhaseStatus::Running,
        format!("putting {} collection(s) in place", planned.len()),
        report(&[]),
    )
    .await
    .in_phase(Phase::Swap)?;
    let mut swapped: Vec<String> = Vec::new();
    for ((i, c, replace), p) in staged.into_iter().zip(&planned) {
        // A cancel, or a decision taken without us, stops before the next rename; a
        // control plane that does not answer does not stop the renames halfway.
        if let Ok(Some(why)) = node.author_ended(op).await {
            return Err(AgentError::EndedByAuthor(why)).in_phase(Phase::Swap);
        }
        let from = staging(&op.id, &c.target);
        // For the outcome: a replaced target, or one created by this rename.
        let existed = replace && live.exists(&c.target).await.unwrap_or(true);
        match live.rename(&from, &c.target, replace).await {
            Ok(()) => {}
            Err(e) if e.code == Some(NAMESPACE_EXISTS) => {
                return Err(AgentError::Refused(format!(
                    "target {} was created in {} just now; it was not overwritten",
                    c.target, live.name
                )))
                .in_phase(Phase::Swap);
            }
            // An answer lost to a failover: the target's UUID says whether it happened.
            Err(e) => match live.renamed_onto(&p.uuid, &c.target).await {
                Some(true) => {}
                Some(false) => return Err(AgentError::from(e)).in_phase(Phase::Swap),
                None => {
                    outcomes[i].target_state = TargetState::Unknown;
                    return Err(AgentError::from(e)).in_phase(Phase::Swap);
                }
            },
        }
        outcomes[i].target_state = if existed {
            TargetState::Replaced
        } else {
            TargetState::Created
        };
        swapped.push(c.target.to_string());
        let progress = node
            .report(
                op,
                Phase::Swap,
                PhaseStatus::Running,
                format!("{} in place", c.target),
                report(&swapped),
            )
            .await;
        if let Err(e) = progress {
            tracing::warn!(error = %e, "cannot write the swap's progress");
        }
    }
    node.done(
        op,
        Phase::Swap,
        format!("{} collection(s) in place", swapped.len()),
        report(&swapped),
    )
    .await
}

/// The failure of a copy that stopped partway: its staging collections dropped, and the
/// state of every target named.
async fn stopped(
    live: &Live,
    op: &Op,
    failure: PhaseFailure,
    outcomes: &[NamespaceOutcome],
) -> PhaseFailure {
    let cleanup = match live.drop_staging(&op.id, &target_dbs(op)).await {
        Ok(_) => "its staging collections were dropped".to_string(),
        Err(e) => format!(
            "its staging collections (named {}*) could not be dropped ({e}); drop them by hand",
            super::live::staging_prefix(&op.id)
        ),
    };
    let states = outcomes
        .iter()
        .map(|o| format!("{} {}", o.target, o.target_state.as_str()))
        .collect::<Vec<_>>()
        .join(", ");
    PhaseFailure {
        phase: failure.phase,
        error: AgentError::Stopped {
            error: Box::new(failure.error),
            state: format!("targets: {states}; {cleanup}"),
        },
    }
}
