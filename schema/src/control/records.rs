//! Records stored in the control plane. Field names are camelCase JSON and stable: other
//! tools read them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::control::Phase;
use crate::model::BackupType;

/// `ledger/applied.json`: the revision in force and every document's canonical YAML.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppliedRevision {
    pub revision: String,
    pub applied_at: DateTime<Utc>,
    pub documents: Vec<AppliedDocument>,
    /// The fencing number of the leader that wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// Its seal as read: a reconciler with a key falls back to this revision only when it
    /// carries its own seal (see `signature.rs`); never set when writing.
    #[serde(default, rename = "signature", skip_serializing_if = "Option::is_none")]
    pub seal: Option<serde_json::Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppliedDocument {
    pub kind: String,
    pub name: String,
    pub file: String,
    pub spec_hash: String,
    pub canonical_yaml: String,
}

/// `ledger/attempted.json`: the last revision tried, and why it was refused if it was.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttemptedRevision {
    pub revision: String,
    pub attempted_at: DateTime<Utc>,
    pub errors: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

/// Status of a one-shot or an op, with PBM's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RunStatus {
    Starting,
    Running,
    Done,
    PartlyDone,
    Error,
    /// Ended on the operator's request (`tidemark cancel-*`): nothing it did stays (a
    /// restore's touched nodes are reverted, a backup's objects deleted).
    Cancelled,
}

impl RunStatus {
    /// Ended without the outcome asked for: nothing may build on it (no node is started
    /// as restored, no fresh backup is taken, no backup counts as good).
    pub fn is_failure(self) -> bool {
        matches!(self, RunStatus::Error | RunStatus::Cancelled)
    }
}

/// `ledger/cancel/<kind>/<name>.json`: the operator's request to cancel a running
/// one-shot, created once by `tidemark cancel-backup` / `cancel-restore`. The reconciler
/// carries it out as a transition of the one-shot's lifecycle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelRequest {
    pub kind: String,
    pub name: String,
    pub at: DateTime<Utc>,
    /// `user@host` of whoever ran the command.
    pub by: String,
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RunStatus::Starting => "starting",
            RunStatus::Running => "running",
            RunStatus::Done => "done",
            RunStatus::PartlyDone => "partlyDone",
            RunStatus::Error => "error",
            RunStatus::Cancelled => "cancelled",
        })
    }
}

/// What a one-shot is. Written in records as its document kind (`Backup`, `Restore`,
/// `RestoreDrill`); its ledger keys use `key()` (`backup`, `restore`, `restoredrill`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum OneShotKind {
    Backup,
    Restore,
    /// One run of a `RestoreDrill`.
    RestoreDrill,
}

impl OneShotKind {
    /// The kind as ledger keys and the CLI name it.
    pub fn key(self) -> &'static str {
        match self {
            OneShotKind::Backup => "backup",
            OneShotKind::Restore => "restore",
            OneShotKind::RestoreDrill => "restoredrill",
        }
    }

    /// The one-shot kind of a document kind, if it is one.
    pub fn of(kind: crate::model::Kind) -> Option<OneShotKind> {
        match kind {
            crate::model::Kind::Backup => Some(OneShotKind::Backup),
            crate::model::Kind::Restore => Some(OneShotKind::Restore),
            crate::model::Kind::RestoreDrill => Some(OneShotKind::RestoreDrill),
            _ => None,
        }
    }

    /// The kind as documents name it.
    pub fn as_str(self) -> &'static str {
        match self {
            OneShotKind::Backup => "Backup",
            OneShotKind::Restore => "Restore",
            OneShotKind::RestoreDrill => "RestoreDrill",
        }
    }
}

impl std::fmt::Display for OneShotKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `ledger/oneshots/<kind>/<name>.json`: written when a one-shot starts, so it never runs
/// twice, and updated when it ends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OneShotRecord {
    pub kind: OneShotKind,
    pub name: String,
    pub op_id: String,
    pub started_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    pub status: RunStatus,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// What the one-shot was started with (its op and declared settings), so that it is
    /// finished as declared even when its document is edited or deleted meanwhile, and a
    /// crash between this record and its op can be completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_with: Option<serde_json::Value>,
    /// The fencing number of the leader that last wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// Drills: what the run measured and what its checks found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<DrillOutcome>,
    /// Selective restores: what happened to each collection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selective: Option<super::SelectiveOutcome>,
    /// A backup deleted by `forget-backup`: by whom and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forgotten: Option<OperatorCommand>,
}

/// An operator's command, for the audit trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperatorCommand {
    pub command: String,
    /// `user@host`.
    pub by: String,
    pub at: DateTime<Utc>,
}

/// A one-shot's step that failed, and when the reconciler tries it again (each failure
/// waits longer, up to a cap): `ledger/retry/<kind>/<name>.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Retry {
    pub failures: u32,
    pub error: String,
    pub next_at: DateTime<Utc>,
}

/// What one drill run measured, as its agent reported it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DrillOutcome {
    pub backup: String,
    /// The drill agent (its `--node-id`).
    pub agent: String,
    /// The wall-clock time of the backup's last write: what a restore brings back.
    pub data_as_of: DateTime<Utc>,
    /// Restore time objective as measured: from the drill's start until the restored
    /// standalone answered (download, oplog recovery and start).
    pub rto_seconds: f64,
    /// Recovery point as measured: how old the restored data was when the drill started.
    pub rpo_seconds: f64,
    pub checks: Vec<DrillCheckResult>,
}

impl DrillOutcome {
    pub fn failed_checks(&self) -> impl Iterator<Item = &DrillCheckResult> {
        self.checks
            .iter()
            .filter(|c| c.status == DrillCheckStatus::Failed)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DrillCheckResult {
    /// `collection` or `dbHash`.
    pub check: String,
    pub namespace: String,
    pub status: DrillCheckStatus,
    /// What was found, in a sentence (counts, hashes, why it was skipped).
    pub detail: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DrillCheckStatus {
    Passed,
    Failed,
    /// Nothing to compare with (no hash recorded when the backup was taken).
    Skipped,
}

impl OneShotRecord {
    pub fn is_final(&self) -> bool {
        matches!(
            self.status,
            RunStatus::Done | RunStatus::PartlyDone | RunStatus::Error | RunStatus::Cancelled
        )
    }

    /// The cluster the one-shot acts on, from the op it was started with.
    pub fn cluster(&self) -> Option<&str> {
        self.started_with.as_ref()?["op"]["cluster"].as_str()
    }

    /// A setting it was started with (`backup` for a restore's source, `schedule`, …).
    pub fn setting(&self, name: &str) -> Option<&str> {
        self.started_with.as_ref()?["settings"][name].as_str()
    }
}

/// `ledger/schedules/<name>.json`: a schedule as the reconciler runs it. Slots count from
/// `since`: a new schedule, a resumed one or one whose cron changed owes nothing before.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleRecord {
    pub schedule: String,
    pub since: DateTime<Utc>,
    pub cron: String,
    pub timezone: String,
    pub suspended: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

/// `lease/<epoch>.json`: the leadership of epoch `epoch`, created (create-if-absent) by
/// the reconciler that won it. The highest epoch is the leader; its fencing number is the
/// epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseRecord {
    pub epoch: u64,
    pub holder: String,
    pub acquired_at: DateTime<Utc>,
    /// A candidate takes over once renewals stopped for this long.
    pub ttl_ms: u64,
    /// Where the holder's agents wait for its doorbell (`reconcile --listen`), if it
    /// serves one: shown by `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doorbell: Option<String>,
    /// The partition count of the holder (absent: a version without partitions, whose
    /// single lease leads every cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<u32>,
}

/// `lease/<epoch>/renewed.json`: rewritten by the holder only, every third of the TTL.
/// Candidates watch `seq` change on their own clock, so clock skew between hosts does not
/// matter; `released` hands leadership over at once on a clean stop.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseRenewal {
    pub seq: u64,
    pub at: DateTime<Utc>,
    #[serde(default)]
    pub released: bool,
}

/// `ledger/waiting/<kind>/<name>.json`: a one-shot that cannot start yet, and why;
/// rewritten every pass while it waits, deleted when it starts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WaitingRecord {
    pub kind: OneShotKind,
    pub name: String,
    /// Since when it waits for this reason.
    pub at: DateTime<Utc>,
    pub reason: String,
    /// Since when it waits at all, whatever the reasons: a point-in-time restore first
    /// seen before its target was declared for a time to come, and is never started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    /// A point-in-time restore's target: `since` starts again when it is changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<super::ReplayTarget>,
}

/// `<backup>/backup.json` in the backup storage: the cluster-wide completion marker,
/// written by the reconciler after every replica set's manifest was read back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupMarker {
    pub backup: String,
    pub cluster: String,
    pub op_id: String,
    pub completed_at: DateTime<Utc>,
    pub replica_sets: Vec<BackupReplicaSet>,
    /// A backup of several replica sets: the one cluster time every one restores to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_time: Option<crate::manifest::OpTime>,
}

/// `ops/<op-id>/result.json`: the cluster-wide outcome of an op, written once (create-if-
/// absent) by the reconciler after every node's final report was read or the node was
/// declared lost. Agents stop waiting on an op once it exists.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpResult {
    pub op_id: String,
    pub status: RunStatus,
    pub decided_at: DateTime<Utc>,
    /// Why, in one sentence: the rule of the decision flow that applied.
    pub reason: String,
    /// Restores: every node, what happened to it and what it needs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeVerdict>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

/// One node of a decided restore.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeVerdict {
    pub replica_set: String,
    pub node: String,
    pub fate: NodeFate,
    /// The last phase the node reached (for a failed node: the phase that failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// What the reconciler does to the node next, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remedies: Vec<Remedy>,
    /// What an operator must know or do that tidemark cannot (a lost node, partial data).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
    /// The note asks the operator to act on the node: the restore's outcome repeats it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub needs_operator: bool,
}

/// A replica-set member's state as mongod names it (`replSetGetStatus`'s `stateStr`), or
/// `DOWN` when its agent cannot reach it. Written and read as mongod's string.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum MemberRole {
    Primary,
    Secondary,
    Arbiter,
    Down,
    /// `STARTUP2`, `RECOVERING`, `ROLLBACK`, … kept as mongod said it.
    Other(String),
}

impl MemberRole {
    pub fn as_str(&self) -> &str {
        match self {
            MemberRole::Primary => "PRIMARY",
            MemberRole::Secondary => "SECONDARY",
            MemberRole::Arbiter => "ARBITER",
            MemberRole::Down => "DOWN",
            MemberRole::Other(s) => s,
        }
    }

    /// PRIMARY or SECONDARY: a member that holds and serves the data.
    pub fn is_serving(&self) -> bool {
        matches!(self, MemberRole::Primary | MemberRole::Secondary)
    }
}

impl From<String> for MemberRole {
    fn from(s: String) -> MemberRole {
        match s.as_str() {
            "PRIMARY" => MemberRole::Primary,
            "SECONDARY" => MemberRole::Secondary,
            "ARBITER" => MemberRole::Arbiter,
            "DOWN" => MemberRole::Down,
            _ => MemberRole::Other(s),
        }
    }
}

impl From<&str> for MemberRole {
    fn from(s: &str) -> MemberRole {
        MemberRole::from(s.to_string())
    }
}

impl From<MemberRole> for String {
    fn from(r: MemberRole) -> String {
        r.as_str().to_string()
    }
}

impl std::fmt::Display for MemberRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NodeFate {
    Done,
    /// Failed its checks before anything was touched.
    Refused,
    /// Failed after being touched.
    Failed,
    /// Its agent went silent past the dead threshold before a final report.
    Lost,
}

/// A follow-up instruction for one node after a restore is decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Remedy {
    /// Move the fallback directory back: the dbPath as before the restore.
    Revert,
    /// Empty the dbPath so the node initial-syncs from the restored members.
    Wipe,
    /// Delete the fallback directory.
    RemoveFallback,
    /// Start mongod as a replica-set member again.
    Start,
}

impl Remedy {
    pub fn as_str(self) -> &'static str {
        match self {
            Remedy::Revert => "revert",
            Remedy::Wipe => "wipe",
            Remedy::RemoveFallback => "removeFallback",
            Remedy::Start => "start",
        }
    }
}

/// `catalog/<backup>.json`: the reconciler's record of a backup in a storage, copied from
/// the backup's manifest once the manifest is complete.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupRecord {
    pub name: String,
    pub cluster: String,
    pub storage: String,
    /// The schedule that took it; `None` for a one-shot `Backup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    #[serde(rename = "type")]
    pub backup_type: BackupType,
    pub status: RunStatus,
    /// True once the completion marker (the backup manifest) is in storage.
    pub complete: bool,
    pub started_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// The cluster-wide point in time the backup restores to (`$backupCursorExtend`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_write: Option<DateTime<Utc>>,
    pub replica_sets: Vec<BackupReplicaSet>,
    /// Set before the first object is deleted (retention or `forget-backup`): from then on
    /// the backup is not restorable, and a crash mid-delete is finished by the next pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleting: Option<DateTime<Utc>>,
    /// Set when its schedule asks for verification: pending until checked, then passed
    /// or failed. Only a passed one counts as good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    /// An incremental backup's place in its chain; `None` for full and external backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<ChainLink>,
}

/// Where an incremental backup sits in its chain. A restore of it needs every backup from
/// the base to it, so retention keeps those as long as it keeps this one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChainLink {
    /// The chain's first backup, a full copy (this backup's own name for a base).
    pub base: String,
    /// The backup this one holds the changes since; `None` for the base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// 0 for the base, 1 for its first increment, and so on.
    pub position: u32,
    /// The chain's block size in MB.
    #[serde(rename = "blockSizeMB")]
    pub block_size_mb: u32,
    /// Why the planner continued the chain here or started a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A backup's verification after it completed (`verify: metadata | data`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    pub level: crate::model::VerifyLevel,
    pub status: VerificationStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<DateTime<Utc>>,
    /// Each problem, naming replica set, file and object.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum VerificationStatus {
    Pending,
    Passed,
    Failed,
}

impl Verification {
    pub fn pending(level: crate::model::VerifyLevel) -> Verification {
        Verification {
            level,
            status: VerificationStatus::Pending,
            at: None,
            problems: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupReplicaSet {
    pub name: String,
    /// The node the files were copied from.
    pub node: String,
    pub mongod_version: String,
    /// Sum of the files' sizes as they are in the dbPath (the fallback disk check uses it).
    pub uncompressed_bytes: u64,
    /// Sum of the objects' sizes in storage (what a restore downloads).
    pub stored_bytes: u64,
    /// As the manifest records them: the restore's pre-flight compares nodes with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<crate::encryption::EncryptionSettings>,
    /// Whether `encryption` was recorded at all (older backups: unknown, not checked).
    #[serde(default)]
    pub encryption_recorded: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub storage_options: BTreeMap<String, serde_json::Value>,
    /// Each user collection's size when the backup was taken, from its manifest.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub collections: BTreeMap<String, crate::manifest::CollectionSize>,
    /// The replica set's last write in the backup (its manifest's): where a point-in-time
    /// restore's oplog replay starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_write_optime: Option<crate::manifest::OpTime>,
}

impl BackupRecord {
    /// A backup that can be restored: complete, done, not being deleted, and verified
    /// when its schedule asked for it.
    pub fn is_good(&self) -> bool {
        self.complete
            && self.status == RunStatus::Done
            && self.deleting.is_none()
            && self
                .verification
                .as_ref()
                .is_none_or(|v| v.status == VerificationStatus::Passed)
    }

    /// When the backup's data was cut, by the cluster's own clock (its last write, from
    /// the oplog), falling back to its start for a backup without one. Backups are
    /// ordered by it, never by `started_at`: that comes from whichever reconciler led at
    /// the time, and one whose clock ran an hour ahead would rank its backups above every
    /// later one.
    pub fn data_time(&self) -> DateTime<Utc> {
        self.last_write.unwrap_or(self.started_at)
    }

    /// The order of "newest": by data time, the name breaking ties so that the order
    /// never depends on listing order.
    pub fn recency(&self) -> (DateTime<Utc>, &str) {
        (self.data_time(), self.name.as_str())
    }

    pub fn uncompressed_bytes(&self) -> u64 {
        self.replica_sets.iter().map(|r| r.uncompressed_bytes).sum()
    }

    pub fn stored_bytes(&self) -> u64 {
        self.replica_sets.iter().map(|r| r.stored_bytes).sum()
    }
}

/// `agents/<cluster>/<rs>/<node>.json`: rewritten by each agent when its node's facts
/// change and at least every `--heartbeat-interval`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    pub cluster: String,
    pub replica_set: String,
    pub node: String,
    pub at: DateTime<Utc>,
    pub agent_version: String,
    pub healthy: bool,
    /// `PRIMARY`, `SECONDARY`, `ARBITER`, `STARTUP2`, … as mongod reports it; `DOWN` when
    /// the agent cannot reach its mongod.
    pub role: MemberRole,
    #[serde(default)]
    pub hidden: bool,
    #[serde(default)]
    pub delayed: bool,
    #[serde(default)]
    pub arbiter: bool,
    #[serde(default)]
    pub lag_seconds: f64,
    /// `psmdb` or `community`.
    pub flavor: String,
    pub mongod_version: String,
    pub backup_cursor: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<DiskFacts>,
    /// The node's encryption at rest, from its command line (`None`: not encrypted, when
    /// `encryption_known`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<crate::encryption::EncryptionSettings>,
    /// Whether `encryption` was read from mongod in this beat: false when mongod did not
    /// answer `getCmdLineOpts` (or an older agent), and then nothing is concluded from it.
    #[serde(default)]
    pub encryption_known: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, String>,
    /// The oplog slicers this agent runs, each with its newest chunk and last error.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slicing: Vec<super::SlicerReport>,
    /// The agent's `--heartbeat-interval` in milliseconds: the longest it stays silent
    /// while nothing changes (see [`Heartbeat::dead_after`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u64>,
    /// How the agent learns of new ops right now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pickup: Option<Pickup>,
    /// Which signatures the agent accepts, and the last record it refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<TrustFacts>,
}

/// What an agent trusts (see `docs/trust.md`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrustFacts {
    /// Started with `--insecure-accept-unsigned`: it acts on any record.
    #[serde(default)]
    pub accepts_unsigned: bool,
    /// The fingerprints (`SHA256:…`) of the keys it trusts now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    /// How many records it refused since it started.
    #[serde(default)]
    pub refused_count: u64,
    /// The last record it refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refused: Option<RefusedRecord>,
    /// Why its `--trusted-keys` file could not be read again (it then trusts no key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys_error: Option<String>,
}

/// A control record an agent refused to act on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefusedRecord {
    /// Its object key, such as `ops/<id>/op.json`.
    pub key: String,
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// PBM never picks a node lagging this much or more (seconds): the planner passes over it,
/// and an agent writes its heartbeat at once when its lag crosses it.
pub const BACKUP_MAX_LAG_SECONDS: f64 = 21.0;

/// How an agent learns of new ops (see `docs/control-cost.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Pickup {
    /// It waits on the leader's doorbell: no request until a ring.
    Doorbell,
    /// It reads the doorbell record every `--poll-interval`: the leader serves no
    /// doorbell, or it does not answer.
    Record,
    /// It lists `ops/` every `--poll-interval`: no leader rings its cluster.
    Listing,
}

impl Pickup {
    pub fn describe(self) -> &'static str {
        match self {
            Pickup::Doorbell => "waits on the doorbell",
            Pickup::Record => "reads the doorbell record",
            Pickup::Listing => "lists ops/",
        }
    }
}

impl Heartbeat {
    /// How long this agent may be silent before it counts as lost: the reconciler's
    /// `--dead-after`, or three of the agent's own heartbeat intervals when that is
    /// longer, so that an agent told to beat rarely is never lost between two beats.
    pub fn dead_after(&self, dead_after: chrono::Duration) -> chrono::Duration {
        let beats = self
            .interval_ms
            .and_then(|ms| i64::try_from(ms.saturating_mul(3)).ok())
            .map(chrono::Duration::milliseconds)
            .unwrap_or_default();
        dead_after.max(beats)
    }

    /// Whether the agent has been silent longer than [`Heartbeat::dead_after`] allows.
    pub fn is_lost(&self, now: DateTime<Utc>, dead_after: chrono::Duration) -> bool {
        now - self.at > self.dead_after(dead_after)
    }
}

/// Figures of the file system that holds the dbPath, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiskFacts {
    pub total_bytes: u64,
    pub used_bytes: u64,
    pub available_bytes: u64,
}

impl DiskFacts {
    /// PBM's rule, in signed arithmetic: `0.85 × total − used`. Negative when the disk is
    /// already over 85 % full (PBM's unsigned version wraps around there).
    pub fn fallback_room(&self) -> i128 {
        (self.total_bytes as i128 * 85) / 100 - self.used_bytes as i128
    }

    /// Whether a backup of `needed` uncompressed bytes fits next to the fallback copy.
    pub fn allows_fallback(&self, needed: u64) -> bool {
        (needed as i128) < self.fallback_room()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_room_is_signed() {
        let full = DiskFacts {
            total_bytes: 100,
            used_bytes: 95,
            available_bytes: 5,
        };
        assert_eq!(full.fallback_room(), -10);
        assert!(!full.allows_fallback(0));
        let roomy = DiskFacts {
            total_bytes: 1000,
            used_bytes: 100,
            available_bytes: 900,
        };
        assert_eq!(roomy.fallback_room(), 750);
        assert!(roomy.allows_fallback(749));
        assert!(!roomy.allows_fallback(750));
    }

    fn beat(age_s: i64, interval_ms: Option<u64>, now: DateTime<Utc>) -> Heartbeat {
        let mut hb: Heartbeat = serde_json::from_value(serde_json::json!({
            "cluster": "c1", "replicaSet": "rs0", "node": "a:1",
            "at": now - chrono::Duration::seconds(age_s),
            "agentVersion": "test", "healthy": true, "role": "SECONDARY",
            "flavor": "psmdb", "mongodVersion": "7.0.14", "backupCursor": true,
        }))
        .unwrap();
        hb.interval_ms = interval_ms;
        hb
    }

    #[test]
    fn an_agent_beating_rarely_is_lost_after_three_of_its_intervals_not_before() {
        let now: DateTime<Utc> = "2026-12-04T12:00:00Z".parse().unwrap();
        let dead_after = chrono::Duration::seconds(240);
        // Beating every 60 s: the reconciler's 240 s rule.
        assert!(!beat(239, Some(60_000), now).is_lost(now, dead_after));
        assert!(beat(241, Some(60_000), now).is_lost(now, dead_after));
        // Beating every 5 min: three of them, 15 min.
        assert!(!beat(600, Some(300_000), now).is_lost(now, dead_after));
        assert!(beat(901, Some(300_000), now).is_lost(now, dead_after));
        // An agent that does not say its interval: the reconciler's rule.
        assert!(beat(241, None, now).is_lost(now, dead_after));
    }
}
