//! The executor: the I/O edge that carries out a plan's steps through the control plane
//! and follows running operations. It keeps nothing in memory: every call re-reads the
//! records it needs, so a restarted or a second reconciler continues where one stopped.

mod bell;
mod context;
mod oneshot;
mod single;

pub use bell::{Bell, clusters_to_ring};
pub use context::{
    ExecError, Executor, NodeView, Progress, ResultRecord, storage_env_from_process,
    storage_target, who,
};
pub use single::Single;
