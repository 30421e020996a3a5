//! Reads the observed state from the control plane: the applied revision, the one-shot
//! ledger, the backup catalog and the agents' heartbeats.

use std::collections::BTreeMap;

use tidemark_schema::control::{
    AGENTS_PREFIX, APPLIED_KEY, ATTEMPTED_KEY, AppliedRevision, AttemptedRevision, BackupRecord,
    CATALOG_PREFIX, Heartbeat, ONESHOTS_PREFIX, OneShotRecord,
};

use super::client::ControlPlane;
use super::error::ControlError;

/// Everything the planner knows about the world.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedState {
    pub applied: Option<AppliedRevision>,
    pub attempted: Option<AttemptedRevision>,
    /// Keyed by (kind in lowercase, name).
    pub oneshots: BTreeMap<(String, String), OneShotRecord>,
    pub backups: Vec<BackupRecord>,
    pub heartbeats: Vec<Heartbeat>,
}

/// Reads the observed state. An empty or missing control plane gives the empty state.
pub async fn observe(control: &ControlPlane) -> Result<ObservedState, ControlError> {
    let mut observed = ObservedState {
        applied: control.get(APPLIED_KEY).await?,
        attempted: control.get(ATTEMPTED_KEY).await?,
        ..Default::default()
    };
    for record in control.all::<OneShotRecord>(ONESHOTS_PREFIX).await? {
        observed
            .oneshots
            .insert((record.kind.to_lowercase(), record.name.clone()), record);
    }
    observed.backups = control.all(CATALOG_PREFIX).await?;
    observed
        .backups
        .sort_by(|a, b| (a.started_at, &a.name).cmp(&(b.started_at, &b.name)));
    observed.heartbeats = control.all(AGENTS_PREFIX).await?;
    observed.heartbeats.sort_by(|a, b| {
        (&a.cluster, &a.replica_set, &a.node).cmp(&(&b.cluster, &b.replica_set, &b.node))
    });
    Ok(observed)
}
