//! The reconcile loop: `pass` (load, observe, plan, execute, follow) and `looper` (when
//! passes run, backoff after a failed one, and the stop signal) and `backoff` (per
//! one-shot waits after a failing step).

pub mod backoff;
mod bookkeeping;
mod looper;
mod pass;
mod scope;

pub use looper::{LoopOptions, run_loop};
pub use pass::{PassReport, Reconciler, desired_from_applied};
