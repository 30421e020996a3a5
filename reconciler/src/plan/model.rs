//! The plan's data: steps, their actions and reasons. This is also the `-o json` contract
//! of `tidemark diff`, documented in `docs/diff-json.md`; change it only additively.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tidemark_schema::control::RunStatus;
use tidemark_schema::model::BackupType;

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub now: DateTime<Utc>,
    pub steps: Vec<Step>,
    /// Every retention decision, kept or deleted, each with its reasons.
    pub retention: Vec<RetentionDecision>,
    /// Every declared schedule: its due slot, missed slots, newest good backup, RPO.
    pub schedules: Vec<super::ScheduleState>,
    /// Every declared restore drill: its due run and its last outcome.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub drills: Vec<super::DrillState>,
    /// Every schedule slicing the oplog: its slicers, lag, windows and gaps.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pitr: Vec<super::PitrState>,
}

impl Plan {
    /// Whether any step would change the cluster, the storage or the ledger.
    pub fn has_changes(&self) -> bool {
        self.steps.iter().any(|s| s.action.is_change())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    #[serde(flatten)]
    pub action: Action,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum Action {
    #[serde(rename_all = "camelCase")]
    CreateSchedule {
        schedule: String,
        cluster: String,
        storage: String,
        backup_type: BackupType,
        cron: String,
        timezone: String,
        suspended: bool,
        next_run: Option<DateTime<Utc>>,
        next_backup_name: Option<String>,
    },
    #[serde(rename_all = "camelCase")]
    UpdateSchedule {
        schedule: String,
        changed_fields: Vec<String>,
        next_run: Option<DateTime<Utc>>,
    },
    #[serde(rename_all = "camelCase")]
    SuspendSchedule {
        schedule: String,
    },
    #[serde(rename_all = "camelCase")]
    ResumeSchedule {
        schedule: String,
        next_run: Option<DateTime<Utc>>,
    },
    #[serde(rename_all = "camelCase")]
    RemoveSchedule {
        schedule: String,
        backups_kept: usize,
    },
    #[serde(rename_all = "camelCase")]
    RunBackup {
        backup: String,
        cluster: String,
        storage: String,
        backup_type: BackupType,
        nodes: Vec<NodeChoice>,
        /// The schedule whose slot this backup is; `None` for a one-shot `Backup`.
        #[serde(skip_serializing_if = "Option::is_none")]
        schedule: Option<String>,
        /// An incremental backup: the chain it continues or starts, and why.
        #[serde(skip_serializing_if = "Option::is_none")]
        incremental: Option<super::IncrementPlan>,
    },
    StartRestore(RestorePlan),
    /// A selective restore: collections copied into the running cluster by a drill agent.
    StartSelectiveRestore(super::SelectivePlan),
    /// One run of a `RestoreDrill`, on a drill agent: the cluster is not touched.
    #[serde(rename_all = "camelCase")]
    RunDrill {
        drill: String,
        run: String,
        cluster: String,
        backup: String,
        storage: String,
        agent: String,
        replica_sets: Vec<String>,
    },
    #[serde(rename_all = "camelCase")]
    AlreadyRan {
        kind: String,
        name: String,
        op_id: String,
        started_at: DateTime<Utc>,
        finished_at: Option<DateTime<Utc>>,
        status: RunStatus,
    },
    #[serde(rename_all = "camelCase")]
    DeleteBackup {
        backup: String,
        schedule: String,
        storage: String,
        stored_bytes: u64,
        started_at: DateTime<Utc>,
    },
    #[serde(rename_all = "camelCase")]
    Blocked {
        kind: String,
        name: String,
    },
    /// A completed backup whose schedule asks for verification, not checked yet: checked
    /// beside the passes (it reads storage, changes nothing).
    #[serde(rename_all = "camelCase")]
    VerifyBackup {
        backup: String,
        storage: String,
        level: tidemark_schema::model::VerifyLevel,
    },
    /// Who slices a replica set's oplog, per stream; no stream stops its slicer.
    #[serde(rename_all = "camelCase")]
    SetSlicing {
        cluster: String,
        replica_set: String,
        streams: Vec<super::PlannedStream>,
        /// What is written to the control plane.
        #[serde(skip)]
        assignment: Box<tidemark_schema::control::SlicingAssignment>,
    },
    /// Oplog chunks no kept backup can roll forward through.
    #[serde(rename_all = "camelCase")]
    DeleteChunks {
        cluster: String,
        storage: String,
        replica_set: String,
        chunks: usize,
        stored_bytes: u64,
        from: tidemark_schema::manifest::OpTime,
        to: tidemark_schema::manifest::OpTime,
        /// Backups this pass deletes that alone could use these chunks: the chunks go only
        /// once those are marked for deletion.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        after_deleting: Vec<String>,
        /// (control-plane record, storage object) of each chunk.
        #[serde(skip)]
        records: Vec<(String, String)>,
    },
}

impl Action {
    pub fn is_change(&self) -> bool {
        !matches!(
            self,
            Action::AlreadyRan { .. } | Action::Blocked { .. } | Action::VerifyBackup { .. }
        )
    }
}

/// The node a backup copies from, per replica set.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeChoice {
    pub replica_set: String,
    /// `None` until agents report: the choice is then made when the backup starts.
    pub node: Option<String>,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestorePlan {
    pub restore: String,
    pub cluster: String,
    pub backup: String,
    pub backup_started_at: DateTime<Utc>,
    pub backup_last_write: Option<DateTime<Utc>>,
    pub fallback_enabled: bool,
    pub allow_partly_done: bool,
    pub external: bool,
    /// Bytes all nodes together download from storage.
    pub download_bytes: u64,
    /// In stop order: per replica set, secondaries first, the primary last.
    pub nodes: Vec<RestoreNode>,
    /// Arbiters and other members a physical restore does not touch.
    pub skipped: Vec<String>,
    pub post_restore: Vec<String>,
    /// Cluster replica set → the backup's replica set it restores, where the names differ.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub remap: std::collections::BTreeMap<String, String>,
    /// A sharded cluster: the metadata its nodes rewrite for the target's names and hosts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sharding: Option<tidemark_schema::control::ShardingRestore>,
    /// A point-in-time restore: the oplog replayed after the base.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub point_in_time: Option<Box<super::PointInTimePlan>>,
    /// An increment's chain, base first, ending with `backup`: every one is downloaded
    /// and counted in the fallback disk check. Empty for a full backup.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreNode {
    pub replica_set: String,
    pub node: String,
    /// Role from the node's heartbeat, `unknown` without one.
    pub role: tidemark_schema::control::MemberRole,
    pub download_bytes: u64,
    /// Expected mongod starts on this node during and after the restore.
    pub restarts: Vec<String>,
    pub disk: DiskCheck,
    /// Why this node's encryption at rest cannot open the backup (its heartbeat against
    /// the backup's record); such a node is emptied for initial sync, never restored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cannot_decrypt: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "result", rename_all = "camelCase")]
pub enum DiskCheck {
    /// Fallback is off: no room for a second copy is needed.
    NotNeeded,
    /// No heartbeat with disk figures yet; the agent checks before touching anything.
    #[serde(rename_all = "camelCase")]
    Unknown { why: String },
    #[serde(rename_all = "camelCase")]
    Fits {
        total_bytes: u64,
        used_bytes: u64,
        room_bytes: i128,
        needed_bytes: u64,
    },
    #[serde(rename_all = "camelCase")]
    TooSmall {
        total_bytes: u64,
        used_bytes: u64,
        room_bytes: i128,
        needed_bytes: u64,
    },
}

/// Why a backup is kept or deleted, as restic's policy reports it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetentionDecision {
    pub backup: String,
    pub schedule: String,
    pub keep: bool,
    pub reasons: Vec<String>,
    /// Its schedule is no longer declared: kept until `tidemark forget-backup`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub orphaned: bool,
}
