//! A simulation of RabbitMQ's routing over the declarations: work queues,
//! dead letters, leases and the delay cascade.

use super::*;

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
