//! The plan as text for people: one line per step with a symbol, then its reason.

use std::fmt::Write;

use super::model::{Action, DiskCheck, Plan, RestorePlan};

/// `1.5 GiB`, `312 B`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Like [`human_bytes`], for the signed fallback room (negative on an over-85 % disk).
pub fn human_signed(n: i128) -> String {
    let magnitude = human_bytes(n.unsigned_abs().min(u64::MAX as u128) as u64);
    if n < 0 {
        format!("-{magnitude}")
    } else {
        magnitude
    }
}

fn time(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map_or("never".to_string(), |t| {
        t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
    })
}

pub fn render_plan(plan: &Plan) -> String {
    let mut out = String::new();
    if plan.steps.is_empty() {
        out.push_str("No changes: the desired state and the observed state agree.\n");
        super::pitr_render::pitr_section(&mut out, plan);
        return out;
    }
    let changes = plan.steps.iter().filter(|s| s.action.is_change()).count();
    let _ = writeln!(
        out,
        "Plan: {changes} change(s), {} note(s)",
        plan.steps.len() - changes
    );
    for s in &plan.steps {
        let _ = writeln!(out, "\n{}", headline(&s.action));
        if let Action::StartRestore(r) = &s.action {
            restore_details(&mut out, r);
        }
        if let Action::StartSelectiveRestore(p) = &s.action {
            for n in &p.namespaces {
                let size = match (n.documents, n.bytes) {
                    (Some(d), Some(b)) => {
                        format!("{d} documents, {} in the backup", human_bytes(b))
                    }
                    _ => "size not recorded by this backup".to_string(),
                };
                let _ = writeln!(
                    out,
                    "    {} -> {} ({size}; an existing target: {})",
                    n.source, n.target, p.on_existing
                );
            }
        }
        if let Action::RunBackup {
            nodes, incremental, ..
        } = &s.action
        {
            if let Some(inc) = incremental {
                let _ = writeln!(
                    out,
                    "    {}; blocks of {} MB{}",
                    inc.why,
                    inc.link.block_size_mb,
                    inc.expected_bytes.map_or(String::new(), |b| format!(
                        "; about {} to copy",
                        human_bytes(b)
                    ))
                );
            }
            for n in nodes {
                let _ = writeln!(
                    out,
                    "    {}: {} ({})",
                    n.replica_set,
                    n.node.as_deref().unwrap_or("chosen at start"),
                    n.reason
                );
            }
        }
        let _ = writeln!(out, "    why: {}", s.reason);
    }
    super::pitr_render::pitr_section(&mut out, plan);
    // What retention keeps, and which rule keeps it: a delete above is only half the story.
    let kept: Vec<_> = plan.retention.iter().filter(|d| d.keep).collect();
    if !kept.is_empty() {
        let _ = writeln!(out, "\nRetention keeps {} backup(s):", kept.len());
        for d in kept {
            let _ = writeln!(
                out,
                "  = {} ({}): {}",
                d.backup,
                d.schedule,
                d.reasons.join("; ")
            );
        }
    }
    // A drill's last outcome: a failed one says the backup it tried is not proven.
    let ran: Vec<_> = plan
        .drills
        .iter()
        .filter_map(|d| Some((d, d.last_run.as_ref()?)))
        .collect();
    if !ran.is_empty() {
        let _ = writeln!(out, "\nLast drill runs:");
        for (d, r) in ran {
            let figures = r.outcome.as_ref().map_or(String::new(), |o| {
                format!(
                    " (backup {}, restored in {:.0} s, data {:.0} s old)",
                    o.backup, o.rto_seconds, o.rpo_seconds
                )
            });
            let _ = writeln!(
                out,
                "  {} {}: {}{figures}: {}",
                if r.status == tidemark_schema::control::RunStatus::Done {
                    "="
                } else {
                    "x"
                },
                d.drill,
                r.status,
                r.message
            );
        }
    }
    out
}

fn headline(action: &Action) -> String {
    match action {
        Action::CreateSchedule {
            schedule,
            backup_type,
            cron,
            timezone,
            next_run,
            next_backup_name,
            suspended,
            ..
        } => format!(
            "+ create schedule {schedule}: {backup_type} at {cron:?} {timezone}; {}{}",
            if *suspended {
                "suspended".to_string()
            } else {
                format!("next run {}", time(*next_run))
            },
            next_backup_name
                .as_ref()
                .map_or(String::new(), |n| format!(" as {n}"))
        ),
        Action::UpdateSchedule {
            schedule,
            changed_fields,
            next_run,
        } => format!(
            "~ update schedule {schedule}: {}; next run {}",
            changed_fields.join(", "),
            time(*next_run)
        ),
        Action::SuspendSchedule { schedule } => format!("~ suspend schedule {schedule}"),
        Action::ResumeSchedule { schedule, next_run } => {
            format!("~ resume schedule {schedule}; next run {}", time(*next_run))
        }
        Action::RemoveSchedule {
            schedule,
            backups_kept,
        } => format!("- remove schedule {schedule} (its {backups_kept} backup(s) stay)"),
        Action::RunBackup {
            backup,
            cluster,
            storage,
            backup_type,
            ..
        } => format!("+ run backup {backup}: {backup_type} backup of {cluster} to {storage}"),
        Action::StartRestore(r) => format!(
            "! start restore {}: cluster {} from backup {}{} ({} to download)",
            r.restore,
            r.cluster,
            r.backup,
            r.point_in_time
                .as_ref()
                .map_or(String::new(), |p| format!(" to {}", p.target)),
            human_bytes(r.download_bytes)
        ),
        Action::StartSelectiveRestore(p) => format!(
            "! start selective restore {}: {} collection pattern(s) of backup {} into {} ({} to \
             download on drill agent {}; no node stops)",
            p.restore,
            p.namespaces.len(),
            p.backup,
            p.target.replica_set,
            human_bytes(p.download_bytes),
            p.agent
        ),
        Action::RunDrill {
            run, backup, agent, ..
        } => format!("+ run drill {run}: restore backup {backup} on drill agent {agent}"),
        Action::AlreadyRan {
            kind,
            name,
            started_at,
            status,
            ..
        } => format!(
            "= {kind} {name} already ran at {} ({status})",
            started_at.format("%Y-%m-%d %H:%M:%S UTC")
        ),
        Action::DeleteBackup {
            backup,
            storage,
            stored_bytes,
            ..
        } => format!(
            "- delete backup {backup} from {storage} ({})",
            human_bytes(*stored_bytes)
        ),
        Action::Blocked { kind, name } => format!("x {kind} {name} is blocked"),
        Action::SetSlicing {
            cluster,
            replica_set,
            streams,
            ..
        } if streams.is_empty() => format!("- stop slicing the oplog of {cluster}/{replica_set}"),
        Action::SetSlicing {
            cluster,
            replica_set,
            streams,
            ..
        } => format!(
            "~ slice the oplog of {cluster}/{replica_set}: {}",
            streams
                .iter()
                .map(|s| match &s.previous {
                    Some(p) => format!(
                        "{} on {} (was {p}), into {} every {}s",
                        s.schedule, s.node, s.storage, s.span_seconds
                    ),
                    None => format!(
                        "{} on {}, into {} every {}s",
                        s.schedule, s.node, s.storage, s.span_seconds
                    ),
                })
                .collect::<Vec<_>>()
                .join("; ")
        ),
        Action::DeleteChunks {
            cluster,
            storage,
            replica_set,
            chunks,
            stored_bytes,
            from,
            to,
            ..
        } => format!(
            "- delete {chunks} oplog chunk(s) of {cluster}/{replica_set} from {storage} ({}), {} to {}",
            human_bytes(*stored_bytes),
            super::timeline::optime_text(*from),
            super::timeline::optime_text(*to)
        ),
        Action::VerifyBackup {
            backup,
            storage,
            level,
        } => format!(
            "~ verify backup {backup} in {storage} ({})",
            match level {
                tidemark_schema::model::VerifyLevel::Metadata => "metadata",
                tidemark_schema::model::VerifyLevel::Data => "data",
            }
        ),
    }
}

/// The replay of a point-in-time restore: its base, and per replica set the oplog window
/// and the chunks it downloads.
fn point_in_time_details(out: &mut String, p: &super::PointInTimePlan) {
    let _ = writeln!(
        out,
        "    point in time {} -> replays the oplog up to {}",
        p.point_in_time, p.target
    );
    if let Some(note) = &p.note {
        let _ = writeln!(out, "    note: {note}");
    }
    let _ = writeln!(out, "    base: {}", p.base_reason);
    for part in &p.replica_sets {
        let _ = writeln!(
            out,
            "    replay {}: after {} through the target, {} chunk(s), {} (not counted in the \
             fallback disk check)",
            part.replica_set,
            super::timeline::optime_text(part.from),
            part.chunks.len(),
            human_bytes(part.chunks.iter().map(|c| c.stored_bytes).sum())
        );
    }
}

fn restore_details(out: &mut String, r: &RestorePlan) {
    let _ = writeln!(
        out,
        "    backup taken {}, restores to {}",
        time(Some(r.backup_started_at)),
        time(r.backup_last_write)
    );
    let _ = writeln!(
        out,
        "    fallback {}, partly-done results {}",
        if r.fallback_enabled { "on" } else { "off" },
        if r.allow_partly_done {
            "accepted"
        } else {
            "rolled back"
        }
    );
    for (to, from) in &r.remap {
        let _ = writeln!(
            out,
            "    replica set {to} restores the backup's {from} (replicaSetRemap)"
        );
    }
    if let Some((base, rest)) = r.chain.split_first() {
        let _ = writeln!(
            out,
            "    incremental: rebuilt from base {base} and {} increment(s) ({}), every one \
             downloaded and counted in the disk check",
            rest.len(),
            rest.join(", ")
        );
    }
    if let Some(p) = &r.point_in_time {
        point_in_time_details(out, p);
    }
    if let Some(sh) = &r.sharding {
        let _ = writeln!(
            out,
            "    sharded: shardIdentity and config.shards rewritten for config server {} and \
             shards {}; routing caches dropped",
            sh.config_server,
            sh.shards.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    let _ = writeln!(out, "    nodes stopped, in order:");
    for n in &r.nodes {
        let disk = match &n.disk {
            DiskCheck::NotNeeded => "no fallback disk check".to_string(),
            DiskCheck::Unknown { why } => format!("disk unknown: {why}"),
            DiskCheck::Fits {
                room_bytes,
                needed_bytes,
                ..
            } => format!(
                "disk ok: needs {}, room {}",
                human_bytes(*needed_bytes),
                human_bytes((*room_bytes).max(0) as u64)
            ),
            DiskCheck::TooSmall {
                room_bytes,
                needed_bytes,
                ..
            } => format!(
                "DISK TOO SMALL: needs {}, room {}",
                human_bytes(*needed_bytes),
                human_signed(*room_bytes)
            ),
        };
        let _ = writeln!(
            out,
            "      {}/{} [{}]: download {}, {} restart(s); {disk}",
            n.replica_set,
            n.node,
            n.role,
            human_bytes(n.download_bytes),
            n.restarts.len()
        );
        if let Some(why) = &n.cannot_decrypt {
            let _ = writeln!(
                out,
                "        CANNOT DECRYPT the backup: {why}; {}",
                if r.allow_partly_done {
                    "stopped with the others, not restored, then wiped to initial-sync (PartlyDone)"
                } else {
                    "allowPartlyDone is false, so the restore is refused before any node stops"
                }
            );
        }
    }
    for s in &r.skipped {
        let _ = writeln!(out, "      skipped: {s}");
    }
    for p in &r.post_restore {
        let _ = writeln!(out, "    afterwards: {p}");
    }
}
