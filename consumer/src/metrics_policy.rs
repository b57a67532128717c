//! The metrics of rate limits and resource pools: created on first use
//! (their label values are task names, reasons and pool names seen).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `celeriac_tasks_throttled_total` | counter | queue, task, reason (`rate` or `pool`) |
//! | `celeriac_pool_in_use` | gauge | pool (units this worker holds) |

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use tracing::warn;

/// Why a task was throttled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Throttle {
    /// A rate limit (its task name's or its tenant's).
    Rate,
    /// A resource pool without free units.
    Pool,
}

impl Throttle {
    /// The label value, also the value of the `celeriac-throttled` header.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Throttle::Rate => "rate",
            Throttle::Pool => "pool",
        }
    }
}

/// The families; `None` if they could not be registered (a bug, logged).
#[derive(Debug)]
pub(crate) struct PolicyMetrics {
    throttled: Option<IntCounterVec>,
    pool_in_use: Option<IntGaugeVec>,
}

fn registered<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    made: prometheus::Result<C>,
) -> Option<C> {
    let collector = made
        .and_then(|c| registry.register(Box::new(c.clone())).map(|()| c))
        .map_err(|e| warn!(error = %e, "a policy metric cannot be registered"))
        .ok()?;
    Some(collector)
}

impl PolicyMetrics {
    pub(crate) fn new(registry: &Registry) -> PolicyMetrics {
        PolicyMetrics {
            throttled: registered(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "celeriac_tasks_throttled_total",
                        "Deliveries sent back through the delay cascade by a rate limit or a full resource pool.",
                    ),
                    &["queue", "task", "reason"],
                ),
            ),
            pool_in_use: registered(
                registry,
                IntGaugeVec::new(
                    Opts::new(
                        "celeriac_pool_in_use",
                        "Units of a resource pool held by this worker's runs.",
                    ),
                    &["pool"],
                ),
            ),
        }
    }

    /// Counts a delivery sent back through the cascade.
    pub(crate) fn throttled(&self, queue: &str, task: &str, reason: Throttle) {
        if let Some(c) = &self.throttled {
            c.with_label_values(&[queue, task, reason.as_str()]).inc();
        }
    }

    /// Adds `units` (negative: releases) to a pool's gauge.
    pub(crate) fn pool_units(&self, pool: &str, units: i64) {
        if let Some(g) = &self.pool_in_use {
            g.with_label_values(&[pool]).add(units);
        }
    }
}
