//! `tidemark backup-finish` / `restore-finish`: the operator's snapshot copy is done.

use tidemark_schema::control::{FinishSignal, finish_key, op_key};
use tidemark_store::control::Created;

use super::args::FinishArgs;
use super::exit::ExitStatus;
use super::writable::open_writable_control;

pub fn run(args: FinishArgs) -> anyhow::Result<ExitStatus> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let control = open_writable_control(&args.control)?;
        let op = op_key(&args.op_id);
        if !control.exists(&op).await? {
            anyhow::bail!(
                "no op {} in the control plane {} ({op} is missing)",
                args.op_id,
                args.control
            );
        }
        let key = finish_key(&args.op_id);
        let signal = FinishSignal {
            op_id: args.op_id.clone(),
            at: chrono::Utc::now(),
            by: Some(super::who::who_runs_this()),
        };
        match control.create(&key, &signal).await? {
            Created::New => println!("op {}: finish signalled", args.op_id),
            Created::Existed => {
                println!("op {}: finish was already signalled", args.op_id)
            }
        }
        Ok(ExitStatus::Ok)
    })
}
