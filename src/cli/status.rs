//! `tidemark status`: one look at whether the clusters are protected. The leader and its
//! lease; agents and their health; per schedule the newest good backup, its age, the next
//! run, missed slots and the RPO; operations running or waiting; the applied and attempted
//! revisions; per restore drill its last run, RTO and RPO; per slicing schedule its PITR lag,
//! recovery point and gaps. `-o json` for monitors; exit 2 when a schedule is past its RPO
//! (with PITR on: its recovery point is), a PITR gap is not bridged by a newer backup, or a
//! drill's last run failed.

use serde_json::{Value, json};
use tidemark_reconciler::plan::{
    DrillState, PitrState, ScheduleState, drill_state, observed_schedule_state, plan_slicing,
    schedule_increment,
};
use tidemark_reconciler::run::desired_from_applied;
use tidemark_schema::control::{Pickup, WaitingRecord};
use tidemark_store::control::{ControlPlane, lease, observe};

use super::args::{OutputFormat, StatusArgs};
use super::exit::ExitStatus;

pub fn run(args: StatusArgs) -> anyhow::Result<ExitStatus> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let control = ControlPlane::open(&args.control)?;
        let limits = super::describe::Limits {
            dead_after: args.dead_after,
            stuck_after: args.stuck_after,
        };
        let view = status(&control, limits).await?;
        match args.output {
            OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&view)?),
            OutputFormat::Text => print!("{}", render(&view)),
        }
        let any = |key: &str| view[key].as_array().is_some_and(|a| !a.is_empty());
        Ok(if any("rpoBreached") || any("pitrGaps") {
            ExitStatus::RpoBreached
        } else if any("drillsFailed") {
            ExitStatus::DrillFailed
        } else {
            ExitStatus::Ok
        })
    })
}

/// The whole status as JSON (the `-o json` contract, documented in docs/reconciler.md).
pub async fn status(
    control: &ControlPlane,
    limits: super::describe::Limits,
) -> anyhow::Result<Value> {
    let now = chrono::Utc::now();
    let dead_after = chrono::Duration::from_std(limits.dead_after)?;
    let (observed, leader, waiting) = tokio::try_join!(
        observe(control),
        lease::describe(control),
        control.all_lenient::<WaitingRecord>("ledger/waiting"),
    )?;
    let leader = leader.map(|(l, r)| {
        json!({
            "epoch": l.epoch,
            "holder": l.holder,
            "acquiredAt": l.acquired_at,
            "ttlMs": l.ttl_ms,
            "renewedAt": r.as_ref().map(|r| r.at),
            "doorbell": l.doorbell,
            "released": r.as_ref().is_some_and(|r| r.released),
        })
    });
    let partitions = super::leaders::leaders(control, &observed).await?;
    let agents: Vec<Value> = observed
        .heartbeats
        .iter()
        .map(|h| {
            let age = (now - h.at).num_milliseconds() as f64 / 1000.0;
            json!({
                "cluster": h.cluster, "replicaSet": h.replica_set, "node": h.node,
                "role": h.role, "healthy": h.healthy, "lastHeartbeat": h.at,
                "ageSeconds": age, "alive": !h.is_lost(now, dead_after),
                "mongodVersion": h.mongod_version,
                "pickup": h.pickup,
                "trust": h.trust,
            })
        })
        .collect();
    let desired = observed.applied.as_ref().and_then(desired_from_applied);
    let schedules: Vec<ScheduleState> = desired
        .iter()
        .flat_map(|d| d.schedules())
        .map(|(name, spec)| observed_schedule_state(name, spec, &observed, now))
        .collect();
    let schedules_json: Vec<Value> = schedules
        .iter()
        .map(|s| {
            let mut v = json!(s);
            v["lastGoodAgeSeconds"] = json!(s.last_good_at.map(|t| (now - t).num_seconds()));
            // An incremental schedule: whether its next run continues the chain, and why.
            if let Some(d) = desired.as_ref()
                && let Some(spec) = d.schedule(&s.schedule)
                && let Some(cluster) = d.cluster(&spec.cluster)
                && let Some(next) = schedule_increment(spec, cluster, &observed, (now, dead_after))
            {
                v["nextIncremental"] = json!(next.plan);
            }
            v
        })
        .collect();
    let seen = &observed;
    let drills: Vec<DrillState> = desired
        .iter()
        .flat_map(|d| {
            d.drills().map(move |(name, spec)| {
                let cluster = d
                    .schedule(&spec.schedule)
                    .map_or("", |s| s.cluster.as_str());
                drill_state(name, spec, cluster, seen, now)
            })
        })
        .collect();
    let drills_failed: Vec<&str> = drills
        .iter()
        .filter(|d| {
            d.last_run
                .as_ref()
                .is_some_and(|r| r.status == tidemark_schema::control::RunStatus::Error)
        })
        .map(|d| d.drill.as_str())
        .collect();
    let pitr: Vec<PitrState> = desired
        .as_ref()
        .map(|d| plan_slicing(d, &observed, (now, dead_after), &mut Vec::new()))
        .unwrap_or_default();
    // With PITR on, a schedule's RPO is judged by how far a restore reaches, not by its
    // newest backup's age.
    let rpo_breached: Vec<&str> = schedules
        .iter()
        .filter(|s| match pitr.iter().find(|p| p.schedule == s.schedule) {
            Some(p) => p.rpo_breached,
            None => s.rpo_breached,
        })
        .map(|s| s.schedule.as_str())
        .collect();
    let pitr_gaps: Vec<Value> = pitr
        .iter()
        .flat_map(|p| {
            p.timeline.open_gaps.iter().map(|g| {
                json!({"schedule": p.schedule, "cluster": p.cluster, "storage": p.storage,
                       "replicaSet": g.replica_set, "from": g.gap.from, "to": g.gap.to,
                       "foundAt": g.gap.found_at})
            })
        })
        .collect();
    let pitr_json: Vec<Value> = pitr.iter().map(super::list::pitr_json).collect();
    let mut operations = Vec::new();
    for r in observed.oneshots.values().filter(|r| !r.is_final()) {
        operations.push(super::describe::describe(control, r.kind.key(), &r.name, limits).await?);
    }
    for w in &waiting.0 {
        if !observed.oneshots.contains_key(&(w.kind, w.name.clone())) {
            operations.push(json!({
                "kind": w.kind.key(), "name": w.name, "status": "waiting",
                "reason": w.reason, "since": w.at,
            }));
        }
    }
    let declared: std::collections::BTreeSet<&str> =
        schedules.iter().map(|s| s.schedule.as_str()).collect();
    let orphaned: Vec<Value> = observed
        .backups
        .iter()
        .filter(|b| b.is_good())
        .filter(|b| {
            b.schedule
                .as_deref()
                .is_some_and(|s| desired.is_some() && !declared.contains(s))
        })
        .map(|b| json!({"backup": b.name, "schedule": b.schedule, "startedAt": b.started_at}))
        .collect();
    let mut warnings = observed.warnings.clone();
    warnings.extend(waiting.1);
    Ok(json!({
        "control": control.url(),
        "now": now,
        "leader": leader,
        "partitions": partitions,
        "revisions": {
            "applied": observed.applied.as_ref().map(|a| json!({"revision": a.revision, "appliedAt": a.applied_at})),
            "attempted": observed.attempted.as_ref().map(|a| json!({"revision": a.revision, "attemptedAt": a.attempted_at, "errors": a.errors})),
        },
        "agents": agents,
        "schedules": schedules_json,
        "operations": operations,
        "catalog": {
            "backups": observed.backups.len(),
            "good": observed.backups.iter().filter(|b| b.is_good()).count(),
        },
        "orphanedBackups": orphaned,
        "rpoBreached": rpo_breached,
        "pitr": pitr_json,
        "pitrGaps": pitr_gaps,
        "drills": drills,
        "drillsFailed": drills_failed,
        "warnings": warnings,
    }))
}

fn render(v: &Value) -> String {
    let s = super::list::text;
    let mut out = String::new();
    match v["leader"].as_object() {
        Some(l) => out.push_str(&format!(
            "leader: {} (epoch {}, renewed {}{}{})\n",
            s(&l["holder"]),
            s(&l["epoch"]),
            s(&l["renewedAt"]),
            if l["released"] == json!(true) {
                ", released"
            } else {
                ""
            },
            match l["doorbell"].as_str() {
                Some(url) => format!(", doorbell {url}"),
                None => String::new(),
            }
        )),
        None => out.push_str("leader: none (no reconciler has run against this control plane)\n"),
    }
    super::leaders::render(v, &mut out);
    let rev = &v["revisions"];
    out.push_str(&format!(
        "applied revision: {}\n",
        s(&rev["applied"]["revision"])
    ));
    if let Some(errors) = rev["attempted"]["errors"].as_array()
        && !errors.is_empty()
    {
        out.push_str(&format!(
            "attempted revision {} was refused:\n",
            s(&rev["attempted"]["revision"])
        ));
        for e in errors {
            out.push_str(&format!("  {}\n", s(e)));
        }
    }
    out.push_str("\nagents:\n");
    for a in v["agents"].as_array().into_iter().flatten() {
        let pickup = serde_json::from_value::<Pickup>(a["pickup"].clone())
            .map(|p| format!(", {}", p.describe()))
            .unwrap_or_default();
        out.push_str(&format!(
            "  {}/{}/{}  {}  {}  heartbeat {:.0}s ago{pickup}\n",
            s(&a["cluster"]),
            s(&a["replicaSet"]),
            s(&a["node"]),
            s(&a["role"]),
            if a["alive"] == json!(false) {
                "LOST"
            } else if a["healthy"] == json!(true) {
                "healthy"
            } else {
                "unhealthy"
            },
            a["ageSeconds"].as_f64().unwrap_or_default()
        ));
        out.push_str(&trust_lines(&a["trust"]));
    }
    out.push_str("\nschedules:\n");
    for sc in v["schedules"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {} ({}){}: {}, next {}{}\n",
            s(&sc["schedule"]),
            s(&sc["cluster"]),
            if sc["suspended"] == json!(true) {
                " SUSPENDED"
            } else {
                ""
            },
            match sc["lastGoodBackup"].as_str() {
                Some(b) => format!("last good {b} ({}s ago)", s(&sc["lastGoodAgeSeconds"])),
                None => "no good backup yet".to_string(),
            },
            s(&sc["nextRun"]),
            if sc["rpoBreached"] == json!(true) {
                format!("  RPO {} BREACHED", s(&sc["rpo"]))
            } else {
                String::new()
            }
        ));
        if let Some(why) = sc["nextIncremental"]["why"].as_str() {
            out.push_str(&format!("    next run: {why}\n"));
        }
        if let Some(missed) = sc["missedSlots"].as_array()
            && !missed.is_empty()
        {
            out.push_str(&format!(
                "    {} missed slot(s), newest {}\n",
                missed.len(),
                s(&missed[0])
            ));
        }
    }
    super::list::render_pitr_status(&mut out, v);
    if let Some(drills) = v["drills"].as_array()
        && !drills.is_empty()
    {
        out.push_str("\ndrills:\n");
        for d in drills {
            let last = &d["lastRun"];
            let figures = match last["outcome"].as_object() {
                Some(o) => format!(
                    ", restored in {:.1}s, data {:.0}s old",
                    o["rtoSeconds"].as_f64().unwrap_or_default(),
                    o["rpoSeconds"].as_f64().unwrap_or_default()
                ),
                None => String::new(),
            };
            out.push_str(&format!(
                "  {} (schedule {}){}: {}, next {}\n",
                s(&d["drill"]),
                s(&d["schedule"]),
                if d["suspended"] == json!(true) {
                    " SUSPENDED"
                } else {
                    ""
                },
                if last.is_null() {
                    "no run yet".to_string()
                } else {
                    format!(
                        "last run {} {}{figures}",
                        s(&last["name"]),
                        if last["status"] == json!("error") {
                            "FAILED".to_string()
                        } else {
                            s(&last["status"])
                        }
                    )
                },
                s(&d["nextRun"]),
            ));
            if last["status"] == json!("error") {
                out.push_str(&format!("    {}\n", s(&last["message"])));
            }
        }
    }
    out.push_str("\noperations:\n");
    if v["operations"].as_array().is_none_or(|a| a.is_empty()) {
        out.push_str("  none running or waiting\n");
    }
    for op in v["operations"].as_array().into_iter().flatten() {
        let stage = op["stage"]["name"]
            .as_str()
            .map(|s| format!(" (stage {s})"))
            .unwrap_or_default();
        out.push_str(&format!(
            "  {} {}: {}{stage} {}\n",
            s(&op["kind"]),
            s(&op["name"]),
            s(&op["status"]),
            op["reason"].as_str().unwrap_or_default()
        ));
        for rs in op["replicaSets"].as_array().into_iter().flatten() {
            for n in rs["nodes"].as_array().into_iter().flatten() {
                if let Some(stuck) = n["stuck"].as_object() {
                    out.push_str(&format!(
                        "    {} STUCK in phase {} since {}\n",
                        s(&n["node"]),
                        stuck.get("phase").and_then(|p| p.as_str()).unwrap_or("-"),
                        stuck.get("since").and_then(|p| p.as_str()).unwrap_or("-")
                    ));
                }
            }
        }
    }
    if let Some(o) = v["orphanedBackups"].as_array()
        && !o.is_empty()
    {
        out.push_str(
            "\norphaned backups (their schedule is gone; `tidemark forget-backup NAME`):\n",
        );
        for b in o {
            out.push_str(&format!(
                "  {} (schedule {})\n",
                s(&b["backup"]),
                s(&b["schedule"])
            ));
        }
    }
    for w in v["warnings"].as_array().into_iter().flatten() {
        out.push_str(&format!("warning: {}\n", s(w)));
    }
    out
}

/// What an agent's heartbeat says about signatures, when it says anything worth a look:
/// it acts on unsigned ops, it refused records, or its key file cannot be read.
fn trust_lines(trust: &Value) -> String {
    let Ok(t) = serde_json::from_value::<tidemark_schema::control::TrustFacts>(trust.clone())
    else {
        return String::new();
    };
    let mut out = String::new();
    if t.accepts_unsigned {
        out.push_str("      INSECURE: acts on unsigned ops (--insecure-accept-unsigned)\n");
    }
    if let Some(last) = &t.last_refused {
        out.push_str(&format!(
            "      REFUSED {} untrusted record(s); the last, {} at {}: {}\n",
            t.refused_count,
            last.key,
            last.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            last.reason
        ));
    }
    if let Some(e) = &t.keys_error {
        out.push_str(&format!(
            "      trusted keys cannot be read again, so no key is trusted and every record is refused: {e}\n"
        ));
    }
    out
}
