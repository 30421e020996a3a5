//! Who reconciles a partitioned control plane: each running reconciler rewrites its own
//! `reconcilers/<holder>.json`, and judges the others by whether their record's version
//! changes, on its own monotonic clock, as leases are judged. Membership only decides who
//! *should* lead a partition (see `owner_of`); the leases alone decide who *does*, so a
//! wrong view of the members costs balance or a delay, never two leaders.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use tidemark_schema::control::{MEMBERS_PREFIX, MemberRecord, member_key};

use super::client::ControlPlane;
use super::error::ControlError;

#[derive(Debug)]
pub struct Members {
    control: ControlPlane,
    holder: String,
    /// A member whose record did not change for this long is gone.
    dead_after: Duration,
    seq: AtomicU64,
    seen: Mutex<BTreeMap<String, Seen>>,
}

#[derive(Debug)]
struct Seen {
    version: String,
    /// When this process first saw `version`.
    since: Instant,
    /// Whether the version changed while this process watched: a record left behind by a
    /// process killed before this one started never does.
    proven: bool,
    /// The version this member had when one of its leases ran out: it counts as gone
    /// until its record changes again.
    suspect: Option<String>,
}

/// What this process knows of one member, for the decisions of `Leadership`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberState {
    /// Renewing, seen to change at least once (or this process itself).
    Proven,
    /// Present and recent, not yet seen to change.
    New,
}

impl Members {
    pub fn new(control: ControlPlane, holder: String, dead_after: Duration) -> Members {
        Members {
            control,
            holder,
            dead_after,
            seq: AtomicU64::new(0),
            seen: Mutex::new(BTreeMap::new()),
        }
    }

    /// Rewrites this member's record, then lists every member's.
    pub async fn tick(&self) -> Result<(), ControlError> {
        let record = MemberRecord {
            holder: self.holder.clone(),
            seq: self.seq.fetch_add(1, Ordering::SeqCst),
            at: Utc::now(),
        };
        self.control.put(&member_key(&self.holder), &record).await?;
        let listed = self.control.versions(MEMBERS_PREFIX).await?;
        for holder in self.note(listed) {
            match self.control.delete(&member_key(&holder)).await {
                Ok(()) => {
                    tracing::info!(%holder, "removed the membership record of a reconciler gone for long")
                }
                Err(e) => {
                    tracing::warn!(%holder, error = %e, "cannot remove a stale membership record")
                }
            }
        }
        Ok(())
    }

    /// Takes a listing of the members' records in; returns those gone for long.
    fn note(&self, listed: Vec<(String, String)>) -> Vec<String> {
        let mut seen = self.seen.lock().expect("not poisoned");
        let mut now_listed = BTreeMap::new();
        for (key, version) in listed {
            let Some(holder) = key
                .strip_prefix(MEMBERS_PREFIX)
                .and_then(|k| k.strip_prefix('/'))
                .and_then(|k| k.strip_suffix(".json"))
            else {
                continue;
            };
            let entry = match seen.remove(holder) {
                Some(s) if s.version == version => s,
                Some(s) => Seen {
                    version,
                    since: Instant::now(),
                    proven: true,
                    suspect: s.suspect,
                },
                None => Seen {
                    version,
                    since: Instant::now(),
                    proven: false,
                    suspect: None,
                },
            };
            now_listed.insert(holder.to_string(), entry);
        }
        // Records left by processes killed long ago: gone for four times the dead-after,
        // removed (best effort), so `reconcilers/` does not grow with every crash.
        let stale: Vec<String> = now_listed
            .iter()
            .filter(|(h, s)| *h != &self.holder && s.since.elapsed() >= self.dead_after * 4)
            .map(|(h, _)| h.clone())
            .collect();
        *seen = now_listed;
        stale
    }

    /// The members that count now, this process always among them.
    pub fn live(&self) -> BTreeMap<String, MemberState> {
        let seen = self.seen.lock().expect("not poisoned");
        let mut live: BTreeMap<String, MemberState> = seen
            .iter()
            .filter(|(_, s)| s.since.elapsed() < self.dead_after)
            .filter(|(_, s)| s.suspect.as_ref() != Some(&s.version))
            .map(|(h, s)| {
                let state = match s.proven {
                    true => MemberState::Proven,
                    false => MemberState::New,
                };
                (h.clone(), state)
            })
            .collect();
        live.insert(self.holder.clone(), MemberState::Proven);
        live
    }

    /// One of `holder`'s leases ran out: it is gone until its record changes again.
    pub fn suspect(&self, holder: &str) {
        if holder == self.holder {
            return;
        }
        if let Some(s) = self.seen.lock().expect("not poisoned").get_mut(holder) {
            s.suspect = Some(s.version.clone());
        }
    }

    /// Removes this member's record (a clean stop): the others stop counting on it at once.
    pub async fn leave(&self) -> Result<(), ControlError> {
        self.control.delete(&member_key(&self.holder)).await
    }
}
