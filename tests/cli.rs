//! End-to-end tests of the `tidemark` binary: validate, diff and schema, with their exit
//! codes and outputs, on the shipped examples and on broken input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

fn tidemark(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(args)
        .env_remove("TIDEMARK_CONTROL")
        .env("NO_COLOR", "1")
        .output()
        .expect("run tidemark")
}

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/policies")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn examples_validate_clean() {
    let out = tidemark(&["validate", examples().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("valid: 8 document(s) in 7 file(s)"));
}

#[test]
fn a_defect_exits_1_and_names_file_and_line() {
    let dir = TempDir::new().unwrap();
    copy_dir(&examples(), dir.path());
    let nightly = dir.path().join("schedules/nightly.yaml");
    let broken =
        std::fs::read_to_string(&nightly)
            .unwrap()
            .replacen("keepLast: 7", "keepLast: 0", 1);
    std::fs::write(&nightly, broken).unwrap();
    let out = tidemark(&["validate", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("schedules/nightly.yaml:21:15: BackupSchedule \"orders-nightly\": spec.retention.keepLast: keepLast must be at least 1"),
        "{err}"
    );
    let json = tidemark(&["validate", "-o", "json", dir.path().to_str().unwrap()]);
    assert_eq!(json.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["errors"][0]["line"], 21);
    assert_eq!(v["errors"][0]["field"], "spec.retention.keepLast");
}

#[test]
fn diff_against_an_empty_control_plane_lists_every_schedule() {
    let control = TempDir::new().unwrap();
    let out = tidemark(&[
        "diff",
        "--policies",
        examples().to_str().unwrap(),
        "--control",
        control.path().to_str().unwrap(),
        "--now",
        "2026-03-01T12:00:00Z",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for schedule in [
        "orders-nightly",
        "catalog-nightly",
        "orders-hourly-snapshot",
    ] {
        assert!(
            stdout.contains(&format!("+ create schedule {schedule}:")),
            "{stdout}"
        );
    }
    assert!(
        stdout.contains("next run 2026-03-02 01:00:00 UTC as orders-nightly-20260302T010000Z"),
        "{stdout}"
    );
    assert!(stdout.contains("why: new BackupSchedule"), "{stdout}");
    assert!(
        stdout.contains("+kind: BackupSchedule"),
        "document diffs: {stdout}"
    );
    assert!(!stdout.contains("\x1b["), "no colour when not a terminal");

    let json = tidemark(&[
        "diff",
        "-o",
        "json",
        "--policies",
        examples().to_str().unwrap(),
        "--control",
        control.path().to_str().unwrap(),
        "--now",
        "2026-03-01T12:00:00Z",
    ]);
    assert_eq!(json.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("diff -o json parses");
    assert_eq!(v["changes"], true);
    let steps = v["plan"]["steps"].as_array().unwrap();
    let creates: Vec<&str> = steps
        .iter()
        .filter(|s| s["action"] == "createSchedule")
        .map(|s| s["schedule"].as_str().unwrap())
        .collect();
    assert_eq!(
        creates,
        [
            "catalog-nightly",
            "orders-hourly-snapshot",
            "orders-nightly"
        ]
    );
    assert!(
        steps
            .iter()
            .all(|s| s["reason"].as_str().is_some_and(|r| !r.is_empty())),
        "a reason on every step"
    );
    assert_eq!(v["documents"].as_array().unwrap().len(), 8);
}

#[test]
fn diff_after_apply_shows_no_changes_then_an_edit() {
    let control = TempDir::new().unwrap();
    let policies = TempDir::new().unwrap();
    copy_dir(&examples(), policies.path());
    // Record the examples as applied, as the reconciler does after a successful pass.
    let revision = {
        use tidemark_reconciler::source::{DesiredStateSource, DirSource};
        DirSource::new(policies.path()).load().unwrap()
    };
    let v = tidemark_schema::validate::validate_files(&revision.files);
    let applied = v
        .state
        .to_applied(&revision.id, "2026-03-01T00:00:00Z".parse().unwrap());
    std::fs::create_dir_all(control.path().join("ledger")).unwrap();
    std::fs::write(
        control.path().join("ledger/applied.json"),
        serde_json::to_vec(&applied).unwrap(),
    )
    .unwrap();
    let diff = |now: &str| {
        tidemark(&[
            "diff",
            "--policies",
            policies.path().to_str().unwrap(),
            "--control",
            control.path().to_str().unwrap(),
            "--now",
            now,
        ])
    };
    // The restore is still blocked (no backup yet) but that is a note, not a change.
    let out = diff("2026-03-01T12:00:00Z");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("No document changes."));

    let nightly = policies.path().join("schedules/nightly.yaml");
    let edited = std::fs::read_to_string(&nightly).unwrap().replacen(
        "cron: \"0 2 * * *\"",
        "cron: \"0 3 * * *\"",
        1,
    );
    std::fs::write(&nightly, edited).unwrap();
    let out = diff("2026-03-01T12:00:00Z");
    assert_eq!(out.status.code(), Some(2));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("-  cron: 0 2 * * *\n+  cron: 0 3 * * *"),
        "{stdout}"
    );
    assert!(
        stdout.contains("~ update schedule orders-nightly: cron"),
        "{stdout}"
    );
}

#[test]
fn diff_of_an_invalid_revision_exits_1_and_keeps_the_applied_one() {
    let policies = TempDir::new().unwrap();
    std::fs::write(
        policies.path().join("bad.yaml"),
        "apiVersion: tidemark/v1\nkind: Cluster\n",
    )
    .unwrap();
    let out = tidemark(&[
        "diff",
        "--policies",
        policies.path().to_str().unwrap(),
        "--control",
        "/nonexistent/ctl",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("bad.yaml:1:1"), "{err}");
    assert!(
        err.contains("keep the last applied revision in force"),
        "{err}"
    );
}

#[test]
fn diff_reads_a_git_repository() {
    let bare = TempDir::new().unwrap();
    let work = TempDir::new().unwrap();
    let cache = TempDir::new().unwrap();
    let repo = git2::Repository::init(work.path()).unwrap();
    copy_dir(&examples(), &work.path().join("policies"));
    let mut index = repo.index().unwrap();
    index
        .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
        .unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("t", "t@example.invalid").unwrap();
    let commit = repo
        .commit(Some("refs/heads/main"), &sig, &sig, "policies", &tree, &[])
        .unwrap();
    git2::Repository::init_bare(bare.path()).unwrap();
    let mut remote = repo
        .remote_anonymous(&format!("file://{}", bare.path().display()))
        .unwrap();
    remote
        .push(&["refs/heads/main:refs/heads/main"], None)
        .unwrap();

    let out = tidemark(&[
        "diff",
        "-o",
        "json",
        "--git",
        bare.path().to_str().unwrap(),
        "--ref",
        "main",
        "--path",
        "policies",
        "--cache-dir",
        cache.path().to_str().unwrap(),
        "--control",
        "/nonexistent/ctl",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["revision"], commit.to_string());

    let out = tidemark(&[
        "diff",
        "--git",
        bare.path().to_str().unwrap(),
        "--ref",
        "nope",
        "--cache-dir",
        cache.path().to_str().unwrap(),
        "--control",
        "/x",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("ref \"nope\" not found"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn usage_errors_exit_64_and_schema_prints_the_checked_in_file() {
    assert_eq!(
        tidemark(&["diff", "--policies", "x"]).status.code(),
        Some(64)
    );
    assert_eq!(tidemark(&["frobnicate"]).status.code(), Some(64));
    let out = tidemark(&["schema"]);
    assert_eq!(out.status.code(), Some(0));
    let checked_in = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schema/json/tidemark-v1.schema.json"),
    )
    .unwrap();
    assert_eq!(text(&out.stdout), checked_in);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn an_agent_config_file_with_an_unknown_key_exits_1_naming_the_file() {
    let dir = TempDir::new().unwrap();
    let config = dir.path().join("agent.yaml");
    std::fs::write(&config, "control: /tmp/x\nclustr: prod\n").unwrap();
    let out = tidemark(&["agent", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("agent.yaml"), "{err}");
    assert!(err.contains("clustr"), "{err}");

    // A complete file but for one setting: the message says how to give it.
    std::fs::write(&config, "control: /tmp/x\ncluster: prod\n").unwrap();
    let out = tidemark(&["agent", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("give --mongod-uri (or TIDEMARK_MONGOD_URI"),
        "{}",
        text(&out.stderr)
    );
}

/// A control plane at `s3://bucket/prefix` lives under the prefix: `status` (through the
/// one control-plane opener) sees the record under `prefix/` and not one at the bucket
/// root, and a one-pass reconcile writes its lease and ledger under the prefix too.
#[test]
fn an_s3_control_plane_with_a_prefix_reads_and_writes_under_the_prefix() {
    use object_store::{ObjectStoreExt, PutPayload, path::Path as ObjectPath};
    let moto = tidemark_testkit::Moto::start();
    moto.create_bucket("ctl");
    let raw = moto.store("ctl");
    let record = |name: &str| {
        format!(
            r#"{{"name":"{name}","cluster":"c","storage":"s","type":"physical","status":"done","complete":true,"startedAt":"2026-03-01T00:00:00Z","replicaSets":[]}}"#
        )
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for (key, name) in [
            ("team-a/catalog/inside.json", "inside"),
            ("catalog/outside.json", "outside"),
        ] {
            raw.put(&ObjectPath::from(key), PutPayload::from(record(name)))
                .await
                .unwrap();
        }
    });
    let status = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["status", "-o", "json", "--control", "s3://ctl/team-a"])
        .envs(moto.env())
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&status.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&status.stderr)));
    assert_eq!(v["catalog"]["backups"], 1, "{v:#}");

    let policies = TempDir::new().unwrap();
    std::fs::write(
        policies.path().join("c.yaml"),
        "apiVersion: tidemark/v1\nkind: Cluster\nmetadata:\n  name: c\nspec:\n  replicaSets:\n    - name: rs0\n      members: [\"h:1\"]\n",
    )
    .unwrap();
    let once = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args([
            "reconcile",
            "--once",
            "--control",
            "s3://ctl/team-a",
            "--policies",
        ])
        .arg(policies.path())
        .envs(moto.env())
        .output()
        .unwrap();
    assert_eq!(
        once.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&once.stderr)
    );
    let keys: Vec<String> = rt.block_on(async {
        use futures::TryStreamExt;
        object_store::ObjectStore::list(&raw, None)
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .unwrap()
    });
    assert!(
        keys.iter().any(|k| k == "team-a/ledger/applied.json"),
        "{keys:?}"
    );
    assert!(
        keys.iter().any(|k| k.starts_with("team-a/lease/")),
        "{keys:?}"
    );
    assert!(
        keys.iter()
            .all(|k| k.starts_with("team-a/") || k == "catalog/outside.json"),
        "nothing written outside the prefix: {keys:?}"
    );
}

/// `forget-backup`: an unknown name is an error naming it; a backup a pending Restore
/// (declared, not run) needs is refused with nothing touched; otherwise its objects and
/// catalog entry go, and its once-per-name ledger record stays.
#[test]
fn forget_backup_refuses_unknown_and_pinned_backups_and_deletes_the_rest() {
    let control = TempDir::new().unwrap();
    let storage = TempDir::new().unwrap();
    let c = control.path();
    let write = |path: &Path, text: &str| {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(
        &c.join("catalog/b1.json"),
        r#"{"name":"b1","cluster":"c","storage":"local","schedule":"gone","type":"physical","status":"done","complete":true,"startedAt":"2026-03-01T00:00:00Z","replicaSets":[{"name":"rs0","node":"h:1","mongodVersion":"7.0.14-8","uncompressedBytes":5,"storedBytes":3}]}"#,
    );
    write(
        &c.join("ledger/oneshots/backup/b1.json"),
        &format!(
            r#"{{"kind":"Backup","name":"b1","opId":"x-b1","startedAt":"2026-03-01T00:00:00Z","finishedAt":"2026-03-01T00:01:00Z","status":"done","startedWith":{{"settings":{{"storage":{{"url":"file://{}","compression":"zstd"}}}}}}}}"#,
            storage.path().display()
        ),
    );
    for key in [
        "b1/rs0/files/collection-1.wt.zst",
        "b1/rs0/manifest.json",
        "b1/backup.json",
    ] {
        write(&storage.path().join(key), "{}");
    }
    let ctl = c.to_str().unwrap();

    let out = tidemark(&["forget-backup", "nope", "--control", ctl]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"nope\""));

    // A Restore of b1 declared in the applied revision and not run yet pins it.
    let yaml = "apiVersion: tidemark/v1\nkind: Cluster\nmetadata:\n  name: c\nspec:\n  replicaSets:\n    - name: rs0\n      members: [\"h:1\"]\n---\napiVersion: tidemark/v1\nkind: Restore\nmetadata:\n  name: r1\nspec:\n  cluster: c\n  source:\n    backup: b1\n";
    let v = tidemark_schema::validate::validate_files(&[tidemark_schema::validate::SourceFile {
        path: "p.yaml".into(),
        bytes: yaml.as_bytes().to_vec(),
    }]);
    assert!(v.is_valid(), "{:?}", v.errors);
    let applied = v
        .state
        .to_applied("rev1", "2026-03-02T00:00:00Z".parse().unwrap());
    write(
        &c.join("ledger/applied.json"),
        &serde_json::to_string(&applied).unwrap(),
    );
    let out = tidemark(&["forget-backup", "b1", "--control", ctl]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pending or running"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(storage.path().join("b1/backup.json").exists());
    assert!(c.join("catalog/b1.json").exists());
    let entry: serde_json::Value =
        serde_json::from_slice(&std::fs::read(c.join("catalog/b1.json")).unwrap()).unwrap();
    assert!(entry.get("deleting").is_none(), "not marked: {entry}");

    // Without the Restore it goes: storage objects and catalog entry; the ledger stays.
    std::fs::remove_file(c.join("ledger/applied.json")).unwrap();
    let out = tidemark(&["forget-backup", "b1", "--control", ctl]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!storage.path().join("b1").exists());
    assert!(!c.join("catalog/b1.json").exists());
    assert!(c.join("ledger/oneshots/backup/b1.json").exists());
}

/// A lease that cannot be read is a failure (exit 1, naming the record), not another
/// reconciler leading (exit 4, which scripts take as harmless).
#[test]
fn once_on_an_unreadable_lease_exits_1_naming_it() {
    let (control, policies) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    std::fs::create_dir_all(control.path().join("lease")).unwrap();
    std::fs::write(control.path().join("lease/000000000001.json"), "{not json").unwrap();
    std::fs::write(
        policies.path().join("c.yaml"),
        "apiVersion: tidemark/v1\nkind: Cluster\nmetadata:\n  name: c\nspec:\n  replicaSets:\n    - name: rs0\n      members: [\"h:1\"]\n",
    )
    .unwrap();
    let once = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["reconcile", "--once", "--lease-ttl", "300ms", "--control"])
        .arg(control.path())
        .arg("--policies")
        .arg(policies.path())
        .output()
        .unwrap();
    let stderr = text(&once.stderr);
    assert_eq!(once.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("lease/000000000001.json"), "{stderr}");
}
