//! A policy repository as a DBA keeps one: a work tree committed and pushed to a bare
//! repository that the reconciler clones and fetches, as it would from a git server.

use std::path::Path;

/// Commits the whole work tree of `repo` on `main` and pushes it to `bare`; returns the
/// commit id.
pub fn commit_and_push(repo: &git2::Repository, bare: &Path, message: &str) -> String {
    commit_and_push_signed(repo, bare, message, None)
}

/// The same, signed with `key` as `git commit -S` with `gpg.format ssh` signs: an
/// `SSHSIG` in namespace `git` over the commit object, in its `gpgsig` header.
pub fn commit_and_push_signed(
    repo: &git2::Repository,
    bare: &Path,
    message: &str,
    key: Option<&ssh_key::PrivateKey>,
) -> String {
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
    let commit = match key {
        None => repo
            .commit(
                Some("refs/heads/main"),
                &sig,
                &sig,
                message,
                &tree,
                &parents,
            )
            .unwrap(),
        Some(key) => {
            let buffer = repo
                .commit_create_buffer(&sig, &sig, message, &tree, &parents)
                .unwrap();
            let signature = key
                .sign("git", ssh_key::HashAlg::Sha512, &buffer)
                .unwrap()
                .to_pem(ssh_key::LineEnding::LF)
                .unwrap();
            let id = repo
                .commit_signed(buffer.as_str().unwrap(), &signature, None)
                .unwrap();
            repo.reference("refs/heads/main", id, true, "signed commit")
                .unwrap();
            id
        }
    };
    let mut remote = repo
        .remote_anonymous(&format!("file://{}", bare.display()))
        .unwrap();
    remote
        .push(&["+refs/heads/main:refs/heads/main"], None)
        .unwrap();
    commit.to_string()
}
