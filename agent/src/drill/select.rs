//! The drill's pre-check: every replica set's manifest is there, parses, is restorable
//! from storage, and the drill directory has room for all of them at once.

use tidemark_schema::control::{Phase, StorageTarget};
use tidemark_schema::manifest::{ReplicaSetManifest, layout};

use crate::error::AgentError;
use crate::restore::validate::{check_restorable, read_object};
use crate::storage::BackupStore;

pub struct Selected {
    pub store: BackupStore,
    pub manifests: Vec<ReplicaSetManifest>,
    /// Per replica set (as `manifests`), the manifests a restore is built from: the
    /// backup's chain, base first, for an increment; the manifest alone otherwise.
    pub chains: Vec<Vec<ReplicaSetManifest>>,
}

pub async fn select(
    backup: &str,
    storage: &StorageTarget,
    replica_sets: &[String],
    root: &std::path::Path,
) -> Result<Selected, AgentError> {
    let store = BackupStore::open(storage)?;
    let mut manifests = Vec::new();
    let mut chains = Vec::new();
    for rs in replica_sets {
        let key = layout::rs_manifest_key(backup, rs);
        let bytes = read_object(&store, &key).await?.ok_or_else(|| {
            AgentError::Refused(format!(
                "backup {backup} has no manifest for replica set {rs} at {key}: the backup is \
                 incomplete or was deleted"
            ))
        })?;
        let m = ReplicaSetManifest::from_json(&bytes)
            .map_err(|e| AgentError::Refused(format!("{key}: {e}")))?;
        check_restorable(backup, &m, false)?;
        chains.push(crate::restore::chain::links(&store, m.clone(), false).await?);
        manifests.push(m);
    }
    // Every replica set is restored one after the other, each removed before the next;
    // the largest must fit, with 10% to spare for the journal and mongod's own files.
    // A file rebuilt from a chain ends at its final size, so that is what counts.
    let need = manifests
        .iter()
        .map(|m| m.files.iter().map(|f| f.size).sum::<u64>())
        .max()
        .unwrap_or(0);
    let need = need + need / 10;
    let disk = crate::disk::disk_facts(root).map_err(|e| AgentError::io(root, e))?;
    if disk.available_bytes < need {
        return Err(AgentError::Refused(format!(
            "the drill directory {} has {} B available; restoring backup {backup} needs {need} \
             B (its largest replica set plus 10%)",
            root.display(),
            disk.available_bytes
        )));
    }
    Ok(Selected {
        store,
        manifests,
        chains,
    })
}

/// The phase a failure of `select` is reported in.
pub const PHASE: Phase = Phase::Precheck;
