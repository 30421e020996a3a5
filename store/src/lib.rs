//! tidemark-store: the two object-storage seams every tidemark process shares.
//!
//! - [`storage`]: backup storage — dbPath files streamed to and from object storage,
//!   compressed and checksummed, with retries; small JSON objects (manifests, markers);
//! - [`control`]: the control plane — one client, used by the reconciler, the agents and
//!   the CLI alike, for heartbeats, ops, phase reports, the ledger and the catalog;
//! - [`verify`]: checking a stored backup without restoring it.

pub mod control;
pub mod storage;
pub mod verify;
