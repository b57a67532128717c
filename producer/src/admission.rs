//! Admission limits at the producer: a token bucket per task name or per
//! tenant that a send takes from before it publishes.
//!
//! With a store that keeps policies (Redis), the bucket is shared by
//! every producer of the namespace (`{ns}:rl:admit:task:{name}` or
//! `{ns}:rl:admit:tenant:{tenant}`); without one it is the producer's own.
//! A send over the limit either fails at once with
//! [`Error::RateLimited`](crate::Error::RateLimited) ([`AdmissionMode::Reject`],
//! the default) or waits for a token ([`AdmissionMode::Wait`]).
//!
//! # Examples
//!
//! ```no_run
//! # async fn demo() -> celeriac_producer::Result<()> {
//! use celeriac_producer::admission::{AdmissionLimit, AdmissionMode};
//! use celeriac_producer::{Producer, SendOptions};
//!
//! let producer = Producer::builder("amqp://127.0.0.1:5672/%2f")
//!     .admission_limit(AdmissionLimit::task("reports.build", "10/s".parse().unwrap()))
//!     .admission_limit(
//!         AdmissionLimit::tenant("acme", "100/m".parse().unwrap()).mode(AdmissionMode::Wait),
//!     )
//!     .connect()
//!     .await?;
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use celeriac_schema::control::Rate;
use celeriac_schema::store::{Bucket, MemoryStore, Store};
use celeriac_schema::Envelope;

use crate::error::{Error, Result};

/// What a send over an admission limit does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AdmissionMode {
    /// Fails with [`Error::RateLimited`] at once.
    #[default]
    Reject,
    /// Waits until the bucket holds a token.
    Wait,
}

/// What an admission limit applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scope {
    Task(String),
    Tenant(String),
}

/// One admission limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionLimit {
    scope: Scope,
    rate: Rate,
    mode: AdmissionMode,
}

impl AdmissionLimit {
    /// At most `rate` sends of task `name`.
    pub fn task(name: impl Into<String>, rate: Rate) -> AdmissionLimit {
        AdmissionLimit {
            scope: Scope::Task(name.into()),
            rate,
            mode: AdmissionMode::default(),
        }
    }

    /// At most `rate` sends for `tenant` (tasks sent with
    /// [`SendOptions::tenant`](crate::SendOptions::tenant)).
    pub fn tenant(tenant: impl Into<String>, rate: Rate) -> AdmissionLimit {
        AdmissionLimit {
            scope: Scope::Tenant(tenant.into()),
            rate,
            mode: AdmissionMode::default(),
        }
    }

    /// What a send over the limit does (default [`AdmissionMode::Reject`]).
    pub fn mode(mut self, mode: AdmissionMode) -> AdmissionLimit {
        self.mode = mode;
        self
    }

    fn applies(&self, env: &Envelope) -> bool {
        match &self.scope {
            Scope::Task(name) => *name == env.task,
            Scope::Tenant(tenant) => env.tenant.as_deref() == Some(tenant.as_str()),
        }
    }

    fn bucket(&self) -> Bucket {
        match &self.scope {
            Scope::Task(name) => Bucket::admission(&format!("task:{name}"), self.rate),
            Scope::Tenant(tenant) => Bucket::admission(&format!("tenant:{tenant}"), self.rate),
        }
    }
}

/// A producer's admission limits and where their buckets live.
#[derive(Debug)]
pub(crate) struct Admission {
    limits: Vec<AdmissionLimit>,
    store: Arc<dyn Store>,
}

impl Admission {
    /// `None` without limits. The buckets live in `store` when it keeps
    /// policies, else in the producer.
    pub(crate) fn new(limits: Vec<AdmissionLimit>, store: Option<Arc<dyn Store>>) -> Option<Self> {
        if limits.is_empty() {
            return None;
        }
        let store = store
            .filter(|s| s.policy().is_some())
            .unwrap_or_else(|| Arc::new(MemoryStore::new(Default::default())));
        Some(Admission { limits, store })
    }

    /// Takes a token of every limit that applies to `env`, or fails or
    /// waits as the mode (`mode`, else the limit's) says.
    pub(crate) async fn admit(&self, env: &Envelope, mode: Option<AdmissionMode>) -> Result<()> {
        let applying: Vec<&AdmissionLimit> =
            self.limits.iter().filter(|l| l.applies(env)).collect();
        if applying.is_empty() {
            return Ok(());
        }
        let Some(policy) = self.store.policy() else {
            return Ok(());
        };
        let buckets: Vec<Bucket> = applying.iter().map(|l| l.bucket()).collect();
        let wait = match mode {
            Some(mode) => mode == AdmissionMode::Wait,
            None => applying.iter().all(|l| l.mode == AdmissionMode::Wait),
        };
        loop {
            let grant = policy.take_tokens(&buckets, 1).await?;
            if grant.granted > 0 {
                return Ok(());
            }
            let retry_after = grant.retry_after.max(Duration::from_millis(1));
            if !wait {
                let key = buckets
                    .iter()
                    .map(|b| b.key.as_str())
                    .collect::<Vec<_>>()
                    .join("+");
                return Err(Error::RateLimited { key, retry_after });
            }
            tracing::debug!(task_id = %env.id, ?retry_after, "admission limit; waiting");
            tokio::time::sleep(retry_after).await;
        }
    }
}

impl crate::ProducerBuilder {
    /// Adds an admission limit: sends over it fail with
    /// [`Error::RateLimited`] or wait, as its mode says (see the
    /// [module](crate::admission)).
    pub fn admission_limit(mut self, limit: AdmissionLimit) -> Self {
        self.admission.push(limit);
        self
    }
}
