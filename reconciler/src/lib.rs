//! tidemark-reconciler: desired-state sources, the control-plane view, and the pure planner.
//!
//! - [`source`]: where desired state comes from (directory, git), behind one seam;
//! - [`control`]: opening the control plane and reading the observed state from it;
//! - [`plan`]: `plan(desired, observed, now)`, a pure function, and its rendering;
//! - [`preview`]: the document diffs `tidemark diff` shows;
//! - [`execute`], [`backup`], [`restore`], [`selective`], [`drill`], [`pitr`]: carrying out
//!   plans and following operations;
//! - [`run`]: the reconcile loop.

pub mod backup;
pub mod drill;
pub use tidemark_store::control;
pub mod execute;
pub mod pitr;
pub mod plan;
pub mod preview;
pub mod restore;
pub mod retention;
pub mod run;
pub mod selective;
pub mod source;
