//! An agent's metrics (`tidemark agent --metrics ADDR`): the control-plane requests it
//! made, by kind, and whether it waits on the leader's doorbell (1) or reads the doorbell
//! record instead (0). These say what an idle node costs.

use std::sync::Arc;

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tidemark_agent::node::Node;

use super::control_metrics::ControlRequestMetrics;

pub struct AgentMetrics {
    registry: Registry,
    control: ControlRequestMetrics,
    connected: Gauge<i64, std::sync::atomic::AtomicI64>,
    node: Arc<Node>,
}

impl AgentMetrics {
    pub fn new(node: Arc<Node>) -> AgentMetrics {
        let mut registry = Registry::with_prefix("tidemark");
        let control = ControlRequestMetrics::default();
        control.register(&mut registry);
        let connected = Gauge::default();
        registry.register(
            "agent_doorbell_connected",
            "1 while this agent waits on the leader's doorbell, 0 while it reads the doorbell \
             record (or lists ops/) instead",
            connected.clone(),
        );
        AgentMetrics {
            registry,
            control,
            connected,
            node,
        }
    }

    pub fn encode(&self) -> String {
        self.control.sync();
        self.connected
            .set(i64::from(self.node.doorbell.connected()));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
