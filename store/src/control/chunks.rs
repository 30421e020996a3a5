//! Reading the oplog-chunk index. Chunk records are created once and never change, so a
//! long-running reader keeps the ones it has read and, each time, lists the index and
//! reads only the keys it has not seen: one LIST per thousand chunks instead of a GET
//! per chunk per pass. A new reader (`status`, `list`) starts from the leader's summaries
//! (`pitr/index/…`), so it too reads one object per timeline, not one per chunk.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use tidemark_schema::control::{CHUNK_INDEX_PREFIX, CHUNKS_PREFIX, ChunkIndex, ChunkRecord};

use super::client::ControlPlane;
use super::error::ControlError;

/// Records read so far, by key; shared by clones of one reader.
#[derive(Clone, Debug, Default)]
pub struct ChunkCache {
    records: Arc<Mutex<BTreeMap<String, ChunkRecord>>>,
    /// Start from the leader's summaries (one-shot readers). The leader never does: it
    /// writes them, and must build them from the records themselves.
    from_summaries: bool,
}

impl ChunkCache {
    /// A reader that starts from the summaries: `status`, `list`, `diff`.
    pub fn for_one_shot() -> ChunkCache {
        ChunkCache {
            from_summaries: true,
            ..Default::default()
        }
    }

    /// Every chunk record of the control plane, reading only keys not read before. A record
    /// that does not parse is skipped and named in the warnings.
    pub async fn read(
        &self,
        control: &ControlPlane,
    ) -> Result<(Vec<ChunkRecord>, Vec<String>), ControlError> {
        // A reader that holds nothing yet starts from the summaries the leader keeps.
        let empty = self.records.lock().expect("not poisoned").is_empty();
        if empty && self.from_summaries {
            let (indexes, _) = control
                .all_lenient::<ChunkIndex>(CHUNK_INDEX_PREFIX)
                .await?;
            let mut cache = self.records.lock().expect("not poisoned");
            for r in indexes.into_iter().flat_map(|i| i.records) {
                cache.insert(r.key(), r);
            }
        }
        let keys = control.keys(CHUNKS_PREFIX).await?;
        let keys: Vec<String> = keys.into_iter().filter(|k| k.ends_with(".json")).collect();
        let unseen: Vec<String> = {
            let cache = self.records.lock().expect("not poisoned");
            keys.iter()
                .filter(|k| !cache.contains_key(*k))
                .cloned()
                .collect()
        };
        let read: Vec<(String, Result<Option<ChunkRecord>, ControlError>)> =
            futures::stream::iter(unseen)
                .map(|k| async move {
                    let r = control.get::<ChunkRecord>(&k).await;
                    (k, r)
                })
                .buffered(32)
                .collect()
                .await;
        let mut warnings = Vec::new();
        let mut cache = self.records.lock().expect("not poisoned");
        for (key, r) in read {
            match r {
                Ok(Some(record)) => {
                    cache.insert(key, record);
                }
                Ok(None) => {}
                Err(e @ ControlError::Corrupt { .. }) => warnings.push(format!("skipped: {e}")),
                Err(e) => return Err(e),
            }
        }
        // Keys gone from the listing were deleted (retention): forget them.
        let listed: std::collections::BTreeSet<&String> = keys.iter().collect();
        cache.retain(|k, _| listed.contains(k));
        Ok((cache.values().cloned().collect(), warnings))
    }
}
