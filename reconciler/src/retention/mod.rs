//! Retention's executor side: deleting a backup the plan (or `forget-backup`) gave up,
//! and compacting the records of operations long ended.

mod compact;
mod delete;

pub use compact::{BUDGET, Compacted, PER_PASS, compact_ops};
pub use delete::{delete_backup, forget_backup};
