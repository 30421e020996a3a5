//! `reconcile --git … --verify-commits --allowed-signers FILE`: a policy repository with a
//! signed commit, then an unsigned one. Only the signed one is applied; `status` and
//! `diff` say which revision was refused and why.

#[path = "support/rig.rs"]
mod rig;
#[path = "support/world.rs"]
mod world;

use std::process::Command;

use tidemark_testkit::ssh_key::{Algorithm, PrivateKey, rand_core::OsRng};
use world::*;

#[test]
fn only_signed_commits_are_applied_and_status_and_diff_say_why() {
    let mut w = World::new_git("signedgit");
    let key = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).unwrap();
    let allowed = w.rig.control.path().join("allowed_signers");
    std::fs::write(
        &allowed,
        format!(
            "dba@example.invalid {}\n",
            key.public_key().to_openssh().unwrap()
        ),
    )
    .unwrap();
    let verify = [
        "--verify-commits",
        "--allowed-signers",
        allowed.to_str().unwrap(),
    ];
    w.reconciler_args = verify.iter().map(|s| s.to_string()).collect();

    // The policies as they stand, committed again with a signature: applied.
    let signed = w.commit_signed("signed: cluster and storage", &key);
    assert_eq!(w.reconcile_once("once-1.log", &[]), 0);
    let (status, _) = w.status();
    assert_eq!(status["revisions"]["applied"]["revision"], signed.as_str());

    // An unsigned commit that asks for a backup: refused, the signed revision stays, and
    // no backup is started.
    w.backup_yaml("sneaky", "physical");
    let unsigned = w.commit("unsigned: a backup");
    w.reconcile_once("once-2.log", &[]);
    let (status, _) = w.status();
    assert_eq!(status["revisions"]["applied"]["revision"], signed.as_str());
    let attempted = &status["revisions"]["attempted"];
    assert_eq!(attempted["revision"], unsigned.as_str(), "{status:#}");
    let why = attempted["errors"][0].as_str().unwrap_or_default();
    assert!(
        why.contains(&format!("commit {} is not signed", &unsigned[..12])),
        "{status:#}"
    );
    // Planned shows as a ledger record, or a wait for an agent (none runs here).
    let planned = |w: &World| {
        w.control_json("ledger/oneshots/backup/sneaky.json")
            .is_some()
            || w.control_json("ledger/waiting/backup/sneaky.json")
                .is_some()
    };
    assert!(!planned(&w), "the unsigned commit's backup was planned");
    let text = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["status", "--control", &w.rig.control_url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!("attempted revision {unsigned} was refused")),
        "{text}"
    );

    // `diff` checks the same and says so.
    let Source::Git { bare, cache, .. } = &w.source else {
        unreachable!()
    };
    let diff = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .arg("diff")
        .arg("--git")
        .arg(bare.path())
        .args(["--ref", "main", "--cache-dir"])
        .arg(cache.path())
        .args(verify)
        .args(["--control", &w.rig.control_url])
        .output()
        .unwrap();
    assert_eq!(diff.status.code(), Some(1));
    let err = String::from_utf8_lossy(&diff.stderr);
    assert!(err.contains("is refused"), "{err}");
    assert!(err.contains("is not signed"), "{err}");

    // Signed again: applied, and the backup runs from it.
    let resigned = w.commit_signed("signed: a backup", &key);
    w.reconcile_once("once-3.log", &[]);
    let (status, _) = w.status();
    assert_eq!(
        status["revisions"]["applied"]["revision"],
        resigned.as_str()
    );
    assert!(planned(&w), "the signed commit's backup was not planned");
}
