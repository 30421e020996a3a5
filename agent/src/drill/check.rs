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
        // Counted, not read from the collection's size metadata (`count` without a
        // query), which can be off after an unclean shutdown and oplog recovery.
        let reply = client
            .client()
            .database(db)
            .run_command(doc! {"aggregate": coll, "pipeline": [{"$count": "n"}], "cursor": {}})
            .await
            .map_err(|e| cmd_err(client, "aggregate", e))?;
        let n = reply
            .get_document("cursor")
            .ok()
            .and_then(|c| c.get_array("firstBatch").ok())
            .and_then(|b| b.first())
            .and_then(|d| d.as_document())
            .and_then(|d| d.get("n"))
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

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_schema::model::CollectionCheck;

    fn manifest(rs: &str, hashes: &[(&str, &str)], unstable: &[&str]) -> ReplicaSetManifest {
        let mut m: ReplicaSetManifest = serde_json::from_value(serde_json::json!({
            "format": 1, "backup": "b", "cluster": "c", "replicaSet": rs, "node": "n:1",
            "type": "physical", "compression": "zstd",
            "startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:00:00Z",
            "backupId": "", "checkpointTimestamp": {"t": 1, "i": 1}, "lastWrite": {"t": 1, "i": 1},
            "mongodVersion": "7.0.14", "flavor": "psmdb", "storageOptions": {}, "files": [],
            "uncompressedBytes": 0, "storedBytes": 0
        }))
        .unwrap();
        m.collection_hashes = hashes
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        m.unstable_hashes = unstable.iter().map(|s| s.to_string()).collect();
        m
    }

    fn seen(counts: &[(&str, u64)], hashes: &[(&str, &str)]) -> Observed {
        Observed {
            counts: counts.iter().map(|(a, n)| (a.to_string(), *n)).collect(),
            hashes: hashes
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        }
    }

    #[test]
    fn counts_add_up_over_replica_sets_and_hashes_compare_per_replica_set() {
        let checks = DrillChecks {
            collections: vec![
                CollectionCheck {
                    namespace: "shop.orders".into(),
                    min_documents: 100,
                },
                CollectionCheck {
                    namespace: "shop.gone".into(),
                    min_documents: 0,
                },
            ],
            db_hash: vec!["shop.products".into(), "shop.busy".into()],
        };
        let (a, b) = (
            manifest("rs-a", &[("shop.products", "h1")], &["shop.busy"]),
            manifest("rs-b", &[("shop.products", "h2")], &[]),
        );
        let verdicts = judge(
            &checks,
            &[
                (&a, seen(&[("shop.orders", 60)], &[("shop.products", "h1")])),
                (&b, seen(&[("shop.orders", 50)], &[("shop.products", "zz")])),
            ],
        );
        let status: Vec<(&str, DrillCheckStatus)> = verdicts
            .iter()
            .map(|v| (v.namespace.as_str(), v.status))
            .collect();
        use DrillCheckStatus::*;
        assert_eq!(
            status,
            [
                ("shop.orders", Passed), // 60 + 50 >= 100
                ("shop.gone", Failed),   // absent everywhere
                ("shop.products", Passed),
                ("shop.products", Failed), // rs-b's hash differs
                ("shop.busy", Skipped),    // changed during the backup
                ("shop.busy", Skipped),    // never recorded on rs-b
            ]
        );
        assert!(verdicts[3].detail.contains("rs-b"), "{:?}", verdicts[3]);
        assert!(verdicts[4].detail.contains("changed while the backup ran"));
    }
}
