//! End-to-end: `tidemark playground` on a fresh directory, as a user runs it. The first
//! scheduled backup appears; writes follow, then a mistake (a `delete_many`); a
//! point-in-time Restore to just before the mistake, written into the watched directory,
//! ends `done` with every write but the mistake on every node; and Ctrl-C (SIGINT) leaves no
//! process behind. A second playground on the same directory is refused, naming the
//! first. A playground killed with SIGKILL leaves its processes; the next run names them
//! and refuses, and `--stop-leftovers` stops them and goes on with the same data.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bson::{Document, doc};
use mongod_sim::client::BlockingConn;
use serde_json::Value;
use tempfile::TempDir;

const NODES: u16 = 3;

fn tidemark() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tidemark"))
}

/// A base port with `NODES` free ports after it.
fn free_base() -> u16 {
    // Tests run at once in one process: each call starts its search elsewhere.
    static CALLS: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let seed = (std::process::id() as u16)
        .wrapping_add(CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) * 997);
    for k in 0..200u16 {
        let base = 30000 + (seed.wrapping_mul(7).wrapping_add(k * 11)) % 30000;
        if (0..NODES).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
    panic!("no free ports");
}

fn command(port: u16, db: &str, cmd: Document) -> Option<Document> {
    let mut c = BlockingConn::connect(&format!("127.0.0.1:{port}"), Duration::from_secs(2)).ok()?;
    c.command(db, cmd).ok()
}

fn primary(base: u16) -> Option<u16> {
    (base..base + NODES).find(|p| {
        command(*p, "admin", doc! {"hello": 1})
            .is_some_and(|h| h.get_bool("isWritablePrimary").unwrap_or(false))
    })
}

fn ids_on(port: u16) -> Option<Vec<i32>> {
    BlockingConn::connect(&format!("127.0.0.1:{port}"), Duration::from_secs(2))
        .ok()?
        .ids("app", "items")
}

fn insert(base: u16, ids: std::ops::Range<i32>) {
    let docs: Vec<Document> = ids.map(|i| doc! {"_id": i, "v": "x"}).collect();
    let started = Instant::now();
    loop {
        if let Some(p) = primary(base)
            && let Some(r) = command(
                p,
                "app",
                doc! {"insert": "items", "documents": docs.clone()},
            )
            && r.get_f64("ok").unwrap_or(0.0) == 1.0
        {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "insert");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn status(control: &Path) -> Value {
    let out = tidemark()
        .args(["status", "-o", "json", "--control"])
        .arg(control)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn wait_until(what: &str, secs: u64, log: &Path, mut f: impl FnMut() -> bool) {
    let started = Instant::now();
    while !f() {
        assert!(
            started.elapsed() < Duration::from_secs(secs),
            "{what} within {secs}s; playground output:\n{}\n{}\nreconciler:\n{}",
            std::fs::read_to_string(log).unwrap_or_default(),
            std::fs::read_to_string(log.with_extension("err")).unwrap_or_default(),
            std::fs::read_to_string(log.parent().unwrap().join(".tidemark/logs/reconciler.log"))
                .unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Kills, on drop, every process a failed test left in its directory.
struct Cleanup(std::path::PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in processes_in(&self.0) {
            if let Some(pid) = p.split(':').next().and_then(|p| p.parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// A distinctive secret in every variable tidemark reads that may hold a credential:
/// storage credentials for every cloud, the webhook secret, a signing key, a MongoDB URI
/// with a password. None of them may appear in anything tidemark writes or prints.
const SECRET: &str = "TMSECRETq7Zx";

fn secrets() -> Vec<(String, String)> {
    [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "GOOGLE_SERVICE_ACCOUNT_KEY",
        "AZURE_STORAGE_ACCOUNT_KEY",
        "AZURE_STORAGE_SAS_KEY",
        "TIDEMARK_WEBHOOK_SECRET",
        "TIDEMARK_SIGNING_KEY",
    ]
    .iter()
    .enumerate()
    .map(|(i, k)| (k.to_string(), format!("{SECRET}{i}")))
    .chain([(
        "TIDEMARK_MONGOD_URI".to_string(),
        format!("mongodb://admin:{SECRET}uri@127.0.0.1:1/"),
    )])
    .collect()
}

/// Every file under `dir` (binary ones too) that holds the secret.
fn files_with_secret(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else if std::fs::read(&path)
                .is_ok_and(|b| b.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()))
            {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    conn.read_to_string(&mut body).unwrap();
    body
}

fn start_playground(home: &Path, out: &Path, base: u16, extra: &[&str]) -> Child {
    let pg = tidemark()
        .current_dir(home)
        .envs(secrets())
        .args([
            "playground",
            "--sim",
            "--cron",
            "*/3 * * * * *",
            "--base-port",
        ])
        .arg(base.to_string())
        .args(extra)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(out).unwrap())
        .stderr(std::fs::File::create(out.with_extension("err")).unwrap())
        .spawn()
        .unwrap();
    wait_until("the playground is running", 90, out, || {
        std::fs::read_to_string(out).is_ok_and(|o| o.contains("the playground is running"))
    });
    pg
}

fn sigint_and_wait(pg: &mut Child, out: &Path) -> (Option<i32>, String) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pg.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let started = Instant::now();
    let code = loop {
        if let Some(s) = pg.try_wait().unwrap() {
            break s.code();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the playground stops"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    (
        code,
        std::fs::read_to_string(out.with_extension("err")).unwrap_or_default(),
    )
}

/// Live processes whose command line names `dir`.
fn processes_in(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_string_lossy().parse().ok()?;
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let c = String::from_utf8_lossy(&raw).replace('\0', " ");
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let zombie = stat.rsplit(')').next()?.trim_start().starts_with('Z');
            (!zombie && c.contains(&needle)).then(|| format!("{pid}: {c}"))
        })
        .collect()
}

#[test]
fn the_playground_backs_up_restores_and_stops_cleanly() {
    let home = TempDir::new().unwrap();
    let _cleanup = Cleanup(home.path().to_path_buf());
    let out_path = home.path().join("playground.out");
    let base = free_base();
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let mut pg = start_playground(home.path(), &out_path, base, &["--metrics", &metrics]);
    let dir = home.path().join(".tidemark");
    let control = dir.join("control");
    let banner = std::fs::read_to_string(&out_path).unwrap();
    assert!(
        banner.contains(&format!("mongodb://127.0.0.1:{base}")),
        "{banner}"
    );

    // A second playground on the same directory is refused at once, naming the first.
    let second = tidemark()
        .current_dir(home.path())
        .args(["playground", "--sim", "--base-port"])
        .arg((base + 10).to_string())
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("already running") && err.contains(&pg.id().to_string()),
        "{err}"
    );

    insert(base, 0..30);
    let written = chrono::Utc::now();
    let mut backup = String::new();
    wait_until("a scheduled backup after the writes", 90, &out_path, || {
        let v = status(&control);
        let s = &v["schedules"][0];
        let after = s["lastGoodAt"]
            .as_str()
            .and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok())
            .is_some_and(|t| t > written + chrono::Duration::seconds(1));
        if after {
            backup = s["lastGoodBackup"].as_str().unwrap().to_string();
        }
        after
    });
    // The tutorial's point-in-time undo: writes after the backup (kept), the target, then a
    // mistake; the restore to the target keeps the writes and undoes the mistake. The
    // writes start a second after the backup's last write, so a wall-clock target is
    // past the base's second (docs/pitr.md, precision).
    let catalog: Value = serde_json::from_slice(
        &std::fs::read(control.join(format!("catalog/{backup}.json"))).unwrap(),
    )
    .unwrap();
    let base_second = catalog["replicaSets"][0]["lastWriteOptime"]["t"]
        .as_i64()
        .unwrap();
    wait_until("the second after the backup's", 5, &out_path, || {
        chrono::Utc::now().timestamp() > base_second
    });
    insert(base, 1000..1010);
    let target = chrono::Utc::now();
    // The mistake comes strictly after the target on the wall clock.
    wait_until("the clock to pass the target", 5, &out_path, || {
        chrono::Utc::now().timestamp_millis() > target.timestamp_millis()
    });
    let deleted = primary(base)
        .and_then(|p| {
            command(
                p,
                "app",
                doc! {"delete": "items", "deletes": [{"q": {"_id": {"$lt": 10}}, "limit": 0}]},
            )
        })
        .unwrap();
    assert_eq!(deleted.get_i32("n").unwrap_or(0), 10, "{deleted}");

    std::fs::write(
        dir.join("policies/restore.yaml"),
        format!(
            "apiVersion: tidemark/v1\nkind: Restore\nmetadata:\n  name: back\nspec:\n  \
             cluster: playground\n  source:\n    pointInTime: \"{}\"\n  fallbackEnabled: true\n  \
             postRestore:\n    startNodes: true\n",
            target.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        ),
    )
    .unwrap();
    // Bounded: a restore that never ends must fail the test, not hang it.
    let mut describe = tidemark()
        .args([
            "describe-restore",
            "back",
            "-o",
            "json",
            "--wait",
            "--control",
        ])
        .arg(&control)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while describe.try_wait().unwrap().is_none() {
        // The restore waits for the 30 s slices to pass the target, then runs.
        if started.elapsed() > Duration::from_secs(200) {
            let _ = describe.kill();
            panic!("the restore did not end within 200 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let described = describe.wait_with_output().unwrap();
    let v: Value = serde_json::from_slice(&described.stdout).unwrap_or(Value::Null);
    assert_eq!(v["status"], "done", "{v:#}");
    let want: Vec<i32> = (0..30).chain(1000..1010).collect();
    for p in base..base + NODES {
        let started = Instant::now();
        loop {
            let got = ids_on(p);
            if got.as_ref() == Some(&want) {
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                wait_until(
                    &format!("node {p} serves the documents of the target (it serves {got:?})"),
                    0,
                    &out_path,
                    || false,
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    // The whole run, backup and restore included: no secret of the environment in
    // what tidemark printed as JSON, served as metrics, logged or stored.
    let mut printed = vec![
        String::from_utf8_lossy(&described.stdout).into_owned(),
        scrape(&metrics),
    ];
    for args in [
        &["status", "-o", "json"][..],
        &["list", "-o", "json"],
        &["logs", "-o", "json"],
        &["describe-backup", &backup, "-o", "json"],
    ] {
        let out = tidemark()
            .args(args)
            .arg("--control")
            .arg(&control)
            .envs(secrets())
            .output()
            .unwrap();
        printed.push(String::from_utf8_lossy(&out.stdout).into_owned());
        printed.push(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    assert!(
        printed[1].contains("tidemark_passes_total"),
        "metrics served: {}",
        printed[1]
    );
    for text in &printed {
        assert!(!text.contains(SECRET), "a secret in the output: {text}");
    }

    // Ctrl-C: every process goes, and the playground exits 0.
    let (code, stderr) = sigint_and_wait(&mut pg, &out_path);
    assert_eq!(code, Some(0), "{stderr}");
    let left = processes_in(home.path());
    assert!(left.is_empty(), "processes left over: {left:#?}");
    let out = std::fs::read_to_string(&out_path).unwrap();
    assert!(out.contains("stopped; the data stays in"), "{out}");
    // Logs, control plane, backups, dbPaths, the playground's own output.
    let leaked = files_with_secret(home.path());
    assert!(leaked.is_empty(), "secrets written to {leaked:#?}");

    // Again on the same directory: the data is there. Then SIGKILL: its processes stay.
    let mut pg = start_playground(home.path(), &out_path, base, &[]);
    let out = std::fs::read_to_string(&out_path).unwrap();
    assert!(!out.contains("wrote starter policies"), "{out}");
    for p in base..base + NODES {
        wait_until(
            &format!("node {p} has the documents again"),
            60,
            &out_path,
            || ids_on(p).as_ref() == Some(&want),
        );
    }
    pg.kill().unwrap();
    pg.wait().unwrap();
    let left = processes_in(home.path());
    assert!(left.iter().any(|p| p.contains(" agent ")), "{left:#?}");
    let refused = tidemark()
        .current_dir(home.path())
        .args(["playground", "--sim", "--base-port"])
        .arg(base.to_string())
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("still running") && err.contains("--stop-leftovers"),
        "{err}"
    );
    let agent_pid = left
        .iter()
        .find(|p| p.contains(" agent "))
        .and_then(|p| p.split(':').next())
        .unwrap();
    assert!(
        err.contains(&format!("pid {agent_pid}:")),
        "the agent is named: {err}"
    );

    let mut pg = start_playground(home.path(), &out_path, base, &["--stop-leftovers"]);
    let (code, stderr) = sigint_and_wait(&mut pg, &out_path);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("stopping leftover pid"), "{stderr}");
    let left = processes_in(home.path());
    assert!(left.is_empty(), "processes left over: {left:#?}");
}

#[test]
fn the_sharded_playground_takes_a_backup_to_one_cluster_time() {
    let home = TempDir::new().unwrap();
    let _cleanup = Cleanup(home.path().to_path_buf());
    let out_path = home.path().join("playground.out");
    // One member per replica set: a config server and two shards on three ports.
    let base = free_base();
    let mut pg = start_playground(home.path(), &out_path, base, &["--sharded", "--nodes", "1"]);
    let banner = std::fs::read_to_string(&out_path).unwrap();
    for set in ["pgcfg", "pgsh0", "pgsh1"] {
        assert!(banner.contains(&format!("replicaSet={set}")), "{banner}");
    }
    let dir = home.path().join(".tidemark");
    let control = dir.join("control");
    let cluster = std::fs::read_to_string(dir.join("policies/cluster.yaml")).unwrap();
    assert!(cluster.contains("configServer:"), "{cluster}");
    let started = Instant::now();
    let marker = loop {
        let found = std::fs::read_dir(control.join("catalog"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| serde_json::from_slice::<Value>(&std::fs::read(e.path()).ok()?).ok())
            .find(|b| b["status"] == "done")
            .and_then(|b| {
                let name = b["name"].as_str()?.to_string();
                serde_json::from_slice::<Value>(
                    &std::fs::read(dir.join("backups").join(&name).join("backup.json")).ok()?,
                )
                .ok()
            });
        if let Some(m) = found {
            break m;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "no sharded backup: {}",
            std::fs::read_to_string(dir.join("logs/reconciler.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(
        marker["replicaSets"].as_array().unwrap().len(),
        3,
        "{marker:#}"
    );
    assert!(marker["clusterTime"]["t"].as_u64().is_some(), "{marker:#}");
    let (code, err) = sigint_and_wait(&mut pg, &out_path);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(processes_in(&dir), Vec::<String>::new());
}
