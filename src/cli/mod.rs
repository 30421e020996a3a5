//! The command line: argument types, the exit-code table and the verbs.

mod args;
pub mod diff;
mod exit;
pub mod validate;

pub use args::{Cli, Command};
pub use exit::ExitStatus;
