//! The agent's mongod starts when another process holds the port chosen for them: a free
//! port can be taken between its choice and mongod's bind, and a restore's standalone
//! must then fail to start (and be started again elsewhere), never be confused with the
//! other server that answers there.

use std::time::Duration;

use mongod_sim::harness::{Process, binary, free_port};
use tempfile::TempDir;
use tidemark_agent::mongod::{
    MongodProcess, STANDALONE_LOG, STANDALONE_PID_FILE, StartSpec, kill_leftover_standalone,
};

/// The simulator started as the agent starts a restore's standalone.
fn standalone_spec(dbpath: &std::path::Path, port: u16, log: &std::path::Path) -> StartSpec {
    StartSpec {
        bin: binary().unwrap(),
        args: [
            "--dbpath",
            &dbpath.display().to_string(),
            "--port",
            &port.to_string(),
            "--bind_ip",
            "127.0.0.1",
            "--logpath",
            &log.display().to_string(),
        ]
        .map(String::from)
        .to_vec(),
        address: format!("127.0.0.1:{port}"),
        prove_identity: true,
    }
}

#[test]
fn a_mongod_whose_port_is_taken_exits_48_and_the_server_there_is_never_taken_for_it() {
    let dir = TempDir::new().unwrap();
    let port = free_port().unwrap();
    // Someone else's mongod, already answering on the port.
    let mut intruder = Process::spawn(
        &dir.path().join("intruder"),
        &dir.path().join("intruder.log"),
        port,
        &[],
    )
    .unwrap();
    intruder.wait_ready(Duration::from_secs(20)).unwrap();

    let ours = dir.path().join("ours");
    std::fs::create_dir_all(&ours).unwrap();
    let spec = standalone_spec(&ours, port, &dir.path().join("ours.log"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let outcome = rt.block_on(async {
        let mut p = MongodProcess::spawn(&spec).unwrap();
        p.wait_ready(Duration::from_secs(20)).await.map(|_| ())
    });
    let err = outcome.expect_err("the server on the port is the intruder, not ours");
    assert!(err.port_taken(), "{err}");
    assert!(err.to_string().contains("exit status: 48"), "{err}");
    // The intruder was not touched.
    assert!(intruder.is_running());
}

/// Starts the simulator as the agent starts a restore's standalone on `dbpath` (logging to
/// the standalone's log there) and leaves it running, as an agent killed meanwhile would.
fn leftover_standalone(rt: &tokio::runtime::Runtime, dbpath: &std::path::Path) -> u32 {
    running_mongod(rt, dbpath, STANDALONE_LOG)
}

/// A simulator left running on `dbpath`, logging to `log` there.
fn running_mongod(rt: &tokio::runtime::Runtime, dbpath: &std::path::Path, log: &str) -> u32 {
    std::fs::create_dir_all(dbpath).unwrap();
    let port = free_port().unwrap();
    let spec = standalone_spec(dbpath, port, &dbpath.join(log));
    rt.block_on(async {
        let mut p = MongodProcess::spawn(&spec).unwrap();
        p.wait_ready(Duration::from_secs(20)).await.unwrap();
        let pid = p.pid();
        p.detach();
        // A dead agent's standalone is nobody's child; this one is ours, so reap it when
        // it dies rather than leave a zombie that still looks alive.
        std::thread::spawn(move || {
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None);
        });
        pid
    })
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn a_leftover_standalone_is_found_without_its_pid_file_and_a_neighbour_is_never_killed() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = TempDir::new().unwrap();
    // The agent died between starting the standalone and recording its pid: the lock
    // holder, logging to the standalone's log on this very dbPath, is found and stopped.
    let db = dir.path().join("db");
    let pid = leftover_standalone(&rt, &db);
    assert!(!db.join(STANDALONE_PID_FILE).exists());
    assert_eq!(rt.block_on(kill_leftover_standalone(&db)), Some(pid as i32));
    assert!(!alive(pid), "the leftover standalone still runs");

    // A pid file naming a mongod on another dbPath that merely shares the prefix ("db2"
    // starts with "db"): that process is someone else's and is left alone.
    let db2 = dir.path().join("db2");
    let neighbour = leftover_standalone(&rt, &db2);
    std::fs::write(db.join(STANDALONE_PID_FILE), neighbour.to_string()).unwrap();
    assert_eq!(rt.block_on(kill_leftover_standalone(&db)), None);
    assert!(alive(neighbour), "a mongod on another dbPath was killed");
    assert!(
        !db.join(STANDALONE_PID_FILE).exists(),
        "the stale pid file stays"
    );
    // Its own dbPath's clean-up does stop it.
    assert_eq!(
        rt.block_on(kill_leftover_standalone(&db2)),
        Some(neighbour as i32)
    );

    // A pid file naming the node's own mongod on this very dbPath (a reused pid, say): it
    // does not log to the standalone log, so it is no leftover and keeps running.
    let db3 = dir.path().join("db3");
    let member = running_mongod(&rt, &db3, "mongod.log");
    std::fs::write(db3.join(STANDALONE_PID_FILE), member.to_string()).unwrap();
    assert_eq!(rt.block_on(kill_leftover_standalone(&db3)), None);
    assert!(alive(member), "the node's own mongod was killed");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(member as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

/// An agent started before its mongod has joined a replica set (a systemd unit or a
/// container started with mongod races it) waits, saying for what, and goes on once the
/// node is a member: its heartbeat then names the set and the node.
#[test]
fn an_agent_started_before_its_node_joins_waits_and_then_reports() {
    use std::process::{Command, Stdio};
    let mongod = mongod_sim::harness::Standalone::start(&["--replSet", "late"]).unwrap();
    let host = mongod.process.host();
    let control = TempDir::new().unwrap();
    let log = control.path().join("agent.log");
    let mut agent = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["agent", "--cluster", "c1", "--control"])
        .arg(control.path())
        .arg("--mongod-uri")
        .arg(format!("mongodb://{host}/?directConnection=true"))
        .arg("--dbpath")
        .arg(mongod.dir.path().join("db"))
        .arg("--mongod-bin")
        .arg(binary().unwrap())
        .args(["--heartbeat-interval", "1s", "--poll-interval", "200ms"])
        .arg("--trusted-keys")
        .arg(&tidemark_testkit::test_keys().public)
        .env("TIDEMARK_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let wait = |what: &str, f: &dyn Fn() -> bool| {
        let started = std::time::Instant::now();
        while !f() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{what}; agent log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait("the agent says it waits for the replica set", &|| {
        std::fs::read_to_string(&log)
            .is_ok_and(|l| l.contains("waiting for mongod to join a replica set"))
    });
    assert!(
        agent.try_wait().unwrap().is_none(),
        "still running, not exited"
    );
    let r = mongod
        .process
        .command(
            "admin",
            bson::doc! {"replSetInitiate": {"_id": "late", "members": [{"_id": 0, "host": &host}]}},
        )
        .unwrap();
    assert_eq!(r.get_f64("ok").unwrap_or(0.0), 1.0, "{r}");
    let beat = control
        .path()
        .join(tidemark_schema::control::heartbeat_key("c1", "late", &host));
    wait("a heartbeat under the replica set's name", &|| {
        beat.exists()
    });
    let _ = agent.kill();
    let _ = agent.wait();
}
