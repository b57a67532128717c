//! Per-send options.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use celeriac_schema::{Envelope, RetryPolicy, TaskId};

/// Options for one send; every field has a sane default.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use celeriac_producer::SendOptions;
///
/// let opts = SendOptions::new()
///     .queue("emails")
///     .countdown(Duration::from_secs(30))
///     .max_retries(5)
///     .idempotency_key("welcome-mail-42")
///     .meta("tenant", "acme");
/// assert_eq!(opts.queue.as_deref(), Some("emails"));
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct SendOptions {
    /// Logical work queue; the producer's default queue when `None`.
    pub queue: Option<String>,
    /// Run no earlier than this long after sending.
    pub countdown: Option<Duration>,
    /// Run no earlier than this time.
    pub eta: Option<SystemTime>,
    /// Discard the task if it has not started this long after sending.
    pub expires_in: Option<Duration>,
    /// Retry policy; the schema default (3 retries, exponential backoff)
    /// when `None`.
    pub retry: Option<RetryPolicy>,
    /// Idempotency key; derived from the task id when `None`.
    pub idempotency_key: Option<String>,
    /// Soft time limit.
    pub soft_time_limit: Option<Duration>,
    /// Hard time limit.
    pub hard_time_limit: Option<Duration>,
    /// Priority 0 to 9.
    pub priority: u8,
    /// User metadata.
    pub meta: BTreeMap<String, String>,
    /// Use this task id instead of a fresh one.
    pub task_id: Option<TaskId>,
    /// The tenant the task runs for: its per-tenant rate limit applies,
    /// and on a fair queue its tasks share the workers equally with other
    /// tenants' (SPEC.md sections 20 and 21).
    pub tenant: Option<String>,
    /// Units of cluster-wide resource pools the task holds while it runs.
    pub pools: BTreeMap<String, u32>,
    /// What an admission limit does to this send; the producer's mode
    /// when `None` (see [`crate::ProducerBuilder::admission_limit`]).
    pub admission: Option<crate::admission::AdmissionMode>,
    /// How long the task may wait after it became due (SPEC.md section 19).
    pub tolerance: Option<Duration>,
}

impl SendOptions {
    /// Default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends to logical queue `queue`.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Runs no earlier than `delay` from now.
    pub fn countdown(mut self, delay: Duration) -> Self {
        self.countdown = Some(delay);
        self
    }

    /// Runs no earlier than `at`.
    pub fn eta(mut self, at: SystemTime) -> Self {
        self.eta = Some(at);
        self
    }

    /// Discards the task if it has not started within `ttl`.
    pub fn expires_in(mut self, ttl: Duration) -> Self {
        self.expires_in = Some(ttl);
        self
    }

    /// Sets the whole retry policy.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// Sets the number of retries, keeping the backoff.
    pub fn max_retries(mut self, retries: u32) -> Self {
        let mut policy = self.retry.unwrap_or_default();
        policy.max_retries = retries;
        self.retry = Some(policy);
        self
    }

    /// Sets the idempotency key.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Sets the soft time limit.
    pub fn soft_time_limit(mut self, limit: Duration) -> Self {
        self.soft_time_limit = Some(limit);
        self
    }

    /// Sets the hard time limit.
    pub fn hard_time_limit(mut self, limit: Duration) -> Self {
        self.hard_time_limit = Some(limit);
        self
    }

    /// Sets the priority (0 to 9).
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = priority;
        self
    }

    /// Adds a metadata entry.
    pub fn meta(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.meta.insert(key.into(), value.into());
        self
    }

    /// Lets the task wait up to `tolerance` after it became due (its ETA,
    /// else now) before it starts: it runs when workers have room and is
    /// promoted to the urgent queue before the tolerance runs out. Zero
    /// and tolerances above
    /// [`MAX_TOLERANCE`](celeriac_schema::tolerance::MAX_TOLERANCE) are
    /// refused when the task is prepared.
    ///
    /// ```
    /// use std::time::Duration;
    /// let opts = celeriac_producer::SendOptions::new().delay_tolerance(Duration::from_secs(60));
    /// assert_eq!(opts.tolerance, Some(Duration::from_secs(60)));
    /// ```
    pub fn delay_tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = Some(tolerance);
        self
    }

    /// Uses a given task id.
    pub fn task_id(mut self, id: TaskId) -> Self {
        self.task_id = Some(id);
        self
    }

    /// Runs the task for tenant `tenant`: its per-tenant rate limit applies
    /// and, on a fair queue, it goes to the tenant's shard, where tenants
    /// share the workers round-robin. 1 to 128 bytes of UTF-8 without
    /// control characters, checked on send.
    ///
    /// # Examples
    ///
    /// ```
    /// use celeriac_producer::SendOptions;
    ///
    /// let opts = SendOptions::new().tenant("acme");
    /// assert_eq!(opts.tenant.as_deref(), Some("acme"));
    /// ```
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// Holds `units` of the cluster-wide resource pool `name` while the
    /// task runs (several pools may be named; all are taken together).
    ///
    /// ```
    /// use celeriac_producer::SendOptions;
    ///
    /// let opts = SendOptions::new().pool("gpu", 1).pool("db-heavy", 2);
    /// assert_eq!(opts.pools.get("gpu"), Some(&1));
    /// ```
    pub fn pool(mut self, name: impl Into<String>, units: u32) -> Self {
        self.pools.insert(name.into(), units);
        self
    }

    /// Overrides the producer's admission mode for this send.
    pub fn admission(mut self, mode: crate::admission::AdmissionMode) -> Self {
        self.admission = Some(mode);
        self
    }

    /// Copies the plain per-task settings into `envelope`, checking the
    /// tenant and the delay tolerance.
    pub(crate) fn fill(&self, envelope: &mut Envelope) -> celeriac_schema::Result<()> {
        if let Some(tenant) = &self.tenant {
            celeriac_schema::fair::validate_tenant(tenant)?;
        }
        envelope.tenant = self.tenant.clone();
        envelope.idempotency_key = self.idempotency_key.clone();
        envelope.soft_time_limit_ms = self.soft_time_limit.map(duration_ms);
        envelope.hard_time_limit_ms = self.hard_time_limit.map(duration_ms);
        envelope.priority = self.priority;
        envelope.meta = self.meta.clone();
        envelope.pools = self.pools.clone();
        envelope.tolerance_ms = self
            .tolerance
            .map(celeriac_schema::tolerance::validate_tolerance)
            .transpose()?;
        Ok(())
    }
}

pub(crate) fn to_unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub(crate) fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
