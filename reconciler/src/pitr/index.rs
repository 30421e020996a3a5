//! Keeping the chunk-index summaries (`pitr/index/<cluster>/<storage>/<rs>.json`) in step
//! with the chunk records, so that `status` and `list` read one object per timeline.

use std::collections::BTreeMap;

use tidemark_schema::control::{ChunkIndex, ChunkRecord, chunk_index_key};

use crate::execute::{ExecError, Executor};

/// What was last written per summary key (the record keys) and when, to write only on
/// change and at most every [`REWRITE_EVERY`].
pub type Written = BTreeMap<String, (Vec<String>, std::time::Instant)>;

/// A summary with only new chunks to add waits this long: readers read the newer records
/// themselves meanwhile (a few GETs), and a timeline of thousands of chunks is not
/// rewritten every span. One that lost chunks (retention) is rewritten at once.
pub const REWRITE_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

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
        if let Some((before, at)) = written.get(&key) {
            let lost = before.iter().any(|k| !keys.contains(k));
            if before == &keys || (!lost && at.elapsed() < REWRITE_EVERY) {
                continue;
            }
        }
        let index = ChunkIndex {
            records: records.into_iter().cloned().collect(),
        };
        ex.control.put(&key, &index).await?;
        written.insert(key, (keys, std::time::Instant::now()));
    }
    Ok(())
}
