//! A git repository, cloned bare into a cache directory and fetched on an interval; the
//! revision id is the commit SHA. Files are read straight from the commit's tree, so no
//! work tree can drift from what was committed.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use git2::{FetchOptions, ObjectType, RemoteCallbacks, Repository, TreeWalkMode, TreeWalkResult};
use sha2::{Digest, Sha256};
use tidemark_schema::validate::SourceFile;

use super::seam::{Changes, DesiredStateSource, Revision, SourceError, is_policy_path};

#[derive(Clone, Debug)]
pub struct GitOptions {
    /// https, ssh, `file://` URL, or a local path.
    pub url: String,
    /// Branch, tag or commit; the remote's default branch when `None`.
    pub reference: Option<String>,
    /// Subdirectory of the repository holding the policies.
    pub path: Option<String>,
    /// How often to fetch.
    pub interval: Duration,
    /// Where clones are cached.
    pub cache_dir: PathBuf,
    /// `--verify-commits --allowed-signers FILE`: only commits signed by a key of FILE
    /// are applied. The file is read at every load, so a new signer needs no restart.
    pub allowed_signers: Option<PathBuf>,
}

pub struct GitSource {
    options: GitOptions,
    url: String,
    /// With `--verify-commits`: the last tip that verified, which every later tip must
    /// descend from (a ref moved back to an older signed commit is a rollback, refused),
    /// and the last verdict, logged only when it changes.
    verified: Option<git2::Oid>,
    last_verdict: Option<(git2::Oid, Result<String, String>)>,
}

impl GitSource {
    /// Checks the URL's form; nothing is fetched until `load`.
    pub fn new(options: GitOptions) -> Result<Self, SourceError> {
        let url = normalize_url(&options.url)?;
        Ok(GitSource {
            options,
            url,
            verified: None,
            last_verdict: None,
        })
    }

    fn err(&self, e: impl std::fmt::Display) -> SourceError {
        SourceError::Git {
            url: self.options.url.clone(),
            message: e.to_string(),
        }
    }

    fn repo_dir(&self) -> PathBuf {
        let digest = Sha256::digest(self.url.as_bytes());
        let id: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        self.options.cache_dir.join("git").join(id)
    }

    fn open_or_init(&self) -> Result<Repository, SourceError> {
        let dir = self.repo_dir();
        if dir.join("HEAD").exists() {
            return Repository::open_bare(&dir).map_err(|e| self.err(e));
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| self.err(format!("cache {}: {e}", dir.display())))?;
        Repository::init_bare(&dir).map_err(|e| self.err(e))
    }

    /// Fetches branches and tags; returns the remote's default branch if it advertises one.
    fn fetch(&self, repo: &Repository) -> Result<Option<String>, SourceError> {
        let mut remote = repo.remote_anonymous(&self.url).map_err(|e| self.err(e))?;
        let mut callbacks = RemoteCallbacks::new();
        callbacks.credentials(|url, username, allowed| {
            if allowed.contains(git2::CredentialType::SSH_KEY) {
                return git2::Cred::ssh_key_from_agent(username.unwrap_or("git"));
            }
            if allowed.contains(git2::CredentialType::USER_PASS_PLAINTEXT) {
                let config = git2::Config::open_default()?;
                return git2::Cred::credential_helper(&config, url, username);
            }
            git2::Cred::default()
        });
        let mut fetch = FetchOptions::new();
        fetch.remote_callbacks(callbacks);
        fetch.download_tags(git2::AutotagOption::All);
        remote
            .fetch(
                &[
                    "+refs/heads/*:refs/remotes/origin/*",
                    "+refs/tags/*:refs/tags/*",
                ],
                Some(&mut fetch),
                None,
            )
            .map_err(|e| self.err(e.message()))?;
        Ok(remote.default_branch().ok().and_then(|b| {
            b.as_str()
                .ok()
                .map(|s| s.trim_start_matches("refs/heads/").to_string())
        }))
    }

    fn resolve(
        &self,
        repo: &Repository,
        default_branch: Option<String>,
    ) -> Result<git2::Oid, SourceError> {
        let wanted = self
            .options
            .reference
            .clone()
            .or(default_branch)
            .unwrap_or_else(|| "main".into());
        let candidates = [
            format!("refs/remotes/origin/{wanted}"),
            format!("refs/tags/{wanted}"),
            wanted.clone(),
        ];
        for name in &candidates {
            if let Ok(obj) = repo.revparse_single(name)
                && let Ok(commit) = obj.peel_to_commit()
            {
                return Ok(commit.id());
            }
        }
        let known: Vec<String> = repo
            .references()
            .map(|refs| {
                refs.flatten()
                    .filter_map(|r| {
                        r.shorthand()
                            .ok()
                            .map(|s| s.trim_start_matches("origin/").to_string())
                    })
                    .collect()
            })
            .unwrap_or_default();
        Err(SourceError::RefNotFound {
            url: self.options.url.clone(),
            reference: wanted,
            known: if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            },
        })
    }

    /// Whether commit `oid` is signed by an allowed signer: `Ok(Ok(principals))`, or
    /// `Ok(Err(why))` for a commit that must not be applied.
    fn verify(
        &mut self,
        repo: &Repository,
        oid: git2::Oid,
        allowed: &Path,
    ) -> Result<Result<String, String>, SourceError> {
        let signers = super::signed::AllowedSigners::read(allowed).map_err(|e| self.err(e))?;
        let extracted = match repo.extract_signature(&oid, None) {
            Ok((sig, data)) => Some((sig.as_str().unwrap_or_default().to_string(), data.to_vec())),
            Err(e) if e.code() == git2::ErrorCode::NotFound => None,
            Err(e) => {
                return Err(SourceError::BrokenCommit {
                    url: self.options.url.clone(),
                    commit: oid.to_string(),
                    message: e.message().to_string(),
                });
            }
        };
        let mut verdict = signers.verify(
            &oid.to_string(),
            extracted.as_ref().map(|(s, d)| (s.as_str(), d.as_slice())),
        );
        if verdict.is_ok()
            && let Some(prev) = self.verified
            && prev != oid
        {
            match repo.graph_descendant_of(oid, prev) {
                Ok(true) => {}
                Ok(false) => {
                    verdict = Err(format!(
                        "commit {oid} does not descend from {prev}, the last signed commit this \
                         process took: a ref moved back is refused (undo a change with a new \
                         signed commit; if the history was rewritten on purpose, restart the \
                         reconcilers)"
                    ));
                }
                Err(e) => {
                    verdict = Err(format!(
                        "commit {oid}: cannot tell whether it descends from {prev}, the last \
                         signed commit this process took: {}",
                        e.message()
                    ));
                }
            }
        }
        if verdict.is_ok() {
            self.verified = Some(oid);
        }
        if self.last_verdict.as_ref() != Some(&(oid, verdict.clone())) {
            match &verdict {
                Ok(principals) => {
                    tracing::info!(commit = %oid, signer = %principals, "signed commit verified")
                }
                Err(why) => tracing::error!(commit = %oid, "{why}"),
            }
            self.last_verdict = Some((oid, verdict.clone()));
        }
        Ok(verdict)
    }

    fn read_commit(
        &self,
        repo: &Repository,
        oid: git2::Oid,
    ) -> Result<Vec<SourceFile>, SourceError> {
        let commit_id = oid.to_string();
        let broken = |e: git2::Error| SourceError::BrokenCommit {
            url: self.options.url.clone(),
            commit: commit_id.clone(),
            message: e.message().to_string(),
        };
        let commit = repo.find_commit(oid).map_err(broken)?;
        let mut tree = commit.tree().map_err(broken)?;
        let subdir = self
            .options
            .path
            .as_deref()
            .map(|p| p.trim_matches('/'))
            .filter(|p| !p.is_empty() && *p != ".");
        if let Some(sub) = subdir {
            let entry = tree
                .get_path(Path::new(sub))
                .map_err(|_| SourceError::PathNotFound {
                    url: self.options.url.clone(),
                    path: sub.to_string(),
                    commit: commit_id.clone(),
                })?;
            if entry.kind() != Some(ObjectType::Tree) {
                return Err(SourceError::PathNotFound {
                    url: self.options.url.clone(),
                    path: sub.to_string(),
                    commit: commit_id.clone(),
                });
            }
            tree = repo.find_tree(entry.id()).map_err(broken)?;
        }
        let mut blobs = Vec::new();
        tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
            let name = entry.name().unwrap_or_default();
            if name.starts_with('.') {
                return TreeWalkResult::Skip;
            }
            if entry.kind() == Some(ObjectType::Blob) {
                let relative = format!("{dir}{name}");
                if is_policy_path(&relative) {
                    blobs.push((relative, entry.id()));
                }
            }
            TreeWalkResult::Ok
        })
        .map_err(broken)?;
        let mut files = Vec::with_capacity(blobs.len());
        for (path, id) in blobs {
            let blob = repo.find_blob(id).map_err(|e| SourceError::BrokenCommit {
                url: self.options.url.clone(),
                commit: commit_id.clone(),
                message: format!("{path}: {}", e.message()),
            })?;
            files.push(SourceFile {
                path,
                bytes: blob.content().to_vec(),
            });
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }
}

/// Accepts https, ssh (`ssh://` or `user@host:path`), `file://` and local paths; a local
/// path becomes an absolute `file://` URL so the cache key does not depend on the cwd.
fn normalize_url(url: &str) -> Result<String, SourceError> {
    let bad = |message: String| SourceError::Git {
        url: url.to_string(),
        message,
    };
    if url.is_empty() {
        return Err(bad("the URL is empty".into()));
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        return match scheme {
            "https" | "http" | "ssh" | "git" if !rest.is_empty() => Ok(url.to_string()),
            "file" => Ok(url.to_string()),
            other => Err(bad(format!(
                "the scheme {other:?} is not supported; use https://, ssh://, file:// or a local path"
            ))),
        };
    }
    let path = Path::new(url);
    if path.exists() {
        let absolute = std::fs::canonicalize(path).map_err(|e| bad(e.to_string()))?;
        return Ok(format!("file://{}", absolute.display()));
    }
    // scp-like ssh syntax: git@host:org/repo.git
    if let Some((host, _)) = url.split_once(':')
        && host.contains('@')
    {
        return Ok(url.to_string());
    }
    Err(bad(
        "not a URL (https://, ssh://, file://) and no such local path".into(),
    ))
}

impl DesiredStateSource for GitSource {
    fn describe(&self) -> String {
        let mut d = format!("git {}", self.options.url);
        if let Some(r) = &self.options.reference {
            d.push_str(&format!(" ref {r}"));
        }
        if let Some(p) = &self.options.path {
            d.push_str(&format!(" path {p}"));
        }
        d
    }

    fn load(&mut self) -> Result<Revision, SourceError> {
        let repo = self.open_or_init()?;
        let default_branch = self.fetch(&repo)?;
        let oid = self.resolve(&repo, default_branch)?;
        if let Some(path) = self.options.allowed_signers.clone()
            && let Err(why) = self.verify(&repo, oid, &path)?
        {
            return Ok(Revision {
                id: oid.to_string(),
                files: Vec::new(),
                refused: Some(why),
            });
        }
        let files = self.read_commit(&repo, oid)?;
        Ok(Revision {
            id: oid.to_string(),
            files,
            refused: None,
        })
    }

    fn changes(&self) -> Result<Changes, SourceError> {
        // Git has no push notification we can rely on; poll on the interval. The thread
        // ends when the receiver (and so the `Changes`) is dropped.
        let (tx, rx) = mpsc::channel();
        let interval = self.options.interval;
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(interval);
                if tx.send(()).is_err() {
                    return;
                }
            }
        });
        Ok(Changes {
            rx,
            _guard: Box::new(()),
        })
    }
}
