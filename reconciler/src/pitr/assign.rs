//! Writing a replica set's slicing assignment: the one object its agents read to learn
//! which of them slices, into which storage, how often.

use tidemark_schema::control::{SlicingAssignment, slicing_key};

use crate::execute::{ExecError, Executor};

/// Writes `wanted` (stamped with this leader's epoch), or removes the assignment when no
/// stream is left, which stops the replica set's slicer.
pub async fn set_slicing(ex: &Executor, wanted: &SlicingAssignment) -> Result<(), ExecError> {
    let key = slicing_key(&wanted.cluster, &wanted.replica_set);
    if wanted.streams.is_empty() {
        let deleted = ex.control.delete(&key).await;
        ex.ring(&wanted.cluster).await;
        if deleted.is_err() {
            ex.bell.again_next_pass(&wanted.cluster);
        }
        deleted?;
        tracing::info!(cluster = %wanted.cluster, rs = %wanted.replica_set, "slicing stopped");
        return Ok(());
    }
    let record = SlicingAssignment {
        epoch: ex.control.epoch(),
        seal: None,
        ..wanted.clone()
    };
    // Rung whatever the write said: one that failed may still have landed.
    let written = ex.control.put(&key, &ex.sealed(&key, &record)).await;
    ex.ring(&record.cluster).await;
    if written.is_err() {
        ex.bell.again_next_pass(&record.cluster);
    }
    written?;
    for s in &record.streams {
        tracing::info!(
            cluster = %record.cluster,
            rs = %record.replica_set,
            schedule = %s.schedule,
            node = %s.node,
            reason = %s.reason,
            "slicer assigned"
        );
    }
    Ok(())
}

/// Slicing assignments not sealed by this reconciler's current key (after a key rotation,
/// once signing is turned on, or written by someone else) are deleted: agents that trust
/// the key refuse them, agents that still trust an older key would follow them. Called
/// only by a pass that plans: the plan then writes a sealed one for every replica set
/// still sliced, this same pass.
pub async fn forget_foreign_assignments(
    ex: &Executor,
    leading: &std::collections::BTreeMap<String, Executor>,
    observed: &mut tidemark_store::control::ObservedState,
) -> Result<(), ExecError> {
    let Some(signer) = &ex.signer else {
        return Ok(());
    };
    let mut foreign = Vec::new();
    observed.slicing.retain(|a| {
        let key = slicing_key(&a.cluster, &a.replica_set);
        let value = serde_json::to_value(a).unwrap_or_default();
        match signer.verify_current(&key, &value) {
            Ok(()) => true,
            Err(refusal) => {
                tracing::warn!(record = %key, reason = %refusal, "slicing assignment not sealed by this reconciler; deleted, written again if still wanted");
                foreign.push((key, a.cluster.clone()));
                false
            }
        }
    });
    for (key, cluster) in foreign {
        // Left for the leader of its partition to delete (it is ignored here either way).
        let Some(ex) = leading.get(&cluster) else {
            continue;
        };
        ex.control.delete(&key).await?;
        ex.ring(&cluster).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_schema::control::signature::Signer;
    use tidemark_store::control::ObservedState;

    /// After a key rotation, once signing is turned on, or over a record someone else
    /// wrote: the assignment counts as absent, so the plan writes a sealed one.
    #[tokio::test]
    async fn an_assignment_without_this_reconcilers_seal_is_deleted() {
        let dir = tempfile::TempDir::new().unwrap();
        let signer = Signer::generate();
        let ex = Executor {
            signer: Some(std::sync::Arc::new(signer.clone())),
            ..Executor::on_directory(dir.path())
        };
        let assignment = |rs: &str| SlicingAssignment {
            cluster: "c1".into(),
            replica_set: rs.into(),
            streams: Vec::new(),
            epoch: Some(3),
            seal: None,
        };
        // As `observe` reads them back: the seal kept in `seal`.
        let read = |value: serde_json::Value| -> SlicingAssignment {
            serde_json::from_value(value).unwrap()
        };
        let ours = read(signer.seal(&slicing_key("c1", "rs0"), &assignment("rs0")));
        let rotated = read(Signer::generate().seal(&slicing_key("c1", "rs1"), &assignment("rs1")));
        let unsigned = assignment("rs2");
        for a in [&ours, &rotated, &unsigned] {
            let key = slicing_key("c1", &a.replica_set);
            ex.control.put(&key, a).await.unwrap();
        }
        let mut observed = ObservedState {
            slicing: vec![ours, rotated, unsigned],
            ..Default::default()
        };
        let leading = [("c1".to_string(), ex.clone())].into();
        forget_foreign_assignments(&ex, &leading, &mut observed)
            .await
            .unwrap();
        let kept: Vec<&str> = observed
            .slicing
            .iter()
            .map(|a| a.replica_set.as_str())
            .collect();
        assert_eq!(kept, ["rs0"]);
        assert!(ex.control.exists(&slicing_key("c1", "rs0")).await.unwrap());
        assert!(!ex.control.exists(&slicing_key("c1", "rs1")).await.unwrap());
        assert!(!ex.control.exists(&slicing_key("c1", "rs2")).await.unwrap());
    }
}
