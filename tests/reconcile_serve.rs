//! End-to-end: what `tidemark reconcile` serves over HTTP. `--metrics` is scraped with a
//! real HTTP client after a scheduled backup; `--listen` takes a signed GitHub push
//! payload and runs a pass long before the poll interval, and refuses unsigned ones.

#[path = "support/rig.rs"]
mod rig;
#[path = "support/world.rs"]
mod world;

use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use rig::*;
use sha2::Sha256;
use world::*;

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The value of the series `name{labels}` in an exposition text, if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn metrics_show_the_schedules_backup_age_agents_and_outcomes() {
    let mut w = World::new("metrics");
    let addr = free_addr();
    w.reconciler_args = vec!["--metrics".into(), addr.clone()];
    // `verify: data`: a backup counts as good only once read back and checksummed.
    w.scheduled("often", 0..10, "  verify: data\n");
    w.start_reconciler();
    let v = w.wait_for("a scheduled backup, verified", 60, |v| {
        v["schedules"][0]["lastGoodBackup"].as_str().is_some()
    });
    let good = v["schedules"][0]["lastGoodBackup"].as_str().unwrap();
    let entry = w.control_json(&format!("catalog/{good}.json")).unwrap();
    assert_eq!(entry["verification"]["status"], "passed", "{entry:#}");
    assert_eq!(entry["verification"]["level"], "data", "{entry:#}");
    let described = w.describe("backup", good);
    assert_eq!(
        described["verification"]["status"], "passed",
        "{described:#}"
    );
    let rt = runtime();
    let client = reqwest::Client::new();
    let started = Instant::now();
    let text = loop {
        // The metrics follow the passes: the backup shows once a pass has seen it.
        let text = rt
            .block_on(async {
                client
                    .get(format!("http://{addr}/metrics"))
                    .send()
                    .await?
                    .text()
                    .await
            })
            .unwrap();
        let series = format!(
            "tidemark_schedule_last_good_backup_age_seconds{{schedule=\"often\",cluster=\"{CLUSTER}\"}}"
        );
        if sample(&text, &series).is_some() || started.elapsed() > Duration::from_secs(20) {
            break text;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let age = sample(
        &text,
        &format!(
            "tidemark_schedule_last_good_backup_age_seconds{{schedule=\"often\",cluster=\"{CLUSTER}\"}}"
        ),
    )
    .unwrap_or_else(|| panic!("the backup-age gauge:\n{text}"));
    assert!((0.0..60.0).contains(&age), "{age}\n{text}");
    let bytes = sample(
        &text,
        &format!(
            "tidemark_schedule_last_good_backup_bytes{{schedule=\"often\",cluster=\"{CLUSTER}\"}}"
        ),
    )
    .unwrap();
    assert!(bytes > 0.0, "{text}");
    assert_eq!(
        sample(
            &text,
            &format!("tidemark_agents{{cluster=\"{CLUSTER}\",state=\"alive\"}}")
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(sample(&text, "tidemark_leader"), Some(1.0), "{text}");
    assert!(
        sample(&text, "tidemark_passes_total").is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "tidemark_operations_total{kind=\"backup\",status=\"done\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        text.contains("tidemark_applied_revision_info{revision="),
        "{text}"
    );
}

fn github_push(addr: &str, secret: Option<&str>) -> (u16, String) {
    let body = br#"{"ref":"refs/heads/main","after":"0000000000000000000000000000000000000000"}"#;
    let rt = runtime();
    rt.block_on(async {
        let mut req = reqwest::Client::new()
            .post(format!("http://{addr}/webhook"))
            .header("X-GitHub-Event", "push")
            .header("Content-Type", "application/json")
            .body(body.to_vec());
        if let Some(secret) = secret {
            let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
            mac.update(body);
            let sig = mac
                .finalize()
                .into_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>();
            req = req.header("X-Hub-Signature-256", format!("sha256={sig}"));
        }
        let resp = req.send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    })
}

#[test]
fn a_signed_push_webhook_runs_a_pass_at_once_and_an_unsigned_one_is_refused() {
    let mut w = World::new_git("hook");
    let addr = free_addr();
    // A poll interval far longer than the test: only the webhook can make it act in time.
    w.interval = "300s".into();
    w.reconciler_args = vec!["--listen".into(), addr.clone()];
    w.reconciler_env = vec![("TIDEMARK_WEBHOOK_SECRET".into(), "hook-secret".into())];
    w.rig.insert(0..10);
    for i in 0..3 {
        w.rig.start_agent(i);
    }
    w.start_reconciler();
    w.wait_for("the first revision applied", 60, |v| {
        v["revisions"]["applied"]["revision"].as_str().is_some()
    });
    w.backup_yaml("hooked", "physical");
    w.commit("a backup, announced by webhook");

    let (code, text) = github_push(&addr, None);
    assert_eq!(code, 401, "{text}");
    let (code, text) = github_push(&addr, Some("not-the-secret"));
    assert_eq!(code, 401, "{text}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        w.describe("backup", "hooked")["status"],
        "unknown",
        "refused pushes start nothing"
    );

    let pushed = Instant::now();
    let (code, text) = github_push(&addr, Some("hook-secret"));
    assert_eq!(code, 202, "{text}");
    w.op_of("backup", "hooked");
    let took = pushed.elapsed();
    eprintln!("webhook to op: {took:?} (poll interval 300 s)");
    assert!(
        took < Duration::from_secs(30),
        "{took:?}\n{}",
        w.reconciler_log()
    );
    assert!(
        w.reconciler_log().contains("webhook refused"),
        "refusals are logged:\n{}",
        w.reconciler_log()
    );
}
