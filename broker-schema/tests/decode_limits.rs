#![allow(clippy::unwrap_used)]
//! Bad input: the decoder never panics, rejects what breaks the limits
//! before allocating for it, and every error says where the problem is.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use celeriac_schema::{
    check_limits, decode, decode_with, encode, ChordRef, Continuation, DecodeLimits, Envelope,
    Error, GroupRef, Signature, TaskId, WorkflowRef,
};
use rmpv::Value as V;

const MIB: usize = 1024 * 1024;

/// A small deterministic generator (SplitMix64): the same inputs on every
/// run, so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

fn pack(value: &V) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, value).unwrap();
    out
}

fn map(pairs: Vec<(&str, V)>) -> V {
    V::Map(pairs.into_iter().map(|(k, v)| (V::from(k), v)).collect())
}

const ID: &str = "01936b2e-8f40-7a1c-9d2e-3f4a5b6c7d8e";

fn minimal_pairs() -> Vec<(&'static str, V)> {
    vec![
        ("v", V::from(1)),
        ("id", V::from(ID)),
        ("task", V::from("ping")),
        ("input", V::Nil),
        ("created_at", V::from(1_764_077_400_000u64)),
    ]
}

/// An envelope with every field set, to mutate.
fn full_envelope() -> Envelope {
    let id = |n: u128| {
        TaskId::from_uuid(uuid::Uuid::from_u128(
            0x0193_6b2e_8f40_7000_8000_0000_0000_0000 | n,
        ))
    };
    let mut env = Envelope::new(
        "images.resize",
        map(vec![
            ("url", V::from("https://example.invalid/cat.png")),
            (
                "sizes",
                V::Array(vec![V::from(64), V::from(-1), V::F64(0.5)]),
            ),
            ("raw", V::Binary(vec![0, 1, 2, 255])),
        ]),
    );
    env.attempt = 2;
    env.eta = Some(1_764_077_460_000);
    env.expires = Some(1_764_081_000_000);
    env.soft_time_limit_ms = Some(30_000);
    env.hard_time_limit_ms = Some(60_000);
    env.priority = 7;
    env.idempotency_key = Some("resize:cat".into());
    env.root_id = Some(id(1));
    env.parent_id = Some(id(2));
    env.workflow = Some(WorkflowRef {
        workflow_id: id(3),
        node_id: "resize".into(),
    });
    let sig = |task: &str| Signature {
        task: task.into(),
        input: V::Nil,
        queue: Some("uploads".into()),
        retry: Default::default(),
    };
    env.continuation = Continuation {
        chain: vec![sig("upload"), sig("notify")],
        group: Some(GroupRef {
            group_id: id(4),
            index: 1,
            size: 3,
        }),
        chord: Some(ChordRef {
            chord_id: id(5),
            callback: sig("collect"),
        }),
    };
    env.meta.insert("tenant".into(), "acme".into());
    env
}

/// Iterations of each random loop: `default`, or more when
/// `CELERIAC_FUZZ_ITERATIONS` asks for a longer run.
fn iterations(default: usize) -> usize {
    std::env::var("CELERIAC_FUZZ_ITERATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

/// Decodes, turning a panic into a test failure that shows the input.
fn decode_no_panic(bytes: &[u8]) -> Result<Envelope, Error> {
    match catch_unwind(AssertUnwindSafe(|| decode(bytes))) {
        Ok(result) => result,
        Err(_) => panic!("decode panicked on {}", hex(bytes)),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every decode error is one of the documented kinds and says where.
fn assert_well_formed_error(err: &Error, input: &[u8]) {
    match err {
        Error::TooLarge { size, limit } => assert!(size > limit),
        Error::TooDeep { limit, offset } => {
            assert_eq!(*limit, DecodeLimits::DEFAULT_MAX_DEPTH);
            assert!(*offset < input.len());
        }
        Error::Malformed { offset, reason } => {
            assert!(*offset <= input.len(), "{err:?} for {}", hex(input));
            assert!(!reason.is_empty());
        }
        Error::Field { field, message } => {
            assert!(!field.is_empty() && !message.is_empty());
            assert_eq!(err.field(), Some(field.as_str()));
        }
        Error::UnsupportedVersion { supported, .. } => {
            assert_eq!(*supported, 1);
            assert_eq!(err.field(), Some("v"));
        }
        other => panic!("decode returned a non-decode error {other:?}"),
    }
}

/// Decodes mutated input: never a panic; an error of a documented kind, or
/// an envelope that survives re-encoding.
fn fuzz_one(bytes: &[u8]) {
    match decode_no_panic(bytes) {
        Ok(env) => {
            let again = decode(&encode(&env).unwrap()).unwrap();
            assert_eq!(again, env, "re-encoding changed {}", hex(bytes));
        }
        Err(err) => assert_well_formed_error(&err, bytes),
    }
}

// ---- empty, garbage, mutations -------------------------------------------------

#[test]
fn an_empty_body_is_malformed_at_offset_0() {
    let err = decode(&[]).unwrap_err();
    assert!(matches!(err, Error::Malformed { offset: 0, .. }), "{err:?}");
    assert_eq!(err.field(), None);
}

#[test]
fn single_bytes_never_panic() {
    for b in 0..=255u8 {
        let err = decode_no_panic(&[b]).unwrap_err();
        assert_well_formed_error(&err, &[b]);
    }
}

#[test]
fn random_garbage_is_rejected_without_panicking() {
    let mut rng = Rng(0x5eed_0001);
    for _ in 0..iterations(4000) {
        let len = rng.below(96);
        let mut bytes = rng.bytes(len);
        // Half of them start like a map, to get past the first byte.
        if !bytes.is_empty() && rng.below(2) == 0 {
            bytes[0] = 0x80 | (rng.below(16) as u8);
        }
        fuzz_one(&bytes);
    }
}

#[test]
fn every_truncation_of_a_valid_encoding_is_malformed() {
    let bytes = encode(&full_envelope()).unwrap();
    assert!(decode(&bytes).is_ok());
    for cut in 0..bytes.len() {
        let err = decode_no_panic(&bytes[..cut]).unwrap_err();
        assert!(
            matches!(err, Error::Malformed { .. }),
            "cut at {cut}: {err:?}"
        );
    }
}

#[test]
fn bit_flips_of_a_valid_encoding_never_panic() {
    let bytes = encode(&full_envelope()).unwrap();
    let mut rng = Rng(0x5eed_0002);
    let mut decoded = 0;
    for _ in 0..iterations(4000) {
        let mut mutated = bytes.clone();
        for _ in 0..=rng.below(3) {
            let i = rng.below(mutated.len());
            mutated[i] ^= 1 << rng.below(8);
        }
        if decode_no_panic(&mutated).is_ok() {
            decoded += 1;
        }
        fuzz_one(&mutated);
    }
    // Flips inside strings keep the envelope valid: the suite exercises both
    // outcomes.
    assert!(decoded > 0);
}

#[test]
fn spliced_and_overwritten_encodings_never_panic() {
    let bytes = encode(&full_envelope()).unwrap();
    let mut rng = Rng(0x5eed_0003);
    for _ in 0..iterations(3000) {
        let mut mutated = bytes.clone();
        match rng.below(4) {
            0 => {
                let i = rng.below(mutated.len());
                mutated.insert(i, rng.next() as u8);
            }
            1 => {
                let i = rng.below(mutated.len());
                mutated.remove(i);
            }
            2 => {
                // A random container or length marker somewhere.
                let markers = [0xdc, 0xdd, 0xde, 0xdf, 0xc6, 0xdb, 0xc9, 0x9f, 0x8f, 0xbf];
                let i = rng.below(mutated.len());
                mutated[i] = markers[rng.below(markers.len())];
            }
            _ => {
                let i = rng.below(mutated.len());
                let n = rng.below(8).min(mutated.len() - i);
                let noise = rng.bytes(n);
                mutated[i..i + n].copy_from_slice(&noise);
            }
        }
        fuzz_one(&mutated);
    }
}

// ---- size --------------------------------------------------------------------------

/// A valid envelope whose encoding is exactly `size` bytes.
fn envelope_of_size(size: usize) -> Vec<u8> {
    let probe = |n: usize| encode(&Envelope::new("pad", V::from("x".repeat(n)))).unwrap();
    let mut n = size - 100;
    for _ in 0..4 {
        let bytes = probe(n);
        if bytes.len() == size {
            return bytes;
        }
        n = n + size - bytes.len();
    }
    panic!("no envelope of {size} bytes")
}

#[test]
fn a_body_of_exactly_1_mib_is_accepted() {
    assert!(decode(&envelope_of_size(MIB)).is_ok());
}

#[test]
fn a_body_over_1_mib_is_too_large() {
    let err = decode(&envelope_of_size(MIB + 1)).unwrap_err();
    assert_eq!(
        err,
        Error::TooLarge {
            size: MIB + 1,
            limit: MIB
        }
    );
    assert_eq!(err.field(), None);
}

#[test]
fn size_is_checked_before_anything_else() {
    // Garbage that would be malformed is reported as too large, at once.
    let garbage = vec![0xc1u8; 8 * MIB];
    let started = Instant::now();
    let err = decode(&garbage).unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn custom_size_limits_apply() {
    let bytes = envelope_of_size(1000);
    let tight = DecodeLimits {
        max_bytes: 999,
        ..DecodeLimits::default()
    };
    assert!(matches!(
        decode_with(&bytes, &tight),
        Err(Error::TooLarge {
            size: 1000,
            limit: 999
        })
    ));
    let exact = DecodeLimits {
        max_bytes: 1000,
        ..DecodeLimits::default()
    };
    assert!(decode_with(&bytes, &exact).is_ok());
}

#[test]
fn default_limits_are_1_mib_and_32_levels() {
    let limits = DecodeLimits::default();
    assert_eq!(limits.max_bytes, 1_048_576);
    assert_eq!(limits.max_depth, 32);
}

// ---- depth ---------------------------------------------------------------------------

fn nested_arrays(levels: usize) -> V {
    let mut value = V::Nil;
    for _ in 0..levels {
        value = V::Array(vec![value]);
    }
    value
}

fn with_input(input: V) -> Vec<u8> {
    let mut pairs = minimal_pairs();
    pairs[3].1 = input;
    pack(&map(pairs))
}

#[test]
fn thirty_two_levels_are_accepted() {
    // The envelope map is level 1, so the input may nest 31 more.
    let env = decode(&with_input(nested_arrays(31))).unwrap();
    assert_eq!(env.input, nested_arrays(31));
}

#[test]
fn thirty_three_levels_are_too_deep() {
    let bytes = with_input(nested_arrays(32));
    let err = decode(&bytes).unwrap_err();
    assert!(matches!(err, Error::TooDeep { limit: 32, .. }), "{err:?}");
    assert_eq!(err.field(), None);
}

#[test]
fn deep_maps_count_like_arrays() {
    let mut value = V::Nil;
    for _ in 0..40 {
        value = map(vec![("k", value)]);
    }
    let err = decode(&with_input(value)).unwrap_err();
    assert!(matches!(err, Error::TooDeep { limit: 32, .. }), "{err:?}");
}

#[test]
fn the_offset_of_too_deep_points_at_the_container() {
    // Forty one-element arrays, no envelope: the 33rd opens at byte 32.
    let mut bytes = vec![0x91u8; 40];
    bytes.push(0xc0);
    assert_eq!(
        decode(&bytes).unwrap_err(),
        Error::TooDeep {
            limit: 32,
            offset: 32
        }
    );
}

#[test]
fn a_million_nested_arrays_fail_fast_without_recursion() {
    let mut bytes = vec![0x91u8; MIB - 1];
    bytes.push(0xc0);
    let started = Instant::now();
    let err = decode(&bytes).unwrap_err();
    assert!(matches!(err, Error::TooDeep { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn custom_depth_limits_apply() {
    let bytes = with_input(nested_arrays(3)); // 4 levels in all
    let at = |max_depth| {
        decode_with(
            &bytes,
            &DecodeLimits {
                max_depth,
                ..DecodeLimits::default()
            },
        )
    };
    assert!(at(4).is_ok());
    assert!(matches!(at(3), Err(Error::TooDeep { limit: 3, .. })));
}

// ---- length claims -------------------------------------------------------------

/// Rejected as malformed, at once: no allocation follows a lying header.
fn assert_rejected_quickly(bytes: &[u8]) {
    let started = Instant::now();
    let err = decode_no_panic(bytes).unwrap_err();
    assert!(
        matches!(err, Error::Malformed { .. }),
        "{}: {err:?}",
        hex(bytes)
    );
    assert!(started.elapsed() < Duration::from_millis(500), "too slow");
    assert_eq!(err.field(), None);
}

#[test]
fn an_array32_claiming_4_billion_items_in_10_bytes_is_rejected() {
    assert_rejected_quickly(&[0xdd, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0]);
}

#[test]
fn every_length_header_that_overclaims_is_rejected() {
    let claims: &[&[u8]] = &[
        &[0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, b'v', 0x01], // map32
        &[0xde, 0xff, 0xff, 0xa1, b'v', 0x01],             // map16
        &[0xdc, 0xff, 0xff, 0xc0, 0xc0],                   // array16
        &[0x9f, 0xc0],                                     // fixarray 15
        &[0x8f, 0xc0, 0xc0],                               // fixmap 15
        &[0xdb, 0xff, 0xff, 0xff, 0xff, b'a'],             // str32
        &[0xda, 0xff, 0xff, b'a'],                         // str16
        &[0xd9, 0xff, b'a'],                               // str8
        &[0xbf, b'a'],                                     // fixstr 31
        &[0xc6, 0xff, 0xff, 0xff, 0xff, 0x00],             // bin32
        &[0xc5, 0xff, 0xff, 0x00],                         // bin16
        &[0xc4, 0xff, 0x00],                               // bin8
        &[0xc9, 0xff, 0xff, 0xff, 0xff, 0x05, 0x00],       // ext32
        &[0xc8, 0xff, 0xff, 0x05, 0x00],                   // ext16
        &[0xc7, 0xff, 0x05, 0x00],                         // ext8
        &[0xd8, 0x05, 0x00],                               // fixext16
        &[0xcf, 0x00],                                     // uint64
        &[0xcb, 0x00, 0x00],                               // float64
        &[0xdd, 0xff, 0xff],                               // array32, length cut
    ];
    for bytes in claims {
        assert_rejected_quickly(bytes);
    }
}

#[test]
fn an_overclaiming_input_inside_a_valid_envelope_is_rejected() {
    let mut bytes = with_input(V::Nil);
    // Replace the input's nil by an array32 claiming u32::MAX items; the
    // created_at field after it cannot fill them.
    let nil_at = bytes.windows(6).position(|w| w == b"input\xc0").unwrap() + 5;
    bytes.splice(nil_at..=nil_at, [0xdd, 0xff, 0xff, 0xff, 0xff]);
    assert_rejected_quickly(&bytes);
}

#[test]
fn trailing_bytes_are_malformed_at_their_offset() {
    let mut bytes = with_input(V::Nil);
    let end = bytes.len();
    bytes.push(0xc0);
    let err = decode(&bytes).unwrap_err();
    assert!(
        matches!(err, Error::Malformed { offset, .. } if offset == end),
        "{err:?}"
    );
    // Two envelopes back to back are not one.
    let mut twice = with_input(V::Nil);
    twice.extend(with_input(V::Nil));
    assert!(matches!(decode(&twice), Err(Error::Malformed { .. })));
}

#[test]
fn the_reserved_marker_is_malformed() {
    let mut bytes = with_input(V::Nil);
    let nil_at = bytes.iter().position(|&b| b == 0xc0).unwrap();
    bytes[nil_at] = 0xc1;
    let err = decode(&bytes).unwrap_err();
    assert!(
        matches!(err, Error::Malformed { offset, .. } if offset == nil_at),
        "{err:?}"
    );
}

#[test]
fn check_limits_accepts_every_marker_family() {
    let value = V::Array(vec![
        V::Nil,
        V::Boolean(true),
        V::from(7),
        V::from(-7),
        V::from(200),
        V::from(-200),
        V::from(70_000),
        V::from(-70_000),
        V::from(5_000_000_000u64),
        V::from(-5_000_000_000i64),
        V::F32(1.5),
        V::F64(2.5),
        V::from("s"),
        V::from("x".repeat(40)),
        V::from("x".repeat(300)),
        V::from("x".repeat(70_000)),
        V::Binary(vec![1; 3]),
        V::Binary(vec![1; 300]),
        V::Binary(vec![1; 70_000]),
        V::Ext(1, vec![1]),
        V::Ext(1, vec![1; 2]),
        V::Ext(1, vec![1; 4]),
        V::Ext(1, vec![1; 8]),
        V::Ext(1, vec![1; 16]),
        V::Ext(1, vec![1; 3]),
        V::Ext(1, vec![1; 300]),
        V::Ext(1, vec![1; 70_000]),
        V::Array(vec![V::Nil; 20]),
        V::Array(vec![V::Nil; 70_000]),
        V::Map(vec![(V::from(1), V::Nil); 20]),
        V::Map(vec![(V::from(1), V::Nil); 70_000]),
    ]);
    let bytes = pack(&value);
    assert!(check_limits(&bytes, &DecodeLimits::default()).is_ok());
    // And inside an envelope, the decoder passes all of it through.
    let env = decode(&with_input(value.clone())).unwrap();
    assert_eq!(env.input, value);
}

// ---- field errors name their field ----------------------------------------------

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
