//! A standalone node driven through the official `mongodb` driver and raw TCP: CRUD, errors,
//! the legacy handshake, the backup cursor, shutdown, crash recovery and corruption.

use bson::{Document, doc};
use mongod_sim::client::BlockingConn;
use mongod_sim::harness::{Process, Standalone, corrupt_file, fast_flags, free_port};
use mongod_sim::wire::{self, Header, Message};
use mongodb::Client;
use std::time::Duration;

async fn client(p: &Process) -> Client {
    Client::with_uri_str(p.uri()).await.expect("client")
}

async fn all(cursor: &mut mongodb::Cursor<Document>) -> Vec<Document> {
    let mut out = Vec::new();
    while cursor.advance().await.expect("advance") {
        out.push(cursor.deserialize_current().expect("doc"));
    }
    out
}

#[tokio::test]
async fn driver_crud_round_trip() {
    let s = Standalone::start(&[]).unwrap();
    let c = client(&s.process).await;
    let coll = c.database("app").collection::<Document>("items");
    coll.insert_many(vec![
        doc! {"_id": 1, "n": 1},
        doc! {"_id": 2, "n": 2},
        doc! {"_id": 3, "n": 3},
    ])
    .await
    .unwrap();
    let dup = coll.insert_one(doc! {"_id": 1}).await.unwrap_err();
    assert!(dup.to_string().contains("E11000"), "{dup}");
    coll.update_one(doc! {"_id": 2}, doc! {"$inc": {"n": 10}})
        .await
        .unwrap();
    coll.delete_one(doc! {"_id": 3}).await.unwrap();
    let docs = all(&mut coll
        .find(doc! {"n": {"$gte": 1}})
        .sort(doc! {"_id": 1})
        .await
        .unwrap())
    .await;
    assert_eq!(
        docs,
        vec![doc! {"_id": 1, "n": 1}, doc! {"_id": 2, "n": 12}]
    );
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 2);
    // Enough documents to need getMore.
    let many: Vec<Document> = (100..400).map(|i| doc! {"_id": i}).collect();
    coll.insert_many(many).await.unwrap();
    assert_eq!(
        all(&mut coll.find(doc! {}).batch_size(50).await.unwrap())
            .await
            .len(),
        302
    );
    let names = c.database("app").list_collection_names().await.unwrap();
    assert_eq!(names, vec!["items".to_string()]);
    let local = c
        .database("local")
        .collection::<Document>("replset.minvalid");
    local
        .insert_one(doc! {"_id": "x", "ts": bson::Timestamp { time: 1, increment: 1 }})
        .await
        .unwrap();
    assert_eq!(local.count_documents(doc! {}).await.unwrap(), 1);
    let info = c
        .database("admin")
        .run_command(doc! {"buildInfo": 1})
        .await
        .unwrap();
    assert_eq!(info.get_str("psmdbVersion").unwrap(), "7.0.14-8");
    let status = c
        .database("admin")
        .run_command(doc! {"serverStatus": 1})
        .await
        .unwrap();
    assert_eq!(
        status
            .get_document("storageEngine")
            .unwrap()
            .get_str("name")
            .unwrap(),
        "wiredTiger"
    );
    let opts = c
        .database("admin")
        .run_command(doc! {"getCmdLineOpts": 1})
        .await
        .unwrap();
    let parsed = opts.get_document("parsed").unwrap();
    assert_eq!(
        parsed.get_document("net").unwrap().get_i32("port").unwrap(),
        s.process.port as i32
    );
}

#[tokio::test]
async fn unknown_command_gets_code_59() {
    let s = Standalone::start(&[]).unwrap();
    let c = client(&s.process).await;
    let err = c
        .database("admin")
        .run_command(doc! {"frobnicate": 1})
        .await
        .unwrap_err();
    match *err.kind {
        mongodb::error::ErrorKind::Command(ref e) => {
            assert_eq!(e.code, 59);
            assert_eq!(e.code_name, "CommandNotFound");
        }
        ref other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn legacy_op_query_is_master_gets_op_reply() {
    let s = Standalone::start(&[]).unwrap();
    let mut conn = BlockingConn::connect(&s.process.host(), Duration::from_secs(2)).unwrap();
    let bytes =
        wire::encode_query(7, "admin.$cmd", &doc! {"isMaster": 1, "helloOk": true}).unwrap();
    let (header, body): (Header, Vec<u8>) = conn.roundtrip(&bytes).unwrap();
    assert_eq!(header.op_code, wire::OP_REPLY);
    assert_eq!(header.response_to, 7);
    let Message::Reply { documents } = wire::decode(header.op_code, &body).unwrap() else {
        panic!("not a reply")
    };
    assert!(documents[0].get_bool("ismaster").unwrap());
    assert_eq!(documents[0].get_i32("maxWireVersion").unwrap(), 21);
    assert!(!documents[0].contains_key("topologyVersion"));
    // Anything else over OP_QUERY is refused, as by mongod 6.0+.
    let bytes = wire::encode_query(8, "admin.$cmd", &doc! {"ping": 1}).unwrap();
    let (header, body) = conn.roundtrip(&bytes).unwrap();
    let Message::Reply { documents } = wire::decode(header.op_code, &body).unwrap() else {
        panic!("not a reply")
    };
    assert_eq!(documents[0].get_i32("code").unwrap(), 352);
}

#[tokio::test]
async fn community_flavor_refuses_backup_cursor() {
    let s = Standalone::start(&["--sim-flavor", "community"]).unwrap();
    let c = client(&s.process).await;
    let info = c
        .database("admin")
        .run_command(doc! {"buildInfo": 1})
        .await
        .unwrap();
    assert!(!info.contains_key("psmdbVersion"));
    let err = c
        .database("admin")
        .aggregate(vec![doc! {"$backupCursor": {}}])
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("Unrecognized pipeline stage name: '$backupCursor'"),
        "{err}"
    );
}

#[tokio::test]
async fn backup_cursor_round_trip() {
    let s = Standalone::start(&[]).unwrap();
    let c = client(&s.process).await;
    let coll = c.database("app").collection::<Document>("items");
    coll.insert_many((0..50).map(|i| doc! {"_id": i, "pad": "x".repeat(100)}))
        .await
        .unwrap();
    c.database("admin")
        .run_command(doc! {"fsync": 1})
        .await
        .unwrap();
    let admin = c.database("admin");
    // Like PSMDB's, the backup cursor never exhausts: read batches until an empty nextBatch.
    let r = admin
        .run_command(
            doc! {"aggregate": 1, "pipeline": [{"$backupCursor": {}}], "cursor": {"batchSize": 3}},
        )
        .await
        .unwrap();
    let cur = r.get_document("cursor").unwrap();
    let id = cur.get_i64("id").unwrap();
    let mut docs: Vec<Document> = cur
        .get_array("firstBatch")
        .unwrap()
        .iter()
        .map(|d| d.as_document().unwrap().clone())
        .collect();
    loop {
        let r = admin
            .run_command(doc! {"getMore": id, "collection": "$cmd.aggregate"})
            .await
            .unwrap();
        let next = r.get_document("cursor").unwrap();
        assert_eq!(next.get_i64("id").unwrap(), id);
        let batch = next.get_array("nextBatch").unwrap();
        if batch.is_empty() {
            break;
        }
        docs.extend(batch.iter().map(|d| d.as_document().unwrap().clone()));
    }
    let meta = docs.remove(0);
    let meta = meta.get_document("metadata").unwrap();
    assert!(meta.get("backupId").is_some());
    assert_eq!(
        std::path::Path::new(meta.get_str("dbpath").unwrap()),
        std::fs::canonicalize(&s.process.dbpath).unwrap()
    );
    let files: Vec<(String, i64)> = docs
        .iter()
        .map(|d| {
            (
                d.get_str("filename").unwrap().to_string(),
                d.get_i64("fileSize").unwrap(),
            )
        })
        .collect();
    let names: Vec<String> = files
        .iter()
        .map(|(f, _)| f.rsplit('/').next().unwrap().to_string())
        .collect();
    for want in [
        "WiredTiger",
        "WiredTiger.wt",
        "WiredTiger.turtle",
        "_mdb_catalog.wt",
        "sizeStorer.wt",
        "storage.bson",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    assert!(
        names.iter().any(|n| n.starts_with("collection-")),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n.starts_with("WiredTigerLog.")),
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n == "mongod.lock"));
    let before: Vec<Vec<u8>> = files
        .iter()
        .map(|(f, _)| std::fs::read(f).unwrap())
        .collect();
    for ((f, size), bytes) in files.iter().zip(&before) {
        assert!(std::path::Path::new(f).is_absolute());
        assert_eq!(bytes.len() as i64, *size, "{f}");
    }
    // A second backup cursor is refused while this one is open.
    let err = admin
        .aggregate(vec![doc! {"$backupCursor": {}}])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("existing backup cursor"), "{err}");
    // Writes and checkpoint intervals pass; the listed files do not change.
    coll.insert_many((50..100).map(|i| doc! {"_id": i}))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(900)).await;
    for ((f, _), bytes) in files.iter().zip(&before) {
        assert_eq!(
            &std::fs::read(f).unwrap(),
            bytes,
            "{f} changed under the backup cursor"
        );
    }
    let r = admin
        .run_command(doc! {"killCursors": "$cmd.aggregate", "cursors": [id]})
        .await
        .unwrap();
    assert_eq!(r.get_array("cursorsKilled").unwrap().len(), 1);
    let r = admin
        .run_command(doc! {"aggregate": 1, "pipeline": [{"$backupCursor": {}}], "cursor": {}})
        .await
        .unwrap();
    assert_ne!(r.get_document("cursor").unwrap().get_i64("id").unwrap(), 0);
}

#[test]
fn backup_cursor_dies_after_cursor_timeout() {
    let s = Standalone::start(&["--setParameter", "cursorTimeoutMillis=300"]).unwrap();
    let mut conn = s.process.connect().unwrap();
    let r = conn
        .command(
            "admin",
            doc! {"aggregate": 1, "pipeline": [{"$backupCursor": {}}], "cursor": {}},
        )
        .unwrap();
    let id = r.get_document("cursor").unwrap().get_i64("id").unwrap();
    assert_ne!(id, 0);
    // Kept alive by getMore...
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(120));
        let r = conn
            .command(
                "admin",
                doc! {"getMore": id, "collection": "$cmd.aggregate"},
            )
            .unwrap();
        assert_eq!(
            r.get_document("cursor").unwrap().get_i64("id").unwrap(),
            id,
            "{r}"
        );
    }
    // ...and dead after the timeout without one.
    std::thread::sleep(Duration::from_millis(1500));
    let r = conn
        .command(
            "admin",
            doc! {"getMore": id, "collection": "$cmd.aggregate"},
        )
        .unwrap();
    assert_eq!(r.get_i32("code").unwrap(), 43, "{r}");
    let r = conn
        .command(
            "admin",
            doc! {"aggregate": 1, "pipeline": [{"$backupCursor": {}}], "cursor": {}},
        )
        .unwrap();
    assert_eq!(r.get_f64("ok").unwrap(), 1.0, "{r}");
}

#[tokio::test]
async fn clean_shutdown_and_kill9_recovery() {
    let mut s = Standalone::start(&[]).unwrap();
    let pid = std::fs::read_to_string(s.process.dbpath.join("mongod.lock")).unwrap();
    assert_eq!(pid.trim(), s.process.pid().unwrap().to_string());
    {
        let c = client(&s.process).await;
        c.database("app")
            .collection::<Document>("a")
            .insert_many((0..20).map(|i| doc! {"_id": i}))
            .await
            .unwrap();
    }
    let status = s.process.shutdown(false).unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(
        std::fs::metadata(s.process.dbpath.join("mongod.lock"))
            .unwrap()
            .len(),
        0
    );
    // Restart, write more, then kill -9 before any checkpoint can run.
    let args: Vec<String> = ["--sim-checkpoint-interval-ms", "600000"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut p = Process::spawn(
        &s.process.dbpath,
        &s.dir.path().join("2.log"),
        free_port().unwrap(),
        &args,
    )
    .unwrap();
    p.wait_ready(Duration::from_secs(20)).unwrap();
    {
        let c = client(&p).await;
        let coll = c.database("app").collection::<Document>("a");
        assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 20);
        coll.insert_many((20..30).map(|i| doc! {"_id": i}))
            .await
            .unwrap();
        coll.delete_one(doc! {"_id": 0}).await.unwrap();
    }
    p.kill();
    assert!(
        std::fs::metadata(p.dbpath.join("mongod.lock"))
            .unwrap()
            .len()
            > 0,
        "lock file stays non-empty after kill -9"
    );
    let mut p = Process::spawn(
        &s.process.dbpath,
        &s.dir.path().join("3.log"),
        free_port().unwrap(),
        &fast_flags(),
    )
    .unwrap();
    p.wait_ready(Duration::from_secs(20)).unwrap();
    // The read's retry must not wait out the default 30 s server selection.
    let c = Client::with_uri_str(format!("{}&serverSelectionTimeoutMS=2000", p.uri()))
        .await
        .unwrap();
    let coll = c.database("app").collection::<Document>("a");
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 29);
    assert!(coll.find_one(doc! {"_id": 0}).await.unwrap().is_none());
    assert!(
        p.log_lines()
            .iter()
            .any(|l| l["msg"] == "Detected unclean shutdown - Lock file is not empty")
    );
}

/// The process exits with failure, and its first fatal log line names `file`.
fn dies_naming(p: &mut Process, file: &str) {
    let status = p.wait_exit(Duration::from_secs(20)).unwrap();
    assert!(!status.success());
    let fatal: Vec<_> = p
        .log_lines()
        .into_iter()
        .filter(|l| l["s"] == "F")
        .collect();
    assert!(!fatal.is_empty(), "no fatal log line");
    assert!(
        fatal[0]["attr"]["error"].as_str().unwrap().contains(file),
        "{:?}",
        fatal[0]
    );
}

/// WiredTiger verifies a page's checksum when it reads the page, not when it opens the file:
/// mongod starts on a dbPath with a damaged collection file and dies the first time that
/// collection is read. A file whose header is damaged fails at start-up.
#[tokio::test]
async fn corrupted_file_is_fatal_when_read_and_a_bad_header_at_start() {
    let mut s = Standalone::start(&[]).unwrap();
    {
        let c = client(&s.process).await;
        c.database("app")
            .collection::<Document>("a")
            .insert_many((0..20).map(|i| doc! {"_id": i, "v": "data"}))
            .await
            .unwrap();
    }
    s.process.shutdown(false).unwrap();
    let bad = corrupt_file(&s.process.dbpath, "collection-").unwrap();
    let name = bad.file_name().unwrap().to_string_lossy().into_owned();
    let mut p = Process::spawn(
        &s.process.dbpath,
        &s.dir.path().join("2.log"),
        free_port().unwrap(),
        &[],
    )
    .unwrap();
    p.wait_ready(Duration::from_secs(20)).unwrap();
    // The read's retry must not wait out the default 30 s server selection.
    let c = Client::with_uri_str(format!("{}&serverSelectionTimeoutMS=2000", p.uri()))
        .await
        .unwrap();
    let read = c
        .database("app")
        .collection::<Document>("a")
        .find_one(doc! {})
        .await;
    assert!(read.is_err(), "a corrupt page was served: {read:?}");
    dies_naming(&mut p, &name);

    // A truncated file: its header no longer matches, and start-up refuses.
    let bytes = std::fs::read(&bad).unwrap();
    std::fs::write(&bad, &bytes[..bytes.len() - 7]).unwrap();
    let mut p = Process::spawn(
        &s.process.dbpath,
        &s.dir.path().join("3.log"),
        free_port().unwrap(),
        &[],
    )
    .unwrap();
    dies_naming(&mut p, &name);
}

#[test]
fn faults_fail_startup_and_refuse_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Process::spawn(
        &dir.path().join("db"),
        &dir.path().join("a.log"),
        free_port().unwrap(),
        &["--sim-fail-startup".into(), "disk on fire".into()],
    )
    .unwrap();
    assert_eq!(
        p.wait_exit(Duration::from_secs(20)).unwrap().code(),
        Some(100)
    );
    assert!(p.log_lines().iter().any(|l| {
        l["s"] == "F"
            && l["attr"]["error"]
                .as_str()
                .unwrap_or("")
                .contains("disk on fire")
    }));
    let mut s = Standalone::start(&["--sim-refuse-shutdown"]).unwrap();
    let err = s.process.shutdown(false).unwrap_err().to_string();
    assert!(err.contains("shutdown refused"), "{err}");
    assert!(s.process.is_running());
    s.process
        .command("admin", doc! {"simFault": 1, "refuseShutdown": false})
        .unwrap();
    assert_eq!(s.process.shutdown(false).unwrap().code(), Some(0));
}

#[test]
fn config_file_and_version() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    std::fs::create_dir_all(&db).unwrap();
    let port = free_port().unwrap();
    let conf = dir.path().join("mongod.conf");
    std::fs::write(&conf, format!("storage:\n  dbPath: {}\nnet:\n  port: {port}\n  bindIp: 127.0.0.1\nsetParameter:\n  cursorTimeoutMillis: 1234\n", db.display())).unwrap();
    let bin = mongod_sim::harness::binary().unwrap();
    let out = std::process::Command::new(&bin)
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("db version v7.0.14"));
    let child = std::process::Command::new(&bin)
        .arg("-f")
        .arg(&conf)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut conn = loop {
        if let Ok(c) = BlockingConn::connect(&format!("127.0.0.1:{port}"), Duration::from_secs(1)) {
            break c;
        }
        assert!(std::time::Instant::now() < deadline, "never came up");
        std::thread::sleep(Duration::from_millis(20));
    };
    let r = conn
        .command("admin", doc! {"getParameter": 1, "cursorTimeoutMillis": 1})
        .unwrap();
    assert_eq!(r.get_i64("cursorTimeoutMillis").unwrap(), 1234);
    let _ = conn.command("admin", doc! {"shutdown": 1});
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    // Without --logpath, mongod logs JSON lines to stdout.
    let first = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    let line: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(line["msg"], "MongoDB starting");
    assert!(line["t"]["$date"].is_string());
}

#[test]
fn crash_at_checkpoint_recovers_on_restart() {
    let mut s = Standalone::start(&[]).unwrap();
    let docs: Vec<Document> = (0..30).map(|i| doc! {"_id": i}).collect();
    s.process
        .command("app", doc! {"insert": "c", "documents": docs})
        .unwrap();
    s.process
        .command("admin", doc! {"simFault": 1, "crashAt": "checkpoint"})
        .unwrap();
    let status = s.process.wait_exit(Duration::from_secs(20)).unwrap();
    assert!(!status.success(), "the simulated crash aborts: {status}");
    let mut p = Process::spawn(
        &s.process.dbpath,
        &s.dir.path().join("2.log"),
        free_port().unwrap(),
        &fast_flags(),
    )
    .unwrap();
    p.wait_ready(Duration::from_secs(20)).unwrap();
    assert_eq!(
        p.command("app", doc! {"count": "c"})
            .unwrap()
            .get_i64("n")
            .unwrap(),
        30
    );
}

/// Encryption at rest: the data is unreadable without the key, and a start with another
/// key (or none) fails with a fatal log line naming the key database, as PSMDB does.
#[test]
fn encrypted_data_opens_only_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let key_a = dir.path().join("a.key");
    let key_b = dir.path().join("b.key");
    std::fs::write(&key_a, "c2VjcmV0LWtleS1hLTMyLWJ5dGVzLWxvbmctLS0tLS0=\n").unwrap();
    std::fs::write(&key_b, "c2VjcmV0LWtleS1iLTMyLWJ5dGVzLWxvbmctLS0tLS0=\n").unwrap();
    let db = dir.path().join("db");
    std::fs::create_dir_all(&db).unwrap();
    let dbpath = db.to_str().unwrap().to_string();
    let with = |key: &std::path::Path| {
        vec![
            "--dbpath".to_string(),
            dbpath.clone(),
            "--enableEncryption".into(),
            "--encryptionKeyFile".into(),
            key.to_str().unwrap().into(),
        ]
    };
    let args = with(&key_a);
    let node = Standalone::start(&args.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
    node.process.command(
        "app",
        doc! {"insert": "secret", "documents": [{"_id": 1, "text": "plaintext-marker-0123456789"}]},
    )
    .unwrap();
    let opts = node
        .process
        .command("admin", doc! {"getCmdLineOpts": 1})
        .unwrap();
    let security = opts
        .get_document("parsed")
        .unwrap()
        .get_document("security")
        .unwrap();
    assert!(security.get_bool("enableEncryption").unwrap());
    assert_eq!(
        security.get_str("encryptionCipherMode").unwrap(),
        "AES256-CBC"
    );
    assert!(
        !opts.to_string().contains("c2VjcmV0"),
        "no key material: {opts}"
    );
    node.process.command("admin", doc! {"fsync": 1}).unwrap();
    drop(node);
    // No file holds the document in the clear.
    for e in walkdir(&db) {
        let bytes = std::fs::read(&e).unwrap();
        assert!(
            !bytes
                .windows(27)
                .any(|w| w == b"plaintext-marker-0123456789"),
            "{} holds plaintext",
            e.display()
        );
    }
    for (args, says) in [
        (with(&key_b), "master key does not match"),
        (
            vec!["--dbpath".to_string(), dbpath.clone()],
            "encryption is not enabled",
        ),
    ] {
        let log = dir.path().join("refused.log");
        let _ = std::fs::remove_file(&log);
        let status = std::process::Command::new(mongod_sim::harness::binary().unwrap())
            .args(&args)
            .args(["--port", &free_port().unwrap().to_string(), "--logpath"])
            .arg(&log)
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(100), "{args:?}");
        let text = std::fs::read_to_string(&log).unwrap();
        let fatal = text
            .lines()
            .find(|l| l.contains("\"s\":\"F\""))
            .unwrap_or_else(|| panic!("no fatal line: {text}"));
        assert!(fatal.contains(says), "{fatal}");
    }
    let node = Standalone::start(&args.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
    let got = node
        .process
        .command("app", doc! {"find": "secret", "filter": {}})
        .unwrap();
    assert!(got.to_string().contains("plaintext-marker"), "{got}");
}

fn walkdir(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_dir() {
            out.extend(walkdir(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}
