//! Reads the observed state from the control plane: the applied revision, the one-shot
//! ledger, the schedule and drill records, the backup catalog and the agents' heartbeats.
//! The six listings are read at once, and their records in parallel; a record that does not parse
//! is skipped with a warning naming it, so one bad object never stops the reconciler for
//! every cluster.

use std::collections::BTreeMap;

use tidemark_schema::control::{
    AGENTS_PREFIX, APPLIED_KEY, ATTEMPTED_KEY, AppliedRevision, AttemptedRevision, BackupRecord,
    CATALOG_PREFIX, ChunkRecord, DRILLS_PREFIX, Heartbeat, ONESHOTS_PREFIX, OneShotKind,
    OneShotRecord, SCHEDULES_PREFIX, SLICING_PREFIX, ScheduleRecord, SlicingAssignment,
};

use super::chunks::ChunkCache;

use super::client::ControlPlane;
use super::error::ControlError;

/// Everything the planner knows about the world.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedState {
    pub applied: Option<AppliedRevision>,
    pub attempted: Option<AttemptedRevision>,
    /// Keyed by (kind in lowercase, name).
    pub oneshots: BTreeMap<(OneShotKind, String), OneShotRecord>,
    /// Keyed by schedule name.
    pub schedules: BTreeMap<String, ScheduleRecord>,
    /// Keyed by drill name: since when each `RestoreDrill`'s runs count.
    pub drills: BTreeMap<String, ScheduleRecord>,
    pub backups: Vec<BackupRecord>,
    pub heartbeats: Vec<Heartbeat>,
    /// Who slices each replica set's oplog, by (cluster, replica set).
    pub slicing: Vec<SlicingAssignment>,
    /// The oplog-chunk index: every chunk in every storage.
    pub chunks: Vec<ChunkRecord>,
    /// Records skipped because they do not parse, each naming its key.
    pub warnings: Vec<String>,
}

/// Reads the observed state. An empty or missing control plane gives the empty state.
pub async fn observe(control: &ControlPlane) -> Result<ObservedState, ControlError> {
    observe_with(control, &ChunkCache::for_one_shot()).await
}

/// [`observe`], reading only the chunk records `cache` has not seen (the reconciler's loop).
pub async fn observe_with(
    control: &ControlPlane,
    cache: &ChunkCache,
) -> Result<ObservedState, ControlError> {
    let (applied, attempted, oneshots, schedules, drills, backups, heartbeats, slicing, chunks) = tokio::try_join!(
        control.get::<AppliedRevision>(APPLIED_KEY),
        control.get::<AttemptedRevision>(ATTEMPTED_KEY),
        control.all_lenient::<OneShotRecord>(ONESHOTS_PREFIX),
        control.all_lenient::<ScheduleRecord>(SCHEDULES_PREFIX),
        control.all_lenient::<ScheduleRecord>(DRILLS_PREFIX),
        control.all_lenient::<BackupRecord>(CATALOG_PREFIX),
        control.all_lenient::<Heartbeat>(AGENTS_PREFIX),
        control.all_lenient::<SlicingAssignment>(SLICING_PREFIX),
        cache.read(control),
    )?;
    let mut observed = ObservedState {
        applied,
        attempted,
        ..Default::default()
    };
    for record in oneshots.0 {
        observed
            .oneshots
            .insert((record.kind, record.name.clone()), record);
    }
    for record in schedules.0 {
        observed.schedules.insert(record.schedule.clone(), record);
    }
    for record in drills.0 {
        observed.drills.insert(record.schedule.clone(), record);
    }
    observed.backups = backups.0;
    observed
        .backups
        .sort_by(|a, b| (a.started_at, &a.name).cmp(&(b.started_at, &b.name)));
    observed.heartbeats = heartbeats.0;
    observed.heartbeats.sort_by(|a, b| {
        (&a.cluster, &a.replica_set, &a.node).cmp(&(&b.cluster, &b.replica_set, &b.node))
    });
    observed.slicing = slicing.0;
    observed.chunks = chunks.0;
    observed.chunks.sort_by(|a, b| {
        (&a.cluster, &a.storage, &a.replica_set, a.first).cmp(&(
            &b.cluster,
            &b.storage,
            &b.replica_set,
            b.first,
        ))
    });
    for w in [
        oneshots.1,
        schedules.1,
        drills.1,
        backups.1,
        heartbeats.1,
        slicing.1,
        chunks.1,
    ] {
        observed.warnings.extend(w);
    }
    for w in &observed.warnings {
        tracing::warn!("{w}");
    }
    Ok(observed)
}
