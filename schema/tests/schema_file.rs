//! The checked-in JSON Schema must match the one generated from the Rust types.
//! Regenerate with `TIDEMARK_BLESS=1 cargo test -p tidemark-schema --test schema_file`.

use std::path::PathBuf;

#[test]
fn checked_in_schema_is_current() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("json/tidemark-v1.schema.json");
    let generated = tidemark_schema::jsonschema::document_schema_text();
    if std::env::var_os("TIDEMARK_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &generated).unwrap();
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == generated,
        "schema/json/tidemark-v1.schema.json is stale; regenerate it with \
         TIDEMARK_BLESS=1 cargo test -p tidemark-schema --test schema_file"
    );
}
