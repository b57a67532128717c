//! Settings a task inherits, and the `tenant:` key.

use std::time::Duration;

use saphyr::{MarkedYaml, Scalar, YamlData};

use super::{at, data, join, Fields, Reader, Result};

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
    /// The settings of one block or task: `retries`, `timeout`,
    /// `soft_timeout`, `queue`, `tenant`, `tolerance` and `pools`.
    pub(super) fn options(&self, f: &Fields<'_, '_>) -> Result<Options> {
        let path = &f.path;
        let retries = match f.get("retries") {
            Some((v, _)) => match data(v) {
                YamlData::Value(Scalar::Integer(n)) => Some(u32::try_from(*n).map_err(|_| {
                    self.invalid(
                        at(v),
                        join(path, "retries"),
                        format!("{n} is not a number of retries (0 or more)"),
                    )
                })?),
                _ => return Err(self.wrong_type(v, &join(path, "retries"), "a whole number")),
            },
            None => None,
        };
        let timeout = match f.get("timeout") {
            Some((v, _)) => Some(self.seconds(v, &join(path, "timeout"))?),
            None => None,
        };
        let soft_timeout = match f.get("soft_timeout") {
            Some((v, _)) => Some(self.seconds(v, &join(path, "soft_timeout"))?),
            None => None,
        };
        if let (Some(soft), Some(hard)) = (soft_timeout, timeout) {
            if soft >= hard {
                let p = f.key_at("soft_timeout").unwrap_or_default();
                return Err(self.invalid(
                    p,
                    join(path, "soft_timeout"),
                    format!(
                        "the soft time limit ({}s) must be shorter than `timeout` ({}s)",
                        soft.as_secs_f64(),
                        hard.as_secs_f64()
                    ),
                ));
            }
        }
        let queue = match f.get("queue") {
            Some((v, _)) => {
                let q = self.string(v, &join(path, "queue"))?;
                if q.is_empty() || q.chars().any(char::is_whitespace) {
                    return Err(self.invalid(
                        at(v),
                        join(path, "queue"),
                        format!("{q:?} is not a queue name"),
                    ));
                }
                Some(q)
            }
            None => None,
        };
        let (tenant, pools) = self.policy_options(f)?;
        Ok(Options {
            retries,
            timeout,
            soft_timeout,
            queue,
            tenant,
            tolerance: self.tolerance(f)?,
            pools,
        })
    }

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
