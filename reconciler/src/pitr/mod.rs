//! Carrying out the point-in-time steps of a plan: the slicing assignments agents follow,
//! and the deletion of chunks no kept backup can use.

mod assign;
mod chunks;

pub use assign::set_slicing;
pub use chunks::delete_chunks;
