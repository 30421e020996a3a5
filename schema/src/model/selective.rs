//! The namespaces of a selective restore: patterns (`db.coll`, `db.*`), the collections
//! they select, where each is written (`renameTo`), and what happens to a target that
//! already exists (`onExisting`).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Databases a selective restore never writes to: mongod's own.
pub const SYSTEM_DATABASES: &[&str] = &["admin", "local", "config"];

/// What a selective restore does with a target collection that already exists, even empty.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum OnExisting {
    /// Stop before any write and name the existing targets.
    #[default]
    Refuse,
    /// Drop the target and put the backup's copy in its place (one rename at the end).
    Replace,
    /// Upsert the backup's documents into the target by `_id`; other documents stay.
    Merge,
}

impl OnExisting {
    pub fn as_str(self) -> &'static str {
        match self {
            OnExisting::Refuse => "refuse",
            OnExisting::Replace => "replace",
            OnExisting::Merge => "merge",
        }
    }
}

impl std::fmt::Display for OnExisting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of `namespaces`: a collection, or every collection of a database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NsPattern {
    pub db: String,
    /// `None` for `db.*`.
    pub collection: Option<String>,
}

impl NsPattern {
    /// Parses `db.coll` or `db.*`; `None` when it is neither.
    pub fn parse(pattern: &str) -> Option<NsPattern> {
        let (db, coll) = pattern.split_once('.')?;
        if db.is_empty() || coll.is_empty() {
            return None;
        }
        Some(NsPattern {
            db: db.to_string(),
            collection: (coll != "*").then(|| coll.to_string()),
        })
    }

    /// Whether collection `ns` (`db.coll`) is selected. `db.*` never selects mongod's own
    /// `system.*` collections.
    pub fn matches(&self, ns: &str) -> bool {
        let Some((db, coll)) = ns.split_once('.') else {
            return false;
        };
        db == self.db
            && match &self.collection {
                Some(c) => c == coll,
                None => !coll.starts_with("system."),
            }
    }
}

/// Where a selected collection is written: its `renameTo` entry, or its own name.
pub fn target_namespace(ns: &str, rename_to: Option<&BTreeMap<String, String>>) -> String {
    rename_to
        .and_then(|r| r.get(ns))
        .cloned()
        .unwrap_or_else(|| ns.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_select_collections_and_never_system_ones() {
        let all = NsPattern::parse("billing.*").unwrap();
        assert!(all.matches("billing.invoices"));
        assert!(!all.matches("billing.system.views"));
        assert!(!all.matches("billingx.invoices"));
        let one = NsPattern::parse("shop.orders").unwrap();
        assert!(one.matches("shop.orders"));
        assert!(!one.matches("shop.orders2"));
        assert!(NsPattern::parse("shop").is_none());
        assert!(NsPattern::parse(".x").is_none());
        let rename = BTreeMap::from([("shop.orders".to_string(), "shop.o2".to_string())]);
        assert_eq!(target_namespace("shop.orders", Some(&rename)), "shop.o2");
        assert_eq!(target_namespace("shop.x", Some(&rename)), "shop.x");
    }
}
