//! Benchmark of `tidemark status` over a large control plane: 1,000 clusters (3 agents
//! each, one nightly schedule each, recorded since 30 days) and 10,000 catalog entries,
//! on a local directory. Prints `status_1k_clusters_ms`, the median of 5 runs of the real
//! binary with `-o json`, with its min–max (target ≤ 1000 ms).
//!
//! `cargo bench --bench status` (`TIDEMARK_BENCH_CLUSTERS`, default 1000;
//! `TIDEMARK_BENCH_BACKUPS`, default 10000).

use std::process::Command;
use std::time::Instant;

use serde_json::json;
use tidemark_schema::validate::{SourceFile, validate_files};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn write(root: &std::path::Path, key: &str, value: &serde_json::Value) {
    let path = root.join(key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_vec(value).unwrap()).unwrap();
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let clusters = env_or("TIDEMARK_BENCH_CLUSTERS", 1000);
    let backups = env_or("TIDEMARK_BENCH_BACKUPS", 10_000);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let now = chrono::Utc::now();
    // One file per cluster, as a repository would hold them (a file's document count is
    // bounded by the parser's budget).
    let mut files = vec![SourceFile {
        path: "storage.yaml".into(),
        bytes: b"apiVersion: tidemark/v1\nkind: BackupStorage\nmetadata:\n  name: s3\nspec:\n  url: s3://bucket/x\n".to_vec(),
    }];
    for c in 0..clusters {
        files.push(SourceFile {
            path: format!("c{c}.yaml"),
            bytes: format!(
            "apiVersion: tidemark/v1\nkind: Cluster\nmetadata:\n  name: c{c}\nspec:\n  \
             replicaSets:\n    - name: rs0\n      members: [\"c{c}a:27017\", \"c{c}b:27017\", \"c{c}c:27017\"]\n\
             ---\napiVersion: tidemark/v1\nkind: BackupSchedule\nmetadata:\n  name: n{c}\nspec:\n  \
             cluster: c{c}\n  storage: s3\n  type: physical\n  cron: \"0 2 * * *\"\n  \
             timezone: Europe/Berlin\n  rpo: 26h\n  retention:\n    keepLast: 7\n"
            )
            .into_bytes(),
        });
        write(
            root,
            &format!("ledger/schedules/n{c}.json"),
            &json!({"schedule": format!("n{c}"), "since": now - chrono::Duration::days(30),
                    "cron": "0 2 * * *", "timezone": "Europe/Berlin", "suspended": false}),
        );
        for m in ["a", "b", "c"] {
            write(
                root,
                &format!("agents/c{c}/rs0/c{c}{m}_27017.json"),
                &json!({"cluster": format!("c{c}"), "replicaSet": "rs0", "node": format!("c{c}{m}:27017"),
                        "at": now, "agentVersion": "0.1.0", "healthy": true,
                        "role": if m == "a" { "PRIMARY" } else { "SECONDARY" },
                        "flavor": "psmdb", "mongodVersion": "7.0.14-8", "backupCursor": true}),
            );
        }
    }
    let v = validate_files(&files);
    assert!(v.is_valid(), "{:?}", v.errors.first());
    write(
        root,
        "ledger/applied.json",
        &serde_json::to_value(v.state.to_applied("bench", now)).unwrap(),
    );
    for b in 0..backups {
        let c = b % clusters;
        let day = (b / clusters) as i64;
        let at = now - chrono::Duration::days(day + 1);
        let name = format!("n{c}-{}", at.format("%Y%m%dT%H%M%SZ"));
        write(
            root,
            &format!("catalog/{name}.json"),
            &json!({"name": name, "cluster": format!("c{c}"), "storage": "s3",
                    "schedule": format!("n{c}"), "type": "physical", "status": "done",
                    "complete": true, "startedAt": at,
                    "replicaSets": [{"name": "rs0", "node": format!("c{c}b:27017"),
                                     "mongodVersion": "7.0.14-8", "uncompressedBytes": 1, "storedBytes": 1}]}),
        );
        write(
            root,
            &format!("ledger/oneshots/backup/{name}.json"),
            &json!({"kind": "Backup", "name": name, "opId": format!("x-{name}"),
                    "startedAt": at, "finishedAt": at, "status": "done"}),
        );
    }
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args(["status", "-o", "json", "--control"])
            .arg(root)
            .output()
            .unwrap();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        assert_eq!(v["catalog"]["backups"], backups, "status read every entry");
        assert_eq!(v["schedules"].as_array().unwrap().len(), clusters);
    }
    times.sort_by(f64::total_cmp);
    println!("status_clusters: {clusters}");
    println!("status_catalog_entries: {backups}");
    println!(
        "status_1k_clusters_ms: {:.0} (min–max {:.0}–{:.0})",
        times[times.len() / 2],
        times[0],
        times[times.len() - 1]
    );
}
