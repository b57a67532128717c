//! Settings a task inherits, and the `tenant:` key.

use std::time::Duration;

use saphyr::MarkedYaml;

use super::{at, join, Reader, Result};

/// Settings a task takes from itself, its enclosing blocks or `defaults`.
#[derive(Debug, Clone, Default)]
pub(in crate::flow) struct Options {
    pub(in crate::flow) retries: Option<u32>,
    pub(in crate::flow) timeout: Option<Duration>,
    pub(in crate::flow) soft_timeout: Option<Duration>,
    pub(in crate::flow) queue: Option<String>,
    pub(in crate::flow) tenant: Option<String>,
    pub(in crate::flow) tolerance: Option<Duration>,
    pub(in crate::flow) pools: Option<std::collections::BTreeMap<String, u32>>,
}

impl Options {
    /// `self`, with what it leaves unset taken from `outer`.
    pub(in crate::flow) fn or(&self, outer: &Options) -> Options {
        Options {
            retries: self.retries.or(outer.retries),
            timeout: self.timeout.or(outer.timeout),
            soft_timeout: self.soft_timeout.or(outer.soft_timeout),
            queue: self.queue.clone().or_else(|| outer.queue.clone()),
            tenant: self.tenant.clone().or_else(|| outer.tenant.clone()),
            tolerance: self.tolerance.or(outer.tolerance),
            pools: self.pools.clone().or_else(|| outer.pools.clone()),
        }
    }
}

impl Reader<'_> {
    /// A `tenant:` value: 1 to 128 bytes without control characters.
    pub(super) fn tenant(&self, node: &MarkedYaml<'_>, path: &str) -> Result<String> {
        let path = join(path, "tenant");
        let tenant = self.string(node, &path)?;
        match celeriac_schema::fair::validate_tenant(&tenant) {
            Ok(()) => Ok(tenant),
            Err(e) => Err(self.invalid(at(node), path, e.to_string())),
        }
    }
}
