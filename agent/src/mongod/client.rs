//! A connection to one mongod (direct, never through replica-set discovery) and the
//! commands the agent needs: who are you, what is your config, step down, shut down.

use std::time::Duration;

use bson::{Bson, Document, doc};
use mongodb::Client;
use mongodb::options::ClientOptions;
use tidemark_schema::control::MemberRole;

/// Errors at the mongod seam. Messages name the node; URIs are always redacted.
#[derive(Debug, thiserror::Error)]
pub enum MongodError {
    #[error("mongod {node}: cannot connect: {message}")]
    Connect { node: String, message: String },
    #[error("mongod {node}: command {command} failed: {message}")]
    Command {
        node: String,
        command: String,
        message: String,
    },
    #[error("mongod {node}: {message}")]
    Unexpected { node: String, message: String },
    #[error("mongod {node}: {message}")]
    Process { node: String, message: String },
    /// The process ended before it answered (exit code 48: its port was taken).
    #[error("mongod {node}: exited during start-up ({status})")]
    StartExit {
        node: String,
        status: std::process::ExitStatus,
    },
}

impl MongodError {
    /// mongod's exit code when it cannot listen on its port (address in use).
    pub const EXIT_NET_ERROR: i32 = 48;

    /// A start that failed only because another process took the port first: worth
    /// another try on another port.
    pub fn port_taken(&self) -> bool {
        matches!(self, MongodError::StartExit { status, .. } if status.code() == Some(Self::EXIT_NET_ERROR))
    }
}

/// What the agent learns from mongod itself.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeFacts {
    /// `host:port` as the replica-set config names this member (hello's `me`).
    pub me: String,
    pub replica_set: Option<String>,
    /// `PRIMARY`, `SECONDARY`, `ARBITER`, `STARTUP2`, … or `STANDALONE`.
    pub role: MemberRole,
    pub hidden: bool,
    pub arbiter: bool,
    pub delayed: bool,
    pub lag_seconds: f64,
    pub version: String,
    /// `psmdb` when buildInfo carries `psmdbVersion`, else `community`.
    pub flavor: String,
    /// PSMDB has `$backupCursor`; community mongod does not.
    pub backup_cursor: bool,
}

/// Removes the password (and user) from a MongoDB URI, for logs and messages.
pub fn redact_uri(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_string();
    };
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let authority = match authority.rsplit_once('@') {
        Some((_, hosts)) => format!("***@{hosts}"),
        None => authority.to_string(),
    };
    // Options can carry secrets too (`password=`, `authMechanismProperties=AWS_SESSION_TOKEN:…`,
    // `tlsCertificateKeyFilePassword=`): keep the option names, hide values that may be one.
    let tail = match tail.split_once('?') {
        None => tail.to_string(),
        Some((path, query)) => {
            let opts: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if is_secret_option(k) => format!("{k}=***"),
                    _ => kv.to_string(),
                })
                .collect();
            format!("{path}?{}", opts.join("&"))
        }
    };
    format!("{scheme}://{authority}{tail}")
}

fn is_secret_option(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "token",
        "authmechanismproperties",
        "key",
    ]
    .iter()
    .any(|s| k.contains(s))
}

#[cfg(test)]
mod redact_tests {
    #[test]
    fn credentials_and_secret_options_are_hidden() {
        let r = super::redact_uri(
            "mongodb://u:pw@db1:27017/?authSource=admin&tlsCertificateKeyFilePassword=s3cr3t&authMechanismProperties=AWS_SESSION_TOKEN:tok",
        );
        assert!(
            !r.contains("pw") && !r.contains("s3cr3t") && !r.contains("tok"),
            "{r}"
        );
        assert!(r.contains("authSource=admin"), "{r}");
        assert_eq!(
            super::redact_uri("mongodb://db1:27017"),
            "mongodb://db1:27017"
        );
    }
}

#[derive(Clone)]
pub struct MongodClient {
    client: Client,
    /// For messages: the redacted URI.
    pub node: String,
}

impl MongodClient {
    /// Connects directly to the node in `uri`, never following replica-set discovery:
    /// the agent must talk to its own mongod even when it is a secondary.
    pub async fn connect(uri: &str) -> Result<MongodClient, MongodError> {
        let node = redact_uri(uri);
        let mut options = ClientOptions::parse(uri)
            .await
            .map_err(|e| MongodError::Connect {
                node: node.clone(),
                message: redact_error(&e.to_string(), uri),
            })?;
        options.direct_connection = Some(true);
        options.connect_timeout = Some(Duration::from_secs(5));
        options.server_selection_timeout = Some(Duration::from_secs(5));
        options.app_name = Some("tidemark-agent".into());
        let client = Client::with_options(options).map_err(|e| MongodError::Connect {
            node: node.clone(),
            message: redact_error(&e.to_string(), uri),
        })?;
        Ok(MongodClient { client, node })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Runs an admin command, turning `{ok: 0}` and transport errors into `Command`.
    pub async fn admin(&self, cmd: Document) -> Result<Document, MongodError> {
        let name = cmd.keys().next().cloned().unwrap_or_default();
        self.client
            .database("admin")
            .run_command(cmd)
            .await
            .map_err(|e| MongodError::Command {
                node: self.node.clone(),
                command: name,
                message: e.to_string(),
            })
    }

    pub async fn facts(&self) -> Result<NodeFacts, MongodError> {
        let hello = self.admin(doc! {"hello": 1}).await?;
        let build = self.admin(doc! {"buildInfo": 1}).await?;
        let version = build.get_str("version").unwrap_or("unknown").to_string();
        let psmdb = build.contains_key("psmdbVersion");
        let replica_set = hello.get_str("setName").ok().map(str::to_string);
        let arbiter = hello.get_bool("arbiterOnly").unwrap_or(false);
        let hidden = hello.get_bool("hidden").unwrap_or(false);
        let me = hello.get_str("me").unwrap_or_default().to_string();
        let mut role = if replica_set.is_none() {
            MemberRole::Other("STANDALONE".into())
        } else if hello.get_bool("isWritablePrimary").unwrap_or(false) {
            MemberRole::Primary
        } else if hello.get_bool("secondary").unwrap_or(false) {
            MemberRole::Secondary
        } else if arbiter {
            MemberRole::Arbiter
        } else {
            MemberRole::Other("UNKNOWN".into())
        };
        let mut lag_seconds = 0.0;
        let mut delayed = false;
        if replica_set.is_some() {
            if let Ok(status) = self.admin(doc! {"replSetGetStatus": 1}).await {
                let (state, lag) = member_state_and_lag(&status, &me);
                if let Some(s) = state {
                    role = MemberRole::from(s);
                }
                lag_seconds = lag;
            }
            if let Ok(config) = self.replset_config().await {
                delayed = member_is_delayed(&config, &me);
            }
        }
        Ok(NodeFacts {
            me,
            replica_set,
            role,
            hidden,
            arbiter,
            delayed,
            lag_seconds,
            version,
            flavor: if psmdb { "psmdb" } else { "community" }.to_string(),
            backup_cursor: psmdb,
        })
    }

    pub async fn replset_config(&self) -> Result<Document, MongodError> {
        let reply = self.admin(doc! {"replSetGetConfig": 1}).await?;
        reply
            .get_document("config")
            .cloned()
            .map_err(|_| MongodError::Unexpected {
                node: self.node.clone(),
                message: "replSetGetConfig returned no config".into(),
            })
    }

    /// `getCmdLineOpts`: the argv and parsed options the node runs with.
    pub async fn cmd_line_opts(&self) -> Result<Document, MongodError> {
        self.admin(doc! {"getCmdLineOpts": 1}).await
    }

    /// Steps a primary down so a secondary takes over before it stops.
    pub async fn step_down(&self, seconds: i64) -> Result<(), MongodError> {
        match self
            .admin(doc! {"replSetStepDown": seconds, "secondaryCatchUpPeriodSecs": 10})
            .await
        {
            Ok(_) => Ok(()),
            // The connection drops when a primary steps down on some versions: success.
            Err(MongodError::Command { message, .. })
                if message.contains("connection") || message.contains("closed") =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// `dbHash` of each namespace (`db.collection`) that exists, by namespace: one
    /// command per database, asking only for the named collections.
    pub async fn db_hashes(
        &self,
        namespaces: &[String],
    ) -> Result<std::collections::BTreeMap<String, String>, MongodError> {
        let mut by_db: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
        for ns in namespaces {
            if let Some((db, coll)) = ns.split_once('.') {
                by_db.entry(db).or_default().push(coll);
            }
        }
        let mut out = std::collections::BTreeMap::new();
        for (db, colls) in by_db {
            let reply = self
                .client
                .database(db)
                // Bounded: dbHash holds a shared lock on the database while it scans.
                .run_command(
                    doc! {"dbHash": 1, "collections": colls.clone(), "maxTimeMS": 60_000i64},
                )
                .await
                .map_err(|e| MongodError::Command {
                    node: self.node.clone(),
                    command: "dbHash".into(),
                    message: e.to_string(),
                })?;
            let hashes = reply.get_document("collections").ok();
            for coll in colls {
                if let Some(h) = hashes.and_then(|h| h.get_str(coll).ok()) {
                    out.insert(format!("{db}.{coll}"), h.to_string());
                }
            }
        }
        Ok(out)
    }

    /// Each user collection's documents and data bytes (`collStats`), for at most
    /// `MAX_SIZED` collections: mongod's own databases and views are left out.
    pub async fn collection_sizes(
        &self,
    ) -> Result<
        std::collections::BTreeMap<String, tidemark_schema::manifest::CollectionSize>,
        MongodError,
    > {
        const MAX_SIZED: usize = 10_000;
        let fail = |command: &str, e: mongodb::error::Error| MongodError::Command {
            node: self.node.clone(),
            command: command.into(),
            message: e.to_string(),
        };
        let mut out = std::collections::BTreeMap::new();
        let dbs = self
            .client
            .list_database_names()
            .await
            .map_err(|e| fail("listDatabases", e))?;
        for db in dbs
            .iter()
            .filter(|d| !["admin", "local", "config"].contains(&d.as_str()))
        {
            let names = self
                .client
                .database(db)
                .list_collection_names()
                .filter(doc! {"type": "collection"})
                .await
                .map_err(|e| fail("listCollections", e))?;
            for coll in names.iter().filter(|c| !c.starts_with("system.")) {
                // Past the cap nothing is recorded: a partial list would make a plan warn
                // that a pattern held nothing.
                if out.len() >= MAX_SIZED {
                    return Err(MongodError::Unexpected {
                        node: self.node.clone(),
                        message: format!("more than {MAX_SIZED} collections; sizes not recorded"),
                    });
                }
                // A collection dropped since it was listed is left out, not a failure.
                let Ok(stats) = self
                    .client
                    .database(db)
                    .run_command(doc! {"collStats": coll, "maxTimeMS": 10_000i64})
                    .await
                else {
                    continue;
                };
                let n = |k: &str| match stats.get(k) {
                    Some(Bson::Int32(v)) => *v as u64,
                    Some(Bson::Int64(v)) => *v as u64,
                    Some(Bson::Double(v)) => *v as u64,
                    _ => 0,
                };
                out.insert(
                    format!("{db}.{coll}"),
                    tidemark_schema::manifest::CollectionSize {
                        documents: n("count"),
                        bytes: n("size"),
                    },
                );
            }
        }
        Ok(out)
    }

    /// Asks mongod to shut down. A closed connection is the expected answer.
    pub async fn shutdown(&self, force: bool) -> Result<(), MongodError> {
        match self
            .client
            .database("admin")
            .run_command(doc! {"shutdown": 1, "force": force})
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let text = e.to_string();
                if is_connection_closed(&text) {
                    Ok(())
                } else {
                    Err(MongodError::Command {
                        node: self.node.clone(),
                        command: "shutdown".into(),
                        message: text,
                    })
                }
            }
        }
    }
}

fn is_connection_closed(text: &str) -> bool {
    let t = text.to_lowercase();
    [
        "connection",
        "closed",
        "reset",
        "broken pipe",
        "eof",
        "i/o error",
        "io error",
    ]
    .iter()
    .any(|w| t.contains(w))
}

fn redact_error(message: &str, uri: &str) -> String {
    message.replace(uri, &redact_uri(uri))
}

/// This member's state name and replication lag from `replSetGetStatus`.
fn member_state_and_lag(status: &Document, me: &str) -> (Option<String>, f64) {
    let Ok(members) = status.get_array("members") else {
        return (None, 0.0);
    };
    let optime_secs = |m: &Document| -> Option<f64> {
        match m.get("optimeDate") {
            Some(Bson::DateTime(d)) => Some(d.timestamp_millis() as f64 / 1000.0),
            _ => m
                .get_document("optime")
                .ok()
                .and_then(|o| o.get_timestamp("ts").ok())
                .map(|ts| ts.time as f64),
        }
    };
    let docs: Vec<&Document> = members.iter().filter_map(Bson::as_document).collect();
    let primary = docs
        .iter()
        .find(|m| m.get_str("stateStr").ok() == Some("PRIMARY"))
        .and_then(|m| optime_secs(m));
    let mine = docs
        .iter()
        .find(|m| m.get_bool("self").unwrap_or(false) || m.get_str("name").ok() == Some(me));
    match mine {
        Some(m) => {
            let state = m.get_str("stateStr").ok().map(str::to_string);
            let lag = match (primary, optime_secs(m)) {
                (Some(p), Some(s)) => (p - s).max(0.0),
                _ => 0.0,
            };
            (state, lag)
        }
        None => (None, 0.0),
    }
}

fn member_is_delayed(config: &Document, me: &str) -> bool {
    config
        .get_array("members")
        .map(|ms| {
            ms.iter().filter_map(Bson::as_document).any(|m| {
                m.get_str("host").ok() == Some(me)
                    && (m.get_i64("secondaryDelaySecs").unwrap_or(0) > 0
                        || m.get_i32("secondaryDelaySecs").unwrap_or(0) > 0
                        || m.get_i32("slaveDelay").unwrap_or(0) > 0)
            })
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_are_redacted() {
        assert_eq!(
            redact_uri("mongodb://admin:s3cret@db1:27017/?authSource=admin"),
            "mongodb://***@db1:27017/?authSource=admin"
        );
        assert_eq!(redact_uri("mongodb://db1:27017"), "mongodb://db1:27017");
    }
}
