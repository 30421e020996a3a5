//! End-to-end tests of `tidemark agent` against mongod-sim replica sets: real processes,
//! a real control-plane directory, real file and S3 (moto) storage.

#[path = "support/rig.rs"]
mod rig;

use std::time::Duration;

use bson::{Document, doc};
use tempfile::TempDir;
use tidemark_schema::control::{OpCommand, Phase, finish_key};
use tidemark_schema::manifest::layout;
use tidemark_schema::model::{BackupType, Compression};
use tidemark_testkit::Moto;

use rig::*;

/// Restores `backup` on every member, restarts them as a replica set, and returns the
/// ids found on the new primary.
fn restore_everywhere_and_read(rig: &mut Rig, backup: &str, fallback: bool) -> Vec<i32> {
    let all: Vec<usize> = (0..rig.agents.len()).collect();
    let op = rig.restore_op(backup, fallback, &all);
    for &i in &all {
        rig.wait_done(&op, i);
    }
    for &i in &all {
        assert!(
            rig.report(&op, i, "recover").is_some(),
            "recover phase reported"
        );
        assert!(
            !rig.rs.dbpath(i).join("tidemark-restore.log").exists(),
            "restore log removed on success"
        );
        rig.rs.members[i] = None;
        rig.rs.restart(i).expect("restored member starts");
    }
    let p = rig.primary();
    rig.ids_on(p)
}

fn round_trip(rig: &mut Rig) {
    rig.insert(0..50);
    for i in 0..rig.agents.len() {
        rig.start_agent(i);
    }
    // Let a checkpoint pass so the data is in files, not only in the journal.
    std::thread::sleep(Duration::from_millis(800));
    let secondary = (rig.primary() + 1) % rig.agents.len();
    // Extend to the cluster's last write, as the reconciler does for a consistent point.
    let point = rig.last_write();
    let done = rig.backup_to("b1", secondary, Compression::Zstd, Some(point));
    assert!(rig.report_of_last_backup_extended(), "the extend phase ran");
    assert!(done.message.contains("backup b1 of"), "{}", done.message);
    let manifest = rig.manifest("b1");
    assert_eq!(manifest.node, rig.node(secondary));
    assert!(
        manifest.last_write >= point,
        "{:?} < {point:?}",
        manifest.last_write
    );
    assert!(
        manifest
            .files
            .iter()
            .any(|f| f.path.starts_with("collection-")),
        "{:?}",
        manifest.files
    );
    assert!(
        manifest
            .files
            .iter()
            .all(|f| f.checksum.starts_with("blake3:"))
    );
    // Written after the backup: must be gone after the restore.
    rig.insert(1000..1010);
    let ids = restore_everywhere_and_read(rig, "b1", false);
    assert_eq!(
        ids,
        (0..50).collect::<Vec<_>>(),
        "exactly the documents written before the backup"
    );
}

#[test]
fn round_trip_with_file_storage() {
    let mut rig = Rig::new("rtf", 3, &[]);
    round_trip(&mut rig);
}

#[test]
fn round_trip_with_s3_storage() {
    let moto = Moto::start();
    let mut rig = Rig::new("rts", 3, &[]);
    rig.use_s3(&moto, "tidemark-backups");
    round_trip(&mut rig);
}

#[test]
fn a_corrupted_object_fails_the_node_and_fallback_restores_it_byte_for_byte() {
    let mut rig = Rig::new("cor", 1, &[]);
    rig.insert(0..20);
    rig.start_agent(0);
    std::thread::sleep(Duration::from_millis(800));
    rig.backup("b1", 0, Compression::None);
    rig.insert(100..105);
    // Flip bytes in the middle of the largest stored collection file.
    let manifest = rig.manifest("b1");
    let victim = manifest
        .files
        .iter()
        .filter(|f| f.path.starts_with("collection-"))
        .max_by_key(|f| f.stored_size)
        .unwrap();
    let object = rig.storage_dir.path().join(victim.object.as_ref().unwrap());
    let mut bytes = std::fs::read(&object).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&object, bytes).unwrap();

    let op = rig.restore_op("b1", true, &[0]);
    let failed = rig.wait_final(&op, 0);
    assert_eq!(failed.phase, Phase::Error, "{}", failed.message);
    assert!(failed.message.contains("phase fetch"), "{}", failed.message);
    assert!(
        failed.message.contains(&victim.path),
        "names the file: {}",
        failed.message
    );
    // The fallback holds the node's data as it was when mongod stopped.
    let dbpath = rig.rs.dbpath(0);
    let fallback = dbpath.join(".tidemark-fallback");
    let before = tree_hash(&fallback, Some(".tidemark-fallback-state.json"));

    let revert = rig.op(
        OpCommand::RevertToFallback {
            restore_op: op.clone(),
        },
        &[0],
    );
    rig.wait_done(&revert, 0);
    assert!(!fallback.exists());
    assert_eq!(
        tree_hash(&dbpath, None),
        before,
        "the dbPath is byte-identical to before the restore"
    );
    rig.rs.members[0] = None;
    rig.rs.restart(0).unwrap();
    let mut expected: Vec<i32> = (0..20).collect();
    expected.extend(100..105);
    assert_eq!(
        rig.ids_on(rig.primary()),
        expected,
        "the node has its pre-restore data"
    );
}

#[test]
fn community_mongod_refuses_a_physical_backup() {
    if sim_only("a Community-flavoured node (--sim-flavor)") {
        return;
    }
    let mut rig = Rig::new("com", 1, &["--sim-flavor", "community"]);
    rig.start_agent(0);
    let command = rig.backup_command("b1", Compression::Zstd);
    let op = rig.op(command, &[0]);
    let r = rig.wait_final(&op, 0);
    assert_eq!(r.phase, Phase::Error);
    assert!(r.message.contains("no $backupCursor"), "{}", r.message);
    assert!(r.message.contains("community"), "{}", r.message);
    assert!(
        !rig.storage_dir.path().join("b1").exists(),
        "nothing was written to storage"
    );
}

#[test]
fn external_backup_waits_for_finish_then_writes_the_manifest() {
    let mut rig = Rig::new("ext", 1, &[]);
    rig.insert(0..5);
    rig.start_agent(0);
    let op = rig.op(
        OpCommand::Backup {
            backup: "snap1".into(),
            storage: rig.storage(Compression::Zstd),
            backup_type: BackupType::External,
            extend_to: None,
            snapshot_command: None,
            hash_namespaces: Vec::new(),
            barrier: false,
            incremental: None,
        },
        &[0],
    );
    let ready = rig.wait_phase(&op, 0, &["copyReady"]);
    let listed = ready.details["files"].as_array().unwrap().len();
    assert!(listed > 3, "{ready:?}");
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        rig.report(&op, 0, "done").is_none(),
        "waits for backup-finish"
    );
    let key = layout::rs_manifest_key("snap1", &rig.rs.name);
    assert!(
        !rig.storage_dir.path().join(&key).exists(),
        "no manifest before finish"
    );

    rig.finish("backup-finish", &op);
    // The signal keeps who gave it, for the audit trail.
    let signal: serde_json::Value =
        serde_json::from_slice(&std::fs::read(rig.control.path().join(finish_key(&op))).unwrap())
            .unwrap();
    assert!(signal["by"].as_str().unwrap().contains('@'), "{signal}");
    rig.wait_done(&op, 0);
    let m = rig.manifest("snap1");
    assert_eq!(m.backup_type, BackupType::External);
    assert_eq!(m.files.len(), listed);
    assert!(
        m.files
            .iter()
            .all(|f| f.object.is_none() && f.stored_size == 0)
    );
}

#[test]
fn an_agent_killed_mid_restore_never_reports_done_for_missing_files() {
    let mut rig = Rig::new("kil", 1, &[]);
    // Enough data that the download takes a moment.
    for chunk in 0..20 {
        let p = rig.primary();
        let docs: Vec<Document> = (chunk * 500..(chunk + 1) * 500)
            .map(|i| doc! {"_id": i, "payload": format!("{i:0>2000}")})
            .collect();
        rig.rs
            .process(p)
            .unwrap()
            .command("app", doc! {"insert": "items", "documents": docs})
            .unwrap();
    }
    rig.start_agent(0);
    std::thread::sleep(Duration::from_millis(800));
    rig.backup("b1", 0, Compression::Zstd);
    let op = rig.restore_op("b1", true, &[0]);
    // Kill the agent as soon as the download starts.
    rig.wait_phase(&op, 0, &["fetch"]);
    rig.kill_agent(0);
    let done_before_kill = rig.report(&op, 0, "done").is_some();
    rig.start_agent(0);
    let r = rig.wait_final(&op, 0);
    eprintln!("after the kill: {} ({})", r.phase, r.message);
    if r.phase == Phase::Done {
        // Only acceptable if every file really is there: the node starts with all data.
        assert!(
            done_before_kill,
            "a restarted agent must not finish someone else's download"
        );
    } else {
        assert!(
            r.message.contains("restarted during phase"),
            "{}",
            r.message
        );
        assert!(
            rig.rs.dbpath(0).join(".tidemark-fallback").exists(),
            "fallback kept for the decision"
        );
        let revert = rig.op(
            OpCommand::RevertToFallback {
                restore_op: op.clone(),
            },
            &[0],
        );
        rig.wait_done(&revert, 0);
        rig.rs.members[0] = None;
        rig.rs.restart(0).unwrap();
        assert_eq!(
            rig.ids_on(rig.primary()).len(),
            10_000,
            "the node is back as before"
        );
    }
}

#[test]
fn a_restore_waiting_for_go_touches_nothing_until_go_and_an_abort_leaves_the_node_as_it_was() {
    let mut rig = Rig::new("go", 1, &[]);
    rig.insert(0..10);
    rig.start_agent(0);
    std::thread::sleep(Duration::from_millis(800));
    rig.backup("b1", 0, Compression::Zstd);
    rig.insert(10..12);
    let restore = |rig: &mut Rig| {
        rig.op(
            OpCommand::Restore {
                backup: "b1".into(),
                storage: rig.storage(Compression::Zstd),
                fallback_enabled: true,
                external: false,
                wait_for_go: true,
                cannot_decrypt: Vec::new(),
                replica_set_map: Default::default(),
                sharding: None,
                stop_waves: Vec::new(),
                go_timeout_ms: None,
                point_in_time: None,
            },
            &[0],
        )
    };
    let wait_ready = |rig: &Rig, op: &str| drop(rig.wait_phase(op, 0, &["ready"]));
    // Abort: the reconciler ends the op because another node failed its checks.
    let aborted = restore(&mut rig);
    wait_ready(&rig, &aborted);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        rig.report(&aborted, 0, "stop").is_none(),
        "nothing touched before go"
    );
    let result = rig
        .control
        .path()
        .join(tidemark_schema::control::result_key(&aborted));
    std::fs::write(result, br#"{"status":"error"}"#).unwrap();
    let r = rig.wait_final(&aborted, 0);
    assert_eq!(r.phase, Phase::Error);
    assert!(r.message.contains("while waiting for go"), "{}", r.message);
    assert_eq!(
        rig.ids_on(0),
        (0..12).collect::<Vec<_>>(),
        "mongod kept running with its data"
    );

    // A closed gate (another node refused on its own first): untouched too.
    let closed = restore(&mut rig);
    wait_ready(&rig, &closed);
    let gate = rig
        .control
        .path()
        .join(tidemark_schema::control::go_key(&closed));
    std::fs::write(
        gate,
        br#"{"at":"2026-01-01T00:00:00Z","abort":"db9:27017: its agent restarted before go"}"#,
    )
    .unwrap();
    let r = rig.wait_final(&closed, 0);
    assert_eq!(r.phase, Phase::Error);
    assert!(
        r.message.contains("its agent restarted before go"),
        "{}",
        r.message
    );
    assert!(rig.report(&closed, 0, "stop").is_none(), "nothing touched");

    // Go: the restore proceeds.
    let op = restore(&mut rig);
    wait_ready(&rig, &op);
    rig.open_gate(&op);
    rig.wait_done(&op, 0);
    let start = rig.op(
        OpCommand::StartMongod {
            restore_op: op.clone(),
        },
        &[0],
    );
    let started = rig.wait_done(&start, 0);
    let pid = started.details["pid"].as_u64().unwrap() as i32;
    // The member was started by the agent, detached: stop it when the test ends.
    struct Reap(i32);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.0),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    let _reap = Reap(pid);
    assert_eq!(
        rig.ids_on(0),
        (0..10).collect::<Vec<_>>(),
        "the restored node serves the backup's data"
    );
    let remove = rig.op(
        OpCommand::RemoveFallback {
            restore_op: op.clone(),
        },
        &[0],
    );
    rig.wait_done(&remove, 0);
    assert!(!rig.rs.dbpath(0).join(".tidemark-fallback").exists());
}

#[test]
fn external_backup_by_snapshot_command_then_external_restore() {
    let mut rig = Rig::new("snp", 1, &[]);
    rig.insert(0..15);
    rig.start_agent(0);
    std::thread::sleep(Duration::from_millis(800));
    // The "snapshot tool": copies the listed files, as LVM or a cloud snapshot would.
    let snapshot = TempDir::new().unwrap();
    let script = format!(
        r#"while read -r f; do rel="${{f#"$TIDEMARK_DBPATH"/}}"; mkdir -p "{snap}/$(dirname "$rel")"; cp "$f" "{snap}/$rel"; done < "$TIDEMARK_FILE_LIST""#,
        snap = snapshot.path().display()
    );
    let op = rig.op(
        OpCommand::Backup {
            backup: "snap1".into(),
            storage: rig.storage(Compression::Zstd),
            backup_type: BackupType::External,
            extend_to: None,
            snapshot_command: Some(vec!["sh".into(), "-c".into(), script]),
            hash_namespaces: Vec::new(),
            barrier: false,
            incremental: None,
        },
        &[0],
    );
    rig.wait_done(&op, 0);
    let manifest = rig.manifest("snap1");
    for f in &manifest.files {
        let copied = std::fs::metadata(snapshot.path().join(&f.path))
            .expect("the command copied every listed file");
        assert!(copied.len() >= f.size, "{}", f.path);
    }
    rig.insert(100..103);

    let mut command = rig.restore_command("snap1", false);
    if let OpCommand::Restore { external, .. } = &mut command {
        *external = true;
    }
    let restore = rig.op(command, &[0]);
    rig.wait_phase(&restore, 0, &["copyReady"]);
    assert!(
        rig.report(&restore, 0, "done").is_none(),
        "waits for restore-finish"
    );
    // The operator puts the snapshot's files into the (now empty) dbPath, then says so.
    copy_tree(snapshot.path(), &rig.rs.dbpath(0));
    rig.finish("restore-finish", &restore);
    rig.wait_done(&restore, 0);
    rig.rs.members[0] = None;
    rig.rs.restart(0).unwrap();
    assert_eq!(rig.ids_on(rig.primary()), (0..15).collect::<Vec<_>>());
}

#[test]
fn a_manifest_naming_a_path_outside_the_dbpath_is_refused_before_anything_is_touched() {
    let mut rig = Rig::new("esc", 1, &[]);
    rig.insert(0..8);
    rig.start_agent(0);
    std::thread::sleep(Duration::from_millis(800));
    rig.backup("b1", 0, Compression::Zstd);
    // A tampered (or corrupted) manifest whose file would land outside the dbPath.
    let key = layout::rs_manifest_key("b1", &rig.rs.name);
    let path = rig.storage_dir.path().join(&key);
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    m["files"][0]["path"] = "../../outside.wt".into();
    std::fs::write(&path, serde_json::to_vec(&m).unwrap()).unwrap();

    let op = rig.restore_op("b1", true, &[0]);
    let r = rig.wait_final(&op, 0);
    assert_eq!(r.phase, Phase::Error, "{}", r.message);
    assert!(r.message.contains("phase precheck"), "{}", r.message);
    assert!(
        r.message.contains("\"../../outside.wt\" is unsafe"),
        "{}",
        r.message
    );
    assert!(r.message.contains(&key), "names the object: {}", r.message);
    assert!(
        rig.report(&op, 0, "stop").is_none(),
        "mongod was never stopped"
    );
    assert_eq!(
        rig.ids_on(0),
        (0..8).collect::<Vec<_>>(),
        "the node still serves its data"
    );
}

#[test]
fn an_op_the_agent_cannot_read_is_reported_and_does_not_block_later_ops() {
    let mut rig = Rig::new("unr", 1, &[]);
    rig.start_agent(0);
    // An op of a newer reconciler: a command kind this agent does not know.
    let id = format!(
        "{}-000-future",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%3fZ")
    );
    let raw = serde_json::json!({
        "id": id, "createdAt": chrono::Utc::now(), "cluster": CLUSTER,
        "targets": [{"replicaSet": rig.rs.name, "node": rig.node(0)}],
        "command": {"kind": "teleport"},
    });
    let path = rig
        .control
        .path()
        .join(tidemark_schema::control::op_key(&id));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_vec(&raw).unwrap()).unwrap();
    let r = rig.wait_final(&id, 0);
    assert_eq!(r.phase, Phase::Error);
    assert!(r.message.contains("cannot read the op"), "{}", r.message);
    assert!(r.message.contains("teleport"), "{}", r.message);
    // The next op still runs.
    let next = rig.op(
        OpCommand::RemoveFallback {
            restore_op: "none".into(),
        },
        &[0],
    );
    rig.wait_done(&next, 0);
}

#[test]
fn a_wipe_stops_a_member_still_serving_its_old_data_then_empties_the_dbpath() {
    // A node that failed at `stop` in a PartlyDone restore still runs on its old data; the
    // wipe the decision sends must not be refused for it, or the node would diverge.
    let mut rig = Rig::new("wip", 3, &[]);
    rig.insert(0..5);
    rig.start_agent(2);
    std::thread::sleep(Duration::from_millis(800));
    let wipe = rig.op(
        OpCommand::WipeForInitialSync {
            restore_op: "r-earlier".into(),
        },
        &[2],
    );
    let r = rig.wait_done(&wipe, 2);
    assert!(r.message.contains("dbPath emptied"), "{}", r.message);
    assert!(
        rig.rs.process_mut(2).unwrap().wait_exit(LONG).is_ok(),
        "mongod was stopped"
    );
    let left: Vec<_> = std::fs::read_dir(rig.rs.dbpath(2))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "the dbPath is empty: {left:?}");
}

#[test]
fn an_agent_restarted_while_waiting_for_go_closes_the_gate_before_it_refuses() {
    let mut rig = Rig::new("gat", 1, &[]);
    rig.insert(0..4);
    rig.start_agent(0);
    std::thread::sleep(Duration::from_millis(800));
    rig.backup("b1", 0, Compression::Zstd);
    let op = rig.op(
        OpCommand::Restore {
            backup: "b1".into(),
            storage: rig.storage(Compression::Zstd),
            fallback_enabled: true,
            external: false,
            wait_for_go: true,
            cannot_decrypt: Vec::new(),
            replica_set_map: Default::default(),
            sharding: None,
            stop_waves: Vec::new(),
            go_timeout_ms: None,
            point_in_time: None,
        },
        &[0],
    );
    rig.wait_phase(&op, 0, &["ready"]);
    rig.kill_agent(0);
    rig.start_agent(0);
    let r = rig.wait_final(&op, 0);
    assert_eq!(r.phase, Phase::Error);
    assert_eq!(r.failed_phase, Some(Phase::Ready), "{}", r.message);
    // The gate is closed, so no other node can be told to go on without this one.
    let gate = std::fs::read_to_string(
        rig.control
            .path()
            .join(tidemark_schema::control::go_key(&op)),
    )
    .expect("the agent wrote the gate");
    assert!(gate.contains("its agent restarted before go"), "{gate}");
    assert!(rig.report(&op, 0, "stop").is_none(), "nothing touched");
    assert_eq!(rig.ids_on(0), (0..4).collect::<Vec<_>>());
}

/// The `pickup` node 0's last heartbeat reports.
fn pickup(rig: &Rig) -> Option<String> {
    let key = tidemark_schema::control::heartbeat_key(CLUSTER, &rig.rs.name, &rig.node(0));
    let hb: serde_json::Value =
        serde_json::from_slice(&std::fs::read(rig.control.path().join(key)).ok()?).ok()?;
    hb["pickup"].as_str().map(str::to_string)
}

fn wait_pickup(rig: &Rig, want: &str) {
    let started = std::time::Instant::now();
    while pickup(rig).as_deref() != Some(want) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "pickup {want:?}, got {:?}\n{}",
            pickup(rig),
            rig.agent_log(0)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_corrupt_doorbell_record_makes_the_agent_list_ops_and_no_op_waits() {
    let mut rig = Rig::new("bellrot", 1, &[]);
    rig.insert(0..10);
    // A leader rang once: the agent trusts the doorbell and lists ops/ only at its
    // resync (10 min by default).
    let key = tidemark_schema::control::doorbell_key(CLUSTER);
    let path = rig.control.path().join(&key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let record =
        serde_json::json!({"token": "1.x.1", "epoch": 1, "holder": "h", "at": chrono::Utc::now()});
    std::fs::write(&path, record.to_string()).unwrap();
    rig.start_agent(0);
    wait_pickup(&rig, "record");
    // Then the record rots: the agent must not wait a resync for the next op.
    std::fs::write(&path, b"{\"token\": ").unwrap();
    wait_pickup(&rig, "listing");
    rig.backup("after-rot", 0, Compression::Zstd);
    assert!(
        rig.agent_log(0).contains("cannot read the doorbell record"),
        "{}",
        rig.agent_log(0)
    );
}
