//! tidemark-agent: the node runtime. It runs next to one mongod, beats to the control
//! plane, and carries out the ops addressed to its node: physical and external backups,
//! restores with fallback and the disk check, and the follow-up instructions.
//!
//! - [`runner`]: the main loop and op dispatch; [`doorbell`]: how it learns of new ops;
//! - [`backup`], [`restore`] and [`drill`]: one folder per pipeline, one file per stage;
//! - [`pitr`]: oplog slicing for point-in-time recovery, on the node the reconciler assigns;
//! - [`mongod`]: the mongod seam (wire commands, the backup cursor, processes);
//! - [`storage`]: the backup storage seam (streamed, compressed, checksummed objects);
//! - [`control`]: the shared control-plane client (from `tidemark-store`).

pub mod backup;
pub mod config;
pub mod control;
pub mod disk;
pub mod doorbell;
pub mod drill;
pub mod error;
pub mod heartbeat;
pub mod mongod;
pub mod node;
pub mod oplog;
pub mod pitr;
pub mod restore;
pub mod runner;
pub mod selective;
pub mod trust;
pub use tidemark_store::storage;
