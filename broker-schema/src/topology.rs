//! The broker topology as data: every exchange, queue, argument and binding
//! a namespace needs, and the routing of delayed messages.
//!
//! Declaring it is the producer's and worker's job; this module only says
//! what to declare, so that both (and implementations in other languages)
//! declare exactly the same thing.
//!
//! # Delays
//!
//! Countdowns, ETAs and retry backoff wait in the broker, in a binary cascade
//! of [`DELAY_LEVELS`] quorum queues. Level `k` holds messages for
//! `2^k * DELAY_UNIT_MS` milliseconds (a per-queue TTL, so every message in a
//! level expires in arrival order and none blocks another), then
//! dead-letters them into the exchange of level `k - 1`. A delayed message's
//! routing key spells the delay in units as one word per level, highest
//! first, followed by the logical queue name: `0.0.….1.0.1.default`. Each
//! level's topic exchange routes a `1` at its position into its queue and a
//! `0` on to the next level down; after level 0 the delivery exchange routes
//! the message by its queue name into the work queue. No plugin, no consumer
//! and no worker memory is involved while a message waits.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::task_id::TaskId;

/// Default namespace prefix.
pub const DEFAULT_NAMESPACE: &str = "celeriac";
/// Default logical work queue.
pub const DEFAULT_QUEUE: &str = "default";
/// Default `x-delivery-limit` of work queues: redeliveries a message may
/// have (after a crashed worker or a requeue) before the broker
/// dead-letters it; a message is delivered at most limit + 1 times.
pub const DEFAULT_DELIVERY_LIMIT: u32 = 5;
/// `x-delivery-limit` of dead-letter queues: in effect none. Reading a DLQ
/// returns its messages with `basic.nack`, which quorum queues may count
/// as redeliveries, and RabbitMQ 4 applies a default limit of 20 to a
/// queue that sets none: past it, a dead letter with nowhere to go would be
/// dropped. `-1`, RabbitMQ 4's "no limit", drops a message at its first
/// return on RabbitMQ 3, so the limit is the largest value both accept.
pub const DEAD_LETTER_DELIVERY_LIMIT: u32 = i32::MAX as u32;
/// Granularity of broker-side delays, in milliseconds.
pub const DELAY_UNIT_MS: u64 = 100;
/// Number of delay levels; the longest delay is `(2^DELAY_LEVELS - 1)` units
/// (about 38.8 days).
pub const DELAY_LEVELS: u32 = 25;

/// The longest delay the cascade can hold.
pub const MAX_DELAY: Duration = Duration::from_millis(((1u64 << DELAY_LEVELS) - 1) * DELAY_UNIT_MS);

/// The kind of an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeKind {
    /// Routes on the exact routing key.
    Direct,
    /// Routes on dotted patterns.
    Topic,
    /// Routes to every bound queue.
    Fanout,
}

/// A queue or exchange argument value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgValue {
    /// A string argument.
    Str(String),
    /// An integer argument.
    Int(i64),
}

/// A queue or exchange argument: name and value.
pub type Argument = (&'static str, ArgValue);

/// One thing to declare on the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Declaration {
    /// A durable exchange.
    Exchange {
        /// Exchange name.
        name: String,
        /// Exchange kind.
        kind: ExchangeKind,
    },
    /// A durable queue.
    Queue {
        /// Queue name.
        name: String,
        /// Its arguments (`x-queue-type` and friends).
        arguments: Vec<Argument>,
    },
    /// A queue bound to an exchange.
    QueueBinding {
        /// The queue.
        queue: String,
        /// The exchange.
        exchange: String,
        /// The binding key.
        key: String,
    },
    /// An exchange bound to another exchange.
    ExchangeBinding {
        /// Messages flow from here...
        source: String,
        /// ...to here.
        destination: String,
        /// The binding key.
        key: String,
    },
}

/// Where to publish a delayed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelayRoute {
    /// The delay exchange of the highest level the delay needs.
    pub exchange: String,
    /// The delay in units, one word per level, then the queue name.
    pub routing_key: String,
    /// The delay actually applied (the requested one rounded up to the unit).
    pub delay: Duration,
}

/// All names of one namespace.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use celeriac_schema::Topology;
///
/// let topo = Topology::new("shop").unwrap();
/// assert_eq!(topo.work_queue("emails"), "shop.q.emails");
/// assert_eq!(topo.dead_letter_queue("emails"), "shop.dlq.emails");
///
/// let route = topo.delay_route("emails", Duration::from_millis(250)).unwrap().unwrap();
/// assert_eq!(route.exchange, "shop.delay.01");
/// assert!(route.routing_key.ends_with(".1.1.emails"));
/// assert_eq!(route.delay, Duration::from_millis(300));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    namespace: String,
    delivery_limit: u32,
    /// Fair logical queues and their shard counts (section 21).
    fair: BTreeMap<String, u16>,
    leader_locator: Option<LeaderLocator>,
}

/// Where a cluster places the leader of a new quorum queue
/// (`x-queue-leader-locator`, RabbitMQ 3.10+).
///
/// # Examples
///
/// ```
/// use celeriac_schema::topology::{ArgValue, LeaderLocator};
/// use celeriac_schema::Topology;
///
/// let topo = Topology::new("shop").unwrap().with_leader_locator(LeaderLocator::Balanced);
/// let args = topo.work_queue_arguments("emails");
/// assert!(args.contains(&("x-queue-leader-locator", ArgValue::Str("balanced".into()))));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaderLocator {
    /// On the node the declaring client is connected to.
    ClientLocal,
    /// On the node leading the fewest quorum queues.
    Balanced,
}

impl LeaderLocator {
    /// The argument's value.
    pub fn as_str(self) -> &'static str {
        match self {
            LeaderLocator::ClientLocal => "client-local",
            LeaderLocator::Balanced => "balanced",
        }
    }
}

impl Topology {
    /// The topology of `namespace`, with the default delivery limit.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] unless the namespace is 1 to 100 characters of
    /// ASCII letters, digits, `-`, `_` and `.`.
    pub fn new(namespace: impl Into<String>) -> Result<Self> {
        let namespace = namespace.into();
        validate_name("namespace", &namespace)?;
        Ok(Topology {
            namespace,
            delivery_limit: DEFAULT_DELIVERY_LIMIT,
            fair: BTreeMap::new(),
            leader_locator: None,
        })
    }

    /// Declares work and dead-letter queues with `x-queue-leader-locator`
    /// (default: none, the broker's own setting, normally the declaring
    /// client's node). Like the delivery limit, all declarers must agree and
    /// an existing queue cannot change it: for a namespace already
    /// declared, set the `queue-leader-locator` policy instead.
    pub fn with_leader_locator(mut self, locator: LeaderLocator) -> Self {
        self.leader_locator = Some(locator);
        self
    }

    /// The leader locator work and dead-letter queues are declared with.
    pub fn leader_locator(&self) -> Option<LeaderLocator> {
        self.leader_locator
    }

    /// `args` with the leader locator, when one is set.
    fn located(&self, mut args: Vec<Argument>) -> Vec<Argument> {
        if let Some(locator) = self.leader_locator {
            args.push((
                "x-queue-leader-locator",
                ArgValue::Str(locator.as_str().into()),
            ));
        }
        args
    }

    /// Sets the work queues' `x-delivery-limit`.
    ///
    /// All declarers of a namespace must agree on it: the broker refuses a
    /// redeclaration with other arguments.
    pub fn with_delivery_limit(mut self, limit: u32) -> Self {
        self.delivery_limit = limit.max(1);
        self
    }

    /// Makes logical queue `queue` fair with `shards` shard queues (see
    /// [`crate::fair`]): its declarations include the shards, and
    /// [`Topology::route_name`] sends a task with a tenant to its shard.
    /// All producers and workers of the queue must agree on the count.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for a bad queue name, [`Error::InvalidShards`]
    /// for a count of 0 or above [`crate::fair::MAX_SHARDS`].
    ///
    /// # Examples
    ///
    /// ```
    /// use celeriac_schema::Topology;
    ///
    /// let topo = Topology::new("shop").unwrap().with_fair_queue("default", 8).unwrap();
    /// assert_eq!(topo.fair_shards("default"), Some(8));
    /// assert_eq!(topo.route_name("default", None), "default");
    /// assert!(topo.route_name("default", Some("acme")).starts_with("default.f."));
    /// assert!(Topology::new("shop").unwrap().with_fair_queue("default", 0).is_err());
    /// ```
    pub fn with_fair_queue(mut self, queue: &str, shards: u64) -> Result<Self> {
        validate_name("queue", queue)?;
        let shards = crate::fair::validate_shards(queue, shards)?;
        self.fair.insert(queue.to_owned(), shards);
        Ok(self)
    }

    /// The shard count of a fair queue; `None` for a plain one.
    pub fn fair_shards(&self, queue: &str) -> Option<u16> {
        self.fair.get(queue).copied()
    }

    /// The routing name a task of `queue` for `tenant` is published with:
    /// its shard's `{queue}.f.{i}` when the queue is fair and the task has
    /// a tenant, else `queue` itself. Work queue, delay route and bindings
    /// all follow from it.
    pub fn route_name<'a>(&self, queue: &'a str, tenant: Option<&str>) -> Cow<'a, str> {
        match (self.fair_shards(queue), tenant) {
            (Some(shards), Some(tenant)) => Cow::Owned(crate::fair::shard_name(
                queue,
                crate::fair::shard_of(tenant, shards),
            )),
            _ => Cow::Borrowed(queue),
        }
    }

    /// The namespace prefix.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The work queues' delivery limit.
    pub fn delivery_limit(&self) -> u32 {
        self.delivery_limit
    }

    /// Direct exchange that routes tasks to work queues by logical name.
    pub fn work_exchange(&self) -> String {
        format!("{}.work", self.namespace)
    }

    /// The broker queue of a logical work queue.
    pub fn work_queue(&self, queue: &str) -> String {
        format!("{}.q.{queue}", self.namespace)
    }

    /// Direct exchange for dead letters, routed by logical queue name.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dlx", self.namespace)
    }

    /// The dead-letter queue of a logical work queue.
    pub fn dead_letter_queue(&self, queue: &str) -> String {
        format!("{}.dlq.{queue}", self.namespace)
    }

    /// Topic exchange of delay level `level`.
    pub fn delay_exchange(&self, level: u32) -> String {
        format!("{}.delay.{level:02}", self.namespace)
    }

    /// Queue of delay level `level`.
    pub fn delay_queue(&self, level: u32) -> String {
        format!("{}.delay.{level:02}", self.namespace)
    }

    /// Topic exchange that hands expired delays to their work queue.
    pub fn delay_delivery_exchange(&self) -> String {
        format!("{}.delay.deliver", self.namespace)
    }

    /// Topic exchange for task lifecycle events.
    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.namespace)
    }

    /// Fanout exchange for control messages (revoke, ping).
    pub fn control_exchange(&self) -> String {
        format!("{}.control", self.namespace)
    }

    /// Queue that parks a copy of a long-running task while its worker holds
    /// a lease on it.
    pub fn lease_queue(&self, task: &TaskId) -> String {
        format!("{}.lease.{task}", self.namespace)
    }

    /// Arguments of a work queue: quorum, explicit delivery limit,
    /// at-least-once dead-lettering into its dead-letter queue.
    pub fn work_queue_arguments(&self, queue: &str) -> Vec<Argument> {
        self.located(vec![
            ("x-queue-type", ArgValue::Str("quorum".into())),
            (
                "x-delivery-limit",
                ArgValue::Int(i64::from(self.delivery_limit)),
            ),
            (
                "x-dead-letter-exchange",
                ArgValue::Str(self.dead_letter_exchange()),
            ),
            ("x-dead-letter-routing-key", ArgValue::Str(queue.to_owned())),
            (
                "x-dead-letter-strategy",
                ArgValue::Str("at-least-once".into()),
            ),
            ("x-overflow", ArgValue::Str("reject-publish".into())),
        ])
    }

    /// Arguments of a dead-letter queue.
    pub fn dead_letter_queue_arguments(&self) -> Vec<Argument> {
        self.located(vec![
            ("x-queue-type", ArgValue::Str("quorum".into())),
            (
                "x-delivery-limit",
                ArgValue::Int(i64::from(DEAD_LETTER_DELIVERY_LIMIT)),
            ),
        ])
    }

    /// Arguments of delay level `level`'s queue.
    pub fn delay_queue_arguments(&self, level: u32) -> Vec<Argument> {
        let next = match level {
            0 => self.delay_delivery_exchange(),
            _ => self.delay_exchange(level - 1),
        };
        vec![
            ("x-queue-type", ArgValue::Str("quorum".into())),
            ("x-message-ttl", ArgValue::Int(level_ttl_ms(level) as i64)),
            ("x-dead-letter-exchange", ArgValue::Str(next)),
            (
                "x-dead-letter-strategy",
                ArgValue::Str("at-least-once".into()),
            ),
            ("x-overflow", ArgValue::Str("reject-publish".into())),
        ]
    }

    /// Arguments of a lease queue: it holds one copy of a running task for
    /// `lease`, then hands it back to the work queue if nobody renewed it.
    pub fn lease_queue_arguments(&self, queue: &str, lease: Duration) -> Vec<Argument> {
        let ttl = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        vec![
            ("x-queue-type", ArgValue::Str("quorum".into())),
            ("x-message-ttl", ArgValue::Int(ttl)),
            (
                "x-dead-letter-exchange",
                ArgValue::Str(self.work_exchange()),
            ),
            ("x-dead-letter-routing-key", ArgValue::Str(queue.to_owned())),
            (
                "x-dead-letter-strategy",
                ArgValue::Str("at-least-once".into()),
            ),
            ("x-overflow", ArgValue::Str("reject-publish".into())),
            // Outlives the lease long enough for the copy to expire first.
            (
                "x-expires",
                ArgValue::Int(ttl.saturating_mul(4).max(60_000)),
            ),
        ]
    }

    /// Everything shared by the namespace: exchanges and the delay cascade.
    pub fn shared_declarations(&self) -> Vec<Declaration> {
        let mut out = vec![
            exchange(self.work_exchange(), ExchangeKind::Direct),
            exchange(self.dead_letter_exchange(), ExchangeKind::Direct),
            exchange(self.delay_delivery_exchange(), ExchangeKind::Topic),
            exchange(self.events_exchange(), ExchangeKind::Topic),
            exchange(self.control_exchange(), ExchangeKind::Fanout),
        ];
        for level in 0..DELAY_LEVELS {
            out.push(exchange(self.delay_exchange(level), ExchangeKind::Topic));
        }
        for level in (0..DELAY_LEVELS).rev() {
            let prefix = "*.".repeat((DELAY_LEVELS - 1 - level) as usize);
            out.push(Declaration::Queue {
                name: self.delay_queue(level),
                arguments: self.delay_queue_arguments(level),
            });
            out.push(Declaration::QueueBinding {
                queue: self.delay_queue(level),
                exchange: self.delay_exchange(level),
                key: format!("{prefix}1.#"),
            });
            out.push(Declaration::ExchangeBinding {
                source: self.delay_exchange(level),
                destination: match level {
                    0 => self.delay_delivery_exchange(),
                    _ => self.delay_exchange(level - 1),
                },
                key: format!("{prefix}0.#"),
            });
        }
        out
    }

    /// A work queue, its dead-letter queue and their bindings.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for a queue name that is not 1 to 100
    /// characters of ASCII letters, digits, `-`, `_` and `.`.
    pub fn queue_declarations(&self, queue: &str) -> Result<Vec<Declaration>> {
        validate_name("queue", queue)?;
        let mut out = self.plain_queue_declarations(queue);
        for shard in 0..self.fair_shards(queue).unwrap_or(0) {
            out.extend(self.shard_declarations(queue, shard));
        }
        Ok(out)
    }

    /// Shard `shard` of fair queue `queue`: a work queue named after its
    /// routing name, dead-lettering into the logical queue's dead-letter
    /// queue, bound to the work and delay delivery exchanges.
    pub fn shard_declarations(&self, queue: &str, shard: u16) -> Vec<Declaration> {
        let name = crate::fair::shard_name(queue, shard);
        vec![
            Declaration::Queue {
                name: self.work_queue(&name),
                arguments: self.work_queue_arguments(queue),
            },
            Declaration::QueueBinding {
                queue: self.work_queue(&name),
                exchange: self.work_exchange(),
                key: name.clone(),
            },
            Declaration::QueueBinding {
                queue: self.work_queue(&name),
                exchange: self.delay_delivery_exchange(),
                key: format!("{}{name}", "*.".repeat(DELAY_LEVELS as usize)),
            },
        ]
    }

    fn plain_queue_declarations(&self, queue: &str) -> Vec<Declaration> {
        vec![
            Declaration::Queue {
                name: self.dead_letter_queue(queue),
                arguments: self.dead_letter_queue_arguments(),
            },
            Declaration::QueueBinding {
                queue: self.dead_letter_queue(queue),
                exchange: self.dead_letter_exchange(),
                key: queue.to_owned(),
            },
            Declaration::Queue {
                name: self.work_queue(queue),
                arguments: self.work_queue_arguments(queue),
            },
            Declaration::QueueBinding {
                queue: self.work_queue(queue),
                exchange: self.work_exchange(),
                key: queue.to_owned(),
            },
            Declaration::QueueBinding {
                queue: self.work_queue(queue),
                exchange: self.delay_delivery_exchange(),
                key: format!("{}{queue}", "*.".repeat(DELAY_LEVELS as usize)),
            },
        ]
    }

    /// Where to publish a message for `queue` that must wait `delay`; `None`
    /// when the delay rounds to zero units (publish to the work exchange).
    ///
    /// # Errors
    ///
    /// [`Error::DelayTooLong`] beyond [`MAX_DELAY`].
    pub fn delay_route(&self, queue: &str, delay: Duration) -> Result<Option<DelayRoute>> {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        let units = ms.div_ceil(DELAY_UNIT_MS);
        if units == 0 {
            return Ok(None);
        }
        if units >= 1u64 << DELAY_LEVELS {
            return Err(Error::DelayTooLong {
                requested_ms: ms,
                max_ms: MAX_DELAY.as_millis() as u64,
            });
        }
        let top = 63 - units.leading_zeros();
        let mut key = String::with_capacity(2 * DELAY_LEVELS as usize + queue.len());
        for level in (0..DELAY_LEVELS).rev() {
            key.push(if units >> level & 1 == 1 { '1' } else { '0' });
            key.push('.');
        }
        key.push_str(queue);
        Ok(Some(DelayRoute {
            exchange: self.delay_exchange(top),
            routing_key: key,
            delay: Duration::from_millis(units * DELAY_UNIT_MS),
        }))
    }
}

fn exchange(name: String, kind: ExchangeKind) -> Declaration {
    Declaration::Exchange { name, kind }
}

/// TTL of delay level `level` in milliseconds.
pub fn level_ttl_ms(level: u32) -> u64 {
    (1u64 << level) * DELAY_UNIT_MS
}

/// Checks a namespace, queue or task name.
///
/// # Errors
///
/// [`Error::InvalidName`] with the reason.
///
/// # Examples
///
/// ```
/// use celeriac_schema::topology::validate_name;
///
/// assert!(validate_name("queue", "emails.high").is_ok());
/// assert!(validate_name("queue", "a#b").is_err());
/// assert!(validate_name("queue", "").is_err());
/// ```
pub fn validate_name(kind: &'static str, name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("must not be empty")
    } else if name.len() > 100 {
        Some("must be at most 100 characters")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        Some("may hold only ASCII letters, digits, '-', '_' and '.'")
    } else if name.starts_with('.') || name.ends_with('.') || name.contains("..") {
        Some("must not start or end with '.' or hold empty dotted words")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidName {
            kind,
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}
