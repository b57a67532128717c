#![allow(clippy::unwrap_used)]
//! Fair queues on the wire: the tenant → shard routing every producer must
//! reproduce (golden vectors from an independent FNV-1a 64 computation),
//! the shard queues' names, arguments and bindings, and bad input.

use std::time::Duration;

use celeriac_schema::fair::{
    fnv1a64, parse_shards, shard_name, shard_of, validate_shards, validate_tenant,
};
use celeriac_schema::topology::{Declaration, DELAY_LEVELS};
use celeriac_schema::{Error, Topology};

/// (tenant, FNV-1a 64 of its UTF-8 bytes, shard of 8, shard of 16, shard of 256).
const VECTORS: &[(&str, u64, u16, u16, u16)] = &[
    ("", 0xcbf2_9ce4_8422_2325, 5, 5, 37),
    ("a", 0xaf63_dc4c_8601_ec8c, 4, 12, 140),
    ("acme", 0x0724_d383_f4f6_de0f, 7, 15, 15),
    ("globex", 0x7fc1_2157_b54b_b22e, 6, 14, 46),
    ("initech", 0x5e65_5c2d_2050_ac41, 1, 1, 65),
    ("tenant-42", 0x2944_b77b_49f2_4de2, 2, 2, 226),
    ("Zürich GmbH", 0xaf00_47d6_ab76_6712, 2, 2, 18),
];

#[test]
fn tenants_route_to_the_golden_shards() {
    for &(tenant, hash, of8, of16, of256) in VECTORS {
        assert_eq!(fnv1a64(tenant.as_bytes()), hash, "hash of {tenant:?}");
        assert_eq!(shard_of(tenant, 8), of8, "{tenant:?} of 8");
        assert_eq!(shard_of(tenant, 16), of16, "{tenant:?} of 16");
        assert_eq!(shard_of(tenant, 256), of256, "{tenant:?} of 256");
        assert_eq!(shard_of(tenant, 1), 0);
    }
}

#[test]
fn a_fair_queue_routes_tenants_to_their_shard_and_the_rest_to_the_plain_queue() {
    let topo = Topology::new("shop")
        .unwrap()
        .with_fair_queue("default", 8)
        .unwrap();
    assert_eq!(topo.route_name("default", Some("acme")), "default.f.7");
    assert_eq!(topo.route_name("default", Some("initech")), "default.f.1");
    assert_eq!(topo.route_name("default", None), "default");
    // Another queue is not fair: the tenant changes nothing.
    assert_eq!(topo.route_name("emails", Some("acme")), "emails");
    assert_eq!(
        topo.work_queue(&shard_name("default", 7)),
        "shop.q.default.f.7"
    );
}

#[test]
fn shards_are_declared_like_the_work_queue_and_dead_letter_into_its_dlq() {
    let topo = Topology::new("shop")
        .unwrap()
        .with_fair_queue("default", 4)
        .unwrap();
    let declarations = topo.queue_declarations("default").unwrap();
    let plain = Topology::new("shop")
        .unwrap()
        .queue_declarations("default")
        .unwrap();
    assert_eq!(
        declarations[..plain.len()],
        plain[..],
        "the plain queue comes first, unchanged"
    );
    assert_eq!(declarations.len(), plain.len() + 4 * 3);
    for shard in 0..4u16 {
        let name = format!("default.f.{shard}");
        let queue = format!("shop.q.{name}");
        assert!(declarations.contains(&Declaration::Queue {
            name: queue.clone(),
            // Same arguments as the work queue: quorum, delivery limit,
            // dead letters into the logical queue's DLQ.
            arguments: topo.work_queue_arguments("default"),
        }));
        assert!(declarations.contains(&Declaration::QueueBinding {
            queue: queue.clone(),
            exchange: "shop.work".into(),
            key: name.clone(),
        }));
        assert!(declarations.contains(&Declaration::QueueBinding {
            queue: queue.clone(),
            exchange: "shop.delay.deliver".into(),
            key: format!("{}{name}", "*.".repeat(DELAY_LEVELS as usize)),
        }));
    }
}

#[test]
fn a_delayed_fair_task_comes_back_to_its_shard() {
    let topo = Topology::new("shop")
        .unwrap()
        .with_fair_queue("default", 8)
        .unwrap();
    let target = topo.route_name("default", Some("acme"));
    let route = topo
        .delay_route(&target, Duration::from_millis(1500))
        .unwrap()
        .unwrap();
    // The last word names the shard; the delivery exchange's binding for
    // the shard (one `*` per level, then the name) matches it.
    let words: Vec<&str> = route.routing_key.split('.').collect();
    assert_eq!(words.len(), DELAY_LEVELS as usize + 3);
    assert_eq!(words[DELAY_LEVELS as usize..], ["default", "f", "7"]);
}

#[test]
fn bad_shard_counts_and_tenants_are_refused_with_the_reason() {
    let zero = Topology::new("shop").unwrap().with_fair_queue("default", 0);
    assert!(
        matches!(&zero, Err(Error::InvalidShards { shards: 0, .. })),
        "{zero:?}"
    );
    assert!(zero.unwrap_err().to_string().contains("at least 1 shard"));
    assert!(validate_shards("default", 257).is_err());
    assert_eq!(validate_shards("default", 256).unwrap(), 256);
    assert!(Topology::new("shop")
        .unwrap()
        .with_fair_queue("a#b", 8)
        .is_err());
    assert!(parse_shards("default", b"0").is_err());
    assert!(parse_shards("default", b"-1").is_err());
    assert_eq!(parse_shards("default", b"8").unwrap(), 8);

    let empty = validate_tenant("").unwrap_err();
    assert!(empty.to_string().contains("must not be empty"), "{empty}");
    let long = validate_tenant(&"t".repeat(129)).unwrap_err();
    assert!(long.to_string().contains("at most 128 bytes"), "{long}");
    assert!(validate_tenant(&"t".repeat(128)).is_ok());
    // 64 two-byte characters are 128 bytes; one more is too many.
    assert!(validate_tenant(&"é".repeat(64)).is_ok());
    assert!(validate_tenant(&"é".repeat(65)).is_err());
    assert!(validate_tenant("a\nb").is_err());
}

#[test]
fn the_tenant_travels_in_the_envelope_and_is_left_out_when_unset() {
    let mut env = celeriac_schema::Envelope::new("ping", rmpv::Value::Nil);
    let plain = celeriac_schema::encode(&env).unwrap();
    env.tenant = Some("acme".into());
    let bytes = celeriac_schema::encode(&env).unwrap();
    assert!(bytes.len() > plain.len());
    assert_eq!(
        celeriac_schema::decode(&bytes).unwrap().tenant.as_deref(),
        Some("acme")
    );
    assert_eq!(celeriac_schema::decode(&plain).unwrap().tenant, None);
}
