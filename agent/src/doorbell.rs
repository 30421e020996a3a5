//! The doorbell, agent side: how an agent learns there is something new to read without
//! listing `ops/` over and over, which is what an idle fleet used to pay for.
//!
//! The leader rewrites `doorbell/<cluster>.json` after each write the cluster's agents
//! must act on, and, when it serves `--listen`, answers a long-poll there as soon as it
//! rings. The agent waits on that long-poll (free: no control-plane request); when the
//! leader does not answer (stopped, unreachable, a follower), it reads the record every
//! `--poll-interval` instead (one GET) and tries the long-poll again every 30 s or as soon
//! as the record names another address. Either way a changed token only wakes the loops
//! that read the control plane: nothing heard here is acted on as such.
//!
//! No record at all (no leader of this version ever rang), or one that cannot be read,
//! keeps the old way: the ops loop lists `ops/` every `--poll-interval`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tidemark_schema::control::{DoorbellAnswer, DoorbellRecord, Pickup, doorbell_key};
use tokio::sync::watch;

use crate::node::Node;

/// How long the leader holds a long-poll when nothing rings.
const WAIT: Duration = Duration::from_secs(10);
/// How late an answer may be before the leader counts as gone: a stopped or cut-off
/// leader is noticed within `WAIT + GRACE`.
const GRACE: Duration = Duration::from_secs(3);
/// How often a long-poll that failed is tried again while the record names the same
/// address.
const CHANNEL_RETRY: Duration = Duration::from_secs(30);

/// What the doorbell heard, shared with the loops it wakes.
#[derive(Debug)]
pub struct Doorbell {
    wakes: watch::Sender<u64>,
    /// A doorbell record exists: a leader rings this cluster.
    rung: AtomicBool,
    /// Waiting on the leader's long-poll right now.
    connected: AtomicBool,
}

impl Default for Doorbell {
    fn default() -> Self {
        Doorbell {
            wakes: watch::channel(0).0,
            rung: AtomicBool::new(false),
            connected: AtomicBool::new(false),
        }
    }
}

impl Doorbell {
    /// Changes at every ring heard.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.wakes.subscribe()
    }

    /// Whether a leader rings this cluster: if not, loops look on their own as before.
    pub fn rung(&self) -> bool {
        self.rung.load(Ordering::Relaxed)
    }

    /// Whether the agent is waiting on the leader's long-poll.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// How this agent learns of new ops right now, for its heartbeat.
    pub fn pickup(&self) -> Pickup {
        match (self.connected(), self.rung()) {
            (true, _) => Pickup::Doorbell,
            (false, true) => Pickup::Record,
            (false, false) => Pickup::Listing,
        }
    }

    /// Records whether a leader rings; when that stops being so, the loops waiting for a
    /// ring (up to a resync) are woken to look on their own from now on.
    fn set_rung(&self, rung: bool) {
        if self.rung.swap(rung, Ordering::Relaxed) && !rung {
            self.wake();
        }
    }

    fn wake(&self) {
        self.wakes.send_modify(|n| *n += 1);
    }

    /// Waits until the next ring or `period`, whichever comes first.
    pub async fn wait(rx: &mut watch::Receiver<u64>, period: Duration) {
        let _ = tokio::time::timeout(period, rx.changed()).await;
    }
}

/// Follows the doorbell until the task is dropped.
pub async fn run(node: std::sync::Arc<Node>) {
    let bell = &node.doorbell;
    let key = doorbell_key(&node.cluster);
    let http = reqwest::Client::new();
    let mut seen: Option<String> = None;
    let mut failed: Option<(String, tokio::time::Instant)> = None;
    loop {
        let record = match node.control.get::<DoorbellRecord>(&key).await {
            Ok(r) => r,
            Err(e) => {
                // Unreadable (corrupt, or the store refusing): trust no ring until it
                // reads again, and list ops/ every --poll-interval meanwhile, as with no
                // leader ringing at all.
                if bell.rung() {
                    tracing::warn!(error = %e, "cannot read the doorbell record; listing ops/ instead");
                }
                bell.set_rung(false);
                tokio::time::sleep(node.cfg.poll_interval).await;
                continue;
            }
        };
        bell.set_rung(record.is_some());
        let Some(record) = record else {
            tokio::time::sleep(node.cfg.poll_interval).await;
            continue;
        };
        if seen.as_deref() != Some(record.token.as_str()) {
            seen = Some(record.token.clone());
            bell.wake();
        }
        let retry = record.url.as_ref().filter(|url| {
            failed
                .as_ref()
                .is_none_or(|(u, at)| u != *url || at.elapsed() >= CHANNEL_RETRY)
        });
        if let Some(url) = retry.cloned() {
            tracing::info!(%url, "waiting for the leader's doorbell");
            let why = listen(&http, &url, &node.cluster, &mut seen, bell).await;
            bell.connected.store(false, Ordering::Relaxed);
            tracing::warn!(%url, %why, every = ?node.cfg.poll_interval, "the leader's doorbell does not answer; reading the doorbell record instead");
            failed = Some((url, tokio::time::Instant::now()));
            continue;
        }
        tokio::time::sleep(node.cfg.poll_interval).await;
    }
}

/// Waits on the leader's long-poll, waking the loops at each new token; returns why it
/// stopped (an error, a refusal, a late answer).
async fn listen(
    http: &reqwest::Client,
    base: &str,
    cluster: &str,
    seen: &mut Option<String>,
    bell: &Doorbell,
) -> String {
    loop {
        let url = match url::Url::parse_with_params(
            &format!("{}/v1/doorbell/{cluster}", base.trim_end_matches('/')),
            [
                ("seen", seen.clone().unwrap_or_default()),
                ("wait", WAIT.as_millis().to_string()),
            ],
        ) {
            Ok(u) => u,
            Err(e) => return format!("the address is not a URL: {e}"),
        };
        let answer = match http.get(url).timeout(WAIT + GRACE).send().await {
            Err(e) => return e.to_string(),
            Ok(r) if !r.status().is_success() => return format!("it answered {}", r.status()),
            Ok(r) => match r.bytes().await {
                Err(e) => return e.to_string(),
                Ok(body) => match serde_json::from_slice::<DoorbellAnswer>(&body) {
                    Ok(a) => a,
                    Err(e) => return format!("its answer does not parse: {e}"),
                },
            },
        };
        bell.connected.store(true, Ordering::Relaxed);
        if seen.as_deref() != Some(answer.token.as_str()) {
            *seen = Some(answer.token);
            bell.wake();
        }
    }
}
