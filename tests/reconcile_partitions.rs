//! End-to-end: three `tidemark reconcile --partitions 8` processes share ten clusters
//! (one mongod-sim and one agent each) on one control plane. Every cluster is led by
//! exactly one reconciler and more than one reconciler leads; `kill -9` of the one leading
//! the most moves its partitions to the others within the lease time; a backup of every
//! cluster before and after runs exactly once, and the epochs of each cluster's ops never
//! go back.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mongod_sim::harness::{ReplicaSet, binary};
use serde_json::Value;
use tempfile::TempDir;
use tidemark_testkit::backup_yaml;

const CLUSTERS: usize = 10;
const TTL: Duration = Duration::from_secs(2);

struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn log_file(dir: &Path, name: &str) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(name))
        .unwrap()
}

fn agent(logs: &Path, control: &Path, cluster: &str, rs: &ReplicaSet) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["agent", "--cluster", cluster, "--control"])
        .arg(control)
        .arg("--mongod-uri")
        .arg(format!("mongodb://{}/?directConnection=true", rs.host(0)))
        .arg("--dbpath")
        .arg(rs.dbpath(0))
        .arg("--mongod-bin")
        .arg(binary().unwrap())
        .args(["--node-id", &rs.host(0), "--replica-set", &rs.name])
        .arg("--trusted-keys")
        .arg(&tidemark_testkit::test_keys().public)
        .args(["--heartbeat-interval", "1s", "--poll-interval", "200ms"])
        .env("TIDEMARK_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file(logs, &format!("agent-{cluster}.log")))
        .spawn()
        .unwrap()
}

fn reconciler(logs: &Path, control: &Path, policies: &Path, i: usize) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .arg("reconcile")
        .arg("--policies")
        .arg(policies)
        .arg("--control")
        .arg(control)
        .arg("--signing-key-file")
        .arg(&tidemark_testkit::test_keys().private)
        // At rest a pass runs only when something wakes it (a source change, a partition
        // coming to this process): a resync would hide a missed wake.
        .args(["--interval", "2s", "--resync-interval", "5m"])
        .args(["--follow-interval", "300ms", "--dead-after", "5s"])
        .args(["--lease-ttl", "2s", "--partitions", "8"])
        .env("TIDEMARK_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file(logs, &format!("reconciler-{i}.log")))
        .spawn()
        .unwrap()
}

fn status(control: &Path) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["status", "-o", "json", "--control"])
        .arg(control)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// Cluster → (holder, epoch) as `status` shows it, for clusters of a live lease.
fn cluster_leaders(v: &Value) -> BTreeMap<String, (String, u64)> {
    let mut out = BTreeMap::new();
    for lease in v["partitions"]["leases"].as_array().into_iter().flatten() {
        let (Some(holder), Some(epoch)) = (lease["holder"].as_str(), lease["epoch"].as_u64())
        else {
            continue;
        };
        if lease["released"] == Value::Bool(true) {
            continue;
        }
        for c in lease["clusters"].as_array().into_iter().flatten() {
            out.insert(c.as_str().unwrap().to_string(), (holder.to_string(), epoch));
        }
    }
    out
}

fn pid_of(holder: &str) -> u32 {
    holder.split('/').nth(1).unwrap().parse().unwrap()
}

fn all_logs(dir: &Path) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with("reconciler-") {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            out.push_str(&format!("--- {name}\n"));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

fn wait_for(what: &str, secs: u64, logs: &Path, mut f: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !f() {
        assert!(
            started.elapsed() < Duration::from_secs(secs),
            "{what}: not within {secs} s\n{}",
            all_logs(logs)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    started.elapsed()
}

fn done(control: &Path, backup: &str) -> bool {
    let path = control.join(format!("ledger/oneshots/backup/{backup}.json"));
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .is_some_and(|v| v["status"] == "done")
}

fn backups(policies: &Path, round: &str) {
    let docs: Vec<String> = (0..CLUSTERS)
        .map(|i| backup_yaml(&format!("{round}-c{i}"), &format!("c{i}"), "local"))
        .collect();
    std::fs::write(policies.join(format!("{round}.yaml")), docs.join("---\n")).unwrap();
}

#[test]
fn three_reconcilers_share_ten_clusters_and_a_killed_ones_clusters_move_within_the_lease() {
    let (control, storage, policies) = (
        TempDir::new().unwrap(),
        TempDir::new().unwrap(),
        TempDir::new().unwrap(),
    );
    let ctl = control.path();
    // Ten one-member replica sets, started at once.
    let sets: Vec<ReplicaSet> = std::thread::scope(|s| {
        let started: Vec<_> = (0..CLUSTERS)
            .map(|i| s.spawn(move || ReplicaSet::start(&format!("rs{i}"), 1).unwrap()))
            .collect();
        started.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut yaml = format!(
        "apiVersion: tidemark/v1\nkind: BackupStorage\nmetadata:\n  name: local\nspec:\n  url: file://{}\n",
        storage.path().display()
    );
    for (i, rs) in sets.iter().enumerate() {
        yaml.push_str(&format!(
            "---\napiVersion: tidemark/v1\nkind: Cluster\nmetadata:\n  name: c{i}\nspec:\n  \
             replicaSets:\n    - name: {}\n      members:\n        - {}\n",
            rs.name,
            rs.host(0)
        ));
    }
    std::fs::write(policies.path().join("fleet.yaml"), yaml).unwrap();
    backups(policies.path(), "first");
    let mut agents = Procs(Vec::new());
    for (i, rs) in sets.iter().enumerate() {
        agents.0.push(agent(ctl, ctl, &format!("c{i}"), rs));
    }
    // Killed on every way out of the test, a failed assertion included.
    let mut recs = Procs(
        (0..3)
            .map(|i| reconciler(ctl, ctl, policies.path(), i))
            .collect(),
    );

    // Every cluster's first backup, each led by exactly one reconciler, more than one
    // of the three leading.
    wait_for("every cluster's first backup", 120, ctl, || {
        (0..CLUSTERS).all(|i| done(ctl, &format!("first-c{i}")))
    });
    let mut leaders = BTreeMap::new();
    wait_for(
        "every cluster led, by more than one reconciler",
        30,
        ctl,
        || {
            leaders = cluster_leaders(&status(ctl));
            let holders: BTreeSet<&String> = leaders.values().map(|(h, _)| h).collect();
            leaders.len() == CLUSTERS && holders.len() >= 2
        },
    );
    let mut per_holder: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (cluster, (holder, _)) in &leaders {
        per_holder
            .entry(holder.clone())
            .or_default()
            .push(cluster.clone());
    }
    eprintln!("leaders: {per_holder:?}");
    let text = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["status", "--control"])
        .arg(ctl)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    assert!(
        text.contains("partitions: 8, shared by 3 reconciler(s)"),
        "{text}"
    );

    // kill -9 of the reconciler leading the most clusters.
    let (victim, theirs) = per_holder
        .iter()
        .max_by_key(|(_, c)| c.len())
        .map(|(h, c)| (h.clone(), c.clone()))
        .unwrap();
    let at = recs
        .0
        .iter()
        .position(|c| c.id() == pid_of(&victim))
        .expect("the victim is one of ours");
    let mut killed = recs.0.remove(at);
    killed.kill().unwrap();
    killed.wait().unwrap();
    let before = leaders.clone();
    let took = wait_for("the killed reconciler's clusters move", 30, ctl, || {
        let now = cluster_leaders(&status(ctl));
        theirs.iter().all(|c| {
            now.get(c)
                .is_some_and(|(h, epoch)| *h != victim && *epoch > before[c].1)
        })
    });
    eprintln!(
        "{} cluster(s) moved {took:?} after kill -9 (lease {TTL:?})",
        theirs.len()
    );
    assert!(took < TTL * 3, "took {took:?}");
    // The new leaders act for their new clusters at once, with nothing else waking them:
    // each announces itself on the cluster's doorbell record in its epoch.
    let now = cluster_leaders(&status(ctl));
    wait_for(
        "the new leaders ring their clusters' doorbells",
        10,
        ctl,
        || {
            theirs.iter().all(|c| {
                let path = ctl.join(format!("doorbell/{c}.json"));
                std::fs::read(path)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                    .is_some_and(|d| d["epoch"].as_u64() == Some(now[c].1))
            })
        },
    );

    // A second backup of every cluster, under the survivors.
    backups(policies.path(), "second");
    wait_for("every cluster's second backup", 120, ctl, || {
        (0..CLUSTERS).all(|i| done(ctl, &format!("second-c{i}")))
    });
    let now = cluster_leaders(&status(ctl));
    assert_eq!(now.len(), CLUSTERS, "{now:?}");
    assert!(now.values().all(|(h, _)| *h != victim), "{now:?}");
    drop(recs);

    // One op per backup, and per cluster the epochs never go back in creation order.
    let mut per_backup: BTreeMap<String, usize> = BTreeMap::new();
    let mut per_cluster: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
    for e in std::fs::read_dir(ctl.join("ops")).unwrap().flatten() {
        let Ok(bytes) = std::fs::read(e.path().join("op.json")) else {
            continue;
        };
        let op: Value = serde_json::from_slice(&bytes).unwrap();
        let id = op["id"].as_str().unwrap().to_string();
        if let Some((_, name)) = id.split_once("-backup-") {
            *per_backup.entry(name.to_string()).or_default() += 1;
        }
        per_cluster
            .entry(op["cluster"].as_str().unwrap().to_string())
            .or_default()
            .push((
                op["createdAt"].as_str().unwrap().to_string(),
                op["epoch"].as_u64().unwrap(),
            ));
    }
    assert_eq!(per_backup.len(), 2 * CLUSTERS, "{per_backup:?}");
    assert!(per_backup.values().all(|n| *n == 1), "{per_backup:?}");
    for (cluster, ops) in &mut per_cluster {
        ops.sort();
        assert!(
            ops.windows(2).all(|w| w[0].1 <= w[1].1),
            "{cluster}: {ops:?}"
        );
    }
    drop(agents);
}
