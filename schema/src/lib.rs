//! tidemark-schema: every data contract of tidemark, pure (no I/O, no async).
//!
//! - [`model`]: the desired-state kinds operators write in YAML;
//! - [`validate`]: turns YAML text into validated documents, collecting every error;
//! - [`control`]: the control-plane layout and the records stored there;
//! - [`manifest`]: the backup manifest and the storage layout of backups;
//! - [`chain`]: an incremental chain's manifests, checked, and how each file is rebuilt;
//! - [`encryption`]: encryption at rest as backups record it and nodes report it;
//! - [`jsonschema`]: the JSON Schema generated from the model for editors.

pub mod chain;
pub mod control;
pub mod encryption;
pub mod jsonschema;
pub mod manifest;
pub mod model;
pub mod validate;
