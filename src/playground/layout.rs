//! The playground's directory: where everything lives, the lock that keeps two runs apart,
//! the processes a crashed run left behind, and the starter policies.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

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

    pub fn backups(&self) -> PathBuf {
        self.root.join("backups")
    }

    fn pid_file(&self) -> PathBuf {
        self.root.join("playground.pid")
    }

    /// Takes the directory for this run. Refuses while another playground runs from it,
    /// and while processes of an earlier run that did not stop cleanly are still alive
    /// (naming them, and the way out), so a run never fights over ports or dbPaths.
    pub fn lock(&self, stop_leftovers: bool) -> anyhow::Result<()> {
        if let Some(pid) = std::fs::read_to_string(self.pid_file())
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
            && pid != std::process::id()
            && cmdline(pid).is_some_and(|c| c.contains("playground"))
        {
            bail!(
                "a playground is already running from {} (pid {pid}); stop it with Ctrl-C in \
                 its terminal or `kill {pid}`, or give this one another --dir",
                self.root.display()
            );
        }
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
        std::fs::write(self.pid_file(), std::process::id().to_string())?;
        Ok(())
    }

    pub fn unlock(&self) {
        let _ = std::fs::remove_file(self.pid_file());
    }

    /// Live processes (other than this one) whose command line names this directory's
    /// dbPaths or control plane: its mongods, agents and reconciler (a `tail -f` of its
    /// logs is not one of them).
    pub fn leftovers(&self) -> Vec<(u32, String)> {
        let me = std::process::id();
        let ours = [
            format!("{}/", self.root.join("db").display()),
            self.control().display().to_string(),
        ];
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if pid == me {
                continue;
            }
            if let Some(c) = cmdline(pid)
                && ours.iter().any(|o| c.contains(o.as_str()))
                && !c.contains(" playground")
            {
                let short: String = c.chars().take(120).collect();
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
        hosts: &[String],
        cron: &str,
    ) -> anyhow::Result<bool> {
        if dir.exists() {
            return Ok(false);
        }
        std::fs::create_dir_all(dir)?;
        let members: String = hosts.iter().map(|h| format!("        - {h}\n")).collect();
        std::fs::write(
            dir.join("cluster.yaml"),
            format!(
                "# The replica set the playground started (tidemark playground).\n\
                 apiVersion: tidemark/v1\nkind: Cluster\nmetadata:\n  name: {CLUSTER}\nspec:\n  \
                 replicaSets:\n    - name: {REPLICA_SET}\n      members:\n{members}"
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
                 apiVersion: tidemark/v1\nkind: BackupSchedule\nmetadata:\n  name: often\nspec:\n  \
                 cluster: {CLUSTER}\n  storage: local\n  type: physical\n  cron: \"{cron}\"\n  \
                 rpo: 10m\n  retention:\n    keepLast: 5\n"
            ),
        )?;
        Ok(true)
    }
}

/// A process's command line with spaces between arguments, if it is alive.
pub fn cmdline(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if raw.is_empty() {
        return None; // a zombie or a kernel thread
    }
    Some(
        raw.split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).to_string())
            .collect::<Vec<_>>()
            .join(" "),
    )
}
