//! What a selective restore copies: the collections its patterns select in the restored
//! backup (read on the scratch standalone), each with its options, secondary indexes,
//! document count and target, and what happens to a target that already exists.

use std::collections::BTreeMap;

use bson::{Document, doc};
use futures::TryStreamExt;
use tidemark_schema::model::{NsPattern, OnExisting, target_namespace};

use super::live::{Live, Ns};
use crate::error::AgentError;
use crate::mongod::{MongodClient, MongodError};

/// How one collection reaches its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Copied into a staging collection, renamed onto the target at the end. `replace`
    /// drops an existing target in that rename.
    Staged { replace: bool },
    /// Upserted by `_id` into the existing target.
    Merge,
}

/// One selected collection.
#[derive(Clone, Debug)]
pub struct NsCopy {
    pub source: Ns,
    pub target: Ns,
    /// `create` options as `listCollections` reports them.
    pub options: Document,
    /// Secondary index specs as `listIndexes` reports them (without `_id_`).
    pub indexes: Vec<Document>,
    pub documents: u64,
    pub mode: Mode,
}

/// What the patterns select, and what a `db.*` passed over (views, time-series
/// collections), for the report.
pub struct Selection {
    pub copies: Vec<NsCopy>,
    pub skipped: Vec<String>,
}

/// The collections the patterns select in the standalone's data. A pattern that selects
/// nothing, a named view or time-series collection, and two collections bound for one
/// target are errors naming them; `db.*` passes over views, time-series collections and
/// tidemark's own staging collections.
pub async fn select(
    standalone: &MongodClient,
    backup: &str,
    patterns: &[String],
    rename_to: &BTreeMap<String, String>,
) -> Result<Selection, AgentError> {
    let mut out: Vec<NsCopy> = Vec::new();
    let mut skipped = Vec::new();
    for pattern in patterns {
        let p = NsPattern::parse(pattern)
            .ok_or_else(|| AgentError::Refused(format!("{pattern:?} is not a namespace")))?;
        let listed = list(standalone, &p.db).await?;
        let mut found = 0;
        for spec in &listed {
            let name = spec.get_str("name").unwrap_or_default();
            let ns = format!("{}.{name}", p.db);
            if !p.matches(&ns) || (p.collection.is_none() && name.starts_with(STAGING_START)) {
                continue;
            }
            let kind = spec.get_str("type").unwrap_or("collection");
            if kind != "collection" {
                if p.collection.is_some() {
                    return Err(AgentError::Refused(format!(
                        "{ns} in backup {backup} is a {kind}; a selective restore copies \
                         collections only"
                    )));
                }
                skipped.push(format!("{ns} (a {kind})"));
                continue;
            }
            found += 1;
            // Listed twice (`db.*` and `db.coll`): the named entry's rename applies.
            if out.iter().any(|c| c.source.to_string() == ns) {
                continue;
            }
            let source = Ns::parse(&ns).expect("db.coll");
            out.push(NsCopy {
                target: Ns::parse(&target_namespace(&ns, Some(rename_to))).expect("validated"),
                options: spec.get_document("options").cloned().unwrap_or_default(),
                indexes: indexes(standalone, &source).await?,
                documents: count(standalone, &source).await?,
                source,
                mode: Mode::Staged { replace: false },
            });
        }
        if found == 0 {
            let names: Vec<&str> = listed
                .iter()
                .filter_map(|s| s.get_str("name").ok())
                .collect();
            return Err(AgentError::Refused(format!(
                "{pattern} selects nothing in backup {backup} (database {:?} holds: {})",
                p.db,
                if names.is_empty() {
                    "no collection".to_string()
                } else {
                    names.join(", ")
                }
            )));
        }
    }
    let mut targets: BTreeMap<&Ns, &Ns> = BTreeMap::new();
    for c in &out {
        if let Some(other) = targets.insert(&c.target, &c.source) {
            return Err(AgentError::Refused(format!(
                "{} and {other} would both be written to {}; rename one of them (renameTo)",
                c.source, c.target
            )));
        }
    }
    Ok(Selection {
        copies: out,
        skipped,
    })
}

/// How tidemark's staging collections start (never selected by `db.*`).
const STAGING_START: &str = "tidemark_restore_";

/// Decides each collection's mode from whether its target exists; with `refuse`, any
/// existing target stops the restore before a write, naming every one of them.
pub async fn decide(
    live: &Live,
    copies: &mut [NsCopy],
    on_existing: OnExisting,
) -> Result<(), AgentError> {
    let mut existing = Vec::new();
    for c in copies.iter_mut() {
        let exists = live.exists(&c.target).await?;
        c.mode = match (exists, on_existing) {
            // `replace` also replaces a target created while the copy runs.
            (_, OnExisting::Replace) => Mode::Staged { replace: true },
            (false, _) => Mode::Staged { replace: false },
            (true, OnExisting::Merge) => Mode::Merge,
            (true, OnExisting::Refuse) => {
                existing.push(c.target.to_string());
                continue;
            }
        };
    }
    if existing.is_empty() {
        return Ok(());
    }
    Err(AgentError::Refused(format!(
        "target collection(s) {} already exist in {} (even an empty one counts); nothing \
         was written. Set onExisting: replace to put the backup's copy in their place, \
         onExisting: merge to upsert into them, or renameTo another name",
        existing.join(", "),
        live.name
    )))
}

async fn list(c: &MongodClient, db: &str) -> Result<Vec<Document>, AgentError> {
    cursor_command(c, db, doc! {"listCollections": 1}).await
}

async fn indexes(c: &MongodClient, ns: &Ns) -> Result<Vec<Document>, AgentError> {
    Ok(cursor_command(c, &ns.db, doc! {"listIndexes": &ns.coll})
        .await?
        .into_iter()
        .filter(|i| i.get_str("name").ok() != Some("_id_"))
        .map(|mut i| {
            i.remove("ns");
            i
        })
        .collect())
}

/// Every document of a command that answers with a cursor.
async fn cursor_command(
    c: &MongodClient,
    db: &str,
    cmd: Document,
) -> Result<Vec<Document>, AgentError> {
    let command = cmd.keys().next().cloned().unwrap_or_default();
    let cursor = c
        .client()
        .database(db)
        .run_cursor_command(cmd)
        .await
        .map_err(|e| err(c, &command, e))?;
    cursor.try_collect().await.map_err(|e| err(c, &command, e))
}

async fn count(c: &MongodClient, ns: &Ns) -> Result<u64, AgentError> {
    let reply = c
        .client()
        .database(&ns.db)
        .run_command(doc! {"count": &ns.coll})
        .await
        .map_err(|e| err(c, "count", e))?;
    Ok(match reply.get("n") {
        Some(bson::Bson::Int32(n)) => *n as u64,
        Some(bson::Bson::Int64(n)) => *n as u64,
        Some(bson::Bson::Double(n)) => *n as u64,
        _ => 0,
    })
}

fn err(c: &MongodClient, command: &str, e: mongodb::error::Error) -> AgentError {
    AgentError::Mongod(MongodError::Command {
        node: c.node.clone(),
        command: command.into(),
        message: e.to_string(),
    })
}
