//! Unified diffs of each document's canonical YAML against the last applied revision.

use std::collections::BTreeMap;

use serde::Serialize;
use similar::TextDiff;
use tidemark_schema::control::AppliedRevision;
use tidemark_schema::validate::DesiredState;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Change {
    Added,
    Changed,
    Removed,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DocumentDiff {
    pub kind: String,
    pub name: String,
    /// The file in the desired state (or, when removed, where it was last applied from).
    pub file: String,
    pub change: Change,
    pub unified_diff: String,
}

/// Diffs of every document that was added, changed or removed, in kind/name order.
pub fn document_diffs(
    desired: &DesiredState,
    applied: Option<&AppliedRevision>,
) -> Vec<DocumentDiff> {
    let old: BTreeMap<(String, String), (&str, &str)> = applied
        .into_iter()
        .flat_map(|a| a.documents.iter())
        .map(|d| {
            (
                (d.kind.clone(), d.name.clone()),
                (d.canonical_yaml.as_str(), d.file.as_str()),
            )
        })
        .collect();
    let mut out = Vec::new();
    for doc in &desired.documents {
        let key = (doc.kind().to_string(), doc.name().to_string());
        let new_yaml = doc.canonical_yaml();
        let (change, old_yaml) = match old.get(&key) {
            None => (Change::Added, ""),
            Some((y, _)) if *y == new_yaml => continue,
            Some((y, _)) => (Change::Changed, *y),
        };
        out.push(DocumentDiff {
            kind: key.0.clone(),
            name: key.1.clone(),
            file: doc.file.clone(),
            change,
            unified_diff: unified(&key, old_yaml, &new_yaml),
        });
    }
    for (key, (yaml, file)) in &old {
        if desired
            .documents
            .iter()
            .all(|d| (d.kind().as_str(), d.name()) != (key.0.as_str(), key.1.as_str()))
        {
            out.push(DocumentDiff {
                kind: key.0.clone(),
                name: key.1.clone(),
                file: file.to_string(),
                change: Change::Removed,
                unified_diff: unified(key, yaml, ""),
            });
        }
    }
    out.sort_by(|a, b| (&a.kind, &a.name).cmp(&(&b.kind, &b.name)));
    out
}

fn unified(key: &(String, String), old: &str, new: &str) -> String {
    let label = format!("{}/{}", key.0, key.1);
    TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("applied {label}"), &format!("desired {label}"))
        .to_string()
}

/// ANSI colours for a terminal: additions green, removals red, hunk headers cyan.
pub fn colorize(diff: &str) -> String {
    diff.lines()
        .map(|l| {
            let code = if l.starts_with("+++") || l.starts_with("---") {
                "1"
            } else if l.starts_with('+') {
                "32"
            } else if l.starts_with('-') {
                "31"
            } else if l.starts_with("@@") {
                "36"
            } else {
                return format!("{l}\n");
            };
            format!("\x1b[{code}m{l}\x1b[0m\n")
        })
        .collect()
}
