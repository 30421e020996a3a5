//! Carrying out the point-in-time steps of a plan: the slicing assignments agents follow,
//! the deletion of chunks no kept backup can use, and the chunk-index summaries.

mod assign;
mod chunks;
mod index;

pub use assign::{forget_foreign_assignments, set_slicing};
pub use chunks::delete_chunks;
pub use index::{Written, write_indexes};
