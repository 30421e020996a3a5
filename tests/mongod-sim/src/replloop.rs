//! The replica-set background work: heartbeats (which also spread the config), elections,
//! pulling and applying the primary's oplog, and initial sync of an empty member.

use crate::client::AsyncConn;
use crate::node::{Inner, Node};
use crate::repl::{
    self, ARBITER, CONFIG_NS, ELECTION_NS, MINVALID_NS, PRIMARY, SECONDARY, STARTUP2, member_delay,
    same_host,
};
use crate::slog;
use bson::{Bson, DateTime, Document, Timestamp, doc};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const ZERO: Timestamp = Timestamp {
    time: 0,
    increment: 0,
};

/// Stores a config we accept (initiate, reconfig or heard from a peer) and takes its state.
pub fn install_config(inner: &mut Inner, cfg: Document) {
    let has_data = inner.oplog_top().is_some();
    let _ = inner.write(
        vec![doc! {"op": "u", "ns": CONFIG_NS, "o": cfg.clone()}],
        false,
    );
    let before = inner.repl.state;
    inner.repl.adopt_config(cfg, has_data);
    if before != inner.repl.state {
        log_transition(before, inner.repl.state);
    }
}

fn log_transition(from: i32, to: i32) {
    slog!(
        I,
        "REPL",
        21358,
        "ReplCoord-0",
        "Replica set state transition",
        doc! {"newState": repl::state_str(to), "oldState": repl::state_str(from)}
    );
}

/// Answers a peer's `replSetHeartbeat`, learning its state and exchanging configs.
pub fn handle_heartbeat(
    node: &Node,
    cmd: &Document,
) -> Result<Document, (i32, &'static str, String)> {
    let mut g = node.lock();
    let inner = &mut *g;
    if let Ok(ts) = cmd.get_timestamp("gossipTime") {
        inner.observe_client_time(ts);
    }
    let set = cmd.get_str("replSetHeartbeat").unwrap_or_default();
    match &inner.repl.set_name {
        None => {
            return Err((
                76,
                "NoReplicationEnabled",
                "not running with --replSet".into(),
            ));
        }
        Some(s) if s != set => {
            return Err((
                93,
                "InconsistentReplicaSetNames",
                format!("Our set name of {s} does not match name {set} reported by remote node"),
            ));
        }
        _ => {}
    }
    let their_version = cmd.get_i64("configVersion").unwrap_or(-2);
    if their_version > inner.repl.config_version()
        && let Ok(cfg) = cmd.get_document("config")
    {
        install_config(inner, cfg.clone());
    }
    if let Ok(from) = cmd.get_str("from") {
        note_peer(inner.repl.peers.entry(from.to_string()).or_default(), cmd);
        inner.update_commit_point();
    }
    let mut reply = heartbeat_doc(inner);
    if inner.repl.config_version() > their_version
        && let Some(cfg) = &inner.repl.config
    {
        reply.insert("config", cfg.clone());
    }
    reply.insert("ok", 1.0);
    Ok(reply)
}

/// Records what a heartbeat (request or reply) says about the member that sent it.
fn note_peer(p: &mut repl::Peer, d: &Document) {
    if !p.health {
        p.up_since = Some(Instant::now());
    }
    p.health = true;
    p.state = d.get_i32("state").unwrap_or(p.state);
    p.optime = d.get_timestamp("optime").unwrap_or(p.optime);
    p.optime_term = d.get_i64("optimeTerm").unwrap_or(p.optime_term);
    p.term = d.get_i64("term").unwrap_or(p.term);
    p.electable = d.get_bool("electable").unwrap_or(false);
    p.last_heartbeat = Some(DateTime::now());
}

fn heartbeat_doc(inner: &Inner) -> Document {
    let applied = inner
        .applied()
        .map_or(crate::commit::OpTime::NULL, |s| s.op);
    doc! {
        "set": inner.repl.set_name.clone().unwrap_or_default(),
        "from": inner.repl.me.clone(),
        "state": inner.repl.state,
        "optime": inner.oplog_top().unwrap_or(ZERO),
        "optimeTerm": applied.t,
        "term": inner.repl.term,
        "electable": inner.repl.electable(),
        "configVersion": inner.repl.config_version(),
        // Only what clients gossiped travels between members: the cluster time a peer
        // merely saw in our heartbeats would let a lagging secondary think itself behind.
        "gossipTime": inner.client_time,
    }
}

/// A primary whose cluster time gossiped by clients (relayed by its members' heartbeats)
/// is ahead of its oplog writes a
/// no-op entry, as mongod's periodic no-op writer does, so that an idle replica set's
/// optime still reaches a cluster time another set reached (`$backupCursorExtend` waits
/// for it).
fn noop_if_behind(node: &Arc<Node>) {
    let wrote = {
        let mut g = node.lock();
        let behind = g.oplog_top().is_some_and(|top| g.client_time > top);
        if !(behind && g.should_log()) {
            return;
        }
        g.write(
            vec![doc! {"op": "n", "ns": "", "o": {"msg": "periodic noop"}}],
            true,
        )
        .is_ok()
    };
    if wrote {
        node.oplog_changed.notify_waiters();
    }
}

/// Starts the heartbeat, election, sync and periodic no-op tasks of a `--replSet` member.
pub fn spawn(node: Arc<Node>) {
    tokio::spawn(heartbeat_loop(node.clone()));
    tokio::spawn(crate::oplog::noop_loop(node.clone()));
    tokio::spawn(sync_loop(node));
}

async fn heartbeat_loop(node: Arc<Node>) {
    let interval = Duration::from_millis(node.opts.heartbeat_interval_ms);
    let mut running: HashSet<String> = HashSet::new();
    loop {
        let peers: Vec<String> = node.lock().repl.peers.keys().cloned().collect();
        for p in peers {
            if running.insert(p.clone()) {
                tokio::spawn(peer_loop(node.clone(), p));
            }
        }
        elect(&node);
        noop_if_behind(&node);
        tokio::time::sleep(interval).await;
    }
}

/// Heartbeats one peer for as long as it is in our config.
async fn peer_loop(node: Arc<Node>, host: String) {
    let interval = Duration::from_millis(node.opts.heartbeat_interval_ms);
    let timeout = interval.max(Duration::from_millis(1000));
    let mut conn: Option<AsyncConn> = None;
    loop {
        let mut req = {
            let g = node.lock();
            if !g.repl.peers.contains_key(&host) {
                return;
            }
            let mut d = heartbeat_doc(&g);
            d.insert(
                "replSetHeartbeat",
                g.repl.set_name.clone().unwrap_or_default(),
            );
            if let Some(cfg) = &g.repl.config {
                d.insert("config", cfg.clone());
            }
            // mongod's heartbeats ask for the replication metadata: the commit point spreads
            // through them.
            d.insert("$replData", 1);
            d
        };
        // The command name must come first.
        let name = req.remove("replSetHeartbeat").unwrap_or(Bson::Null);
        let mut cmd = doc! {"replSetHeartbeat": name};
        cmd.extend(req);
        let started = Instant::now();
        if conn.is_none() {
            conn = AsyncConn::connect(&host, timeout).await.ok();
        }
        let reply = match conn.as_mut() {
            Some(c) => c.command("admin", cmd, timeout).await.ok(),
            None => None,
        };
        {
            let mut g = node.lock();
            let inner = &mut *g;
            match reply.filter(|r| r.get_f64("ok").unwrap_or(0.0) == 1.0) {
                Some(r) => {
                    if let Ok(cfg) = r.get_document("config")
                        && r.get_i64("configVersion").unwrap_or(-2) > inner.repl.config_version()
                    {
                        install_config(inner, cfg.clone());
                    }
                    if let Some(p) = inner.repl.peers.get_mut(&host) {
                        note_peer(p, &r);
                        p.ping_ms = started.elapsed().as_millis() as i64;
                    }
                    if let Ok(meta) = r.get_document("$replData") {
                        inner.learn_repl_data(meta, false);
                    }
                    inner.update_commit_point();
                }
                None => {
                    conn = None;
                    if let Some(p) = inner.repl.peers.get_mut(&host) {
                        p.health = false;
                        p.electable = false;
                        p.up_since = None;
                    }
                }
            }
        }
        elect(&node);
        tokio::time::sleep(interval).await;
    }
}

/// Applies the election rule from our view: step up, or step down.
pub fn elect(node: &Node) {
    if node.shutting_down.load(Ordering::SeqCst) {
        return;
    }
    let mut g = node.lock();
    let inner = &mut *g;
    if !inner.repl.enabled() || inner.repl.state == ARBITER {
        return;
    }
    let election_timeout = Duration::from_millis(node.opts.heartbeat_interval_ms * 5);
    if inner.repl.state != PRIMARY
        && !inner.repl.initiated_here
        && inner.repl.started.elapsed() < election_timeout
    {
        return;
    }
    let my_optime = inner.oplog_top().unwrap_or(ZERO);
    let choice = inner.repl.choose_primary(my_optime);
    let me = inner.repl.me.clone();
    let higher_primary = inner.repl.other_primary_wins();
    match choice {
        Some(Some(ref who))
            if same_host(who, &me) && inner.repl.state != PRIMARY && !higher_primary =>
        {
            inner.repl.term = inner.repl.next_term();
            let term = inner.repl.term;
            let idx = inner
                .repl
                .members()
                .iter()
                .position(|m| same_host(m.get_str("host").unwrap_or_default(), &me))
                .unwrap_or(0);
            let _ = inner.write(vec![doc! {"op": "u", "ns": ELECTION_NS, "o": {"_id": "election", "term": term, "candidateIndex": idx as i64}}], false);
            // A peer may hold entries this node never got (the old primary's last writes;
            // rollback is not modelled): the new primary's writes must still sort after
            // every optime a peer reported, or that peer, pulling only newer entries,
            // would skip them for good.
            let seen = inner
                .repl
                .peers
                .values()
                .map(|p| p.optime)
                .max()
                .unwrap_or(ZERO);
            inner.cluster_time = inner.cluster_time.max(seen);
            let before = inner.repl.state;
            inner.repl.state = PRIMARY;
            inner.repl.sync_source = None;
            inner.repl.election_date = Some(DateTime::now());
            // Nothing of an earlier term is committed by this primary (optimes compare
            // term first); its first entry's timestamp is known once written.
            inner.repl.first_op_of_term = Some(crate::commit::OpTime { t: term, ts: ZERO });
            if let Ok(ts) = inner.write(
                vec![doc! {"op": "n", "ns": "", "o": {"msg": "new primary"}}],
                true,
            ) {
                inner.repl.election_ts = Some(ts);
                inner.repl.first_op_of_term = Some(crate::commit::OpTime { t: term, ts });
            }
            log_transition(before, PRIMARY);
            slog!(
                I,
                "REPL",
                21331,
                "ReplCoord-0",
                "Transition to primary complete; database writes are now permitted",
                doc! {"term": term}
            );
            node.oplog_changed.notify_waiters();
        }
        _ if inner.repl.state == PRIMARY => {
            let keep = matches!(&choice, Some(Some(who)) if same_host(who, &me)) && !higher_primary;
            if !keep {
                step_down(
                    inner,
                    "lost the election rule (majority, priority or a newer primary)",
                );
            }
        }
        _ => {}
    }
}

pub fn step_down(inner: &mut Inner, why: &str) {
    if inner.repl.state == PRIMARY {
        inner.repl.state = SECONDARY;
        log_transition(PRIMARY, SECONDARY);
        slog!(
            I,
            "REPL",
            21402,
            "ReplCoord-0",
            "Stepping down",
            doc! {"reason": why}
        );
    }
}

/// Pulls the sync source's oplog and applies it; runs initial sync when we have no data.
async fn sync_loop(node: Arc<Node>) {
    let idle = Duration::from_millis(node.opts.heartbeat_interval_ms.min(200));
    let mut conn: Option<(String, AsyncConn)> = None;
    loop {
        if node.shutting_down.load(Ordering::SeqCst) {
            return;
        }
        let (state, source, last, delay) = {
            let g = node.lock();
            let source = g
                .repl
                .primary_host()
                .filter(|p| !same_host(p, &g.repl.me))
                .or_else(|| {
                    // Before any primary exists, an empty member syncs from any member holding data.
                    (g.repl.state == STARTUP2)
                        .then(|| {
                            g.repl
                                .peers
                                .iter()
                                .find(|(_, p)| p.health && p.state == SECONDARY && p.optime > ZERO)
                                .map(|(h, _)| h.clone())
                        })
                        .flatten()
                });
            let delay = g.repl.my_member().map(|m| member_delay(&m)).unwrap_or(0);
            (g.repl.state, source, g.oplog_top().unwrap_or(ZERO), delay)
        };
        let Some(source) = source.filter(|_| state == SECONDARY || state == STARTUP2) else {
            conn = None;
            tokio::time::sleep(idle).await;
            continue;
        };
        if conn.as_ref().is_none_or(|(h, _)| h != &source) {
            conn = AsyncConn::connect(&source, Duration::from_secs(2))
                .await
                .ok()
                .map(|c| (source.clone(), c));
        }
        let Some((_, c)) = conn.as_mut() else {
            tokio::time::sleep(idle).await;
            continue;
        };
        let result = if state == STARTUP2 {
            initial_sync(&node, c, &source).await
        } else {
            pull(&node, c, &source, last, delay).await
        };
        if let Err(e) = result {
            slog!(
                W,
                "REPL",
                21799,
                "BackgroundSync",
                "Sync source error",
                doc! {"syncSource": &source, "error": e}
            );
            conn = None;
            tokio::time::sleep(idle).await;
        }
    }
}

async fn find_all(c: &mut AsyncConn, db: &str, cmd: Document) -> Result<Vec<Document>, String> {
    let t = Duration::from_secs(30);
    let coll = cmd.get_str("find").unwrap_or_default().to_string();
    let r = c.command(db, cmd, t).await.map_err(|e| e.to_string())?;
    let cursor = r
        .get_document("cursor")
        .map_err(|_| format!("find failed: {r}"))?;
    let mut out: Vec<Document> = cursor
        .get_array("firstBatch")
        .into_iter()
        .flatten()
        .filter_map(|d| d.as_document().cloned())
        .collect();
    let mut id = cursor.get_i64("id").unwrap_or(0);
    while id != 0 {
        let r = c
            .command(
                db,
                doc! {"getMore": id, "collection": &coll, "batchSize": 10_000},
                t,
            )
            .await
            .map_err(|e| e.to_string())?;
        let cursor = r
            .get_document("cursor")
            .map_err(|_| format!("getMore failed: {r}"))?;
        out.extend(
            cursor
                .get_array("nextBatch")
                .into_iter()
                .flatten()
                .filter_map(|d| d.as_document().cloned()),
        );
        id = cursor.get_i64("id").unwrap_or(0);
    }
    Ok(out)
}

async fn pull(
    node: &Node,
    c: &mut AsyncConn,
    source: &str,
    last: Timestamp,
    delay: i64,
) -> Result<(), String> {
    let cmd = doc! {"find": "oplog.rs", "filter": {"ts": {"$gt": last}}, "batchSize": 5000, "limit": 5000, "awaitData": true, "maxTimeMS": 500, "$replData": 1};
    let r = c
        .command("local", cmd, Duration::from_secs(10))
        .await
        .map_err(|e| e.to_string())?;
    if let Ok(meta) = r.get_document("$replData") {
        node.lock().learn_repl_data(meta, true);
    }
    let batch: Vec<Document> = r
        .get_document("cursor")
        .map_err(|_| format!("oplog query failed: {r}"))?
        .get_array("firstBatch")
        .into_iter()
        .flatten()
        .filter_map(|d| d.as_document().cloned())
        .collect();
    let cutoff = DateTime::now().timestamp_millis() - delay * 1000;
    let ready: Vec<Document> = batch
        .iter()
        .take_while(|e| {
            delay == 0
                || e.get_datetime("wall")
                    .map(|w| w.timestamp_millis() <= cutoff)
                    .unwrap_or(true)
        })
        .cloned()
        .collect();
    let held_back = ready.len() < batch.len();
    if !ready.is_empty() {
        let report = {
            let mut g = node.lock();
            let inner = &mut *g;
            if inner.repl.state == SECONDARY {
                inner.repl.sync_source = Some(source.to_string());
                inner.apply_oplog(&ready).map_err(|e| e.to_string())?;
                let top = inner.oplog_top().unwrap_or(ZERO);
                let _ = inner.write(vec![doc! {"op": "u", "ns": MINVALID_NS, "o": {"_id": "minvalid", "ts": top, "t": inner.repl.term}}], false);
            }
            crate::commit::position_report(inner)
        };
        node.oplog_changed.notify_waiters();
        // As mongod's reporter does after each applied batch: the primary's commit point
        // need not wait for a heartbeat.
        if let Some(report) = report {
            c.command("admin", report, Duration::from_secs(10))
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    if held_back {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Clones every database but `local` from the source, then applies its oplog from the point
/// the clone started, and becomes SECONDARY.
async fn initial_sync(node: &Node, c: &mut AsyncConn, source: &str) -> Result<(), String> {
    slog!(
        I,
        "INITSYNC",
        21164,
        "ReplCoordExtern-0",
        "Starting initial sync",
        doc! {"syncSource": source}
    );
    node.crash_point("initial-sync");
    let t = Duration::from_secs(30);
    let top = find_all(
        c,
        "local",
        doc! {"find": "oplog.rs", "sort": {"$natural": -1}, "limit": 1},
    )
    .await?;
    let begin = top
        .first()
        .and_then(|e| e.get_timestamp("ts").ok())
        .unwrap_or(ZERO);
    let dbs = c
        .command("admin", doc! {"listDatabases": 1, "nameOnly": true}, t)
        .await
        .map_err(|e| e.to_string())?;
    let mut cloned = 0usize;
    for db in dbs
        .get_array("databases")
        .into_iter()
        .flatten()
        .filter_map(|d| d.as_document())
    {
        let name = db.get_str("name").unwrap_or_default().to_string();
        if name == "local" {
            continue;
        }
        let colls = find_all_list(c, &name).await?;
        for (coll, options, uuid) in colls {
            let indexes = find_all(c, &name, doc! {"listIndexes": &coll}).await?;
            let docs = find_all(
                c,
                &name,
                doc! {"find": &coll, "filter": {}, "batchSize": 10_000},
            )
            .await?;
            cloned += docs.len();
            let ns = format!("{name}.{coll}");
            let mut create = doc! {"create": &coll};
            create.extend(options);
            // The source's UUID, as mongod's collection cloner keeps it.
            let mut create_op = doc! {"op": "c", "ns": format!("{name}.$cmd"), "o": create};
            if let Some(ui) = uuid {
                create_op.insert("ui", ui);
            }
            let mut ops = vec![create_op];
            // Secondary indexes, as initial sync builds them before copying documents.
            ops.extend(
                indexes
                    .into_iter()
                    .filter(|i| i.get_str("name").ok() != Some("_id_"))
                    .map(|i| {
                        let mut o = doc! {"createIndexes": &coll};
                        o.extend(i);
                        doc! {"op": "c", "ns": format!("{name}.$cmd"), "o": o}
                    }),
            );
            ops.extend(
                docs.into_iter()
                    .map(|d| doc! {"op": "i", "ns": &ns, "o": d}),
            );
            node.lock().write(ops, false).map_err(|e| e.to_string())?;
        }
    }
    let entries = find_all(
        c,
        "local",
        doc! {"find": "oplog.rs", "filter": {"ts": {"$gte": begin}}, "batchSize": 10_000},
    )
    .await?;
    let mut g = node.lock();
    let inner = &mut *g;
    inner.apply_oplog(&entries).map_err(|e| e.to_string())?;
    let top = inner.oplog_top().unwrap_or(ZERO);
    let _ = inner.write(vec![doc! {"op": "u", "ns": MINVALID_NS, "o": {"_id": "minvalid", "ts": top, "t": inner.repl.term}}], false);
    if inner.repl.state == STARTUP2 {
        inner.repl.state = SECONDARY;
        log_transition(STARTUP2, SECONDARY);
    }
    slog!(
        I,
        "INITSYNC",
        21192,
        "ReplCoordExtern-0",
        "Initial sync done",
        doc! {"documentsCloned": cloned as i64, "oplogEntriesApplied": entries.len() as i64, "beginApplyingTimestamp": begin}
    );
    Ok(())
}

/// The collections of `db` with their options and UUIDs.
async fn find_all_list(
    c: &mut AsyncConn,
    db: &str,
) -> Result<Vec<(String, Document, Option<Bson>)>, String> {
    let r = c
        .command(db, doc! {"listCollections": 1}, Duration::from_secs(30))
        .await
        .map_err(|e| e.to_string())?;
    let cursor = r
        .get_document("cursor")
        .map_err(|_| format!("listCollections failed: {r}"))?;
    Ok(cursor
        .get_array("firstBatch")
        .into_iter()
        .flatten()
        .filter_map(|d| {
            let d = d.as_document()?;
            let options = d.get_document("options").cloned().unwrap_or_default();
            let uuid = d
                .get_document("info")
                .ok()
                .and_then(|i| i.get("uuid"))
                .cloned();
            Some((d.get_str("name").ok()?.to_string(), options, uuid))
        })
        .collect())
}
