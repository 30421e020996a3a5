//! The desired-state model: one module per kind, plus what they share.

mod backup;
mod cluster;
mod duration;
mod meta;
mod restore;
mod schedule;
mod storage;

pub use backup::BackupSpec;
pub use cluster::{ClusterSpec, ReplicaSetSpec};
pub use duration::{MaxAge, parse_max_age};
pub use meta::{API_VERSION, ApiVersion, Kind, Metadata, Object, Resource, name_problem};
pub use restore::{PostRestore, RestoreSource, RestoreSpec};
pub use schedule::{
    BackupScheduleSpec, BackupType, Retention, VerifyLevel, parse_cron, parse_timezone,
    scheduled_backup_name,
};
pub use storage::{
    BackupStorageSpec, Compression, StorageScheme, looks_like_credential, url_has_userinfo,
};
