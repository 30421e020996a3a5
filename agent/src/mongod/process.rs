//! Running mongod: temporary standalone starts during a restore, the final start as a
//! replica-set member, and the checks that say a stopped mongod is really gone.

use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::client::{MongodClient, MongodError};

/// How to start a mongod.
#[derive(Clone, Debug)]
pub struct StartSpec {
    pub bin: PathBuf,
    pub args: Vec<String>,
    /// Where a readiness probe connects: `host:port`.
    pub address: String,
    /// The agent's own temporary standalone (no auth): a server on `address` counts as
    /// this one only on proof (its pid or its dbPath). Otherwise a server that will not
    /// say (auth on) is taken at its word.
    pub prove_identity: bool,
}

/// A mongod this agent started. Dropped without `detach`, it is killed: a temporary
/// standalone must never outlive a failed step and hold the dbPath's lock.
pub struct MongodProcess {
    child: Option<Child>,
    pub address: String,
    /// The `--dbpath` it was given: a server answering on the address with another
    /// dbPath is someone else's (the port was free when chosen, not when bound).
    dbpath: Option<String>,
    prove_identity: bool,
}

impl Drop for MongodProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take()
            && matches!(child.try_wait(), Ok(None))
        {
            tracing::warn!(pid = child.id(), address = %self.address, "killing a mongod left running by a failed step");
            kill_group(child.id() as i32);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl MongodProcess {
    /// Starts mongod in its own session, so it outlives the agent when it should (a
    /// member started after a restore) and a signal to the agent does not reach it.
    pub fn spawn(spec: &StartSpec) -> Result<MongodProcess, MongodError> {
        let mut cmd = Command::new(&spec.bin);
        cmd.args(&spec.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid()
                    .map(|_| ())
                    .map_err(std::io::Error::from)
            });
        }
        let child = cmd.spawn().map_err(|e| MongodError::Process {
            node: spec.address.clone(),
            message: format!("cannot start {}: {e}", spec.bin.display()),
        })?;
        let dbpath = spec
            .args
            .iter()
            .position(|a| a == "--dbpath")
            .and_then(|i| spec.args.get(i + 1))
            .cloned();
        Ok(MongodProcess {
            child: Some(child),
            address: spec.address.clone(),
            dbpath,
            prove_identity: spec.prove_identity,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits until mongod answers `hello`; fails early if the process exits.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<MongodClient, MongodError> {
        let started = Instant::now();
        let uri = format!("mongodb://{}/?directConnection=true", self.address);
        loop {
            if let Some(status) = self.try_wait() {
                return Err(MongodError::StartExit {
                    node: self.address.clone(),
                    status,
                });
            }
            if TcpStream::connect(&self.address).is_ok()
                && let Ok(client) = MongodClient::connect(&uri).await
                && client.admin(bson::doc! {"ping": 1}).await.is_ok()
                && self.is_ours(&client).await
            {
                return Ok(client);
            }
            if started.elapsed() > timeout {
                return Err(MongodError::Process {
                    node: self.address.clone(),
                    message: format!("mongod did not answer within {timeout:?}"),
                });
            }
            // A local connect attempt is cheap, and a restore waits on three starts.
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Whether the server answering on our address is the process we started. Another
    /// mongod may hold the port (ours then exits with code 48), and commands meant for a
    /// restore's standalone must never reach it. Proof is its pid (`serverStatus`) or its
    /// dbPath (`getCmdLineOpts`, for a wrapper that does not exec); a server that will say
    /// neither (auth on) counts only when no proof is required.
    async fn is_ours(&self, client: &MongodClient) -> bool {
        if let Ok(status) = client.admin(bson::doc! {"serverStatus": 1}).await
            && let Some(pid) = int_field(&status, "pid")
            && pid == i64::from(self.pid())
        {
            return true;
        }
        let theirs = match client.admin(bson::doc! {"getCmdLineOpts": 1}).await {
            Ok(opts) => opts
                .get_document("parsed")
                .and_then(|p| p.get_document("storage"))
                .and_then(|s| s.get_str("dbPath"))
                .map(str::to_string)
                .ok(),
            Err(_) => None,
        };
        match (theirs, &self.dbpath) {
            (Some(theirs), Some(ours)) if Path::new(&theirs) == Path::new(ours) => true,
            (Some(_), Some(_)) => false,
            _ => !self.prove_identity,
        }
    }

    /// Waits for the process to end by itself.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, MongodError> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.try_wait() {
                return Ok(status);
            }
            if started.elapsed() > timeout {
                return Err(MongodError::Process {
                    node: self.address.clone(),
                    message: format!("mongod did not exit within {timeout:?}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Lets the process run on without us (it has its own session).
    pub fn detach(mut self) {
        if let Some(child) = self.child.take() {
            std::mem::forget(child);
        }
    }
}

/// True when `mongod.lock` is missing or empty: mongod removed its claim on the dbPath.
pub fn lock_is_empty(dbpath: &Path) -> bool {
    std::fs::metadata(dbpath.join("mongod.lock")).map_or(true, |m| m.len() == 0)
}

/// The file in the dbPath that records the pid of a temporary standalone the agent
/// started, so that an agent restarted after dying mid-`recover` can stop it.
pub const STANDALONE_PID_FILE: &str = ".tidemark-standalone.pid";

/// The pid a non-empty `mongod.lock` names (mongod writes its pid there).
pub fn lock_holder(dbpath: &Path) -> Option<i32> {
    std::fs::read_to_string(dbpath.join("mongod.lock"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether a process with this pid exists (ours or not).
pub fn process_alive(pid: i32) -> bool {
    use nix::errno::Errno;
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) | Err(Errno::EPERM) => true,
        Err(_) => false,
    }
}

/// True when no mongod holds the dbPath: the lock is empty, or it names a process that no
/// longer exists (a mongod killed with SIGKILL leaves its pid behind).
pub fn lock_is_released(dbpath: &Path) -> bool {
    lock_is_empty(dbpath) || lock_holder(dbpath).is_some_and(|pid| !process_alive(pid))
}

/// The log file name of the agent's temporary standalones, inside their dbPath: it also
/// tells such a standalone apart from the node's own mongod.
pub const STANDALONE_LOG: &str = "tidemark-restore.log";

/// Whether process `pid` is a mongod started with `--dbpath` exactly `dbpath` (pids are
/// reused, and another dbPath may share this one's prefix).
fn runs_on(pid: i32, dbpath: &Path) -> Option<Vec<String>> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let on_dbpath = args.iter().enumerate().any(|(i, a)| {
        let value = if a == "--dbpath" {
            args.get(i + 1).map(String::as_str)
        } else {
            a.strip_prefix("--dbpath=")
        };
        value.is_some_and(|v| Path::new(v) == dbpath)
    });
    (on_dbpath && process_alive(pid)).then_some(args)
}

/// Kills a temporary standalone left running on the dbPath by an agent that died during
/// `recover`: the one its pid file names, or, when the agent died before that file was
/// written, the lock holder if it logs to the standalone's log. Returns the pid it stopped.
pub async fn kill_leftover_standalone(dbpath: &Path) -> Option<i32> {
    let pid_file = dbpath.join(STANDALONE_PID_FILE);
    // A crash between the pid file's write and its rename leaves the staging file.
    let _ = std::fs::remove_file(pid_file.with_extension("pid.tmp"));
    let recorded: Option<i32> = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let pid = recorded
        .filter(|pid| is_standalone_on(*pid, dbpath))
        .or_else(|| find_standalone_on(dbpath));
    let Some(pid) = pid else {
        let _ = std::fs::remove_file(&pid_file);
        return None;
    };
    tracing::warn!(pid, dbpath = %dbpath.display(), "killing a standalone mongod left by an earlier run");
    kill_group(pid);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
    let started = Instant::now();
    while process_alive(pid) && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = std::fs::remove_file(&pid_file);
    Some(pid)
}

/// Whether `pid` is one of the agent's standalones on this very dbPath: started with
/// `--dbpath` exactly `dbpath` and logging to the standalone log (never the node's own
/// mongod, whatever a reused pid now names).
fn is_standalone_on(pid: i32, dbpath: &Path) -> bool {
    runs_on(pid, dbpath).is_some_and(|args| args.iter().any(|a| a.ends_with(STANDALONE_LOG)))
}

/// The agent's standalone on `dbpath` when no pid file names it (the agent died between
/// starting it and recording its pid): looked for among every process, since it may not
/// hold `mongod.lock` yet.
fn find_standalone_on(dbpath: &Path) -> Option<i32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| is_standalone_on(*pid, dbpath))
}

/// SIGKILL to the process group `pid` leads. Every mongod the agent starts leads its own
/// session, so a wrapper binary that does not exec takes its mongod down with it.
fn kill_group(pid: i32) {
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// The standalone's pid file, written atomically (a crash never leaves it half written)
/// and removed when dropped: once the process it names is gone, a pid left in it could
/// be reused by a stranger. An agent killed outright leaves it, which is its purpose.
pub struct PidFile(PathBuf);

impl PidFile {
    pub fn new(path: PathBuf) -> PidFile {
        PidFile(path)
    }

    pub fn write(&self, pid: u32) -> std::io::Result<()> {
        let tmp = self.0.with_extension("pid.tmp");
        std::fs::write(&tmp, pid.to_string())?;
        std::fs::rename(&tmp, &self.0)
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// True when nothing accepts connections on `address`.
pub fn port_is_free(address: &str) -> bool {
    TcpStream::connect(address).is_err()
}

/// A mongod is stopped when its lock file is empty and its port is free.
pub async fn wait_stopped(dbpath: &Path, address: &str, timeout: Duration) -> Result<(), String> {
    let started = Instant::now();
    loop {
        let lock = lock_is_empty(dbpath);
        let port = port_is_free(address);
        if lock && port {
            return Ok(());
        }
        if started.elapsed() > timeout {
            return Err(format!(
                "mongod did not stop within {timeout:?}: {}{}",
                if lock {
                    ""
                } else {
                    "mongod.lock is not empty; "
                },
                if port { "" } else { "the port still answers" }
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An integer field whichever BSON width mongod chose for it.
fn int_field(doc: &bson::Document, key: &str) -> Option<i64> {
    match doc.get(key)? {
        bson::Bson::Int64(v) => Some(*v),
        bson::Bson::Int32(v) => Some(i64::from(*v)),
        bson::Bson::Double(v) => Some(*v as i64),
        _ => None,
    }
}
