//! The control plane: one client over object storage, and the observed state read from it.

mod client;
mod error;
mod observe;

pub use client::{ControlPlane, Created};
pub use error::ControlError;
pub use observe::{ObservedState, observe};
