//! Planning a restore: resolve the backup, check it can be restored onto this cluster,
//! list the nodes it stops, the bytes they download, and each node's fallback disk check.

use chrono::{DateTime, Utc};
use tidemark_schema::control::{BackupRecord, ChunkRecord, Heartbeat, MemberRole};
use tidemark_schema::encryption::decrypt_problem;
use tidemark_schema::model::{BackupType, ClusterSpec, RestoreSpec};

use super::model::{DiskCheck, RestoreNode, RestorePlan};
use super::nodes::{heartbeats_of, is_alive};
use super::point_in_time::PointInTimePlan;
use super::render::{human_bytes, human_signed};

/// The backup a restore resolves to, or why it cannot (`Err` is the blocked reason).
pub fn resolve_backup<'a>(
    spec: &RestoreSpec,
    backups: &'a [BackupRecord],
) -> Result<&'a BackupRecord, String> {
    if let Some(name) = &spec.source.backup {
        let Some(b) = backups.iter().find(|b| &b.name == name) else {
            return Err(format!(
                "backup {name:?} does not exist in the backup catalog"
            ));
        };
        if !b.complete {
            return Err(format!(
                "backup {name:?} is incomplete (status {}): its manifest was never completed",
                b.status
            ));
        }
        if let Some(v) = &b.verification
            && v.status != tidemark_schema::control::VerificationStatus::Passed
        {
            return Err(match v.status {
                tidemark_schema::control::VerificationStatus::Pending => {
                    format!("backup {name:?} is not verified yet (its schedule asks for it)")
                }
                _ => format!(
                    "backup {name:?} failed verification: {}",
                    v.problems
                        .first()
                        .map(String::as_str)
                        .unwrap_or("see verify")
                ),
            });
        }
        if !b.is_good() {
            return Err(format!("backup {name:?} ended with status {}", b.status));
        }
        return Ok(b);
    }
    let schedule = spec.source.latest_of.as_deref().unwrap_or_default();
    backups
        .iter()
        .filter(|b| b.schedule.as_deref() == Some(schedule) && b.is_good())
        .filter(|b| super::chain::chain_of(b, backups).is_ok())
        .max_by(|a, b| a.recency().cmp(&b.recency()))
        .ok_or_else(|| format!("schedule {schedule:?} has no good backup yet"))
}

/// The backup a restore starts from, with its replay for a point-in-time restore.
pub fn restore_base<'a>(
    spec: &RestoreSpec,
    backups: &'a [BackupRecord],
    chunks: &[ChunkRecord],
) -> Result<(&'a BackupRecord, Option<Box<PointInTimePlan>>), String> {
    match &spec.source.point_in_time {
        Some(pit) => {
            let (b, p) = super::point_in_time::plan_point_in_time(spec, pit, backups, chunks)?;
            Ok((b, Some(Box::new(p))))
        }
        None => Ok((resolve_backup(spec, backups)?, None)),
    }
}

/// Builds the restore plan, or the blocked reason.
#[allow(clippy::too_many_arguments)]
pub fn plan_restore(
    name: &str,
    spec: &RestoreSpec,
    cluster: &ClusterSpec,
    backups: &[BackupRecord],
    chunks: &[ChunkRecord],
    heartbeats: &[Heartbeat],
    now: DateTime<Utc>,
    dead_after: chrono::Duration,
) -> Result<RestorePlan, String> {
    if let Some(why) = spec
        .source
        .point_in_time
        .as_ref()
        .and_then(|p| super::point_in_time::in_the_future(p, now))
    {
        return Err(why);
    }
    let (backup, point_in_time) = restore_base(spec, backups, chunks)?;
    if backup.cluster != spec.cluster {
        return Err(format!(
            "backup {:?} is of cluster {:?}, not {:?}",
            backup.name, backup.cluster, spec.cluster
        ));
    }
    if backup.backup_type == BackupType::External && !spec.external {
        return Err(format!(
            "backup {:?} is an external (snapshot) backup: its files are in your snapshots, \
             not in storage; set external: true and copy them in when asked",
            backup.name
        ));
    }
    // An increment restores through its whole chain, every link good.
    let chain = super::chain::chain_of(backup, backups)?;
    let mut nodes = Vec::new();
    let mut skipped = Vec::new();
    let remap = remapping(spec, cluster, backup)?;
    for rs in cluster.all_replica_sets() {
        let source = remap.get(&rs.name).unwrap_or(&rs.name);
        let Some(part) = backup.replica_sets.iter().find(|r| &r.name == source) else {
            return Err(format!(
                "backup {:?} has no data for replica set {:?} (it holds: {}); a backup \
                 taken under other replica-set names restores only with replicaSetRemap: \
                 {{<backup's name>: <cluster's name>}}",
                backup.name,
                source,
                holds(backup)
            ));
        };
        // Summed over the chain: each link's objects are downloaded and written (PBM
        // counts every increment in the disk check too).
        let (stored, uncompressed) = chain
            .iter()
            .filter_map(|b| b.replica_sets.iter().find(|r| &r.name == source))
            .fold((0, 0), |(s, u), r| {
                (s + r.stored_bytes, u + r.uncompressed_bytes)
            });
        let beats = heartbeats_of(heartbeats, &spec.cluster, &rs.name);
        let mut rs_nodes = Vec::new();
        for member in &rs.members {
            let hb = beats.get(member.as_str()).copied();
            if hb.is_some_and(|h| h.arbiter) {
                skipped.push(format!("{member} (arbiter: holds no data)"));
                continue;
            }
            // Judged only from a heartbeat whose mongod answered: a node that is down
            // reports no encryption, and its agent checks again before touching anything.
            // Only from facts on both sides: a backup of an older agent records nothing, and
            // an unreadable key file is neither a match nor a mismatch (pre-flight waits).
            let cannot_decrypt = hb
                .filter(|h| {
                    h.role != MemberRole::Down && h.encryption_known && is_alive(h, now, dead_after)
                })
                .filter(|h| part.encryption_recorded && keys_known(part, h))
                .and_then(|h| decrypt_problem(part.encryption.as_ref(), h.encryption.as_ref()));
            // A node that cannot decrypt is only stopped: no standalone starts.
            let mut restarts = if cannot_decrypt.is_some() {
                Vec::new()
            } else {
                vec![
                    "standalone on a private port: reset replication metadata".to_string(),
                    "standalone: recover from the oplog to the backup's point".to_string(),
                    "standalone: write the replica-set config".to_string(),
                ]
            };
            if let Some(p) = point_in_time.as_ref().filter(|_| cannot_decrypt.is_none()) {
                restarts.insert(
                    2,
                    format!(
                        "standalone: replay {} chunk(s) of oplog up to {}",
                        p.replica_sets
                            .iter()
                            .find(|r| r.replica_set == *source)
                            .map_or(0, |r| r.chunks.len()),
                        p.target
                    ),
                );
            }
            if spec.post_restore.as_ref().is_some_and(|p| p.start_nodes) {
                restarts.push("replica-set member (postRestore.startNodes)".to_string());
            }
            rs_nodes.push(RestoreNode {
                replica_set: rs.name.clone(),
                node: member.clone(),
                role: hb.map_or(MemberRole::Other("unknown".into()), |h| h.role.clone()),
                download_bytes: match (spec.external, cannot_decrypt.is_some()) {
                    (_, true) => 0,
                    (true, false) => 0,
                    (false, false) => stored,
                } + match (&point_in_time, cannot_decrypt.is_some()) {
                    // The oplog is downloaded even after a snapshot's files were copied in.
                    (Some(p), false) => p.stored_bytes_of(source),
                    _ => 0,
                },
                restarts,
                disk: if cannot_decrypt.is_some() {
                    DiskCheck::NotNeeded
                } else {
                    disk_check(spec, hb, uncompressed, now, dead_after)
                },
                cannot_decrypt,
            });
        }
        // Secondaries stop first; the primary steps down and stops last.
        rs_nodes.sort_by_key(|n| n.role == MemberRole::Primary);
        nodes.extend(rs_nodes);
    }
    let mut post_restore = Vec::new();
    if let Some(p) = &spec.post_restore {
        if p.start_nodes {
            post_restore
                .push("start every node as a replica-set member and wait for a healthy set".into());
        }
        if let Some(s) = &p.fresh_backup {
            post_restore.push(format!("take a fresh base backup with schedule {s:?}"));
        }
    }
    if post_restore.is_empty() {
        post_restore.push("leave mongod stopped; start the nodes yourself".into());
    }
    let members = |rs: &tidemark_schema::model::ReplicaSetSpec| {
        format!("{}/{}", rs.name, rs.members.join(","))
    };
    let sharding =
        cluster
            .config_server
            .as_ref()
            .map(|cfg| tidemark_schema::control::ShardingRestore {
                config_server: members(cfg),
                shards: cluster
                    .replica_sets
                    .iter()
                    .map(|rs| (rs.name.clone(), members(rs)))
                    .collect(),
                renamed: remap
                    .iter()
                    .filter(|(to, _)| cluster.replica_sets.iter().any(|r| &r.name == *to))
                    .map(|(to, from)| (from.clone(), to.clone()))
                    .collect(),
            });
    Ok(RestorePlan {
        restore: name.to_string(),
        cluster: spec.cluster.clone(),
        backup: backup.name.clone(),
        backup_started_at: backup.started_at,
        backup_last_write: backup.last_write,
        fallback_enabled: spec.fallback_enabled,
        allow_partly_done: spec.allow_partly_done,
        external: spec.external,
        download_bytes: nodes.iter().map(|n| n.download_bytes).sum(),
        nodes,
        skipped,
        post_restore,
        remap,
        sharding,
        point_in_time,
        chain: match chain.len() {
            1 => Vec::new(),
            _ => chain.iter().map(|b| b.name.clone()).collect(),
        },
    })
}

/// The nodes whose last heartbeat shows too little disk for the fallback, for `diff` to
/// warn about. Not a reason to wait or to refuse here: a heartbeat can be seconds out of
/// date (the fallback of a restore that just ended still counted as used), so each node's
/// agent measures again at its `disk` phase, and one node short of room aborts the whole
/// restore on every node before any is stopped (docs/reconciler.md, Restores). Waiting instead would start
/// the restore by itself hours later, once someone freed space: a surprise nobody wants.
pub fn disk_warning(plan: &RestorePlan) -> Option<String> {
    let too_small: Vec<String> = plan
        .nodes
        .iter()
        .filter_map(|n| match &n.disk {
            DiskCheck::TooSmall {
                total_bytes,
                used_bytes,
                room_bytes,
                needed_bytes,
            } => Some(format!(
                "{}: 85% of {} total minus {} used leaves {} ({room_bytes} B), the backup needs {} \
                 ({needed_bytes} B)",
                n.node,
                human_bytes(*total_bytes),
                human_bytes(*used_bytes),
                human_signed(*room_bytes),
                human_bytes(*needed_bytes)
            )),
            _ => None,
        })
        .collect();
    (!too_small.is_empty()).then(|| {
        format!(
            "by their last heartbeats these nodes lack the room a fallback needs (each keeps its \
             current data next to the restored data): {}; each node's agent measures again \
             before anything is touched, and one node still short of room aborts the restore on \
             every node, untouched",
            too_small.join("; ")
        )
    })
}

fn holds(backup: &BackupRecord) -> String {
    backup
        .replica_sets
        .iter()
        .map(|r| r.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Cluster replica set → backup replica set, for the names that differ. Every replica
/// set of the backup must land on exactly one of the cluster's: a backup of N shards
/// never restores onto a cluster with other names unless the Restore maps them.
fn remapping(
    spec: &RestoreSpec,
    cluster: &ClusterSpec,
    backup: &BackupRecord,
) -> Result<std::collections::BTreeMap<String, String>, String> {
    let declared = spec.replica_set_remap.clone().unwrap_or_default();
    let mut out = std::collections::BTreeMap::new();
    for (from, to) in &declared {
        if from != to {
            out.insert(to.clone(), from.clone());
        }
    }
    let targets: Vec<&str> = cluster
        .all_replica_sets()
        .map(|r| r.name.as_str())
        .collect();
    // A cluster replica set restores the backup's of the same name only when that one is
    // not mapped elsewhere: one backup replica set never lands on two.
    for t in &targets {
        if !out.contains_key(*t)
            && let Some(to) = declared.get(*t).filter(|to| to.as_str() != *t)
        {
            return Err(format!(
                "replicaSetRemap maps the backup's {t:?} onto {to:?}, so cluster replica set \
                 {t:?} would have nothing to restore; map a replica set of the backup onto it"
            ));
        }
    }
    let mut landed: Vec<&str> = Vec::new();
    for part in &backup.replica_sets {
        let to = declared.get(&part.name).unwrap_or(&part.name);
        if !targets.contains(&to.as_str()) {
            return Err(format!(
                "backup {:?} holds replica set {:?}, which cluster {:?} has no replica set for \
                 (it has: {}); map it with replicaSetRemap: {{{}: <cluster's name>}}",
                backup.name,
                part.name,
                spec.cluster,
                targets.join(", "),
                part.name
            ));
        }
        if landed.contains(&to.as_str()) {
            return Err(format!(
                "two replica sets of backup {:?} would restore onto {to:?}",
                backup.name
            ));
        }
        landed.push(to);
    }
    Ok(out)
}

/// Whether both the backup's and the node's master keys are known (a key file the agent
/// could not read is not).
pub fn keys_known(part: &tidemark_schema::control::BackupReplicaSet, hb: &Heartbeat) -> bool {
    part.encryption.as_ref().is_none_or(|e| e.key_known())
        && hb.encryption.as_ref().is_none_or(|e| e.key_known())
}

fn disk_check(
    spec: &RestoreSpec,
    hb: Option<&Heartbeat>,
    needed: u64,
    now: DateTime<Utc>,
    dead_after: chrono::Duration,
) -> DiskCheck {
    if !spec.fallback_enabled {
        return DiskCheck::NotNeeded;
    }
    let Some(hb) = hb else {
        return DiskCheck::Unknown {
            why: "no heartbeat from this node yet; its agent checks before touching data".into(),
        };
    };
    let Some(disk) = hb.disk else {
        return DiskCheck::Unknown {
            why: "the heartbeat has no disk figures".into(),
        };
    };
    if !is_alive(hb, now, dead_after) {
        return DiskCheck::Unknown {
            why: format!("last heartbeat is {}s old", (now - hb.at).num_seconds()),
        };
    }
    let room = disk.fallback_room();
    if disk.allows_fallback(needed) {
        DiskCheck::Fits {
            total_bytes: disk.total_bytes,
            used_bytes: disk.used_bytes,
            room_bytes: room,
            needed_bytes: needed,
        }
    } else {
        DiskCheck::TooSmall {
            total_bytes: disk.total_bytes,
            used_bytes: disk.used_bytes,
            room_bytes: room,
            needed_bytes: needed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_schema::control::{RunStatus, Verification, VerificationStatus};
    use tidemark_schema::model::{RestoreSource, VerifyLevel};

    fn backup(name: &str, at: &str, verification: Option<VerificationStatus>) -> BackupRecord {
        serde_json::from_value::<BackupRecord>(serde_json::json!({
            "name": name, "cluster": "prod", "storage": "s3", "schedule": "nightly",
            "type": "physical", "status": "done", "complete": true, "startedAt": at,
            "replicaSets": [],
        }))
        .map(|mut b| {
            b.verification = verification.map(|status| Verification {
                level: VerifyLevel::Data,
                status,
                at: None,
                problems: vec!["replica set rs0, file x, object y: checksum mismatch".into()],
            });
            assert_eq!(b.status, RunStatus::Done);
            b
        })
        .unwrap()
    }

    #[test]
    fn latest_of_skips_backups_that_failed_or_await_verification() {
        let backups = [
            backup(
                "b1",
                "2026-03-01T01:00:00Z",
                Some(VerificationStatus::Passed),
            ),
            backup(
                "b2",
                "2026-03-02T01:00:00Z",
                Some(VerificationStatus::Failed),
            ),
            backup(
                "b3",
                "2026-03-03T01:00:00Z",
                Some(VerificationStatus::Pending),
            ),
        ];
        let mut spec: RestoreSpec = serde_json::from_value(serde_json::json!({
            "cluster": "prod", "source": {"latestOf": "nightly"},
        }))
        .unwrap();
        assert_eq!(resolve_backup(&spec, &backups).unwrap().name, "b1");
        spec.source = RestoreSource {
            backup: Some("b2".into()),
            latest_of: None,
            point_in_time: None,
        };
        let err = resolve_backup(&spec, &backups).unwrap_err();
        assert!(
            err.contains("failed verification: replica set rs0"),
            "{err}"
        );
        spec.source.backup = Some("b3".into());
        let err = resolve_backup(&spec, &backups).unwrap_err();
        assert!(err.contains("not verified yet"), "{err}");
    }

    #[test]
    fn a_remap_never_lands_one_backup_replica_set_on_two_and_names_what_is_missing() {
        let cluster: ClusterSpec = serde_json::from_value(serde_json::json!({
            "configServer": {"name": "cfg", "members": ["c:1"]},
            "replicaSets": [{"name": "rs0", "members": ["a:1"]}, {"name": "sh0", "members": ["b:1"]}],
        }))
        .unwrap();
        let mut b = backup("b1", "2026-03-01T01:00:00Z", None);
        b.replica_sets = serde_json::from_value(serde_json::json!([
            {"name": "cfg", "node": "c:1", "mongodVersion": "7.0.14", "uncompressedBytes": 1, "storedBytes": 1},
            {"name": "rs0", "node": "a:1", "mongodVersion": "7.0.14", "uncompressedBytes": 1, "storedBytes": 1},
        ]))
        .unwrap();
        let spec = |remap: serde_json::Value| -> RestoreSpec {
            serde_json::from_value(serde_json::json!({
                "cluster": "prod", "source": {"backup": "b1"}, "replicaSetRemap": remap,
            }))
            .unwrap()
        };
        let err = remapping(&spec(serde_json::json!({"rs0": "sh0"})), &cluster, &b).unwrap_err();
        assert!(err.contains("would have nothing to restore"), "{err}");
        let mut unmapped = spec(serde_json::json!({}));
        unmapped.replica_set_remap = None;
        b.replica_sets[1].name = "old0".into();
        let err = remapping(&unmapped, &cluster, &b).unwrap_err();
        assert!(err.contains("replicaSetRemap"), "{err}");
        let ok = remapping(&spec(serde_json::json!({"old0": "rs0"})), &cluster, &b).unwrap();
        assert_eq!(ok.get("rs0").map(String::as_str), Some("old0"));
    }
}
