//! Which cluster a plan step acts on, so that a reconciler leading some partitions of the
//! fleet starts only their steps. The plan itself is made over the whole desired and
//! observed state (a restore may read another cluster's backup; retention must see every
//! restore that still needs a backup); only the acting is split.

use tidemark_schema::model::Kind;
use tidemark_schema::validate::DesiredState;
use tidemark_store::control::ObservedState;

use crate::plan::Action;

/// The cluster `action` acts on; `None` for steps that write nothing of a cluster's
/// (schedule bookkeeping, what already ran), which the leader of partition 0 takes.
pub fn step_cluster(
    action: &Action,
    desired: &DesiredState,
    observed: &ObservedState,
) -> Option<String> {
    let backup_cluster = |backup: &str| {
        observed
            .backups
            .iter()
            .find(|b| b.name == backup)
            .map(|b| b.cluster.clone())
    };
    match action {
        Action::RunBackup { cluster, .. }
        | Action::RunDrill { cluster, .. }
        | Action::SetSlicing { cluster, .. }
        | Action::DeleteChunks { cluster, .. } => Some(cluster.clone()),
        Action::StartRestore(p) => Some(p.cluster.clone()),
        Action::StartSelectiveRestore(p) => Some(p.cluster.clone()),
        Action::DeleteBackup { backup, .. } | Action::VerifyBackup { backup, .. } => {
            backup_cluster(backup)
        }
        Action::Blocked { kind, name } => oneshot_cluster(kind, name, desired),
        Action::CreateSchedule { .. }
        | Action::UpdateSchedule { .. }
        | Action::SuspendSchedule { .. }
        | Action::ResumeSchedule { .. }
        | Action::RemoveSchedule { .. }
        | Action::AlreadyRan { .. } => None,
    }
}

/// The cluster of a one-shot the desired state declares: a `Backup` or `Restore` by its
/// document, a schedule's slot (`<schedule>-<stamp>`) by its schedule, a drill's run
/// (`<drill>-<stamp>`) by the schedule it drills.
fn oneshot_cluster(kind: &str, name: &str, desired: &DesiredState) -> Option<String> {
    // `<name>-<stamp>`: the stamp holds no `-`, so schedule `db` never claims the slots
    // of schedule `db-eu`.
    let slot_of = |prefix: &str| {
        name.strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|stamp| !stamp.is_empty() && !stamp.contains('-'))
    };
    match Kind::parse(kind)? {
        Kind::Backup => desired.backup(name).map(|b| b.cluster.clone()).or_else(|| {
            desired
                .schedules()
                .find(|(s, _)| slot_of(s))
                .map(|(_, s)| s.cluster.clone())
        }),
        Kind::Restore => desired.restore(name).map(|r| r.cluster.clone()),
        Kind::RestoreDrill => {
            let (_, drill) = desired.drills().find(|(d, _)| slot_of(d))?;
            desired.schedule(&drill.schedule).map(|s| s.cluster.clone())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_schema::validate::{SourceFile, validate_files};

    fn desired() -> DesiredState {
        let yaml = "\
apiVersion: tidemark/v1
kind: Cluster
metadata: {name: east}
spec:
  replicaSets: [{name: rs0, members: [a:1]}]
---
apiVersion: tidemark/v1
kind: Cluster
metadata: {name: west}
spec:
  replicaSets: [{name: rs0, members: [b:1]}]
---
apiVersion: tidemark/v1
kind: BackupStorage
metadata: {name: s3}
spec: {url: 'file:///tmp/x'}
---
apiVersion: tidemark/v1
kind: BackupSchedule
metadata: {name: nightly}
spec: {cluster: west, storage: s3, type: physical, cron: '0 1 * * *'}
---
apiVersion: tidemark/v1
kind: Backup
metadata: {name: once}
spec: {cluster: east, storage: s3, type: physical}
";
        let v = validate_files(&[SourceFile {
            path: "all.yaml".into(),
            bytes: yaml.as_bytes().to_vec(),
        }]);
        assert!(v.is_valid(), "{:?}", v.errors);
        v.state
    }

    #[test]
    fn a_waiting_one_shot_belongs_to_its_documents_cluster() {
        let d = desired();
        let o = ObservedState::default();
        let blocked = |kind: &str, name: &str| Action::Blocked {
            kind: kind.into(),
            name: name.into(),
        };
        assert_eq!(
            step_cluster(&blocked("Backup", "once"), &d, &o).as_deref(),
            Some("east")
        );
        assert_eq!(
            step_cluster(&blocked("Backup", "nightly-20261204T010000Z"), &d, &o).as_deref(),
            Some("west"),
            "a schedule's slot"
        );
        assert_eq!(step_cluster(&blocked("Backup", "nightlyx-1"), &d, &o), None);
        // Another schedule whose name starts with this one's is not this one's slot.
        assert_eq!(
            step_cluster(&blocked("Backup", "nightly-eu-20261204T010000Z"), &d, &o),
            None
        );
    }
}
