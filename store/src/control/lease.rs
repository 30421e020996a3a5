//! One leader among reconcilers sharing a control plane, built from create-if-absent
//! records only: a local directory has no compare-and-swap, and S3 has conditional create
//! (`If-None-Match`) everywhere, so this works the same on both.
//!
//! Leadership is a sequence of epochs. `lease/<epoch>.json` is created once by the
//! reconciler that won the epoch; its holder rewrites `lease/<epoch>/renewed.json` every
//! third of the TTL. A candidate that sees the highest epoch's renewal stop changing for a
//! whole TTL, measured on its own monotonic clock (so clock skew between hosts does not
//! matter), tries to create the next epoch; of several candidates exactly one succeeds.
//! The epoch is the fencing number: a leader's writes go through
//! [`ControlPlane::fenced`], which refuses them once a later epoch exists.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::Utc;
use tidemark_schema::control::{
    LEASE_PREFIX, LeaseRecord, LeaseRenewal, lease_key_in, lease_renewal_key_in,
};

use super::client::{ControlPlane, Created, LeaseClock};
use super::error::ControlError;

/// Where this process stands after a [`Lease::tick`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Standing {
    /// This process leads; act with this fencing number.
    Leader { epoch: u64 },
    /// Another process leads (or did, and its TTL has not run out yet).
    Follower { epoch: u64, holder: String },
}

/// The last renewal of the highest epoch this process saw, and since when (its clock).
#[derive(Debug)]
struct Seen {
    epoch: u64,
    seq: Option<u64>,
    since: Instant,
}

#[derive(Debug)]
pub struct Lease {
    control: ControlPlane,
    holder: String,
    ttl: Duration,
    /// Where this lease's records live (`lease` for partition 0, see `lease_prefix`).
    prefix: String,
    /// How many partitions the fleet has, written into the epochs this process creates.
    partitions: u32,
    seen: Mutex<Option<Seen>>,
    /// A vacant lease this process declined to take (see [`Lease::tick_with`]), and since
    /// when.
    vacant: Mutex<Option<Seen>>,
    /// The epoch this process holds and its next renewal number.
    mine: Mutex<Option<(u64, u64)>>,
    /// Until when this process may act as leader: set by every tick that leaves it
    /// leading, cleared by every other outcome.
    until: LeaseClock,
    /// The long-poll address this process serves, written into the epochs it creates.
    doorbell: Option<String>,
    /// When the last tick began (this process's monotonic clock).
    last_tick: Mutex<Option<Instant>>,
}

/// How often the holder's renewal also lists the epochs.
const FULL_LOOK_EVERY: u64 = 8;

impl Lease {
    pub fn new(control: ControlPlane, holder: String, ttl: Duration) -> Lease {
        Lease {
            control,
            holder,
            ttl,
            prefix: LEASE_PREFIX.to_string(),
            partitions: 1,
            seen: Mutex::new(None),
            vacant: Mutex::new(None),
            mine: Mutex::new(None),
            until: LeaseClock::default(),
            doorbell: None,
            last_tick: Mutex::new(None),
        }
    }

    /// The same, announcing `url` as this process's doorbell in the epochs it creates.
    pub fn with_doorbell(self, url: Option<String>) -> Lease {
        Lease {
            doorbell: url,
            ..self
        }
    }

    /// The same lease for one partition of `partitions` (`lease_prefix(partition)`).
    pub fn in_partition(self, partition: u32, partitions: u32) -> Lease {
        Lease {
            prefix: tidemark_schema::control::lease_prefix(partition),
            partitions,
            ..self
        }
    }

    /// Where this lease's records live, for [`ControlPlane::fenced_in`].
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Until when this process may act as leader, for [`ControlPlane::fenced_until`]: two
    /// thirds of a TTL after the start of its last successful renewal. A candidate that
    /// saw an older renewal may take over up to one renewal interval earlier than a TTL
    /// after this one; the third of a TTL kept back covers that, and every write must
    /// also end by this instant (it is abandoned otherwise). What this cannot see (a
    /// suspended VM, whose monotonic clock stops) the per-write epoch check still
    /// catches, after the fact of a takeover.
    pub fn valid_until(&self) -> LeaseClock {
        self.until.clone()
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Renews the lease if this process holds it, or takes it over if its holder stopped
    /// renewing for a TTL. Call it every third of the TTL.
    pub async fn tick(&self) -> Result<Standing, ControlError> {
        self.tick_with(&|_| true).await
    }

    /// [`Lease::tick`], taking a vacant lease (none yet, released, or its holder silent
    /// for a TTL) only if `may_take` agrees: partitions of a shared fleet go
    /// to the member that rendezvous hashing names, not to whoever looks first. A holder
    /// keeps renewing what it holds whatever `may_take` says (see [`Lease::release`]).
    pub async fn tick_with(&self, may_take: &MayTake<'_>) -> Result<Standing, ControlError> {
        let began = Instant::now();
        // Whatever happens below, this process may not act past what it had, and if the
        // tick fails or leaves it a follower, not at all.
        let outcome = self.tick_inner(may_take).await;
        let mut until = self.until.lock().expect("not poisoned");
        match &outcome {
            Ok(Standing::Leader { .. }) => *until = Some(began + self.ttl * 2 / 3),
            _ => *until = None,
        }
        outcome
    }

    async fn tick_inner(&self, may_take: &MayTake<'_>) -> Result<Standing, ControlError> {
        // The holder renews with one write, not a listing and two reads: at rest this is
        // most of what a reconciler asks the control plane. Every few renewals it lists
        // the epochs too: a later epoch needs this process's renewals to have stopped for
        // a whole TTL (a pause), its writes are refused by the fence meanwhile, and this
        // look makes it follow.
        // A tick that comes late (this process was paused, stopped, starved) always looks:
        // a pause is what lets another process take over.
        // So does one after a tick that failed or whose validity ran out: renewals that
        // failed for a TTL let another process take over just the same.
        // A renewal that timed out leaves `until` set but past: that counts too.
        let failed = self
            .until
            .lock()
            .expect("not poisoned")
            .is_none_or(|t| Instant::now() >= t);
        let late = {
            let mut last = self.last_tick.lock().expect("not poisoned");
            let late = last.is_none_or(|t| t.elapsed() > self.ttl / 2);
            *last = Some(Instant::now());
            late || failed
        };
        let known = *self.mine.lock().expect("not poisoned");
        if let Some((epoch, seq)) = known {
            if !late && (seq + 1) % FULL_LOOK_EVERY != 0 {
                return self.renew_known(epoch, seq + 1).await;
            }
            match highest_epoch(&self.control, &self.prefix).await? {
                Some(highest) if highest == epoch => {
                    return self.renew_known(epoch, seq + 1).await;
                }
                Some(highest) if highest > epoch => return self.tick_follower_of(highest).await,
                // Our epoch is gone: the control plane was emptied. Start over below.
                _ => *self.mine.lock().expect("not poisoned") = None,
            }
        }
        let Some(current) = current(&self.control, &self.prefix).await? else {
            return match may_take(Vacated::Never) || self.abandoned(0, None) {
                true => self.try_take(1).await,
                false => Ok(Standing::Follower {
                    epoch: 0,
                    holder: String::new(),
                }),
            };
        };
        if current.holder == self.holder {
            let known = *self.mine.lock().expect("not poisoned");
            let next = match known {
                Some((epoch, seq)) if epoch == current.epoch => seq + 1,
                // Ours by name but not known to this process (a restart with the same
                // holder id): carry on from the stored renewal's number, so candidates see
                // it change.
                _ => {
                    let stored: Option<LeaseRenewal> = self
                        .control
                        .get(&lease_renewal_key_in(&self.prefix, current.epoch))
                        .await?;
                    if let Some(r) = stored.as_ref().filter(|r| r.released) {
                        return self.take_vacant(&current, r.seq, may_take).await;
                    }
                    stored.map_or(1, |r| r.seq + 1)
                }
            };
            return self.renew_known(current.epoch, next).await;
        }
        *self.mine.lock().expect("not poisoned") = None;
        let renewal: Option<LeaseRenewal> = self
            .control
            .get(&lease_renewal_key_in(&self.prefix, current.epoch))
            .await?;
        if let Some(r) = renewal.as_ref().filter(|r| r.released) {
            return self.take_vacant(&current, r.seq, may_take).await;
        }
        let seq = renewal.map(|r| r.seq);
        let expired = {
            let mut seen = self.seen.lock().expect("not poisoned");
            match seen.as_ref() {
                Some(s) if s.epoch == current.epoch && s.seq == seq => {
                    s.since.elapsed() >= self.ttl
                }
                _ => {
                    *seen = Some(Seen {
                        epoch: current.epoch,
                        seq,
                        since: Instant::now(),
                    });
                    false
                }
            }
        };
        if expired {
            if !may_take(Vacated::Expired(&current.holder)) && !self.abandoned(current.epoch, seq) {
                return Ok(Standing::Follower {
                    epoch: current.epoch,
                    holder: current.holder,
                });
            }
            tracing::warn!(epoch = current.epoch, holder = %current.holder, lease = %self.prefix, ttl = ?self.ttl, "the leader stopped renewing its lease; taking over");
            return self.try_take(current.epoch + 1).await;
        }
        Ok(Standing::Follower {
            epoch: current.epoch,
            holder: current.holder,
        })
    }

    /// Takes the epoch after `current`, which was released, if `may_take` agrees.
    async fn take_vacant(
        &self,
        current: &LeaseRecord,
        seq: u64,
        may_take: &MayTake<'_>,
    ) -> Result<Standing, ControlError> {
        if may_take(Vacated::Released(&current.holder)) || self.abandoned(current.epoch, Some(seq))
        {
            return self.try_take(current.epoch + 1).await;
        }
        Ok(Standing::Follower {
            epoch: current.epoch,
            holder: current.holder.clone(),
        })
    }

    /// Whether the lease has stayed vacant, as (`epoch`, renewal `seq`), for a whole TTL
    /// since this process first declined it: the process that should have taken it did
    /// not (gone, or failing to write), and any candidate may then, racing for the epoch.
    fn abandoned(&self, epoch: u64, seq: Option<u64>) -> bool {
        let mut vacant = self.vacant.lock().expect("not poisoned");
        match vacant.as_ref() {
            Some(v) if v.epoch == epoch && v.seq == seq => {
                let long = v.since.elapsed() >= self.ttl;
                if long {
                    tracing::warn!(epoch, lease = %self.prefix, ttl = ?self.ttl, "the lease stayed vacant for a TTL; taking it");
                }
                long
            }
            _ => {
                *vacant = Some(Seen {
                    epoch,
                    seq,
                    since: Instant::now(),
                });
                false
            }
        }
    }

    /// Writes renewal `seq` of `epoch`, which this process holds.
    async fn renew_known(&self, epoch: u64, seq: u64) -> Result<Standing, ControlError> {
        *self.mine.lock().expect("not poisoned") = Some((epoch, seq));
        let renewal = LeaseRenewal {
            seq,
            at: Utc::now(),
            released: false,
        };
        self.control
            .put(&lease_renewal_key_in(&self.prefix, epoch), &renewal)
            .await?;
        Ok(Standing::Leader { epoch })
    }

    async fn tick_follower_of(&self, epoch: u64) -> Result<Standing, ControlError> {
        *self.mine.lock().expect("not poisoned") = None;
        let holder = self
            .control
            .get::<LeaseRecord>(&lease_key_in(&self.prefix, epoch))
            .await?
            .map(|r| r.holder)
            .unwrap_or_default();
        Ok(Standing::Follower { epoch, holder })
    }

    /// Creates epoch `epoch`; of racing candidates exactly one gets it.
    async fn try_take(&self, epoch: u64) -> Result<Standing, ControlError> {
        let record = LeaseRecord {
            epoch,
            holder: self.holder.clone(),
            acquired_at: Utc::now(),
            ttl_ms: self.ttl.as_millis() as u64,
            doorbell: self.doorbell.clone(),
            partitions: Some(self.partitions),
        };
        match self
            .control
            .create(&lease_key_in(&self.prefix, epoch), &record)
            .await?
        {
            Created::New => {
                *self.mine.lock().expect("not poisoned") = Some((epoch, 0));
                *self.seen.lock().expect("not poisoned") = None;
                let renewal = LeaseRenewal {
                    seq: 0,
                    at: Utc::now(),
                    released: false,
                };
                self.control
                    .put(&lease_renewal_key_in(&self.prefix, epoch), &renewal)
                    .await?;
                tracing::info!(epoch, holder = %self.holder, lease = %self.prefix, "leading");
                Ok(Standing::Leader { epoch })
            }
            Created::Existed => self.tick_follower_of(epoch).await,
        }
    }

    /// Hands leadership over at once (a clean stop): candidates need not wait for the TTL.
    /// The next tick renews nothing: it takes the lease again only if `may_take` agrees.
    pub async fn release(&self) -> Result<(), ControlError> {
        *self.until.lock().expect("not poisoned") = None;
        let Some((epoch, seq)) = self.mine.lock().expect("not poisoned").take() else {
            return Ok(());
        };
        let renewal = LeaseRenewal {
            seq: seq + 1,
            at: Utc::now(),
            released: true,
        };
        if let Err(e) = self
            .control
            .put(&lease_renewal_key_in(&self.prefix, epoch), &renewal)
            .await
        {
            // Still held: a later release tries again (and no tick renews it meanwhile
            // unless the caller decides so).
            *self.mine.lock().expect("not poisoned") = Some((epoch, seq));
            return Err(e);
        }
        tracing::info!(epoch, lease = %self.prefix, "released the lease");
        Ok(())
    }
}

/// Decides whether a vacant lease may be taken, given how it became vacant.
pub type MayTake<'a> = dyn Fn(Vacated<'_>) -> bool + Send + Sync + 'a;

/// How a lease became free to take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vacated<'a> {
    /// No epoch was ever created.
    Never,
    /// Its holder handed it over (a clean stop, or a partition moving to another member).
    Released(&'a str),
    /// Its holder stopped renewing for a whole TTL.
    Expired(&'a str),
}

/// The highest epoch created under `prefix`, if any: one listing.
async fn highest_epoch(control: &ControlPlane, prefix: &str) -> Result<Option<u64>, ControlError> {
    let epochs = control.keys(prefix).await?;
    Ok(epochs
        .iter()
        .filter_map(|k| {
            let name = k.strip_prefix(prefix)?.strip_prefix('/')?;
            name.strip_suffix(".json")?.parse::<u64>().ok()
        })
        .max())
}

/// The highest epoch's record under `prefix`, if any epoch exists.
pub async fn current(
    control: &ControlPlane,
    prefix: &str,
) -> Result<Option<LeaseRecord>, ControlError> {
    let Some(latest) = highest_epoch(control, prefix).await? else {
        return Ok(None);
    };
    control.get(&lease_key_in(prefix, latest)).await
}

/// The highest epoch's record and its last renewal of partition 0, for `status`.
pub async fn describe(
    control: &ControlPlane,
) -> Result<Option<(LeaseRecord, Option<LeaseRenewal>)>, ControlError> {
    describe_in(control, LEASE_PREFIX).await
}

/// The same for the lease under `prefix`.
pub async fn describe_in(
    control: &ControlPlane,
    prefix: &str,
) -> Result<Option<(LeaseRecord, Option<LeaseRenewal>)>, ControlError> {
    let Some(record) = current(control, prefix).await? else {
        return Ok(None);
    };
    let renewal = control
        .get(&lease_renewal_key_in(prefix, record.epoch))
        .await?;
    Ok(Some((record, renewal)))
}
