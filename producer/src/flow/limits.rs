//! The `limits:` section of a workflow file: pool capacities and rate
//! limits that the flow's tasks rely on.
//!
//! ```yaml
//! limits:
//!   pools: {gpu: 2}               # capacity of each resource pool
//!   rate: {send_email: 10/s}      # starts per task name (count/s, /m or /h)
//!   tenant_rate: {acme: 100/m}    # starts per tenant
//! ```
//!
//! `celeriac run --local` applies them in-process: the pools bound the
//! tasks that name them, and a task waits for its task name's and its
//! tenant's rate before it runs. `celeriac submit` writes them to the
//! cluster's store (the same keys as `celeriac pool set` and `celeriac
//! control rate-limit`, SPEC.md section 20), so every worker applies them.

use std::collections::BTreeMap;

use celeriac_schema::control::Rate;

/// The `limits:` section of a flow; empty when the file has none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowLimits {
    /// Capacity of each resource pool, by name.
    pub pools: BTreeMap<String, u32>,
    /// Starts allowed per task name.
    pub rates: BTreeMap<String, Rate>,
    /// Starts allowed per tenant.
    pub tenant_rates: BTreeMap<String, Rate>,
}

impl FlowLimits {
    /// Whether the section sets nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use celeriac_producer::flow::FlowLimits;
    ///
    /// assert!(FlowLimits::default().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.pools.is_empty() && self.rates.is_empty() && self.tenant_rates.is_empty()
    }
}
