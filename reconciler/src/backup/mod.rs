//! One-shot backups, one file per stage: `start` (choose nodes, record, create the op),
//! `finish` (follow the agents, read every manifest back, then the completion marker and
//! the catalog entry) and `verify` (check it where it is stored, when its schedule asks).

mod finish;
mod start;
mod verify;

pub use finish::advance;
pub use start::{BackupSettings, start};
pub use verify::{Verifier, verify_and_record};
