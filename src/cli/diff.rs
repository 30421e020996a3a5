//! `tidemark diff`: per-document diffs against the last applied revision, then the plan.
//! Exit 0 no changes, 2 changes, 1 error.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use tidemark_reconciler::control::{ControlPlane, observe};
use tidemark_reconciler::plan::{PlanSettings, plan_with, render_plan};
use tidemark_reconciler::preview::{Change, colorize, document_diffs};
use tidemark_reconciler::source::{DesiredStateSource, DirSource, GitOptions, GitSource, Revision};
use tidemark_schema::validate::validate_files;

use super::args::{DiffArgs, OutputFormat, SourceArgs};
use super::exit::ExitStatus;

pub fn run(args: DiffArgs) -> anyhow::Result<ExitStatus> {
    let (description, revision) = load_source(&args.source)?;
    if let Some(why) = &revision.refused {
        anyhow::bail!(
            "revision {} of {description} is refused: {why}; the reconciler would keep the \
             last applied revision in force",
            short(&revision.id)
        );
    }
    let validation = validate_files(&revision.files);
    if !validation.is_valid() {
        for e in &validation.errors {
            eprintln!("{e}");
        }
        anyhow::bail!(
            "revision {} of {description} does not validate ({} error(s)); the reconciler would \
             keep the last applied revision in force",
            short(&revision.id),
            validation.errors.len()
        );
    }
    let now = args.now.unwrap_or_else(chrono::Utc::now);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let control = ControlPlane::open(&args.control)?;
    let observed = runtime.block_on(observe(&control))?;
    let diffs = document_diffs(&validation.state, observed.applied.as_ref());
    let settings = PlanSettings {
        dead_after: chrono::Duration::from_std(args.dead_after)?,
    };
    let plan = plan_with(&validation.state, &observed, now, settings);
    let changed = !diffs.is_empty() || plan.has_changes();
    let running = runtime.block_on(running_restores(&control, &observed, args.dead_after, now))?;
    match args.output {
        OutputFormat::Json => {
            let out = serde_json::json!({
                "formatVersion": 1,
                "source": description,
                "revision": revision.id,
                "appliedRevision": observed.applied.as_ref().map(|a| &a.revision),
                "changes": changed,
                "documents": diffs,
                "plan": plan,
                "runningRestores": running,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        OutputFormat::Text => {
            let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            println!(
                "Desired revision {} from {description}; applied revision {}",
                short(&revision.id),
                observed
                    .applied
                    .as_ref()
                    .map_or("none".to_string(), |a| short(&a.revision).to_string())
            );
            if diffs.is_empty() {
                println!("\nNo document changes.");
            }
            for d in &diffs {
                let verb = match d.change {
                    Change::Added => "added",
                    Change::Changed => "changed",
                    Change::Removed => "removed",
                };
                println!("\n{} {} {verb} ({})", d.kind, d.name, d.file);
                if color {
                    print!("{}", colorize(&d.unified_diff));
                } else {
                    print!("{}", d.unified_diff);
                }
            }
            println!();
            print!("{}", render_plan(&plan));
            if !running.is_empty() {
                println!("\nRunning restores (the next transition each is in):");
                for r in &running {
                    println!(
                        "  {}: stage {}: {}",
                        r["name"].as_str().unwrap_or_default(),
                        r["stage"].as_str().unwrap_or_default(),
                        r["detail"].as_str().unwrap_or_default()
                    );
                }
            }
        }
    }
    Ok(if changed {
        ExitStatus::Changes
    } else {
        ExitStatus::Ok
    })
}

/// Each running restore's stage, as the reconciler derives it (read only).
async fn running_restores(
    control: &ControlPlane,
    observed: &tidemark_reconciler::control::ObservedState,
    dead_after: std::time::Duration,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<Vec<serde_json::Value>> {
    use tidemark_reconciler::restore::stage_now;
    use tidemark_schema::control::OneShotKind;
    let dead_after = chrono::Duration::from_std(dead_after)?;
    let mut out = Vec::new();
    for ((kind, name), record) in &observed.oneshots {
        if *kind != OneShotKind::Restore || record.is_final() {
            continue;
        }
        // One restore's records that cannot be read are said, never a failed diff.
        match stage_now(control, record, dead_after, now).await {
            Ok(Some(s)) => {
                out.push(
                    serde_json::json!({"name": name, "stage": s.name(), "detail": s.detail()}),
                );
            }
            Ok(None) => {}
            Err(e) => out.push(serde_json::json!({
                "name": name, "stage": "unknown", "detail": format!("cannot read its records: {e}"),
            })),
        }
    }
    Ok(out)
}

fn short(id: &str) -> &str {
    let id = id.trim_start_matches("sha256:");
    &id[..id.len().min(12)]
}

fn load_source(args: &SourceArgs) -> anyhow::Result<(String, Revision)> {
    let mut source = open_source(args)?;
    let description = source.describe();
    let revision = source
        .load()
        .with_context(|| format!("reading {description}"))?;
    Ok((description, revision))
}

/// The desired-state source the flags name (shared by `diff` and `reconcile`).
pub fn open_source(args: &SourceArgs) -> anyhow::Result<Box<dyn DesiredStateSource>> {
    Ok(match (&args.policies, &args.git) {
        (Some(dir), _) => Box::new(DirSource::new(dir)),
        (None, Some(url)) => Box::new(GitSource::new(GitOptions {
            url: url.clone(),
            reference: args.reference.clone(),
            path: args.path.clone(),
            interval: args.interval,
            cache_dir: args.cache_dir.clone().unwrap_or_else(default_cache_dir),
            allowed_signers: args.allowed_signers.clone().filter(|_| args.verify_commits),
        })?),
        (None, None) => anyhow::bail!("give --policies DIR or --git URL"),
    })
}

fn default_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("tidemark")
}
