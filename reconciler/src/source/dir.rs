//! A directory of YAML files, watched with notify; the revision id is a content hash.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_full::new_debouncer;
use sha2::{Digest, Sha256};
use tidemark_schema::validate::SourceFile;

use super::seam::{Changes, DesiredStateSource, Revision, SourceError, is_policy_path};

pub struct DirSource {
    root: PathBuf,
    debounce: Duration,
}

impl DirSource {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DirSource {
            root: root.into(),
            debounce: Duration::from_millis(300),
        }
    }

    /// How long a burst of file events is folded into one change (editors write in steps).
    pub fn with_debounce(mut self, debounce: Duration) -> Self {
        self.debounce = debounce;
        self
    }

    fn io_err(&self, source: std::io::Error) -> SourceError {
        SourceError::Dir {
            path: self.root.display().to_string(),
            source,
        }
    }
}

/// Collects policy files below `root`, skipping hidden files and directories, sorted.
fn collect(root: &Path, dir: &Path, out: &mut Vec<SourceFile>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        // Follow symlinks the way an operator expects a checkout to behave.
        let meta = std::fs::metadata(&path)?;
        if meta.is_dir() {
            collect(root, &path, out)?;
        } else if meta.is_file() {
            let relative = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .replace('\\', "/");
            if is_policy_path(&relative) {
                out.push(SourceFile {
                    bytes: std::fs::read(&path)?,
                    path: relative,
                });
            }
        }
    }
    Ok(())
}

/// The content hash that serves as a directory's revision id.
pub(crate) fn content_hash(files: &[SourceFile]) -> String {
    let mut h = Sha256::new();
    for f in files {
        h.update((f.path.len() as u64).to_le_bytes());
        h.update(f.path.as_bytes());
        h.update((f.bytes.len() as u64).to_le_bytes());
        h.update(&f.bytes);
    }
    let digest = h.finalize();
    format!(
        "sha256:{}",
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

impl DesiredStateSource for DirSource {
    fn describe(&self) -> String {
        format!("directory {}", self.root.display())
    }

    fn load(&mut self) -> Result<Revision, SourceError> {
        if !self.root.is_dir() {
            return Err(SourceError::DirMissing {
                path: self.root.display().to_string(),
            });
        }
        let mut files = Vec::new();
        collect(&self.root, &self.root, &mut files).map_err(|e| self.io_err(e))?;
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Revision {
            refused: None,
            id: content_hash(&files),
            files,
        })
    }

    fn changes(&self) -> Result<Changes, SourceError> {
        let (tx, rx) = mpsc::channel();
        let watch_err = |e: notify::Error| SourceError::Watch {
            path: self.root.display().to_string(),
            message: e.to_string(),
        };
        let mut debouncer = new_debouncer(self.debounce, None, move |result| {
            if let Ok(events) = result {
                let events: Vec<notify_debouncer_full::DebouncedEvent> = events;
                // Reading the files (every pass does) raises open/close events: those are
                // not changes, and signalling them would make passes feed themselves.
                if events
                    .iter()
                    .any(|e| !matches!(e.event.kind, notify::EventKind::Access(_)))
                {
                    let _ = tx.send(());
                }
            }
        })
        .map_err(watch_err)?;
        debouncer
            .watch(&self.root, RecursiveMode::Recursive)
            .map_err(watch_err)?;
        Ok(Changes {
            rx,
            _guard: Box::new(debouncer),
        })
    }
}
