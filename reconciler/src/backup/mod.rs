//! One-shot backups, one file per stage: `start` (choose nodes, record, create the op) and
//! `finish` (follow the agents, read every manifest back, then the completion marker and
//! the catalog entry).

mod finish;
mod start;

pub use finish::advance;
pub use start::{BackupSettings, start};
