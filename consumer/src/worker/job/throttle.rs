//! Throttling before a run: the task's rate limits (its name's and its
//! tenant's) and its resource pools.
//!
//! With a store that keeps policies the buckets and pools are the
//! cluster's (see `celeriac_schema::store::Policy`); without one each
//! worker keeps its own, in memory. A short wait (under [`SHORT_WAIT`] in
//! all) happens in the worker without a concurrency slot, so other tasks
//! keep running; a longer one sends the task back through the delay
//! cascade (the same message, same attempt, with header
//! `celeriac-throttled`), counted by `celeriac_tasks_throttled_total`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use celeriac_schema::control::Rate;
use celeriac_schema::store::{
    burst, tenant_limit, Bucket, MemoryStore, PoolGrant, Store, StoreSettings,
};
use celeriac_schema::{now_ms, Envelope, TaskId};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn, Instrument};

use super::Job;
use crate::disposition::Outcome;
use crate::metrics::WorkerMetrics;
use crate::metrics_policy::Throttle;
use crate::stats::WorkerStats;
use crate::TaskError;

/// How long a task waits in the worker, in all, before it goes back
/// through the delay cascade.
pub(crate) const SHORT_WAIT: Duration = Duration::from_secs(1);
/// How often a task asks again for a full pool while it waits.
const POOL_POLL: Duration = Duration::from_millis(100);
/// How long tokens taken ahead stay usable.
const AHEAD_TTL: Duration = Duration::from_secs(1);
/// The most tokens a worker takes from a cluster bucket at once.
pub(crate) const BATCH_MAX: u32 = 8;

/// Rate tokens taken ahead from a cluster bucket, and the buckets and
/// pools of a worker without a store.
#[derive(Debug)]
pub(crate) struct Tokens {
    ahead: Mutex<HashMap<String, (u32, Instant)>>,
    local: Arc<MemoryStore>,
}

impl Default for Tokens {
    fn default() -> Self {
        Tokens {
            ahead: Mutex::new(HashMap::new()),
            local: Arc::new(MemoryStore::new(StoreSettings::default())),
        }
    }
}

impl Tokens {
    fn take_ahead(&self, key: &str) -> bool {
        let mut ahead = self.ahead.lock().unwrap_or_else(PoisonError::into_inner);
        match ahead.get_mut(key) {
            Some((n, at)) if *n > 0 && at.elapsed() < AHEAD_TTL => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }

    fn keep_ahead(&self, key: String, n: u32) {
        let mut ahead = self.ahead.lock().unwrap_or_else(PoisonError::into_inner);
        ahead.retain(|_, (n, at)| *n > 0 && at.elapsed() < AHEAD_TTL);
        if n > 0 {
            ahead.insert(key, (n, Instant::now()));
        }
    }

    /// The store of a worker without one that keeps policies.
    pub(crate) fn local(&self) -> Arc<MemoryStore> {
        self.local.clone()
    }
}

/// The tenant rates among the fields of the limits hash.
pub(crate) fn tenant_rates(fields: &[(String, Vec<u8>)]) -> Vec<(String, Rate)> {
    fields
        .iter()
        .filter_map(|(field, value)| {
            let parsed = std::str::from_utf8(value)
                .ok()
                .and_then(|v| tenant_limit(field, v));
            if parsed.is_none() && field.starts_with(celeriac_schema::store::TENANT_RATE_FIELD) {
                warn!(%field, "an unreadable tenant limit in the store; ignored");
            }
            parsed
        })
        .collect()
}

/// What the throttle decided.
pub(super) enum Gate {
    /// Run, holding these pool units (if any).
    Go(Option<PoolHold>),
    /// Do not run now: this outcome (a delay through the cascade, or a
    /// dead letter for an unknown pool).
    Stop(Outcome),
    /// The worker shuts down.
    Shutdown,
}

/// One answer while waiting.
enum Step {
    Go(Option<PoolHold>),
    Wait(Duration),
    Stop(Outcome),
    Shutdown,
}

impl Job {
    /// The store whose policies apply: the worker's, else its own memory.
    fn policy_store(&self) -> Arc<dyn Store> {
        match &self.shared.config.store {
            Some(store) if store.policy().is_some() => store.clone(),
            _ => self.shared.control.tokens.local(),
        }
    }

    /// Waits for the task's rate limits and pools, without a concurrency
    /// slot while it waits; sets `env.eta` when it sends the task back.
    pub(super) async fn gate(&self, env: &mut Envelope) -> Gate {
        let limits = &self.shared.control.limits;
        let mut buckets = Vec::new();
        if let Some(rate) = limits.task_rate(&env.task) {
            buckets.push(Bucket::task(&env.task, rate));
        }
        if let Some((tenant, rate)) = env
            .tenant
            .as_deref()
            .and_then(|t| limits.tenant_rate(t).map(|r| (t, r)))
        {
            buckets.push(Bucket::tenant(tenant, rate));
        }
        if buckets.is_empty() && env.pools.is_empty() {
            return Gate::Go(None);
        }
        let store = self.policy_store();
        let started = Instant::now();
        let mut slot_given_back = false;
        let mut reason = Throttle::Rate;
        let mut rate_done = buckets.is_empty();
        let gate = loop {
            let step = if rate_done {
                reason = Throttle::Pool;
                self.try_pools(&store, env).await
            } else {
                match self.try_rate(&store, &buckets).await {
                    Step::Go(_) => {
                        rate_done = true;
                        continue;
                    }
                    other => other,
                }
            };
            let pause = match step {
                Step::Go(hold) => break Gate::Go(hold),
                Step::Stop(outcome) => break Gate::Stop(outcome),
                Step::Shutdown => break Gate::Shutdown,
                Step::Wait(pause) => pause,
            };
            if started.elapsed() + pause > SHORT_WAIT {
                break self.send_back(env, pause, reason);
            }
            if !slot_given_back {
                drop(self.lock_permit().take());
                slot_given_back = true;
                debug!(
                    ?pause,
                    reason = reason.as_str(),
                    "throttled; waiting without a slot"
                );
            }
            tokio::select! {
                _ = self.shared.shutdown.cancelled() => break Gate::Shutdown,
                _ = tokio::time::sleep(pause) => {}
            }
        };
        if slot_given_back && matches!(gate, Gate::Go(_)) && !self.take_slot_again().await {
            return Gate::Shutdown;
        }
        gate
    }

    /// Takes a token of every bucket (one taken ahead, or from the store).
    async fn try_rate(&self, store: &Arc<dyn Store>, buckets: &[Bucket]) -> Step {
        let tokens = &self.shared.control.tokens;
        let key = buckets
            .iter()
            .map(|b| b.key.as_str())
            .collect::<Vec<_>>()
            .join("+");
        if tokens.take_ahead(&key) {
            return Step::Go(None);
        }
        let Some(policy) = store.policy() else {
            return Step::Go(None);
        };
        // One bucket: a few tokens at once, spent here within a second.
        // Two: one at a time (tokens ahead per tenant would add up).
        let want = match buckets {
            [one] if self.shared.config.store.is_some() => burst(one.rate).min(BATCH_MAX),
            _ => 1,
        };
        let Some(grant) = self
            .store_call("rate limit", || policy.take_tokens(buckets, want))
            .await
        else {
            return Step::Shutdown;
        };
        if grant.granted == 0 {
            return Step::Wait(grant.retry_after.max(Duration::from_millis(1)));
        }
        tokens.keep_ahead(key, grant.granted - 1);
        Step::Go(None)
    }

    /// Takes the task's pool units, all or none.
    async fn try_pools(&self, store: &Arc<dyn Store>, env: &Envelope) -> Step {
        if env.pools.is_empty() {
            return Step::Go(None);
        }
        let Some(policy) = store.policy() else {
            return Step::Go(None);
        };
        let holder = format!(
            "{}/{}/{}",
            env.id,
            self.shared.config.worker_id,
            TaskId::new()
        );
        let lease = store.settings().lease_ttl;
        let Some(grant) = self
            .store_call("acquire pools", || {
                policy.acquire_pools(&holder, &env.pools, lease)
            })
            .await
        else {
            return Step::Shutdown;
        };
        match grant {
            PoolGrant::Granted => Step::Go(Some(PoolHold::start(
                store.clone(),
                holder,
                env.pools.clone(),
                self.shared.metrics.clone(),
            ))),
            PoolGrant::Full { retry_after, .. } => {
                Step::Wait(retry_after.clamp(Duration::from_millis(10), POOL_POLL))
            }
            PoolGrant::Unknown { pool, capacity } => {
                let message = match capacity {
                    Some(c) => format!(
                        "the task asks for {} units of pool {pool:?}, whose capacity is {c}",
                        env.pools.get(&pool).copied().unwrap_or_default()
                    ),
                    None => format!(
                        "pool {pool:?} has no capacity (set one with `celeriac pool set {pool} N`)"
                    ),
                };
                warn!(%pool, "{message}; dead-lettering the task");
                Step::Stop(Outcome::Failed(TaskError::fatal(
                    crate::UNKNOWN_POOL,
                    message,
                )))
            }
        }
    }

    /// The task goes back through the delay cascade for about `pause`
    /// (spread over up to twice as long, so waiting tasks do not return
    /// together).
    fn send_back(&self, env: &mut Envelope, pause: Duration, reason: Throttle) -> Gate {
        let base = pause.max(SHORT_WAIT);
        let delay = base.mul_f64(1.0 + rand::random::<f64>());
        env.eta = Some(now_ms().saturating_add(delay.as_millis() as u64));
        let _ = self.throttled.set(reason);
        WorkerStats::bump(&self.shared.stats.deferred);
        self.shared
            .metrics
            .policy
            .throttled(&self.queue, &env.task, reason);
        info!(
            ?delay,
            reason = reason.as_str(),
            "throttled; sent back through the delay cascade"
        );
        Gate::Stop(Outcome::Early(delay))
    }

    /// Takes a concurrency slot again after waiting without one.
    async fn take_slot_again(&self) -> bool {
        let permit = tokio::select! {
            _ = self.shared.shutdown.cancelled() => return false,
            permit = self.semaphore.clone().acquire_owned() => permit,
        };
        match permit {
            Ok(permit) => {
                *self.lock_permit() = Some(permit);
                true
            }
            Err(_) => false,
        }
    }
}

/// Pool units held by one run: renewed with the run, released at its end
/// (or, if the worker dies, when the lease runs out).
pub(super) struct PoolHold {
    store: Arc<dyn Store>,
    holder: String,
    pools: BTreeMap<String, u32>,
    metrics: Arc<WorkerMetrics>,
    renewal: JoinHandle<()>,
    released: bool,
}

impl PoolHold {
    fn start(
        store: Arc<dyn Store>,
        holder: String,
        pools: BTreeMap<String, u32>,
        metrics: Arc<WorkerMetrics>,
    ) -> PoolHold {
        for (pool, units) in &pools {
            metrics.policy.pool_units(pool, i64::from(*units));
        }
        let lease = store.settings().lease_ttl;
        let renewal = {
            let (store, holder, pools) = (store.clone(), holder.clone(), pools.clone());
            tokio::spawn(
                async move {
                    loop {
                        tokio::time::sleep(lease / 3).await;
                        let Some(policy) = store.policy() else { return };
                        match policy.renew_pools(&holder, &pools, lease).await {
                            Ok(true) => {}
                            Ok(false) => warn!("a pool lease ran out while the task runs"),
                            Err(e) => warn!(error = %e, "could not renew the pool lease"),
                        }
                    }
                }
                .in_current_span(),
            )
        };
        PoolHold {
            store,
            holder,
            pools,
            metrics,
            renewal,
            released: false,
        }
    }

    /// Gives the units back.
    pub(super) async fn release(mut self) {
        self.released = true;
        self.renewal.abort();
        if let Some(policy) = self.store.policy() {
            if let Err(e) = policy.release_pools(&self.holder, &self.pools).await {
                warn!(error = %e, "could not release the pool units; their lease will");
            }
        }
    }
}

impl Drop for PoolHold {
    fn drop(&mut self) {
        self.renewal.abort();
        for (pool, units) in &self.pools {
            self.metrics.policy.pool_units(pool, -i64::from(*units));
        }
        if !self.released {
            let (store, holder, pools) = (
                self.store.clone(),
                std::mem::take(&mut self.holder),
                std::mem::take(&mut self.pools),
            );
            tokio::spawn(async move {
                if let Some(policy) = store.policy() {
                    let _ = policy.release_pools(&holder, &pools).await;
                }
            });
        }
    }
}
