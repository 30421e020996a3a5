//! Object keys of the control plane, relative to the `--control` URL.
//!
//! Every key is built here so that the reconciler, the agents and the CLI cannot drift.

/// Prefix of agent heartbeats: `agents/<cluster>/<rs>/<node>.json`.
pub const AGENTS_PREFIX: &str = "agents";
/// Prefix of ops: `ops/<op-id>/…`.
pub const OPS_PREFIX: &str = "ops";
/// The applied revision with the canonical YAML of every document.
pub const APPLIED_KEY: &str = "ledger/applied.json";
/// The last revision tried, valid or not, with its errors.
pub const ATTEMPTED_KEY: &str = "ledger/attempted.json";
/// Prefix of one-shot outcomes: `ledger/oneshots/<kind>/<name>.json`.
pub const ONESHOTS_PREFIX: &str = "ledger/oneshots";
/// Prefix of the backup catalog: `catalog/<backup>.json`.
pub const CATALOG_PREFIX: &str = "catalog";
/// Which reconciler leads: `lease/<epoch>.json` and `lease/<epoch>/renewed.json`.
pub const LEASE_PREFIX: &str = "lease";
/// Agents' log lines per op: `logs/<op>/<rs>/<node>/<stamp>.json`.
pub const LOGS_PREFIX: &str = "logs";
/// Ended ops compacted into one object each.
pub const ARCHIVE_PREFIX: &str = "ledger/archive";
/// Prefix of schedule records: `ledger/schedules/<name>.json`.
pub const SCHEDULES_PREFIX: &str = "ledger/schedules";

/// Prefix of drill records: `ledger/drills/<drill>.json` (when its runs count from).
pub const DRILLS_PREFIX: &str = "ledger/drills";
/// The replica-set part of a drill agent's heartbeat and reports: a drill agent belongs
/// to no replica set. Validation refuses a replica set of this name, so none collides.
pub const DRILL_REPLICA_SET: &str = "_drill";

/// Node ids are `host:port`; `:` is legal in object keys but not in every file system
/// path, so keys spell it `host_port`.
pub fn node_key_part(node: &str) -> String {
    node.replace(':', "_")
}

pub fn heartbeat_key(cluster: &str, rs: &str, node: &str) -> String {
    format!(
        "{AGENTS_PREFIX}/{cluster}/{rs}/{}.json",
        node_key_part(node)
    )
}

pub fn op_key(op_id: &str) -> String {
    format!("{OPS_PREFIX}/{op_id}/op.json")
}

pub fn phase_key(op_id: &str, rs: &str, node: &str, phase: &str) -> String {
    format!(
        "{OPS_PREFIX}/{op_id}/{rs}/{}.{phase}.json",
        node_key_part(node)
    )
}

/// The restore log a node kept before a revert or a wipe emptied its dbPath (JSON string).
pub fn restore_log_key(op_id: &str, rs: &str, node: &str) -> String {
    format!(
        "{OPS_PREFIX}/{op_id}/{rs}/{}.restore-log.json",
        node_key_part(node)
    )
}

/// Where the agents' log chunks of an op go: `logs/<op>/`. Outside `ops/`, so agents
/// listing ops never page through them, and no replica-set name can collide with them.
pub fn op_logs_prefix(op_id: &str) -> String {
    format!("{LOGS_PREFIX}/{op_id}/")
}

/// One chunk of one node's log lines for an op; `stamp` orders the node's chunks.
pub fn op_log_key(op_id: &str, rs: &str, node: &str, stamp: &str) -> String {
    format!(
        "{}{rs}/{}/{stamp}.json",
        op_logs_prefix(op_id),
        node_key_part(node)
    )
}

/// The archive of an ended op whose working records were compacted away.
pub fn archive_key(op_id: &str) -> String {
    format!("{ARCHIVE_PREFIX}/{op_id}.json")
}

pub fn result_key(op_id: &str) -> String {
    format!("{OPS_PREFIX}/{op_id}/result.json")
}

/// `kind` is the document kind in lowercase (`backup`, `restore`).
pub fn oneshot_key(kind: &str, name: &str) -> String {
    format!("{ONESHOTS_PREFIX}/{kind}/{name}.json")
}

/// A one-shot whose step keeps failing, and its next try: `ledger/retry/<kind>/<name>.json`.
pub fn retry_key(kind: &str, name: &str) -> String {
    format!("ledger/retry/{kind}/{name}.json")
}

/// An operator's request to cancel a one-shot: `ledger/cancel/<kind>/<name>.json`.
pub fn cancel_key(kind: &str, name: &str) -> String {
    format!("ledger/cancel/{kind}/{name}.json")
}

/// A one-shot the planner cannot start yet, and why: `ledger/waiting/<kind>/<name>.json`.
pub fn waiting_key(kind: &str, name: &str) -> String {
    format!("ledger/waiting/{kind}/{name}.json")
}

pub fn schedule_key(name: &str) -> String {
    format!("{SCHEDULES_PREFIX}/{name}.json")
}

pub fn drill_key(name: &str) -> String {
    format!("{DRILLS_PREFIX}/{name}.json")
}

/// Zero-padded so that keys sort by epoch.
pub fn lease_key(epoch: u64) -> String {
    format!("{LEASE_PREFIX}/{epoch:012}.json")
}

pub fn lease_renewal_key(epoch: u64) -> String {
    format!("{LEASE_PREFIX}/{epoch:012}/renewed.json")
}

pub fn catalog_key(backup: &str) -> String {
    format!("{CATALOG_PREFIX}/{backup}.json")
}

/// Op ids sort by creation time, so an agent lists `ops/` with an offset and sees only
/// what is new: `<UTC time as YYYYMMDDTHHMMSSmmmZ>-<kind>-<name>`.
pub fn op_id(at: chrono::DateTime<chrono::Utc>, kind: &str, name: &str) -> String {
    format!("{}-{kind}-{name}", at.format("%Y%m%dT%H%M%S%3fZ"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_ids_sort_by_time() {
        let a = op_id("2026-01-01T00:00:00Z".parse().unwrap(), "backup", "z");
        let b = op_id("2026-01-01T00:00:00.001Z".parse().unwrap(), "backup", "a");
        assert!(a < b, "{a} < {b}");
        assert_eq!(
            heartbeat_key("prod", "rs0", "db1:27017"),
            "agents/prod/rs0/db1_27017.json"
        );
    }
}
