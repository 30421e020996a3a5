//! The mongod-sim process: options, start-up checks as mongod makes them, then serving.

use crate::node::Node;
use crate::options::{Cli, MONGO_VERSION, Options, PSMDB_VERSION};
use crate::slog;
use crate::storage::StorageError;
use bson::doc;
use clap::Parser;
use std::process::ExitCode;

/// mongod's exit codes: bad options, failed network set-up, uncaught start-up exception, abort.
const EXIT_BADOPTIONS: u8 = 2;
const EXIT_NET_ERROR: u8 = 48;
const EXIT_UNCAUGHT: u8 = 100;
const EXIT_ABRUPT: u8 = 14;

fn fatal(id: u32, msg: &str, error: String, code: u8) -> ExitCode {
    slog!(
        F,
        "CONTROL",
        id,
        "initandlisten",
        msg,
        doc! {"error": error}
    );
    slog!(
        I,
        "CONTROL",
        23138,
        "initandlisten",
        "Shutting down",
        doc! {"exitCode": code as i32}
    );
    ExitCode::from(code)
}

/// mongod's catch-all start-up failure.
fn init_failed(error: String) -> ExitCode {
    fatal(
        20557,
        "DBException in initAndListen, terminating",
        error,
        EXIT_UNCAUGHT,
    )
}

/// A non-empty `mongod.lock` naming a live process means another mongod owns the dbPath.
fn lock_owner(dbpath: &std::path::Path) -> Option<u32> {
    let text = std::fs::read_to_string(dbpath.join("mongod.lock")).ok()?;
    let pid: u32 = text.trim().parse().ok()?;
    // mongod holds a lock on the file; the pid alone could be a new process by now (pid
    // reuse after a crash), so it counts only while it is a process on this dbPath.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let dbpath = dbpath.to_string_lossy();
    let on_this_dbpath = cmdline
        .split(|b| *b == 0)
        .any(|a| String::from_utf8_lossy(a) == dbpath);
    (pid != std::process::id() && on_this_dbpath).then_some(pid)
}

/// mongod-sim's `main`: parses `std::env::args` as mongod does and serves until shut
/// down. The `tidemark` binary calls it too when run under the name `mongod-sim`, so the
/// playground needs no second binary.
pub fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let cli = Cli::parse();
    if cli.version {
        println!(
            "db version v{PSMDB_VERSION}\nBuild Info: {{\"version\": \"{MONGO_VERSION}\", \"psmdbVersion\": \"{PSMDB_VERSION}\", \"note\": \"mongod-sim, a test tool\"}}"
        );
        return ExitCode::SUCCESS;
    }
    let opts = match Options::from_cli(cli, argv) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("Error parsing command line: {e}");
            return ExitCode::from(EXIT_BADOPTIONS);
        }
    };
    if let Err(e) = crate::log::init(opts.logpath.as_deref()) {
        eprintln!("Failed to open log file: {e}");
        return ExitCode::from(EXIT_BADOPTIONS);
    }
    slog!(
        I,
        "CONTROL",
        4615611,
        "initandlisten",
        "MongoDB starting",
        doc! {"pid": std::process::id() as i64, "port": opts.port as i32, "dbPath": opts.dbpath.to_string_lossy().into_owned(), "architecture": "64-bit", "host": opts.host(), "simulator": "mongod-sim"}
    );
    slog!(
        I,
        "CONTROL",
        23403,
        "initandlisten",
        "Build Info",
        doc! {"buildInfo": {"version": &opts.version, "psmdbVersion": opts.psmdb_version()}}
    );
    slog!(
        I,
        "CONTROL",
        21951,
        "initandlisten",
        "Options set by command line",
        doc! {"options": {"argv": opts.argv.clone()}}
    );
    if let Some(msg) = &opts.fail_startup {
        return fatal(
            20557,
            "DBException in initAndListen, terminating",
            format!("mongod-sim fault: {msg}"),
            EXIT_UNCAUGHT,
        );
    }
    if opts.crash_at.as_deref() == Some("startup") {
        slog!(
            F,
            "CONTROL",
            4757800,
            "initandlisten",
            "Simulated crash",
            doc! {"point": "startup"}
        );
        std::process::abort();
    }
    if let Some(pid) = lock_owner(&opts.dbpath) {
        return fatal(
            20557,
            "DBException in initAndListen, terminating",
            format!(
                "DBPathInUse: Unable to lock the lock file: {} (Resource temporarily unavailable). Another mongod instance (pid {pid}) is already running on the {} directory",
                opts.dbpath.join("mongod.lock").display(),
                opts.dbpath.display()
            ),
            EXIT_UNCAUGHT,
        );
    }
    if std::fs::read(opts.dbpath.join("mongod.lock")).is_ok_and(|b| !b.is_empty()) {
        slog!(
            W,
            "STORAGE",
            22271,
            "initandlisten",
            "Detected unclean shutdown - Lock file is not empty",
            doc! {"lockFile": opts.dbpath.join("mongod.lock").to_string_lossy().into_owned()}
        );
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            return init_failed(e.to_string());
        }
    };
    match opts.encryption.master_key() {
        Ok(key) => crate::crypt::set_master_key(key),
        Err(why) => {
            return fatal(
                29101,
                "Unable to retrieve the encryption key; terminating",
                why,
                EXIT_UNCAUGHT,
            );
        }
    }
    let node = match Node::open(opts) {
        Ok(n) => n,
        Err(e @ StorageError::Corrupt { .. }) => {
            slog!(
                E,
                "STORAGE",
                22435,
                "initandlisten",
                "WiredTiger error message",
                doc! {"error": -31802, "message": e.to_string()}
            );
            return fatal(
                50853,
                "File checksum failure: the dbPath is corrupt, refusing to start",
                e.to_string(),
                EXIT_ABRUPT,
            );
        }
        Err(StorageError::Encryption(why)) => {
            slog!(
                E,
                "STORAGE",
                29036,
                "initandlisten",
                "Encryption key manager error",
                doc! {"error": &why}
            );
            return fatal(
                29101,
                "Unable to retrieve the encryption key; terminating",
                why,
                EXIT_UNCAUGHT,
            );
        }
        Err(e @ StorageError::NoDbPath(_)) => {
            return fatal(
                20557,
                "DBException in initAndListen, terminating",
                format!("NonExistentPath: {e}"),
                EXIT_UNCAUGHT,
            );
        }
        Err(e) => {
            return init_failed(e.to_string());
        }
    };
    runtime.block_on(async {
        let listeners = match crate::server::bind(&node).await {
            Ok(l) => l,
            Err(e) => {
                let _ = node.lock().store.write_lock_file(None);
                return fatal(
                    22856,
                    "Error setting up listener",
                    format!("SocketException: {e}"),
                    EXIT_NET_ERROR,
                );
            }
        };
        crate::server::serve(node, listeners).await;
        ExitCode::SUCCESS
    })
}
