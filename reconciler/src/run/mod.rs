//! The reconcile loop: `pass` (load, observe, plan, execute, follow), `looper` (when
//! passes run, backoff after a failed one, and the stop signal), `backoff` (per one-shot
//! waits after a failing step), `follow` (one one-shot's step), `bookkeeping` (schedule
//! records and waits) and `scope` (which cluster, so which partition, a step acts on).

pub mod backoff;
mod bookkeeping;
mod follow;
mod looper;
mod pass;
mod scope;

pub use looper::{LoopOptions, run_loop};
pub use pass::{PassReport, Reconciler, desired_from_applied};
