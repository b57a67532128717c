#![allow(clippy::unwrap_used)]
//! The topology as data: exact names and arguments, delay routes, and a
//! simulation of RabbitMQ's routing over the declarations that follows a
//! delayed message through the cascade into its work queue.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use celeriac_schema::topology::{
    level_ttl_ms, ArgValue, Argument, Declaration, ExchangeKind, DEFAULT_DELIVERY_LIMIT,
    DEFAULT_NAMESPACE, DEFAULT_QUEUE, DELAY_LEVELS, DELAY_UNIT_MS, MAX_DELAY,
};
use celeriac_schema::{Error, TaskId, Topology};

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

fn topo() -> Topology {
    Topology::new(DEFAULT_NAMESPACE).unwrap()
}

fn str_arg(name: &'static str, value: &str) -> Argument {
    (name, ArgValue::Str(value.to_owned()))
}

fn int_arg(name: &'static str, value: i64) -> Argument {
    (name, ArgValue::Int(value))
}

/// The bit words of a delay in units, highest level first.
fn bits(units: u64) -> String {
    (0..DELAY_LEVELS)
        .rev()
        .map(|level| if units >> level & 1 == 1 { "1." } else { "0." })
        .collect()
}

// ---- names and arguments -----------------------------------------------------

#[test]
fn names_of_the_default_namespace() {
    let t = topo();
    assert_eq!(t.namespace(), "celeriac");
    assert_eq!(DEFAULT_QUEUE, "default");
    assert_eq!(t.work_exchange(), "celeriac.work");
    assert_eq!(t.work_queue("default"), "celeriac.q.default");
    assert_eq!(t.dead_letter_exchange(), "celeriac.dlx");
    assert_eq!(t.dead_letter_queue("default"), "celeriac.dlq.default");
    assert_eq!(t.delay_exchange(0), "celeriac.delay.00");
    assert_eq!(t.delay_exchange(24), "celeriac.delay.24");
    assert_eq!(t.delay_queue(7), "celeriac.delay.07");
    assert_eq!(t.delay_delivery_exchange(), "celeriac.delay.deliver");
    assert_eq!(t.events_exchange(), "celeriac.events");
    assert_eq!(t.control_exchange(), "celeriac.control");
    let id: TaskId = "01936b2e-8f40-7a1c-9d2e-3f4a5b6c7d8e".parse().unwrap();
    assert_eq!(
        t.lease_queue(&id),
        "celeriac.lease.01936b2e-8f40-7a1c-9d2e-3f4a5b6c7d8e"
    );
}

#[test]
fn delay_constants() {
    assert_eq!(DELAY_UNIT_MS, 100);
    assert_eq!(DELAY_LEVELS, 25);
    assert_eq!(MAX_DELAY, Duration::from_millis(3_355_443_100));
    assert!(MAX_DELAY > Duration::from_millis(38 * DAY_MS));
    assert!(MAX_DELAY < Duration::from_millis(39 * DAY_MS));
    assert_eq!(level_ttl_ms(0), 100);
    assert_eq!(level_ttl_ms(4), 1_600);
    assert_eq!(level_ttl_ms(24), 1_677_721_600);
}

#[test]
fn work_queue_arguments() {
    assert_eq!(DEFAULT_DELIVERY_LIMIT, 5);
    assert_eq!(
        topo().work_queue_arguments("default"),
        vec![
            str_arg("x-queue-type", "quorum"),
            int_arg("x-delivery-limit", 5),
            str_arg("x-dead-letter-exchange", "celeriac.dlx"),
            str_arg("x-dead-letter-routing-key", "default"),
            str_arg("x-dead-letter-strategy", "at-least-once"),
            str_arg("x-overflow", "reject-publish"),
        ]
    );
    let strict = topo().with_delivery_limit(2);
    assert_eq!(strict.delivery_limit(), 2);
    assert_eq!(
        strict.work_queue_arguments("q")[1],
        int_arg("x-delivery-limit", 2)
    );
    // At least one delivery, always.
    assert_eq!(topo().with_delivery_limit(0).delivery_limit(), 1);
}

#[test]
fn dead_letter_and_delay_queue_arguments() {
    let t = topo();
    assert_eq!(
        t.dead_letter_queue_arguments(),
        vec![
            str_arg("x-queue-type", "quorum"),
            int_arg("x-delivery-limit", 2_147_483_647)
        ]
    );
    assert_eq!(
        t.delay_queue_arguments(0),
        vec![
            str_arg("x-queue-type", "quorum"),
            int_arg("x-message-ttl", 100),
            str_arg("x-dead-letter-exchange", "celeriac.delay.deliver"),
            str_arg("x-dead-letter-strategy", "at-least-once"),
            str_arg("x-overflow", "reject-publish"),
        ]
    );
    assert_eq!(
        t.delay_queue_arguments(5),
        vec![
            str_arg("x-queue-type", "quorum"),
            int_arg("x-message-ttl", 3_200),
            str_arg("x-dead-letter-exchange", "celeriac.delay.04"),
            str_arg("x-dead-letter-strategy", "at-least-once"),
            str_arg("x-overflow", "reject-publish"),
        ]
    );
}

#[test]
fn lease_queue_arguments() {
    let t = topo();
    assert_eq!(
        t.lease_queue_arguments("default", Duration::from_secs(600)),
        vec![
            str_arg("x-queue-type", "quorum"),
            int_arg("x-message-ttl", 600_000),
            str_arg("x-dead-letter-exchange", "celeriac.work"),
            str_arg("x-dead-letter-routing-key", "default"),
            str_arg("x-dead-letter-strategy", "at-least-once"),
            str_arg("x-overflow", "reject-publish"),
            int_arg("x-expires", 2_400_000),
        ]
    );
    // A short lease still leaves the queue a minute to live.
    let short = t.lease_queue_arguments("default", Duration::from_secs(5));
    assert_eq!(short.last().unwrap(), &int_arg("x-expires", 60_000));
}

#[test]
fn shared_declarations_are_complete_and_ordered() {
    let decls = topo().shared_declarations();
    assert_eq!(decls.len(), 5 + 25 + 3 * 25);
    let exchanges: Vec<(String, ExchangeKind)> = decls
        .iter()
        .filter_map(|d| match d {
            Declaration::Exchange { name, kind } => Some((name.clone(), *kind)),
            _ => None,
        })
        .collect();
    assert_eq!(
        exchanges[..5],
        [
            ("celeriac.work".to_owned(), ExchangeKind::Direct),
            ("celeriac.dlx".to_owned(), ExchangeKind::Direct),
            ("celeriac.delay.deliver".to_owned(), ExchangeKind::Topic),
            ("celeriac.events".to_owned(), ExchangeKind::Topic),
            ("celeriac.control".to_owned(), ExchangeKind::Fanout),
        ]
    );
    for (level, (name, kind)) in exchanges[5..].iter().enumerate() {
        assert_eq!(name, &format!("celeriac.delay.{level:02}"));
        assert_eq!(*kind, ExchangeKind::Topic);
    }
    // Every exchange comes before anything that refers to it.
    let first_binding = decls
        .iter()
        .position(|d| !matches!(d, Declaration::Exchange { .. }))
        .unwrap();
    assert_eq!(first_binding, 30);
    // Level 24's bindings: its queue for a 1 in the first word, level 23
    // for a 0.
    assert!(decls.contains(&Declaration::QueueBinding {
        queue: "celeriac.delay.24".into(),
        exchange: "celeriac.delay.24".into(),
        key: "1.#".into(),
    }));
    assert!(decls.contains(&Declaration::ExchangeBinding {
        source: "celeriac.delay.24".into(),
        destination: "celeriac.delay.23".into(),
        key: "0.#".into(),
    }));
    let stars = "*.".repeat(24);
    assert!(decls.contains(&Declaration::QueueBinding {
        queue: "celeriac.delay.00".into(),
        exchange: "celeriac.delay.00".into(),
        key: format!("{stars}1.#"),
    }));
    assert!(decls.contains(&Declaration::ExchangeBinding {
        source: "celeriac.delay.00".into(),
        destination: "celeriac.delay.deliver".into(),
        key: format!("{stars}0.#"),
    }));
}

#[test]
fn queue_declarations_of_default() {
    let stars = "*.".repeat(25);
    assert_eq!(
        topo().queue_declarations("default").unwrap(),
        vec![
            Declaration::Queue {
                name: "celeriac.dlq.default".into(),
                arguments: vec![
                    str_arg("x-queue-type", "quorum"),
                    int_arg("x-delivery-limit", 2_147_483_647)
                ],
            },
            Declaration::QueueBinding {
                queue: "celeriac.dlq.default".into(),
                exchange: "celeriac.dlx".into(),
                key: "default".into(),
            },
            Declaration::Queue {
                name: "celeriac.q.default".into(),
                arguments: topo().work_queue_arguments("default"),
            },
            Declaration::QueueBinding {
                queue: "celeriac.q.default".into(),
                exchange: "celeriac.work".into(),
                key: "default".into(),
            },
            Declaration::QueueBinding {
                queue: "celeriac.q.default".into(),
                exchange: "celeriac.delay.deliver".into(),
                key: format!("{stars}default"),
            },
        ]
    );
}

#[test]
fn bad_names_are_refused() {
    for bad in [
        "",
        "a#b",
        "a*b",
        "a b",
        ".a",
        "a.",
        "a..b",
        "é",
        &"x".repeat(101),
    ] {
        assert!(
            matches!(
                topo().queue_declarations(bad),
                Err(Error::InvalidName { kind: "queue", .. })
            ),
            "{bad:?}"
        );
        assert!(
            matches!(
                Topology::new(bad),
                Err(Error::InvalidName {
                    kind: "namespace",
                    ..
                })
            ),
            "{bad:?}"
        );
    }
    for good in ["a", "emails.high", "A-b_9", &"x".repeat(100)] {
        assert!(topo().queue_declarations(good).is_ok(), "{good:?}");
    }
}

// ---- delay routes --------------------------------------------------------------

#[test]
fn no_delay_needs_no_delay_route() {
    assert_eq!(topo().delay_route("default", Duration::ZERO).unwrap(), None);
    // Sub-millisecond delays round to zero milliseconds first.
    assert_eq!(
        topo()
            .delay_route("default", Duration::from_micros(999))
            .unwrap(),
        None
    );
}

#[test]
fn one_millisecond_rounds_up_to_one_unit() {
    let route = topo()
        .delay_route("default", Duration::from_millis(1))
        .unwrap()
        .unwrap();
    assert_eq!(route.exchange, "celeriac.delay.00");
    assert_eq!(route.routing_key, format!("{}1.default", "0.".repeat(24)));
    assert_eq!(route.delay, Duration::from_millis(100));
}

#[test]
fn one_hundred_milliseconds_is_exactly_one_unit() {
    let route = topo()
        .delay_route("default", Duration::from_millis(100))
        .unwrap()
        .unwrap();
    assert_eq!(route.exchange, "celeriac.delay.00");
    assert_eq!(route.delay, Duration::from_millis(100));
    let next = topo()
        .delay_route("default", Duration::from_millis(101))
        .unwrap()
        .unwrap();
    assert_eq!(next.exchange, "celeriac.delay.01");
    assert_eq!(next.routing_key, format!("{}1.0.default", "0.".repeat(23)));
    assert_eq!(next.delay, Duration::from_millis(200));
}

#[test]
fn two_and_a_half_seconds_is_25_units() {
    // 25 = 0b11001: levels 4, 3 and 0.
    let route = topo()
        .delay_route("default", Duration::from_millis(2_500))
        .unwrap()
        .unwrap();
    assert_eq!(route.exchange, "celeriac.delay.04");
    assert_eq!(
        route.routing_key,
        "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.1.0.0.1.default"
    );
    assert_eq!(route.delay, Duration::from_millis(2_500));
}

#[test]
fn thirty_days_fit() {
    let route = topo()
        .delay_route("default", Duration::from_millis(30 * DAY_MS))
        .unwrap()
        .unwrap();
    let units = 30 * DAY_MS / 100;
    assert_eq!(units, 25_920_000);
    assert_eq!(route.exchange, "celeriac.delay.24");
    assert_eq!(route.routing_key, format!("{}default", bits(units)));
    assert_eq!(route.delay, Duration::from_millis(30 * DAY_MS));
}

#[test]
fn thirty_nine_days_are_too_long() {
    let err = topo()
        .delay_route("default", Duration::from_millis(39 * DAY_MS))
        .unwrap_err();
    assert_eq!(
        err,
        Error::DelayTooLong {
            requested_ms: 39 * DAY_MS,
            max_ms: 3_355_443_100
        }
    );
}

#[test]
fn the_longest_delay_fits_and_one_millisecond_more_does_not() {
    let route = topo().delay_route("default", MAX_DELAY).unwrap().unwrap();
    assert_eq!(route.exchange, "celeriac.delay.24");
    assert_eq!(route.routing_key, format!("{}default", "1.".repeat(25)));
    assert_eq!(route.delay, MAX_DELAY);
    let over = MAX_DELAY + Duration::from_millis(1);
    assert!(matches!(
        topo().delay_route("default", over),
        Err(Error::DelayTooLong { .. })
    ));
    assert!(matches!(
        topo().delay_route("default", Duration::MAX),
        Err(Error::DelayTooLong { .. })
    ));
}

// ---- a model of RabbitMQ's routing -------------------------------------------------

/// AMQP topic matching: words split on `.`, `*` matches exactly one word,
/// `#` matches zero or more.
fn topic_matches(pattern: &str, key: &str) -> bool {
    fn go(p: &[&str], k: &[&str]) -> bool {
        match p.split_first() {
            None => k.is_empty(),
            Some((&"#", rest)) => (0..=k.len()).any(|skip| go(rest, &k[skip..])),
            Some((&word, rest)) => match k.split_first() {
                Some((&first, k_rest)) => (word == "*" || word == first) && go(rest, k_rest),
                None => false,
            },
        }
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let k: Vec<&str> = key.split('.').collect();
    go(&p, &k)
}

#[test]
fn the_topic_matcher_follows_amqp() {
    assert!(topic_matches("a.b", "a.b"));
    assert!(!topic_matches("a.b", "a.b.c"));
    assert!(topic_matches("*.b", "a.b"));
    assert!(!topic_matches("*.b", "b"));
    assert!(topic_matches("a.#", "a"));
    assert!(topic_matches("a.#", "a.b.c"));
    assert!(topic_matches("#", "anything.at.all"));
    assert!(topic_matches("*.*.1.#", "0.0.1.0.q"));
    assert!(!topic_matches("*.*.1.#", "0.1.0.0.q"));
    assert!(topic_matches("*.*.q.high", "0.1.q.high"));
    assert!(!topic_matches("*.*.q", "0.1.q.high"));
}

enum Destination {
    Queue(String),
    Exchange(String),
}

/// The broker's state after running the declarations.
#[derive(Default)]
struct Broker {
    exchanges: BTreeMap<String, ExchangeKind>,
    queues: BTreeMap<String, Vec<Argument>>,
    bindings: BTreeMap<String, Vec<(String, Destination)>>,
}

impl Broker {
    fn declare(&mut self, decls: &[Declaration]) {
        for d in decls {
            match d {
                Declaration::Exchange { name, kind } => {
                    assert!(self.exchanges.insert(name.clone(), *kind).is_none());
                }
                Declaration::Queue { name, arguments } => {
                    for (arg, value) in arguments {
                        if *arg == "x-dead-letter-exchange" {
                            let ArgValue::Str(dlx) = value else {
                                panic!("{name}: {arg} is not a string");
                            };
                            assert!(self.exchanges.contains_key(dlx), "{name}: unknown {dlx}");
                        }
                    }
                    assert!(self
                        .queues
                        .insert(name.clone(), arguments.clone())
                        .is_none());
                }
                Declaration::QueueBinding {
                    queue,
                    exchange,
                    key,
                } => {
                    assert!(self.queues.contains_key(queue), "unknown queue {queue}");
                    assert!(self.exchanges.contains_key(exchange), "unknown {exchange}");
                    self.bindings
                        .entry(exchange.clone())
                        .or_default()
                        .push((key.clone(), Destination::Queue(queue.clone())));
                }
                Declaration::ExchangeBinding {
                    source,
                    destination,
                    key,
                } => {
                    assert!(self.exchanges.contains_key(source), "unknown {source}");
                    assert!(
                        self.exchanges.contains_key(destination),
                        "unknown {destination}"
                    );
                    self.bindings
                        .entry(source.clone())
                        .or_default()
                        .push((key.clone(), Destination::Exchange(destination.clone())));
                }
            }
        }
    }

    /// The queues a message published to `exchange` with `key` lands in.
    fn route(&self, exchange: &str, key: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let kind = self.exchanges[exchange];
        for (binding, dest) in self.bindings.get(exchange).into_iter().flatten() {
            let hit = match kind {
                ExchangeKind::Direct => binding == key,
                ExchangeKind::Topic => topic_matches(binding, key),
                ExchangeKind::Fanout => true,
            };
            if hit {
                match dest {
                    Destination::Queue(q) => {
                        out.insert(q.clone());
                    }
                    Destination::Exchange(e) => out.extend(self.route(e, key)),
                }
            }
        }
        out
    }

    fn arg(&self, queue: &str, name: &str) -> Option<&ArgValue> {
        self.queues[queue]
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
    }

    /// Follows a message from its first publish until it rests in a queue
    /// without a TTL: the queue and the total time spent in TTL'd queues.
    fn deliver(&self, exchange: &str, key: &str) -> (String, u64) {
        let mut total = 0;
        let mut key = key.to_owned();
        let mut queues = self.route(exchange, &key);
        for _ in 0..=DELAY_LEVELS + 1 {
            assert_eq!(queues.len(), 1, "{key} reached {queues:?}");
            let queue = queues.into_iter().next().unwrap();
            let Some(ArgValue::Int(ttl)) = self.arg(&queue, "x-message-ttl") else {
                return (queue, total);
            };
            total += u64::try_from(*ttl).unwrap();
            let Some(ArgValue::Str(dlx)) = self.arg(&queue, "x-dead-letter-exchange") else {
                panic!("{queue} expires messages into nothing");
            };
            if let Some(ArgValue::Str(k)) = self.arg(&queue, "x-dead-letter-routing-key") {
                key = k.clone();
            }
            queues = self.route(dlx, &key);
        }
        panic!("{key} never left the delay cascade");
    }
}

const QUEUES: [&str; 4] = ["default", "emails", "emails.high", "a.b.c.d"];

fn broker() -> Broker {
    let t = topo();
    let mut broker = Broker::default();
    broker.declare(&t.shared_declarations());
    for q in QUEUES {
        broker.declare(&t.queue_declarations(q).unwrap());
    }
    broker
}

#[test]
fn immediate_tasks_reach_only_their_work_queue() {
    let b = broker();
    for q in QUEUES {
        assert_eq!(
            b.deliver("celeriac.work", q),
            (format!("celeriac.q.{q}"), 0)
        );
    }
    // No binding, no queue: mandatory publishing turns this into an error.
    assert!(b.route("celeriac.work", "nobody").is_empty());
}

#[test]
fn dead_letters_reach_only_their_dead_letter_queue() {
    let b = broker();
    for q in QUEUES {
        assert_eq!(
            b.route("celeriac.dlx", q),
            BTreeSet::from([format!("celeriac.dlq.{q}")])
        );
        // And the broker dead-letters there too (delivery limit).
        let work = format!("celeriac.q.{q}");
        let Some(ArgValue::Str(dlx)) = b.arg(&work, "x-dead-letter-exchange") else {
            panic!()
        };
        let Some(ArgValue::Str(key)) = b.arg(&work, "x-dead-letter-routing-key") else {
            panic!()
        };
        assert_eq!(
            b.route(dlx, key),
            BTreeSet::from([format!("celeriac.dlq.{q}")])
        );
    }
}

#[test]
fn an_expired_lease_returns_the_task_to_its_work_queue() {
    let t = topo();
    let mut b = broker();
    let id = TaskId::new();
    let lease = t.lease_queue(&id);
    b.declare(&[Declaration::Queue {
        name: lease.clone(),
        arguments: t.lease_queue_arguments("emails", Duration::from_secs(60)),
    }]);
    let Some(ArgValue::Str(dlx)) = b.arg(&lease, "x-dead-letter-exchange") else {
        panic!()
    };
    let Some(ArgValue::Str(key)) = b.arg(&lease, "x-dead-letter-routing-key") else {
        panic!()
    };
    assert_eq!(
        b.route(dlx, key),
        BTreeSet::from(["celeriac.q.emails".to_owned()])
    );
}

fn assert_cascade(b: &Broker, queue: &str, delay: Duration) {
    let route = topo().delay_route(queue, delay).unwrap().unwrap();
    let (landed, total) = b.deliver(&route.exchange, &route.routing_key);
    assert_eq!(landed, format!("celeriac.q.{queue}"), "{delay:?}");
    assert_eq!(Duration::from_millis(total), route.delay, "{delay:?}");
    let ms = u64::try_from(delay.as_millis()).unwrap();
    assert_eq!(
        total,
        ms.div_ceil(DELAY_UNIT_MS) * DELAY_UNIT_MS,
        "{delay:?}"
    );
}

#[test]
fn the_cascade_delivers_after_the_rounded_delay() {
    let b = broker();
    for ms in [
        1,
        99,
        100,
        101,
        2_500,
        60_000,
        3_600_000,
        30 * DAY_MS,
        3_355_443_100,
    ] {
        for q in QUEUES {
            assert_cascade(&b, q, Duration::from_millis(ms));
        }
    }
}

#[test]
fn the_cascade_delivers_every_small_delay_and_every_level() {
    let b = broker();
    for units in 1..=600u64 {
        assert_cascade(&b, "emails.high", Duration::from_millis(units * 100));
    }
    for level in 0..DELAY_LEVELS {
        let one_level = Duration::from_millis(level_ttl_ms(level));
        assert_cascade(&b, "default", one_level);
        assert_cascade(&b, "default", one_level - Duration::from_millis(1));
    }
}

#[test]
fn the_cascade_delivers_random_delays() {
    let b = broker();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..300 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let ms = state % MAX_DELAY.as_millis() as u64 + 1;
        assert_cascade(
            &b,
            QUEUES[(state >> 40) as usize % QUEUES.len()],
            Duration::from_millis(ms),
        );
    }
}

#[test]
fn a_delayed_message_visits_one_queue_per_set_bit() {
    let b = broker();
    let route = topo()
        .delay_route("default", Duration::from_millis(2_500))
        .unwrap()
        .unwrap();
    // Walk by hand: 25 units = levels 4, 3, 0.
    let mut visited = Vec::new();
    let mut queues = b.route(&route.exchange, &route.routing_key);
    while let Some(q) = queues.iter().next().cloned() {
        visited.push(q.clone());
        let Some(ArgValue::Str(dlx)) = b.arg(&q, "x-dead-letter-exchange") else {
            break;
        };
        if b.arg(&q, "x-message-ttl").is_none() {
            break;
        }
        queues = b.route(dlx, &route.routing_key);
    }
    assert_eq!(
        visited,
        [
            "celeriac.delay.04",
            "celeriac.delay.03",
            "celeriac.delay.00",
            "celeriac.q.default"
        ]
    );
}
