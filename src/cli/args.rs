//! Command-line arguments. Every flag of a long-running role can also come from the
//! environment (`TIDEMARK_*`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "tidemark",
    version,
    about = "GitOps reconciler for MongoDB physical backups and restores",
    after_help = "Exit codes: 0 ok / no changes, 1 invalid input or failure, \
                  2 diff found changes, 3 reconcile --once: operations still running, \
                  64 usage error."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check desired-state files; report every error with file:line:column.
    Validate(ValidateArgs),
    /// Preview what the reconciler would do: document diffs and the plan, with reasons.
    Diff(DiffArgs),
    /// Print the JSON Schema of desired-state documents.
    Schema,
    /// Run the node agent next to one mongod.
    Agent(Box<AgentArgs>),
    /// Run the reconciler: follow the desired state and drive the agents until they agree.
    Reconcile(Box<ReconcileArgs>),
    /// Show a backup: its status, and per replica set and node the phase and outcome.
    DescribeBackup(DescribeArgs),
    /// Show a restore: its status, and per replica set and node the phase and outcome.
    DescribeRestore(DescribeArgs),
    /// Tell the agents of an external backup that the snapshot copy is complete.
    BackupFinish(FinishArgs),
    /// Tell the agents of an external restore that the files are copied in.
    RestoreFinish(FinishArgs),
    /// Is everything protected? Leader, agents, schedules (RPO), operations, revisions.
    /// Exits 2 when a schedule's newest good backup is older than its RPO.
    Status(StatusArgs),
    /// Delete a backup on purpose (such as an orphan of a deleted schedule).
    ForgetBackup(ForgetArgs),
    /// Cancel a running backup: cursors closed, its objects deleted, never counted as good.
    /// Exits 5 when it cannot be cancelled (it ended, or its outcome is decided).
    CancelBackup(CancelArgs),
    /// Cancel a running restore: before go it is aborted untouched; after go with fallback
    /// every touched node is put back. Exits 5 when refused (past go without fallback, or
    /// already decided): the restore goes on.
    CancelRestore(CancelArgs),
    /// A replica set, one agent per node and a reconciler on this machine, in one command:
    /// tidemark end to end in minutes (Ctrl-C stops it all; a second run goes on).
    Playground(PlaygroundArgs),
    /// Check a backup without restoring it: marker, manifests, every object and its size;
    /// with --read-data every object's content too. Exits 1 when anything is wrong.
    Verify(VerifyArgs),
    /// The log lines the agents logged for an operation, merged by time, with the node.
    /// Without --op: every running operation, or else the latest one.
    Logs(LogsArgs),
    /// Every backup (status, type, size, last write, verification) and, per cluster, the
    /// windows a point-in-time restore can reach, split at every gap (PBM's `pbm list`).
    List(ListArgs),
    /// Make the ed25519 key pair that signs what the reconciler tells agents: the private
    /// key for `reconcile`, the public key for every agent's --trusted-keys.
    Keygen(KeygenArgs),
}

#[derive(Args, Debug)]
pub struct PlaygroundArgs {
    /// The policy directory the reconciler watches (default: DIR/policies, with starter
    /// policies written on the first run).
    #[arg(long)]
    pub policies: Option<PathBuf>,
    /// Replica-set members.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Where everything lives: dbPaths, control plane, backups, logs.
    #[arg(long, default_value = ".tidemark")]
    pub dir: PathBuf,
    /// The first node's port; the others follow.
    #[arg(long, default_value_t = 27117)]
    pub base_port: u16,
    /// The starter schedule's cron (six fields, seconds first).
    #[arg(long, default_value = "0 * * * * *")]
    pub cron: String,
    /// Use mongod-sim even when a `mongod` is on PATH.
    #[arg(long)]
    pub sim: bool,
    /// Stop processes an earlier playground in DIR left running, then start.
    #[arg(long)]
    pub stop_leftovers: bool,
    /// Break node N for the demo (mongod-sim only): its mongod cannot start during a
    /// restore, so a restore with `allowPartlyDone` ends PartlyDone and the node is wiped
    /// and initial-syncs.
    #[arg(long, value_name = "N")]
    pub break_node: Option<usize>,
    /// A sharded cluster instead of a replica set: a config server and two shards of
    /// --nodes members each (nodes numbered across them, config server first).
    #[arg(long)]
    pub sharded: bool,
    /// Serve the reconciler's Prometheus metrics at http://ADDR/metrics.
    #[arg(long)]
    pub metrics: Option<std::net::SocketAddr>,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The backup's name, as `status` or the catalog shows it.
    pub backup: String,
    #[arg(long, env = "TIDEMARK_CONTROL")]
    pub control: String,
    /// Read every object in full: decompress it and compare its blake3 with the manifest.
    #[arg(long)]
    pub read_data: bool,
    /// The backup storage URL, instead of the one the catalog and the applied desired
    /// state name (credentials come from the environment as for the agents).
    #[arg(long)]
    pub storage: Option<String>,
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: OutputFormat,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    #[arg(long, env = "TIDEMARK_CONTROL")]
    pub control: String,
    /// The op id (`describe-backup` and `describe-restore` show it); its follow-up steps
    /// (revert, wipe, start) are included.
    #[arg(long)]
    pub op: Option<String>,
    /// Keep printing new lines until the operation has ended.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// `json`: one JSON object per line.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: OutputFormat,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[arg(long, env = "TIDEMARK_CONTROL")]
    pub control: String,
    /// Only this cluster's backups and timelines.
    #[arg(long)]
    pub cluster: Option<String>,
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: OutputFormat,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[arg(long, env = "TIDEMARK_CONTROL")]
    pub control: String,
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: OutputFormat,
    /// An agent silent this long shows as lost (as the reconciler's flag).
    #[arg(long, env = "TIDEMARK_DEAD_AFTER", default_value = "240s", value_parser = parse_fine)]
    pub dead_after: std::time::Duration,
    /// A node of a running operation that reported nothing new for this long shows as
    /// stuck, with its phase.
    #[arg(long, env = "TIDEMARK_STUCK_AFTER", default_value = "10m", value_parser = parse_fine)]
    pub stuck_after: std::time::Duration,
}

#[derive(Args, Debug)]
pub struct CancelArgs {
    /// The Backup or Restore name.
    pub name: String,
    #[arg(long, env = "TIDEMARK_CONTROL")]
    pub control: String,
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: OutputFormat,
    /// How long to wait for the reconciler to decide: exit 0 once it says `cancelled`, 5
    /// if it decided otherwise first, 3 if it has not decided yet. `0s`: return once the
    /// request is written.
    #[arg(long, default_value = "1m", value_parser = parse_wait)]
    pub wait: std::time::Duration,
}

#[derive(Args, Debug)]
pub struct ForgetArgs {
    /// The backup's name, as `status` or the catalog shows it.
    pub name: String,
    #[arg(long, env = "TIDEMARK_CONTROL")]
    pub control: String,
}

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// The control plane: a directory, or a file://, s3://, gs:// or az:// URL.
    #[arg(long, env = "TIDEMARK_CONTROL")]
    pub control: Option<String>,
    /// The cluster name, as in the Cluster document.
    #[arg(long, env = "TIDEMARK_CLUSTER")]
    pub cluster: Option<String>,
    /// This node's mongod, e.g. mongodb://127.0.0.1:27017 (credentials are never logged).
    #[arg(long, env = "TIDEMARK_MONGOD_URI", hide_env_values = true)]
    pub mongod_uri: Option<String>,
    #[arg(long, env = "TIDEMARK_DBPATH")]
    pub dbpath: Option<PathBuf>,
    /// The mongod binary used for the restore's standalone starts.
    #[arg(long, env = "TIDEMARK_MONGOD_BIN")]
    pub mongod_bin: Option<PathBuf>,
    /// host:port as the replica-set config names this node (learned from mongod if absent).
    #[arg(long, env = "TIDEMARK_NODE_ID")]
    pub node_id: Option<String>,
    /// The replica set (learned from mongod if absent; needed while mongod is down).
    #[arg(long, env = "TIDEMARK_REPLICA_SET")]
    pub replica_set: Option<String>,
    /// A YAML file with any of these settings (camelCase); flags and env win over it.
    #[arg(long, env = "TIDEMARK_AGENT_CONFIG")]
    pub config: Option<PathBuf>,
    /// The longest a heartbeat goes unwritten (default 60s); a change of role or of
    /// mongod's state is written at once. An agent counts as lost after the reconciler's
    /// --dead-after or three of these, whichever is longer.
    #[arg(long, env = "TIDEMARK_HEARTBEAT_INTERVAL")]
    pub heartbeat_interval: Option<String>,
    /// How often the doorbell record is read when the leader's long-poll does not answer
    /// (default 5s); ops/ is listed this often when no leader rings at all.
    #[arg(long, env = "TIDEMARK_POLL_INTERVAL")]
    pub poll_interval: Option<String>,
    /// How often ops/ is listed though no ring came (default 10m).
    #[arg(long, env = "TIDEMARK_RESYNC_INTERVAL")]
    pub resync_interval: Option<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics: the control-plane requests this
    /// agent made, and whether it hears the leader's doorbell.
    #[arg(long, env = "TIDEMARK_AGENT_METRICS")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Files copied or downloaded at once.
    #[arg(long, env = "TIDEMARK_PARALLEL_FILES")]
    pub parallel_files: Option<usize>,
    #[arg(long, env = "TIDEMARK_CURSOR_KEEPALIVE")]
    pub cursor_keepalive: Option<String>,
    /// Extra argument for the restore's standalone mongod starts (repeatable).
    #[arg(long = "standalone-arg", allow_hyphen_values = true)]
    pub standalone_args: Vec<String>,
    #[arg(long, env = "TIDEMARK_MONGOD_TIMEOUT")]
    pub mongod_timeout: Option<String>,
    /// Run as a drill agent: serve no mongod node, restore RestoreDrills into scratch
    /// dbPaths under this directory (needs --node-id and --mongod-bin; not --mongod-uri
    /// or --dbpath).
    #[arg(long, env = "TIDEMARK_DRILL_DIR")]
    pub drill_dir: Option<PathBuf>,
    /// A file of OpenSSH public keys (`ssh-ed25519 AAAA… comment`, one per line) whose
    /// signatures this agent acts on; repeat it, or put several keys in a file, to rotate
    /// keys. Files are read again when they change. Ops, gates and slicing assignments
    /// signed by any other key, or unsigned, are refused and reported in the heartbeat.
    #[arg(long, env = "TIDEMARK_TRUSTED_KEYS", value_delimiter = ',')]
    pub trusted_keys: Vec<PathBuf>,
    /// Act on unsigned ops: anyone who can write the control plane can then stop and wipe
    /// this node. For playgrounds and tests only.
    #[arg(long, env = "TIDEMARK_INSECURE_ACCEPT_UNSIGNED")]
    pub insecure_accept_unsigned: bool,
}

#[derive(Args, Debug)]
pub struct ReconcileArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// The control plane: a directory, or a file://, s3://, gs:// or az:// URL.
    #[arg(long, env = "TIDEMARK_CONTROL")]
    pub control: String,
    /// Run one pass and exit: 0 nothing running, 1 failed, 3 operations still running.
    #[arg(long, env = "TIDEMARK_ONCE")]
    pub once: bool,
    /// An agent silent this long is dead (PBM: 240s).
    #[arg(long, env = "TIDEMARK_DEAD_AFTER", default_value = "240s", value_parser = parse_fine)]
    pub dead_after: std::time::Duration,
    /// How often passes run while operations are in flight (each follows them: one list per op).
    /// Short, because each wait for a step to be noticed adds to a restore's time.
    #[arg(long, env = "TIDEMARK_FOLLOW_INTERVAL", default_value = "250ms", value_parser = parse_fine)]
    pub follow_interval: std::time::Duration,
    /// A node that has not started an op within this time refuses it.
    #[arg(long, env = "TIDEMARK_OP_DEADLINE", default_value = "1h", value_parser = parse_fine)]
    pub op_deadline: std::time::Duration,
    /// A restore whose nodes are not all ready within this time of its start is aborted
    /// before any node is touched; nodes stop waiting for go after it too.
    #[arg(long, env = "TIDEMARK_GO_TIMEOUT", default_value = "5m", value_parser = parse_fine)]
    pub go_timeout: std::time::Duration,
    /// Reconcilers sharing a control plane elect one leader; another takes over once the
    /// leader's renewals stopped for this long. The leader renews every third of it (one
    /// write each), which is most of what an idle reconciler costs.
    #[arg(long, env = "TIDEMARK_LEASE_TTL", default_value = "90s", value_parser = parse_fine)]
    pub lease_ttl: std::time::Duration,
    /// Split the fleet into this many partitions by a hash of the cluster name, each with
    /// its own lease, so that several reconcilers share the clusters (each cluster led by
    /// exactly one). Every reconciler of a control plane must give the same number; with
    /// 1, one reconciler leads everything and the others stand by.
    #[arg(long, env = "TIDEMARK_PARTITIONS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub partitions: u32,
    /// How long an ended operation keeps its working records (op, reports, log chunks)
    /// before they are compacted into one archive object in the ledger.
    #[arg(long, env = "TIDEMARK_KEEP_OPS", default_value = "7d", value_parser = parse_fine)]
    pub keep_ops: std::time::Duration,
    /// How often a pass reads the control plane at rest (nothing running, waiting or
    /// slicing) when nothing wakes it sooner: a source change, a push webhook, a schedule
    /// or drill coming due.
    #[arg(long, env = "TIDEMARK_RESYNC_INTERVAL", default_value = "10m", value_parser = parse_fine)]
    pub resync_interval: std::time::Duration,
    /// Serve Prometheus metrics at http://ADDR/metrics (say 127.0.0.1:9464).
    #[arg(long, env = "TIDEMARK_METRICS")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Serve the agents' doorbell at http://ADDR/v1/doorbell/CLUSTER while leading (agents
    /// then wait there instead of polling the control plane), and, with
    /// TIDEMARK_WEBHOOK_SECRET set, push webhooks (GitHub, GitLab, Gitea) at
    /// http://ADDR/webhook: a signed push starts a fetch and a pass at once.
    #[arg(long, env = "TIDEMARK_LISTEN")]
    pub listen: Option<std::net::SocketAddr>,
    /// The URL agents reach --listen at (say http://reconciler-1.internal:8080), when
    /// --listen is 0.0.0.0 or behind a proxy.
    #[arg(long, env = "TIDEMARK_ADVERTISE", requires = "listen")]
    pub advertise: Option<String>,
    /// The ed25519 private key (OpenSSH format, from `tidemark keygen` or `ssh-keygen -t
    /// ed25519`) that signs every op, gate and slicing assignment. Or give the key itself
    /// in TIDEMARK_SIGNING_KEY. Without either, records are written unsigned and agents
    /// refuse them unless started with --insecure-accept-unsigned.
    #[arg(long, env = "TIDEMARK_SIGNING_KEY_FILE")]
    pub signing_key_file: Option<PathBuf>,
    /// After a key rotation: the public keys this reconciler signed with before (one
    /// `ssh-ed25519 AAAA…` line each), so that operations they sealed are still followed
    /// to their end.
    #[arg(long, env = "TIDEMARK_PREVIOUS_SIGNING_KEYS")]
    pub previous_signing_keys: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// Where the private key goes; the public key goes to the same path with `.pub`.
    /// Neither is overwritten.
    #[arg(long, default_value = "tidemark-signing")]
    pub out: PathBuf,
    /// The public key's comment.
    #[arg(long, default_value = "tidemark reconciler")]
    pub comment: String,
}

#[derive(Args, Debug)]
pub struct DescribeArgs {
    /// The Backup or Restore name.
    pub name: String,
    #[arg(long, env = "TIDEMARK_CONTROL")]
    pub control: String,
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: OutputFormat,
    /// Follow the operation to its end; exit 0 when done, 1 otherwise.
    #[arg(long)]
    pub wait: bool,
    /// A node whose agent is silent this long shows as lost (as the reconciler's flag).
    #[arg(long, env = "TIDEMARK_DEAD_AFTER", default_value = "240s", value_parser = parse_fine)]
    pub dead_after: std::time::Duration,
    /// A node of a running operation that reported nothing new for this long shows as
    /// stuck, with its phase (its agent still beats, but its work does not move).
    #[arg(long, env = "TIDEMARK_STUCK_AFTER", default_value = "10m", value_parser = parse_fine)]
    pub stuck_after: std::time::Duration,
}

#[derive(Args, Debug)]
pub struct FinishArgs {
    #[arg(long, env = "TIDEMARK_CONTROL")]
    pub control: String,
    /// The op id the agents reported with `copyReady`.
    pub op_id: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    #[default]
    Text,
    Json,
}

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// Files or directories (searched recursively for *.yaml / *.yml).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: OutputFormat,
}

#[derive(Args, Debug)]
pub struct SourceArgs {
    /// A directory of YAML files.
    #[arg(
        long,
        env = "TIDEMARK_POLICIES",
        conflicts_with = "git",
        required_unless_present = "git"
    )]
    pub policies: Option<PathBuf>,
    /// A git repository: https, ssh, file:// URL or a local path.
    #[arg(long, env = "TIDEMARK_GIT")]
    pub git: Option<String>,
    /// Branch, tag or commit (default: the remote's default branch).
    #[arg(long = "ref", env = "TIDEMARK_GIT_REF", requires = "git")]
    pub reference: Option<String>,
    /// Subdirectory of the repository holding the policies.
    #[arg(long, env = "TIDEMARK_GIT_PATH", requires = "git")]
    pub path: Option<String>,
    /// How often to fetch (git), e.g. 30s, 5m; `reconcile` also runs passes this often while
    /// oplog slicing goes on.
    #[arg(long, env = "TIDEMARK_GIT_INTERVAL", default_value = "60s", value_parser = parse_interval)]
    pub interval: std::time::Duration,
    /// Where git clones are cached (default: $XDG_CACHE_HOME/tidemark or ~/.cache/tidemark).
    #[arg(long, env = "TIDEMARK_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Apply only commits signed (SSH signatures, `git config gpg.format ssh`) by a key
    /// of --allowed-signers; any other commit is refused and the last good revision stays.
    #[arg(long, env = "TIDEMARK_VERIFY_COMMITS", requires_all = ["git", "allowed_signers"])]
    pub verify_commits: bool,
    /// The allowed signers, in git's format (`principal ssh-ed25519 AAAA…` per line, as
    /// `gpg.ssh.allowedSignersFile`); read again at every fetch.
    #[arg(long, env = "TIDEMARK_ALLOWED_SIGNERS", requires = "verify_commits")]
    pub allowed_signers: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct DiffArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// The control plane: a directory, or a file://, s3://, gs:// or az:// URL.
    #[arg(long, env = "TIDEMARK_CONTROL")]
    pub control: String,
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: OutputFormat,
    /// An agent silent this long is dead, as the reconciler's flag (same variable).
    #[arg(long, env = "TIDEMARK_DEAD_AFTER", default_value = "240s", value_parser = parse_fine)]
    pub dead_after: std::time::Duration,
    /// Plan as of this time (RFC 3339) instead of now; for reproducible previews.
    #[arg(long, env = "TIDEMARK_NOW", hide = true)]
    pub now: Option<chrono::DateTime<chrono::Utc>>,
}

fn parse_interval(s: &str) -> Result<std::time::Duration, String> {
    tidemark_schema::model::parse_max_age(s).map(|m| m.duration)
}

/// Durations down to milliseconds (`500ms`, `4s`, `1h`), as the agent's flags take them.
/// A wait that may be zero (`0s`: do not wait).
fn parse_wait(s: &str) -> Result<std::time::Duration, String> {
    if s.trim_end_matches(['s', 'm', 'h']).trim_end_matches("m") == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    parse_fine(s)
}

fn parse_fine(s: &str) -> Result<std::time::Duration, String> {
    tidemark_agent::config::parse_duration(s).map_err(|e| e.to_string())
}
