//! The physical restore of one node, one file per stage as pgBackRest lays it out:
//! `validate` (pre-checks while mongod is up), `chain` (an increment's chain of
//! manifests), `disk` (the fallback space rule), `stop`, `fallback` (move aside or wipe),
//! `fetch` (download, rebuild and verify; `prove` for a rebuilt file), `recover` (the standalone starts), `replay` (a
//! point-in-time restore's oplog), `finish`; `run` drives them and `actions` holds the
//! follow-up instructions (revert, wipe, remove the fallback, start as a member).

mod actions;
pub mod chain;
mod disk;
pub mod fallback;
pub mod fetch;
mod prove;
pub(crate) mod recover;
mod replay;
mod run;
mod stop;
pub(crate) mod validate;

pub use actions::{remove_fallback, revert, start_member, wipe};
pub use fallback::{FALLBACK_DIR, FallbackError, fallback_dir, fallback_of};
pub use run::run;
pub use validate::Captured;
