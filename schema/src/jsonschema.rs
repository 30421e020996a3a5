//! The JSON Schema of a desired-state document, generated from the model types.
//!
//! The same schema drives the structure pass of validation, so editors (through the
//! `yaml-language-server` comment in the examples) and `tidemark validate` never disagree.

use crate::model::Resource;

/// The schema as a JSON value.
pub fn document_schema() -> serde_json::Value {
    let mut schema = serde_json::to_value(schemars::schema_for!(Resource))
        .expect("a generated schema always serializes");
    if let Some(obj) = schema.as_object_mut() {
        obj.insert("title".into(), "tidemark desired-state document".into());
    }
    schema
}

/// The schema as pretty JSON with a trailing newline, as checked into `schema/json/`.
pub fn document_schema_text() -> String {
    let mut text =
        serde_json::to_string_pretty(&document_schema()).expect("JSON values always serialize");
    text.push('\n');
    text
}
