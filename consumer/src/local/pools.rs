//! Resource pools of a local run: what each task needs (several pools,
//! several units each) and what is free.
//!
//! A task takes all its units at once or waits (so tasks naming the same
//! pools never deadlock). Ready tasks wait in the queue of the first pool
//! they name, oldest first: a task at the front that does not fit holds
//! back the tasks behind it in that queue (it is never starved by smaller
//! ones), not those of other queues.

use std::collections::BTreeMap;

use super::error::LocalError;
use super::task::TaskOptions;

/// The units each task needs, by pool index, and the free units.
#[derive(Debug)]
pub(super) struct PoolTable {
    free: Vec<usize>,
    needs: Vec<Vec<(usize, usize)>>,
}

/// What a task asks for: its `pools` and, from the older single-pool
/// option, one unit of its `resource`.
pub(super) fn wanted(options: &TaskOptions) -> BTreeMap<String, u32> {
    let mut pools = options.pools.clone();
    if let Some(name) = &options.resource {
        pools.entry(name.clone()).or_insert(1);
    }
    pools
}

impl PoolTable {
    /// Checks every task's needs against the declared pools.
    ///
    /// # Errors
    ///
    /// [`LocalError::UnknownResource`] for an undeclared pool,
    /// [`LocalError::ZeroCapacity`] for a pool of capacity 0 that a task
    /// uses or a task asking for 0 units, [`LocalError::PoolTooSmall`] when
    /// a task asks for more units than the pool has.
    pub(super) fn resolve<'a>(
        pools: &[(String, usize)],
        tasks: impl Iterator<Item = (&'a str, &'a TaskOptions)>,
    ) -> Result<PoolTable, LocalError> {
        let mut needs = Vec::new();
        for (task, options) in tasks {
            let mut need = Vec::new();
            for (name, units) in wanted(options) {
                let Some(p) = pools.iter().position(|(n, _)| *n == name) else {
                    return Err(LocalError::UnknownResource {
                        task: task.to_owned(),
                        resource: name,
                    });
                };
                let capacity = pools[p].1;
                if capacity == 0 || units == 0 {
                    return Err(LocalError::ZeroCapacity {
                        what: if units == 0 {
                            format!("the units of pool {name:?} task `{task}` asks for")
                        } else {
                            format!("resource pool {name:?}")
                        },
                    });
                }
                if units as usize > capacity {
                    return Err(LocalError::PoolTooSmall {
                        task: task.to_owned(),
                        resource: name,
                        units,
                        capacity,
                    });
                }
                need.push((p, units as usize));
            }
            needs.push(need);
        }
        Ok(PoolTable {
            free: pools.iter().map(|(_, c)| *c).collect(),
            needs,
        })
    }

    /// How many ready queues there are: one without a pool, one per pool.
    pub(super) fn queues(&self) -> usize {
        self.free.len() + 1
    }

    /// The ready queue of `node`: 0 without a pool, else its first pool's.
    pub(super) fn queue_of(&self, node: usize) -> usize {
        self.needs[node].first().map_or(0, |(p, _)| p + 1)
    }

    /// Whether every unit `node` needs is free.
    pub(super) fn fits(&self, node: usize) -> bool {
        self.needs[node].iter().all(|(p, u)| self.free[*p] >= *u)
    }

    /// `node` starts: it takes its units.
    pub(super) fn take(&mut self, node: usize) {
        for (p, u) in &self.needs[node] {
            self.free[*p] -= u;
        }
    }

    /// `node` ended: it gives its units back.
    pub(super) fn give(&mut self, node: usize) {
        for (p, u) in &self.needs[node] {
            self.free[*p] += u;
        }
    }
}
