//! `tidemark`: one binary, many roles. This file parses the command line and maps outcomes
//! to the documented exit codes; each verb lives in `cli/`.

mod cli;
mod playground;
mod serve;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command, ExitStatus};

/// Logs go to stderr, filtered by `TIDEMARK_LOG`. An agent also keeps the info lines it
/// logs inside an op for the control plane (`tidemark logs`), whatever `TIDEMARK_LOG` says.
fn init_logging(command: &Command) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_env("TIDEMARK_LOG").unwrap_or_else(|_| {
        // The daemons' phases are worth seeing by default.
        let level = if matches!(command, Command::Agent(_) | Command::Reconcile(_)) {
            "info"
        } else {
            "warn"
        };
        tracing_subscriber::EnvFilter::new(level)
    });
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(filter);
    let shipped = matches!(command, Command::Agent(_)).then(|| {
        tidemark_agent::oplog::OpLogLayer.with_filter(tracing_subscriber::filter::LevelFilter::INFO)
    });
    tracing_subscriber::registry()
        .with(stderr)
        .with(shipped)
        .init();
}

fn main() -> ExitCode {
    // Run under the name `mongod-sim` (the playground's link to this binary), be it: the
    // playground then needs no second binary, whether built by `cargo run` or installed.
    if std::env::args_os()
        .next()
        .is_some_and(|a| std::path::Path::new(&a).file_name() == Some("mongod-sim".as_ref()))
    {
        return mongod_sim::process::main();
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                ExitStatus::Usage
            } else {
                ExitStatus::Ok
            };
            let _ = e.print();
            return code.into();
        }
    };
    init_logging(&cli.command);
    let result = match cli.command {
        Command::Validate(args) => cli::validate::run(args),
        Command::Diff(args) => cli::diff::run(args),
        Command::Agent(args) => cli::agent::run(*args),
        Command::Reconcile(args) => cli::reconcile::run(*args),
        Command::DescribeBackup(args) => cli::describe::run(args, "backup"),
        Command::DescribeRestore(args) => cli::describe::run(args, "restore"),
        Command::BackupFinish(args) => cli::finish::run(args),
        Command::RestoreFinish(args) => cli::finish::run(args),
        Command::Status(args) => cli::status::run(args),
        Command::ForgetBackup(args) => cli::forget::run(args),
        Command::CancelBackup(args) => cli::cancel::run(args, "backup"),
        Command::CancelRestore(args) => cli::cancel::run(args, "restore"),
        Command::Logs(args) => cli::logs::run(args),
        Command::List(args) => cli::list::run(args),
        Command::Keygen(args) => cli::keys::keygen(args),
        Command::Playground(args) => cli::playground::run(args),
        Command::Verify(args) => cli::verify::run(args),
        Command::Schema => {
            print!("{}", tidemark_schema::jsonschema::document_schema_text());
            Ok(ExitStatus::Ok)
        }
    };
    match result {
        Ok(status) => status.into(),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitStatus::Failure.into()
        }
    }
}
