//! What `tidemark reconcile` and `tidemark agent` serve over HTTP: Prometheus metrics
//! (`--metrics ADDR`); on the reconciler's `--listen ADDR`, the agents' doorbell and a push
//! webhook that starts a fetch and a pass at once.

mod agent_metrics;
mod control_metrics;
mod doorbell;
mod http;
mod metrics;
mod pitr_metrics;
mod webhook;

pub use agent_metrics::AgentMetrics;
pub use doorbell::Doorbell;
pub use http::{Endpoints, Webhook, serve};
pub use metrics::Metrics;
