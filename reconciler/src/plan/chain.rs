//! Incremental chains: whether the next incremental backup continues the cluster's chain
//! (on the nodes that hold its block-tracking history) or starts a new base, and why.
//! PBM fails an increment whose node lost the history; here the planner sees it coming and
//! takes a new base instead, saying so in `diff`, `status` and the catalog.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tidemark_schema::control::{BackupRecord, ChainLink, Heartbeat, OneShotRecord};
use tidemark_schema::model::{ClusterSpec, MaxAge};

use super::model::NodeChoice;
use super::nodes::{heartbeats_of, why_not_eligible};

/// What the declaration says about chains.
#[derive(Clone, Debug, PartialEq)]
pub struct ChainRules {
    /// `None`: a new base takes the default, an increment keeps its chain's.
    pub block_size_mb: Option<u32>,
    /// `None`: no limit (a one-shot `Backup`).
    pub max_increments: Option<u32>,
    pub new_base_after: Option<MaxAge>,
    /// `base: true` on a one-shot `Backup`.
    pub force_base: bool,
}

/// The next incremental backup, as `diff` shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IncrementPlan {
    /// Its place in the chain (the source is `None` for a new base, whose base is itself).
    #[serde(flatten)]
    pub link: PlannedLink,
    /// Why it continues this chain, or why it starts a new one.
    pub why: String,
    /// About how many bytes it copies: the full size for a base, the mean of the chain's
    /// increments for an increment; `None` when nothing tells.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_bytes: Option<u64>,
}

/// A chain link before the backup has a name (a base's base is the backup itself).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedLink {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub position: u32,
    #[serde(rename = "blockSizeMB")]
    pub block_size_mb: u32,
}

impl PlannedLink {
    /// The link recorded for backup `name`, with the planner's reason.
    pub fn named(&self, name: &str, reason: &str) -> ChainLink {
        ChainLink {
            base: self.base.clone().unwrap_or_else(|| name.to_string()),
            source: self.source.clone(),
            position: self.position,
            block_size_mb: self.block_size_mb,
            reason: Some(reason.to_string()),
        }
    }
}

/// The plan, and for an increment the node of each replica set it must run on.
pub struct IncrementChoice {
    pub plan: IncrementPlan,
    pub pinned: BTreeMap<String, NodeChoice>,
}

/// The observations the decision reads.
pub struct ChainView<'a> {
    pub cluster_name: &'a str,
    pub storage: &'a str,
    pub cluster: &'a ClusterSpec,
    pub backups: &'a [BackupRecord],
    /// The ledger: a Restore of the cluster after the chain's last link wiped its history.
    pub oneshots: &'a BTreeMap<(tidemark_schema::control::OneShotKind, String), OneShotRecord>,
    pub heartbeats: &'a [Heartbeat],
    pub now: DateTime<Utc>,
    pub dead_after: chrono::Duration,
}

/// Continues the cluster's chain when every rule allows it, else plans a new base.
pub fn plan_increment(rules: &ChainRules, v: &ChainView) -> IncrementChoice {
    let base = |why: String| IncrementChoice {
        plan: IncrementPlan {
            link: PlannedLink {
                base: None,
                source: None,
                position: 0,
                block_size_mb: rules
                    .block_size_mb
                    .unwrap_or(tidemark_schema::model::DEFAULT_BLOCK_SIZE_MB),
            },
            expected_bytes: full_size(v),
            why: format!("new base: {why}"),
        },
        pinned: BTreeMap::new(),
    };
    match continuation(rules, v) {
        Ok((last, link, pinned)) => {
            let n = link.position + 1;
            let limit = rules
                .max_increments
                .map_or(String::new(), |m| format!(" of at most {m}"));
            IncrementChoice {
                plan: IncrementPlan {
                    expected_bytes: mean_increment(v, &link.base),
                    why: format!(
                        "increment {n}{limit} of chain {}, continuing {} on the nodes that \
                         hold its tracking history",
                        link.base, last.name
                    ),
                    link: PlannedLink {
                        base: Some(link.base.clone()),
                        source: Some(last.name.clone()),
                        position: n,
                        block_size_mb: link.block_size_mb,
                    },
                },
                pinned,
            }
        }
        Err(why) => base(why),
    }
}

type Continuation<'a> = (
    &'a BackupRecord,
    &'a ChainLink,
    BTreeMap<String, NodeChoice>,
);

/// The chain's last link and its pinned nodes, or why the chain cannot continue.
fn continuation<'a>(rules: &ChainRules, v: &ChainView<'a>) -> Result<Continuation<'a>, String> {
    if rules.force_base {
        return Err("the Backup declares base: true".into());
    }
    // Every incremental backup replaces a node's tracking history (WiredTiger keeps the
    // last two), whatever its storage: only the newest can be continued, and not after a
    // later attempt failed. Ordered by the cluster's own clock (its last write).
    let incremental = || {
        v.backups
            .iter()
            .filter(|b| b.cluster == v.cluster_name && b.incremental.is_some())
    };
    let last = incremental()
        .filter(|b| continuable(b))
        .max_by(|a, b| a.recency().cmp(&b.recency()))
        .ok_or_else(|| {
            format!(
                "cluster {:?} has no incremental backup to continue yet",
                v.cluster_name
            )
        })?;
    let link = last.incremental.as_ref().expect("filtered");
    // A failed attempt has no last write: it counts as later when it started after the
    // last link did, or when it tried to continue it.
    if let Some(failed) = incremental()
        .filter(|b| !continuable(b) && b.deleting.is_none())
        .filter(|b| {
            b.started_at >= last.started_at
                || b.incremental.as_ref().and_then(|l| l.source.as_deref()) == Some(&last.name)
        })
        .max_by_key(|b| b.started_at)
    {
        return Err(format!(
            "the cluster's incremental backup {} after {} is not good ({}): its node may have \
             moved its tracking history on",
            failed.name,
            last.name,
            not_good(failed)
        ));
    }
    if last.storage != v.storage {
        return Err(format!(
            "the cluster's newest incremental backup, {}, went to storage {:?}: another \
             chain's backup replaces the nodes' tracking history",
            last.name, last.storage
        ));
    }
    if let Some(why) = history_cleared_after(v, last) {
        return Err(why);
    }
    // Every link back to the base still there and not failed.
    if let Some(why) = broken_link(last, v.backups) {
        return Err(why);
    }
    if let Some(max) = rules.max_increments
        && link.position >= max
    {
        return Err(format!(
            "chain {} holds {} increments (maxIncrements {max})",
            link.base, link.position
        ));
    }
    if let (Some(limit), Some(base)) = (
        &rules.new_base_after,
        v.backups.iter().find(|b| b.name == link.base),
    ) {
        let age = v.now - base.data_time();
        if age.to_std().is_ok_and(|a| a > limit.duration) {
            return Err(format!(
                "chain {}'s base is {} old (newBaseAfter {})",
                link.base,
                super::retention::human_age(age),
                limit.text
            ));
        }
    }
    if let Some(mb) = rules.block_size_mb
        && link.block_size_mb != mb
    {
        return Err(format!(
            "the block size changed from {} MB to {mb} MB",
            link.block_size_mb
        ));
    }
    let pinned = pinned_nodes(v, last)?;
    Ok((last, link, pinned))
}

/// Whether a backup's nodes may be asked for the changes since it: complete, not being
/// deleted, and not failed verification (a pending one may still pass; a restore needs it
/// passed, and an increment of one that then fails is not restorable either).
fn continuable(b: &BackupRecord) -> bool {
    use tidemark_schema::control::{RunStatus, VerificationStatus};
    b.complete
        && b.status == RunStatus::Done
        && b.deleting.is_none()
        && b.verification
            .as_ref()
            .is_none_or(|v| v.status != VerificationStatus::Failed)
}

/// What wiped the nodes' tracking history after `last`, by the ledger: a whole-cluster
/// Restore that replaced their data (done, partly done, or failed without fallback), or a
/// cancelled new base (its first step clears the history).
fn history_cleared_after(v: &ChainView, last: &BackupRecord) -> Option<String> {
    use tidemark_schema::control::{OneShotKind, RunStatus};
    let settings = |r: &OneShotRecord| {
        r.started_with
            .as_ref()
            .map_or(serde_json::Value::Null, |s| s["settings"].clone())
    };
    let after = v
        .oneshots
        .values()
        .filter(|r| r.started_at > last.started_at && r.setting("cluster") == Some(v.cluster_name));
    for r in after {
        let s = settings(r);
        let cleared = match r.kind {
            // A selective restore copies collections through the primary: no file moves.
            OneShotKind::Restore if s.get("namespaces").is_some() => false,
            OneShotKind::Restore => match r.status {
                RunStatus::Done | RunStatus::PartlyDone => true,
                // Reverted to the fallback with it, history and all; without, not.
                RunStatus::Error => s["fallbackEnabled"] == serde_json::Value::Bool(false),
                _ => false,
            },
            OneShotKind::Backup => {
                r.status == RunStatus::Cancelled
                    && s["incremental"].is_object()
                    && s["incremental"]["source"].is_null()
            }
            OneShotKind::RestoreDrill => false,
        };
        if cleared {
            return Some(match r.kind {
                OneShotKind::Backup => format!(
                    "new base {:?} was cancelled after {}, and its first step clears the \
                     nodes' tracking history",
                    r.name, last.name
                ),
                _ => format!(
                    "Restore {:?} replaced the cluster's data after {}: its nodes hold no \
                     tracking history",
                    r.name, last.name
                ),
            });
        }
    }
    None
}

fn not_good(b: &BackupRecord) -> String {
    if b.deleting.is_some() {
        "being deleted".into()
    } else if let Some(ver) = b.verification.as_ref().filter(|_| b.complete) {
        format!("verification {:?}", ver.status).to_lowercase()
    } else {
        format!("status {:?}", b.status).to_lowercase()
    }
}

/// The node of each replica set that took the last link, if it can take the next one.
fn pinned_nodes(
    v: &ChainView,
    last: &BackupRecord,
) -> Result<BTreeMap<String, NodeChoice>, String> {
    let mut pinned = BTreeMap::new();
    let wanted: Vec<&str> = v
        .cluster
        .all_replica_sets()
        .map(|r| r.name.as_str())
        .collect();
    let had: Vec<&str> = last.replica_sets.iter().map(|r| r.name.as_str()).collect();
    if wanted.iter().any(|w| !had.contains(w)) || had.len() != wanted.len() {
        return Err(format!(
            "the cluster's replica sets ({}) are not the chain's ({})",
            wanted.join(", "),
            had.join(", ")
        ));
    }
    for part in &last.replica_sets {
        let node = &part.node;
        let beats = heartbeats_of(v.heartbeats, v.cluster_name, &part.name);
        let member = v
            .cluster
            .all_replica_sets()
            .any(|rs| rs.name == part.name && rs.members.contains(node));
        let why = match beats.get(node.as_str()) {
            _ if !member => Some("no longer a member of the Cluster".to_string()),
            None => Some("not reporting (no heartbeat)".to_string()),
            Some(hb) => why_not_eligible(hb, v.now, v.dead_after).or_else(|| {
                (hb.encryption_known
                    && part.encryption_recorded
                    && hb.encryption != part.encryption)
                    .then(|| "running with other encryption at rest than the chain".to_string())
            }),
        };
        if let Some(why) = why {
            return Err(format!(
                "{node}, which holds the chain's tracking history for replica set {}, cannot \
                 take it: {why}",
                part.name
            ));
        }
        pinned.insert(
            part.name.clone(),
            NodeChoice {
                replica_set: part.name.clone(),
                node: Some(node.clone()),
                reason: format!(
                    "holds the tracking history of chain {}: it took {}",
                    last.incremental
                        .as_ref()
                        .map_or(last.name.as_str(), |l| l.base.as_str()),
                    last.name
                ),
            },
        );
    }
    Ok(pinned)
}

/// The newest full copy of the cluster in this storage: what a new base copies.
fn full_size(v: &ChainView) -> Option<u64> {
    v.backups
        .iter()
        .filter(|b| b.cluster == v.cluster_name && b.storage == v.storage && b.is_good())
        .filter(|b| b.incremental.as_ref().is_none_or(|l| l.source.is_none()))
        .max_by(|a, b| a.recency().cmp(&b.recency()))
        .map(BackupRecord::uncompressed_bytes)
}

/// The mean size of the chain's increments so far.
fn mean_increment(v: &ChainView, base: &str) -> Option<u64> {
    let sizes: Vec<u64> = v
        .backups
        .iter()
        .filter(|b| {
            b.is_good()
                && b.incremental
                    .as_ref()
                    .is_some_and(|l| l.base == base && l.source.is_some())
        })
        .map(BackupRecord::uncompressed_bytes)
        .collect();
    (!sizes.is_empty()).then(|| sizes.iter().sum::<u64>() / sizes.len() as u64)
}

/// The backups a restore of `backup` reads, base first (`backup` alone when it is not an
/// increment), or why one of them cannot be used.
pub fn chain_of<'a>(
    backup: &'a BackupRecord,
    backups: &'a [BackupRecord],
) -> Result<Vec<&'a BackupRecord>, String> {
    let mut chain = vec![backup];
    let mut at = backup;
    while let Some(source) = at.incremental.as_ref().and_then(|l| l.source.as_ref()) {
        if chain.len() > tidemark_schema::chain::MAX_CHAIN {
            return Err(format!("backup {:?}'s chain loops", backup.name));
        }
        let prev = backups.iter().find(|b| &b.name == source).ok_or_else(|| {
            format!(
                "backup {:?} is an increment of {source:?}, which is not in the catalog: the \
                 chain is broken",
                backup.name
            )
        })?;
        if !prev.is_good() {
            return Err(format!(
                "backup {:?} needs {source:?} (a link of its chain), which is not good ({})",
                backup.name,
                not_good(prev)
            ));
        }
        chain.push(prev);
        at = prev;
    }
    chain.reverse();
    Ok(chain)
}

/// Why `backup` can never be restored (a link of its chain is gone, being deleted, failed
/// or failed verification), or `None`. A link whose verification is still pending is not
/// a reason: the chain becomes restorable when it passes.
pub fn broken_link(backup: &BackupRecord, backups: &[BackupRecord]) -> Option<String> {
    let mut at = backup;
    let mut steps = 0;
    while let Some(source) = at.incremental.as_ref().and_then(|l| l.source.as_ref()) {
        steps += 1;
        if steps > tidemark_schema::chain::MAX_CHAIN {
            return Some(format!("backup {:?}'s chain loops", backup.name));
        }
        let Some(prev) = backups.iter().find(|b| &b.name == source) else {
            return Some(format!(
                "backup {:?} is an increment of {source:?}, which is not in the catalog",
                backup.name
            ));
        };
        if !continuable(prev) {
            return Some(format!(
                "backup {:?} needs {source:?} (a link of its chain), which is not good ({})",
                backup.name,
                not_good(prev)
            ));
        }
        at = prev;
    }
    None
}

/// Retention across chains: every link a kept backup needs is kept, whatever its own
/// schedule's rules say, so a chain is never cut below a kept increment (and a base
/// outlives its last kept increment). A link left to delete says where it sat.
pub fn keep_chains(decisions: &mut [super::model::RetentionDecision], backups: &[BackupRecord]) {
    let by_name: BTreeMap<&str, &BackupRecord> =
        backups.iter().map(|b| (b.name.as_str(), b)).collect();
    // Everything not decided "delete" stays (kept, pinned, orphaned, one-shot): its links too.
    let deleting: std::collections::BTreeSet<String> = decisions
        .iter()
        .filter(|d| !d.keep)
        .map(|d| d.backup.clone())
        .collect();
    let mut needed: BTreeMap<String, String> = BTreeMap::new();
    // Every backup that restores, or will once a pending verification passes; one whose
    // chain lost a link for good keeps nothing alive.
    for b in backups
        .iter()
        .filter(|b| continuable(b) && !deleting.contains(&b.name))
        .filter(|b| broken_link(b, backups).is_none())
    {
        let mut at = b;
        let mut steps = 0;
        while let Some(source) = at.incremental.as_ref().and_then(|l| l.source.as_deref()) {
            steps += 1;
            if steps > tidemark_schema::chain::MAX_CHAIN {
                break;
            }
            needed
                .entry(source.to_string())
                .or_insert_with(|| b.name.clone());
            match by_name.get(source) {
                Some(prev) => at = prev,
                None => break,
            }
        }
    }
    for d in decisions.iter_mut() {
        let link = by_name
            .get(d.backup.as_str())
            .and_then(|b| b.incremental.as_ref());
        match (needed.get(&d.backup), link) {
            (Some(by), Some(link)) if !d.keep => {
                d.keep = true;
                d.reasons = vec![format!(
                    "{} of chain {}: kept backup {by} is built on it",
                    place(link),
                    link.base
                )];
            }
            (None, Some(link)) if !d.keep => d.reasons.push(format!(
                "{} of chain {}; no kept backup is built on it",
                place(link),
                link.base
            )),
            _ => {}
        }
    }
}

fn place(link: &ChainLink) -> String {
    match link.position {
        0 => "the base".to_string(),
        n => format!("increment {n}"),
    }
}

#[cfg(test)]
#[path = "chain_tests.rs"]
mod tests;
