//! `tidemark describe-backup` / `describe-restore`: one operation as an operator needs to
//! see it — its status, and per replica set and node the phase, progress, last heartbeat,
//! outcome and reason. `-o json` for scripts; `--wait` follows it to its end.

use std::io::IsTerminal;
use std::time::Duration;

use serde_json::{Value, json};
use tidemark_schema::control::{
    BackupRecord, CancelRequest, FinishSignal, NodeFate, OneShotRecord, OpArchive, OpCause,
    OpResult, Phase, PhaseStatus, Remedy, Retry, RunStatus, WaitingRecord, archive_key, cancel_key,
    catalog_key, finish_key, oneshot_key, result_key, retry_key, waiting_key,
};
use tidemark_store::control::ControlPlane;

use super::args::{DescribeArgs, OutputFormat};
use super::exit::ExitStatus;

pub fn run(args: DescribeArgs, kind: &str) -> anyhow::Result<ExitStatus> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let control = ControlPlane::open(&args.control)?;
        let tty = std::io::stderr().is_terminal();
        let mut last_line = String::new();
        loop {
            let limits = Limits {
                dead_after: args.dead_after,
                stuck_after: args.stuck_after,
            };
            let view = describe(&control, kind, &args.name, limits).await?;
            let status = view["status"].as_str().unwrap_or_default().to_string();
            let ended = matches!(
                status.as_str(),
                "done" | "partlyDone" | "error" | "cancelled"
            );
            if args.wait && !ended {
                let line = progress_line(&view);
                if line != last_line {
                    if tty {
                        eprint!("\r\x1b[2K{line}");
                    } else {
                        eprintln!("{line}");
                    }
                    last_line = line;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            if args.wait && tty && !last_line.is_empty() {
                eprintln!();
            }
            match args.output {
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&view)?),
                OutputFormat::Text => print!("{}", render(&view)),
            }
            if view.get("found") == Some(&Value::Bool(false)) {
                return Ok(ExitStatus::Failure);
            }
            return Ok(if !args.wait || status == "done" {
                ExitStatus::Ok
            } else {
                ExitStatus::Failure
            });
        }
    })
}

/// When a node counts as lost (its agent silent) or stuck (its work not moving).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub dead_after: Duration,
    pub stuck_after: Duration,
}

/// The whole view of one operation, as JSON (the `-o json` contract).
pub(crate) async fn describe(
    control: &ControlPlane,
    kind: &str,
    name: &str,
    limits: Limits,
) -> anyhow::Result<Value> {
    let Some(record) = control
        .get::<OneShotRecord>(&oneshot_key(kind, name))
        .await?
    else {
        if let Some(w) = control
            .get::<WaitingRecord>(&waiting_key(kind, name))
            .await?
        {
            return Ok(json!({
                "kind": kind, "name": name, "status": "waiting",
                "reason": w.reason, "since": w.at, "replicaSets": [],
            }));
        }
        return Ok(json!({
            "kind": kind, "name": name, "found": false, "status": "unknown",
            "reason": format!("no {kind} named {name:?} has started or is waiting in {}", control.url()),
            "replicaSets": [],
        }));
    };
    let now = chrono::Utc::now();
    let dead_after = chrono::Duration::from_std(limits.dead_after)?;
    let stuck_after = chrono::Duration::from_std(limits.stuck_after)?;
    // Compacted (long ended): the archive holds what the op's records held. It is read
    // first because it is whole, while the op's records may be half deleted.
    let archived: Option<OpArchive> = control.get(&archive_key(&record.op_id)).await?;
    let (op, result, reports) = match archived {
        Some(a) => (Some(a.op), a.result, a.reports),
        None => (
            control.op(&record.op_id).await?,
            control.get::<OpResult>(&result_key(&record.op_id)).await?,
            control.op_reports(&record.op_id).await?,
        ),
    };
    let beats = match &op {
        Some(op) => control.heartbeats(&op.cluster).await?,
        None => Vec::new(),
    };
    let steps = follow_up_results(control, kind, &record.op_id).await?;
    let mut sets: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
    let mut copy_ready = false;
    for t in op.iter().flat_map(|o| o.targets.iter()) {
        let mine: Vec<_> = reports
            .iter()
            .filter(|r| r.replica_set == t.replica_set && r.node == t.node)
            .collect();
        let fin = mine.iter().find(|r| r.phase.is_final());
        // The furthest phase by the phases' order (agent clocks may step back).
        let last = mine
            .iter()
            .filter(|r| !r.phase.is_final())
            .max_by_key(|r| r.phase);
        let hb = beats
            .iter()
            .find(|h| h.replica_set == t.replica_set && h.node == t.node);
        let lost = fin.is_none() && hb.is_none_or(|h| h.is_lost(now, dead_after));
        let verdict = result.as_ref().and_then(|r| {
            r.nodes
                .iter()
                .find(|n| n.node == t.node && n.replica_set == t.replica_set)
        });
        if fin.is_none()
            && last.is_some_and(|r| r.phase == Phase::CopyReady && r.status == PhaseStatus::Done)
        {
            copy_ready = true;
        }
        let outcome = match (verdict, fin) {
            (Some(v), _) => json!(v.fate),
            (None, Some(r)) => json!(r.outcome.map_or(r.phase.as_str(), |o| match o {
                tidemark_schema::control::NodeOutcome::Done => "done",
                tidemark_schema::control::NodeOutcome::Refused => "refused",
                tidemark_schema::control::NodeOutcome::Failed => "failed",
            })),
            (None, None) if lost => json!("lost"),
            _ => Value::Null,
        };
        let reason = match (verdict, fin) {
            (Some(v), _) => v.message.clone(),
            (None, Some(r)) => r.message.clone(),
            (None, None) if lost => format!(
                "node lost, last heartbeat {}",
                hb.map_or("never".to_string(), |h| h.at.to_rfc3339())
            ),
            _ => String::new(),
        };
        sets.entry(t.replica_set.clone()).or_default().push(json!({
            "node": t.node,
            "phase": last.map(|r| r.phase.as_str()),
            "progress": last.map(|r| r.message.clone()).unwrap_or_default(),
            "lastHeartbeat": hb.map(|h| h.at),
            "outcome": outcome,
            "reason": reason,
            "remedies": verdict.map(|v| v.remedies.clone()).unwrap_or_default(),
            "note": verdict.map(|v| v.note.clone()).unwrap_or_default(),
            "now": node_now(&steps, &t.replica_set, &t.node),
            "figures": last.map(|r| r.details.clone()).unwrap_or_default(),
            // Its agent beats but its work has not moved: a hung mongod, a stalled download.
            "stuck": (fin.is_none() && !lost && record.finished_at.is_none())
                .then(|| last.map(|r| r.at))
                .flatten()
                .filter(|at| now - *at > stuck_after)
                .map(|at| json!({"phase": last.map(|r| r.phase), "since": at})),
        }));
    }
    let status = match record.status {
        RunStatus::Done => "done",
        RunStatus::PartlyDone => "partlyDone",
        RunStatus::Error => "error",
        RunStatus::Cancelled => "cancelled",
        _ if copy_ready => "copyReady",
        _ => "running",
    };
    // A backup's verification, when its schedule asked for one, is in its catalog entry,
    // with each replica set's encryption at rest and storage options (as its manifest
    // recorded them: a restore needs the same key and opens the files with them).
    let catalog = if kind == "backup" {
        control.get::<BackupRecord>(&catalog_key(name)).await?
    } else {
        None
    };
    let verification = catalog.as_ref().and_then(|b| b.verification.clone());
    let data: Vec<Value> = catalog
        .iter()
        .flat_map(|b| &b.replica_sets)
        .map(|r| {
            json!({
                "replicaSet": r.name, "node": r.node, "mongodVersion": r.mongod_version,
                "encryption": r.encryption, "storageOptions": r.storage_options,
            })
        })
        .collect();
    let stage = match kind {
        "restore" => restore_stage(control, &record, limits, now).await?,
        _ => None,
    };
    Ok(json!({
        "kind": kind,
        "name": name,
        "status": status,
        "stage": stage,
        "selective": record.selective,
        "pointInTime": record.started_with.as_ref().map(|w| w["settings"]["pointInTime"].clone()).filter(|v| !v.is_null()),
        "verification": verification,
        "data": data,
        "opId": record.op_id,
        // The audit trail: what made the reconciler write the op, and operators' commands.
        "cause": op.as_ref().and_then(|o| o.cause.clone()),
        "finish": control.get::<FinishSignal>(&finish_key(&record.op_id)).await.ok().flatten(),
        "forgotten": record.forgotten,
        "startedAt": record.started_at,
        "finishedAt": record.finished_at,
        "decision": result.as_ref().map(|r| json!({"status": r.status, "reason": r.reason, "at": r.decided_at})),
        "reason": record.message,
        "retry": control.get::<Retry>(&retry_key(kind, name)).await?,
        // An unreadable request still counts as a cancel (see `Executor::cancel_request`).
        "cancel": match control.get::<CancelRequest>(&cancel_key(kind, name)).await {
            Ok(c) => json!(c),
            Err(e) => json!({"by": "an unreadable request", "error": e.to_string()}),
        },
        "replicaSets": sets.into_iter().map(|(name, nodes)| json!({"name": name, "nodes": nodes})).collect::<Vec<_>>(),
    }))
}

/// A restore's stage (`reconciler/src/restore/stage.rs`), as the reconciler would derive
/// it now; read only. `None` once compacted (its records are gone) or before its op.
async fn restore_stage(
    control: &ControlPlane,
    record: &OneShotRecord,
    limits: Limits,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<Option<Value>> {
    if record.is_final() {
        return Ok(None);
    }
    let dead_after = chrono::Duration::from_std(limits.dead_after)?;
    let stage = tidemark_reconciler::restore::stage_now(control, record, dead_after, now).await?;
    Ok(stage.map(|s| json!({"name": s.name(), "detail": s.detail()})))
}

/// A restore's closed follow-up steps, in the order they ran (compacted ones from their
/// archive).
async fn follow_up_results(
    control: &ControlPlane,
    kind: &str,
    op_id: &str,
) -> anyhow::Result<Vec<(Remedy, OpResult)>> {
    let mut out = Vec::new();
    if kind != "restore" {
        return Ok(out);
    }
    for remedy in [
        Remedy::Revert,
        Remedy::Wipe,
        Remedy::RemoveFallback,
        Remedy::Start,
    ] {
        let id = format!("{op_id}.{}", remedy.as_str());
        let result = match control.get::<OpArchive>(&archive_key(&id)).await? {
            Some(a) => a.result,
            None => control.get::<OpResult>(&result_key(&id)).await?,
        };
        if let Some(r) = result {
            out.push((remedy, r));
        }
    }
    Ok(out)
}

/// What the follow-up steps did to a node since its restore ended: its state now, not
/// as its restore's last report left it (mongod stopped, fallback kept).
fn node_now(steps: &[(Remedy, OpResult)], rs: &str, node: &str) -> Option<String> {
    let mut now = None;
    for (remedy, result) in steps {
        let Some(v) = result
            .nodes
            .iter()
            .find(|n| n.replica_set == rs && n.node == node)
        else {
            continue;
        };
        now = Some(match (remedy, v.fate) {
            (Remedy::Revert, NodeFate::Done) => {
                "its data was moved back from the fallback directory; mongod is stopped".into()
            }
            (Remedy::Wipe, NodeFate::Done) => {
                "wiped; it initial-syncs from the restored members once started".into()
            }
            (Remedy::RemoveFallback, NodeFate::Done) => {
                "the fallback directory was removed; mongod is stopped".into()
            }
            (Remedy::Start, NodeFate::Done) => {
                "mongod was started again as a replica-set member".into()
            }
            (_, _) => format!("{} did not happen: {}", remedy.as_str(), v.message),
        });
    }
    now
}

fn progress_line(view: &Value) -> String {
    let mut parts = Vec::new();
    for rs in view["replicaSets"].as_array().into_iter().flatten() {
        for n in rs["nodes"].as_array().into_iter().flatten() {
            let f = &n["figures"];
            let figures = match (f["bytesWritten"].as_u64(), f["bytesTotal"].as_u64()) {
                // A point-in-time replay: entries applied, how far, and its ETA.
                _ if f["entriesApplied"].is_u64() && n["outcome"].is_null() => format!(
                    " {} entries, reached {}, ETA {}",
                    f["entriesApplied"],
                    f["reached"]
                        .as_object()
                        .map_or("?".to_string(), |o| format!(
                            "Timestamp({}, {})",
                            o["t"], o["i"]
                        )),
                    f["etaSeconds"]
                        .as_f64()
                        .map_or("?".to_string(), |e| format!("{e:.0}s"))
                ),
                (Some(w), Some(t)) if n["outcome"].is_null() => format!(
                    " {:.0}% {:.1} MiB/s ETA {}",
                    w as f64 * 100.0 / t.max(1) as f64,
                    f["bytesPerSecond"].as_f64().unwrap_or(0.0) / (1 << 20) as f64,
                    f["etaSeconds"]
                        .as_f64()
                        .map_or("?".to_string(), |e| format!("{e:.0}s"))
                ),
                _ => String::new(),
            };
            parts.push(format!(
                "{} {}{figures}{}",
                n["node"].as_str().unwrap_or_default(),
                n["outcome"]
                    .as_str()
                    .or(n["phase"].as_str())
                    .unwrap_or("waiting"),
                if n["stuck"].is_object() { " STUCK" } else { "" }
            ));
        }
    }
    if view["status"] == "unknown" {
        return format!(
            "{} {}: not started yet (waiting for the reconciler to see it)",
            view["kind"].as_str().unwrap_or_default(),
            view["name"].as_str().unwrap_or_default(),
        );
    }
    format!(
        "{} {}: {} [{}]",
        view["kind"].as_str().unwrap_or_default(),
        view["name"].as_str().unwrap_or_default(),
        view["status"].as_str().unwrap_or_default(),
        parts.join(", ")
    )
}

/// A replay target as `describe` shows it: the wall-clock time, or the cluster time.
fn target_text(t: &Value) -> String {
    match t["wall"].as_str() {
        Some(w) => format!("{w} (wall clock)"),
        None => format!("Timestamp({}, {})", t["until"]["t"], t["until"]["i"]),
    }
}

fn render(view: &Value) -> String {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let mut out = format!(
        "{} {}: {}\n",
        s(&view["kind"]),
        s(&view["name"]),
        s(&view["status"])
    );
    if let Some(stage) = view["stage"].as_object() {
        out.push_str(&format!(
            "  stage:   {}: {}\n",
            stage
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default(),
            stage
                .get("detail")
                .and_then(Value::as_str)
                .unwrap_or_default()
        ));
    }
    if !view["opId"].is_null() {
        out.push_str(&format!("  op:      {}\n", s(&view["opId"])));
        out.push_str(&format!("  started: {}\n", s(&view["startedAt"])));
    }
    if let Ok(cause) = serde_json::from_value::<OpCause>(view["cause"].clone()) {
        out.push_str(&format!("  cause:   {cause}\n"));
    }
    if let Some(f) = view["finish"].as_object() {
        out.push_str(&format!(
            "  finish:  signalled by {} at {}\n",
            f.get("by")
                .and_then(Value::as_str)
                .unwrap_or("an unknown user"),
            f.get("at").and_then(Value::as_str).unwrap_or_default()
        ));
    }
    if let Some(f) = view["forgotten"].as_object() {
        out.push_str(&format!(
            "  forgotten: by {} at {} ({})\n",
            f.get("by").and_then(Value::as_str).unwrap_or_default(),
            f.get("at").and_then(Value::as_str).unwrap_or_default(),
            f.get("command").and_then(Value::as_str).unwrap_or_default()
        ));
    }
    if !view["finishedAt"].is_null() {
        out.push_str(&format!("  ended:   {}\n", s(&view["finishedAt"])));
    }
    if !s(&view["reason"]).is_empty() {
        out.push_str(&format!("  reason:  {}\n", s(&view["reason"])));
    }
    if let Some(c) = view["cancel"].as_object() {
        out.push_str(&format!(
            "  cancel:  requested by {} at {}\n",
            c.get("by").and_then(Value::as_str).unwrap_or_default(),
            c.get("at").and_then(Value::as_str).unwrap_or_default()
        ));
    }
    if let Some(r) = view["retry"].as_object() {
        out.push_str(&format!(
            "  retry:   failed {} time(s), next try at {}: {}\n",
            r.get("failures")
                .and_then(Value::as_u64)
                .unwrap_or_default(),
            r.get("nextAt").and_then(Value::as_str).unwrap_or_default(),
            r.get("error").and_then(Value::as_str).unwrap_or_default()
        ));
    }
    if let Some(p) = view["pointInTime"].as_object() {
        out.push_str(&format!(
            "  point in time: replays the oplog up to {} ({} chunk(s), {} bytes); base: {}\n",
            p.get("target").map_or(String::new(), target_text),
            p.get("chunks").unwrap_or(&Value::Null),
            p.get("chunkBytes").unwrap_or(&Value::Null),
            p.get("baseReason")
                .and_then(Value::as_str)
                .unwrap_or_default()
        ));
    }
    if let Some(sel) = view["selective"].as_object() {
        for n in sel
            .get("namespaces")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            out.push_str(&format!(
                "  collection: {} -> {}: {} ({} documents, {} index(es))\n",
                s(&n["source"]),
                s(&n["target"]),
                s(&n["targetState"]),
                n["documents"],
                n["indexes"]
            ));
        }
    }
    if let Some(v) = view["verification"].as_object() {
        out.push_str(&format!(
            "  verified: {} ({}{})\n",
            v.get("status").and_then(Value::as_str).unwrap_or_default(),
            v.get("level").and_then(Value::as_str).unwrap_or_default(),
            v.get("at")
                .and_then(Value::as_str)
                .map(|at| format!(", {at}"))
                .unwrap_or_default()
        ));
        for p in v
            .get("problems")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            out.push_str(&format!(
                "    problem: {}\n",
                p.as_str().unwrap_or_default()
            ));
        }
    }
    for d in view["data"].as_array().into_iter().flatten() {
        let encryption = match d["encryption"].as_object() {
            None => "not encrypted".to_string(),
            Some(e) => {
                let source = &e["keySource"];
                let from = match source["kind"].as_str() {
                    Some("keyFile") => format!("key file {}", s(&source["path"])),
                    Some("vault") => format!(
                        "Vault {}:{} secret {}{}",
                        s(&source["server"]),
                        source["port"],
                        s(&source["secret"]),
                        source["secretVersion"]
                            .as_u64()
                            .map(|v| format!(" version {v}"))
                            .unwrap_or_default()
                    ),
                    Some("kmip") => format!(
                        "KMIP {}:{} key {}",
                        s(&source["server"]),
                        source["port"],
                        s(&source["keyId"])
                    ),
                    _ => "unknown key source".into(),
                };
                format!(
                    "encrypted, {} with {from} (key id {})",
                    e.get("cipherMode").and_then(Value::as_str).unwrap_or("?"),
                    e.get("keyId").and_then(Value::as_str).unwrap_or("?")
                )
            }
        };
        out.push_str(&format!(
            "  data of {}: from {}, mongod {}, {encryption}; storage options {}\n",
            s(&d["replicaSet"]),
            s(&d["node"]),
            s(&d["mongodVersion"]),
            d["storageOptions"]
        ));
    }
    for rs in view["replicaSets"].as_array().into_iter().flatten() {
        out.push_str(&format!("  replica set {}\n", s(&rs["name"])));
        for n in rs["nodes"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "    {}: {} (phase {}, last heartbeat {})\n",
                s(&n["node"]),
                n["outcome"].as_str().unwrap_or("in progress"),
                n["phase"].as_str().unwrap_or("-"),
                n["lastHeartbeat"].as_str().unwrap_or("never"),
            ));
            if let Some(stuck) = n["stuck"].as_object() {
                out.push_str(&format!(
                    "      STUCK: nothing new in phase {} since {}\n",
                    stuck.get("phase").and_then(Value::as_str).unwrap_or("-"),
                    stuck.get("since").and_then(Value::as_str).unwrap_or("-")
                ));
            }
            for key in ["now", "progress", "reason", "note"] {
                if !s(&n[key]).is_empty() {
                    out.push_str(&format!("      {key}: {}\n", s(&n[key])));
                }
            }
            if let Some(r) = n["remedies"].as_array().filter(|r| !r.is_empty()) {
                let r: Vec<String> = r.iter().map(s).collect();
                out.push_str(&format!("      remedies: {}\n", r.join(", ")));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    /// `--wait` shows a download's share, rate and ETA, and flags a stuck node.
    #[test]
    fn the_wait_line_shows_download_progress_and_stuck_nodes() {
        let view = json!({
            "kind": "restore", "name": "r1", "status": "running",
            "replicaSets": [{"name": "rs0", "nodes": [
                {"node": "db1:27017", "phase": "fetch", "outcome": null,
                 "figures": {"bytesWritten": 25u64 << 20, "bytesTotal": 100u64 << 20,
                             "bytesPerSecond": 5.0 * (1u64 << 20) as f64, "etaSeconds": 15.0}},
                {"node": "db2:27017", "phase": "recover", "outcome": null, "figures": {},
                 "stuck": {"phase": "recover", "since": "2026-03-10T12:00:00Z"}},
            ]}],
        });
        let line = super::progress_line(&view);
        assert!(
            line.contains("db1:27017 fetch 25% 5.0 MiB/s ETA 15s"),
            "{line}"
        );
        assert!(line.contains("db2:27017 recover STUCK"), "{line}");
    }

    #[test]
    fn the_wait_line_shows_a_replays_entries_optime_and_eta() {
        let view = json!({
            "kind": "restore", "name": "r1", "status": "running",
            "replicaSets": [{"name": "rs0", "nodes": [
                {"node": "db1:27017", "phase": "replay", "outcome": null,
                 "figures": {"entriesApplied": 1200, "entriesRead": 1300, "entriesTotal": 5000,
                             "reached": {"t": 1796392936, "i": 4}, "etaSeconds": 12}},
            ]}],
        });
        let line = super::progress_line(&view);
        assert!(
            line.contains(
                "db1:27017 replay 1200 entries, reached Timestamp(1796392936, 4), ETA 12s"
            ),
            "{line}"
        );
    }
}
