//! Writing a replica set's slicing assignment: the one object its agents read to learn
//! which of them slices, into which storage, how often.

use tidemark_schema::control::{SlicingAssignment, slicing_key};

use crate::execute::{ExecError, Executor};

/// Writes `wanted` (stamped with this leader's epoch), or removes the assignment when no
/// stream is left, which stops the replica set's slicer.
pub async fn set_slicing(ex: &Executor, wanted: &SlicingAssignment) -> Result<(), ExecError> {
    let key = slicing_key(&wanted.cluster, &wanted.replica_set);
    if wanted.streams.is_empty() {
        ex.control.delete(&key).await?;
        ex.ring(&wanted.cluster).await;
        tracing::info!(cluster = %wanted.cluster, rs = %wanted.replica_set, "slicing stopped");
        return Ok(());
    }
    let record = SlicingAssignment {
        epoch: ex.control.epoch(),
        ..wanted.clone()
    };
    ex.control.put(&key, &record).await?;
    ex.ring(&record.cluster).await;
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
