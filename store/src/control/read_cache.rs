//! Records read before, kept with the version their listing showed (the ETag, else the
//! modification time and size): a reader that lists a prefix again fetches only the
//! records that changed. At rest nothing changes, so a reconciler's pass costs its
//! listings and no reads. Only for long-lived readers (the reconciler): agents and CLI
//! commands read too little to gain from it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use object_store::ObjectMeta;

/// Shared by every clone of one control-plane handle.
#[derive(Clone, Debug, Default)]
pub struct ReadCache {
    records: Arc<Mutex<HashMap<String, (String, Bytes)>>>,
}

/// What a listing says about an object's content: the same version, the same bytes.
pub fn version(meta: &ObjectMeta) -> String {
    match &meta.e_tag {
        Some(tag) => tag.clone(),
        None => format!(
            "{}-{}",
            meta.last_modified.timestamp_nanos_opt().unwrap_or_default(),
            meta.size
        ),
    }
}

impl ReadCache {
    /// The bytes read at `key` when it had `version`.
    pub fn get(&self, key: &str, version: &str) -> Option<Bytes> {
        let records = self.records.lock().expect("not poisoned");
        records
            .get(key)
            .filter(|(v, _)| v == version)
            .map(|(_, b)| b.clone())
    }

    pub fn put(&self, key: &str, version: String, bytes: Bytes) {
        let mut records = self.records.lock().expect("not poisoned");
        records.insert(key.to_string(), (version, bytes));
    }

    /// Forgets a deleted record.
    pub fn forget(&self, key: &str) {
        self.records.lock().expect("not poisoned").remove(key);
    }

    /// Forgets what was under `prefix` and is no longer listed there.
    pub fn keep_only(&self, prefix: &str, listed: &[String]) {
        let mut records = self.records.lock().expect("not poisoned");
        // By whole path segments: `agents/c1` is not a prefix of `agents/c10/…`.
        let dir = format!("{}/", prefix.trim_end_matches('/'));
        records.retain(|k, _| {
            let under = k == prefix || k.starts_with(&dir);
            !under || listed.binary_search(k).is_ok()
        });
    }
}
