//! Selective restore, one file per stage: `live` (the running replica set: its primary,
//! the targets, the staging collections and the renames), `plan` (the collections the
//! patterns select in the restored backup, with their options and indexes), `copy`
//! (documents into the cluster, in batches, with progress); `run` drives them on the
//! drill agent's scratch standalone. No node of the cluster is ever stopped.

mod copy;
mod live;
mod plan;
mod run;

pub use live::after_restart;
pub use run::run;
