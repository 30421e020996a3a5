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
        ..wanted.clone()
    };
    // Rung whatever the write said: one that failed may still have landed.
    let written = ex.control.put(&key, &record).await;
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
