//! `tidemark playground`: a replica set, one agent per node and a reconciler on this
//! machine, under one directory, in one command. One file per stage: `layout` (the
//! directory, its lock, leftovers of a crashed run, the starter policies), `nodes` (the
//! mongods and their replica set), `procs` (agents and reconciler, and stopping it all),
//! `run` (the whole, and what it prints), `topology` (one replica set, or a sharded
//! cluster's three).

mod layout;
mod nodes;
mod procs;
mod run;
mod topology;

pub use run::{Settings, run};
