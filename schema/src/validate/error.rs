//! A validation error: where it is (file, line, column, document) and what is wrong.

use serde::Serialize;

use super::node::Pos;

/// One problem found in the desired state. Every error names its file and position; the
/// kind and name are there once the document got far enough to have them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ValidationError {
    pub file: String,
    pub line: u32,
    pub column: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The field, as a dotted path in the user's own key names (`spec.retention.keepLast`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub field: String,
    pub message: String,
}

impl ValidationError {
    /// An error of the revision as a whole (an unsigned commit), tied to no file.
    pub fn whole(message: impl Into<String>) -> Self {
        ValidationError {
            file: String::new(),
            line: 0,
            column: 0,
            kind: None,
            name: None,
            field: String::new(),
            message: message.into(),
        }
    }

    pub fn at(file: &str, pos: Pos, message: impl Into<String>) -> Self {
        ValidationError {
            file: file.to_string(),
            line: pos.line,
            column: pos.column,
            kind: None,
            name: None,
            field: String::new(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ValidationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.file.is_empty() {
            write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        }
        match (&self.kind, &self.name) {
            (Some(k), Some(n)) => write!(f, "{k} {n:?}: ")?,
            (Some(k), None) => write!(f, "{k}: ")?,
            _ => {}
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// The closest of `candidates` to `word`, for "did you mean" hints.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| {
            (
                strsim::jaro_winkler(&c.to_lowercase(), &word.to_lowercase()),
                c,
            )
        })
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// ` (did you mean "x"?)` or nothing.
pub fn hint(word: &str, candidates: &[&str]) -> String {
    match closest(word, candidates.iter().copied()) {
        Some(c) => format!(" (did you mean {c:?}?)"),
        None => String::new(),
    }
}
