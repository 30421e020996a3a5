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
        // No record, and `lease/` held with another count (a version without partitions
        // counts as one): its holder leads clusters this count would put elsewhere. While
        // it still renews, nothing starts.
        if !control.exists(PARTITIONS_KEY).await?
            && let Some((lease, renewal)) = super::lease::describe(control).await?
            && lease.partitions.unwrap_or(1) != partitions
            && !renewal.as_ref().is_some_and(|r| r.released)
            && still_renewed(control, &lease, renewal.map(|r| r.seq)).await?
        {
            return Err(ControlError::LeaderOfOtherCount {
                url: control.url().to_string(),
                holder: lease.holder,
                count: lease.partitions.unwrap_or(1),
                wanted: partitions,
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
        let look = self.members.is_some() && n.is_multiple_of(MEMBER_EVERY);
        // The first look comes before any lease is taken (a new member must know the
        // others, or it takes every vacant partition); later ones run beside the
        // renewals, never before them, so that a slow look cannot delay a renewal.
        if look && n == 0 {
            self.membership(every).await;
        }
        let live = self.live();
        let rounds = (0..self.partitions()).map(|p| self.tick_partition(p, &live, every));
        match look && n != 0 {
            true => drop(tokio::join!(
                self.membership(every),
                futures::future::join_all(rounds)
            )),
            false => drop(futures::future::join_all(rounds).await),
        }
    }

    /// Rewrites this member's record and lists the others, and reads the partition count
    /// again; all within one renewal interval. A member whose count disagrees leaves the
    /// membership, so that nobody hands it partitions it would not take.
    async fn membership(&self, every: Duration) {
        let Some(members) = &self.members else {
            return;
        };
        let look = async {
            if !self.mismatch.load(Ordering::SeqCst)
                && let Err(e) = members.tick().await
            {
                tracing::warn!(error = %e, "cannot write or list the reconcilers' membership");
            }
            if self.check_count().await
                && let Err(e) = members.leave().await
            {
                tracing::warn!(error = %e, "cannot remove this reconciler's membership record");
            }
        };
        if tokio::time::timeout(every, look).await.is_err() {
            tracing::warn!("the membership look is slow");
        }
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
    /// Returns whether the counts just came to disagree.
    async fn check_count(&self) -> bool {
        let stored = match self.control.get::<PartitionsRecord>(PARTITIONS_KEY).await {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the partition count");
                return false;
            }
        };
        let wrong = stored.filter(|r| r.partitions != self.partitions());
        if let Some(r) = &wrong {
            tracing::error!(stored = r.partitions, ours = self.partitions(), by = %r.by, "the control plane now records another partition count; leading nothing until it is this one again");
        }
        let was = self.mismatch.swap(wrong.is_some(), Ordering::SeqCst);
        wrong.is_some() && !was
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
        // While the counts disagree nothing is held: every lease is handed over.
        if self.mismatch.load(Ordering::SeqCst) {
            if leading {
                self.hand_over(p, "nobody (the partition counts disagree)");
            }
            return;
        }
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
            self.hand_over(p, owner);
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
                self.errors
                    .lock()
                    .expect("not poisoned")
                    .insert(p, format!("no answer within {every:?}"));
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

    /// Stops writing for partition `p` at once (the fence sees no validity) and releases
    /// its lease a third of a TTL after the last renewal's validity, the margin a takeover
    /// after expiry keeps: a request already sent when the validity ran out may still
    /// land until then.
    fn hand_over(&self, p: u32, to: &str) {
        let until = self.leases[p as usize]
            .valid_until()
            .lock()
            .expect("not poisoned")
            .take();
        self.set(
            p,
            Standing::Follower {
                epoch: 0,
                holder: to.to_string(),
            },
        );
        let release_at = until.unwrap_or_else(Instant::now) + self.ttl / 3;
        self.handovers
            .lock()
            .expect("not poisoned")
            .insert(p, release_at);
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

    /// `control` writing as the leader of partition `p` in `epoch`, if this process still
    /// leads it in that epoch: a pass acts only for what it led when it read the state.
    pub fn fenced_in_epoch(
        &self,
        control: &ControlPlane,
        p: u32,
        epoch: u64,
    ) -> Option<ControlPlane> {
        let lease = &self.leases[p as usize];
        (self.leading(p) == Some(epoch))
            .then(|| control.fenced_in(lease.prefix(), epoch, lease.valid_until()))
    }

    /// The partitions this process leads now, with their epochs.
    pub fn led_epochs(&self) -> BTreeMap<u32, u64> {
        (0..self.partitions())
            .filter_map(|p| Some((p, self.leading(p)?)))
            .collect()
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

/// Whether `lease`'s holder still renews it: its renewal number changes within one of its
/// TTLs (a holder killed without releasing never does).
async fn still_renewed(
    control: &ControlPlane,
    lease: &tidemark_schema::control::LeaseRecord,
    seq: Option<u64>,
) -> Result<bool, ControlError> {
    let ttl = Duration::from_millis(lease.ttl_ms);
    tracing::info!(holder = %lease.holder, ?ttl, "the lease is held with another partition count; watching up to its TTL whether it is still renewed");
    let started = Instant::now();
    while started.elapsed() < ttl {
        tokio::time::sleep((ttl / 6).max(Duration::from_millis(50))).await;
        let key = tidemark_schema::control::lease_renewal_key(lease.epoch);
        let now: Option<tidemark_schema::control::LeaseRenewal> = control.get(&key).await?;
        match now {
            Some(r) if r.released => return Ok(false),
            Some(r) if Some(r.seq) != seq => return Ok(true),
            _ => {}
        }
    }
    Ok(false)
}
