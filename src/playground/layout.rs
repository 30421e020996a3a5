//! The playground's directory: where everything lives, the lock that keeps two runs apart,
//! the processes a crashed run left behind, and the starter policies.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use nix::fcntl::{Flock, FlockArg};

/// Everything under one directory, so a second run finds the first one's data.
#[derive(Clone, Debug)]
pub struct Layout {
    pub root: PathBuf,
}

/// The replica set's name and the cluster's, in the starter policies.
pub const REPLICA_SET: &str = "pg";
pub const CLUSTER: &str = "playground";

impl Layout {
    pub fn new(root: &Path) -> anyhow::Result<Layout> {
        std::fs::create_dir_all(root)
            .with_context(|| format!("cannot create {}", root.display()))?;
        let root = root
            .canonicalize()
            .with_context(|| format!("cannot resolve {}", root.display()))?;
        for sub in ["db", "logs", "control", "backups", "bin"] {
            std::fs::create_dir_all(root.join(sub))?;
        }
        Ok(Layout { root })
    }

    pub fn dbpath(&self, i: usize) -> PathBuf {
        self.root.join("db").join(format!("n{i}"))
    }

    pub fn log(&self, name: &str) -> PathBuf {
        self.root.join("logs").join(format!("{name}.log"))
    }

    pub fn control(&self) -> PathBuf {
        self.root.join("control")
    }

    /// The playground's own signing key (the public key beside it, `.pub`): made on the
    /// first run, so the agents act only on what this playground's reconciler signed.
    pub fn signing_key(&self) -> PathBuf {
        self.root.join("signing-key")
    }

    /// Makes the key pair unless an earlier run did. A private key that cannot be read is
    /// made again (it is this playground's own, nothing else trusts it); a missing or
    /// wrong public half is written again from it.
    pub fn ensure_signing_key(&self) -> anyhow::Result<()> {
        use tidemark_schema::control::signature::{Signer, TrustedKeys};
        let private = self.signing_key();
        let public = PathBuf::from(format!("{}.pub", private.display()));
        let signer = std::fs::read_to_string(&private)
            .ok()
            .and_then(|text| Signer::from_openssh(&text).ok());
        let Some(signer) = signer else {
            let _ = std::fs::remove_file(&private);
            let _ = std::fs::remove_file(&public);
            crate::cli::keys::write_key_pair(&private, "tidemark playground")?;
            return Ok(());
        };
        // The private key is what earlier runs sealed with: kept; its public half is
        // written again when it is missing or does not match.
        let matches = std::fs::read_to_string(&public).is_ok_and(|text| {
            TrustedKeys::parse(&text)
                .is_ok_and(|keys| keys.fingerprints() == [signer.fingerprint()])
        });
        if !matches {
            std::fs::write(&public, signer.public_openssh("tidemark playground") + "\n")?;
        }
        Ok(())
    }

    pub fn backups(&self) -> PathBuf {
        self.root.join("backups")
    }

    fn pid_file(&self) -> PathBuf {
        self.root.join("playground.pid")
    }

    /// Takes the directory for this run, held until the returned lock is dropped (an
    /// exclusive `flock` on `playground.pid`: two runs started at once cannot both get it,
    /// and a crashed run's lock goes with its process). Refuses while processes of an
    /// earlier run that did not stop cleanly are alive, naming them and the way out.
    pub fn lock(&self, stop_leftovers: bool) -> anyhow::Result<Flock<std::fs::File>> {
        use std::io::{Read, Seek, Write};
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.pid_file())
            .with_context(|| format!("cannot open {}", self.pid_file().display()))?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((mut file, _)) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                bail!(
                    "a playground is already running from {} (pid {}); stop it with Ctrl-C in \
                     its terminal, or give this one another --dir",
                    self.root.display(),
                    pid.trim()
                );
            }
        };
        let leftovers = self.leftovers();
        if !leftovers.is_empty() {
            if !stop_leftovers {
                let list: Vec<String> = leftovers
                    .iter()
                    .map(|(pid, what)| format!("  pid {pid}: {what}"))
                    .collect();
                bail!(
                    "processes of an earlier playground in {} are still running (it did not stop \
                     cleanly):\n{}\nstop them with `tidemark playground --stop-leftovers` (same \
                     --dir), or `kill {}`",
                    self.root.display(),
                    list.join("\n"),
                    leftovers
                        .iter()
                        .map(|(p, _)| p.to_string())
                        .collect::<Vec<_>>()
                        .join(" ")
                );
            }
            for (pid, what) in &leftovers {
                eprintln!("stopping leftover pid {pid}: {what}");
            }
            super::procs::stop(
                leftovers.iter().map(|(p, _)| *p).collect(),
                Some(nix::sys::signal::Signal::SIGTERM),
                std::time::Duration::from_secs(10),
            );
        }
        lock.set_len(0)?;
        lock.rewind()?;
        write!(lock, "{}", std::process::id())?;
        Ok(lock)
    }

    /// Live processes an earlier run of this directory started: mongods whose `--dbpath`
    /// is one of its dbPaths, and agents and reconcilers whose `--control` is its control
    /// plane. Argument values are compared exactly, and CLI commands that only read (a
    /// `tidemark logs --follow` in another terminal) are not counted.
    pub fn leftovers(&self) -> Vec<(u32, String)> {
        let me = std::process::id();
        let db = self.root.join("db");
        let control = self.control();
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if pid == me {
                continue;
            }
            let Some(argv) = argv(pid) else { continue };
            let value = |flag: &str| {
                argv.windows(2)
                    .find(|w| w[0] == flag)
                    .map(|w| std::path::PathBuf::from(&w[1]))
            };
            let mongod = value("--dbpath").is_some_and(|p| p.parent() == Some(db.as_path()));
            let role = argv.get(1).map(String::as_str);
            let tidemark = matches!(role, Some("agent" | "reconcile"))
                && value("--control").is_some_and(|p| p == control);
            if mongod || tidemark {
                let short: String = argv.join(" ").chars().take(120).collect();
                out.push((pid, short));
            }
        }
        out
    }

    /// The starter policies (a cluster matching the replica set, a file storage, a
    /// schedule), written only when `dir` does not exist: a user's files are never
    /// overwritten.
    pub fn write_starter_policies(
        &self,
        dir: &Path,
        sets: &[(String, Vec<String>)],
        sharded: bool,
        cron: &str,
    ) -> anyhow::Result<bool> {
        if dir.exists() {
            return Ok(false);
        }
        std::fs::create_dir_all(dir)?;
        let set = |(name, hosts): &(String, Vec<String>), indent: &str| {
            let members: String = hosts
                .iter()
                .map(|h| format!("{indent}    - {h}\n"))
                .collect();
            format!("name: {name}\n{indent}  members:\n{members}")
        };
        let spec = if sharded {
            let shards: String = sets[1..]
                .iter()
                .map(|s| format!("    - {}", set(s, "    ")))
                .collect();
            format!(
                "  configServer:\n    {}  replicaSets:\n{shards}",
                set(&sets[0], "  ")
            )
        } else {
            format!("  replicaSets:\n    - {}", set(&sets[0], "    "))
        };
        std::fs::write(
            dir.join("cluster.yaml"),
            format!(
                "# The {} the playground started (tidemark playground).\n\
                 apiVersion: tidemark/v1\nkind: Cluster\nmetadata:\n  name: {CLUSTER}\nspec:\n{spec}",
                if sharded {
                    "sharded cluster"
                } else {
                    "replica set"
                }
            ),
        )?;
        std::fs::write(
            dir.join("storage.yaml"),
            format!(
                "# Backups go to a directory next to the playground's data.\n\
                 apiVersion: tidemark/v1\nkind: BackupStorage\nmetadata:\n  name: local\nspec:\n  \
                 url: file://{}\n",
                self.backups().display()
            ),
        )?;
        std::fs::write(
            dir.join("schedule.yaml"),
            format!(
                "# Edit the cron and watch `tidemark status`: the next run moves at once.\n\
                 # pitr: the oplog is sliced every 30 s, so `tidemark list` shows how far a\n\
                 # point-in-time restore reaches.\n\
                 apiVersion: tidemark/v1\nkind: BackupSchedule\nmetadata:\n  name: often\nspec:\n  \
                 cluster: {CLUSTER}\n  storage: local\n  type: physical\n  cron: \"{cron}\"\n  \
                 rpo: 10m\n  retention:\n    keepLast: 5\n  pitr:\n    enabled: true\n    oplogSpan: 30s\n"
            ),
        )?;
        Ok(true)
    }
}

/// A live process's arguments (`None` for a zombie, a kernel thread or a process gone).
pub fn argv(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if raw.is_empty() {
        return None;
    }
    Some(
        raw.split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).to_string())
            .collect(),
    )
}
