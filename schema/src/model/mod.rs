//! The desired-state model: one module per kind, plus what they share.

mod backup;
mod cluster;
mod drill;
mod duration;
mod incremental;
mod meta;
mod pitr;
mod point_in_time;
mod restore;
mod schedule;
mod selective;
mod storage;

pub use backup::BackupSpec;
pub use cluster::{ClusterSpec, ReplicaSetSpec};
pub use drill::{
    CollectionCheck, DrillChecks, RestoreDrillSpec, drill_run_name, namespace_problem,
};
pub use duration::{MaxAge, parse_max_age};
pub use incremental::{
    DEFAULT_BLOCK_SIZE_MB, DEFAULT_MAX_INCREMENTS, DEFAULT_NEW_BASE_AFTER, IncrementalSpec,
    MAX_BLOCK_SIZE_MB, block_size_problem,
};
pub use meta::{API_VERSION, ApiVersion, Kind, Metadata, Object, Resource, name_problem};
pub use pitr::{DEFAULT_OPLOG_SPAN, MAX_OPLOG_SPAN, MIN_OPLOG_SPAN, PitrSpec};
pub use point_in_time::PointInTime;
pub use restore::{PostRestore, RestoreSource, RestoreSpec};
pub use schedule::{
    BackupScheduleSpec, BackupType, Retention, VerifyLevel, next_run_after, parse_cron,
    parse_timezone, runs_back_from, scheduled_backup_name,
};
pub use selective::{NsPattern, OnExisting, SYSTEM_DATABASES, target_namespace};
pub use storage::{
    BackupStorageSpec, Compression, StorageScheme, looks_like_credential, url_has_userinfo,
};
