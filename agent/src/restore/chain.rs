//! The manifests a restore needs: the backup's own, and for an increment every backup of
//! its chain back to the base, read from storage and checked to belong together before
//! anything is touched. A full backup is a chain of one.

use tidemark_schema::chain::{MAX_CHAIN, check_links, file_plans};
use tidemark_schema::manifest::{ReplicaSetManifest, layout};

use super::validate::{check_restorable, read_object};
use crate::error::AgentError;
use crate::storage::BackupStore;

/// `newest` and the manifests it builds on, base first. Every refusal names the backup
/// and object at fault and says that nothing was touched.
pub async fn links(
    store: &BackupStore,
    newest: ReplicaSetManifest,
    external: bool,
) -> Result<Vec<ReplicaSetManifest>, AgentError> {
    let refuse = |why: String| AgentError::Refused(format!("{why}; nothing was touched"));
    let mut links = vec![newest];
    loop {
        let last = links.last().expect("never empty");
        let Some(source) = last.incremental.as_ref().and_then(|i| i.source.clone()) else {
            break;
        };
        if links.len() > MAX_CHAIN {
            return Err(refuse(format!(
                "backup {}'s chain is longer than {MAX_CHAIN} backups",
                links[0].backup
            )));
        }
        let key = layout::rs_manifest_key(&source, &last.replica_set);
        let bytes = read_object(store, &key).await?.ok_or_else(|| {
            refuse(format!(
                "backup {} is an increment of {source}, whose manifest for replica set {} is \
                 missing at {key}: the chain is broken",
                last.backup, last.replica_set
            ))
        })?;
        let m = ReplicaSetManifest::from_json(&bytes).map_err(|e| refuse(format!("{key}: {e}")))?;
        links.push(m);
    }
    links.reverse();
    check_links(&links).map_err(|e| refuse(e.to_string()))?;
    file_plans(&links).map_err(|e| refuse(e.to_string()))?;
    for m in &links {
        check_restorable(&m.backup, m, external)?;
    }
    Ok(links)
}
