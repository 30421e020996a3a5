//! `tidemark_control_requests_total{op}`: the control-plane requests this process made,
//! by kind, on the reconciler's metrics and on an agent's. The store layer counts them
//! (`tidemark_store::control::control_requests`); this copies the counts in at scrape time.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tidemark_store::control::{RequestKind, control_requests};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: String,
}

#[derive(Default)]
pub struct ControlRequestMetrics {
    requests: Family<OpLabels, Counter>,
}

impl ControlRequestMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "control_requests",
            "Requests this process made to the control plane, by kind (list, get, put, head, \
             delete), retries included",
            self.requests.clone(),
        );
    }

    /// Brings the counters up to the store's counts; call before each encode.
    pub fn sync(&self) {
        for kind in RequestKind::ALL {
            let counter = self.requests.get_or_create(&OpLabels {
                op: kind.as_str().to_string(),
            });
            let (now, shown) = (control_requests().get(kind), counter.get());
            if now > shown {
                counter.inc_by(now - shown);
            }
        }
    }
}
