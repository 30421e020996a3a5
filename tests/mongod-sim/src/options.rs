//! mongod's command line subset and YAML config file, plus the simulator's own `--sim-*` switches.

use clap::Parser;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use thiserror::Error;

/// The version string we report; PSMDB appends its own release number.
pub const MONGO_VERSION: &str = "7.0.14";
pub const PSMDB_VERSION: &str = "7.0.14-8";

#[derive(Parser, Debug, Clone, Default)]
#[command(
    name = "mongod-sim",
    disable_version_flag = true,
    args_override_self = true,
    about = "A test tool that behaves like a PSMDB mongod"
)]
pub struct Cli {
    #[arg(long = "dbpath")]
    pub dbpath: Option<PathBuf>,
    #[arg(long)]
    pub port: Option<u16>,
    #[arg(long = "bind_ip")]
    pub bind_ip: Option<String>,
    #[arg(long = "replSet")]
    pub repl_set: Option<String>,
    #[arg(long = "shardsvr")]
    pub shardsvr: bool,
    #[arg(long = "configsvr")]
    pub configsvr: bool,
    /// `name=value`, repeatable.
    #[arg(long = "setParameter")]
    pub set_parameter: Vec<String>,
    #[arg(long = "logpath")]
    pub logpath: Option<PathBuf>,
    /// Accepted for compatibility; the log is always appended to.
    #[arg(long = "logappend")]
    pub logappend: bool,
    #[arg(short = 'f', long = "config")]
    pub config: Option<PathBuf>,
    /// The oplog's maximum size in megabytes, used when the oplog is created (mongod's
    /// `replication.oplogSizeMB`).
    #[arg(long = "oplogSize", allow_negative_numbers = true)]
    pub oplog_size: Option<i64>,
    /// Hours an oplog entry is kept even past the size cap (`storage.oplogMinRetentionHours`).
    #[arg(long = "oplogMinRetentionHours", allow_negative_numbers = true)]
    pub oplog_min_retention_hours: Option<f64>,
    #[arg(long = "version")]
    pub version: bool,
    /// `psmdb` (has `$backupCursor`) or `community` (has not).
    #[arg(long = "sim-flavor", default_value = "psmdb")]
    pub sim_flavor: String,
    /// How often a checkpoint is taken (WiredTiger's default is 60 s).
    #[arg(long = "sim-checkpoint-interval-ms", default_value_t = 60_000)]
    pub sim_checkpoint_interval_ms: u64,
    /// Replica-set heartbeat interval (mongod's default is 2 s).
    #[arg(long = "sim-heartbeat-interval-ms", default_value_t = 500)]
    pub sim_heartbeat_interval_ms: u64,
    /// Fault: `shutdown` commands fail and the process stays up.
    #[arg(long = "sim-refuse-shutdown")]
    pub sim_refuse_shutdown: bool,
    /// Fault: abort the process at a named point (see README).
    #[arg(long = "sim-crash-at")]
    pub sim_crash_at: Option<String>,
    /// Fault: fail start-up with this message, logged as fatal.
    #[arg(long = "sim-fail-startup")]
    pub sim_fail_startup: Option<String>,
    /// Fault: every data-file read at start-up and every backup-cursor batch takes this long.
    #[arg(long = "sim-slow-reads-ms", default_value_t = 0)]
    pub sim_slow_reads_ms: u64,
    /// Fault: every non-empty batch of a query (`find` and its `getMore`s, not the backup
    /// cursor's or the oplog's first batch) takes this long.
    #[arg(long = "sim-slow-find-ms", default_value_t = 0)]
    pub sim_slow_find_ms: u64,
    /// The server version to report (`7.0.14` when absent), for version-mismatch tests.
    #[arg(long = "sim-version")]
    pub sim_version: Option<String>,
    // Data-at-rest encryption (PSMDB's options; see `crypt`).
    #[arg(long = "enableEncryption")]
    pub enable_encryption: bool,
    #[arg(long = "encryptionKeyFile")]
    pub encryption_key_file: Option<String>,
    #[arg(long = "encryptionCipherMode")]
    pub encryption_cipher_mode: Option<String>,
    #[arg(long = "vaultServerName")]
    pub vault_server_name: Option<String>,
    #[arg(long = "vaultPort")]
    pub vault_port: Option<u16>,
    #[arg(long = "vaultSecret")]
    pub vault_secret: Option<String>,
    #[arg(long = "vaultSecretVersion")]
    pub vault_secret_version: Option<u32>,
    #[arg(long = "vaultTokenFile")]
    pub vault_token_file: Option<String>,
    #[arg(long = "kmipServerName")]
    pub kmip_server_name: Option<String>,
    #[arg(long = "kmipPort")]
    pub kmip_port: Option<u16>,
    #[arg(long = "kmipKeyIdentifier")]
    pub kmip_key_identifier: Option<String>,
}

#[derive(Debug, Error)]
pub enum OptionsError {
    #[error("cannot read config file {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("error parsing YAML config file {0}: {1}")]
    Yaml(PathBuf, String),
    #[error("invalid --setParameter {0:?}: expected name=value")]
    SetParameter(String),
    #[error("unknown --sim-flavor {0:?}: expected psmdb or community")]
    Flavor(String),
    #[error("sharding.clusterRole must be shardsvr or configsvr, not {0:?}")]
    ClusterRole(String),
    #[error("encryptionCipherMode must be AES256-CBC or AES256-GCM, not {0:?}")]
    CipherMode(String),
    #[error("--vaultServerName needs --vaultSecret, and --kmipServerName --kmipKeyIdentifier")]
    KeySource,
    #[error("bad --oplogSize, arg must be greater than 0, found: {0}")]
    OplogSize(i64),
    #[error("bad --oplogMinRetentionHours, argument must be greater or equal to 0: {0}")]
    MinRetention(f64),
    #[error("Bad value for parameter \"{0}\": {1}")]
    Parameter(String, String),
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ConfigFile {
    storage: Option<StorageSection>,
    net: Option<NetSection>,
    replication: Option<ReplicationSection>,
    sharding: Option<ShardingSection>,
    system_log: Option<SystemLogSection>,
    set_parameter: Option<BTreeMap<String, serde_json::Value>>,
}
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct StorageSection {
    db_path: Option<PathBuf>,
    oplog_min_retention_hours: Option<f64>,
}
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct NetSection {
    port: Option<u16>,
    bind_ip: Option<String>,
}
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ReplicationSection {
    repl_set_name: Option<String>,
    #[serde(rename = "oplogSizeMB")]
    oplog_size_mb: Option<i64>,
}
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ShardingSection {
    cluster_role: Option<String>,
}
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct SystemLogSection {
    path: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Psmdb,
    Community,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterRole {
    None,
    ShardSvr,
    ConfigSvr,
}

/// The effective options after merging the config file and the command line (the command line wins).
#[derive(Debug, Clone)]
pub struct Options {
    pub dbpath: PathBuf,
    pub port: u16,
    pub bind_ip: String,
    pub repl_set: Option<String>,
    pub cluster_role: ClusterRole,
    pub parameters: BTreeMap<String, String>,
    pub logpath: Option<PathBuf>,
    pub flavor: Flavor,
    pub checkpoint_interval_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub refuse_shutdown: bool,
    pub crash_at: Option<String>,
    pub fail_startup: Option<String>,
    pub slow_reads_ms: u64,
    pub slow_find_ms: u64,
    /// The original argv, for `getCmdLineOpts`.
    pub argv: Vec<String>,
    /// The version reported by `buildInfo`, `serverStatus` and the log.
    pub version: String,
    pub encryption: crate::crypt::Encryption,
    /// `--oplogSize`: the size (MB) an oplog created by this process gets; `None` leaves it
    /// unbounded (mongod would pick 5% of the disk, see README).
    pub oplog_size_mb: Option<u64>,
    /// `--oplogMinRetentionHours` (0: entries go as soon as the size needs it).
    pub oplog_min_retention_hours: f64,
    /// `periodicNoopIntervalSecs` (1..=10, default 10).
    pub periodic_noop_interval_secs: u64,
}

impl Options {
    pub fn from_cli(cli: Cli, argv: Vec<String>) -> Result<Options, OptionsError> {
        let file = match &cli.config {
            Some(p) => {
                let text =
                    std::fs::read_to_string(p).map_err(|e| OptionsError::Read(p.clone(), e))?;
                serde_saphyr::from_str::<ConfigFile>(&text)
                    .map_err(|e| OptionsError::Yaml(p.clone(), e.to_string()))?
            }
            None => ConfigFile::default(),
        };
        let mut parameters = BTreeMap::new();
        for (k, v) in file.set_parameter.unwrap_or_default() {
            let v = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            parameters.insert(k, v);
        }
        for p in &cli.set_parameter {
            let (k, v) = p
                .split_once('=')
                .ok_or_else(|| OptionsError::SetParameter(p.clone()))?;
            parameters.insert(k.to_string(), v.to_string());
        }
        let role_text = file.sharding.and_then(|s| s.cluster_role);
        let cluster_role = if cli.configsvr || role_text.as_deref() == Some("configsvr") {
            ClusterRole::ConfigSvr
        } else if cli.shardsvr || role_text.as_deref() == Some("shardsvr") {
            ClusterRole::ShardSvr
        } else if let Some(r) = role_text {
            return Err(OptionsError::ClusterRole(r));
        } else {
            ClusterRole::None
        };
        let default_port = match cluster_role {
            ClusterRole::None => 27017,
            ClusterRole::ShardSvr => 27018,
            ClusterRole::ConfigSvr => 27019,
        };
        let net = file.net.unwrap_or_default();
        let storage = file.storage.unwrap_or_default();
        let replication = file.replication.unwrap_or_default();
        let (oplog_size_mb, oplog_min_retention_hours) = oplog_options(
            cli.oplog_size.or(replication.oplog_size_mb),
            cli.oplog_min_retention_hours
                .or(storage.oplog_min_retention_hours),
        )?;
        let periodic_noop_interval_secs = noop_interval(&parameters)?;
        let flavor = match cli.sim_flavor.as_str() {
            "psmdb" => Flavor::Psmdb,
            "community" => Flavor::Community,
            other => return Err(OptionsError::Flavor(other.to_string())),
        };
        let cipher_mode = cli
            .encryption_cipher_mode
            .clone()
            .unwrap_or_else(|| "AES256-CBC".to_string());
        if !matches!(cipher_mode.as_str(), "AES256-CBC" | "AES256-GCM") {
            return Err(OptionsError::CipherMode(cipher_mode));
        }
        let vault = match (&cli.vault_server_name, &cli.vault_secret) {
            (Some(server), Some(secret)) => Some(crate::crypt::VaultSource {
                server: server.clone(),
                port: cli.vault_port.unwrap_or(8200),
                secret: secret.clone(),
                secret_version: cli.vault_secret_version,
                token_file: cli.vault_token_file.clone(),
            }),
            (None, None) => None,
            _ => return Err(OptionsError::KeySource),
        };
        let kmip = match (&cli.kmip_server_name, &cli.kmip_key_identifier) {
            (Some(server), Some(id)) => Some(crate::crypt::KmipSource {
                server: server.clone(),
                port: cli.kmip_port.unwrap_or(5696),
                key_identifier: id.clone(),
            }),
            (None, None) => None,
            _ => return Err(OptionsError::KeySource),
        };
        let encryption = crate::crypt::Encryption {
            enabled: cli.enable_encryption,
            cipher_mode,
            key_file: cli.encryption_key_file.clone(),
            vault,
            kmip,
        };
        Ok(Options {
            version: cli
                .sim_version
                .clone()
                .unwrap_or_else(|| MONGO_VERSION.to_string()),
            encryption,
            dbpath: cli.dbpath.or(storage.db_path).unwrap_or_else(|| {
                PathBuf::from(if cluster_role == ClusterRole::ConfigSvr {
                    "/data/configdb"
                } else {
                    "/data/db"
                })
            }),
            port: cli.port.or(net.port).unwrap_or(default_port),
            bind_ip: cli
                .bind_ip
                .or(net.bind_ip)
                .unwrap_or_else(|| "127.0.0.1".to_string()),
            repl_set: cli.repl_set.or(replication.repl_set_name),
            cluster_role,
            parameters,
            logpath: cli.logpath.or(file.system_log.and_then(|s| s.path)),
            flavor,
            checkpoint_interval_ms: cli.sim_checkpoint_interval_ms,
            heartbeat_interval_ms: cli.sim_heartbeat_interval_ms.max(10),
            refuse_shutdown: cli.sim_refuse_shutdown,
            crash_at: cli.sim_crash_at,
            fail_startup: cli.sim_fail_startup,
            slow_reads_ms: cli.sim_slow_reads_ms,
            slow_find_ms: cli.sim_slow_find_ms,
            argv,
            oplog_size_mb,
            oplog_min_retention_hours,
            periodic_noop_interval_secs,
        })
    }

    /// PSMDB's version string: the server version and Percona's release number.
    pub fn psmdb_version(&self) -> String {
        if self.version == MONGO_VERSION {
            PSMDB_VERSION.to_string()
        } else {
            format!("{}-8", self.version)
        }
    }

    /// A boolean `--setParameter`, accepting mongod's spellings.
    pub fn param_bool(&self, name: &str) -> bool {
        matches!(
            self.parameters.get(name).map(|s| s.as_str()),
            Some("true" | "1")
        )
    }

    /// The host:port other members and drivers use for this node.
    pub fn host(&self) -> String {
        let ip = self.bind_ip.split(',').next().unwrap_or("127.0.0.1");
        let ip = if ip == "0.0.0.0" { "127.0.0.1" } else { ip };
        format!("{ip}:{}", self.port)
    }

    /// `cursorTimeoutMillis`, mongod's idle-cursor timeout (10 minutes by default), which also
    /// governs the backup cursor.
    pub fn cursor_timeout_ms(&self) -> u64 {
        self.parameters
            .get("cursorTimeoutMillis")
            .and_then(|v| v.parse().ok())
            .unwrap_or(600_000)
    }
}

/// `--oplogSize` (more than 0 MB, as mongod checks) and `--oplogMinRetentionHours` (0 or more).
fn oplog_options(
    size: Option<i64>,
    hours: Option<f64>,
) -> Result<(Option<u64>, f64), OptionsError> {
    let size = match size {
        Some(n) if n <= 0 => return Err(OptionsError::OplogSize(n)),
        other => other.map(|n| n as u64),
    };
    let hours = hours.unwrap_or(0.0);
    if hours < 0.0 || hours.is_nan() {
        return Err(OptionsError::MinRetention(hours));
    }
    Ok((size, hours))
}

/// `periodicNoopIntervalSecs`: an integer from 1 to 10 (mongod's validator), 10 by default.
fn noop_interval(parameters: &BTreeMap<String, String>) -> Result<u64, OptionsError> {
    const NAME: &str = "periodicNoopIntervalSecs";
    let Some(text) = parameters.get(NAME) else {
        return Ok(10);
    };
    let bad = |why: String| OptionsError::Parameter(NAME.to_string(), why);
    let n: i64 = text
        .trim()
        .parse()
        .map_err(|_| bad(format!("Failed to parse value '{text}' as an integer")))?;
    if n < 1 {
        return Err(bad(format!(
            "Invalid value for parameter {NAME}: {n} is not greater than or equal to 1"
        )));
    }
    if n > 10 {
        return Err(bad(format!(
            "Invalid value for parameter {NAME}: {n} is not less than or equal to 10"
        )));
    }
    Ok(n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_file_and_flags_merge() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mongod.conf");
        std::fs::write(
            &path,
            "storage:\n  dbPath: /srv/db\nnet:\n  port: 29000\n  bindIp: 127.0.0.1\nreplication:\n  replSetName: rs0\nsharding:\n  clusterRole: shardsvr\nsetParameter:\n  recoverFromOplogAsStandalone: true\n",
        )
        .unwrap();
        let cli = Cli::parse_from([
            "mongod-sim",
            "-f",
            path.to_str().unwrap(),
            "--port",
            "29001",
            "--setParameter",
            "a=b",
        ]);
        let o = Options::from_cli(cli, vec![]).unwrap();
        assert_eq!(o.dbpath, PathBuf::from("/srv/db"));
        assert_eq!(o.port, 29001);
        assert_eq!(o.repl_set.as_deref(), Some("rs0"));
        assert_eq!(o.cluster_role, ClusterRole::ShardSvr);
        assert!(o.param_bool("recoverFromOplogAsStandalone"));
        assert_eq!(o.parameters["a"], "b");
        assert_eq!(o.oplog_size_mb, None);
        assert_eq!(o.periodic_noop_interval_secs, 10);
    }

    #[test]
    fn oplog_size_and_noop_interval_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mongod.conf");
        std::fs::write(
            &path,
            "replication:\n  replSetName: rs0\n  oplogSizeMB: 2048\nstorage:\n  oplogMinRetentionHours: 1.5\n",
        )
        .unwrap();
        let parse = |args: &[&str]| {
            let mut all = vec!["mongod-sim"];
            all.extend_from_slice(args);
            Options::from_cli(Cli::parse_from(all), vec![])
        };
        let conf = path.to_str().unwrap();
        let o = parse(&["-f", conf]).unwrap();
        assert_eq!(o.oplog_size_mb, Some(2048));
        assert_eq!(o.oplog_min_retention_hours, 1.5);
        let o = parse(&["-f", conf, "--oplogSize", "1"]).unwrap();
        assert_eq!(o.oplog_size_mb, Some(1), "the command line wins");
        assert!(matches!(
            parse(&["--oplogSize", "0"]),
            Err(OptionsError::OplogSize(0))
        ));
        let o = parse(&["--setParameter", "periodicNoopIntervalSecs=1"]).unwrap();
        assert_eq!(o.periodic_noop_interval_secs, 1);
        for bad in ["0", "11", "x"] {
            let arg = format!("periodicNoopIntervalSecs={bad}");
            assert!(
                matches!(
                    parse(&["--setParameter", &arg]),
                    Err(OptionsError::Parameter(..))
                ),
                "{bad}"
            );
        }
    }
}
