//! One conformance suite for the control-plane storage seam, run against every backend:
//! a local directory and a real S3 API (`moto_server` on 127.0.0.1). The same records
//! written under the documented layout must be observed identically.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::{ObjectStoreExt, PutPayload, path::Path};
use tempfile::TempDir;
use tidemark_reconciler::control::{ControlError, ControlStore, observe, open_control};
use tidemark_schema::control::{
    BackupRecord, BackupReplicaSet, DiskFacts, Heartbeat, OneShotRecord, RunStatus, catalog_key,
    heartbeat_key, oneshot_key,
};
use tidemark_schema::model::BackupType;

/// A moto S3 server on a free loopback port, killed on drop.
struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    fn start() -> Moto {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // `python3 -m moto.server` works wherever pip put moto, shim or no shim.
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 is needed to run moto_server");
        let started = Instant::now();
        let mut moto = Moto { child, port };
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!(
                    "moto_server exited ({status}): install it with python3 -m pip install 'moto[server]' (scripts/test does)"
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "moto_server did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    /// Creates a bucket with a plain HTTP PUT (object_store does not create buckets).
    fn create_bucket(&self, bucket: &str) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(s, "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", self.port).unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn s3_control(moto: &Moto, bucket: &str) -> ControlStore {
    moto.create_bucket(bucket);
    // Endpoint and credentials come from the environment in production; the test sets
    // them on the builder so parallel tests do not race on process-wide variables.
    let store = object_store::aws::AmazonS3Builder::new()
        .with_url(format!("s3://{bucket}"))
        .with_endpoint(format!("http://127.0.0.1:{}", moto.port))
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .build()
        .unwrap();
    ControlStore {
        url: format!("s3://{bucket}"),
        store: Some(Arc::new(store)),
    }
}

fn dir_control(dir: &TempDir) -> ControlStore {
    open_control(dir.path().to_str().unwrap()).unwrap()
}

async fn put(control: &ControlStore, key: &str, bytes: Vec<u8>) {
    control
        .store
        .as_ref()
        .unwrap()
        .put(&Path::from(key), PutPayload::from(bytes))
        .await
        .unwrap();
}

fn records() -> (OneShotRecord, BackupRecord, Heartbeat) {
    let at = "2026-03-01T01:00:00Z".parse().unwrap();
    (
        OneShotRecord {
            kind: "Restore".into(),
            name: "drill".into(),
            op_id: "20260301T010000000Z-restore-drill".into(),
            started_at: at,
            finished_at: None,
            status: RunStatus::Running,
            message: String::new(),
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
            }],
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
            extra: Default::default(),
        },
    )
}

/// The suite every backend must pass.
async fn conformance(control: ControlStore) {
    assert_eq!(
        observe(&control).await.unwrap(),
        Default::default(),
        "{}: empty",
        control.url
    );
    let (oneshot, backup, heartbeat) = records();
    put(
        &control,
        &oneshot_key("restore", "drill"),
        serde_json::to_vec(&oneshot).unwrap(),
    )
    .await;
    put(
        &control,
        &catalog_key(&backup.name),
        serde_json::to_vec(&backup).unwrap(),
    )
    .await;
    put(
        &control,
        &heartbeat_key("prod", "rs0", "db2:27017"),
        serde_json::to_vec(&heartbeat).unwrap(),
    )
    .await;
    let observed = observe(&control).await.unwrap();
    assert_eq!(
        observed.oneshots.get(&("restore".into(), "drill".into())),
        Some(&oneshot),
        "{}",
        control.url
    );
    assert_eq!(observed.backups, vec![backup], "{}", control.url);
    assert_eq!(observed.heartbeats, vec![heartbeat], "{}", control.url);
    assert!(observed.applied.is_none());

    // A corrupt object is an error that names the object, never a silent skip.
    put(&control, &catalog_key("broken"), b"{not json".to_vec()).await;
    let err = observe(&control).await.unwrap_err();
    assert!(matches!(err, ControlError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("catalog/broken.json"), "{err}");
}

#[tokio::test]
async fn local_directory_backend() {
    let dir = TempDir::new().unwrap();
    conformance(dir_control(&dir)).await;
}

#[tokio::test]
async fn s3_backend_on_moto() {
    let moto = Moto::start();
    conformance(s3_control(&moto, "tidemark-control")).await;
}

#[tokio::test]
async fn a_missing_directory_is_an_empty_control_plane_and_bad_urls_are_named() {
    let observed = observe(&open_control("/nonexistent/tidemark-control").unwrap())
        .await
        .unwrap();
    assert_eq!(observed, Default::default());
    let err = open_control("ftp://host/x").err().unwrap();
    assert!(err.to_string().contains("ftp://host/x"), "{err}");
    assert!(
        err.to_string().contains("scheme \"ftp\" is not supported"),
        "{err}"
    );
}
