//! `tidemark list` (PBM's `pbm list`): every backup with its status, type, size, last
//! write and verification, and per cluster and storage the windows a point-in-time
//! restore can reach, split at every gap. `-o json` for scripts.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tidemark_reconciler::plan::{PitrState, Timeline, bases, optime_text, streams, timeline};
use tidemark_reconciler::run::desired_from_applied;
use tidemark_schema::control::BackupRecord;
use tidemark_store::control::{ControlPlane, observe};

use super::args::{ListArgs, OutputFormat};
use super::exit::ExitStatus;

pub fn run(args: ListArgs) -> anyhow::Result<ExitStatus> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let control = ControlPlane::open(&args.control)?;
        let view = list(&control, args.cluster.as_deref(), Utc::now()).await?;
        match args.output {
            OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&view)?),
            OutputFormat::Text => print!("{}", render(&view)),
        }
        Ok(ExitStatus::Ok)
    })
}

/// The listing as JSON (the `-o json` contract, documented in docs/reconciler.md).
pub async fn list(
    control: &ControlPlane,
    cluster: Option<&str>,
    now: DateTime<Utc>,
) -> anyhow::Result<Value> {
    let observed = observe(control).await?;
    let chunks = &observed.chunks;
    let wanted = |c: &str| cluster.is_none_or(|w| w == c);
    let mut backups: Vec<&BackupRecord> = observed
        .backups
        .iter()
        .filter(|b| wanted(&b.cluster))
        .collect();
    backups.sort_by(|a, b| a.recency().cmp(&b.recency()));
    let backups: Vec<Value> = backups.iter().map(|b| backup_json(b)).collect();
    let desired = observed.applied.as_ref().and_then(desired_from_applied);
    let mut timelines = Vec::new();
    for ((c, storage), mut sets) in streams(chunks) {
        if !wanted(&c) {
            continue;
        }
        // Every declared replica set counts: one with no chunk yet has no window.
        if let Some(spec) = desired.as_ref().and_then(|d| d.cluster(&c)) {
            sets = tidemark_reconciler::plan::replica_set_names(spec);
        }
        let good = bases(&observed.backups, &c, &storage);
        timelines.push(timeline_json(
            &timeline(&c, &storage, &sets, chunks, &good),
            now,
        ));
    }
    Ok(json!({"now": now, "backups": backups, "timelines": timelines}))
}

fn backup_json(b: &BackupRecord) -> Value {
    json!({
        "name": b.name, "cluster": b.cluster, "storage": b.storage, "schedule": b.schedule,
        "type": b.backup_type, "status": b.status, "good": b.is_good(),
        "storedBytes": b.stored_bytes(), "uncompressedBytes": b.uncompressed_bytes(),
        "startedAt": b.started_at, "lastWrite": b.last_write,
        "lastWriteOptimes": b.replica_sets.iter().map(|r| json!({"replicaSet": r.name, "optime": r.last_write_optime})).collect::<Vec<_>>(),
        "verification": b.verification.as_ref().map(|v| v.status),
        "deleting": b.deleting.is_some(),
        "incremental": b.incremental,
        "nodes": b.replica_sets.iter().map(|r| json!({"replicaSet": r.name, "node": r.node})).collect::<Vec<_>>(),
    })
}

/// One timeline as JSON: windows with times people read, gaps, lag and chunk figures.
pub fn timeline_json(t: &Timeline, now: DateTime<Utc>) -> Value {
    let at =
        |o: tidemark_schema::manifest::OpTime| DateTime::<Utc>::from_timestamp(i64::from(o.t), 0);
    json!({
        "cluster": t.cluster, "storage": t.storage,
        "newest": t.newest(), "newestAt": t.newest().and_then(at),
        "lagSeconds": t.lag_seconds(now),
        "chunks": t.chunks(), "gaps": t.gaps(),
        "windows": t.windows.iter().map(|w| json!({
            "from": w.from, "to": w.to, "fromAt": at(w.from), "toAt": at(w.to), "bases": w.bases,
        })).collect::<Vec<_>>(),
        "openGaps": t.open_gaps,
        "replicaSets": t.replica_sets,
    })
}

/// A slicing schedule's state for `status -o json`.
pub fn pitr_json(p: &PitrState) -> Value {
    let mut v = timeline_json(&p.timeline, Utc::now());
    v["schedule"] = json!(p.schedule);
    v["spanSeconds"] = json!(p.span_seconds);
    v["slicers"] = json!(p.slicers);
    v["lagSeconds"] = json!(p.lag_seconds);
    v["recoveryPoint"] = json!(p.recovery_point);
    v["rpoBreached"] = json!(p.rpo_breached);
    v
}

/// A JSON value as `status` and `list` print it: strings bare, null as `-`.
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    }
}

fn optime_of(v: &Value) -> String {
    serde_json::from_value(v.clone()).map_or_else(|_| text(v), optime_text)
}

fn render_windows(out: &mut String, t: &Value, indent: &str) {
    let windows = t["windows"].as_array().cloned().unwrap_or_default();
    if windows.is_empty() {
        out.push_str(&format!("{indent}no restorable window yet (a window opens at a good backup's last write inside the sliced oplog)\n"));
    }
    for w in windows {
        out.push_str(&format!(
            "{indent}{} .. {}  (from {})\n",
            optime_of(&w["from"]),
            optime_of(&w["to"]),
            w["bases"]
                .as_array()
                .into_iter()
                .flatten()
                .map(text)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    for g in t["openGaps"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{indent}GAP on {}: {} .. {} was lost before it was sliced; take a backup to bridge it\n",
            text(&g["replicaSet"]),
            optime_of(&g["from"]),
            optime_of(&g["to"])
        ));
    }
}

fn render(v: &Value) -> String {
    let mut out = String::from("Backups:\n");
    let backups = v["backups"].as_array().cloned().unwrap_or_default();
    if backups.is_empty() {
        out.push_str("  none\n");
    }
    for b in backups {
        out.push_str(&format!(
            "  {}  {}  {}  {}  {}  last write {}{}\n",
            text(&b["name"]),
            text(&b["cluster"]),
            text(&b["type"]),
            text(&b["status"]),
            tidemark_reconciler::plan::human_bytes(b["storedBytes"].as_u64().unwrap_or_default()),
            text(&b["lastWrite"]),
            match b["verification"].as_str() {
                Some(v) => format!(", verification {v}"),
                None => String::new(),
            }
        ));
        if let Some(link) = b["incremental"].as_object() {
            out.push_str(&format!("    {}\n", chain_text(link)));
        }
    }
    out.push_str("\nPITR timelines:\n");
    let timelines = v["timelines"].as_array().cloned().unwrap_or_default();
    if timelines.is_empty() {
        out.push_str(
            "  none (no schedule slices the oplog: set pitr.enabled on a BackupSchedule)\n",
        );
    }
    for t in timelines {
        out.push_str(&format!(
            "  {} in {}: {} chunk(s), {} gap(s), newest {} (lag {}s)\n",
            text(&t["cluster"]),
            text(&t["storage"]),
            text(&t["chunks"]),
            text(&t["gaps"]),
            optime_of(&t["newest"]),
            text(&t["lagSeconds"])
        ));
        render_windows(&mut out, &t, "    ");
    }
    out
}

/// Where an incremental backup sits: `base of chain X` or `increment N of chain X, on Y`.
fn chain_text(link: &serde_json::Map<String, Value>) -> String {
    let base = text(&link["base"]);
    match link.get("source").filter(|s| !s.is_null()) {
        None => format!(
            "base of chain {base} (blocks of {} MB)",
            text(&link["blockSizeMB"])
        ),
        Some(source) => format!(
            "increment {} of chain {base}, on {}",
            text(&link["position"]),
            text(source)
        ),
    }
}

/// The PITR lines of `status`.
pub fn render_pitr_status(out: &mut String, v: &Value) {
    let Some(all) = v["pitr"].as_array().filter(|a| !a.is_empty()) else {
        return;
    };
    out.push_str("\npoint-in-time recovery:\n");
    for p in all {
        out.push_str(&format!(
            "  {} ({} into {}): lag {}s, recovery point {}{}\n",
            text(&p["schedule"]),
            text(&p["cluster"]),
            text(&p["storage"]),
            text(&p["lagSeconds"]),
            text(&p["recoveryPoint"]),
            if p["rpoBreached"] == json!(true) {
                "  RPO BREACHED"
            } else {
                ""
            }
        ));
        for s in p["slicers"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "    slicer {}: {}{}\n",
                text(&s["replicaSet"]),
                text(&s["node"]),
                match s["error"].as_str() {
                    Some(e) => format!("  FAILING: {e}"),
                    None => String::new(),
                }
            ));
        }
        render_windows(out, p, "    ");
    }
}
