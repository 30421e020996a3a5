//! The playground's replica set: a real `mongod` from `PATH` when there is one, otherwise
//! mongod-sim (this very binary, run under that name), started in their own sessions so a
//! Ctrl-C reaches the playground only, which stops them in order.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bson::{Bson, doc};
use tidemark_agent::mongod::MongodClient;

use super::layout::Layout;

/// Which mongod runs the nodes.
pub struct Mongod {
    pub bin: PathBuf,
    pub simulated: bool,
}

/// `mongod` from `PATH`, unless `sim`; else mongod-sim: a link named `mongod-sim` to this
/// binary in the playground's `bin/` (the name makes `tidemark` run as mongod-sim).
pub fn pick_mongod(layout: &Layout, sim: bool) -> anyhow::Result<Mongod> {
    if !sim
        && let Some(path) = std::env::var_os("PATH")
        && let Some(bin) = std::env::split_paths(&path)
            .map(|d| d.join("mongod"))
            .find(|p| p.is_file())
    {
        return Ok(Mongod {
            bin,
            simulated: false,
        });
    }
    let link = layout.root.join("bin").join("mongod-sim");
    let me = std::env::current_exe().context("cannot find this binary")?;
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&me, &link)
        .with_context(|| format!("cannot link {} to {}", link.display(), me.display()))?;
    Ok(Mongod {
        bin: link,
        simulated: true,
    })
}

/// How long one question to a node may take: a node that accepts and then stalls must
/// not hang the playground.
const ASK: Duration = Duration::from_secs(5);

pub fn host(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

/// Fails at once, naming the port, when any is taken: never a hang on a busy port.
pub fn check_ports(ports: &[u16]) -> anyhow::Result<()> {
    for p in ports {
        if std::net::TcpListener::bind(("127.0.0.1", *p)).is_err() {
            bail!(
                "port {p} on 127.0.0.1 is taken (another program, or a mongod of an earlier \
                 run); choose other ports with --base-port"
            );
        }
    }
    Ok(())
}

/// Starts node `i` of `set` on `port`, detached into its own session.
pub fn start(
    layout: &Layout,
    mongod: &Mongod,
    set: &super::topology::Set,
    i: usize,
    port: u16,
) -> anyhow::Result<()> {
    let dbpath = layout.dbpath(i);
    std::fs::create_dir_all(&dbpath)?;
    let mut cmd = Command::new(&mongod.bin);
    cmd.arg("--replSet")
        .arg(&set.name)
        .args(set.role_flag)
        .args(["--port", &port.to_string(), "--bind_ip", "127.0.0.1"])
        .arg("--dbpath")
        .arg(&dbpath)
        .arg("--logpath")
        .arg(layout.log(&format!("mongod-{i}")))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if mongod.simulated {
        // Elections and checkpoints at a laptop demo's pace.
        cmd.args(["--sim-heartbeat-interval-ms", "500"]);
    }
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
    cmd.spawn()
        .with_context(|| format!("cannot start {}", mongod.bin.display()))?;
    Ok(())
}

/// Waits until every node answers, then initiates the replica set unless an earlier run
/// did, and waits for a primary.
pub async fn form_replica_set(
    layout: &Layout,
    set: &super::topology::Set,
    ports: &[u16],
) -> anyhow::Result<MongodClient> {
    let mut clients = Vec::new();
    for i in set.nodes.clone() {
        clients.push(wait_answering(layout, i, ports[i]).await?);
    }
    let ports = &ports[set.nodes.clone()];
    let status = tokio::time::timeout(ASK, clients[0].admin(doc! {"replSetGetStatus": 1})).await;
    if !matches!(status, Ok(Ok(_))) {
        let members: Vec<Bson> = ports
            .iter()
            .enumerate()
            .map(|(i, p)| Bson::Document(doc! {"_id": i as i32, "host": host(*p)}))
            .collect();
        let initiated = tokio::time::timeout(
            ASK,
            clients[0].admin(doc! {"replSetInitiate": {"_id": &set.name, "members": members}}),
        )
        .await
        .context("replSetInitiate did not answer")?;
        // A node still loading its config answers "not yet initialized" to the status
        // and then "already initialized" (code 23) here: an earlier run's set, fine.
        if let Err(e) = initiated
            && !e.to_string().contains("AlreadyInitialized")
            && !e.to_string().contains("already initialized")
        {
            return Err(e).context("replSetInitiate");
        }
    }
    let started = Instant::now();
    loop {
        for c in &clients {
            if let Ok(Ok(f)) = tokio::time::timeout(ASK, c.facts()).await
                && f.role == tidemark_schema::control::MemberRole::Primary
            {
                return Ok(c.clone());
            }
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!(
                "no primary was elected within 60 s; see {}",
                layout.log("mongod-0").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn wait_answering(layout: &Layout, i: usize, port: u16) -> anyhow::Result<MongodClient> {
    let started = Instant::now();
    let uri = format!("mongodb://{}/?directConnection=true", host(port));
    loop {
        if let Ok(Ok(c)) = tokio::time::timeout(ASK, MongodClient::connect(&uri)).await
            && matches!(
                tokio::time::timeout(ASK, c.admin(doc! {"ping": 1})).await,
                Ok(Ok(_))
            )
        {
            return Ok(c);
        }
        if started.elapsed() > Duration::from_secs(30) {
            let log =
                std::fs::read_to_string(layout.log(&format!("mongod-{i}"))).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            bail!(
                "node {i} (port {port}) did not answer within 30 s; the end of {}:\n{}",
                layout.log(&format!("mongod-{i}")).display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A sharded playground's metadata, as `addShard` would leave it: `config.shards` on the
/// config server and `shardIdentity` on each shard. Written once: a second run finds
/// them (a duplicate key is an earlier run's, fine).
pub async fn register_shards(
    primaries: &[(super::topology::Set, MongodClient)],
    ports: &[u16],
) -> anyhow::Result<()> {
    let conn = |set: &super::topology::Set| {
        let hosts: Vec<String> = set.nodes.clone().map(|i| host(ports[i])).collect();
        format!("{}/{}", set.name, hosts.join(","))
    };
    let Some((cfg, cfg_client)) = primaries.first() else {
        return Ok(());
    };
    let cluster_id = bson::oid::ObjectId::new();
    // A write error comes back in the reply (`writeErrors`), not as an error.
    let insert = |c: &MongodClient, db: &str, d: bson::Document, coll: &str| {
        let c = c.client().clone();
        let (db, coll) = (db.to_string(), coll.to_string());
        async move {
            let reply = c
                .database(&db)
                .run_command(doc! {"insert": &coll, "documents": [d]})
                .await
                .with_context(|| format!("writing {db}.{coll}"))?;
            match reply.get_array("writeErrors") {
                Ok(errs)
                    if !errs.iter().all(|e| {
                        e.as_document().and_then(|e| e.get_i32("code").ok()) == Some(11000)
                    }) =>
                {
                    bail!("writing {db}.{coll}: {reply}")
                }
                _ => Ok(()),
            }
        }
    };
    for (set, client) in &primaries[1..] {
        insert(
            cfg_client,
            "config",
            doc! {"_id": &set.name, "host": conn(set), "state": 1},
            "shards",
        )
        .await?;
        insert(
            client,
            "admin",
            doc! {"_id": "shardIdentity", "shardName": &set.name, "clusterId": cluster_id, "configsvrConnectionString": conn(cfg)},
            "system.version",
        )
        .await?;
    }
    Ok(())
}

/// Stops every node cleanly (the `shutdown` command), whoever started it (this run, or an
/// agent after a restore); a node that does not stop within 15 s is killed by the pid in
/// its `mongod.lock`.
pub async fn stop_all(layout: &Layout, ports: &[u16]) {
    for (i, p) in ports.iter().enumerate() {
        let uri = format!("mongodb://{}/?directConnection=true", host(*p));
        if let Ok(Ok(c)) = tokio::time::timeout(ASK, MongodClient::connect(&uri)).await {
            let _ = tokio::time::timeout(ASK, c.shutdown(true)).await;
        }
        let dbpath = layout.dbpath(i);
        let pid = std::fs::read_to_string(dbpath.join("mongod.lock"))
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
            // A pid from an old lock file may belong to anything by now.
            .filter(|pid| {
                super::layout::argv(*pid)
                    .is_some_and(|a| a.iter().any(|x| std::path::Path::new(x) == dbpath))
            });
        if let Some(pid) = pid {
            // Its shutdown was asked for above; SIGTERM too (a mongod shuts down cleanly on
            // it), for a node the command did not reach.
            super::procs::stop(
                vec![pid],
                Some(nix::sys::signal::Signal::SIGTERM),
                Duration::from_secs(15),
            );
        }
    }
}
