//! Which node of a replica set a backup copies from, by PBM's rules.

use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use tidemark_schema::control::Heartbeat;
use tidemark_schema::control::MemberRole;
use tidemark_schema::model::ReplicaSetSpec;

use super::model::NodeChoice;

pub use tidemark_schema::control::BACKUP_MAX_LAG_SECONDS;
/// A heartbeat older than this means the agent is dead (PBM: 240 s).
pub const HEARTBEAT_DEAD_AFTER_SECONDS: i64 = 240;

/// Whether a heartbeat is recent enough to trust: younger than `dead_after` (the
/// reconciler's `--dead-after`, so planning and executing agree on who is alive).
pub fn is_alive(hb: &Heartbeat, now: DateTime<Utc>, dead_after: chrono::Duration) -> bool {
    now - hb.at < hb.dead_after(dead_after)
}

/// The heartbeats of one replica set, by node.
pub fn heartbeats_of<'a>(
    heartbeats: &'a [Heartbeat],
    cluster: &str,
    rs: &str,
) -> BTreeMap<&'a str, &'a Heartbeat> {
    heartbeats
        .iter()
        .filter(|h| h.cluster == cluster && h.replica_set == rs)
        .map(|h| (h.node.as_str(), h))
        .collect()
}

/// Why a node cannot take a backup now, by its heartbeat, or `None` when it can.
pub fn why_not_eligible(
    hb: &Heartbeat,
    now: DateTime<Utc>,
    dead_after: chrono::Duration,
) -> Option<String> {
    if !is_alive(hb, now, dead_after) {
        Some(format!(
            "last heartbeat {}s ago",
            (now - hb.at).num_seconds()
        ))
    } else if !hb.healthy {
        Some("agent unhealthy".to_string())
    } else if hb.arbiter {
        Some("arbiter".to_string())
    } else if hb.delayed {
        Some("delayed member".to_string())
    } else if !hb.role.is_serving() {
        Some(format!("state {}", hb.role))
    } else if hb.lag_seconds >= BACKUP_MAX_LAG_SECONDS {
        Some(format!(
            "replication lag {:.0}s >= {BACKUP_MAX_LAG_SECONDS:.0}s",
            hb.lag_seconds
        ))
    } else if !hb.backup_cursor {
        Some(format!("{} mongod has no $backupCursor", hb.flavor))
    } else {
        None
    }
}

/// Picks the node for one replica set, or explains why none qualifies (`Err`).
pub fn choose_node(
    cluster: &str,
    rs: &ReplicaSetSpec,
    heartbeats: &[Heartbeat],
    priority: Option<&BTreeMap<String, f64>>,
    now: DateTime<Utc>,
    dead_after: chrono::Duration,
) -> Result<NodeChoice, String> {
    let beats = heartbeats_of(heartbeats, cluster, &rs.name);
    if beats.is_empty() {
        return Ok(NodeChoice {
            replica_set: rs.name.clone(),
            node: None,
            reason: "no agent has reported yet; the node is chosen when the backup starts".into(),
        });
    }
    let mut rejected = Vec::new();
    let mut best: Option<(f64, &str, String)> = None;
    for member in &rs.members {
        let Some(hb) = beats.get(member.as_str()) else {
            rejected.push(format!("{member}: no heartbeat"));
            continue;
        };
        if let Some(why) = why_not_eligible(hb, now, dead_after) {
            rejected.push(format!("{member}: {why}"));
            continue;
        }
        let (score, basis) = match priority.and_then(|p| p.get(member)) {
            Some(s) => (*s, format!("priority {s} from the schedule")),
            None if hb.hidden => (2.0, "hidden secondary, score 2.0".to_string()),
            None if hb.role == MemberRole::Primary => (0.5, "primary, score 0.5".to_string()),
            None => (1.0, "secondary, score 1.0".to_string()),
        };
        // Strictly greater: ties go to the member listed first.
        if best.as_ref().is_none_or(|(s, _, _)| score > *s) {
            best = Some((score, member.as_str(), basis));
        }
    }
    match best {
        Some((_, node, basis)) => Ok(NodeChoice {
            replica_set: rs.name.clone(),
            node: Some(node.to_string()),
            reason: if rejected.is_empty() {
                format!("highest score: {basis}")
            } else {
                format!(
                    "highest score: {basis}; not eligible: {}",
                    rejected.join("; ")
                )
            },
        }),
        None => Err(format!(
            "replica set {:?} has no node that can take a backup ({})",
            rs.name,
            rejected.join("; ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(node: &str, role: &str, age_s: i64, now: DateTime<Utc>) -> Heartbeat {
        serde_json::from_value(serde_json::json!({
            "cluster": "c1", "replicaSet": "rs0", "node": node,
            "at": now - chrono::Duration::seconds(age_s),
            "agentVersion": "test", "healthy": true, "role": role,
            "flavor": "psmdb", "mongodVersion": "7.0.14", "backupCursor": true,
        }))
        .unwrap()
    }

    #[test]
    fn an_agent_is_dead_after_the_reconcilers_own_dead_after() {
        let now: DateTime<Utc> = "2026-11-22T12:00:00Z".parse().unwrap();
        let rs = ReplicaSetSpec {
            name: "rs0".into(),
            members: vec!["a:1".into(), "b:1".into()],
        };
        // The secondary (PBM's preferred source) beat 10 s ago, the primary just now.
        let beats = [
            beat("a:1", "PRIMARY", 0, now),
            beat("b:1", "SECONDARY", 10, now),
        ];
        let pick = |dead_after_s| {
            choose_node(
                "c1",
                &rs,
                &beats,
                None,
                now,
                chrono::Duration::seconds(dead_after_s),
            )
            .unwrap()
        };
        let lenient = pick(240);
        assert_eq!(lenient.node.as_deref(), Some("b:1"), "{lenient:?}");
        let strict = pick(5);
        assert_eq!(strict.node.as_deref(), Some("a:1"), "{strict:?}");
        assert!(
            strict.reason.contains("b:1: last heartbeat 10s ago"),
            "{strict:?}"
        );
    }

    #[test]
    fn community_arbiters_and_delayed_members_lose_whatever_their_priority() {
        let now: DateTime<Utc> = "2026-11-22T12:00:00Z".parse().unwrap();
        let rs = ReplicaSetSpec {
            name: "rs0".into(),
            members: vec![
                "psmdb:1".into(),
                "ce:1".into(),
                "slow:1".into(),
                "arb:1".into(),
            ],
        };
        let mut ce = beat("ce:1", "SECONDARY", 0, now);
        ce.flavor = "community".into();
        ce.backup_cursor = false;
        let mut slow = beat("slow:1", "SECONDARY", 0, now);
        slow.delayed = true;
        let mut arb = beat("arb:1", "ARBITER", 0, now);
        arb.arbiter = true;
        let beats = [beat("psmdb:1", "PRIMARY", 0, now), ce, slow, arb];
        let priority: BTreeMap<String, f64> = [("ce:1", 10.0), ("slow:1", 9.0), ("arb:1", 8.0)]
            .into_iter()
            .map(|(n, p)| (n.to_string(), p))
            .collect();
        let pick = choose_node(
            "c1",
            &rs,
            &beats,
            Some(&priority),
            now,
            chrono::Duration::seconds(240),
        )
        .unwrap();
        assert_eq!(pick.node.as_deref(), Some("psmdb:1"), "{pick:?}");
        for why in [
            "ce:1: community mongod has no $backupCursor",
            "slow:1: delayed member",
            "arb:1: arbiter",
        ] {
            assert!(pick.reason.contains(why), "{why} in {pick:?}");
        }
        // With no PSMDB member left, the backup is blocked, saying why.
        let err = choose_node(
            "c1",
            &rs,
            &beats[1..],
            Some(&priority),
            now,
            chrono::Duration::seconds(240),
        )
        .unwrap_err();
        assert!(err.contains("has no node that can take a backup"), "{err}");
        assert!(
            err.contains("community mongod has no $backupCursor"),
            "{err}"
        );
    }
}
