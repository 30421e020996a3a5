//! The control plane: one client over object storage, and the observed state read from it.

mod chunks;
mod client;
mod counting;
mod error;
pub mod lease;
mod observe;
mod read_cache;

pub use chunks::ChunkCache;
pub use client::{ControlPlane, Created, LeaseClock, is_report_key};
pub use counting::{CountingStore, RequestCounts, RequestKind, control_requests};
pub use error::ControlError;
pub use lease::{Lease, Standing};
pub use observe::{ObservedState, observe, observe_with};
