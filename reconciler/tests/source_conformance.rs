//! One conformance suite for the desired-state source seam, run against every source:
//! a real directory watched with notify, and a real bare git repository behind a file://
//! URL. Each implementation gets a fixture that can publish a new set of files.

use std::path::{Path, PathBuf};
use std::time::Duration;

use git2::{Repository, Signature};
use tempfile::TempDir;
use tidemark_reconciler::source::{
    DesiredStateSource, DirSource, Follower, GitOptions, GitSource, PollOutcome, SourceError,
};

const CLUSTER: &str = "apiVersion: tidemark/v1\nkind: Cluster\nmetadata:\n  name: prod\nspec:\n  replicaSets:\n    - name: rs0\n      members: [\"db1:27017\"]\n";
const STORAGE: &str =
    "apiVersion: tidemark/v1\nkind: BackupStorage\nmetadata:\n  name: s3\nspec:\n  url: s3://b/p\n";

/// A place that can publish revisions and a source that reads them.
trait Fixture {
    /// Replaces the whole content with these files (path relative to the policy root).
    fn publish(&mut self, files: &[(&str, &str)]);
    fn source(&self) -> Box<dyn DesiredStateSource>;
    fn name(&self) -> &'static str;
}

struct DirFixture {
    dir: TempDir,
}

impl Fixture for DirFixture {
    fn publish(&mut self, files: &[(&str, &str)]) {
        for entry in std::fs::read_dir(self.dir.path()).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                std::fs::remove_dir_all(&p).unwrap();
            } else {
                std::fs::remove_file(&p).unwrap();
            }
        }
        for (path, text) in files {
            let full = self.dir.path().join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, text).unwrap();
        }
    }
    fn source(&self) -> Box<dyn DesiredStateSource> {
        Box::new(DirSource::new(self.dir.path()).with_debounce(Duration::from_millis(100)))
    }
    fn name(&self) -> &'static str {
        "dir"
    }
}

/// A bare repository; commits are written straight into it, as a push would.
struct GitFixture {
    bare: TempDir,
    cache: TempDir,
    subdir: &'static str,
}

impl GitFixture {
    fn new(subdir: &'static str) -> Self {
        let bare = TempDir::new().unwrap();
        Repository::init_bare(bare.path()).unwrap();
        GitFixture {
            bare,
            cache: TempDir::new().unwrap(),
            subdir,
        }
    }
    fn url(&self) -> String {
        format!("file://{}", self.bare.path().display())
    }
}

/// Writes a tree holding `files` (paths relative to this tree) and returns its id.
fn write_tree(repo: &Repository, files: &[(String, Vec<u8>)]) -> git2::Oid {
    let mut builder = repo.treebuilder(None).unwrap();
    let mut subdirs: std::collections::BTreeMap<String, Vec<(String, Vec<u8>)>> =
        Default::default();
    for (path, bytes) in files {
        match path.split_once('/') {
            Some((dir, rest)) => subdirs
                .entry(dir.to_string())
                .or_default()
                .push((rest.to_string(), bytes.clone())),
            None => {
                let blob = repo.blob(bytes).unwrap();
                builder.insert(path, blob, 0o100644).unwrap();
            }
        }
    }
    for (dir, entries) in subdirs {
        let sub = write_tree(repo, &entries);
        builder.insert(&dir, sub, 0o040000).unwrap();
    }
    builder.write().unwrap()
}

/// Commits `files` as the whole tree of `branch` in a bare repository.
fn commit(repo_path: &Path, branch: &str, files: &[(String, Vec<u8>)], message: &str) -> git2::Oid {
    let repo = Repository::open_bare(repo_path).unwrap();
    let tree = repo.find_tree(write_tree(&repo, files)).unwrap();
    let sig = Signature::now("test", "test@example.invalid").unwrap();
    let refname = format!("refs/heads/{branch}");
    let parent = repo
        .find_reference(&refname)
        .ok()
        .and_then(|r| r.peel_to_commit().ok());
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    let oid = repo
        .commit(Some(&refname), &sig, &sig, message, &tree, &parents)
        .unwrap();
    repo.set_head(&refname).unwrap();
    oid
}

impl Fixture for GitFixture {
    fn publish(&mut self, files: &[(&str, &str)]) {
        let prefix = if self.subdir.is_empty() {
            String::new()
        } else {
            format!("{}/", self.subdir)
        };
        let mut all: Vec<(String, Vec<u8>)> = files
            .iter()
            .map(|(p, t)| (format!("{prefix}{p}"), t.as_bytes().to_vec()))
            .collect();
        // Something outside the policy path, which the source must not read.
        all.push(("README.md".into(), b"not policy".to_vec()));
        commit(self.bare.path(), "main", &all, "publish");
    }
    fn source(&self) -> Box<dyn DesiredStateSource> {
        Box::new(
            GitSource::new(GitOptions {
                url: self.url(),
                reference: Some("main".into()),
                path: (!self.subdir.is_empty()).then(|| self.subdir.to_string()),
                interval: Duration::from_millis(100),
                cache_dir: self.cache.path().to_path_buf(),
                allowed_signers: None,
            })
            .unwrap(),
        )
    }
    fn name(&self) -> &'static str {
        "git"
    }
}

fn fixtures() -> Vec<Box<dyn Fixture>> {
    vec![
        Box::new(DirFixture {
            dir: TempDir::new().unwrap(),
        }),
        Box::new(GitFixture::new("")),
        Box::new(GitFixture::new("policies/prod")),
    ]
}

#[test]
fn reads_policy_files_only_sorted_and_skips_hidden() {
    for mut f in fixtures() {
        f.publish(&[
            ("b/storage.yml", STORAGE),
            ("a-cluster.yaml", CLUSTER),
            (".hidden.yaml", "garbage: ["),
            (".git-crypt/keys.yaml", "garbage: ["),
            ("notes.txt", "not yaml"),
        ]);
        let rev = f.source().load().unwrap();
        let paths: Vec<&str> = rev.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["a-cluster.yaml", "b/storage.yml"], "{}", f.name());
        assert_eq!(rev.files[0].bytes, CLUSTER.as_bytes(), "{}", f.name());
    }
}

#[test]
fn revision_id_follows_content() {
    for mut f in fixtures() {
        f.publish(&[("c.yaml", CLUSTER)]);
        let mut source = f.source();
        let first = source.load().unwrap().id;
        assert_eq!(source.load().unwrap().id, first, "{}: stable", f.name());
        f.publish(&[("c.yaml", CLUSTER), ("s.yaml", STORAGE)]);
        let second = source.load().unwrap().id;
        assert_ne!(second, first, "{}: changes with content", f.name());
    }
}

#[test]
fn signals_changes() {
    for mut f in fixtures() {
        f.publish(&[("c.yaml", CLUSTER)]);
        let source = f.source();
        let changes = source.changes().unwrap();
        // Let the watcher settle, then change a file: a real notify event (or a git poll).
        std::thread::sleep(Duration::from_millis(200));
        f.publish(&[("c.yaml", CLUSTER), ("s.yaml", STORAGE)]);
        assert!(
            changes.wait(Duration::from_secs(10)),
            "{}: no change signalled",
            f.name()
        );
    }
}

#[test]
fn reading_the_directory_is_not_a_change() {
    // Every pass reads every file; if a read counted as a change, each pass would start the
    // next one at once, forever.
    let mut f = DirFixture {
        dir: TempDir::new().unwrap(),
    };
    f.publish(&[("c.yaml", CLUSTER), ("s.yaml", STORAGE)]);
    let mut source = f.source();
    let changes = source.changes().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..3 {
        source.load().unwrap();
        assert!(
            !changes.wait(Duration::from_millis(400)),
            "reading the files was signalled as a change"
        );
    }
    f.publish(&[("c.yaml", CLUSTER)]);
    assert!(changes.wait(Duration::from_secs(10)), "a real change is");
}

#[test]
fn an_invalid_revision_keeps_the_last_good_one_in_force() {
    for mut f in fixtures() {
        f.publish(&[("c.yaml", CLUSTER), ("s.yaml", STORAGE)]);
        let mut follower = Follower::new(f.source());
        let good = match follower.poll() {
            PollOutcome::Applied { revision } => revision,
            other => panic!("{}: {other:?}", f.name()),
        };
        assert!(
            matches!(follower.poll(), PollOutcome::Unchanged),
            "{}",
            f.name()
        );
        // A commit that breaks validation: an unknown field.
        f.publish(&[
            ("c.yaml", &CLUSTER.replace("replicaSets", "replicaSet")),
            ("s.yaml", STORAGE),
        ]);
        match follower.poll() {
            PollOutcome::Rejected { revision, errors } => {
                assert_ne!(revision, good);
                assert!(
                    errors[0].to_string().contains("c.yaml:6:"),
                    "{}: {errors:?}",
                    f.name()
                );
            }
            other => panic!("{}: {other:?}", f.name()),
        }
        let (in_force, state) = follower.current().unwrap();
        assert_eq!(in_force, good, "{}: last good revision stays", f.name());
        assert_eq!(state.documents.len(), 2);
        // Fixing it applies the fix.
        f.publish(&[("c.yaml", CLUSTER)]);
        assert!(
            matches!(follower.poll(), PollOutcome::Applied { .. }),
            "{}",
            f.name()
        );
        assert_eq!(follower.current().unwrap().1.documents.len(), 1);
    }
}

#[test]
fn git_source_follows_new_commits_and_reports_the_sha() {
    let mut f = GitFixture::new("");
    f.publish(&[("c.yaml", CLUSTER)]);
    let mut source = f.source();
    let head = Repository::open_bare(f.bare.path())
        .unwrap()
        .refname_to_id("refs/heads/main")
        .unwrap();
    assert_eq!(source.load().unwrap().id, head.to_string());
    f.publish(&[("c.yaml", CLUSTER), ("s.yaml", STORAGE)]);
    let head2 = Repository::open_bare(f.bare.path())
        .unwrap()
        .refname_to_id("refs/heads/main")
        .unwrap();
    let rev = source.load().unwrap();
    assert_eq!(rev.id, head2.to_string());
    assert_eq!(rev.files.len(), 2);
}

#[test]
fn git_errors_are_clear() {
    let f = GitFixture::new("");
    commit(
        f.bare.path(),
        "main",
        &[("c.yaml".into(), CLUSTER.as_bytes().to_vec())],
        "one",
    );
    let opts = |url: String, reference: Option<&str>, path: Option<&str>| GitOptions {
        url,
        reference: reference.map(str::to_string),
        path: path.map(str::to_string),
        interval: Duration::from_secs(60),
        cache_dir: f.cache.path().to_path_buf(),
        allowed_signers: None,
    };
    let err = GitSource::new(opts(f.url(), Some("release-9"), None))
        .unwrap()
        .load()
        .unwrap_err();
    assert!(matches!(err, SourceError::RefNotFound { .. }), "{err}");
    assert!(
        err.to_string().contains("ref \"release-9\" not found"),
        "{err}"
    );
    assert!(err.to_string().contains("main"), "lists known refs: {err}");

    let err = GitSource::new(opts(f.url(), None, Some("nope")))
        .unwrap()
        .load()
        .unwrap_err();
    assert!(err.to_string().contains("path \"nope\" not found"), "{err}");

    let err = GitSource::new(opts("ftp://example.invalid/repo".into(), None, None))
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("scheme \"ftp\" is not supported"),
        "{err}"
    );

    let missing = PathBuf::from(f.bare.path()).join("no-such-repo");
    let err = GitSource::new(opts(format!("file://{}", missing.display()), None, None))
        .unwrap()
        .load()
        .unwrap_err();
    assert!(
        err.to_string().contains("no-such-repo"),
        "names the URL: {err}"
    );
}

#[test]
fn a_broken_commit_is_reported_not_applied() {
    let mut f = GitFixture::new("");
    f.publish(&[("c.yaml", CLUSTER)]);
    let mut follower = Follower::new(f.source());
    assert!(matches!(follower.poll(), PollOutcome::Applied { .. }));
    // A new commit whose policy blob is missing from the object database.
    let oid = commit(
        f.bare.path(),
        "main",
        &[(
            "c.yaml".into(),
            b"apiVersion: tidemark/v1\n# broken\n".to_vec(),
        )],
        "two",
    );
    let repo = Repository::open_bare(f.bare.path()).unwrap();
    let blob = repo
        .find_commit(oid)
        .unwrap()
        .tree()
        .unwrap()
        .get_name("c.yaml")
        .unwrap()
        .id();
    let hex = blob.to_string();
    std::fs::remove_file(
        f.bare
            .path()
            .join("objects")
            .join(&hex[..2])
            .join(&hex[2..]),
    )
    .unwrap();
    match follower.poll() {
        PollOutcome::SourceFailed(e) => {
            let text = e.to_string();
            assert!(text.contains("broken") || text.contains("object"), "{text}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        follower.current().unwrap().1.documents.len(),
        1,
        "last good state stays"
    );
}
