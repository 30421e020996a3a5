//! Agents act only on what the reconciler signed: real agents on a mongod-sim replica
//! set, ops written into the control plane by hand as a writer of the bucket would, and
//! `tidemark status` reading what the agents reported.

#[path = "support/rig.rs"]
mod rig;

use std::process::Command;
use std::time::{Duration, Instant};

use tidemark_schema::control::signature::Signer;
use tidemark_schema::control::{Phase, op_key};
use tidemark_schema::model::Compression;

use rig::*;

fn status_json(rig: &Rig) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["status", "-o", "json", "--control", &rig.control_url])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)))
}

fn status_text(rig: &Rig) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["status", "--control", &rig.control_url])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until every agent's heartbeat reports `refused` refusals, the last one at `key`.
fn wait_refusals(rig: &Rig, refused: u64, key: &str) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let status = status_json(rig);
        let agents = status["agents"].as_array().cloned().unwrap_or_default();
        let all = agents.len() == rig.agents.len()
            && agents.iter().all(|a| {
                a["trust"]["refusedCount"] == refused && a["trust"]["lastRefused"]["key"] == key
            });
        if all {
            return status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "agents did not report {refused} refusals ending with {key}: {:#}",
            status["agents"]
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn an_op_written_by_a_bucket_writer_or_edited_after_signing_is_refused_and_no_node_stops() {
    let mut rig = Rig::new("trust", 3, &[]);
    rig.insert(0..20);
    for i in 0..3 {
        rig.start_agent(i);
    }
    // A signed backup runs: the agents trust the reconciler's key.
    rig.backup("b1", 0, Compression::Zstd);
    rig.insert(20..30);

    // An attacker with write access to the bucket writes a restore without fallback for
    // every node, as the reconciler would but unsigned.
    let command = rig.restore_command("b1", false);
    let forged = rig.new_op(command, &[0, 1, 2]);
    let key = op_key(&forged.id);
    rig.write_record(&key, &serde_json::to_value(&forged).unwrap());
    for i in 0..3 {
        let r = rig.wait_final(&forged.id, i);
        assert_eq!(r.phase, Phase::Error);
        assert!(r.message.contains("carries no signature"), "{}", r.message);
        assert!(
            rig.report(&forged.id, i, "stop").is_none(),
            "node {i} stopped"
        );
    }
    let status = wait_refusals(&rig, 1, &key);
    assert!(
        status["agents"][0]["trust"]["lastRefused"]["reason"]
            .as_str()
            .unwrap()
            .contains("no signature"),
        "{:#}",
        status["agents"][0]
    );
    let text = status_text(&rig);
    assert!(
        text.contains(&format!("REFUSED 1 untrusted record(s); the last, {key}")),
        "{text}"
    );

    // A signed backup whose command was then edited into a restore.
    let command = rig.backup_command("b2", Compression::Zstd);
    let mut edited = rig.new_op(command, &[0, 1, 2]);
    let key2 = op_key(&edited.id);
    let seal = tidemark_testkit::test_keys().signer.seal(&key2, &edited);
    edited.command = forged.command.clone();
    let mut tampered = serde_json::to_value(&edited).unwrap();
    tampered["signature"] = seal["signature"].clone();
    rig.write_record(&key2, &tampered);
    for i in 0..3 {
        let r = rig.wait_final(&edited.id, i);
        assert!(
            r.message.contains("does not match its content"),
            "{}",
            r.message
        );
        assert!(
            rig.report(&edited.id, i, "stop").is_none(),
            "node {i} stopped"
        );
    }
    wait_refusals(&rig, 2, &key2);

    // Every node kept running with all its documents: each still answers.
    for i in 0..3 {
        let ping = rig
            .rs
            .process(i)
            .unwrap()
            .command("admin", bson::doc! {"ping": 1});
        assert!(ping.is_ok(), "node {i} still runs: {ping:?}");
    }
    let p = rig.primary();
    assert_eq!(rig.ids_on(p), (0..30).collect::<Vec<_>>());
}

#[test]
fn trusted_keys_rotate_without_restarting_the_agent() {
    let mut rig = Rig::new("rotate", 1, &[]);
    rig.insert(0..5);
    let (old, new) = (Signer::generate(), Signer::generate());
    let file = rig.control.path().join("rotation.pub");
    let both = format!(
        "{}\n{}\n",
        old.public_openssh("old"),
        new.public_openssh("new")
    );
    std::fs::write(&file, both).unwrap();
    rig.start_agent_with(0, &["--trusted-keys", file.to_str().unwrap()]);
    let signed_by = |rig: &mut Rig, signer: &Signer, name: &str| {
        let command = rig.backup_command(name, Compression::Zstd);
        let op = rig.new_op(command, &[0]);
        let key = op_key(&op.id);
        rig.write_record(&key, &signer.seal(&key, &op));
        op.id
    };
    // Both keys trusted: each one's backup runs.
    let a = signed_by(&mut rig, &old, "by-old");
    rig.wait_done(&a, 0);
    let b = signed_by(&mut rig, &new, "by-new");
    rig.wait_done(&b, 0);

    // The old key is retired: the file is replaced as a deploy tool would (a new file
    // renamed over the old one). The same agent process refuses the old key now.
    let next = rig.control.path().join("rotation.pub.next");
    std::fs::write(&next, format!("{}\n", new.public_openssh("new"))).unwrap();
    std::fs::rename(&next, &file).unwrap();
    let c = signed_by(&mut rig, &old, "by-old-again");
    let r = rig.wait_final(&c, 0);
    assert_eq!(r.phase, Phase::Error);
    assert!(
        r.message.contains(&format!(
            "signed by key {}, which is not a trusted key here",
            old.fingerprint()
        )),
        "{}",
        r.message
    );
    let d = signed_by(&mut rig, &new, "by-new-again");
    rig.wait_done(&d, 0);
    assert!(
        rig.agents[0]
            .as_mut()
            .unwrap()
            .try_wait()
            .unwrap()
            .is_none(),
        "same agent process"
    );
}

#[test]
fn an_agent_without_trusted_keys_does_not_start_and_says_how() {
    let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args([
            "agent",
            "--control",
            "/nonexistent",
            "--cluster",
            "c",
            "--mongod-uri",
            "mongodb://127.0.0.1:1/",
            "--dbpath",
            "/nonexistent",
            "--mongod-bin",
            "/bin/false",
        ])
        .env_remove("TIDEMARK_TRUSTED_KEYS")
        .env_remove("TIDEMARK_INSECURE_ACCEPT_UNSIGNED")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("give --trusted-keys FILE"), "{err}");
    assert!(err.contains("--insecure-accept-unsigned"), "{err}");

    // A key file with a bad line: the file and the line are named.
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.pub");
    std::fs::write(&keys, "# ops signer\nssh-ed25519 not-base64 x\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["agent", "--control"])
        .arg(dir.path())
        .args(["--cluster", "c", "--mongod-uri", "mongodb://127.0.0.1:1/"])
        .args(["--dbpath", "/nonexistent", "--mongod-bin", "/bin/false"])
        .args(["--node-id", "h:1", "--replica-set", "rs0", "--trusted-keys"])
        .arg(&keys)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("keys.pub: line 2:"), "{err}");
}
