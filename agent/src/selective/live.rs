//! The running replica set's side of a selective restore. Every copy is written into a
//! staging collection of the target's database, named after the op
//! (`tidemark_restore_<key>.<collection>`), and renamed onto its target only once every
//! collection is copied, so a restore that stops partway leaves the targets as they were
//! and only staging collections to drop (which the agent does, then or at its restart).

use bson::{Document, doc};
use mongodb::Client;
use mongodb::options::{ClientOptions, WriteConcern};
use tidemark_schema::control::{Op, OpCommand, PhaseReport, SelectiveTarget};

use crate::error::AgentError;
use crate::mongod::MongodError;

/// A namespace, split.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ns {
    pub db: String,
    pub coll: String,
}

impl Ns {
    pub fn parse(ns: &str) -> Option<Ns> {
        let (db, coll) = ns.split_once('.')?;
        Some(Ns {
            db: db.to_string(),
            coll: coll.to_string(),
        })
    }
}

impl std::fmt::Display for Ns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.db, self.coll)
    }
}

/// The start of every staging collection name of op `op_id`.
pub fn staging_prefix(op_id: &str) -> String {
    let key = blake3::hash(op_id.as_bytes()).to_hex();
    format!("tidemark_restore_{}.", &key[..10])
}

/// The staging collection of `target` for op `op_id`, in the target's database (a rename
/// within one database moves no data).
pub fn staging(op_id: &str, target: &Ns) -> Ns {
    Ns {
        db: target.db.clone(),
        coll: format!("{}{}", staging_prefix(op_id), target.coll),
    }
}

/// The running replica set, reached through its primary with majority writes.
pub struct Live {
    client: Client,
    /// For messages: `replica set rs0`.
    pub name: String,
}

impl Live {
    pub async fn connect(target: &SelectiveTarget) -> Result<Live, AgentError> {
        let name = format!("replica set {}", target.replica_set);
        let mut options = ClientOptions::parse(target.uri())
            .await
            .map_err(|e| connect_error(&name, e))?;
        options.app_name = Some("tidemark-selective-restore".into());
        options.server_selection_timeout = Some(std::time::Duration::from_secs(30));
        // Bounded: with a majority that cannot acknowledge (a secondary down in a PSA set),
        // a write fails after a minute instead of blocking a cancel forever.
        options.write_concern = Some(
            WriteConcern::builder()
                .w(mongodb::options::Acknowledgment::Majority)
                .w_timeout(std::time::Duration::from_millis(WTIMEOUT_MS as u64))
                .build(),
        );
        let client = Client::with_options(options).map_err(|e| connect_error(&name, e))?;
        Ok(Live { client, name })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Runs a command on the primary; `{ok: 0}` is an error naming the command. Writes
    /// carry majority write concern (a raw command does not take the client's), and a
    /// `writeConcernError` is an error: a write that a failover could roll back is never
    /// reported as done.
    pub async fn command(&self, db: &str, mut cmd: Document) -> Result<Document, LiveError> {
        let command = cmd.keys().next().cloned().unwrap_or_default();
        if WRITES.contains(&command.as_str()) {
            cmd.insert(
                "writeConcern",
                doc! {"w": "majority", "wtimeout": WTIMEOUT_MS},
            );
        }
        let fail = |code: Option<i32>, message: String| LiveError {
            code,
            error: MongodError::Command {
                node: self.name.clone(),
                command: command.clone(),
                message,
            },
        };
        // A command refused because the node is no longer primary was not run: asked
        // again (the driver selects the new primary) while an election settles.
        let began = std::time::Instant::now();
        let reply = loop {
            match self.client.database(db).run_command(cmd.clone()).await {
                Ok(reply) => break reply,
                Err(e)
                    if code_of(&e).is_some_and(|c| NOT_PRIMARY.contains(&c))
                        && began.elapsed() < ELECTION =>
                {
                    tracing::warn!(error = %e, "{command}: not primary; asking again");
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                Err(e) => return Err(fail(code_of(&e), e.to_string())),
            }
        };
        if let Ok(wce) = reply.get_document("writeConcernError") {
            return Err(fail(
                wce.get_i32("code").ok(),
                format!("write concern not satisfied: {wce}"),
            ));
        }
        Ok(reply)
    }

    /// The collection names of `db`.
    pub async fn collections(&self, db: &str) -> Result<Vec<String>, AgentError> {
        Ok(self
            .client
            .database(db)
            .list_collection_names()
            .await
            .map_err(|e| MongodError::Command {
                node: self.name.clone(),
                command: "listCollections".into(),
                message: e.to_string(),
            })?)
    }

    pub async fn exists(&self, ns: &Ns) -> Result<bool, AgentError> {
        Ok(self.collections(&ns.db).await?.contains(&ns.coll))
    }

    /// The collection's UUID (hex), `None` when it does not exist. A rename within a
    /// database keeps it, so "the target has the staging collection's UUID" is the proof
    /// that a rename happened, whatever else was dropped since.
    pub async fn uuid(&self, ns: &Ns) -> Result<Option<String>, AgentError> {
        let reply = self
            .command(
                &ns.db,
                doc! {"listCollections": 1, "filter": {"name": &ns.coll}},
            )
            .await?;
        let first = reply
            .get_document("cursor")
            .ok()
            .and_then(|c| c.get_array("firstBatch").ok())
            .and_then(|b| b.first())
            .and_then(|d| d.as_document());
        Ok(
            first.and_then(|d| match d.get_document("info").ok()?.get("uuid")? {
                bson::Bson::Binary(b) => Some(b.bytes.iter().map(|x| format!("{x:02x}")).collect()),
                _ => None,
            }),
        )
    }

    /// Whether the rename of a staging collection whose UUID is `uuid` onto `target`
    /// happened: asked for up to an election's length; `None` when the set cannot tell.
    pub async fn renamed_onto(&self, uuid: &str, target: &Ns) -> Option<bool> {
        let began = std::time::Instant::now();
        loop {
            match self.uuid(target).await {
                Ok(found) => return Some(found.as_deref() == Some(uuid)),
                Err(e) if began.elapsed() < ELECTION => {
                    tracing::warn!(error = %e, "cannot read {target}; asking again");
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                Err(_) => return None,
            }
        }
    }

    /// Renames `from` onto `to`; with `replace`, an existing `to` is dropped in the same
    /// step. Without it, a target that appeared since the checks is `NamespaceExists`.
    pub async fn rename(&self, from: &Ns, to: &Ns, replace: bool) -> Result<(), LiveError> {
        self.command(
            "admin",
            doc! {"renameCollection": from.to_string(), "to": to.to_string(), "dropTarget": replace},
        )
        .await
        .map(|_| ())
    }

    /// Drops every staging collection of op `op_id` in the databases `dbs`; returns the
    /// ones dropped. A missing one is not an error.
    pub async fn drop_staging(&self, op_id: &str, dbs: &[String]) -> Result<Vec<Ns>, AgentError> {
        let prefix = staging_prefix(op_id);
        let mut dropped = Vec::new();
        for db in dbs {
            for coll in self.collections(db).await? {
                if coll.starts_with(&prefix) {
                    let ns = Ns {
                        db: db.clone(),
                        coll,
                    };
                    match self.command(db, doc! {"drop": &ns.coll}).await {
                        Ok(_) => dropped.push(ns),
                        Err(e) if e.code == Some(NAMESPACE_NOT_FOUND) => {}
                        Err(e) => return Err(e.error.into()),
                    }
                }
            }
        }
        Ok(dropped)
    }
}

/// The commands a selective restore writes with.
const WRITES: &[&str] = &[
    "create",
    "createIndexes",
    "renameCollection",
    "drop",
    "update",
];

/// NotWritablePrimary, NotPrimaryNoSecondaryOk, NotPrimaryOrSecondary: the command was not
/// run, so it can be asked again whatever it does.
const NOT_PRIMARY: &[i32] = &[10107, 13435, 13436];
/// How long a majority write may wait for its acknowledgement.
const WTIMEOUT_MS: i64 = 60_000;
/// How long a command is asked again while the set elects a primary.
const ELECTION: std::time::Duration = std::time::Duration::from_secs(30);

/// mongod's error codes a selective restore acts on.
pub const NAMESPACE_NOT_FOUND: i32 = 26;
pub const NAMESPACE_EXISTS: i32 = 48;

/// A failed command on the running set, with mongod's code when it gave one.
#[derive(Debug)]
pub struct LiveError {
    pub code: Option<i32>,
    pub error: MongodError,
}

impl From<LiveError> for AgentError {
    fn from(e: LiveError) -> AgentError {
        AgentError::Mongod(e.error)
    }
}

pub(super) fn code_of(e: &mongodb::error::Error) -> Option<i32> {
    match e.kind.as_ref() {
        mongodb::error::ErrorKind::Command(c) => Some(c.code),
        _ => None,
    }
}

fn connect_error(name: &str, e: mongodb::error::Error) -> AgentError {
    AgentError::Mongod(MongodError::Connect {
        node: name.to_string(),
        message: e.to_string(),
    })
}

/// The target databases of a selective op: where its staging collections can be.
pub fn target_dbs(op: &Op) -> Vec<String> {
    let OpCommand::SelectiveRestore {
        namespaces,
        rename_to,
        ..
    } = &op.command
    else {
        return Vec::new();
    };
    let mut dbs: Vec<String> = namespaces
        .iter()
        .map(|ns| tidemark_schema::model::target_namespace(ns, Some(rename_to)))
        .filter_map(|ns| ns.split_once('.').map(|(db, _)| db.to_string()))
        .collect();
    dbs.sort();
    dbs.dedup();
    dbs
}

/// One rename the swap planned: a staging collection and its target.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct PlannedSwap {
    pub staging: String,
    pub target: String,
    /// The staging collection's UUID, which the target has once the rename happened.
    pub uuid: String,
}

/// The longest list a report holds under `key` (reports are rewritten per phase, so the
/// newest report of each phase carries everything known by then).
fn listed<T: serde::de::DeserializeOwned>(reports: &[PhaseReport], key: &str) -> Vec<T> {
    reports
        .iter()
        .filter_map(|r| r.details.get(key))
        .filter_map(|v| serde_json::from_value::<Vec<T>>(v.clone()).ok())
        .max_by_key(Vec::len)
        .unwrap_or_default()
}

/// For an op this agent was running when it died (or that was decided while it was
/// away): drops the op's staging collections and says what state the targets are in.
/// Which targets were put in place is read from the cluster (a planned rename whose
/// staging collection is gone while its target exists happened), not from the reports,
/// which may lag the last rename. Returns the sentence to add to the op's final report.
pub async fn after_restart(op: &Op, reports: &[PhaseReport]) -> String {
    let OpCommand::SelectiveRestore { target, .. } = &op.command else {
        return String::new();
    };
    let planned: Vec<PlannedSwap> = listed(reports, "planned");
    let merging: Vec<String> = listed(reports, "merging");
    let live = match Live::connect(target).await {
        Ok(live) => live,
        Err(e) => {
            return format!(
                "; the running set could not be reached ({e}): its staging collections (named \
                 {}*) may remain, drop them by hand; renames planned: {}; possibly partly \
                 merged: {}",
                staging_prefix(&op.id),
                planned
                    .iter()
                    .map(|p| p.target.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                merging.join(", ")
            );
        }
    };
    let (mut swapped, mut unknown) = (Vec::new(), Vec::new());
    for p in &planned {
        let Some(t) = Ns::parse(&p.target) else {
            continue;
        };
        match live.renamed_onto(&p.uuid, &t).await {
            Some(true) => swapped.push(p.target.clone()),
            Some(false) => {}
            None => unknown.push(p.target.clone()),
        }
    }
    let cleaned = match live.drop_staging(&op.id, &target_dbs(op)).await {
        Ok(dropped) if dropped.is_empty() => "; no staging collection was left".to_string(),
        Ok(dropped) => format!(
            "; its staging collections were dropped ({})",
            dropped
                .iter()
                .map(Ns::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Err(e) => format!(
            "; its staging collections (named {}*) could not be dropped: {e}; drop them by hand",
            staging_prefix(&op.id)
        ),
    };
    let mut state = String::new();
    if !swapped.is_empty() {
        state.push_str(&format!(
            "; already put in place before it stopped: {}",
            swapped.join(", ")
        ));
    }
    if !merging.is_empty() {
        state.push_str(&format!(
            "; possibly partly merged (upserts by _id, safe to run again): {}",
            merging.join(", ")
        ));
    }
    if !unknown.is_empty() {
        state.push_str(&format!(
            "; the set could not tell whether these were put in place: {}",
            unknown.join(", ")
        ));
    }
    if swapped.is_empty() && merging.is_empty() && unknown.is_empty() {
        state.push_str("; no target collection was changed");
    }
    format!("{state}{cleaned}")
}
