#![allow(clippy::unwrap_used)]
//! Bad input: the decoder never panics, rejects what breaks the limits
//! before allocating for it, and every error says where the problem is.

mod depth;
mod fields;
mod garbage;
mod lengths;
mod sizes;

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
