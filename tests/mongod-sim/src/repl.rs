//! Replica-set state of one member: its config, what heartbeats told it about the others,
//! elections, and the documents `hello` and `replSetGetStatus` report.

use crate::catalog::Catalog;
use crate::options::Options;
use bson::{Bson, DateTime, Document, Timestamp, doc, oid::ObjectId};
use std::collections::HashMap;
use std::time::Instant;

pub const STARTUP: i32 = 0;
pub const PRIMARY: i32 = 1;
pub const SECONDARY: i32 = 2;
pub const STARTUP2: i32 = 5;
pub const ARBITER: i32 = 7;
pub const DOWN: i32 = 8;
pub const REMOVED: i32 = 10;

pub const CONFIG_NS: &str = "local.system.replset";
pub const ELECTION_NS: &str = "local.replset.election";
pub const MINVALID_NS: &str = "local.replset.minvalid";

pub fn state_str(s: i32) -> &'static str {
    match s {
        PRIMARY => "PRIMARY",
        SECONDARY => "SECONDARY",
        STARTUP2 => "STARTUP2",
        ARBITER => "ARBITER",
        DOWN => "(not reachable/healthy)",
        REMOVED => "REMOVED",
        3 => "RECOVERING",
        _ => "STARTUP",
    }
}

/// "localhost:p" and "127.0.0.1:p" name the same member.
pub fn same_host(a: &str, b: &str) -> bool {
    let norm = |h: &str| h.replace("localhost:", "127.0.0.1:");
    norm(a) == norm(b)
}

/// What heartbeats told us about another member.
#[derive(Debug, Clone)]
pub struct Peer {
    pub health: bool,
    pub state: i32,
    pub optime: Timestamp,
    /// The term of the entry at `optime` (what mongod's optimes carry as `t`).
    pub optime_term: i64,
    pub term: i64,
    pub electable: bool,
    pub last_heartbeat: Option<DateTime>,
    pub ping_ms: i64,
    pub up_since: Option<Instant>,
}

impl Default for Peer {
    fn default() -> Peer {
        Peer {
            health: false,
            state: DOWN,
            optime: Timestamp {
                time: 0,
                increment: 0,
            },
            optime_term: -1,
            term: -1,
            electable: false,
            last_heartbeat: None,
            ping_ms: 0,
            up_since: None,
        }
    }
}

pub struct ReplState {
    pub set_name: Option<String>,
    pub me: String,
    pub config: Option<Document>,
    pub state: i32,
    pub term: i64,
    pub peers: HashMap<String, Peer>,
    pub step_down_until: Option<Instant>,
    pub election_date: Option<DateTime>,
    pub election_ts: Option<Timestamp>,
    pub sync_source: Option<String>,
    /// When this process started: a restarted member waits an election timeout before
    /// standing, so it hears the current primary first (as mongod does).
    pub started: Instant,
    /// This member ran `replSetInitiate` and may stand at once.
    pub initiated_here: bool,
    /// The majority commit point as this member knows it (`None` until it computes or
    /// learns one; not kept across restarts, as mongod's is not).
    pub commit_point: Option<crate::commit::Stamped>,
    /// On a primary, its term's first entry: it commits nothing older (mongod's
    /// `_firstOpTimeOfMyTerm`).
    pub first_op_of_term: Option<crate::commit::OpTime>,
}

fn num(v: Option<&Bson>) -> f64 {
    match v {
        Some(Bson::Int32(i)) => *i as f64,
        Some(Bson::Int64(i)) => *i as f64,
        Some(Bson::Double(d)) => *d,
        Some(Bson::Boolean(b)) => f64::from(u8::from(*b)),
        _ => 0.0,
    }
}

/// Member fields with mongod's defaults filled in.
pub fn member_priority(m: &Document) -> f64 {
    if m.get("priority").is_some() {
        num(m.get("priority"))
    } else if m.get_bool("arbiterOnly").unwrap_or(false) {
        0.0
    } else {
        1.0
    }
}
pub fn member_votes(m: &Document) -> f64 {
    if m.get("votes").is_some() {
        num(m.get("votes"))
    } else {
        1.0
    }
}
pub fn member_arbiter(m: &Document) -> bool {
    m.get_bool("arbiterOnly").unwrap_or(false)
}
pub fn member_hidden(m: &Document) -> bool {
    m.get_bool("hidden").unwrap_or(false)
}
pub fn member_delay(m: &Document) -> i64 {
    num(m.get("secondaryDelaySecs").or(m.get("slaveDelay"))) as i64
}

impl ReplState {
    /// A member that has just started: no config, no peers heard from, term 0.
    pub fn starting(set_name: Option<String>, me: String) -> ReplState {
        ReplState {
            set_name,
            me,
            config: None,
            state: STARTUP,
            term: 0,
            peers: HashMap::new(),
            step_down_until: None,
            election_date: None,
            election_ts: None,
            sync_source: None,
            started: Instant::now(),
            initiated_here: false,
            commit_point: None,
            first_op_of_term: None,
        }
    }

    pub fn load(opts: &Options, catalog: &Catalog, last_ts: Timestamp) -> ReplState {
        let mut rs = ReplState::starting(opts.repl_set.clone(), opts.host());
        if rs.set_name.is_none() {
            return rs;
        }
        rs.term = catalog
            .colls
            .get(ELECTION_NS)
            .and_then(|c| c.docs().next())
            .map(|d| num(d.get("term")) as i64)
            .unwrap_or(0);
        if let Some(cfg) = catalog
            .colls
            .get(CONFIG_NS)
            .and_then(|c| c.docs().next())
            .cloned()
        {
            let has_data = last_ts
                != Timestamp {
                    time: 0,
                    increment: 0,
                };
            rs.adopt_config(cfg, has_data);
        }
        rs
    }

    /// Initiated and running with `--replSet`: writes go to the oplog.
    pub fn enabled(&self) -> bool {
        self.set_name.is_some() && self.config.is_some()
    }

    pub fn members(&self) -> Vec<Document> {
        self.config
            .as_ref()
            .and_then(|c| c.get_array("members").ok())
            .map(|a| a.iter().filter_map(|m| m.as_document().cloned()).collect())
            .unwrap_or_default()
    }

    pub fn my_member(&self) -> Option<Document> {
        self.members()
            .into_iter()
            .find(|m| same_host(m.get_str("host").unwrap_or_default(), &self.me))
    }

    pub fn config_version(&self) -> i64 {
        self.config
            .as_ref()
            .map(|c| num(c.get("version")) as i64)
            .unwrap_or(-2)
    }

    /// Takes a config; the state follows from our place in it and whether we hold data.
    pub fn adopt_config(&mut self, cfg: Document, has_data: bool) {
        self.config = Some(cfg);
        let hosts: Vec<String> = self
            .members()
            .iter()
            .map(|m| m.get_str("host").unwrap_or_default().to_string())
            .collect();
        self.peers
            .retain(|h, _| hosts.iter().any(|x| same_host(x, h)));
        for h in hosts.iter().filter(|h| !same_host(h, &self.me)) {
            self.peers.entry(h.clone()).or_default();
        }
        self.state = match self.my_member() {
            None => REMOVED,
            Some(m) if member_arbiter(&m) => ARBITER,
            Some(_) if self.state == PRIMARY => PRIMARY,
            Some(_) if self.state == SECONDARY || has_data => SECONDARY,
            Some(_) => STARTUP2,
        };
    }

    /// Whether we could be primary now.
    pub fn electable(&self) -> bool {
        let Some(me) = self.my_member() else {
            return false;
        };
        matches!(self.state, PRIMARY | SECONDARY)
            && member_priority(&me) > 0.0
            && !member_arbiter(&me)
            && member_delay(&me) == 0
            && self.step_down_until.is_none_or(|t| Instant::now() >= t)
    }

    fn index_of(&self, host: &str) -> i64 {
        self.members()
            .iter()
            .position(|m| same_host(m.get_str("host").unwrap_or_default(), host))
            .map_or(i64::MAX, |i| i as i64)
    }

    /// The term a self-election takes: above every term seen, and congruent to this
    /// member's index + 1 modulo the member count, so two members that each elect
    /// themselves on stale views never share a term. mongod prevents a shared term with
    /// one vote per term; the sim has no vote round, and this keeps its one guarantee
    /// (at most one primary per term), the lower term stepping down on the next beat.
    pub fn next_term(&self) -> i64 {
        let n = self.members().len().max(1) as i64;
        let idx = self.index_of(&self.me).min(n - 1);
        let t = self
            .peers
            .values()
            .map(|p| p.term)
            .max()
            .unwrap_or(0)
            .max(self.term)
            + 1;
        t + (idx + 1 - t).rem_euclid(n)
    }

    /// Another healthy primary outranks this one: a higher term, or (not reachable with
    /// `next_term`, kept as a safety net) the same term and a lower member index.
    pub fn other_primary_wins(&self) -> bool {
        let me = self.index_of(&self.me);
        self.peers.iter().any(|(h, p)| {
            p.health
                && p.state == PRIMARY
                && (p.term > self.term || (p.term == self.term && self.index_of(h) < me))
        })
    }

    pub fn primary_host(&self) -> Option<String> {
        if self.state == PRIMARY {
            return Some(self.me.clone());
        }
        self.peers
            .iter()
            .filter(|(_, p)| p.health && p.state == PRIMARY)
            .max_by_key(|(_, p)| p.term)
            .map(|(h, _)| h.clone())
    }

    pub fn election_id(&self) -> ObjectId {
        let mut b = [0u8; 12];
        b[..4].copy_from_slice(&[0x7f, 0xff, 0xff, 0xff]);
        b[4..].copy_from_slice(&self.term.to_be_bytes());
        ObjectId::from_bytes(b)
    }

    /// Who should be primary, from our view, if a majority of voters is up: a healthy
    /// electable primary stays unless a caught-up member of higher priority takes over;
    /// otherwise the freshest electable member of the highest priority (ties to the first
    /// listed).
    /// Returns `None` when no majority is visible.
    pub fn choose_primary(&self, my_optime: Timestamp) -> Option<Option<String>> {
        let members = self.members();
        let voters: Vec<&Document> = members.iter().filter(|m| member_votes(m) > 0.0).collect();
        let up = voters
            .iter()
            .filter(|m| {
                let h = m.get_str("host").unwrap_or_default();
                same_host(h, &self.me) || self.peers.get(h).is_some_and(|p| p.health)
            })
            .count();
        if up * 2 <= voters.len() {
            return None;
        }
        let mut candidates: Vec<(usize, f64, Timestamp, String)> = Vec::new();
        for (i, m) in members.iter().enumerate() {
            let h = m.get_str("host").unwrap_or_default().to_string();
            if same_host(&h, &self.me) {
                if self.electable() {
                    candidates.push((i, member_priority(m), my_optime, self.me.clone()));
                }
            } else if let Some(p) = self.peers.get(&h)
                && p.health
                && p.electable
            {
                candidates.push((i, member_priority(m), p.optime, h));
            }
        }
        let freshest = candidates.iter().map(|c| c.2).max()?;
        // A healthy, electable primary stays unless a member of strictly higher priority is
        // caught up to within 2 s (mongod's priority takeover). Equal priority never takes
        // over: a member that just came back with the old primary's unreplicated writes
        // would otherwise depose the new primary and lose every write made since.
        if let Some(primary) = self.primary_host()
            && let Some(current) = candidates.iter().find(|c| same_host(&c.3, &primary))
        {
            let takeover = candidates
                .iter()
                .filter(|c| c.1 > current.1 && c.2.time + 2 >= freshest.time)
                .max_by(|a, b| {
                    a.1.partial_cmp(&b.1)
                        .unwrap_or(std::cmp::Ordering::Equal)
                        .then(b.0.cmp(&a.0))
                });
            return Some(Some(takeover.map_or(primary, |c| c.3.clone())));
        }
        // Without one, only the freshest may win (no lost writes).
        let best = candidates
            .into_iter()
            .filter(|c| c.2 >= freshest)
            .max_by(|a, b| {
                a.1.partial_cmp(&b.1)
                    .unwrap_or(std::cmp::Ordering::Equal)
                    .then(b.0.cmp(&a.0))
            });
        Some(best.map(|c| c.3))
    }

    /// The replica-set fields of a `hello` reply.
    pub fn hello_fields(&self, out: &mut Document, last_write: Document) {
        let Some(set) = &self.set_name else { return };
        let Some(cfg) = &self.config else {
            out.insert("isreplicaset", true);
            out.insert("info", "Does not have a valid replica set config");
            return;
        };
        let (mut hosts, mut passives, mut arbiters) = (Vec::new(), Vec::new(), Vec::new());
        for m in self.members() {
            let h = Bson::String(m.get_str("host").unwrap_or_default().to_string());
            if member_arbiter(&m) {
                arbiters.push(h);
            } else if member_hidden(&m) {
                continue;
            } else if member_priority(&m) == 0.0 {
                passives.push(h);
            } else {
                hosts.push(h);
            }
        }
        out.insert("hosts", hosts);
        if !passives.is_empty() {
            out.insert("passives", passives);
        }
        if !arbiters.is_empty() {
            out.insert("arbiters", arbiters);
        }
        out.insert("setName", set.clone());
        out.insert("setVersion", num(cfg.get("version")) as i32);
        out.insert("isWritablePrimary", self.state == PRIMARY);
        out.insert("ismaster", self.state == PRIMARY);
        out.insert("secondary", self.state == SECONDARY);
        if let Some(p) = self.primary_host() {
            out.insert("primary", p);
        }
        if let Some(me) = self.my_member() {
            if member_arbiter(&me) {
                out.insert("arbiterOnly", true);
            }
            if member_priority(&me) == 0.0 && !member_arbiter(&me) {
                out.insert("passive", true);
            }
            if member_hidden(&me) {
                out.insert("hidden", true);
            }
            if member_delay(&me) > 0 {
                out.insert("secondaryDelaySecs", member_delay(&me));
            }
            if let Ok(tags) = me.get_document("tags") {
                out.insert("tags", tags.clone());
            }
        }
        out.insert("me", self.me.clone());
        if self.state == PRIMARY {
            out.insert("electionId", self.election_id());
        }
        out.insert("lastWrite", last_write);
    }

    /// `replSetGetStatus` for an initiated member whose last applied entry is `applied`
    /// (`{ts, t}`); the `optimes` and vote counts are added by `Inner::status_optimes`.
    pub fn status(&self, applied: Document, uptime_secs: i64, hb_ms: u64) -> Document {
        let optime_date = |t: Timestamp| DateTime::from_millis(t.time as i64 * 1000);
        let mut members = Vec::new();
        let last_ts = applied.get_timestamp("ts").unwrap_or(Timestamp {
            time: 0,
            increment: 0,
        });
        for m in self.members() {
            let host = m.get_str("host").unwrap_or_default().to_string();
            let mut d =
                doc! {"_id": m.get("_id").cloned().unwrap_or(Bson::Int32(0)), "name": &host};
            if same_host(&host, &self.me) {
                d.insert("health", 1.0);
                d.insert("state", self.state);
                d.insert("stateStr", state_str(self.state));
                d.insert("uptime", uptime_secs);
                d.insert("optime", applied.clone());
                d.insert("optimeDate", optime_date(last_ts));
                d.insert(
                    "syncSourceHost",
                    self.sync_source.clone().unwrap_or_default(),
                );
                d.insert("configVersion", self.config_version() as i32);
                d.insert("self", true);
                if self.state == PRIMARY {
                    d.insert("electionTime", self.election_ts.unwrap_or(last_ts));
                    d.insert(
                        "electionDate",
                        self.election_date.unwrap_or_else(DateTime::now),
                    );
                }
            } else {
                let p = self.peers.get(&host).cloned().unwrap_or_default();
                let state = if p.health { p.state } else { DOWN };
                d.insert("health", if p.health { 1.0 } else { 0.0 });
                d.insert("state", state);
                d.insert("stateStr", state_str(state));
                d.insert(
                    "uptime",
                    p.up_since
                        .map(|t| t.elapsed().as_secs() as i64)
                        .unwrap_or(0),
                );
                d.insert("optime", doc! {"ts": p.optime, "t": p.optime_term});
                d.insert("optimeDurable", doc! {"ts": p.optime, "t": p.optime_term});
                d.insert("optimeDate", optime_date(p.optime));
                d.insert(
                    "lastHeartbeat",
                    p.last_heartbeat.unwrap_or(DateTime::from_millis(0)),
                );
                d.insert(
                    "lastHeartbeatRecv",
                    p.last_heartbeat.unwrap_or(DateTime::from_millis(0)),
                );
                d.insert("pingMs", p.ping_ms);
                d.insert("configVersion", self.config_version() as i32);
                if !p.health {
                    d.insert("lastHeartbeatMessage", "Error connecting to member");
                }
            }
            members.push(Bson::Document(d));
        }
        doc! {
            "set": self.set_name.clone().unwrap_or_default(),
            "date": DateTime::now(),
            "myState": self.state,
            "term": self.term,
            "heartbeatIntervalMillis": hb_ms as i64,
            "members": members,
            "ok": 1.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn ts(time: u32) -> Timestamp {
        Timestamp { time, increment: 1 }
    }

    /// Member `me` of a three-member set with the given priorities; `peers` are the other
    /// two as (index, state, optime seconds).
    fn view(me: usize, priorities: [f64; 3], peers: &[(usize, i32, u32)]) -> ReplState {
        let host = |i: usize| format!("127.0.0.1:{}", 27017 + i);
        let members: Vec<Document> = (0..3)
            .map(|i| doc! {"_id": i as i32, "host": host(i), "priority": priorities[i]})
            .collect();
        ReplState {
            config: Some(doc! {"_id": "rs", "version": 1, "members": members}),
            state: SECONDARY,
            term: 1,
            peers: peers
                .iter()
                .map(|&(i, state, t)| {
                    let peer = Peer {
                        health: true,
                        state,
                        optime: ts(t),
                        term: 2,
                        electable: true,
                        ..Peer::default()
                    };
                    (host(i), peer)
                })
                .collect(),
            ..ReplState::starting(Some("rs".into()), host(me))
        }
    }

    /// The same view, from a member that is primary itself.
    fn primary_view(me: usize, priorities: [f64; 3], peers: &[(usize, i32, u32)]) -> ReplState {
        let mut v = view(me, priorities, peers);
        v.state = PRIMARY;
        v
    }

    #[test]
    fn an_equal_priority_member_never_deposes_a_healthy_primary() {
        // Member 0 came back holding the old primary's unreplicated writes (a newer
        // optime), listed first; member 1 is primary. Under mongod's rules member 1 stays.
        let v = view(0, [1.0; 3], &[(1, PRIMARY, 100), (2, SECONDARY, 100)]);
        assert_eq!(v.choose_primary(ts(101)), Some(Some(v.peer_host(1))));
        // Member 1's own view agrees: it keeps its place.
        let p = primary_view(1, [1.0; 3], &[(0, SECONDARY, 101), (2, SECONDARY, 100)]);
        assert_eq!(p.choose_primary(ts(100)), Some(Some(p.me.clone())));
    }

    #[test]
    fn a_caught_up_member_of_higher_priority_takes_over() {
        let prios = [5.0, 1.0, 1.0];
        let p = primary_view(1, prios, &[(0, SECONDARY, 99), (2, SECONDARY, 100)]);
        assert_eq!(p.choose_primary(ts(100)), Some(Some(p.peer_host(0))));
        // Not while it lags by more than 2 s.
        let p = primary_view(1, prios, &[(0, SECONDARY, 90), (2, SECONDARY, 100)]);
        assert_eq!(p.choose_primary(ts(100)), Some(Some(p.me.clone())));
    }

    #[test]
    fn without_a_primary_only_the_freshest_wins() {
        let v = view(0, [1.0; 3], &[(1, SECONDARY, 101), (2, SECONDARY, 100)]);
        assert_eq!(v.choose_primary(ts(100)), Some(Some(v.peer_host(1))));
    }

    /// Members 1 and 2 both lost member 0 and each chose itself on a stale view of the
    /// other: their terms differ, so at most one primary per term, as with mongod's votes.
    #[test]
    fn self_elected_members_never_share_a_term() {
        let mut a = view(1, [1.0; 3], &[(2, SECONDARY, 100)]);
        let mut b = view(2, [1.0; 3], &[(1, SECONDARY, 99)]);
        for v in [&mut a, &mut b] {
            v.peers.values_mut().for_each(|p| p.term = 1);
        }
        assert_eq!(a.choose_primary(ts(100)), Some(Some(a.me.clone())));
        assert_eq!(b.choose_primary(ts(101)), Some(Some(b.me.clone())));
        assert_ne!(a.next_term(), b.next_term());
        assert!(a.next_term() > 1 && b.next_term() > 1);
    }

    /// Two primaries in one term (never with `next_term`): exactly one yields.
    #[test]
    fn of_two_primaries_in_one_term_exactly_one_steps_down() {
        let mut a = primary_view(1, [1.0; 3], &[(2, PRIMARY, 100)]);
        let mut b = primary_view(2, [1.0; 3], &[(1, PRIMARY, 100)]);
        for v in [&mut a, &mut b] {
            v.term = 2;
            v.peers.values_mut().for_each(|p| p.term = 2);
        }
        assert!(!a.other_primary_wins());
        assert!(b.other_primary_wins());
    }

    impl ReplState {
        fn peer_host(&self, i: usize) -> String {
            format!("127.0.0.1:{}", 27017 + i)
        }
    }
}
