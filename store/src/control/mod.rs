//! The control plane: one client over object storage, and the observed state read from it.

mod chunks;
mod client;
mod counting;
mod error;
mod leadership;
pub mod lease;
mod members;
mod observe;
mod read_cache;

pub use chunks::ChunkCache;
pub use client::{ControlPlane, Created, LeaseClock, is_report_key};
pub use counting::{CountingStore, RequestCounts, RequestKind, control_requests};
pub use error::ControlError;
pub use leadership::Leadership;
pub use lease::{Lease, Standing, Vacated};
pub use members::{MemberState, Members};
pub use observe::{ObservedState, observe, observe_with};
