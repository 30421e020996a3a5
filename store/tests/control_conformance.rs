//! One conformance suite for the control-plane storage seam, run against every backend:
//! a local directory and a real S3 API (`moto_server` on 127.0.0.1). The same records
//! written under the documented layout must be observed identically.

use std::sync::Arc;

use object_store::local::LocalFileSystem;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, path::Path};
use tempfile::TempDir;
use tidemark_schema::control::{
    BackupRecord, BackupReplicaSet, DiskFacts, Heartbeat, OneShotRecord, RunStatus, catalog_key,
    heartbeat_key, oneshot_key,
};
use tidemark_schema::model::BackupType;
use tidemark_store::control::{ControlError, ControlPlane, Created, observe};
use tidemark_testkit::Moto;

/// A backend: the client under test, and a raw handle on the same store through which
/// the test writes what a buggy or older writer could have left there.
struct Backend {
    control: ControlPlane,
    raw: Arc<dyn ObjectStore>,
}

fn s3_backend(moto: &Moto, bucket: &str) -> Backend {
    let raw: Arc<dyn ObjectStore> = Arc::new(moto.store(bucket));
    Backend {
        control: ControlPlane::from_store(&format!("s3://{bucket}"), raw.clone()),
        raw,
    }
}

fn dir_backend(dir: &TempDir) -> Backend {
    Backend {
        control: ControlPlane::open_writable(dir.path().to_str().unwrap()).unwrap(),
        raw: Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap()),
    }
}

async fn put(b: &Backend, key: &str, bytes: Vec<u8>) {
    b.raw
        .put(&Path::from(key), PutPayload::from(bytes))
        .await
        .unwrap();
}

fn records() -> (OneShotRecord, BackupRecord, Heartbeat) {
    let at = "2026-03-01T01:00:00Z".parse().unwrap();
    (
        OneShotRecord {
            kind: tidemark_schema::control::OneShotKind::Restore,
            name: "drill".into(),
            op_id: "20260301T010000000Z-restore-drill".into(),
            started_at: at,
            finished_at: None,
            status: RunStatus::Running,
            message: String::new(),
            started_with: None,
            epoch: None,
            drill: None,
            selective: None,
            forgotten: None,
        },
        BackupRecord {
            name: "nightly-20260301T010000Z".into(),
            cluster: "prod".into(),
            storage: "s3".into(),
            schedule: Some("nightly".into()),
            backup_type: BackupType::Physical,
            status: RunStatus::Done,
            complete: true,
            started_at: at,
            finished_at: Some(at),
            last_write: Some(at),
            replica_sets: vec![BackupReplicaSet {
                name: "rs0".into(),
                node: "db2:27017".into(),
                mongod_version: "7.0.14-8".into(),
                uncompressed_bytes: 1 << 30,
                stored_bytes: 1 << 28,
                encryption: None,
                encryption_recorded: false,
                storage_options: Default::default(),
                collections: Default::default(),
                last_write_optime: None,
            }],
            deleting: None,
            verification: None,
            incremental: None,
        },
        Heartbeat {
            cluster: "prod".into(),
            replica_set: "rs0".into(),
            node: "db2:27017".into(),
            at,
            agent_version: "0.1.0".into(),
            healthy: true,
            role: "SECONDARY".into(),
            hidden: false,
            delayed: false,
            arbiter: false,
            lag_seconds: 0.5,
            flavor: "psmdb".into(),
            mongod_version: "7.0.14-8".into(),
            backup_cursor: true,
            disk: Some(DiskFacts {
                total_bytes: 100,
                used_bytes: 10,
                available_bytes: 90,
            }),
            encryption: None,
            encryption_known: false,
            extra: Default::default(),
            slicing: Vec::new(),
            interval_ms: None,
            pickup: None,
            trust: None,
        },
    )
}

/// The suite every backend must pass.
async fn conformance(b: Backend) {
    let control = &b.control;
    assert_eq!(
        observe(control).await.unwrap(),
        Default::default(),
        "{}: empty",
        control.url()
    );
    // Create-if-absent: exactly one of two writers creates; the first value stays.
    assert_eq!(
        control.create("ledger/x.json", &1).await.unwrap(),
        Created::New
    );
    assert_eq!(
        control.create("ledger/x.json", &2).await.unwrap(),
        Created::Existed
    );
    assert_eq!(control.get::<i32>("ledger/x.json").await.unwrap(), Some(1));
    control.delete("ledger/x.json").await.unwrap();
    assert!(!control.exists("ledger/x.json").await.unwrap());
    let (oneshot, backup, heartbeat) = records();
    put(
        &b,
        &oneshot_key("restore", "drill"),
        serde_json::to_vec(&oneshot).unwrap(),
    )
    .await;
    put(
        &b,
        &catalog_key(&backup.name),
        serde_json::to_vec(&backup).unwrap(),
    )
    .await;
    put(
        &b,
        &heartbeat_key("prod", "rs0", "db2:27017"),
        serde_json::to_vec(&heartbeat).unwrap(),
    )
    .await;
    let observed = observe(control).await.unwrap();
    assert_eq!(
        observed.oneshots.get(&(
            tidemark_schema::control::OneShotKind::Restore,
            "drill".into()
        )),
        Some(&oneshot),
        "{}",
        control.url()
    );
    assert_eq!(observed.backups, vec![backup], "{}", control.url());
    assert_eq!(observed.heartbeats, vec![heartbeat], "{}", control.url());
    assert!(observed.applied.is_none());

    // A corrupt object is skipped with a warning that names it, never silently, and the
    // good records around it are still observed (one bad record must not stop the
    // reconciler for every cluster). A direct read of it is an error naming it.
    put(&b, &catalog_key("broken"), b"{not json".to_vec()).await;
    let observed = observe(control).await.unwrap();
    assert_eq!(observed.backups.len(), 1, "{}", control.url());
    assert_eq!(observed.warnings.len(), 1, "{:?}", observed.warnings);
    assert!(
        observed.warnings[0].contains("catalog/broken.json"),
        "{:?}",
        observed.warnings
    );
    let err = control
        .get::<BackupRecord>(&catalog_key("broken"))
        .await
        .unwrap_err();
    assert!(matches!(err, ControlError::Corrupt { .. }), "{err}");
}

#[tokio::test]
async fn local_directory_backend() {
    let dir = TempDir::new().unwrap();
    conformance(dir_backend(&dir)).await;
}

#[tokio::test]
async fn s3_backend_on_moto() {
    let moto = Moto::start();
    conformance(s3_backend(&moto, "tidemark-control")).await;
}

#[tokio::test]
async fn a_missing_directory_is_an_empty_control_plane_and_bad_urls_are_named() {
    let observed = observe(&ControlPlane::open("/nonexistent/tidemark-control").unwrap())
        .await
        .unwrap();
    assert_eq!(observed, Default::default());
    assert!(!std::path::Path::new("/nonexistent/tidemark-control").exists());
    let err = ControlPlane::open("ftp://host/x").err().unwrap();
    assert!(err.to_string().contains("ftp://host/x"), "{err}");
    assert!(
        err.to_string().contains("scheme \"ftp\" is not supported"),
        "{err}"
    );
}
