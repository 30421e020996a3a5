//! Which partitions of the fleet this process leads. One lease per partition (see
//! `partition_of`); every third of the TTL each is renewed, or contended for when vacant
//! by the member rendezvous hashing names among the live members, or handed over when
//! another live member should lead it. With one partition (the default) there is no
//! membership and this is today's single lease: the first reconciler leads everything.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use tidemark_schema::control::{PARTITIONS_KEY, PartitionsRecord, owner_of, partition_of};

use super::client::{ControlPlane, Created};
use super::error::ControlError;
use super::lease::{Lease, Standing, Vacated};
use super::members::{MemberState, Members};

#[derive(Debug)]
pub struct Leadership {
    holder: String,
    ttl: Duration,
    /// One per partition, by index.
    leases: Vec<Lease>,
    /// `None` with one partition, and for a single pass (`--once`): then every vacant
    /// lease is this process's to take.
    members: Option<Members>,
    standing: Mutex<Vec<Option<Standing>>>,
    /// Partitions being handed over, and when their lease is released: once the last
    /// renewal's validity has run out, so that no write of this process still in flight
    /// can land after the next leader's.
    handovers: Mutex<BTreeMap<u32, Instant>>,
    /// Set while the control plane records another partition count (see `check_count`).
    mismatch: std::sync::atomic::AtomicBool,
    /// The last tick's error per partition whose lease could not be read or renewed.
    errors: Mutex<BTreeMap<u32, String>>,
    control: ControlPlane,
    ticks: AtomicU64,
}

/// Membership is written every this many lease ticks (one TTL).
const MEMBER_EVERY: u64 = 3;

impl Leadership {
    /// `partitions` leases of `ttl` for `holder`; `share` keeps a membership record so
    /// that other reconcilers get their part of the partitions.
    pub fn new(
        control: &ControlPlane,
        holder: &str,
        ttl: Duration,
        partitions: u32,
        doorbell: Option<String>,
        share: bool,
    ) -> Leadership {
        let leases = (0..partitions.max(1))
            .map(|p| {
                Lease::new(control.clone(), holder.to_string(), ttl)
                    .with_doorbell(doorbell.clone())
                    .in_partition(p, partitions.max(1))
            })
            .collect::<Vec<_>>();
        // Two and a half membership periods: one late write is not a departure.
        let members = (share && leases.len() > 1)
            .then(|| Members::new(control.clone(), holder.to_string(), ttl * 5 / 2));
        Leadership {
            holder: holder.to_string(),
            ttl,
            standing: Mutex::new(vec![None; leases.len()]),
            leases,
            members,
            handovers: Mutex::new(BTreeMap::new()),
            mismatch: Default::default(),
            errors: Mutex::new(BTreeMap::new()),
            control: control.clone(),
            ticks: AtomicU64::new(0),
        }
    }

    /// Records the partition count in the control plane, or checks this process agrees
    /// with the one recorded: two counts would put one cluster in two partitions.
    pub async fn agree(
        control: &ControlPlane,
        holder: &str,
        partitions: u32,
    ) -> Result<(), ControlError> {
        let record = PartitionsRecord {
            partitions,
            created_at: Utc::now(),
            by: holder.to_string(),
        };
        // A reconciler of a version without partitions holds the single lease (no record,
        // a live epoch): it leads every cluster, so none may be led from another lease.
        if partitions > 1
            && !control.exists(PARTITIONS_KEY).await?
            && let Some((lease, renewal)) = super::lease::describe(control).await?
            && lease.partitions.is_none()
            && !renewal.is_some_and(|r| r.released)
        {
            return Err(ControlError::UnpartitionedLeader {
                url: control.url().to_string(),
                holder: lease.holder,
                key: PARTITIONS_KEY.to_string(),
            });
        }
        if control.create(PARTITIONS_KEY, &record).await? == Created::New {
            return Ok(());
        }
        let stored: PartitionsRecord =
            control
                .get(PARTITIONS_KEY)
                .await?
                .ok_or_else(|| ControlError::Corrupt {
                    url: control.url().to_string(),
                    key: PARTITIONS_KEY.to_string(),
                    message: "created, then gone".into(),
                })?;
        match stored.partitions == partitions {
            true => Ok(()),
            false => Err(ControlError::Partitions {
                url: control.url().to_string(),
                key: PARTITIONS_KEY.to_string(),
                by: stored.by,
                stored: stored.partitions,
                wanted: partitions,
            }),
        }
    }

    pub fn partitions(&self) -> u32 {
        self.leases.len() as u32
    }

    pub fn partition_of(&self, cluster: &str) -> u32 {
        partition_of(cluster, self.partitions())
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// One round: the membership record every TTL, then every partition's lease at once,
    /// each given a third of the TTL (a slow one keeps its standing: its writes are gated
    /// by the lease's own validity).
    pub async fn tick(&self) {
        let every = (self.ttl / 3).max(Duration::from_millis(50));
        let n = self.ticks.fetch_add(1, Ordering::SeqCst);
        // Beside the renewals, never before them: a slow membership look must not push a
        // renewal past its lease's validity.
        let membership = async {
            let Some(members) = self
                .members
                .as_ref()
                .filter(|_| n.is_multiple_of(MEMBER_EVERY))
            else {
                return;
            };
            match tokio::time::timeout(every, members.tick()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot write or list the reconcilers' membership")
                }
                Err(_) => tracing::warn!("the membership look is slow"),
            }
            if tokio::time::timeout(every, self.check_count())
                .await
                .is_err()
            {
                tracing::warn!("reading the partition count is slow");
            }
        };
        if self.mismatch.load(Ordering::SeqCst) {
            // Nothing held while the counts disagree: the others lead without waiting.
            for lease in &self.leases {
                if let Err(e) = lease.release().await {
                    tracing::warn!(error = %e, "cannot release a lease");
                }
            }
            membership.await;
            return;
        }
        let live = self.live();
        let rounds = (0..self.partitions()).map(|p| self.tick_partition(p, &live, every));
        tokio::join!(membership, futures::future::join_all(rounds));
    }

    /// Why the last tick could not read or renew a partition's lease, for each such one.
    pub fn lease_errors(&self) -> Vec<String> {
        self.errors
            .lock()
            .expect("not poisoned")
            .iter()
            .map(|(p, e)| match self.partitions() {
                1 => e.clone(),
                _ => format!("partition {p}: {e}"),
            })
            .collect()
    }

    /// Stops leading anything while the control plane records another partition count
    /// than this process's (the record deleted and made again by a reconciler started
    /// with another count): two counts would put one cluster in two partitions.
    async fn check_count(&self) {
        let stored = match self.control.get::<PartitionsRecord>(PARTITIONS_KEY).await {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the partition count");
                return;
            }
        };
        let wrong = stored.filter(|r| r.partitions != self.partitions());
        if let Some(r) = &wrong {
            tracing::error!(stored = r.partitions, ours = self.partitions(), by = %r.by, "the control plane now records another partition count; leading nothing until it is this one again");
        }
        self.mismatch.store(wrong.is_some(), Ordering::SeqCst);
    }

    fn live(&self) -> BTreeMap<String, MemberState> {
        match &self.members {
            Some(m) => m.live(),
            None => [(self.holder.clone(), MemberState::Proven)].into(),
        }
    }

    async fn tick_partition(&self, p: u32, live: &BTreeMap<String, MemberState>, every: Duration) {
        let lease = &self.leases[p as usize];
        let handing = self
            .handovers
            .lock()
            .expect("not poisoned")
            .get(&p)
            .copied();
        if let Some(at) = handing {
            if Instant::now() < at {
                return; // still letting this process's last writes end
            }
            match lease.release().await {
                Ok(()) => drop(self.handovers.lock().expect("not poisoned").remove(&p)),
                // Tried again next tick; meanwhile nothing is written for the partition.
                Err(e) => {
                    tracing::warn!(partition = p, error = %e, "cannot release the partition's lease; trying again")
                }
            }
            return;
        }
        let owner = owner_of(p, live.keys().map(String::as_str));
        let leading = matches!(self.standing(p), Some(Standing::Leader { .. }));
        // Hand a partition over only to a member seen renewing: a record left behind by
        // a killed process must not draw partitions away from the living.
        if leading
            && let Some(owner) = owner.filter(|o| *o != self.holder)
            && live.get(owner) == Some(&MemberState::Proven)
        {
            tracing::info!(
                partition = p,
                to = owner,
                "handing the partition over to the member that should lead it"
            );
            // No new write from now (the fence sees no validity), and the lease is released
            // only once the writes already under way have run out of it.
            let until = lease.valid_until().lock().expect("not poisoned").take();
            self.set(
                p,
                Standing::Follower {
                    epoch: 0,
                    holder: owner.to_string(),
                },
            );
            // A third of a TTL more, as a takeover after expiry keeps: a request already
            // sent when the validity ran out may still land until then.
            let release_at = until.unwrap_or_else(Instant::now) + self.ttl / 3;
            self.handovers
                .lock()
                .expect("not poisoned")
                .insert(p, release_at);
            return;
        }
        let may_take = |vacated: Vacated<'_>| {
            let gone = match vacated {
                Vacated::Never => None,
                Vacated::Released(h) => Some(h),
                Vacated::Expired(h) => {
                    if let Some(m) = &self.members {
                        m.suspect(h);
                    }
                    Some(h)
                }
            };
            let rest = live.keys().map(String::as_str).filter(|m| Some(*m) != gone);
            owner_of(p, rest).is_none_or(|o| o == self.holder)
        };
        let now = match tokio::time::timeout(every, lease.tick_with(&may_take)).await {
            Err(_) => {
                tracing::warn!(partition = p, after = ?every, "a lease renewal is slow; acting only while the last one is valid");
                return;
            }
            Ok(Ok(s)) => {
                self.errors.lock().expect("not poisoned").remove(&p);
                s
            }
            Ok(Err(e)) => {
                self.errors
                    .lock()
                    .expect("not poisoned")
                    .insert(p, e.to_string());
                tracing::error!(partition = p, error = %e, "cannot renew or read the lease; not acting for its clusters until it can");
                Standing::Follower {
                    epoch: 0,
                    holder: format!("unknown (the lease cannot be read: {e})"),
                }
            }
        };
        self.set(p, now);
    }

    fn set(&self, p: u32, now: Standing) {
        let mut all = self.standing.lock().expect("not poisoned");
        let current = &mut all[p as usize];
        if current.as_ref() != Some(&now) {
            match &now {
                Standing::Leader { epoch } => {
                    tracing::info!(partition = p, epoch, "this reconciler leads the partition")
                }
                Standing::Follower { epoch, holder } if !holder.is_empty() => {
                    tracing::info!(partition = p, epoch, %holder, "another reconciler leads the partition; following")
                }
                Standing::Follower { .. } => {}
            }
        }
        *current = Some(now);
    }

    /// Where this process stands on partition `p` after the last tick.
    pub fn standing(&self, p: u32) -> Option<Standing> {
        self.standing
            .lock()
            .expect("not poisoned")
            .get(p as usize)
            .cloned()
            .flatten()
    }

    /// The epoch this process leads partition `p` in, while its lease lets it write.
    pub fn leading(&self, p: u32) -> Option<u64> {
        if self.mismatch.load(Ordering::SeqCst) {
            return None;
        }
        let Some(Standing::Leader { epoch }) = self.standing(p) else {
            return None;
        };
        let valid = self.leases[p as usize]
            .valid_until()
            .lock()
            .expect("not poisoned")
            .is_some_and(|t| Instant::now() < t);
        valid.then_some(epoch)
    }

    /// `control` writing as the leader of partition `p`, if this process leads it now.
    pub fn fenced(&self, control: &ControlPlane, p: u32) -> Option<ControlPlane> {
        let lease = &self.leases[p as usize];
        self.leading(p)
            .map(|epoch| control.fenced_in(lease.prefix(), epoch, lease.valid_until()))
    }

    /// The partitions this process may write for now.
    pub fn led(&self) -> Vec<u32> {
        (0..self.partitions())
            .filter(|p| self.leading(*p).is_some())
            .collect()
    }

    /// Who leads, as this process last saw it: for a pass that leads nothing.
    pub fn followed(&self) -> String {
        let all = self.standing.lock().expect("not poisoned").clone();
        if let [Some(Standing::Follower { epoch, holder })] = all.as_slice()
            && !holder.is_empty()
        {
            return format!("another reconciler leads ({holder}, epoch {epoch})");
        }
        let mut holders: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for (p, s) in all.iter().enumerate() {
            let who = match s {
                Some(Standing::Follower { holder, .. }) if !holder.is_empty() => holder.clone(),
                Some(Standing::Leader { .. }) if self.leading(p as u32).is_some() => {
                    "this reconciler".into()
                }
                Some(Standing::Leader { .. }) => {
                    "this reconciler (its lease not renewed in time)".into()
                }
                _ => "nobody yet".into(),
            };
            holders.entry(who).or_default().push(p as u32);
        }
        let parts: Vec<String> = holders
            .into_iter()
            .map(|(who, ps)| match self.partitions() {
                1 => format!("{who} leads"),
                _ => format!("{who} leads partition(s) {ps:?}"),
            })
            .collect();
        parts.join("; ")
    }

    /// Hands every lease over at once and leaves the membership (a clean stop).
    pub async fn release_all(&self) {
        for (p, lease) in self.leases.iter().enumerate() {
            if let Err(e) = lease.release().await {
                tracing::warn!(partition = p, error = %e, "cannot release the lease; the next reconciler waits one TTL");
            }
        }
        if let Some(m) = &self.members
            && let Err(e) = m.leave().await
        {
            tracing::warn!(error = %e, "cannot remove this reconciler's membership record");
        }
    }
}
