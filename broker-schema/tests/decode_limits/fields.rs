//! Field errors name the field: missing, wrong type, nested, duplicated, and
//! the version first.

use super::*;

#[test]
fn every_missing_required_field_is_named() {
    for (name, _) in minimal_pairs() {
        let pairs = minimal_pairs()
            .into_iter()
            .filter(|(k, _)| *k != name)
            .collect();
        let err = decode(&pack(&map(pairs))).unwrap_err();
        assert!(matches!(err, Error::Field { .. }), "{name}: {err:?}");
        assert_eq!(err.field(), Some(name), "{err}");
    }
}

#[test]
fn every_field_of_the_wrong_type_is_named() {
    let fields = [
        "v",
        "id",
        "task",
        "attempt",
        "retry",
        "eta",
        "expires",
        "soft_time_limit_ms",
        "hard_time_limit_ms",
        "priority",
        "idempotency_key",
        "root_id",
        "parent_id",
        "workflow",
        "continuation",
        "meta",
        "created_at",
    ];
    for name in fields {
        let mut pairs: Vec<_> = minimal_pairs()
            .into_iter()
            .filter(|(k, _)| *k != name)
            .collect();
        pairs.push((name, V::Boolean(true)));
        let err = decode(&pack(&map(pairs))).unwrap_err();
        assert!(matches!(err, Error::Field { .. }), "{name}: {err:?}");
        assert_eq!(err.field(), Some(name), "{err}");
    }
}

#[test]
fn nested_fields_are_named_by_dotted_path() {
    let cases: Vec<(V, &str, &str)> = vec![
        (
            map(vec![("max_retries", V::from("5"))]),
            "retry",
            "retry.max_retries",
        ),
        (
            map(vec![("backoff", map(vec![("initial_ms", V::from(-1))]))]),
            "retry",
            "retry.backoff.initial_ms",
        ),
        (
            map(vec![("backoff", map(vec![("jitter", V::from("a"))]))]),
            "retry",
            "retry.backoff.jitter",
        ),
        (
            map(vec![
                ("workflow_id", V::from("nope")),
                ("node_id", V::from("n")),
            ]),
            "workflow",
            "workflow.workflow_id",
        ),
        (
            map(vec![(
                "chain",
                V::Array(vec![
                    map(vec![("task", V::from("a"))]),
                    map(vec![("task", V::from("b")), ("queue", V::from(3))]),
                ]),
            )]),
            "continuation",
            "continuation.chain[1].queue",
        ),
        (
            map(vec![(
                "group",
                map(vec![
                    ("group_id", V::from(ID)),
                    ("index", V::from(-1)),
                    ("size", V::from(2)),
                ]),
            )]),
            "continuation",
            "continuation.group.index",
        ),
        (
            map(vec![(
                "chord",
                map(vec![
                    ("chord_id", V::from(ID)),
                    (
                        "callback",
                        map(vec![
                            ("task", V::from("cb")),
                            ("retry", map(vec![("max_retries", V::Nil)])),
                        ]),
                    ),
                ]),
            )]),
            "continuation",
            "continuation.chord.callback.retry.max_retries",
        ),
        (map(vec![("tenant", V::from(1))]), "meta", "meta.tenant"),
    ];
    for (value, at, field) in cases {
        let mut pairs = minimal_pairs();
        pairs.push((at, value));
        let err = decode(&pack(&map(pairs))).unwrap_err();
        assert_eq!(err.field(), Some(field), "{err}");
    }
}

#[test]
fn a_duplicate_key_is_named() {
    let mut pairs = minimal_pairs();
    pairs.push(("created_at", V::from(5)));
    let err = decode(&pack(&map(pairs))).unwrap_err();
    assert_eq!(err.field(), Some("created_at"), "{err}");
}

#[test]
fn a_body_that_is_not_a_map_is_named_as_the_envelope_itself() {
    for value in [
        V::from("ping"),
        V::from(1),
        V::Nil,
        V::Array(vec![V::from(1)]),
    ] {
        let err = decode(&pack(&value)).unwrap_err();
        assert_eq!(err.field(), Some("."), "{value}: {err}");
    }
}

#[test]
fn the_version_is_checked_before_other_fields() {
    let pairs = vec![("v", V::from(7)), ("task", V::from(1))];
    let err = decode(&pack(&map(pairs))).unwrap_err();
    assert_eq!(
        err,
        Error::UnsupportedVersion {
            found: 7,
            supported: 1
        }
    );
    assert_eq!(err.field(), Some("v"));
    for bad in [V::from(0), V::from(2), V::from(u64::from(u32::MAX))] {
        let mut pairs = minimal_pairs();
        pairs[0].1 = bad;
        let err = decode(&pack(&map(pairs))).unwrap_err();
        assert!(matches!(err, Error::UnsupportedVersion { .. }), "{err:?}");
    }
    let mut pairs = minimal_pairs();
    pairs[0].1 = V::from("1");
    assert_eq!(decode(&pack(&map(pairs))).unwrap_err().field(), Some("v"));
}

#[test]
fn nil_means_absent_only_for_optional_fields() {
    let optional = [
        "eta",
        "expires",
        "soft_time_limit_ms",
        "hard_time_limit_ms",
        "idempotency_key",
        "root_id",
        "parent_id",
        "workflow",
    ];
    for name in optional {
        let mut pairs = minimal_pairs();
        pairs.push((name, V::Nil));
        assert!(decode(&pack(&map(pairs))).is_ok(), "{name}");
    }
    for name in ["attempt", "retry", "priority", "continuation", "meta"] {
        let mut pairs = minimal_pairs();
        pairs.push((name, V::Nil));
        let err = decode(&pack(&map(pairs))).unwrap_err();
        assert_eq!(err.field(), Some(name), "{err}");
    }
}

#[test]
fn unknown_fields_are_ignored_at_every_level() {
    let mut pairs = minimal_pairs();
    pairs.push(("zzz", map(vec![("deep", nested_arrays(5))])));
    pairs.push((
        "retry",
        map(vec![
            ("later", V::from(1)),
            ("backoff", map(vec![("x", V::Nil)])),
        ]),
    ));
    pairs.push((
        "continuation",
        map(vec![
            (
                "chain",
                V::Array(vec![map(vec![("task", V::from("a")), ("y", V::Nil)])]),
            ),
            ("z", V::Nil),
        ]),
    ));
    let env = decode(&pack(&map(pairs))).unwrap();
    assert_eq!(env.retry, Default::default());
    assert_eq!(env.continuation.chain.len(), 1);
}
