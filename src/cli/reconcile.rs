//! `tidemark reconcile`: the long-running reconciler, or one pass with `--once`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tidemark_reconciler::execute::Executor;
use tidemark_reconciler::run::{LoopOptions, Reconciler, run_loop};

use super::args::ReconcileArgs;
use super::diff::open_source;
use super::exit::ExitStatus;
use super::writable::open_writable_control;

pub fn run(args: ReconcileArgs) -> anyhow::Result<ExitStatus> {
    let source = open_source(&args.source)?;
    let control = open_writable_control(&args.control)?;
    let ex = Executor {
        control,
        dead_after: chrono::Duration::from_std(args.dead_after)?,
        op_deadline: chrono::Duration::from_std(args.op_deadline)?,
        storage_env: Vec::new(),
    };
    tracing::info!(source = %source.describe(), control = %args.control, "starting reconciler");
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let mut rec = Reconciler::new(source, ex);
        if args.once {
            let report = rec.pass(chrono::Utc::now()).await?;
            for line in &report.finished {
                println!("finished: {line}");
            }
            for line in &report.running {
                println!("running: {line}");
            }
            for line in &report.waiting {
                println!("waiting: {line}");
            }
            for e in &report.errors {
                eprintln!("error: {e}");
            }
            return Ok(if !report.errors.is_empty() {
                ExitStatus::Failure
            } else if !report.running.is_empty() {
                ExitStatus::Running
            } else {
                ExitStatus::Ok
            });
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("a SIGTERM handler can be installed");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::info!("stopping after the current pass");
            flag.store(true, Ordering::SeqCst);
        });
        let opts = LoopOptions {
            interval: args.source.interval,
            follow_interval: args.follow_interval,
        };
        run_loop(&mut rec, &opts, stop).await;
        Ok(ExitStatus::Ok)
    })
}
