//! The agent's mongod starts when another process holds the port chosen for them: a free
//! port can be taken between its choice and mongod's bind, and a restore's standalone
//! must then fail to start (and be started again elsewhere), never be confused with the
//! other server that answers there.

use std::time::Duration;

use mongod_sim::harness::{Process, binary, free_port};
use tempfile::TempDir;
use tidemark_agent::mongod::{MongodProcess, StartSpec};

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
    let spec = StartSpec {
        bin: binary().unwrap(),
        args: [
            "--dbpath",
            &ours.display().to_string(),
            "--port",
            &port.to_string(),
            "--bind_ip",
            "127.0.0.1",
            "--logpath",
            &dir.path().join("ours.log").display().to_string(),
        ]
        .map(String::from)
        .to_vec(),
        address: format!("127.0.0.1:{port}"),
    };
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
