//! The rate limits of a flow run in-process (its `limits.rate` and
//! `limits.tenant_rate`, see [`FlowLimits`](celeriac_producer::flow::FlowLimits)):
//! the starts of one task name, or of one tenant, are spaced by
//! `per / count`, in the order the tasks asked. A task waits for its turn
//! inside its worker slot, as the cluster's worker does for short waits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use celeriac_producer::flow::{FlowLimits, FlowTask, TaskKind};
use celeriac_schema::control::Rate;
use celeriac_schema::exec::Exec;
use celeriac_schema::Task;
use tokio::time::Instant;

/// Spaces the starts of one task name or tenant.
#[derive(Debug)]
pub(super) struct RateGate {
    interval: Duration,
    next: Mutex<Option<Instant>>,
}

impl RateGate {
    fn new(rate: Rate) -> Arc<RateGate> {
        Arc::new(RateGate {
            interval: rate.per / rate.count.max(1),
            next: Mutex::new(None),
        })
    }

    /// Waits for the next start this gate allows, and takes it.
    pub(super) async fn wait(&self) {
        let at = {
            let now = Instant::now();
            let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
            let at = match *next {
                Some(at) if at > now => at,
                _ => now,
            };
            *next = Some(at + self.interval);
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

/// The gates of a flow's tasks, by task name and by tenant.
#[derive(Debug, Default)]
pub(super) struct RateGates {
    tasks: HashMap<String, Arc<RateGate>>,
    tenants: HashMap<String, Arc<RateGate>>,
}

impl RateGates {
    pub(super) fn new(limits: &FlowLimits) -> RateGates {
        RateGates {
            tasks: limits
                .rates
                .iter()
                .map(|(name, rate)| (name.clone(), RateGate::new(*rate)))
                .collect(),
            tenants: limits
                .tenant_rates
                .iter()
                .map(|(name, rate)| (name.clone(), RateGate::new(*rate)))
                .collect(),
        }
    }

    /// The gates `task` waits for: its task name's (programs run as
    /// `celeriac.exec`, as on the cluster) and its tenant's.
    pub(super) fn of(&self, task: &FlowTask) -> Vec<Arc<RateGate>> {
        let name = match &task.kind {
            TaskKind::Exec(_) => Exec::NAME,
            TaskKind::Handler(name) => name.as_str(),
        };
        let by_name = self.tasks.get(name);
        let by_tenant = task.tenant.as_ref().and_then(|t| self.tenants.get(t));
        by_name.into_iter().chain(by_tenant).cloned().collect()
    }
}

/// Waits for every gate in turn.
pub(super) async fn wait_all(gates: &[Arc<RateGate>]) {
    for gate in gates {
        gate.wait().await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn starts_are_spaced_by_the_rate() {
        let gate = RateGate::new("20/s".parse().unwrap());
        let start = Instant::now();
        let mut at = Vec::new();
        for _ in 0..4 {
            gate.wait().await;
            at.push(start.elapsed());
        }
        for (i, elapsed) in at.iter().enumerate() {
            let due = Duration::from_millis(50) * u32::try_from(i).unwrap();
            assert!(*elapsed >= due, "start {i} at {elapsed:?}, due {due:?}");
        }
    }
}
