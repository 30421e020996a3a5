//! The agent's side of the control plane is the shared client of `tidemark-store`: the
//! agent writes only keys that name its own node (its heartbeat and its phase reports),
//! and, create-if-absent, a restore's gate when it must refuse before go.

pub use tidemark_store::control::{ControlError, ControlPlane};
