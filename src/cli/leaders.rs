//! Who leads what, for `tidemark status`: each partition's lease, the clusters in it,
//! and the reconcilers sharing the fleet. With one partition it is the single lease.

use serde_json::{Value, json};
use tidemark_schema::control::{
    MEMBERS_PREFIX, PARTITIONS_KEY, PartitionsRecord, lease_prefix, partition_of,
};
use tidemark_store::control::{ControlPlane, ObservedState, lease};

/// `partitions` and `reconcilers` of the status JSON: per partition its leader and
/// clusters (those of the applied revision and of agents' heartbeats).
pub async fn leaders(control: &ControlPlane, observed: &ObservedState) -> anyhow::Result<Value> {
    let count = control
        .get::<PartitionsRecord>(PARTITIONS_KEY)
        .await?
        .map_or(1, |r| r.partitions);
    if count <= 1 {
        // One lease, which `leader` shows: nothing more to read.
        return Ok(json!({ "count": 1, "leases": [], "reconcilers": [] }));
    }
    let mut clusters: std::collections::BTreeSet<String> = observed
        .heartbeats
        .iter()
        .map(|h| h.cluster.clone())
        .collect();
    if let Some(desired) = observed
        .applied
        .as_ref()
        .and_then(tidemark_reconciler::run::desired_from_applied)
    {
        clusters.extend(desired.clusters().map(|(name, _)| name.to_string()));
    }
    let mut partitions = Vec::new();
    for p in 0..count {
        let lease = lease::describe_in(control, &lease_prefix(p)).await?;
        let of: Vec<&String> = clusters
            .iter()
            .filter(|c| partition_of(c, count) == p)
            .collect();
        partitions.push(json!({
            "partition": p,
            "holder": lease.as_ref().map(|(l, _)| l.holder.clone()),
            "epoch": lease.as_ref().map(|(l, _)| l.epoch),
            "renewedAt": lease.as_ref().and_then(|(_, r)| r.as_ref().map(|r| r.at)),
            "released": lease.as_ref().is_some_and(|(_, r)| r.as_ref().is_some_and(|r| r.released)),
            "clusters": of,
        }));
    }
    let reconcilers: Vec<String> = control
        .keys(MEMBERS_PREFIX)
        .await?
        .iter()
        .filter_map(|k| {
            k.strip_prefix(MEMBERS_PREFIX)?
                .strip_prefix('/')?
                .strip_suffix(".json")
                .map(str::to_string)
        })
        .collect();
    Ok(json!({ "count": count, "leases": partitions, "reconcilers": reconcilers }))
}

/// The text lines of a partitioned fleet (nothing with one partition: `leader:` says it).
pub fn render(v: &Value, out: &mut String) {
    let count = v["partitions"]["count"].as_u64().unwrap_or(1);
    if count <= 1 {
        return;
    }
    let members = v["partitions"]["reconcilers"]
        .as_array()
        .map_or(0, |a| a.len());
    out.push_str(&format!(
        "partitions: {count}, shared by {members} reconciler(s)\n"
    ));
    for p in v["partitions"]["leases"].as_array().into_iter().flatten() {
        let clusters: Vec<String> = p["clusters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(super::list::text)
            .collect();
        let who = match (&p["holder"], p["released"] == json!(true)) {
            (Value::String(h), false) => format!("{h} (epoch {})", p["epoch"]),
            (Value::String(h), true) => format!("nobody (released by {h})"),
            _ => "nobody yet".to_string(),
        };
        out.push_str(&format!(
            "  partition {}: {who}; clusters: {}\n",
            p["partition"],
            match clusters.is_empty() {
                true => "-".to_string(),
                false => clusters.join(", "),
            }
        ));
    }
}
