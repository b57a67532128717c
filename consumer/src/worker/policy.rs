//! A worker's rate limits and resource pools set when it is built
//! (`--rate-limit`, `--tenant-rate-limit`, `--pool`), and their start-up.

use celeriac_schema::control::{Command, Rate};
use tracing::{info, warn};

use super::builder::WorkerBuilder;
use super::Shared;

/// The limits and pools a worker was built with.
#[derive(Debug, Clone, Default)]
pub(crate) struct PolicyFlags {
    task_rates: Vec<(String, Rate)>,
    tenant_rates: Vec<(String, Rate)>,
    pools: Vec<(String, u32)>,
}

impl WorkerBuilder {
    /// Limits how often `task` starts: across the cluster when the store
    /// keeps policies (Redis, [`MemoryStore`](celeriac_schema::store::MemoryStore)),
    /// per worker without a store. A rate set at run time
    /// (`celeriac control rate-limit`, kept in the store) overrides it.
    ///
    /// ```no_run
    /// # fn demo() -> celeriac_consumer::Result<()> {
    /// use celeriac_consumer::{Registry, Worker};
    ///
    /// let worker = Worker::builder("amqp://127.0.0.1:5672/%2f", Registry::new())
    ///     .rate_limit("reports.build", "100/s".parse().unwrap())
    ///     .tenant_rate_limit("acme", "10/s".parse().unwrap())
    ///     .pool("gpu", 4)
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn rate_limit(mut self, task: impl Into<String>, rate: Rate) -> Self {
        self.policy.task_rates.push((task.into(), rate));
        self
    }

    /// Limits how often tasks of `tenant` start (the envelope's `tenant`),
    /// as [`WorkerBuilder::rate_limit`] does for a task name.
    pub fn tenant_rate_limit(mut self, tenant: impl Into<String>, rate: Rate) -> Self {
        self.policy.tenant_rates.push((tenant.into(), rate));
        self
    }

    /// Gives resource pool `name` the capacity `capacity` in the store if
    /// it has none yet (`celeriac pool set` changes it later; a worker
    /// never overrides a capacity already set).
    pub fn pool(mut self, name: impl Into<String>, capacity: u32) -> Self {
        self.policy.pools.push((name.into(), capacity));
        self
    }
}

/// Applies the flags: the base limits, and the pool capacities the store
/// does not have yet.
pub(super) async fn start(shared: &Shared) {
    let flags = &shared.config.policy;
    let commands = flags
        .task_rates
        .iter()
        .map(|(task, rate)| Command::RateLimit {
            task: task.clone(),
            rate: Some(rate.to_string()),
        })
        .collect();
    shared
        .control
        .limits
        .set_base(commands, flags.tenant_rates.clone());
    if flags.pools.is_empty() {
        return;
    }
    // Without a store that keeps pools, the worker keeps its own.
    let local = shared.control.tokens.local();
    let policy = match shared.config.store.as_deref().and_then(|s| s.policy()) {
        Some(policy) => policy,
        None => local.as_ref() as &dyn celeriac_schema::store::Policy,
    };
    for (name, capacity) in &flags.pools {
        match policy.set_pool(name, Some(*capacity), true).await {
            Ok(true) => info!(pool = %name, capacity, "pool capacity set"),
            Ok(false) => info!(pool = %name, "pool capacity already set; kept"),
            Err(e) => warn!(pool = %name, error = %e, "cannot set the pool capacity"),
        }
    }
}
