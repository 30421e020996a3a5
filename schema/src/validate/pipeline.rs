//! The whole validation: parse every file, check structure, type, then semantics.

use super::document::{DesiredState, Document};
use super::error::ValidationError;
use super::node::Node;
use super::parse::{SourceFile, parse_file};
use super::semantic;
use super::structure::Walker;
use crate::jsonschema::document_schema;
use crate::model::Resource;

/// The outcome of validating one revision. The state holds every document that was
/// well-formed; it is to be used only when `errors` is empty.
#[derive(Debug, Default)]
pub struct Validation {
    pub state: DesiredState,
    pub errors: Vec<ValidationError>,
    pub files: usize,
}

impl Validation {
    pub fn is_valid(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Validates a revision's files. Never panics; reports every error it can find.
pub fn validate_files(files: &[SourceFile]) -> Validation {
    let walker = Walker::new(walker_root());
    let mut errors = Vec::new();
    let mut documents = Vec::new();
    for file in files {
        let trees = match parse_file(file) {
            Ok(trees) => trees,
            Err(e) => {
                errors.push(*e);
                continue;
            }
        };
        for (index, tree) in trees.into_iter().enumerate() {
            if let Some(doc) = structure(file, index, tree, &walker, &mut errors) {
                documents.push(doc);
            }
        }
    }
    semantic::check(&documents, &mut errors);
    errors.sort();
    errors.dedup();
    Validation {
        state: DesiredState::new(documents),
        errors,
        files: files.len(),
    }
}

fn structure(
    file: &SourceFile,
    index: usize,
    tree: Node,
    walker: &Walker,
    errors: &mut Vec<ValidationError>,
) -> Option<Document> {
    let kind = tree.get("kind").and_then(Node::as_str).map(str::to_string);
    let name = tree
        .at_path("metadata.name")
        .and_then(Node::as_str)
        .map(str::to_string);
    let named = |mut e: ValidationError| {
        e.kind = kind.clone();
        e.name = name.clone();
        e
    };
    if !matches!(tree.value, super::node::Value::Map(_)) {
        errors.push(named(ValidationError::at(
            &file.path,
            tree.pos,
            format!(
                "document {} is {}, but a document must be a mapping with apiVersion, kind, \
                 metadata and spec",
                index + 1,
                tree.value.type_name()
            ),
        )));
        return None;
    }
    let mut issues = Vec::new();
    walker.walk(walker_root(), &tree, "", &mut issues);
    if !issues.is_empty() {
        errors.extend(issues.into_iter().map(|i| {
            let mut e = named(ValidationError::at(&file.path, i.pos, i.message));
            e.field = i.field;
            e
        }));
        return None;
    }
    match serde_json::from_value::<Resource>(tree.to_json()) {
        Ok(resource) => Some(Document {
            file: file.path.clone(),
            index,
            resource,
            tree,
        }),
        Err(e) => {
            // The structure pass should have caught this; report rather than panic.
            errors.push(named(ValidationError::at(
                &file.path,
                tree.pos,
                e.to_string(),
            )));
            None
        }
    }
}

/// The walk starts at the schema root, which `Walker` resolves itself.
fn walker_root() -> &'static serde_json::Value {
    static ROOT: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    ROOT.get_or_init(document_schema)
}
