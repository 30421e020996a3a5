//! `tidemark validate PATH…`: every error in one run, exit 0 when valid and 1 when not.

use std::path::Path;

use anyhow::Context;
use tidemark_reconciler::source::{DesiredStateSource, DirSource};
use tidemark_schema::validate::{SourceFile, validate_files};

use super::args::{OutputFormat, ValidateArgs};
use super::exit::ExitStatus;

pub fn run(args: ValidateArgs) -> anyhow::Result<ExitStatus> {
    let mut files = Vec::new();
    for path in &args.paths {
        files.extend(read_path(path)?);
    }
    let validation = validate_files(&files);
    match args.output {
        OutputFormat::Json => {
            let out = serde_json::json!({
                "valid": validation.is_valid(),
                "files": validation.files,
                "documents": validation.state.documents.len(),
                "errors": validation.errors,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        OutputFormat::Text => {
            for e in &validation.errors {
                eprintln!("{e}");
            }
            if validation.is_valid() {
                println!(
                    "valid: {} document(s) in {} file(s)",
                    validation.state.documents.len(),
                    validation.files
                );
            } else {
                eprintln!(
                    "invalid: {} error(s) in {} file(s)",
                    validation.errors.len(),
                    validation.files
                );
            }
        }
    }
    Ok(if validation.is_valid() {
        ExitStatus::Ok
    } else {
        ExitStatus::Failure
    })
}

/// A file is read as given (whatever its extension); a directory as a policy source.
fn read_path(path: &Path) -> anyhow::Result<Vec<SourceFile>> {
    let meta = std::fs::metadata(path).with_context(|| format!("{}", path.display()))?;
    if meta.is_dir() {
        let revision = DirSource::new(path).load()?;
        let prefix = path.display().to_string();
        Ok(revision
            .files
            .into_iter()
            .map(|f| SourceFile {
                path: format!("{}/{}", prefix.trim_end_matches('/'), f.path),
                bytes: f.bytes,
            })
            .collect())
    } else {
        let bytes = std::fs::read(path).with_context(|| format!("{}", path.display()))?;
        Ok(vec![SourceFile {
            path: path.display().to_string(),
            bytes,
        }])
    }
}
