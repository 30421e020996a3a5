//! The desired-state source seam: what a source yields, how it signals change, its errors.

use std::sync::mpsc;
use std::time::Duration;

use tidemark_schema::validate::SourceFile;

/// One revision of the desired state: an id (content hash or commit SHA) and its files,
/// paths relative to the source root, sorted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revision {
    pub id: String,
    pub files: Vec<SourceFile>,
    /// Why this revision must not be applied whatever its files say (a commit that is
    /// not signed by an allowed signer); its files are then not read.
    pub refused: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("policy directory {path}: {source}")]
    Dir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("policy directory {path} does not exist")]
    DirMissing { path: String },
    #[error("cannot watch {path}: {message}")]
    Watch { path: String, message: String },
    #[error("git repository {url}: {message}")]
    Git { url: String, message: String },
    #[error("git repository {url}: ref {reference:?} not found (known: {known})")]
    RefNotFound {
        url: String,
        reference: String,
        known: String,
    },
    #[error("git repository {url}: path {path:?} not found in commit {commit}")]
    PathNotFound {
        url: String,
        path: String,
        commit: String,
    },
    #[error("git repository {url}: commit {commit} is broken: {message}")]
    BrokenCommit {
        url: String,
        commit: String,
        message: String,
    },
}

/// A stream of "something may have changed" signals. Keep it alive while watching: it owns
/// the watcher or the poll timer.
pub struct Changes {
    pub(crate) rx: mpsc::Receiver<()>,
    pub(crate) _guard: Box<dyn Send>,
}

impl Changes {
    /// Waits up to `timeout` for a change; true if one came. Bursts are folded into one.
    pub fn wait(&self, timeout: Duration) -> bool {
        match self.rx.recv_timeout(timeout) {
            Ok(()) => {
                while self.rx.try_recv().is_ok() {}
                true
            }
            Err(_) => false,
        }
    }
}

/// Where desired state comes from. Loading is blocking I/O (file reads, git fetches); async
/// callers run it on a blocking thread.
pub trait DesiredStateSource: Send {
    /// A human-readable name for messages: the directory or the git URL and ref.
    fn describe(&self) -> String;

    /// Reads the current revision (fetching first, for git).
    fn load(&mut self) -> Result<Revision, SourceError>;

    /// Starts watching; the returned stream signals when `load` may return a new revision.
    fn changes(&self) -> Result<Changes, SourceError>;
}

/// Whether a relative path is a policy file: `*.yaml`/`*.yml` with no hidden component.
pub(crate) fn is_policy_path(relative: &str) -> bool {
    let hidden = relative.split('/').any(|part| part.starts_with('.'));
    !hidden && (relative.ends_with(".yaml") || relative.ends_with(".yml"))
}

/// A boxed source is a source, so callers can pick one at run time.
impl<S: DesiredStateSource + ?Sized> DesiredStateSource for Box<S> {
    fn describe(&self) -> String {
        (**self).describe()
    }
    fn load(&mut self) -> Result<Revision, SourceError> {
        (**self).load()
    }
    fn changes(&self) -> Result<Changes, SourceError> {
        (**self).changes()
    }
}
