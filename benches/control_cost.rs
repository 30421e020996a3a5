//! Benchmark of what an idle fleet costs in control-plane requests, and of how fast an
//! agent picks up new work. A mongod-sim replica set of 3, one `tidemark agent` per member
//! and one `tidemark reconcile`, every interval at its default, with the control plane on
//! S3 (moto) behind a proxy that counts every request by kind.
//!
//! `cargo bench --bench control_cost` (idle window `TIDEMARK_BENCH_IDLE_S`, default 1200:
//! two of every 10-minute period at rest;
//! pickup rounds `TIDEMARK_BENCH_ROUNDS`, default 5, `TIDEMARK_BENCH_GAP_S` apart, default
//! 32). Prints `name: value` lines:
//! - `idle_requests_per_node_hour` (target ≤ 150) and `idle_dollars_per_node_month` at S3
//!   list prices, LIST and PUT $0.005 per 1,000, GET and HEAD $0.0004 (target ≤ 0.50),
//!   with the split by kind; the reconciler's requests are shared by the three nodes;
//! - `op_pickup_ms_push` p50 (target ≤ 300) and p99: from a backup op's creation (its
//!   `createdAt`) to its node's first report, with the reconciler's `--listen` doorbell;
//! - `op_pickup_ms_fallback` p50 and p99: the same with a reconciler that serves no
//!   doorbell, where agents read the doorbell record every `--poll-interval` (5 s);
//!   killed without releasing its lease, the first leader is replaced a lease TTL later.

#[path = "../tests/support/rig.rs"]
mod rig;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use object_store::aws::AmazonS3;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use rig::{CLUSTER, Rig};
use serde_json::Value;
use tidemark_testkit::{CountingProxy, Counts, Moto, env_or, s3_price, wait_until};

const NODES: f64 = 3.0;
const HOURS_PER_MONTH: f64 = 730.0;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Reads the control plane straight from moto (not counted).
struct Reader {
    store: AmazonS3,
    rt: tokio::runtime::Runtime,
}

impl Reader {
    fn json(&self, key: &str) -> Option<Value> {
        self.rt.block_on(async {
            let got = self.store.get(&ObjectPath::from(key)).await.ok()?;
            serde_json::from_slice(&got.bytes().await.ok()?).ok()
        })
    }

    fn keys(&self, prefix: &str) -> Vec<String> {
        self.rt.block_on(async {
            self.store
                .list(Some(&ObjectPath::from(prefix)))
                .map_ok(|m| m.location.to_string())
                .try_collect()
                .await
                .unwrap_or_default()
        })
    }
}

fn reconciler(rig: &Rig, policies: &std::path::Path, listen: Option<u16>, log: &str) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidemark"));
    cmd.args(["reconcile", "--policies"])
        .arg(policies)
        .args(["--control", &rig.control_url])
        .arg("--signing-key-file")
        .arg(&tidemark_testkit::test_keys().private)
        .envs(rig.agent_env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("TIDEMARK_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(rig.control.path().join(log)).unwrap());
    if let Some(port) = listen {
        cmd.args(["--listen", &format!("127.0.0.1:{port}")]);
    }
    cmd.spawn().unwrap()
}

/// Writes Backup `name` and returns the milliseconds from its op's creation to the first
/// report of the node it targets, once the backup ended.
fn pickup(rig: &Rig, reader: &Reader, policies: &std::path::Path, name: &str) -> f64 {
    std::fs::write(
        policies.join(format!("{name}.yaml")),
        tidemark_testkit::backup_yaml(name, CLUSTER, "local"),
    )
    .unwrap();
    let suffix = format!("-backup-{name}/op.json");
    let op_key = wait_until("the backup's op", Duration::from_secs(180), || {
        reader
            .keys("tidemark/ops")
            .into_iter()
            .find(|k| k.ends_with(&suffix))
    });
    let op = reader.json(&op_key).unwrap();
    let created: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(op["createdAt"].clone()).unwrap();
    let dir = op_key.trim_end_matches("op.json").to_string();
    let first = wait_until("the node's first report", Duration::from_secs(60), || {
        reader
            .keys(&dir)
            .into_iter()
            .filter(|k| k.matches('/').count() == 4 && !k.contains("/logs/"))
            .filter_map(|k| reader.json(&k))
            .filter_map(|r| {
                serde_json::from_value::<chrono::DateTime<chrono::Utc>>(r["at"].clone()).ok()
            })
            .min()
    });
    wait_until("the backup's end", Duration::from_secs(120), || {
        let record = reader.json(&format!("tidemark/ledger/oneshots/backup/{name}.json"))?;
        (record["status"] != "running").then_some(())
    });
    let _ = rig;
    (first - created).num_milliseconds() as f64
}

/// `p50 p99 (min–max)` of milliseconds.
fn percentiles(mut v: Vec<f64>) -> (f64, f64, String) {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    (
        at(0.5),
        at(0.99),
        format!("min–max {:.0}–{:.0}", v[0], v[v.len() - 1]),
    )
}

fn diff(after: &Counts, before: &Counts) -> Counts {
    after
        .iter()
        .map(|(k, n)| (k.clone(), n - before.get(k).copied().unwrap_or_default()))
        .collect()
}

fn main() {
    rig::build_release_sim();
    let idle = env_or("TIDEMARK_BENCH_IDLE_S", 1200);
    let rounds = env_or("TIDEMARK_BENCH_ROUNDS", 5) as usize;
    let moto = Moto::start();
    let proxy = CountingProxy::start(moto.port, "/ctl");
    let mut rig = Rig::new("costbench", 3, &[]);
    rig.use_s3_control(&moto, "ctl");
    rig.agent_env = moto.env_via(proxy.endpoint());
    rig.insert(0..100);
    let reader = Reader {
        store: moto.store("ctl"),
        rt: tokio::runtime::Runtime::new().unwrap(),
    };
    let policies = tempfile::TempDir::new().unwrap();
    std::fs::write(policies.path().join("cluster.yaml"), rig.cluster_yaml()).unwrap();
    let port = free_port();
    let mut leader = reconciler(&rig, policies.path(), Some(port), "reconciler.log");
    let mut agents: Vec<Child> = (0..3)
        .map(|i| rig.agent_command(i).spawn().unwrap())
        .collect();
    // Settled: every agent has beaten and hears the doorbell; start-up reads are over.
    wait_until("the doorbell record", Duration::from_secs(60), || {
        reader.json(&format!("tidemark/doorbell/{CLUSTER}.json"))
    });
    wait_until("every heartbeat", Duration::from_secs(60), || {
        (reader.keys(&format!("tidemark/agents/{CLUSTER}")).len() == 3).then_some(())
    });
    std::thread::sleep(Duration::from_secs(15));

    let before = proxy.counts();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(idle));
    let secs = started.elapsed().as_secs_f64();
    let counts = diff(&proxy.counts(), &before);
    let per_node_hour = |n: u64| n as f64 * 3600.0 / secs / NODES;
    let total: f64 = counts.values().map(|n| per_node_hour(*n)).sum();
    let dollars: f64 = counts
        .iter()
        .map(|(k, n)| per_node_hour(*n) * s3_price(k) * HOURS_PER_MONTH)
        .sum();
    println!("idle_window_s: {secs:.0}");
    for (k, n) in &counts {
        println!(
            "idle_requests_per_node_hour{{kind=\"{k}\"}}: {:.1}",
            per_node_hour(*n)
        );
    }
    println!("idle_requests_per_node_hour: {total:.1}");
    println!(
        "idle_requests_per_node_hour_vs_target_ratio: {:.2}",
        total / 150.0
    );
    println!("idle_dollars_per_node_month: {dollars:.3}");
    println!(
        "idle_dollars_per_node_month_vs_target_ratio: {:.2}",
        dollars / 0.5
    );

    // Rounds more than 30 s apart: an agent looks on its own for 30 s after an op, and
    // the figure is about one that was idle.
    let gap = Duration::from_secs(env_or("TIDEMARK_BENCH_GAP_S", 32));
    let measure = |prefix: &str| -> Vec<f64> {
        (0..rounds)
            .map(|k| {
                std::thread::sleep(gap);
                pickup(&rig, &reader, policies.path(), &format!("{prefix}{k}"))
            })
            .collect()
    };
    let push = measure("p");
    let (p50, p99, range) = percentiles(push);
    println!("op_pickup_ms_push: p50 {p50:.0}, p99 {p99:.0} ({range})");
    println!("op_pickup_ms_push_p50_vs_target_ratio: {:.2}", p50 / 300.0);

    // The doorbell gone: a reconciler that serves none takes over.
    let _ = leader.kill();
    let _ = leader.wait();
    leader = reconciler(&rig, policies.path(), None, "reconciler-2.log");
    let fallback = measure("f");
    let (p50, p99, range) = percentiles(fallback);
    println!("op_pickup_ms_fallback: p50 {p50:.0}, p99 {p99:.0} ({range})");
    println!(
        "op_pickup_ms_fallback_p99_vs_poll_interval_ratio: {:.2}",
        p99 / 5000.0
    );

    let _ = leader.kill();
    for a in &mut agents {
        let _ = a.kill();
        let _ = a.wait();
    }
}
