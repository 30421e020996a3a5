//! The command line: argument types, the exit-code table and the verbs.

pub mod agent;
mod args;
pub mod cancel;
pub mod describe;
pub mod diff;
mod exit;
pub mod finish;
pub mod forget;
pub mod keys;
mod leaders;
pub mod list;
pub mod logs;
pub mod playground;
pub mod reconcile;
pub mod status;
pub mod validate;
pub mod verify;
mod who;
mod writable;

pub use args::{Cli, Command};
pub use exit::ExitStatus;
