//! Validation of desired-state YAML: parse, structure, types, semantics — every error at once.

mod document;
mod error;
mod node;
mod parse;
mod pipeline;
mod pitr;
mod selective;
mod semantic;
mod structure;

pub use document::{DesiredState, Document, canonical_yaml, resource_from_canonical};
pub use error::{ValidationError, closest};
pub use node::{Node, Pos, Value};
pub use parse::SourceFile;
pub use pipeline::{Validation, validate_files};
pub use semantic::host_port_problem;
