//! The majority commit point, as mongod's topology coordinator keeps it: a primary computes it
//! from the optimes its voting data-bearing members report (heartbeats and
//! `replSetUpdatePosition`), every other member learns it from `$replData` (heartbeat replies
//! and the oplog fetch), and `replSetGetStatus`, `hello` and `$replData` report it.

use crate::node::{CmdError, Inner, Node, OPLOG_NS};
use crate::repl::{ARBITER, PRIMARY, member_arbiter, member_votes, same_host};
use bson::{Bson, DateTime, Document, Timestamp, doc};
use std::time::{Duration, Instant};

const ZERO: Timestamp = Timestamp {
    time: 0,
    increment: 0,
};

/// mongod's `OpTime`: a term and a timestamp, compared term first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct OpTime {
    pub t: i64,
    pub ts: Timestamp,
}

impl OpTime {
    /// The null optime mongod reports when it has none: `{ts: Timestamp(0, 0), t: -1}`.
    pub const NULL: OpTime = OpTime { t: -1, ts: ZERO };

    pub fn to_doc(self) -> Document {
        doc! {"ts": self.ts, "t": self.t}
    }

    pub fn from_doc(d: &Document) -> Option<OpTime> {
        let t = match d.get("t")? {
            Bson::Int64(t) => *t,
            Bson::Int32(t) => i64::from(*t),
            _ => return None,
        };
        Some(OpTime {
            t,
            ts: d.get_timestamp("ts").ok()?,
        })
    }
}

/// An optime with the wall-clock time of its oplog entry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stamped {
    pub op: OpTime,
    pub wall: DateTime,
}

impl Stamped {
    pub const NULL: Stamped = Stamped {
        op: OpTime::NULL,
        wall: DateTime::MIN,
    };
}

fn stamped_of(entry: &Document) -> Option<Stamped> {
    let ts = entry.get_timestamp("ts").ok()?;
    let t = entry.get_i64("t").unwrap_or(-1);
    let wall = entry
        .get_datetime("wall")
        .copied()
        .unwrap_or_else(|_| DateTime::from_millis(i64::from(ts.time) * 1000));
    Some(Stamped {
        op: OpTime { t, ts },
        wall,
    })
}

/// `Date(0)` for a null optime, as mongod prints an unset wall time.
fn wall_of(s: Option<Stamped>) -> DateTime {
    s.map_or(DateTime::from_millis(0), |s| {
        if s.op == OpTime::NULL {
            DateTime::from_millis(0)
        } else {
            s.wall
        }
    })
}

impl Inner {
    /// The newest entry of our oplog (the last applied, and durable: every write is journaled
    /// before it is acknowledged).
    pub fn applied(&self) -> Option<Stamped> {
        self.catalog
            .colls
            .get(OPLOG_NS)
            .and_then(|c| c.last())
            .and_then(stamped_of)
    }

    /// Our oplog entry at `ts`, if we hold it.
    fn entry_at(&self, ts: Timestamp) -> Option<Stamped> {
        self.catalog
            .colls
            .get(OPLOG_NS)
            .and_then(|c| c.get(&Bson::Timestamp(ts)))
            .and_then(stamped_of)
    }

    /// The committed snapshot (`readConcernMajorityOpTime`, `hello`'s `majorityOpTime`):
    /// the commit point, but never past what this member has applied.
    pub fn majority_snapshot(&self) -> Option<Stamped> {
        let cp = self.repl.commit_point?;
        match self.applied() {
            Some(a) if a.op < cp.op => Some(a),
            Some(_) => Some(cp),
            // An arbiter holds no oplog and reads nothing.
            None => (self.repl.state == ARBITER).then_some(cp),
        }
    }

    /// mongod's `advanceLastCommittedOpTimeAndWallTime`: a primary takes nothing older than
    /// the first entry of its term; a data-bearing member takes a commit point of another
    /// term than its last applied entry only from its sync source, and then no further than
    /// that entry (it may be on another branch); the commit point never goes back.
    pub fn advance_commit_point(&mut self, cp: Stamped, from_sync_source: bool) -> bool {
        if self.repl.my_member().is_none() || cp.op == OpTime::NULL {
            return false;
        }
        if self.repl.state == PRIMARY && self.repl.first_op_of_term.is_some_and(|f| cp.op < f) {
            return false;
        }
        let mut cp = cp;
        if self.repl.state != ARBITER {
            let mine = self.applied().unwrap_or(Stamped::NULL);
            if mine.op.t != cp.op.t {
                if !from_sync_source {
                    return false;
                }
                if mine.op < cp.op {
                    cp = mine;
                }
            }
        }
        if cp.op == OpTime::NULL {
            return false;
        }
        if self.repl.commit_point.is_some_and(|old| cp.op <= old.op) {
            return false;
        }
        self.repl.commit_point = Some(cp);
        // The pin on the oplog moved: entries it held may now go.
        if let Err(e) = self.reclaim_oplog() {
            crate::slog!(
                E,
                "STORAGE",
                22320,
                "OplogCapMaintainerThread",
                "Oplog truncation failed",
                doc! {"error": e.to_string()}
            );
        }
        true
    }

    /// On a primary, the commit point as `updateLastCommittedOpTimeAndWallTime` computes it:
    /// the `writeMajorityCount`-th newest optime among the voting data-bearing members (ours
    /// is our last entry, the others' what they last reported).
    pub fn update_commit_point(&mut self) -> bool {
        if self.repl.state != PRIMARY {
            return false;
        }
        let members = self.repl.members();
        let voters = members.iter().filter(|m| member_votes(m) > 0.0).count();
        let data_voters: Vec<&Document> = members
            .iter()
            .filter(|m| member_votes(m) > 0.0 && !member_arbiter(m))
            .collect();
        let write_majority = (voters / 2 + 1).min(data_voters.len());
        let mine = self.applied().map_or(OpTime::NULL, |s| s.op);
        let mut optimes: Vec<OpTime> = data_voters
            .iter()
            .map(|m| {
                let host = m.get_str("host").unwrap_or_default();
                if same_host(host, &self.repl.me) {
                    mine
                } else {
                    self.repl.peers.get(host).map_or(OpTime::NULL, |p| OpTime {
                        t: p.optime_term,
                        ts: p.optime,
                    })
                }
            })
            .collect();
        if write_majority == 0 || optimes.len() < write_majority {
            return false;
        }
        optimes.sort_by(|a, b| b.cmp(a));
        let candidate = optimes[write_majority - 1].min(mine);
        // A majority holds an entry we do not (another branch): nothing to commit from it.
        let Some(found) = self.entry_at(candidate.ts).filter(|s| s.op == candidate) else {
            return false;
        };
        self.advance_commit_point(found, false)
    }

    /// `$replData`, the replication metadata mongod attaches to replies when asked (heartbeats
    /// and the oplog fetcher ask): where the commit point is, as this member knows it.
    pub fn repl_data(&self) -> Document {
        let cp = self.repl.commit_point;
        let members = self.repl.members();
        let index_of = |host: Option<String>| {
            host.and_then(|h| {
                members
                    .iter()
                    .position(|m| same_host(m.get_str("host").unwrap_or_default(), &h))
            })
            .map_or(-1, |i| i as i32)
        };
        doc! {
            "term": self.repl.term,
            "lastOpCommitted": cp.map_or(OpTime::NULL, |c| c.op).to_doc(),
            "lastCommittedWall": wall_of(cp),
            "lastOpVisible": self.majority_snapshot().map_or(OpTime::NULL, |c| c.op).to_doc(),
            "configVersion": self.repl.config_version() as i32,
            "configTerm": self.repl.term,
            "primaryIndex": index_of(self.repl.primary_host()),
            "syncSourceIndex": index_of(self.repl.sync_source.clone()),
            "isPrimary": self.repl.state == PRIMARY,
        }
    }

    /// Takes the term and the commit point from a `$replData` a peer sent (a primary keeps
    /// its term: one in a lower term steps down at its next heartbeat instead).
    pub fn learn_repl_data(&mut self, meta: &Document, from_sync_source: bool) {
        if let Ok(term) = meta.get_i64("term")
            && term > self.repl.term
            && self.repl.state != PRIMARY
        {
            self.repl.term = term;
        }
        let Some(op) = meta
            .get_document("lastOpCommitted")
            .ok()
            .and_then(OpTime::from_doc)
        else {
            return;
        };
        let wall = meta
            .get_datetime("lastCommittedWall")
            .copied()
            .unwrap_or(DateTime::from_millis(0));
        self.advance_commit_point(Stamped { op, wall }, from_sync_source);
    }

    /// `replSetGetStatus.optimes` and the fields beside it, as mongod 7.0 reports them.
    pub fn status_optimes(&self, status: &mut Document) {
        let applied = self.applied();
        let cp = self.repl.commit_point;
        let snapshot = self.majority_snapshot();
        let op = |s: Option<Stamped>| s.map_or(OpTime::NULL, |s| s.op).to_doc();
        status.insert(
            "optimes",
            doc! {
                "lastCommittedOpTime": op(cp),
                "lastCommittedWallTime": wall_of(cp),
                "readConcernMajorityOpTime": op(snapshot),
                "appliedOpTime": op(applied),
                "durableOpTime": op(applied),
                "lastAppliedWallTime": wall_of(applied),
                "lastDurableWallTime": wall_of(applied),
            },
        );
        status.insert("lastStableRecoveryTimestamp", self.checkpoint_ts);
        let members = self.repl.members();
        let voters = members.iter().filter(|m| member_votes(m) > 0.0).count() as i32;
        let writable = members
            .iter()
            .filter(|m| member_votes(m) > 0.0 && !member_arbiter(m))
            .count() as i32;
        status.insert("majorityVoteCount", voters / 2 + 1);
        status.insert("writeMajorityCount", (voters / 2 + 1).min(writable));
        status.insert("votingMembersCount", voters);
        status.insert("writableVotingMembersCount", writable);
    }

    /// `hello.lastWrite`: the last applied entry, and the committed snapshot when there is one.
    pub fn last_write(&self) -> Document {
        let applied = self.applied();
        let mut d = doc! {
            "opTime": applied.map_or(OpTime::NULL, |s| s.op).to_doc(),
            "lastWriteDate": wall_of(applied),
        };
        if let Some(s) = self.majority_snapshot() {
            d.insert("majorityOpTime", s.op.to_doc());
            d.insert("majorityWriteDate", wall_of(Some(s)));
        }
        d
    }
}

/// `replSetUpdatePosition`: a secondary reports what it has applied, so the primary's commit
/// point follows without waiting for the next heartbeat.
pub fn update_position(node: &Node, cmd: &Document) -> Result<Document, CmdError> {
    let mut g = node.lock();
    let inner = &mut *g;
    if inner.repl.set_name.is_none() {
        return Err(CmdError::new(
            76,
            "NoReplicationEnabled",
            "not running with --replSet",
        ));
    }
    let members = inner.repl.members();
    for u in cmd
        .get_array("optimes")
        .into_iter()
        .flatten()
        .filter_map(Bson::as_document)
    {
        let id = u.get("memberId").and_then(|v| match v {
            Bson::Int32(i) => Some(i64::from(*i)),
            Bson::Int64(i) => Some(*i),
            _ => None,
        });
        let host = members.iter().find_map(|m| {
            let mid = m
                .get("_id")
                .and_then(|v| v.as_i32().map(i64::from).or(v.as_i64()));
            (mid == id).then(|| m.get_str("host").unwrap_or_default().to_string())
        });
        let applied = u
            .get_document("appliedOpTime")
            .ok()
            .and_then(OpTime::from_doc);
        if let (Some(host), Some(op)) = (host, applied)
            && let Some(p) = inner
                .repl
                .peers
                .iter_mut()
                .find(|(h, _)| same_host(h, &host))
                .map(|(_, p)| p)
            && op
                > (OpTime {
                    t: p.optime_term,
                    ts: p.optime,
                })
        {
            p.optime = op.ts;
            p.optime_term = op.t;
        }
    }
    if let Ok(meta) = cmd.get_document("$replData") {
        inner.learn_repl_data(meta, false);
    }
    inner.update_commit_point();
    Ok(doc! {"ok": 1.0})
}

/// The body of the `replSetUpdatePosition` a secondary sends its sync source.
pub fn position_report(inner: &Inner) -> Option<Document> {
    let me = inner.repl.my_member()?;
    let id = me.get("_id").cloned().unwrap_or(Bson::Int32(0));
    let applied = inner.applied()?;
    let op = applied.op.to_doc();
    Some(doc! {
        "replSetUpdatePosition": 1,
        "optimes": [{
            "durableOpTime": op.clone(),
            "durableWallTime": applied.wall,
            "appliedOpTime": op,
            "appliedWallTime": applied.wall,
            "memberId": id,
            "cfgver": inner.repl.config_version(),
        }],
        "$replData": inner.repl_data(),
    })
}

/// For `readConcern: {level: "majority"}`: the timestamp reads of the oplog stop at. An
/// uninitiated member refuses (as mongod does); a standalone reads everything (`None`);
/// a member without a committed snapshot yet waits for one, up to `maxTimeMS`.
pub async fn majority_read_point(
    node: &Node,
    max_time_ms: Option<i64>,
) -> Result<Option<Timestamp>, CmdError> {
    let deadline = Instant::now()
        + Duration::from_millis(max_time_ms.unwrap_or(60_000).clamp(1, 3_600_000) as u64);
    loop {
        {
            let g = node.lock();
            if g.repl.set_name.is_none() {
                return Ok(None);
            }
            if g.repl.config.is_none() {
                return Err(CmdError::new(
                    94,
                    "NotYetInitialized",
                    "Cannot use non-local read concern until replica set is finished initializing.",
                ));
            }
            if let Some(s) = g.majority_snapshot() {
                return Ok(Some(s.op.ts));
            }
        }
        if Instant::now() >= deadline {
            return Err(CmdError::new(
                50,
                "MaxTimeMSExpired",
                "operation exceeded time limit",
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The read concern level a command asked for (`local` when none).
pub fn read_concern_level(cmd: &Document) -> &str {
    cmd.get_document("readConcern")
        .ok()
        .and_then(|r| r.get_str("level").ok())
        .unwrap_or("local")
}
