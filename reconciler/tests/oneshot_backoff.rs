//! A one-shot whose step keeps failing is tried again after a wait that doubles with each
//! failure, not on every pass; the wait and the last error are shown beside its ledger
//! record, never written into it.

use chrono::{DateTime, Duration, Utc};
use tidemark_reconciler::execute::Executor;
use tidemark_reconciler::run::Reconciler;
use tidemark_reconciler::source::DirSource;
use tidemark_schema::control::{OneShotRecord, Retry, RunStatus, oneshot_key, retry_key};
use tidemark_store::control::ControlPlane;

const CLUSTER: &str = "apiVersion: tidemark/v1\nkind: Cluster\nmetadata:\n  name: c1\nspec:\n  \
                       replicaSets:\n    - name: rs0\n      members: [\"db1:27017\"]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_one_shot_waits_longer_after_each_failure() {
    let policies = tempfile::TempDir::new().unwrap();
    std::fs::write(policies.path().join("cluster.yaml"), CLUSTER).unwrap();
    let control_dir = tempfile::TempDir::new().unwrap();
    let control = ControlPlane::open_writable(control_dir.path().to_str().unwrap()).unwrap();
    let ex = Executor {
        control: control.clone(),
        dead_after: Duration::seconds(5),
        op_deadline: Duration::hours(1),
        go_timeout: Duration::minutes(5),
        storage_env: Vec::new(),
        bell: Default::default(),
        signer: None,
    };
    let t0: DateTime<Utc> = "2026-03-10T12:00:00Z".parse().unwrap();
    // A running backup whose op is gone and whose record cannot rebuild it: every try of
    // its step fails the same way.
    let key = oneshot_key("backup", "stuck");
    let stuck: OneShotRecord = serde_json::from_value(serde_json::json!({
        "kind": "Backup", "name": "stuck", "opId": "20260310T115959000Z-backup-stuck",
        "startedAt": t0 - Duration::seconds(1), "status": "running",
    }))
    .unwrap();
    control.put(&key, &stuck).await.unwrap();
    let mut rec = Reconciler::new(DirSource::new(policies.path()), ex);
    let retry = |control: ControlPlane| async move {
        let r: OneShotRecord = control
            .get(&oneshot_key("backup", "stuck"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.status, RunStatus::Running);
        control
            .get::<Retry>(&retry_key("backup", "stuck"))
            .await
            .unwrap()
            .expect("the failure is shown")
    };

    let report = rec.pass(t0).await.unwrap();
    assert!(!report.errors.is_empty(), "the step failed");
    let first = retry(control.clone()).await;
    assert_eq!(
        (first.failures, first.next_at),
        (1, t0 + Duration::seconds(1))
    );
    assert!(first.error.contains("stuck"), "{}", first.error);

    // Passes before the wait is over do not try it (they follow every 250 ms).
    for ms in [250, 500, 750] {
        let report = rec.pass(t0 + Duration::milliseconds(ms)).await.unwrap();
        assert!(
            report.errors.is_empty(),
            "tried again at +{ms} ms: {:?}",
            report.errors
        );
        assert!(
            report.running.iter().any(|r| r.contains("next try at")),
            "{:?}",
            report.running
        );
    }
    assert_eq!(retry(control.clone()).await.failures, 1);

    // Once it is due, it is tried, fails again and waits twice as long.
    let t1 = t0 + Duration::seconds(1);
    rec.pass(t1).await.unwrap();
    let second = retry(control.clone()).await;
    assert_eq!(
        (second.failures, second.next_at),
        (2, t1 + Duration::seconds(2))
    );
    rec.pass(t1 + Duration::seconds(1)).await.unwrap();
    assert_eq!(retry(control.clone()).await.failures, 2);
}
