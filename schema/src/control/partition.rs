//! Partitions of the fleet: how N reconcilers share one control plane. Clusters fall into
//! a fixed number of partitions by a hash of their name; each partition has its own lease,
//! and a partition's leader is the only process that acts for its clusters. Partition 0
//! also owns what belongs to no cluster (the applied revision, schedule records,
//! compaction). With one partition, which is the default, this is the single lease of old.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// `lease/partitions.json`: how many partitions this control plane has. Created once by
/// the first reconciler; every later one must agree, since two processes that hashed a
/// cluster into different partitions would both lead it.
pub const PARTITIONS_KEY: &str = "lease/partitions.json";
/// Prefix of reconcilers' membership records: `reconcilers/<holder>.json`.
pub const MEMBERS_PREFIX: &str = "reconcilers";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartitionsRecord {
    pub partitions: u32,
    pub created_at: DateTime<Utc>,
    /// The reconciler that created it.
    pub by: String,
}

/// `reconcilers/<holder>.json`: rewritten by a running reconciler of a control plane with
/// more than one partition, so the others know whom to share partitions with. Others
/// watch its object version change on their own clock (clock skew does not matter).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberRecord {
    pub holder: String,
    pub seq: u64,
    pub at: DateTime<Utc>,
}

/// Where partition `p`'s lease lives: `lease/` for partition 0 (the lease of a control
/// plane that was never partitioned), `leases/<p>/` for the others.
pub fn lease_prefix(partition: u32) -> String {
    match partition {
        0 => super::LEASE_PREFIX.to_string(),
        p => format!("leases/{p}"),
    }
}

/// Zero-padded so that keys sort by epoch.
pub fn lease_key_in(prefix: &str, epoch: u64) -> String {
    format!("{prefix}/{epoch:012}.json")
}

pub fn lease_renewal_key_in(prefix: &str, epoch: u64) -> String {
    format!("{prefix}/{epoch:012}/renewed.json")
}

pub fn member_key(holder: &str) -> String {
    format!("{MEMBERS_PREFIX}/{holder}.json")
}

/// The partition a cluster belongs to. Fixed forever for a given name and count: it is
/// FNV-1a, finished with a 64-bit mixer, computed the same by every version.
pub fn partition_of(cluster: &str, partitions: u32) -> u32 {
    if partitions <= 1 {
        return 0;
    }
    (stable_hash(&[cluster.as_bytes()]) % u64::from(partitions)) as u32
}

/// Rendezvous (highest random weight) hashing: the member that leads `partition` among
/// `members`. Every process that sees the same members picks the same one, and a member
/// joining or leaving moves only the partitions it wins or held.
pub fn owner_of<'a>(partition: u32, members: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let p = partition.to_be_bytes();
    members
        .into_iter()
        .max_by_key(|m| (stable_hash(&[&p, m.as_bytes()]), *m))
}

fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // A separator, so ("ab", "c") and ("a", "bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // splitmix64's finisher: FNV alone leaves short names close together.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_partition_holds_every_cluster() {
        assert_eq!(partition_of("prod", 1), 0);
        assert_eq!(partition_of("prod", 0), 0);
    }

    #[test]
    fn partitions_are_fixed_forever_and_spread_clusters() {
        // These values are what every tidemark computes: changing them would let two
        // versions lead one cluster from two partitions.
        let pinned: Vec<u32> = ["prod", "staging", "c0", "c1"]
            .iter()
            .map(|c| partition_of(c, 8))
            .collect();
        assert_eq!(pinned, [3, 0, 5, 2]);
        assert_eq!(owner_of(3, ["r1", "r2", "r3"]), Some("r2"));
        let spread: std::collections::BTreeSet<u32> =
            (0..40).map(|i| partition_of(&format!("c{i}"), 8)).collect();
        assert_eq!(spread.len(), 8, "{spread:?}");
        assert_eq!(lease_prefix(0), "lease");
        assert_eq!(
            lease_key_in(&lease_prefix(3), 7),
            "leases/3/000000000007.json"
        );
    }

    #[test]
    fn rendezvous_moves_only_what_a_leaving_member_held() {
        let three = ["r1", "r2", "r3"];
        let two = ["r1", "r2"];
        let mut counts = std::collections::BTreeMap::new();
        for p in 0..60u32 {
            let before = owner_of(p, three).unwrap();
            *counts.entry(before).or_insert(0) += 1;
            let after = owner_of(p, two).unwrap();
            if before != "r3" {
                assert_eq!(before, after, "partition {p} moved though its owner stayed");
            }
        }
        // Each of three members leads some of 60 partitions.
        assert!(counts.values().all(|n| *n >= 10), "{counts:?}");
        assert_eq!(owner_of(5, std::iter::empty()), None);
    }
}
