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
pub use duration::{parse_max_age, MaxAge};
pub use meta::{name_problem, ApiVersion, Kind, Metadata, Object, Resource, API_VERSION};
pub use restore::{PostRestore, RestoreSource, RestoreSpec};
pub use schedule::{
    parse_cron, parse_timezone, scheduled_backup_name, BackupScheduleSpec, BackupType, Retention,
};
pub use storage::{
    looks_like_credential, url_has_userinfo, BackupStorageSpec, Compression, StorageScheme,
};
