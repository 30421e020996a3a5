//! The drill's checks: what a restored standalone holds (collections, document counts,
//! `dbHash`), then the verdict of each declared check against it and against the hashes
//! the backup recorded.

use std::collections::BTreeMap;

use bson::doc;
use tidemark_schema::control::{DrillCheckResult, DrillCheckStatus};
use tidemark_schema::manifest::ReplicaSetManifest;
use tidemark_schema::model::DrillChecks;

use crate::error::AgentError;
use crate::mongod::{MongodClient, MongodError};

/// What one replica set's restored data holds of the namespaces the checks name.
#[derive(Debug, Default)]
pub struct Observed {
    /// Namespace → documents, for collections that exist.
    pub counts: BTreeMap<String, u64>,
    pub hashes: BTreeMap<String, String>,
}

fn cmd_err(client: &MongodClient, command: &str, e: impl ToString) -> AgentError {
    MongodError::Command {
        node: client.node.clone(),
        command: command.into(),
        message: e.to_string(),
    }
    .into()
}

/// Reads what the checks need from a running standalone.
pub async fn observe(client: &MongodClient, checks: &DrillChecks) -> Result<Observed, AgentError> {
    let mut seen = Observed::default();
    for c in &checks.collections {
        let Some((db, coll)) = c.namespace.split_once('.') else {
            continue; // validation refuses such names
        };
        let names = client
            .client()
            .database(db)
            .list_collection_names()
            .filter(doc! {"name": coll})
            .await
            .map_err(|e| cmd_err(client, "listCollections", e))?;
        if !names.iter().any(|n| n == coll) {
            continue;
        }
        let reply = client
            .client()
            .database(db)
            .run_command(doc! {"count": coll})
            .await
            .map_err(|e| cmd_err(client, "count", e))?;
        let n = reply
            .get("n")
            .and_then(|n| n.as_i64().or_else(|| n.as_i32().map(i64::from)))
            .unwrap_or(0);
        seen.counts.insert(c.namespace.clone(), n.max(0) as u64);
    }
    if !checks.db_hash.is_empty() {
        seen.hashes = client.db_hashes(&checks.db_hash).await?;
    }
    Ok(seen)
}

/// Every declared check's verdict. Counts add up over replica sets (a sharded
/// collection is spread over shards); a hash is compared per replica set with what that
/// replica set's manifest recorded.
pub fn judge(
    checks: &DrillChecks,
    per_rs: &[(&ReplicaSetManifest, Observed)],
) -> Vec<DrillCheckResult> {
    let mut out = Vec::new();
    for c in &checks.collections {
        let found: Vec<u64> = per_rs
            .iter()
            .filter_map(|(_, o)| o.counts.get(&c.namespace).copied())
            .collect();
        let total: u64 = found.iter().sum();
        let (status, detail) = if found.is_empty() {
            (
                DrillCheckStatus::Failed,
                format!(
                    "collection {} does not exist in the restored data",
                    c.namespace
                ),
            )
        } else if total < c.min_documents {
            (
                DrillCheckStatus::Failed,
                format!(
                    "{} holds {total} documents; at least {} are required",
                    c.namespace, c.min_documents
                ),
            )
        } else {
            (
                DrillCheckStatus::Passed,
                format!(
                    "{} holds {total} documents (at least {} required)",
                    c.namespace, c.min_documents
                ),
            )
        };
        out.push(DrillCheckResult {
            check: "collection".into(),
            namespace: c.namespace.clone(),
            status,
            detail,
        });
    }
    for ns in &checks.db_hash {
        for (m, o) in per_rs {
            let rs = &m.replica_set;
            let (status, detail) = match (m.collection_hashes.get(ns), o.hashes.get(ns)) {
                (None, _) if m.unstable_hashes.contains(ns) => (
                    DrillCheckStatus::Skipped,
                    format!(
                        "{rs}: {ns} changed while the backup ran, so no hash was recorded to \
                         compare with"
                    ),
                ),
                (None, _) => (
                    DrillCheckStatus::Skipped,
                    format!(
                        "{rs}: the backup recorded no hash of {ns} (taken before the drill \
                         asked for it, or the collection did not exist)"
                    ),
                ),
                (Some(want), None) => (
                    DrillCheckStatus::Failed,
                    format!("{rs}: {ns} had dbHash {want} at backup time but is missing"),
                ),
                (Some(want), Some(got)) if want == got => (
                    DrillCheckStatus::Passed,
                    format!("{rs}: dbHash of {ns} is {got}, as recorded at backup time"),
                ),
                (Some(want), Some(got)) => (
                    DrillCheckStatus::Failed,
                    format!("{rs}: dbHash of {ns} is {got}; the backup recorded {want}"),
                ),
            };
            out.push(DrillCheckResult {
                check: "dbHash".into(),
                namespace: ns.clone(),
                status,
                detail,
            });
        }
    }
    out
}
