//! The control plane as the reconciler sees it: opening the store, reading observed state.

mod error;
mod observe;
mod store;

pub use error::ControlError;
pub use observe::{ObservedState, observe};
pub use store::{ControlStore, open_control};
