//! A policy repository as a DBA keeps one: a work tree committed and pushed to a bare
//! repository that the reconciler clones and fetches, as it would from a git server.

use std::path::Path;

/// Commits the whole work tree of `repo` on `main` and pushes it to `bare`; returns the
/// commit id.
pub fn commit_and_push(repo: &git2::Repository, bare: &Path, message: &str) -> String {
    let mut index = repo.index().unwrap();
    index
        .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
        .unwrap();
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("dba", "dba@example.invalid").unwrap();
    let parent = repo
        .find_reference("refs/heads/main")
        .ok()
        .and_then(|r| r.peel_to_commit().ok());
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    let commit = repo
        .commit(
            Some("refs/heads/main"),
            &sig,
            &sig,
            message,
            &tree,
            &parents,
        )
        .unwrap();
    let mut remote = repo
        .remote_anonymous(&format!("file://{}", bare.display()))
        .unwrap();
    remote
        .push(&["+refs/heads/main:refs/heads/main"], None)
        .unwrap();
    commit.to_string()
}
