//! Command dispatch and the administrative commands: hello, buildInfo, replica-set commands,
//! shutdown, fsync, dbHash, and the simulator's own `simFault` and `simFill`.

use crate::backup;
use crate::crud;
use crate::node::{CmdError, Node};
use crate::options::{ClusterRole, Flavor};
use crate::repl::{PRIMARY, same_host};
use crate::replloop;
use crate::slog;
use bson::{Bson, DateTime, Document, doc};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a command handler wants the connection to do after it returns.
pub enum Outcome {
    Reply(Document),
    /// `shutdown` succeeded: close the connection without replying, as mongod does.
    Close,
}

pub fn hello(node: &Node, cmd: &Document, conn_id: u64) -> Document {
    let g = node.lock();
    let name = cmd.keys().next().map(String::as_str).unwrap_or("hello");
    let standalone = g.repl.set_name.is_none();
    let mut out = Document::new();
    if cmd.get_bool("helloOk").unwrap_or(false) || cmd.get_i32("helloOk").unwrap_or(0) == 1 {
        out.insert("helloOk", true);
    }
    if name == "hello" {
        out.insert("isWritablePrimary", standalone);
    } else {
        out.insert("ismaster", standalone);
    }
    if !standalone {
        out.insert("secondary", false);
    }
    g.repl.hello_fields(&mut out, g.last_write());
    if node.opts.cluster_role == ClusterRole::ConfigSvr {
        out.insert("configsvr", 2);
    }
    out.insert("maxBsonObjectSize", 16_777_216);
    out.insert("maxMessageSizeBytes", crate::wire::MAX_MESSAGE_SIZE as i32);
    out.insert("maxWriteBatchSize", 100_000);
    out.insert("localTime", DateTime::now());
    out.insert("logicalSessionTimeoutMinutes", 30);
    out.insert("connectionId", conn_id as i64);
    out.insert("minWireVersion", 0);
    out.insert("maxWireVersion", 21);
    out.insert("readOnly", false);
    out.insert("ok", 1.0);
    out
}

fn build_info(node: &Node) -> Document {
    let version_array: Vec<i32> = node
        .opts
        .version
        .split('.')
        .map(|p| p.parse().unwrap_or(0))
        .chain(std::iter::repeat(0))
        .take(4)
        .collect();
    let mut d = doc! {
        "version": &node.opts.version,
        "gitVersion": "0000000000000000000000000000000000000000",
        "versionArray": version_array,
        "modules": [],
        "allocator": "tcmalloc",
        "javascriptEngine": "mozjs",
        "sysInfo": "deprecated",
        "storageEngines": ["devnull", "inMemory", "wiredTiger"],
        "bits": 64,
        "debug": false,
        "maxBsonObjectSize": 16_777_216,
    };
    if node.opts.flavor == Flavor::Psmdb {
        d.insert("psmdbVersion", node.opts.psmdb_version());
    }
    d.insert("ok", 1.0);
    d
}

fn parsed_param(v: &str) -> Bson {
    match v {
        "true" => Bson::Boolean(true),
        "false" => Bson::Boolean(false),
        _ => v
            .parse::<i64>()
            .map(Bson::Int64)
            .unwrap_or_else(|_| Bson::String(v.to_string())),
    }
}

fn cmd_line_opts(node: &Node) -> Document {
    let o = &node.opts;
    let mut parsed = doc! {
        "net": {"bindIp": &o.bind_ip, "port": o.port as i32},
        "storage": {"dbPath": o.dbpath.to_string_lossy().into_owned()},
    };
    let mut replication = Document::new();
    if let Some(mb) = o.oplog_size_mb {
        replication.insert("oplogSizeMB", mb as i64);
    }
    if let Some(rs) = &o.repl_set {
        replication.insert("replSet", rs);
    }
    if !replication.is_empty() {
        parsed.insert("replication", replication);
    }
    if o.oplog_min_retention_hours > 0.0
        && let Ok(storage) = parsed.get_document_mut("storage")
    {
        storage.insert("oplogMinRetentionHours", o.oplog_min_retention_hours);
    }
    match o.cluster_role {
        ClusterRole::ShardSvr => {
            parsed.insert("sharding", doc! {"clusterRole": "shardsvr"});
        }
        ClusterRole::ConfigSvr => {
            parsed.insert("sharding", doc! {"clusterRole": "configsvr"});
        }
        ClusterRole::None => {}
    }
    if !o.parameters.is_empty() {
        let p: Document = o
            .parameters
            .iter()
            .map(|(k, v)| (k.clone(), Bson::String(v.clone())))
            .collect();
        parsed.insert("setParameter", p);
    }
    let e = &o.encryption;
    if e.enabled {
        let mut security = doc! {"enableEncryption": true, "encryptionCipherMode": &e.cipher_mode};
        if let Some(f) = &e.key_file {
            security.insert("encryptionKeyFile", f);
        }
        if let Some(v) = &e.vault {
            let mut vault =
                doc! {"serverName": &v.server, "port": v.port as i32, "secret": &v.secret};
            if let Some(n) = v.secret_version {
                vault.insert("secretVersion", n as i64);
            }
            if let Some(t) = &v.token_file {
                vault.insert("tokenFile", t);
            }
            security.insert("vault", vault);
        }
        if let Some(k) = &e.kmip {
            security.insert(
                "kmip",
                doc! {"serverName": &k.server, "port": k.port as i32, "keyIdentifier": &k.key_identifier},
            );
        }
        parsed.insert("security", security);
    }
    if let Some(p) = &o.logpath {
        parsed.insert(
            "systemLog",
            doc! {"destination": "file", "path": p.to_string_lossy().into_owned()},
        );
    }
    doc! {"argv": o.argv.clone(), "parsed": parsed, "ok": 1.0}
}

fn server_status(node: &Node) -> Document {
    let g = node.lock();
    let mut d = doc! {
        "host": node.opts.host(),
        "version": &node.opts.version,
        "process": "mongod",
        "pid": std::process::id() as i64,
        "uptime": node.started.elapsed().as_secs_f64(),
        "uptimeMillis": node.started.elapsed().as_millis() as i64,
        "localTime": DateTime::now(),
        "storageEngine": {"name": "wiredTiger", "supportsCommittedReads": true, "persistent": true, "backupCursorOpen": g.backup.is_some()},
    };
    if g.repl.set_name.is_some() {
        let mut r = Document::new();
        g.repl.hello_fields(&mut r, g.last_write());
        d.insert("repl", r);
    }
    if g.catalog.colls.contains_key(crate::node::OPLOG_NS) {
        d.insert("oplogTruncation", g.truncation_status());
    }
    d.insert("ok", 1.0);
    d
}

/// `replSetGetStatus`: the members, and the optimes and vote counts before them, as mongod
/// orders them.
fn repl_status(node: &Node) -> Result<Document, CmdError> {
    let g = node.lock();
    g.repl.set_name.as_ref().ok_or_else(not_repl)?;
    g.repl.config.as_ref().ok_or_else(not_initiated)?;
    let applied = g
        .applied()
        .map_or(crate::commit::OpTime::NULL, |s| s.op)
        .to_doc();
    let mut status = g.repl.status(
        applied,
        node.started.elapsed().as_secs() as i64,
        node.opts.heartbeat_interval_ms,
    );
    let members = status.remove("members").unwrap_or(Bson::Array(vec![]));
    status.remove("ok");
    g.status_optimes(&mut status);
    status.insert("members", members);
    status.insert("ok", 1.0);
    Ok(status)
}

fn not_repl() -> CmdError {
    CmdError::new(76, "NoReplicationEnabled", "not running with --replSet")
}

fn not_initiated() -> CmdError {
    CmdError::new(
        94,
        "NotYetInitialized",
        "no replset config has been received",
    )
}

fn initiate(node: &Arc<Node>, cmd: &Document) -> Result<Document, CmdError> {
    let mut g = node.lock();
    let set = g.repl.set_name.clone().ok_or_else(not_repl)?;
    if g.repl.config.is_some() {
        return Err(CmdError::new(
            23,
            "AlreadyInitialized",
            "already initialized",
        ));
    }
    let mut cfg = match cmd.get("replSetInitiate") {
        Some(Bson::Document(c)) if !c.is_empty() => c.clone(),
        _ => doc! {"_id": &set, "members": [{"_id": 0, "host": &g.repl.me}]},
    };
    if cfg.get_str("_id").ok() != Some(set.as_str()) {
        return Err(CmdError::new(
            93,
            "InvalidReplicaSetConfig",
            format!(
                "Attempting to initiate a replica set with name {} but command line reports {set}; rejecting",
                cfg.get_str("_id").unwrap_or_default()
            ),
        ));
    }
    let me = g.repl.me.clone();
    let members = cfg.get_array("members").cloned().unwrap_or_default();
    if !members.iter().any(|m| {
        m.as_document()
            .and_then(|m| m.get_str("host").ok())
            .is_some_and(|h| same_host(h, &me))
    }) {
        return Err(CmdError::new(
            93,
            "InvalidReplicaSetConfig",
            format!(
                "No host described in new configuration with version 1 for replica set {set} maps to this node"
            ),
        ));
    }
    if !cfg.contains_key("version") {
        cfg.insert("version", 1);
    }
    cfg.insert("term", 0i64);
    let inner = &mut *g;
    inner.repl.initiated_here = true;
    replloop::install_config(inner, cfg);
    inner.write(
        vec![doc! {"op": "n", "ns": "", "o": {"msg": "initiating set"}}],
        true,
    )?;
    inner
        .repl
        .adopt_config(inner.repl.config.clone().unwrap_or_default(), true);
    slog!(
        I,
        "REPL",
        21356,
        "conn",
        "replSetInitiate config object parses ok",
        doc! {"numMembers": members.len() as i32}
    );
    Ok(doc! {"ok": 1.0})
}

fn reconfig(node: &Arc<Node>, cmd: &Document) -> Result<Document, CmdError> {
    let mut g = node.lock();
    g.repl.set_name.as_ref().ok_or_else(not_repl)?;
    let current = g.repl.config.clone().ok_or_else(not_initiated)?;
    let force = cmd.get_bool("force").unwrap_or(false);
    if g.repl.state != PRIMARY && !force {
        return Err(CmdError::new(
            10107,
            "NotWritablePrimary",
            "replSetReconfig should only be run on a writable PRIMARY. Current state SECONDARY;",
        ));
    }
    let mut cfg = cmd
        .get_document("replSetReconfig")
        .cloned()
        .map_err(|_| CmdError::new(2, "BadValue", "replSetReconfig needs a config document"))?;
    let cur_v = current.get("version").and_then(Bson::as_i32).unwrap_or(1) as i64;
    let new_v = cfg
        .get("version")
        .and_then(|v| v.as_i32().map(i64::from).or(v.as_i64()))
        .unwrap_or(cur_v + 1);
    if force {
        cfg.insert("version", (cur_v + 10_000) as i32);
    } else if new_v <= cur_v {
        return Err(CmdError::new(
            103,
            "NewReplicaSetConfigurationIncompatible",
            format!(
                "New replica set configuration version must be greater than old, but {new_v} is not greater than {cur_v}"
            ),
        ));
    }
    replloop::install_config(&mut g, cfg);
    Ok(doc! {"ok": 1.0})
}

/// Waits for an electable secondary caught up to our last write, for `shutdown` and `replSetStepDown`.
async fn wait_caught_up(node: &Node, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        {
            let g = node.lock();
            let top = g.oplog_top();
            if g.repl
                .peers
                .values()
                .any(|p| p.health && p.electable && Some(p.optime) >= top)
            {
                return true;
            }
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn secs(cmd: &Document, key: &str, default: u64) -> u64 {
    cmd.get(key)
        .and_then(|v| {
            v.as_i64()
                .or(v.as_i32().map(i64::from))
                .or(v.as_f64().map(|f| f as i64))
        })
        .map(|v| v.max(0) as u64)
        .unwrap_or(default)
}

async fn step_down(node: &Arc<Node>, cmd: &Document) -> Result<Document, CmdError> {
    {
        let g = node.lock();
        g.repl.set_name.as_ref().ok_or_else(not_repl)?;
        if g.repl.state != PRIMARY {
            return Err(CmdError::new(
                10107,
                "NotWritablePrimary",
                "not primary so can't step down",
            ));
        }
    }
    let period = secs(cmd, "replSetStepDown", 60);
    let force = cmd.get_bool("force").unwrap_or(false);
    if !force && !wait_caught_up(node, secs(cmd, "secondaryCatchUpPeriodSecs", 10)).await {
        return Err(CmdError::new(
            262,
            "ExceededTimeLimit",
            "No electable secondaries caught up as of the deadline. Please use the replSetStepDown command with the argument {force: true} to force node to step down.",
        ));
    }
    let mut g = node.lock();
    g.repl.step_down_until = Some(Instant::now() + Duration::from_secs(period));
    replloop::step_down(&mut g, "replSetStepDown command");
    Ok(doc! {"ok": 1.0})
}

async fn shutdown(node: &Arc<Node>, db: &str, cmd: &Document) -> Result<Outcome, CmdError> {
    if db != "admin" {
        return Err(CmdError::new(
            13,
            "Unauthorized",
            "shutdown must run from localhost when running db without auth",
        ));
    }
    if node.faults().refuse_shutdown {
        return Err(CmdError::new(
            1,
            "InternalError",
            "mongod-sim fault: shutdown refused (--sim-refuse-shutdown)",
        ));
    }
    let force = cmd.get_bool("force").unwrap_or(false);
    let primary = node.lock().repl.state == PRIMARY;
    if primary && !force {
        if !wait_caught_up(node, secs(cmd, "timeoutSecs", 10)).await {
            return Err(CmdError::new(
                262,
                "ExceededTimeLimit",
                "No electable secondaries caught up as of the deadline. Please use the replSetStepDown command with the argument {force: true} to force node to step down.",
            ));
        }
        replloop::step_down(&mut node.lock(), "shutdown");
    }
    node.crash_point("shutdown");
    slog!(
        I,
        "COMMAND",
        4695400,
        "conn",
        "Terminating via shutdown command",
        doc! {"force": force, "timeoutSecs": secs(cmd, "timeoutSecs", 10) as i64}
    );
    node.request_shutdown();
    Ok(Outcome::Close)
}

fn db_hash(node: &Node, db: &str) -> Document {
    let g = node.lock();
    let prefix = format!("{db}.");
    let mut all = Sha256::new();
    let mut colls = Document::new();
    for (ns, c) in g
        .catalog
        .colls
        .iter()
        .filter(|(ns, _)| ns.starts_with(&prefix))
    {
        // Hash in _id order so members that applied the same writes agree whatever their record order.
        let mut docs: Vec<(Vec<u8>, Vec<u8>)> = c
            .docs()
            .map(|d| {
                (
                    crate::catalog::id_key(d.get("_id").unwrap_or(&Bson::Null)),
                    d.to_vec().unwrap_or_default(),
                )
            })
            .collect();
        docs.sort();
        let mut h = Sha256::new();
        for (_, bytes) in docs {
            h.update(&bytes);
        }
        let hex: String = h.finalize()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        all.update(hex.as_bytes());
        colls.insert(&ns[prefix.len()..], hex);
    }
    let md5: String = all.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    doc! {"host": node.opts.host(), "collections": colls, "md5": md5, "timeMillis": 0, "ok": 1.0}
}

fn sim_fault(node: &Node, cmd: &Document) -> Result<Document, CmdError> {
    let mut f = node
        .faults
        .lock()
        .map_err(|_| CmdError::new(1, "InternalError", "poisoned"))?;
    if let Ok(b) = cmd.get_bool("refuseShutdown") {
        f.refuse_shutdown = b;
    }
    match cmd.get("crashAt") {
        Some(Bson::String(s)) if s == "now" => {
            slog!(
                F,
                "CONTROL",
                4757800,
                "conn",
                "Simulated crash",
                doc! {"point": "now"}
            );
            std::process::abort();
        }
        Some(Bson::String(s)) => f.crash_at = Some(s.clone()),
        Some(Bson::Null) => f.crash_at = None,
        _ => {}
    }
    if let Some(ms) = cmd
        .get("slowReadsMs")
        .and_then(|v| v.as_i64().or(v.as_i32().map(i64::from)))
    {
        f.slow_reads_ms = ms.max(0) as u64;
    }
    Ok(
        doc! {"refuseShutdown": f.refuse_shutdown, "crashAt": f.crash_at.clone(), "slowReadsMs": f.slow_reads_ms as i64, "ok": 1.0},
    )
}

/// Fills the node with about `bytes` bytes of documents across `collections` collections.
async fn sim_fill(node: &Arc<Node>, cmd: &Document) -> Result<Document, CmdError> {
    let db = cmd.get_str("db").unwrap_or("simfill").to_string();
    crud::writable(node, &db).await?;
    let colls = secs(cmd, "collections", 1).max(1);
    let total = secs(cmd, "bytes", 1_048_576);
    let chunk = 64 * 1024u64;
    let n = total.div_ceil(chunk);
    let payload = bson::Binary {
        subtype: bson::spec::BinarySubtype::Generic,
        bytes: vec![0x5a; chunk as usize],
    };
    let mut inserted = 0i64;
    for batch in (0..n).collect::<Vec<_>>().chunks(64) {
        {
            let mut g = node.lock();
            let ops: Vec<Document> = batch
                .iter()
                .map(|i| doc! {"op": "i", "ns": format!("{db}.c{}", i % colls), "o": {"_id": *i as i64, "payload": payload.clone()}})
                .collect();
            inserted += ops.len() as i64;
            let log = g.should_log();
            g.write(ops, log)?;
        }
        // Let heartbeats through between batches: a large fill on a busy machine must not
        // look like a dead primary and cost it its term.
        tokio::task::yield_now().await;
    }
    node.oplog_changed.notify_waiters();
    Ok(doc! {"inserted": inserted, "bytes": inserted * chunk as i64, "ok": 1.0})
}

fn get_parameter(node: &Node, cmd: &Document) -> Document {
    let all = matches!(cmd.get("getParameter"), Some(Bson::String(s)) if s == "*");
    let mut out = Document::new();
    // Parameters with a modelled default are reported even when not set.
    if all || cmd.contains_key("periodicNoopIntervalSecs") {
        out.insert(
            "periodicNoopIntervalSecs",
            node.opts.periodic_noop_interval_secs as i32,
        );
    }
    for (k, v) in &node.opts.parameters {
        if (all || cmd.contains_key(k)) && !out.contains_key(k) {
            out.insert(k.clone(), parsed_param(v));
        }
    }
    out.insert("ok", 1.0);
    out
}

/// Runs one command (`$db` inside `cmd`) and returns the reply or mongod's error document.
pub async fn run(node: &Arc<Node>, cmd: Document, conn_id: u64) -> Outcome {
    if let Some(ts) = gossiped(&cmd) {
        node.lock().observe_client_time(ts);
    }
    let outcome = match dispatch(node, &cmd, conn_id).await {
        Ok(o) => o,
        Err(e) => Outcome::Reply(e.to_doc()),
    };
    // Replica-set members answer with the cluster time (and the last write's time) as
    // mongod does; drivers gossip it on to every node they talk to.
    match outcome {
        Outcome::Reply(mut reply) if node.opts.repl_set.is_some() => {
            let g = node.lock();
            reply.insert(
                "$clusterTime",
                doc! {
                    "clusterTime": g.reply_cluster_time(),
                    "signature": {"hash": bson::Binary {subtype: bson::spec::BinarySubtype::Generic, bytes: vec![0; 20]}, "keyId": 0i64},
                },
            );
            reply.insert("operationTime", g.last_ts);
            // The replication metadata mongod adds for callers that ask (heartbeats, the
            // oplog fetcher).
            if cmd.contains_key("$replData") && g.repl.config.is_some() {
                reply.insert("$replData", g.repl_data());
            }
            Outcome::Reply(reply)
        }
        other => other,
    }
}

/// The `$clusterTime.clusterTime` a client or a peer sent, if any.
pub fn gossiped(doc: &Document) -> Option<bson::Timestamp> {
    doc.get_document("$clusterTime")
        .ok()?
        .get_timestamp("clusterTime")
        .ok()
}

async fn dispatch(node: &Arc<Node>, cmd: &Document, conn_id: u64) -> Result<Outcome, CmdError> {
    let db = cmd.get_str("$db").unwrap_or("admin").to_string();
    let name = cmd.keys().next().cloned().unwrap_or_default();
    let reply = match name.as_str() {
        "hello" | "isMaster" | "ismaster" => hello(node, cmd, conn_id),
        "ping" | "endSessions" | "killSessions" | "logout" | "refreshSessions" => doc! {"ok": 1.0},
        "buildInfo" | "buildinfo" => build_info(node),
        "getCmdLineOpts" => cmd_line_opts(node),
        "serverStatus" => server_status(node),
        "getParameter" => get_parameter(node, cmd),
        "replSetInitiate" => initiate(node, cmd)?,
        "replSetGetStatus" => repl_status(node)?,
        "replSetUpdatePosition" => crate::commit::update_position(node, cmd)?,
        "replSetResizeOplog" => crate::oplog::resize(node, &db, cmd)?,
        "replSetGetConfig" => {
            let g = node.lock();
            g.repl.set_name.as_ref().ok_or_else(not_repl)?;
            let mut cfg = g.repl.config.clone().ok_or_else(not_initiated)?;
            cfg.insert("term", g.repl.term);
            doc! {"config": cfg, "ok": 1.0}
        }
        "replSetReconfig" => reconfig(node, cmd)?,
        "replSetStepDown" => step_down(node, cmd).await?,
        "replSetHeartbeat" => {
            replloop::handle_heartbeat(node, cmd).map_err(|(c, n, m)| CmdError::new(c, n, m))?
        }
        "shutdown" => return shutdown(node, &db, cmd).await,
        "fsync" => {
            let mut g = node.lock();
            let inner = &mut *g;
            if cmd.get_bool("lock").unwrap_or(false) {
                inner.fsync_lock += 1;
                let _ = inner.maybe_checkpoint()?;
                doc! {"info": "now locked against writes, use db.fsyncUnlock() to unlock", "lockCount": inner.fsync_lock as i64, "seeAlso": "http://dochub.mongodb.org/core/fsynccommand", "ok": 1.0}
            } else {
                let _ = inner.maybe_checkpoint()?;
                doc! {"numFiles": 1, "ok": 1.0}
            }
        }
        "fsyncUnlock" => {
            let mut g = node.lock();
            if g.fsync_lock == 0 {
                return Err(CmdError::new(
                    125,
                    "CommandFailed",
                    "fsyncUnlock called when not locked",
                ));
            }
            g.fsync_lock -= 1;
            doc! {"info": "fsyncUnlock completed", "lockCount": g.fsync_lock as i64, "ok": 1.0}
        }
        "dbHash" | "dbhash" => db_hash(node, &db),
        "insert" => crud::insert(node, &db, cmd).await?,
        "find" => crud::find(node, &db, cmd).await?,
        "update" => crud::update(node, &db, cmd).await?,
        "delete" => crud::delete(node, &db, cmd).await?,
        "count" => crud::count(node, &db, cmd)?,
        "drop" | "create" | "dropDatabase" => crud::ddl(node, &db, &name, cmd).await?,
        "createIndexes" => crate::ddl::create_indexes(node, &db, cmd).await?,
        "listIndexes" => crate::ddl::list_indexes(node, &db, cmd)?,
        "dropIndexes" | "deleteIndexes" => crate::indexes::drop_indexes(node, &db, cmd).await?,
        "collMod" => crate::indexes::coll_mod(node, &db, cmd).await?,
        "applyOps" => crate::applyops::apply_ops(node, &db, cmd).await?,
        "commitTransaction" | "abortTransaction" => crate::txn::command(node, &db, &name, cmd)?,
        "renameCollection" => crate::ddl::rename_collection(node, cmd).await?,
        "collStats" => crate::ddl::coll_stats(node, &db, cmd)?,
        "listCollections" => crud::list_collections(node, &db, cmd)?,
        "listDatabases" => crud::list_databases(node, cmd),
        "aggregate" => {
            let pipeline: Vec<Document> = cmd
                .get_array("pipeline")
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_document().cloned())
                .collect();
            match backup::is_backup_stage(&pipeline) {
                Some(("$backupCursor", _)) => backup::open(node, cmd)?,
                Some((_, arg)) => backup::extend(node, cmd, &arg).await?,
                None => crud::aggregate_plain(node, &db, cmd, &pipeline)?,
            }
        }
        "getMore" => crud::get_more(node, &db, cmd).await?,
        "killCursors" => crud::kill_cursors(node, cmd)?,
        "simFault" => sim_fault(node, cmd)?,
        "simFill" => sim_fill(node, cmd).await?,
        other => {
            return Err(CmdError::new(
                59,
                "CommandNotFound",
                format!("no such command: '{other}'"),
            ));
        }
    };
    Ok(Outcome::Reply(reply))
}
