//! What `tidemark reconcile` serves over HTTP: Prometheus metrics (`--metrics ADDR`) and a
//! push webhook that starts a fetch and a pass at once (`--listen ADDR`).

mod http;
mod metrics;
mod pitr_metrics;
mod webhook;

pub use http::{Endpoints, Webhook, serve};
pub use metrics::Metrics;
