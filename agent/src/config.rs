//! The agent's settings: flags, a YAML config file and `TIDEMARK_*` variables, merged.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Everything the agent needs to know that mongod cannot tell it.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Control-plane URL (a directory, `file://`, `s3://`, …).
    pub control: String,
    /// The cluster name, as in the `Cluster` document: heartbeats and ops are per cluster.
    pub cluster: String,
    /// How to reach this node's mongod. May carry credentials; never logged as is.
    pub mongod_uri: String,
    pub dbpath: PathBuf,
    /// The mongod binary, for the restore's standalone starts and the final start.
    pub mongod_bin: PathBuf,
    /// `host:port` as the replica-set config names this node; learned from mongod when absent.
    pub node_id: Option<String>,
    /// The replica set; learned from mongod when absent (needed when mongod is down).
    pub replica_set: Option<String>,
    /// The longest a heartbeat goes unwritten; a change of the node's facts (its role,
    /// mongod down or up) is written at once.
    pub heartbeat_interval: Duration,
    /// How often the doorbell record is read when the leader's long-poll does not
    /// answer, and `ops/` listed when no leader rings at all.
    pub poll_interval: Duration,
    /// How often `ops/` is listed though no ring came: the safety net under the doorbell.
    pub resync_interval: Duration,
    /// Files copied at once during a backup.
    pub parallel_files: usize,
    /// How often the backup cursor is kept alive.
    pub cursor_keepalive: Duration,
    /// Extra arguments for the temporary standalone mongod starts of a restore.
    pub standalone_args: Vec<String>,
    /// How long mongod may take to start or stop.
    pub mongod_timeout: Duration,
    /// Set for a drill agent: it serves no mongod node and restores drills into scratch
    /// dbPaths under this directory.
    pub drill_dir: Option<PathBuf>,
    /// Whose signatures it acts on (`--trusted-keys`), or anything
    /// (`--insecure-accept-unsigned`).
    pub trust: crate::trust::TrustSetting,
}

impl AgentConfig {
    /// The rate for waits inside an op and just after one: a quarter of the idle poll, at
    /// least 50 ms, never slower than the idle poll itself.
    pub fn quick_poll(&self) -> Duration {
        (self.poll_interval / 4)
            .max(Duration::from_millis(50))
            .min(self.poll_interval)
    }
}

/// The YAML config file (`--config agent.yaml`): the same settings, camelCase.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentFile {
    pub control: Option<String>,
    pub cluster: Option<String>,
    pub mongod_uri: Option<String>,
    pub dbpath: Option<PathBuf>,
    pub mongod_bin: Option<PathBuf>,
    pub node_id: Option<String>,
    pub replica_set: Option<String>,
    pub heartbeat_interval: Option<String>,
    pub poll_interval: Option<String>,
    pub resync_interval: Option<String>,
    pub parallel_files: Option<usize>,
    pub cursor_keepalive: Option<String>,
    pub standalone_args: Option<Vec<String>>,
    pub mongod_timeout: Option<String>,
    pub drill_dir: Option<PathBuf>,
    pub trusted_keys: Option<Vec<PathBuf>>,
    pub insecure_accept_unsigned: Option<bool>,
}

impl AgentFile {
    /// Reads and checks a config file; unknown keys are errors naming the file.
    pub fn read(path: &std::path::Path) -> Result<AgentFile, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_saphyr::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// Parses durations such as `5s`, `250ms`, `2m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if let Some(ms) = text.strip_suffix("ms") {
        return ms
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| format!("{text:?} is not a duration such as 250ms, 5s or 2m"));
    }
    tidemark_schema::model::parse_max_age(text).map(|m| m.duration)
}
