//! Keeping the chunk-index summaries (`pitr/index/<cluster>/<storage>/<rs>.json`) in step
//! with the chunk records, so that `status` and `list` read one object per timeline.

use std::collections::BTreeMap;

use tidemark_schema::control::{ChunkIndex, ChunkRecord, chunk_index_key};

use crate::execute::{ExecError, Executor};

/// What was last written per summary key (the record keys), to write only on change.
pub type Written = BTreeMap<String, Vec<String>>;

/// Rewrites each timeline's summary whose chunks changed since this process last wrote it.
pub async fn write_indexes(
    ex: &Executor,
    chunks: &[ChunkRecord],
    written: &mut Written,
) -> Result<(), ExecError> {
    let mut by_timeline: BTreeMap<String, Vec<&ChunkRecord>> = BTreeMap::new();
    for c in chunks {
        by_timeline
            .entry(chunk_index_key(&c.cluster, &c.storage, &c.replica_set))
            .or_default()
            .push(c);
    }
    for (key, records) in by_timeline {
        let keys: Vec<String> = records.iter().map(|r| r.key()).collect();
        if written.get(&key) == Some(&keys) {
            continue;
        }
        let index = ChunkIndex {
            records: records.into_iter().cloned().collect(),
        };
        ex.control.put(&key, &index).await?;
        written.insert(key, keys);
    }
    Ok(())
}
