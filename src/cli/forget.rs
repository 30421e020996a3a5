//! `tidemark forget-backup NAME`: deletes a backup on purpose (an orphan of a deleted
//! schedule, typically), in retention's safe order, refused while a restore needs it.

use tidemark_reconciler::execute::Executor;

use super::args::ForgetArgs;
use super::exit::ExitStatus;
use super::writable::open_writable_control;

pub fn run(args: ForgetArgs) -> anyhow::Result<ExitStatus> {
    let control = open_writable_control(&args.control)?;
    let ex = Executor {
        control,
        dead_after: chrono::Duration::seconds(240),
        op_deadline: chrono::Duration::hours(1),
        go_timeout: chrono::Duration::minutes(5),
        // Storage credentials come from this process's environment, as the agents' do.
        storage_env: tidemark_reconciler::execute::storage_env_from_process(),
        bell: Default::default(),
        signer: None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let record = runtime.block_on(tidemark_reconciler::retention::forget_backup(
        &ex,
        &args.name,
        &super::who::who_runs_this(),
        chrono::Utc::now(),
    ))?;
    println!(
        "deleted backup {} ({} B stored in {})",
        record.name,
        record.stored_bytes(),
        record.storage
    );
    Ok(ExitStatus::Ok)
}
