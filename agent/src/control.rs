//! The agent's side of the control plane is the shared client of `tidemark-store`: the
//! agent writes only keys that name its own node (its heartbeat and its phase reports).

pub use tidemark_store::control::{ControlError, ControlPlane};
