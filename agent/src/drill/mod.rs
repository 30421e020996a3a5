//! Restore drills, one file per stage: `scratch` (the drill's own directory, and the
//! leftovers of a killed run), `select` (read and check the backup's manifests, and the
//! room for them), `check` (the declared checks against a restored standalone); `run`
//! drives them. A drill agent never touches a cluster node: it owns only its directory.

mod check;
mod run;
pub(crate) mod scratch;
pub(crate) mod select;

pub use run::run;
pub use scratch::{clean_leftovers, lock};
