//! `tidemark verify BACKUP [--read-data]`: checks a backup where it is stored, without
//! restoring it. The storage comes from the catalog entry and the applied desired state
//! (or `--storage`); the work is `tidemark_store::verify`.

use std::io::{IsTerminal, Write};

use anyhow::{Context, bail};
use tidemark_reconciler::execute::storage_target;
use tidemark_reconciler::run::desired_from_applied;
use tidemark_schema::control::{
    APPLIED_KEY, AppliedRevision, BackupRecord, StorageTarget, catalog_key,
};
use tidemark_schema::model::Compression;
use tidemark_store::control::ControlPlane;
use tidemark_store::storage::BackupStore;
use tidemark_store::verify::{Level, Problem, Progress, verify_backup};

use super::args::{OutputFormat, VerifyArgs};
use super::exit::ExitStatus;

/// Where the backup is stored: `--storage`, else its catalog entry's storage as the
/// applied revision declares it.
async fn target(
    control: &ControlPlane,
    args: &VerifyArgs,
) -> anyhow::Result<(StorageTarget, Option<BackupRecord>)> {
    let record: Option<BackupRecord> = control.get(&catalog_key(&args.backup)).await?;
    if let Some(url) = &args.storage {
        let target = StorageTarget {
            url: url.clone(),
            compression: Compression::Zstd, // read from each manifest; unused here
            compression_level: None,
            options: Default::default(),
        };
        return Ok((target, record));
    }
    let Some(record) = record else {
        bail!(
            "no backup {:?} in the catalog of {} (give --storage URL to verify one that is not)",
            args.backup,
            control.url()
        );
    };
    let applied: Option<AppliedRevision> = control.get(APPLIED_KEY).await?;
    let spec = applied
        .as_ref()
        .and_then(desired_from_applied)
        .and_then(|d| d.storage(&record.storage).cloned());
    match spec {
        Some(spec) => Ok((storage_target(&spec), Some(record))),
        None => bail!(
            "backup {:?} is in storage {:?}, which the applied desired state does not declare; \
             give --storage URL",
            args.backup,
            record.storage
        ),
    }
}

pub fn run(args: VerifyArgs) -> anyhow::Result<ExitStatus> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let control = ControlPlane::open(&args.control)?;
        let (target, record) = target(&control, &args).await?;
        let store = BackupStore::open(&target)
            .with_context(|| format!("opening backup storage {}", target.url))?;
        let level = if args.read_data {
            Level::Data
        } else {
            Level::Metadata
        };
        let terminal = std::io::stderr().is_terminal();
        let progress = move |p: Progress| {
            if terminal {
                eprint!(
                    "\rverifying: {}/{} objects, {} MiB read   ",
                    p.checked,
                    p.total,
                    p.bytes >> 20
                );
                let _ = std::io::stderr().flush();
            }
        };
        let mut verified = verify_backup(&store, &args.backup, level, &progress).await?;
        // Whatever the objects say, the catalog decides what a restore may use.
        if let Some(r) = record.filter(|r| !r.is_good()) {
            verified.problems.push(Problem {
                replica_set: None,
                file: None,
                object: Some(catalog_key(&r.name)),
                what: if r.deleting.is_some() {
                    "the catalog marks it as being deleted: no restore will use it".into()
                } else if let Some(v) = &r.verification {
                    format!(
                        "the catalog records its verification as {:?}: no restore will use it \
                         until it passes",
                        v.status
                    )
                } else {
                    format!(
                        "the catalog records it as {:?}{}: no restore will use it",
                        r.status,
                        if r.complete { "" } else { ", incomplete" }
                    )
                },
            });
        }
        if terminal {
            eprintln!();
        }
        match args.output {
            OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&verified)?),
            OutputFormat::Text => {
                for p in &verified.problems {
                    println!("problem: {p}");
                }
                println!(
                    "backup {} in {}: {} ({} replica set(s), {} object(s){}, {})",
                    verified.backup,
                    verified.storage,
                    if verified.ok() { "ok" } else { "NOT OK" },
                    verified.replica_sets.len(),
                    verified.objects,
                    if args.read_data {
                        format!(", {} B read and checked", verified.bytes_read)
                    } else {
                        String::new()
                    },
                    if verified.external {
                        "external backup: its files are in your snapshots; only the marker \
                         and manifests were checked"
                    } else if args.read_data {
                        "data and metadata"
                    } else {
                        "metadata only; --read-data reads every object"
                    }
                );
            }
        }
        Ok(if verified.ok() {
            ExitStatus::Ok
        } else {
            ExitStatus::Failure
        })
    })
}
