//! End-to-end: `tidemark verify` on a backup taken by the reconciler, in a real storage
//! directory. A clean backup verifies; then one object is truncated, one deleted and one
//! has a byte flipped (same size): the metadata check names the first two, and only
//! `--read-data` finds the third. Each problem names the replica set, file and object.

#[path = "support/rig.rs"]
mod rig;
#[path = "support/world.rs"]
mod world;

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use world::*;

fn verify(w: &World, backup: &str, extra: &[&str]) -> (i32, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["verify", backup, "-o", "json", "--control"])
        .arg(w.rig.control.path())
        .args(extra)
        .output()
        .unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "verify -o json: {e}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), v)
}

/// The backup's data objects in the storage directory, largest first.
fn objects(w: &World, backup: &str) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut dirs = vec![w.rig.storage_dir.path().join(backup)];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.to_string_lossy().contains("/files/") {
                out.push((p.clone(), e.metadata().unwrap().len()));
            }
        }
    }
    out.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    out
}

fn key_of(w: &World, p: &std::path::Path) -> String {
    p.strip_prefix(w.rig.storage_dir.path())
        .unwrap()
        .to_string_lossy()
        .to_string()
}

fn named(v: &Value, key: &str) -> Option<Value> {
    v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["object"] == key)
        .cloned()
}

#[test]
fn verify_names_each_damaged_object_and_only_read_data_finds_a_flipped_byte() {
    let mut w = prepared(World::new("verify"), None);
    let (code, v) = verify(&w, "b1", &["--read-data"]);
    assert_eq!(code, 0, "a clean backup verifies: {v:#}");
    assert!(v["bytesRead"].as_u64().unwrap() > 0, "{v:#}");

    // A marker that leaves a replica set out: the set is still checked, and reported.
    let marker = w.rig.storage_dir.path().join("b1/backup.json");
    let original = std::fs::read(&marker).unwrap();
    let mut m: Value = serde_json::from_slice(&original).unwrap();
    m["replicaSets"] = serde_json::json!([]);
    std::fs::write(&marker, m.to_string()).unwrap();
    let (code, v) = verify(&w, "b1", &[]);
    assert_eq!(code, 1, "{v:#}");
    let text = v["problems"].to_string();
    assert!(text.contains("lists no replica set"), "{v:#}");
    assert!(text.contains("not in the completion marker"), "{v:#}");
    assert_eq!(
        v["replicaSets"][0],
        w.rig.rs.name.as_str(),
        "still checked: {v:#}"
    );
    std::fs::write(&marker, &original).unwrap();

    let objs = objects(&w, "b1");
    assert!(objs.len() >= 3, "{objs:?}");
    let (flipped, truncated, missing) = (&objs[0].0, &objs[1].0, &objs[2].0);
    let mut bytes = std::fs::read(flipped).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(flipped, &bytes).unwrap();
    let len = std::fs::metadata(truncated).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(truncated)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    std::fs::remove_file(missing).unwrap();
    let (flipped, truncated, missing) = (
        key_of(&w, flipped),
        key_of(&w, truncated),
        key_of(&w, missing),
    );

    // Metadata only: the truncated and the missing object, not the flipped byte.
    let (code, v) = verify(&w, "b1", &[]);
    assert_eq!(code, 1, "{v:#}");
    let t = named(&v, &truncated).unwrap_or_else(|| panic!("{truncated} named: {v:#}"));
    assert!(t["what"].as_str().unwrap().contains("truncated"), "{t:#}");
    assert_eq!(t["replicaSet"], w.rig.rs.name, "{t:#}");
    assert!(
        t["file"]
            .as_str()
            .is_some_and(|f| truncated.ends_with(&format!("{f}.zst"))),
        "{t:#}"
    );
    let m = named(&v, &missing).unwrap_or_else(|| panic!("{missing} named: {v:#}"));
    assert!(m["what"].as_str().unwrap().contains("missing"), "{m:#}");
    assert!(
        named(&v, &flipped).is_none(),
        "a flipped byte is invisible to metadata: {v:#}"
    );

    // With the data read: the flipped byte too.
    let (code, v) = verify(&w, "b1", &["--read-data"]);
    assert_eq!(code, 1, "{v:#}");
    assert!(
        named(&v, &truncated).is_some() && named(&v, &missing).is_some(),
        "{v:#}"
    );
    let f = named(&v, &flipped).unwrap_or_else(|| panic!("{flipped} named: {v:#}"));
    assert!(f["file"].as_str().is_some(), "{f:#}");

    // A schedule's `verify: data` records the same in the catalog, and the backup stops
    // counting as good: the reconciler's own check, on the entry as its finish writes it.
    w.kill_reconciler();
    let key = w.rig.control.path().join("catalog/b1.json");
    let mut entry: Value = serde_json::from_slice(&std::fs::read(&key).unwrap()).unwrap();
    entry["verification"] = serde_json::json!({"level": "data", "status": "pending"});
    std::fs::write(&key, entry.to_string()).unwrap();
    let control = tidemark_store::control::ControlPlane::open_writable(
        w.rig.control.path().to_str().unwrap(),
    )
    .unwrap();
    let target = w.rig.storage(tidemark_schema::model::Compression::Zstd);
    let recorded = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(tidemark_reconciler::backup::verify_and_record(
            &control,
            &target,
            &[],
            "b1",
            tidemark_schema::model::VerifyLevel::Data,
        ))
        .unwrap()
        .expect("recorded");
    let entry: Value = serde_json::from_slice(&std::fs::read(&key).unwrap()).unwrap();
    assert_eq!(entry["verification"]["status"], "failed", "{entry:#}");
    let problems = entry["verification"]["problems"].to_string();
    for k in [&flipped, &truncated, &missing] {
        assert!(problems.contains(k.as_str()), "{k} in {problems}");
    }
    assert_eq!(recorded.problems.len(), 3, "{recorded:?}");
    let record: tidemark_schema::control::BackupRecord = serde_json::from_value(entry).unwrap();
    assert!(
        !record.is_good(),
        "a backup that failed verification is not good"
    );

    // Text output names them for a person, and a missing marker is its own problem.
    std::fs::remove_file(w.rig.storage_dir.path().join("b1/backup.json")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["verify", "b1", "--control"])
        .arg(w.rig.control.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("completion marker is missing"), "{text}");
    assert!(text.contains(&missing), "{text}");
    assert!(text.contains("NOT OK"), "{text}");
}
