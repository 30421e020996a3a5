//! The HTTP side of `reconcile` and `agent`: `GET /metrics` on `--metrics ADDR`; on
//! `--listen ADDR` the agents' doorbell (`GET /v1/doorbell/{cluster}`) and `POST /webhook`
//! (one server when both name the same address), on axum.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};

use super::agent_metrics::AgentMetrics;
use super::doorbell::{Doorbell, wait};
use super::metrics::Metrics;
use super::webhook::{Verdict, verify};

/// What a push webhook needs: the secret, the branch followed, and the flag that wakes the
/// reconcile loop.
#[derive(Clone)]
pub struct Webhook {
    pub secret: String,
    pub branch: Option<String>,
    pub wake: Arc<AtomicBool>,
}

/// The endpoints to serve, each on its address.
#[derive(Default)]
pub struct Endpoints {
    pub metrics: Option<(SocketAddr, Arc<Metrics>)>,
    pub webhook: Option<(SocketAddr, Webhook)>,
    pub doorbell: Option<(SocketAddr, Doorbell)>,
    /// An agent's metrics (`agent --metrics ADDR`).
    pub agent_metrics: Option<(SocketAddr, Arc<AgentMetrics>)>,
}

/// An exposition text, as Prometheus asks for it.
fn openmetrics(text: String) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}

async fn metrics(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    openmetrics(m.encode(chrono::Utc::now()))
}

async fn agent_metrics(State(m): State<Arc<AgentMetrics>>) -> impl IntoResponse {
    openmetrics(m.encode())
}

async fn webhook(State(w): State<Webhook>, headers: HeaderMap, body: Bytes) -> impl IntoResponse {
    let pairs: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    match verify(&w.secret, &pairs, &body, w.branch.as_deref()) {
        Verdict::Sync { forge } => {
            tracing::info!(forge, "push webhook: fetching and reconciling now");
            w.wake.store(true, Ordering::SeqCst);
            (StatusCode::ACCEPTED, "syncing now\n".to_string())
        }
        Verdict::Ignore(why) => {
            tracing::info!(%why, "webhook ignored");
            (StatusCode::OK, format!("ignored: {why}\n"))
        }
        Verdict::Refuse(why) => {
            tracing::warn!(%why, "webhook refused");
            (
                StatusCode::UNAUTHORIZED,
                "refused: bad or missing signature\n".to_string(),
            )
        }
    }
}

/// Binds every address now (a taken port is an error at start, naming it) and serves in
/// the background.
pub async fn serve(e: Endpoints) -> anyhow::Result<()> {
    let mut routers: Vec<(SocketAddr, Router)> = Vec::new();
    let mut add = |addr: SocketAddr, r: Router| match routers.iter_mut().find(|(a, _)| *a == addr) {
        Some((_, existing)) => *existing = std::mem::take(existing).merge(r),
        None => routers.push((addr, r)),
    };
    if let Some((addr, m)) = e.metrics {
        add(
            addr,
            Router::new().route("/metrics", get(metrics)).with_state(m),
        );
    }
    if let Some((addr, w)) = e.webhook {
        add(
            addr,
            // GitHub sends payloads up to 25 MiB; axum's default limit (2 MB) would refuse
            // big pushes before the handler could log anything.
            Router::new()
                .route("/webhook", post(webhook))
                .layer(DefaultBodyLimit::max(25 << 20))
                .with_state(w),
        );
    }
    if let Some((addr, d)) = e.doorbell {
        add(
            addr,
            Router::new()
                .route("/v1/doorbell/{cluster}", get(wait))
                .with_state(d),
        );
    }
    if let Some((addr, m)) = e.agent_metrics {
        add(
            addr,
            Router::new()
                .route("/metrics", get(agent_metrics))
                .with_state(m),
        );
    }
    for (addr, router) in routers {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        tracing::info!(%addr, "serving HTTP");
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(%addr, error = %e, "HTTP server stopped");
            }
        });
    }
    Ok(())
}
