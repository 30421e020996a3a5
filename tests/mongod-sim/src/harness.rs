//! Test harness: runs `mongod-sim` processes (standalone, replica sets, a sharded layout) in
//! temporary directories on free ports, and lets a test stop, kill, corrupt, wipe and restart them.
//! Everything still running is killed on drop.

use crate::client::BlockingConn;
use crate::wire::WireError;
use bson::{Bson, Document, doc, oid::ObjectId};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum HarnessError {
    #[error(
        "mongod-sim binary not found (looked at $MONGOD_SIM_BIN and {0}); run `cargo build -p mongod-sim` first"
    )]
    NoBinary(PathBuf),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("wire: {0}")]
    Wire(#[from] WireError),
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
    #[error("command failed: {0}")]
    Command(Document),
    #[error("member {0} is not running")]
    NotRunning(usize),
}

/// A real `mongod` to run instead of the sim (`$MONGOD_BIN`, a PSMDB binary for the
/// backup cursor): the same end-to-end suites then run against the real server.
pub fn real_mongod() -> Option<PathBuf> {
    std::env::var_os("MONGOD_BIN").map(PathBuf::from)
}

/// Finds the binary: `$MONGOD_BIN` (a real mongod), else `$MONGOD_SIM_BIN`, else
/// `mongod-sim` in the cargo profile directory that holds the running test executable
/// (`target/<profile>/deps/..`).
pub fn binary() -> Result<PathBuf, HarnessError> {
    if let Some(p) = real_mongod() {
        return Ok(p);
    }
    if let Ok(p) = std::env::var("MONGOD_SIM_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") || dir.ends_with("examples") {
        dir.pop();
    }
    let candidate = dir.join(format!("mongod-sim{}", std::env::consts::EXE_SUFFIX));
    if candidate.is_file() {
        Ok(candidate)
    } else {
        Err(HarnessError::NoBinary(candidate))
    }
}

/// A port nobody listens on right now.
pub fn free_port() -> Result<u16, HarnessError> {
    Ok(reserve_port()?.0)
}

/// A free port and a listener holding it, until dropped. Chosen at random below Linux's
/// ephemeral range (32768 and up), which the kernel hands to every `bind(0)` of every
/// process: tests running at once were given the same just-freed port, and one of their
/// mongods exited with code 48 (address in use).
fn reserve_port() -> Result<(u16, std::net::TcpListener), HarnessError> {
    use std::hash::{BuildHasher, Hasher};
    for _ in 0..200 {
        // Seeded at random per process, and differently on every call.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        let port = 20_000 + (h.finish() % 12_000) as u16;
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return Ok((port, l));
        }
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok((l.local_addr()?.port(), l))
}

/// mongod's exit code when its port is taken.
const EXIT_NET_ERROR: i32 = 48;

/// Sim flags that keep tests quick: fast heartbeats and checkpoints (none for a real
/// mongod, which knows no such flags).
pub fn fast_flags() -> Vec<String> {
    if real_mongod().is_some() {
        return Vec::new();
    }
    [
        "--sim-heartbeat-interval-ms",
        "100",
        "--sim-checkpoint-interval-ms",
        "300",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// One `mongod-sim` process and its dbPath.
pub struct Process {
    pub port: u16,
    pub dbpath: PathBuf,
    pub logpath: PathBuf,
    pub args: Vec<String>,
    child: Option<Child>,
}

impl Process {
    /// Starts the binary with `--dbpath`, `--port`, `--bind_ip 127.0.0.1`, `--logpath` and `args`.
    pub fn spawn(
        dbpath: &Path,
        logpath: &Path,
        port: u16,
        args: &[String],
    ) -> Result<Process, HarnessError> {
        let bin = binary()?;
        std::fs::create_dir_all(dbpath)?;
        let child = Command::new(bin)
            .arg("--dbpath")
            .arg(dbpath)
            .args([
                "--port",
                &port.to_string(),
                "--bind_ip",
                "127.0.0.1",
                "--logpath",
            ])
            .arg(logpath)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(Process {
            port,
            dbpath: dbpath.to_path_buf(),
            logpath: logpath.to_path_buf(),
            args: args.to_vec(),
            child: Some(child),
        })
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A connection string that talks to this process only.
    pub fn uri(&self) -> String {
        format!("mongodb://{}/?directConnection=true", self.host())
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn connect(&self) -> Result<BlockingConn, HarnessError> {
        Ok(BlockingConn::connect(&self.host(), Duration::from_secs(2))?)
    }

    /// Runs one command on this process.
    pub fn command(&self, db: &str, cmd: Document) -> Result<Document, HarnessError> {
        Ok(self.connect()?.command(db, cmd)?)
    }

    /// Waits until the process answers `hello`; fails early if it exits.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), HarnessError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(HarnessError::Timeout(
                    timeout,
                    format!(
                        "{} to answer; it exited with {status}; log: {}",
                        self.host(),
                        self.logpath.display()
                    ),
                ));
            }
            // Only our own process counts: another test's mongod may answer on the port
            // until ours gives up on it (exit code 48).
            let pid = self.child.as_ref().map(|c| i64::from(c.id()));
            let answered = self
                .connect()
                .and_then(|mut c| Ok(c.command("admin", bson::doc! {"serverStatus": 1})?));
            if let Ok(status) = answered
                && status.get_i64("pid").ok() == pid
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(HarnessError::Timeout(
                    timeout,
                    format!("{} to answer hello", self.host()),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The exit code, once the process has exited by itself.
    pub fn exit_code(&mut self) -> Option<i32> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
            .and_then(|s| s.code())
    }

    /// Waits for the process to exit and returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, HarnessError> {
        let deadline = Instant::now() + timeout;
        let Some(child) = self.child.as_mut() else {
            return Err(HarnessError::NotRunning(0));
        };
        loop {
            if let Some(s) = child.try_wait()? {
                self.child = None;
                return Ok(s);
            }
            if Instant::now() > deadline {
                return Err(HarnessError::Timeout(
                    timeout,
                    format!("{} to exit", self.host()),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Clean stop through the `shutdown` command (a closed connection is success, as with
    /// mongod), then waits for the exit status.
    pub fn shutdown(&mut self, force: bool) -> Result<ExitStatus, HarnessError> {
        let mut c = self.connect()?;
        match c.command("admin", doc! {"shutdown": 1, "force": force}) {
            Ok(reply) => return Err(HarnessError::Command(reply)),
            Err(WireError::Io(_)) => {}
            Err(e) => return Err(e.into()),
        }
        self.wait_exit(Duration::from_secs(30))
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The log file's JSON lines.
    pub fn log_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.logpath)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A standalone node in its own temporary directory.
pub struct Standalone {
    pub dir: tempfile::TempDir,
    pub process: Process,
}

impl Standalone {
    pub fn start(args: &[&str]) -> Result<Standalone, HarnessError> {
        let dir = tempfile::tempdir()?;
        let mut all = fast_flags();
        all.extend(args.iter().map(|s| s.to_string()));
        let mut process = Process::spawn(
            &dir.path().join("db"),
            &dir.path().join("mongod.log"),
            free_port()?,
            &all,
        )?;
        process.wait_ready(Duration::from_secs(20))?;
        Ok(Standalone { dir, process })
    }
}

/// How one replica-set member is configured.
#[derive(Debug, Clone, Default)]
pub struct MemberSpec {
    pub priority: Option<f64>,
    pub arbiter: bool,
    pub hidden: bool,
    pub delay_secs: Option<i64>,
    pub votes: Option<i32>,
}

pub struct ReplicaSet {
    pub name: String,
    pub dir: tempfile::TempDir,
    pub specs: Vec<MemberSpec>,
    /// `None` while a test has a member stopped.
    pub members: Vec<Option<Process>>,
    pub ports: Vec<u16>,
    pub extra_args: Vec<String>,
}

impl ReplicaSet {
    /// `n` default members, initiated, with a primary and every member settled.
    pub fn start(name: &str, n: usize) -> Result<ReplicaSet, HarnessError> {
        Self::start_with(name, vec![MemberSpec::default(); n], &[])
    }

    pub fn start_with(
        name: &str,
        specs: Vec<MemberSpec>,
        extra_args: &[&str],
    ) -> Result<ReplicaSet, HarnessError> {
        let dir = tempfile::tempdir()?;
        let mut ports = Vec::new();
        let mut listeners = Vec::new();
        // Hold every port until all are chosen, so two members never get the same one.
        for _ in &specs {
            let (port, l) = reserve_port()?;
            ports.push(port);
            listeners.push(l);
        }
        drop(listeners);
        let mut rs = ReplicaSet {
            name: name.to_string(),
            dir,
            specs,
            members: Vec::new(),
            ports,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        };
        for i in 0..rs.specs.len() {
            let p = rs.spawn_member(i, &[])?;
            rs.members.push(Some(p));
        }
        for i in 0..rs.specs.len() {
            // Before the set is initiated a member's port is in no config yet: one taken
            // by another process between choice and bind is simply chosen again.
            let mut attempt = 1;
            loop {
                let m = rs.members[i].as_mut().expect("spawned above");
                match m.wait_ready(Duration::from_secs(20)) {
                    Ok(()) => break,
                    Err(_) if m.exit_code() == Some(EXIT_NET_ERROR) && attempt < 3 => {
                        attempt += 1;
                        rs.ports[i] = free_port()?;
                        rs.members[i] = Some(rs.spawn_member(i, &[])?);
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        let cfg = rs.config();
        let reply = rs
            .process(0)?
            .command("admin", doc! {"replSetInitiate": cfg})?;
        if reply.get_f64("ok").unwrap_or(0.0) != 1.0 {
            return Err(HarnessError::Command(reply));
        }
        rs.wait_settled(Duration::from_secs(30))?;
        Ok(rs)
    }

    fn member_args(&self) -> Vec<String> {
        let mut a = vec!["--replSet".to_string(), self.name.clone()];
        a.extend(fast_flags());
        a.extend(self.extra_args.iter().cloned());
        a
    }

    pub fn dbpath(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("m{i}"))
    }

    pub fn logpath(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("m{i}.log"))
    }

    fn spawn_member(&self, i: usize, extra: &[String]) -> Result<Process, HarnessError> {
        let mut args = self.member_args();
        args.extend(extra.iter().cloned());
        Process::spawn(&self.dbpath(i), &self.logpath(i), self.ports[i], &args)
    }

    /// The replica-set config `replSetInitiate` receives.
    pub fn config(&self) -> Document {
        let members: Vec<Bson> = self
            .specs
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut m = doc! {"_id": i as i32, "host": format!("127.0.0.1:{}", self.ports[i])};
                if let Some(p) = s.priority {
                    m.insert("priority", p);
                }
                if s.arbiter {
                    m.insert("arbiterOnly", true);
                }
                if s.hidden {
                    m.insert("hidden", true);
                    m.insert("priority", 0.0);
                }
                if let Some(d) = s.delay_secs {
                    m.insert("secondaryDelaySecs", d);
                    m.insert("priority", 0.0);
                }
                if let Some(v) = s.votes {
                    m.insert("votes", v);
                }
                Bson::Document(m)
            })
            .collect();
        doc! {"_id": &self.name, "version": 1, "members": members}
    }

    /// The replica-set connection string.
    pub fn uri(&self) -> String {
        let hosts: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("mongodb://{}/?replicaSet={}", hosts.join(","), self.name)
    }

    pub fn host(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.ports[i])
    }

    pub fn process(&self, i: usize) -> Result<&Process, HarnessError> {
        self.members
            .get(i)
            .and_then(Option::as_ref)
            .ok_or(HarnessError::NotRunning(i))
    }

    pub fn process_mut(&mut self, i: usize) -> Result<&mut Process, HarnessError> {
        self.members
            .get_mut(i)
            .and_then(Option::as_mut)
            .ok_or(HarnessError::NotRunning(i))
    }

    /// `hello` of each running member (`None` for stopped or unreachable ones).
    pub fn hellos(&self) -> Vec<Option<Document>> {
        self.members
            .iter()
            .map(|m| m.as_ref().and_then(|p| p.connect().ok()?.hello().ok()))
            .collect()
    }

    /// Waits for a primary and returns its index.
    pub fn wait_for_primary(&self, timeout: Duration) -> Result<usize, HarnessError> {
        let deadline = Instant::now() + timeout;
        loop {
            let hellos = self.hellos();
            if let Some(i) = hellos.iter().position(|h| {
                h.as_ref()
                    .is_some_and(|h| h.get_bool("isWritablePrimary").unwrap_or(false))
            }) {
                return Ok(i);
            }
            if Instant::now() > deadline {
                return Err(HarnessError::Timeout(
                    timeout,
                    format!("a primary in {}", self.name),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until exactly one member is primary, every running member is PRIMARY,
    /// SECONDARY or ARBITER, and every one of them names that primary. Right after an
    /// election a deposed primary can still call itself writable for a heartbeat: a write
    /// sent to it then is lost (rollback in mongod; kept apart for good in the sim).
    pub fn wait_settled(&self, timeout: Duration) -> Result<usize, HarnessError> {
        let deadline = Instant::now() + timeout;
        loop {
            let hellos = self.hellos();
            let writable = |h: &Document| h.get_bool("isWritablePrimary").unwrap_or(false);
            let primaries: Vec<usize> = (0..hellos.len())
                .filter(|&i| hellos[i].as_ref().is_some_and(writable))
                .collect();
            let settled = primaries.len() == 1 && {
                let primary = hellos[primaries[0]]
                    .as_ref()
                    .and_then(|h| h.get_str("me").ok())
                    .unwrap_or_default();
                hellos.iter().zip(&self.members).all(|(h, m)| {
                    m.is_none()
                        || h.as_ref().is_some_and(|h| {
                            (writable(h)
                                || h.get_bool("secondary").unwrap_or(false)
                                || h.get_bool("arbiterOnly").unwrap_or(false))
                                && h.get_str("primary").is_ok_and(|p| p == primary)
                        })
                })
            };
            if settled {
                return Ok(primaries[0]);
            }
            if Instant::now() > deadline {
                return Err(HarnessError::Timeout(
                    timeout,
                    format!("{} to settle: {hellos:?}", self.name),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until member `i` reports `state` (1 PRIMARY, 2 SECONDARY, 5 STARTUP2…) in its own status.
    pub fn wait_for_state(
        &self,
        i: usize,
        state: i32,
        timeout: Duration,
    ) -> Result<(), HarnessError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(s) = self
                .process(i)
                .and_then(|p| p.command("admin", doc! {"replSetGetStatus": 1}))
                && s.get_i32("myState").ok() == Some(state)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(HarnessError::Timeout(
                    timeout,
                    format!("member {i} to reach state {state}"),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Clean stop via `shutdown` (`force` so a primary does not wait for secondaries).
    pub fn stop(&mut self, i: usize) -> Result<ExitStatus, HarnessError> {
        let status = self.process_mut(i)?.shutdown(true)?;
        self.members[i] = None;
        // The process answering may not be the harness's child (an agent may have started
        // the member during a restore): wait until nothing listens on the port and the
        // dbPath's lock is released, so that a start right after finds both free.
        let deadline = Instant::now() + Duration::from_secs(30);
        let lock = self.dbpath(i).join("mongod.lock");
        while std::net::TcpStream::connect(("127.0.0.1", self.ports[i])).is_ok()
            || std::fs::read(&lock).is_ok_and(|b| !b.is_empty())
        {
            if Instant::now() > deadline {
                return Err(HarnessError::Timeout(
                    Duration::from_secs(30),
                    format!("member {i} to stop"),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(status)
    }

    /// `kill -9`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.members[i].take() {
            p.kill();
        }
    }

    /// Starts a stopped member again with its usual arguments.
    pub fn restart(&mut self, i: usize) -> Result<(), HarnessError> {
        self.start_member_with_args(i, &[])?;
        self.process_mut(i)?.wait_ready(Duration::from_secs(20))
    }

    /// Starts a stopped member with its usual arguments plus `extra`.
    pub fn start_member_with_args(
        &mut self,
        i: usize,
        extra: &[&str],
    ) -> Result<&mut Process, HarnessError> {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let p = self.spawn_member(i, &extra)?;
        self.members[i] = Some(p);
        self.process_mut(i)
    }

    /// Starts member `i`'s dbPath **standalone** (no `--replSet`) on a private port with `args`,
    /// as a physical restore does; the caller owns the process.
    pub fn start_standalone_on(&self, i: usize, args: &[&str]) -> Result<Process, HarnessError> {
        let mut all = fast_flags();
        all.extend(args.iter().map(|s| s.to_string()));
        let log = self.dir.path().join(format!("m{i}-standalone.log"));
        let mut p = Process::spawn(&self.dbpath(i), &log, free_port()?, &all)?;
        p.wait_ready(Duration::from_secs(20))?;
        Ok(p)
    }

    /// Flips a byte in the middle of the first dbPath file whose name starts with `prefix`
    /// (e.g. `collection-`); returns its path. Stop the member first.
    pub fn corrupt(&self, i: usize, prefix: &str) -> Result<PathBuf, HarnessError> {
        corrupt_file(&self.dbpath(i), prefix)
    }

    /// Removes everything in member `i`'s dbPath. Stop the member first.
    pub fn wipe(&self, i: usize) -> Result<(), HarnessError> {
        let p = self.dbpath(i);
        if p.exists() {
            std::fs::remove_dir_all(&p)?;
        }
        std::fs::create_dir_all(&p)?;
        Ok(())
    }
}

/// Flips one byte in the middle of the largest file in `dbpath` whose name starts with `prefix`.
pub fn corrupt_file(dbpath: &Path, prefix: &str) -> Result<PathBuf, HarnessError> {
    let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(dbpath)?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .filter_map(|e| Some((e.metadata().ok()?.len(), e.path())))
        .collect();
    files.sort();
    let (_, path) = files
        .pop()
        .ok_or_else(|| std::io::Error::other(format!("no file starting with {prefix}")))?;
    let mut bytes = std::fs::read(&path)?;
    let mid = bytes.len() / 2 + 10;
    let at = mid.min(bytes.len().saturating_sub(1));
    bytes[at] ^= 0xA5;
    std::fs::write(&path, bytes)?;
    Ok(path)
}

/// A sharded layout: a config-server replica set and shard replica sets, with
/// `config.shards` and each shard's `shardIdentity` written. (No mongos is modelled.)
pub struct ShardedCluster {
    pub config: ReplicaSet,
    pub shards: Vec<ReplicaSet>,
}

impl ShardedCluster {
    pub fn start(shards: usize, members: usize) -> Result<ShardedCluster, HarnessError> {
        Self::start_named("cfg", "rs", shards, members)
    }

    /// The same layout with other names: config server `config_name`, shards
    /// `<shard_prefix>0`, `<shard_prefix>1`, …
    pub fn start_named(
        config_name: &str,
        shard_prefix: &str,
        shards: usize,
        members: usize,
    ) -> Result<ShardedCluster, HarnessError> {
        let config = ReplicaSet::start_with(
            config_name,
            vec![MemberSpec::default(); members],
            &["--configsvr"],
        )?;
        let mut list = Vec::new();
        for s in 0..shards {
            list.push(ReplicaSet::start_with(
                &format!("{shard_prefix}{s}"),
                vec![MemberSpec::default(); members],
                &["--shardsvr"],
            )?);
        }
        let cluster_id = ObjectId::new();
        let cfg_primary = config.wait_for_primary(Duration::from_secs(10))?;
        let cfg_conn = format!(
            "{config_name}/{}",
            (0..members)
                .map(|i| config.host(i))
                .collect::<Vec<_>>()
                .join(",")
        );
        for rs in &list {
            let hosts = (0..members)
                .map(|i| rs.host(i))
                .collect::<Vec<_>>()
                .join(",");
            config.process(cfg_primary)?.command(
                "config",
                doc! {"insert": "shards", "documents": [{"_id": &rs.name, "host": format!("{}/{hosts}", rs.name), "state": 1}]},
            )?;
            let p = rs.wait_for_primary(Duration::from_secs(10))?;
            rs.process(p)?.command(
                "admin",
                doc! {"insert": "system.version", "documents": [{"_id": "shardIdentity", "shardName": &rs.name, "clusterId": cluster_id, "configsvrConnectionString": &cfg_conn}]},
            )?;
        }
        Ok(ShardedCluster {
            config,
            shards: list,
        })
    }
}
