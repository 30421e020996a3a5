//! What `tidemark diff` shows besides the plan: per-document diffs of canonical YAML.

mod docdiff;

pub use docdiff::{Change, DocumentDiff, colorize, document_diffs};
