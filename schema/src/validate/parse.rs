//! Reads one source file into YAML document trees: UTF-8 check, bounded YAML parsing.

use super::error::ValidationError;
use super::node::{Node, Pos, Value};

/// A desired-state file as read from a directory or a git tree: a path relative to the
/// source root, and its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFile {
    pub path: String,
    pub bytes: Vec<u8>,
}

/// Parsing limits. Policy files are small; these bounds make a hostile file (a
/// billion-laughs alias bomb, a node storm) fail fast in bounded memory.
fn options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_reader_input_bytes = Some(16 * 1024 * 1024);
    budget.max_events = 200_000;
    budget.max_aliases = 1_000;
    budget.max_anchors = 1_000;
    budget.max_nodes = 100_000;
    budget.max_depth = 48;
    budget.max_recorded_anchor_events = 100_000;
    budget.max_recorded_anchor_bytes = 4 * 1024 * 1024;
    budget.max_total_scalar_bytes = 8 * 1024 * 1024;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options.alias_limits.max_total_replayed_events = 100_000;
    options.with_snippet = false;
    options
}

/// The non-empty documents of a file, or the error that stopped the parse.
pub fn parse_file(file: &SourceFile) -> Result<Vec<Node>, Box<ValidationError>> {
    let text = match std::str::from_utf8(&file.bytes) {
        Ok(text) => text,
        Err(e) => {
            let valid = &file.bytes[..e.valid_up_to()];
            let line = valid.iter().filter(|b| **b == b'\n').count() as u32 + 1;
            let column =
                (valid.len() - valid.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1)) as u32
                    + 1;
            return Err(Box::new(ValidationError::at(
                &file.path,
                Pos { line, column },
                format!(
                    "the file is not valid UTF-8 (byte offset {}); save it as UTF-8",
                    e.valid_up_to()
                ),
            )));
        }
    };
    let docs: Vec<Node> =
        serde_saphyr::from_multiple_with_options(text, options()).map_err(|e| {
            let pos = e
                .location()
                .map(|l| Pos {
                    line: l.line() as u32,
                    column: l.column() as u32,
                })
                .unwrap_or(Pos { line: 1, column: 1 });
            Box::new(ValidationError::at(&file.path, pos, yaml_message(&e)))
        })?;
    Ok(docs
        .into_iter()
        .filter(|d| d.value != Value::Null)
        .collect())
}

/// serde-saphyr's message without a trailing location, which our prefix already carries.
fn yaml_message(e: &serde_saphyr::Error) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or("invalid YAML").trim();
    let cut = first.find(" at line ").map_or(first, |i| &first[..i]);
    format!("invalid YAML: {cut}")
}
