//! Exact names, constants, queue arguments and declarations, and refused
//! names.

use super::*;

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
