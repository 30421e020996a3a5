//! Benchmark of the reconciler's reaction time: from a desired-state change (a `Backup`
//! document written to the policy directory, or committed and pushed to a bare git
//! repository) to the backup's op in the control plane. Real `tidemark reconcile`
//! processes with default intervals (git: `--interval 1s`). No agents run: heartbeats are
//! written by the bench so that a node can be chosen, and each round uses its own cluster
//! (one operation per cluster, and these never end).
//!
//! Prints `reconcile_latency_dir_ms` (target ≤ 300) and `reconcile_latency_git_ms`
//! (target ≤ 1500), each the median of 5 changes with its min–max.
//! `cargo bench --bench reconcile_latency`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

const ROUNDS: usize = 5;

fn cluster_yaml() -> String {
    let mut y = String::from(
        "apiVersion: tidemark/v1\nkind: BackupStorage\nmetadata:\n  name: local\nspec:\n  url: file:///nonexistent-bench-storage\n",
    );
    for c in 0..ROUNDS {
        y.push_str(&format!(
            "---\napiVersion: tidemark/v1\nkind: Cluster\nmetadata:\n  name: c{c}\nspec:\n  \
             replicaSets:\n    - name: rs0\n      members: [\"h{c}:27017\"]\n"
        ));
    }
    y
}

fn heartbeats(control: &Path) {
    for c in 0..ROUNDS {
        let dir = control.join(format!("agents/c{c}/rs0"));
        std::fs::create_dir_all(&dir).unwrap();
        let hb = json!({"cluster": format!("c{c}"), "replicaSet": "rs0", "node": format!("h{c}:27017"),
            "at": chrono::Utc::now() + chrono::Duration::hours(1), "agentVersion": "bench", "healthy": true,
            "role": "PRIMARY", "flavor": "psmdb", "mongodVersion": "7.0.14-8", "backupCursor": true});
        std::fs::write(dir.join(format!("h{c}_27017.json")), hb.to_string()).unwrap();
    }
}

fn backup_yaml(c: usize) -> String {
    format!(
        "apiVersion: tidemark/v1\nkind: Backup\nmetadata:\n  name: b{c}\nspec:\n  cluster: c{c}\n  \
         storage: local\n  type: physical\n"
    )
}

fn op_exists(control: &Path, c: usize) -> bool {
    std::fs::read_dir(control.join("ops"))
        .map(|d| {
            d.flatten().any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .ends_with(&format!("-backup-b{c}"))
                    && e.path().join("op.json").exists()
            })
        })
        .unwrap_or(false)
}

fn wait_leading(control: &Path) {
    let started = Instant::now();
    while !control.join("ledger/applied.json").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the reconciler applied nothing"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn measure(control: &Path, mut change: impl FnMut(usize)) -> Vec<f64> {
    let mut out = Vec::new();
    for c in 0..ROUNDS {
        // Let the reconciler go idle, as it is when a change arrives; the extra offset
        // spreads the changes over the git poll's phase instead of always hitting the
        // same point of it.
        std::thread::sleep(Duration::from_millis(1500 + (c as u64 * 397) % 1000));
        let t = Instant::now();
        change(c);
        while !op_exists(control, c) {
            assert!(t.elapsed() < Duration::from_secs(30), "no op for b{c}");
            std::thread::sleep(Duration::from_millis(2));
        }
        out.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    out
}

fn spread(mut v: Vec<f64>) -> String {
    v.sort_by(f64::total_cmp);
    format!(
        "{:.0} (min–max {:.0}–{:.0})",
        v[v.len() / 2],
        v[0],
        v[v.len() - 1]
    )
}

fn reconciler(args: &[&str], source: &[&std::ffi::OsStr], control: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .arg("reconcile")
        .args(source)
        .arg("--control")
        .arg(control)
        .args(args)
        .env("TIDEMARK_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // A directory source, watched with notify.
    let policies = tempfile::tempdir().unwrap();
    let control = tempfile::tempdir().unwrap();
    std::fs::write(policies.path().join("clusters.yaml"), cluster_yaml()).unwrap();
    heartbeats(control.path());
    let mut child = reconciler(
        &[],
        &["--policies".as_ref(), policies.path().as_os_str()],
        control.path(),
    );
    wait_leading(control.path());
    let dir = measure(control.path(), |c| {
        std::fs::write(policies.path().join(format!("b{c}.yaml")), backup_yaml(c)).unwrap()
    });
    child.kill().unwrap();
    child.wait().unwrap();
    println!("reconcile_latency_dir_ms: {}", spread(dir));

    // A git source polled every second.
    let work = tempfile::tempdir().unwrap();
    let bare = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let control = tempfile::tempdir().unwrap();
    let repo = git2::Repository::init(work.path()).unwrap();
    git2::Repository::init_bare(bare.path()).unwrap();
    std::fs::write(work.path().join("clusters.yaml"), cluster_yaml()).unwrap();
    tidemark_testkit::commit_and_push(&repo, bare.path(), "change");
    heartbeats(control.path());
    let mut child = reconciler(
        &["--ref", "main", "--interval", "1s"],
        &[
            "--git".as_ref(),
            bare.path().as_os_str(),
            "--cache-dir".as_ref(),
            cache.path().as_os_str(),
        ],
        control.path(),
    );
    wait_leading(control.path());
    let git = measure(control.path(), |c| {
        std::fs::write(work.path().join(format!("b{c}.yaml")), backup_yaml(c)).unwrap();
        tidemark_testkit::commit_and_push(&repo, bare.path(), "change");
    });
    child.kill().unwrap();
    child.wait().unwrap();
    println!("reconcile_latency_git_ms: {}", spread(git));
}
