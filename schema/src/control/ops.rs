//! Ops: commands from the reconciler (or a test, or the CLI) to agents, and the per-node
//! phase reports agents write back. One writer per key: the op is created once by its
//! author, each report only by the node it names.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::manifest::OpTime;
use crate::model::{BackupType, Compression};

/// `ops/<op-id>/op.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Op {
    pub id: String,
    pub created_at: DateTime<Utc>,
    pub cluster: String,
    /// The nodes that must act; an agent ignores ops that do not name it.
    pub targets: Vec<OpTarget>,
    pub command: OpCommand,
    /// A node that has not started the op by then refuses it, touching nothing: an op
    /// that waited out a long outage must not surprise anyone when the agent returns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DateTime<Utc>>,
    /// The fencing number of the leader that wrote it (`lease/`): a deposed leader's ops
    /// are told apart from the new leader's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// What made the reconciler write it (`describe-*` shows it). Signed with the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<OpCause>,
}

/// The audit trail of an op: the desired-state revision and document it came from, the
/// plan step's reason (a schedule's names its slot), and an operator's command behind it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpCause {
    /// The revision in force: a git commit id, or the policy directory's content hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The document behind it: `Backup/adhoc-1`, `BackupSchedule/nightly`, `Restore/r1`,
    /// `RestoreDrill/weekly`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<String>,
    /// The plan step's reason, as `diff` shows it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// An operator's command behind it: `cancel-restore by user@host at …`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
}

impl std::fmt::Display for OpCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(d) = &self.document {
            parts.push(d.clone());
        }
        if let Some(r) = &self.revision {
            parts.push(format!(
                "revision {}",
                r.chars().take(19).collect::<String>()
            ));
        }
        if let Some(c) = &self.command {
            parts.push(c.clone());
        }
        write!(f, "{}", parts.join(", "))?;
        if !self.reason.is_empty() {
            write!(f, ": {}", self.reason)?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpTarget {
    pub replica_set: String,
    pub node: String,
}

/// Where a backup goes or comes from: the storage's settings, copied into the op so agents
/// need no access to the desired state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageTarget {
    pub url: String,
    #[serde(default)]
    pub compression: Compression,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression_level: Option<i32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum OpCommand {
    /// Copy this node's files (physical) or expose them for a snapshot (external).
    #[serde(rename_all = "camelCase")]
    Backup {
        backup: String,
        storage: StorageTarget,
        backup_type: BackupType,
        /// Extend the cursor to this cluster-wide point before closing it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        extend_to: Option<OpTime>,
        /// External backups: a command the agent runs itself, with `TIDEMARK_DBPATH` and
        /// `TIDEMARK_FILE_LIST` in its environment, instead of waiting for `backup-finish`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        snapshot_command: Option<Vec<String>>,
        /// Namespaces whose `dbHash` the manifest records (for drills to compare).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        hash_namespaces: Vec<String>,
        /// A backup of several replica sets: after copying, each node waits for the
        /// common point in `ops/<op>/extend.json` (the highest `oplogEnd` the nodes
        /// reported when their cursors opened) and extends its cursor to it, so every
        /// replica set restores to one cluster time.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        barrier: bool,
        /// An incremental backup: the chain it starts or continues.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        incremental: Option<IncrementalBackup>,
    },
    /// Replace this node's data with a backup's.
    #[serde(rename_all = "camelCase")]
    Restore {
        backup: String,
        storage: StorageTarget,
        fallback_enabled: bool,
        #[serde(default)]
        external: bool,
        /// Wait after the checks (precheck, disk) until `go.json` exists, so that the
        /// reconciler can abort the whole restore before any node is touched when one
        /// node fails its checks. `result.json` appearing instead aborts.
        #[serde(default)]
        wait_for_go: bool,
        /// Nodes whose master key cannot decrypt the backup (found in pre-flight, with
        /// `allowPartlyDone`): each stops with the others and fails at `stop`, untouched and
        /// without downloading, to be wiped and initial-synced afterwards.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        cannot_decrypt: Vec<OpTarget>,
        /// Replica set in the cluster → replica set in the backup, where they differ
        /// (`replicaSetRemap`): a node restores its replica set's source manifest.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        replica_set_map: BTreeMap<String, String>,
        /// A sharded cluster's restore: the metadata each node rewrites in its last
        /// standalone start, so the restored shards and config server know each other
        /// under the target cluster's names and hosts.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sharding: Option<ShardingRestore>,
        /// The stop order after `go`, in waves: a node stops once every node of the
        /// earlier waves has stopped (or ended, or a `--mongod-timeout` passed). Data-
        /// bearing shards before the config server; in each replica set the secondaries
        /// before the primary. Empty: all at once.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        stop_waves: Vec<Vec<OpTarget>>,
        /// How long a node waits at `ready` for `go` (the reconciler's `--go-timeout`, in
        /// milliseconds). Past it the node closes the gate and refuses, untouched, and it
        /// never acts on a gate opened later than this after the op was created: a restore
        /// that did not start within minutes must not start hours later by surprise.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        go_timeout_ms: Option<u64>,
        /// A point-in-time restore: the oplog each node replays after recovering the base.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        point_in_time: Option<super::PointInTimeReplay>,
    },
    /// Put the dbPath back exactly as before restore op `restore_op`.
    #[serde(rename_all = "camelCase")]
    RevertToFallback { restore_op: String },
    /// Empty the dbPath (keeping nothing) so the node initial-syncs when started.
    #[serde(rename_all = "camelCase")]
    WipeForInitialSync { restore_op: String },
    /// Delete the fallback directory of restore op `restore_op`.
    #[serde(rename_all = "camelCase")]
    RemoveFallback { restore_op: String },
    /// Start mongod as a replica-set member again, with the command line it had before
    /// restore op `restore_op` stopped it.
    #[serde(rename_all = "camelCase")]
    StartMongod { restore_op: String },
    /// A drill agent restores a backup into scratch dbPaths under its `--drill-dir`,
    /// starts a standalone mongod on each, runs the checks, then removes everything.
    #[serde(rename_all = "camelCase")]
    Drill {
        drill: String,
        backup: String,
        storage: StorageTarget,
        /// The replica sets of the backup, each restored into its own scratch dbPath.
        replica_sets: Vec<String>,
        checks: crate::model::DrillChecks,
    },
    /// A drill agent restores one replica set of a backup into a scratch dbPath, starts it
    /// as a private standalone and copies the selected collections into the running
    /// cluster through its primary; no node of the cluster is stopped.
    #[serde(rename_all = "camelCase")]
    SelectiveRestore {
        restore: String,
        backup: String,
        storage: StorageTarget,
        /// The backup's replica set the collections come from.
        replica_set: String,
        /// `db.coll` or `db.*`, as declared.
        namespaces: Vec<String>,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        rename_to: BTreeMap<String, String>,
        on_existing: crate::model::OnExisting,
        /// The running replica set: its name and members (`host:port`), from the Cluster
        /// document. The agent reaches its primary through them.
        target: SelectiveTarget,
    },
}

/// What an incremental backup's node opens its `$backupCursor` with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IncrementalBackup {
    /// The chain's base (the backup itself for a new base).
    pub base: String,
    /// The backup this one continues (`srcBackupName` is derived from it); `None` starts
    /// a chain: the node's tracking history is cleared first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The chain's block size in MB.
    #[serde(rename = "blockSizeMB")]
    pub block_size_mb: u32,
}

/// The replica set a selective restore writes into.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SelectiveTarget {
    pub replica_set: String,
    pub members: Vec<String>,
}

impl SelectiveTarget {
    /// A connection string that finds the set's primary.
    pub fn uri(&self) -> String {
        format!(
            "mongodb://{}/?replicaSet={}",
            self.members.join(","),
            self.replica_set
        )
    }
}

impl OpCommand {
    pub fn name(&self) -> &'static str {
        match self {
            OpCommand::Backup { .. } => "backup",
            OpCommand::Restore { .. } => "restore",
            OpCommand::RevertToFallback { .. } => "revertToFallback",
            OpCommand::WipeForInitialSync { .. } => "wipeForInitialSync",
            OpCommand::RemoveFallback { .. } => "removeFallback",
            OpCommand::StartMongod { .. } => "startMongod",
            OpCommand::Drill { .. } => "drill",
            OpCommand::SelectiveRestore { .. } => "selectiveRestore",
        }
    }
}

/// A phase of an op on one node, declared in the order phases run within any one op, so
/// that "the furthest phase a node reached" is the maximum of its phases (never the newest
/// report by an agent's clock): a restore `precheck, disk, ready, stop, fallback,
/// [copyReady,] fetch, recover`; a backup `cursor, copy, [copyReady, snapshot,] extend,
/// close, manifest`; a drill `precheck, fetch, recover, check`; a selective restore `precheck, fetch, recover,
/// check, import, swap`. `done` and `error` are
/// final: an op has ended on a node exactly when one of them exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Phase {
    Precheck,
    Disk,
    Ready,
    Stop,
    Fallback,
    Cursor,
    Copy,
    /// External backup: the files are ready to copy; external restore: the dbPath is
    /// ready for the snapshot's files.
    CopyReady,
    Fetch,
    Snapshot,
    Extend,
    Close,
    Manifest,
    Recover,
    /// Point-in-time restore: the recovered base's standalone applies the oplog chunks up
    /// to the target.
    Replay,
    // Drill: the checks against the scratch standalone. Selective restore: the checks of
    // the selected collections and their targets, before any write.
    Check,
    /// Selective restore: the collections are copied into the running cluster (into
    /// staging collections, or upserted into existing targets for `merge`).
    Import,
    /// Selective restore: each staging collection is renamed onto its target.
    Swap,
    // Follow-up instructions after a restore.
    Revert,
    Wipe,
    RemoveFallback,
    Start,
    /// Writing a report to the control plane failed.
    Report,
    // Final.
    Done,
    Error,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Precheck => "precheck",
            Phase::Disk => "disk",
            Phase::Ready => "ready",
            Phase::Stop => "stop",
            Phase::Fallback => "fallback",
            Phase::Fetch => "fetch",
            Phase::CopyReady => "copyReady",
            Phase::Recover => "recover",
            Phase::Replay => "replay",
            Phase::Cursor => "cursor",
            Phase::Copy => "copy",
            Phase::Snapshot => "snapshot",
            Phase::Extend => "extend",
            Phase::Close => "close",
            Phase::Manifest => "manifest",
            Phase::Check => "check",
            Phase::Import => "import",
            Phase::Swap => "swap",
            Phase::Revert => "revert",
            Phase::Wipe => "wipe",
            Phase::RemoveFallback => "removeFallback",
            Phase::Start => "start",
            Phase::Report => "report",
            Phase::Done => "done",
            Phase::Error => "error",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, Phase::Done | Phase::Error)
    }

    /// Whether a restore that reached this phase may have changed the node: mongod
    /// stopped (`stop`) or its dbPath replaced (`fallback` and later). The checks before
    /// (`precheck`, `disk`, `ready`) touch nothing.
    /// Per op: a backup's phases (its cursor, its copy) and a drill's check only read the
    /// node, so a backup that failed at `cursor` is refused, not a "touched node". A report
    /// whose writing failed (`report`) and the final phases count as touching: unknown is
    /// treated as changed, the safe side. Exhaustive, so a new phase must say.
    pub fn touches_node(self) -> bool {
        match self {
            Phase::Precheck | Phase::Disk | Phase::Ready => false,
            Phase::Cursor
            | Phase::Copy
            | Phase::Snapshot
            | Phase::Extend
            | Phase::Close
            | Phase::Manifest
            | Phase::Check => false,
            Phase::Stop
            | Phase::Fallback
            | Phase::Fetch
            | Phase::CopyReady
            | Phase::Recover
            | Phase::Replay => true,
            Phase::Revert | Phase::Wipe | Phase::RemoveFallback | Phase::Start => true,
            // The cluster's data may have changed (a merge, a rename onto a target).
            Phase::Import | Phase::Swap => true,
            Phase::Report | Phase::Done | Phase::Error => true,
        }
    }

    /// Whether a restore that reached this phase may have changed the dbPath's content
    /// (moved into the fallback, wiped, or partly written). A node that only reached
    /// `stop` still holds its old data.
    pub fn touches_data(self) -> bool {
        self.touches_node() && self != Phase::Stop
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of one phase on one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PhaseStatus {
    Running,
    Done,
    Error,
}

/// How an op ended on a node, machine-readable so the decision flow never parses text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NodeOutcome {
    Done,
    /// A check refused the op before anything on the node was touched.
    Refused,
    /// The op failed after touching the node (`failedPhase` says how far it got).
    Failed,
}

/// `ops/<op-id>/<rs>/<node>.<phase>.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PhaseReport {
    pub op_id: String,
    pub replica_set: String,
    pub node: String,
    pub phase: Phase,
    pub status: PhaseStatus,
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Final reports only: done, refused (untouched) or failed (touched).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<NodeOutcome>,
    /// Error reports only: the phase that failed, which is the last one the node reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_phase: Option<Phase>,
    /// Figures worth keeping: disk numbers, byte counts, file names, timestamps.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, serde_json::Value>,
}

/// `ops/<op-id>/finish.json`: written by `tidemark backup-finish` / `restore-finish` when
/// the operator's snapshot copy is complete.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FinishSignal {
    pub op_id: String,
    pub at: DateTime<Utc>,
    /// `user@host` of whoever ran the command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

pub fn finish_key(op_id: &str) -> String {
    format!("{}/{op_id}/finish.json", super::OPS_PREFIX)
}

/// What a sharded restore rewrites for the target's hosts and names: on every shard
/// `admin.system.version`'s `shardIdentity` (the config server's connection string, and
/// the shard name when renamed), its `minOpTimeRecovery` (dropped) and routing caches
/// (`config.cache.*`, dropped); on the config server each `config.shards` entry's host
/// (other fields kept), and for a renamed shard its id in `config.shards`,
/// `config.chunks` and `config.databases`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardingRestore {
    /// `cfg/host1:port,host2:port,…`.
    pub config_server: String,
    /// The cluster's shard replica sets: name → `name/host1:port,…`.
    pub shards: BTreeMap<String, String>,
    /// Backup replica-set name → cluster replica-set name, for shards restored under
    /// another name (`replicaSetRemap`): their shard ids are renamed to the new names.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub renamed: BTreeMap<String, String>,
}

/// `ops/<op-id>/extend.json`: the common point of a backup with a barrier, written once by
/// the reconciler once every node reported its cursor open.
pub fn extend_key(op_id: &str) -> String {
    format!("{}/{op_id}/extend.json", super::OPS_PREFIX)
}

/// The content of `extend.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtendTarget {
    /// The backup's cluster time: every replica set's data is cut here.
    pub target: OpTime,
    /// The `$clusterTime` document (signed, as a server sent it) of the replica set that
    /// reached `target`: the others gossip it to their node, whose next writes (or
    /// periodic no-op) then sort after it, so the extension completes even when idle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_time: Option<serde_json::Value>,
    pub at: DateTime<Utc>,
}

/// `ops/<op-id>/abort.json`: the op's author asks every node to stop at its next phase
/// boundary (a restore then fails there, reporting how far it got).
pub fn abort_key(op_id: &str) -> String {
    format!("{}/{op_id}/abort.json", super::OPS_PREFIX)
}

/// `ops/<op-id>/go.json`: the gate of a restore waiting for go. It is created once, never
/// overwritten, by whoever decides first: the reconciler with `go` once every node is
/// ready, or the reconciler or an agent with `abort` (then no node is ever touched).
pub fn go_key(op_id: &str) -> String {
    format!("{}/{op_id}/go.json", super::OPS_PREFIX)
}

/// The content of `go.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Gate {
    pub at: DateTime<Utc>,
    /// Set when the gate was closed instead of opened: who closed it and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<String>,
    /// The fencing number of the leader that opened it: agents refuse a gate of a lower
    /// epoch than the highest they have seen (a deposed leader's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

impl Gate {
    pub fn go(at: DateTime<Utc>, epoch: Option<u64>) -> Gate {
        Gate {
            at,
            abort: None,
            epoch,
        }
    }

    pub fn abort(at: DateTime<Utc>, why: impl Into<String>) -> Gate {
        Gate {
            at,
            abort: Some(why.into()),
            epoch: None,
        }
    }

    pub fn is_go(&self) -> bool {
        self.abort.is_none()
    }

    /// How agents and the reconciler alike read whatever `go.json` holds: closed when it
    /// has an `abort` (its text, or a placeholder), open otherwise (`{}` opens it too).
    pub fn read(value: &serde_json::Value) -> Result<(), String> {
        match value.get("abort") {
            None | Some(serde_json::Value::Null) => Ok(()),
            Some(serde_json::Value::String(why)) => Err(why.clone()),
            Some(other) => Err(format!("closed ({other})")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Phase::*;

    /// Every op's phases, in the order they run, sort in that order: the furthest phase a
    /// node reached is their maximum.
    #[test]
    fn each_ops_phases_sort_in_the_order_they_run() {
        let flows: [&[super::Phase]; 5] = [
            &[Precheck, Disk, Ready, Stop, Fallback, Fetch, Recover, Done],
            &[
                Precheck, Disk, Ready, Stop, Fallback, CopyReady, Fetch, Recover, Done,
            ],
            &[Cursor, Copy, Extend, Close, Manifest, Done],
            &[Cursor, CopyReady, Snapshot, Extend, Close, Manifest, Done],
            &[Precheck, Fetch, Recover, Check, Done],
        ];
        for flow in flows {
            assert!(flow.windows(2).all(|w| w[0] < w[1]), "{flow:?}");
        }
    }
}
