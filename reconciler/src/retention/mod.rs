//! Retention's executor side: deleting a backup the plan (or `forget-backup`) gave up.

mod delete;

pub use delete::{delete_backup, forget_backup};
