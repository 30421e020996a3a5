//! `tidemark backup-finish` / `restore-finish`: the operator's snapshot copy is done.

use object_store::{ObjectStoreExt, PutMode, PutPayload, path::Path};
use tidemark_schema::control::{FinishSignal, finish_key, op_key};

use super::args::FinishArgs;
use super::exit::ExitStatus;
use super::writable::open_writable_control;

pub fn run(args: FinishArgs) -> anyhow::Result<ExitStatus> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let store = open_writable_control(&args.control)?;
        let op = op_key(&args.op_id);
        if store.head(&Path::from(op.as_str())).await.is_err() {
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
        };
        match store
            .put_opts(
                &Path::from(key.as_str()),
                PutPayload::from(serde_json::to_vec_pretty(&signal)?),
                PutMode::Create.into(),
            )
            .await
        {
            Ok(_) => println!("op {}: finish signalled", args.op_id),
            Err(object_store::Error::AlreadyExists { .. }) => {
                println!("op {}: finish was already signalled", args.op_id)
            }
            Err(e) => anyhow::bail!("{key}: {e}"),
        }
        Ok(ExitStatus::Ok)
    })
}
