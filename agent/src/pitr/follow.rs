//! Following the replica set's slicing assignment: one GET at each ring of the doorbell, a slicer task per
//! stream assigned to this node, told to stop when the stream goes elsewhere. A stream is
//! its schedule and its storage: a schedule moved to another storage is a new timeline,
//! sliced by a new task from that storage's own chain.

use std::collections::BTreeMap;
use std::sync::Arc;

use tidemark_schema::control::{SliceStream, SlicingAssignment, slicing_key};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::node::Node;

/// Runs until the task is dropped.
pub async fn run(node: Arc<Node>) {
    let key = slicing_key(&node.cluster, &node.replica_set);
    let mut running: BTreeMap<String, (watch::Sender<Option<SliceStream>>, JoinHandle<()>)> =
        BTreeMap::new();
    let mut rings = node.doorbell.subscribe();
    loop {
        // A read that failed is tried again at --poll-interval: the ring is used up.
        let mut again = false;
        match read_assignment(&node, &key).await {
            // Not from the reconciler: logged and counted; the slicers go on as they were.
            Err(Unread::Untrusted) => {}
            Err(Unread::Failed(e)) => {
                tracing::warn!(error = %e, "cannot read the slicing assignment");
                again = true;
            }
            Ok(assignment) => {
                let mine: BTreeMap<String, SliceStream> = assignment
                    .into_iter()
                    .flat_map(|a| a.streams)
                    .filter(|s| s.node == node.id)
                    .map(|s| (stream_key(&s), s))
                    .collect();
                running.retain(|key, (tx, task)| {
                    if task.is_finished() {
                        return false;
                    }
                    if !mine.contains_key(key) {
                        tracing::info!(stream = %key, "no longer this node's stream: slicer stops");
                        let _ = tx.send(None);
                    }
                    true
                });
                for (key, stream) in mine {
                    match running.get(&key) {
                        Some((tx, _)) => {
                            tx.send_if_modified(|cur| {
                                let changed = cur.as_ref() != Some(&stream);
                                if changed {
                                    *cur = Some(stream.clone());
                                }
                                changed
                            });
                        }
                        None => {
                            tracing::info!(schedule = %stream.schedule, storage = %stream.storage_name, "slicing this replica set's oplog");
                            let (tx, rx) = watch::channel(Some(stream));
                            let task = tokio::spawn(super::slicer::run(node.clone(), rx));
                            running.insert(key, (tx, task));
                        }
                    }
                }
            }
        }
        // The leader rings after it changes the assignment; where no leader rings, look
        // every heartbeat interval as before.
        let period = match (again, node.doorbell.rung()) {
            (true, _) => node.cfg.poll_interval,
            (false, true) => node.cfg.resync_interval,
            (false, false) => node.cfg.heartbeat_interval,
        };
        crate::doorbell::Doorbell::wait(&mut rings, period).await;
    }
}

enum Unread {
    Untrusted,
    Failed(String),
}

/// The assignment, checked against the trusted keys: it names the storage the oplog is
/// copied to, so one written by anyone else must never be followed.
async fn read_assignment(node: &Node, key: &str) -> Result<Option<SlicingAssignment>, Unread> {
    let Some(value) = node
        .control
        .get::<serde_json::Value>(key)
        .await
        .map_err(|e| Unread::Failed(e.to_string()))?
    else {
        return Ok(None);
    };
    node.trust
        .check(key, &value)
        .map_err(|_| Unread::Untrusted)?;
    serde_json::from_value(value).map_err(|e| Unread::Failed(format!("{key}: {e}")))
}

/// A running slicer's key: its schedule and its storage.
pub fn stream_key(s: &SliceStream) -> String {
    format!("{} into {}", s.schedule, s.storage_name)
}
