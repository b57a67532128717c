//! Cluster-wide admission policies kept in the store: token buckets for
//! rate limits (per task name and per tenant) and resource pools (named
//! capacities, held by running tasks under an expiring lease).
//!
//! A store that keeps them answers [`super::Store::policy`] with its
//! [`Policy`]; [`super::MemoryStore`] does (one process), the Redis store
//! does for a cluster. The rules, shared by both:
//!
//! - **Token buckets.** A bucket for rate `count/per` refills `count`
//!   tokens per `per`, continuously, and holds at most [`burst`] tokens (a
//!   tenth of a second's worth, at least 1). [`Policy::take_tokens`] takes
//!   the same number of tokens, up to `want`, from every bucket it names
//!   at once (a task limited by its name and its tenant takes from both or
//!   from neither) and says how long until the next token.
//! - **Pools.** A pool has a capacity (units). A holder (one run of one
//!   task) takes units of several pools at once or of none
//!   ([`Policy::acquire_pools`]: all or nothing, so two tasks needing the
//!   same pools can never deadlock); its units are released at the end of
//!   the run or, when its worker died, when its lease expires.
//!
//! # Examples
//!
//! ```
//! use std::collections::BTreeMap;
//! use std::time::Duration;
//! use celeriac_schema::control::Rate;
//! use celeriac_schema::store::{Bucket, MemoryStore, PoolGrant, Store};
//!
//! # tokio_test_block_on(async {
//! let store = MemoryStore::new(Default::default());
//! let policy = store.policy().expect("the memory store keeps policies");
//! let bucket = Bucket::task("report", "2/s".parse::<Rate>()?);
//! let grant = policy.take_tokens(&[bucket.clone()], 5).await?;
//! assert_eq!(grant.granted, 1, "a burst of 2/s is one token");
//!
//! policy.set_pool("gpu", Some(1), false).await?;
//! let needs = BTreeMap::from([("gpu".to_owned(), 1)]);
//! let lease = Duration::from_secs(30);
//! assert_eq!(policy.acquire_pools("run-1", &needs, lease).await?, PoolGrant::Granted);
//! assert!(matches!(policy.acquire_pools("run-2", &needs, lease).await?, PoolGrant::Full { .. }));
//! policy.release_pools("run-1", &needs).await?;
//! assert_eq!(policy.acquire_pools("run-2", &needs, lease).await?, PoolGrant::Granted);
//! # Ok::<_, Box<dyn std::error::Error>>(()) });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
//! # }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::MemoryStore;
use crate::control::Rate;
use crate::Result;

/// The field prefix of a tenant's rate in the limits hash
/// ([`super::ControlHash::Limits`]): `tenant-rate:{tenant}` = `10/s`.
pub const TENANT_RATE_FIELD: &str = "tenant-rate:";

/// The tenant and rate a field of the limits hash holds, if it is a
/// tenant's rate.
///
/// # Examples
///
/// ```
/// use celeriac_schema::store::tenant_limit;
///
/// let (tenant, rate) = tenant_limit("tenant-rate:acme", "10/s").unwrap();
/// assert_eq!((tenant.as_str(), rate.count), ("acme", 10));
/// assert!(tenant_limit("rate:acme", "10/s").is_none());
/// ```
pub fn tenant_limit(field: &str, value: &str) -> Option<(String, Rate)> {
    let tenant = field.strip_prefix(TENANT_RATE_FIELD)?;
    Some((tenant.to_owned(), value.parse().ok()?))
}

/// How many tokens a bucket of `rate` holds at most: a tenth of a
/// second's worth, at least 1 and at most `rate.count`.
///
/// # Examples
///
/// ```
/// use celeriac_schema::store::burst;
///
/// assert_eq!(burst("20/s".parse().unwrap()), 2);
/// assert_eq!(burst("100/s".parse().unwrap()), 10);
/// assert_eq!(burst("5000/h".parse().unwrap()), 1);
/// ```
pub fn burst(rate: Rate) -> u32 {
    let per_ms = rate.per.as_millis().max(1);
    let tenth = (u128::from(rate.count) * 100).div_ceil(per_ms);
    u32::try_from(tenth)
        .unwrap_or(u32::MAX)
        .clamp(1, rate.count)
}

/// One token bucket: its key below `{ns}:rl:` and its rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    /// `task:{name}` or `tenant:{tenant}`.
    pub key: String,
    /// Its rate.
    pub rate: Rate,
}

impl Bucket {
    /// The bucket of a task name.
    pub fn task(name: &str, rate: Rate) -> Bucket {
        Bucket {
            key: format!("task:{name}"),
            rate,
        }
    }

    /// The bucket of a tenant.
    pub fn tenant(tenant: &str, rate: Rate) -> Bucket {
        Bucket {
            key: format!("tenant:{tenant}"),
            rate,
        }
    }

    /// The bucket a producer's admission limit of a task name takes from
    /// (separate from the workers' run-time bucket).
    pub fn admission(key: &str, rate: Rate) -> Bucket {
        Bucket {
            key: format!("admit:{key}"),
            rate,
        }
    }
}

/// What [`Policy::take_tokens`] granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// Tokens taken from every bucket (0 to `want`).
    pub granted: u32,
    /// How long until every bucket holds a token again (zero when one is
    /// there now).
    pub retry_after: Duration,
}

/// What [`Policy::acquire_pools`] answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolGrant {
    /// The holder holds every unit it asked for (until released or its
    /// lease expires).
    Granted,
    /// A pool has too few free units; nothing was taken.
    Full {
        /// The first pool that is full.
        pool: String,
        /// When its first lease runs out (an upper bound on the wait
        /// when no holder releases earlier).
        retry_after: Duration,
    },
    /// A pool without a capacity, or one smaller than the units asked
    /// for: the task can never run.
    Unknown {
        /// The pool.
        pool: String,
        /// Its capacity, when it has one.
        capacity: Option<u32>,
    },
}

/// A pool as `celeriac pool list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolStatus {
    /// Its name.
    pub name: String,
    /// Its capacity.
    pub capacity: u32,
    /// Units held by live leases.
    pub in_use: u32,
    /// Live holders.
    pub holders: u32,
}

/// Rate limits and resource pools kept in a store; see the module
/// documentation for the rules.
#[async_trait::async_trait]
pub trait Policy: Send + Sync + fmt::Debug {
    /// Takes up to `want` tokens (at least 1 is asked for) from every
    /// bucket at once.
    ///
    /// # Errors
    ///
    /// [`crate::Error::StoreUnavailable`].
    async fn take_tokens(&self, buckets: &[Bucket], want: u32) -> Result<Grant>;

    /// Takes `needs` (pool → units) for `holder`, all or nothing, under a
    /// lease of `lease`. Asking again for a holder that holds its units
    /// renews them.
    ///
    /// # Errors
    ///
    /// [`crate::Error::StoreUnavailable`].
    async fn acquire_pools(
        &self,
        holder: &str,
        needs: &BTreeMap<String, u32>,
        lease: Duration,
    ) -> Result<PoolGrant>;

    /// Extends the lease of `holder` on its pools; `false` when it no
    /// longer holds one of them (its lease ran out).
    ///
    /// # Errors
    ///
    /// [`crate::Error::StoreUnavailable`].
    async fn renew_pools(
        &self,
        holder: &str,
        pools: &BTreeMap<String, u32>,
        lease: Duration,
    ) -> Result<bool>;

    /// Releases every unit `holder` holds of `pools`.
    ///
    /// # Errors
    ///
    /// [`crate::Error::StoreUnavailable`].
    async fn release_pools(&self, holder: &str, pools: &BTreeMap<String, u32>) -> Result<()>;

    /// Sets (`Some`) or removes (`None`) a pool's capacity; with
    /// `if_absent`, only when it has none. Whether it changed.
    ///
    /// # Errors
    ///
    /// [`crate::Error::StoreUnavailable`].
    async fn set_pool(&self, name: &str, capacity: Option<u32>, if_absent: bool) -> Result<bool>;

    /// Every pool with a capacity, by name.
    ///
    /// # Errors
    ///
    /// [`crate::Error::StoreUnavailable`].
    async fn pools(&self) -> Result<Vec<PoolStatus>>;
}

/// The policies of a [`MemoryStore`].
#[derive(Debug, Default)]
pub(super) struct MemoryPolicy {
    inner: Mutex<PolicyState>,
}

#[derive(Debug, Default)]
struct PolicyState {
    /// key → (tokens, refilled at).
    buckets: HashMap<String, (f64, Instant)>,
    capacities: BTreeMap<String, u32>,
    /// pool → holder → (units, lease expiry).
    holders: HashMap<String, HashMap<String, (u32, Instant)>>,
}

impl MemoryPolicy {
    fn lock(&self) -> MutexGuard<'_, PolicyState> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl PolicyState {
    fn live(&mut self, pool: &str, now: Instant) -> &mut HashMap<String, (u32, Instant)> {
        let holders = self.holders.entry(pool.to_owned()).or_default();
        holders.retain(|_, (_, expiry)| *expiry > now);
        holders
    }
}

/// The tokens a bucket holds after `elapsed`, refilled at its rate.
fn refill(tokens: f64, elapsed: Duration, rate: Rate) -> f64 {
    let per = rate.per.as_secs_f64().max(f64::MIN_POSITIVE);
    let added = elapsed.as_secs_f64() * f64::from(rate.count) / per;
    (tokens + added).min(f64::from(burst(rate)))
}

/// How long until a bucket holding `tokens` holds one.
fn until_token(tokens: f64, rate: Rate) -> Duration {
    if tokens >= 1.0 {
        return Duration::ZERO;
    }
    let per = rate.per.as_secs_f64();
    Duration::from_secs_f64((1.0 - tokens) * per / f64::from(rate.count))
}

#[async_trait::async_trait]
impl Policy for MemoryStore {
    async fn take_tokens(&self, buckets: &[Bucket], want: u32) -> Result<Grant> {
        let now = Instant::now();
        let mut state = self.policy.lock();
        let mut levels = Vec::with_capacity(buckets.len());
        for bucket in buckets {
            let (tokens, at) = state
                .buckets
                .get(&bucket.key)
                .copied()
                .unwrap_or((f64::from(burst(bucket.rate)), now));
            levels.push(refill(
                tokens,
                now.saturating_duration_since(at),
                bucket.rate,
            ));
        }
        let granted = levels
            .iter()
            .map(|t| t.floor() as u32)
            .fold(want.max(1), u32::min);
        let mut retry_after = Duration::ZERO;
        for (bucket, tokens) in buckets.iter().zip(levels) {
            let left = tokens - f64::from(granted);
            retry_after = retry_after.max(until_token(left, bucket.rate));
            state.buckets.insert(bucket.key.clone(), (left, now));
        }
        Ok(Grant {
            granted,
            retry_after,
        })
    }

    async fn acquire_pools(
        &self,
        holder: &str,
        needs: &BTreeMap<String, u32>,
        lease: Duration,
    ) -> Result<PoolGrant> {
        let now = Instant::now();
        let mut state = self.policy.lock();
        for (pool, units) in needs {
            let capacity = state.capacities.get(pool).copied();
            if capacity.is_none_or(|c| c < *units) {
                return Ok(PoolGrant::Unknown {
                    pool: pool.clone(),
                    capacity,
                });
            }
            let capacity = capacity.unwrap_or_default();
            let holders = state.live(pool, now);
            let used: u32 = holders
                .iter()
                .filter(|(h, _)| h.as_str() != holder)
                .map(|(_, (u, _))| *u)
                .sum();
            if used + units > capacity {
                let first = holders.values().map(|(_, e)| *e).min().unwrap_or(now);
                return Ok(PoolGrant::Full {
                    pool: pool.clone(),
                    retry_after: first.saturating_duration_since(now),
                });
            }
        }
        for (pool, units) in needs {
            state
                .live(pool, now)
                .insert(holder.to_owned(), (*units, now + lease));
        }
        Ok(PoolGrant::Granted)
    }

    async fn renew_pools(
        &self,
        holder: &str,
        pools: &BTreeMap<String, u32>,
        lease: Duration,
    ) -> Result<bool> {
        let now = Instant::now();
        let mut state = self.policy.lock();
        let mut all = true;
        for pool in pools.keys() {
            match state.live(pool, now).get_mut(holder) {
                Some((_, expiry)) => *expiry = now + lease,
                None => all = false,
            }
        }
        Ok(all)
    }

    async fn release_pools(&self, holder: &str, pools: &BTreeMap<String, u32>) -> Result<()> {
        let mut state = self.policy.lock();
        for pool in pools.keys() {
            if let Some(holders) = state.holders.get_mut(pool) {
                holders.remove(holder);
            }
        }
        Ok(())
    }

    async fn set_pool(&self, name: &str, capacity: Option<u32>, if_absent: bool) -> Result<bool> {
        let mut state = self.policy.lock();
        if if_absent && state.capacities.contains_key(name) {
            return Ok(false);
        }
        Ok(match capacity {
            Some(capacity) => state.capacities.insert(name.to_owned(), capacity) != Some(capacity),
            None => state.capacities.remove(name).is_some(),
        })
    }

    async fn pools(&self) -> Result<Vec<PoolStatus>> {
        let now = Instant::now();
        let mut state = self.policy.lock();
        let capacities = state.capacities.clone();
        Ok(capacities
            .into_iter()
            .map(|(name, capacity)| {
                let holders = state.live(&name, now);
                PoolStatus {
                    in_use: holders.values().map(|(u, _)| *u).sum(),
                    holders: holders.len() as u32,
                    name,
                    capacity,
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn store() -> MemoryStore {
        MemoryStore::new(Default::default())
    }

    #[tokio::test]
    async fn a_bucket_grants_its_burst_then_says_when_to_ask_again() {
        let store = store();
        let policy = store.policy().expect("kept");
        let rate: Rate = "100/s".parse().expect("valid");
        let grant = policy
            .take_tokens(&[Bucket::task("t", rate)], 50)
            .await
            .expect("taken");
        assert_eq!(grant.granted, 10);
        let grant = policy
            .take_tokens(&[Bucket::task("t", rate)], 1)
            .await
            .expect("taken");
        assert_eq!(grant.granted, 0);
        assert!(grant.retry_after > Duration::ZERO);
        assert!(grant.retry_after <= Duration::from_millis(10));
    }

    #[tokio::test]
    async fn two_buckets_grant_together_or_not_at_all() {
        let store = store();
        let policy = store.policy().expect("kept");
        let task = Bucket::task("t", "10/s".parse().expect("valid"));
        let tenant = Bucket::tenant("a", "1/m".parse().expect("valid"));
        let both = [task.clone(), tenant.clone()];
        assert_eq!(policy.take_tokens(&both, 1).await.expect("ok").granted, 1);
        let grant = policy.take_tokens(&both, 1).await.expect("ok");
        assert_eq!(grant.granted, 0, "the tenant's bucket is empty");
        assert!(grant.retry_after > Duration::from_secs(50));
        // The task's own bucket was not charged by the refusal.
        let alone = policy.take_tokens(&[task], 1).await.expect("ok");
        assert_eq!(alone.granted, 0, "a burst of 10/s is 1: taken above");
        assert!(alone.retry_after <= Duration::from_millis(100));
    }

    #[tokio::test]
    async fn pools_are_all_or_nothing_and_leases_expire() {
        let store = store();
        let policy = store.policy().expect("kept");
        policy.set_pool("gpu", Some(2), false).await.expect("set");
        policy.set_pool("db", Some(1), false).await.expect("set");
        assert!(!policy.set_pool("gpu", Some(9), true).await.expect("kept"));
        let both = BTreeMap::from([("gpu".to_owned(), 1), ("db".to_owned(), 1)]);
        let gpu2 = BTreeMap::from([("gpu".to_owned(), 2)]);
        let short = Duration::from_millis(30);
        assert_eq!(
            policy.acquire_pools("a", &both, short).await.expect("ok"),
            PoolGrant::Granted
        );
        assert!(matches!(
            policy.acquire_pools("b", &gpu2, short).await.expect("ok"),
            PoolGrant::Full { ref pool, .. } if pool == "gpu"
        ));
        assert!(matches!(
            policy.acquire_pools("c", &both, short).await.expect("ok"),
            PoolGrant::Full { ref pool, .. } if pool == "db"
        ));
        // Nothing of gpu was taken by the refused multi-pool request.
        let status = policy.pools().await.expect("ok");
        assert_eq!(status.iter().map(|p| p.in_use).sum::<u32>(), 2);
        // The holder dies: its lease runs out.
        tokio::time::sleep(short * 2).await;
        assert!(!policy.renew_pools("a", &both, short).await.expect("ok"));
        assert_eq!(
            policy.acquire_pools("b", &gpu2, short).await.expect("ok"),
            PoolGrant::Granted
        );
        policy.release_pools("b", &gpu2).await.expect("ok");
        assert_eq!(
            policy
                .acquire_pools("d", &BTreeMap::from([("tpu".to_owned(), 1)]), short)
                .await
                .expect("ok"),
            PoolGrant::Unknown {
                pool: "tpu".into(),
                capacity: None
            }
        );
        assert!(matches!(
            policy
                .acquire_pools("d", &BTreeMap::from([("gpu".to_owned(), 3)]), short)
                .await
                .expect("ok"),
            PoolGrant::Unknown {
                capacity: Some(2),
                ..
            }
        ));
    }
}
