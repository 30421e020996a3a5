//! The control plane: object-storage keys every tidemark process agrees on, and the
//! records stored under them. See `docs/control-plane.md` for the layout and write order.

mod doorbell;
mod keys;
mod logs;
mod ops;
mod partition;
mod pitr;
mod records;
mod selective;
pub mod signature;

pub use doorbell::*;
pub use keys::*;
pub use logs::*;
pub use ops::*;
pub use partition::*;
pub use pitr::*;
pub use records::*;
pub use selective::*;
