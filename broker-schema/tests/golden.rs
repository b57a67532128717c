#![allow(clippy::unwrap_used)]
//! Golden vectors: every `golden/NAME.msgpack` decodes to what
//! `golden/NAME.json` says (see `golden/README.md` for the format).
//!
//! The bytes were written once by an independent MessagePack encoder and are
//! checked in; nothing here regenerates them.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::path::{Path, PathBuf};

use celeriac_schema::{
    decode, encode, Backoff, ChordRef, Continuation, Envelope, Error, GroupRef, RetryPolicy,
    Signature, TaskId, WorkflowRef,
};
use serde_json::{Map, Value as Json};

/// Vectors the contract requires; more may exist.
const REQUIRED: &[&str] = &[
    "minimal",
    "full",
    "tolerance",
    "unknown_fields",
    "missing_task",
    "attempt_wrong_type",
    "retry_max_retries_string",
    "unsupported_version",
    "truncated",
    "too_deep",
    "trailing_bytes",
];

struct Vector {
    name: String,
    bytes: Vec<u8>,
    expected: Json,
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden")
}

/// Every vector, sorted by name; panics on a `.msgpack` without its `.json`
/// or the other way round.
fn vectors() -> Vec<Vector> {
    let mut bins = BTreeSet::new();
    let mut jsons = BTreeSet::new();
    for entry in std::fs::read_dir(golden_dir()).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        match path.extension().and_then(|e| e.to_str()) {
            Some("msgpack") => {
                bins.insert(stem);
            }
            Some("json") => {
                jsons.insert(stem);
            }
            _ => {}
        }
    }
    assert_eq!(bins, jsons, "every NAME.msgpack needs a NAME.json and back");
    bins.into_iter()
        .map(|name| {
            let dir = golden_dir();
            let bytes = std::fs::read(dir.join(format!("{name}.msgpack"))).unwrap();
            let text = std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap();
            let expected = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{name}.json is not JSON: {e}"));
            Vector {
                name,
                bytes,
                expected,
            }
        })
        .collect()
}

/// The kind of an error, as golden files spell it: `Error::kind`, the
/// value a worker puts in the dead letter's `celeriac-error-type`.
fn kind(err: &Error) -> &'static str {
    err.kind()
}

// ---- reading the expected meaning ------------------------------------------

/// The object at `json`, which must hold exactly `keys`: golden files spell
/// out every field, defaults included, so a new field needs new vectors.
fn object<'a>(json: &'a Json, what: &str, keys: &[&str]) -> &'a Map<String, Json> {
    let map = json
        .as_object()
        .unwrap_or_else(|| panic!("{what}: expected an object, got {json}"));
    let found: BTreeSet<&str> = map.keys().map(String::as_str).collect();
    let wanted: BTreeSet<&str> = keys.iter().copied().collect();
    assert_eq!(found, wanted, "{what}: keys");
    map
}

fn u64_of(json: &Json, what: &str) -> u64 {
    json.as_u64()
        .unwrap_or_else(|| panic!("{what}: expected an unsigned integer, got {json}"))
}

fn u32_of(json: &Json, what: &str) -> u32 {
    u32::try_from(u64_of(json, what)).unwrap()
}

fn f64_of(json: &Json, what: &str) -> f64 {
    json.as_f64()
        .unwrap_or_else(|| panic!("{what}: expected a number, got {json}"))
}

fn string_of(json: &Json, what: &str) -> String {
    json.as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, got {json}"))
        .to_owned()
}

fn id_of(json: &Json, what: &str) -> TaskId {
    string_of(json, what).parse().unwrap()
}

fn opt<T>(json: &Json, read: impl FnOnce(&Json) -> T) -> Option<T> {
    (!json.is_null()).then(|| read(json))
}

fn hex(text: &str) -> Vec<u8> {
    assert!(text.len().is_multiple_of(2), "odd hex {text:?}");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// A MessagePack value from its JSON spelling: `{"$bin": hex}` is binary,
/// `{"$ext": {"type": n, "data": hex}}` an extension, numbers with a
/// fraction or exponent are float64, other numbers integers.
fn value_of(json: &Json) -> rmpv::Value {
    match json {
        Json::Null => rmpv::Value::Nil,
        Json::Bool(b) => rmpv::Value::Boolean(*b),
        Json::Number(n) => {
            if let Some(u) = n.as_u64() {
                rmpv::Value::from(u)
            } else if let Some(i) = n.as_i64() {
                rmpv::Value::from(i)
            } else {
                rmpv::Value::F64(n.as_f64().unwrap())
            }
        }
        Json::String(s) => rmpv::Value::from(s.as_str()),
        Json::Array(items) => rmpv::Value::Array(items.iter().map(value_of).collect()),
        Json::Object(map) => {
            if let (1, Some(Json::String(h))) = (map.len(), map.get("$bin")) {
                return rmpv::Value::Binary(hex(h));
            }
            if let (1, Some(ext)) = (map.len(), map.get("$ext")) {
                let ext = object(ext, "$ext", &["type", "data"]);
                let tag = i8::try_from(ext["type"].as_i64().unwrap()).unwrap();
                return rmpv::Value::Ext(tag, hex(ext["data"].as_str().unwrap()));
            }
            rmpv::Value::Map(
                map.iter()
                    .map(|(k, v)| (rmpv::Value::from(k.as_str()), value_of(v)))
                    .collect(),
            )
        }
    }
}

/// Map entries in a fixed order: MessagePack maps are unordered, and JSON
/// objects come back sorted.
fn normalized(value: &rmpv::Value) -> rmpv::Value {
    match value {
        rmpv::Value::Array(items) => rmpv::Value::Array(items.iter().map(normalized).collect()),
        rmpv::Value::Map(entries) => {
            let mut entries: Vec<_> = entries
                .iter()
                .map(|(k, v)| (normalized(k), normalized(v)))
                .collect();
            entries.sort_by_key(|(k, _)| format!("{k:?}"));
            rmpv::Value::Map(entries)
        }
        other => other.clone(),
    }
}

fn retry_of(json: &Json, what: &str) -> RetryPolicy {
    let map = object(json, what, &["max_retries", "backoff"]);
    let what_b = format!("{what}.backoff");
    let b = object(
        &map["backoff"],
        &what_b,
        &["initial_ms", "multiplier", "max_ms", "jitter"],
    );
    RetryPolicy {
        max_retries: u32_of(&map["max_retries"], what),
        backoff: Backoff {
            initial_ms: u64_of(&b["initial_ms"], &what_b),
            multiplier: f64_of(&b["multiplier"], &what_b),
            max_ms: u64_of(&b["max_ms"], &what_b),
            jitter: f64_of(&b["jitter"], &what_b),
        },
    }
}

fn signature_of(json: &Json, what: &str) -> Signature {
    let map = object(json, what, &["task", "input", "queue", "retry"]);
    Signature {
        task: string_of(&map["task"], what),
        input: value_of(&map["input"]),
        queue: opt(&map["queue"], |j| string_of(j, what)),
        retry: retry_of(&map["retry"], &format!("{what}.retry")),
    }
}

fn continuation_of(json: &Json) -> Continuation {
    let map = object(json, "continuation", &["chain", "group", "chord"]);
    let chain = map["chain"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, s)| signature_of(s, &format!("continuation.chain[{i}]")))
        .collect();
    let group = opt(&map["group"], |j| {
        let g = object(j, "group", &["group_id", "index", "size"]);
        GroupRef {
            group_id: id_of(&g["group_id"], "group_id"),
            index: u32_of(&g["index"], "index"),
            size: u32_of(&g["size"], "size"),
        }
    });
    let chord = opt(&map["chord"], |j| {
        let c = object(j, "chord", &["chord_id", "callback"]);
        ChordRef {
            chord_id: id_of(&c["chord_id"], "chord_id"),
            callback: signature_of(&c["callback"], "continuation.chord.callback"),
        }
    });
    Continuation {
        chain,
        group,
        chord,
    }
}

const ENVELOPE_FIELDS: &[&str] = &[
    "v",
    "id",
    "task",
    "input",
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

/// The envelope a golden file describes.
fn envelope_of(json: &Json) -> Envelope {
    // Fields added to the contract later are spelled out only by the
    // vectors that set them (`tolerance_ms`: SPEC.md section 19).
    let mut json = json.clone();
    let tolerance_ms = json.as_object_mut().and_then(|m| m.remove("tolerance_ms"));
    let m = object(&json, "envelope", ENVELOPE_FIELDS);
    Envelope {
        v: u32_of(&m["v"], "v"),
        id: id_of(&m["id"], "id"),
        task: string_of(&m["task"], "task"),
        input: value_of(&m["input"]),
        attempt: u32_of(&m["attempt"], "attempt"),
        retry: retry_of(&m["retry"], "retry"),
        eta: opt(&m["eta"], |j| u64_of(j, "eta")),
        expires: opt(&m["expires"], |j| u64_of(j, "expires")),
        tenant: None,
        tolerance_ms: tolerance_ms
            .as_ref()
            .and_then(|j| opt(j, |j| u64_of(j, "tolerance_ms"))),
        pools: Default::default(),
        soft_time_limit_ms: opt(&m["soft_time_limit_ms"], |j| u64_of(j, "soft")),
        hard_time_limit_ms: opt(&m["hard_time_limit_ms"], |j| u64_of(j, "hard")),
        priority: u8::try_from(u64_of(&m["priority"], "priority")).unwrap(),
        idempotency_key: opt(&m["idempotency_key"], |j| string_of(j, "idempotency_key")),
        root_id: opt(&m["root_id"], |j| id_of(j, "root_id")),
        parent_id: opt(&m["parent_id"], |j| id_of(j, "parent_id")),
        workflow: opt(&m["workflow"], |j| {
            let w = object(j, "workflow", &["workflow_id", "node_id"]);
            WorkflowRef {
                workflow_id: id_of(&w["workflow_id"], "workflow_id"),
                node_id: string_of(&w["node_id"], "node_id"),
            }
        }),
        continuation: continuation_of(&m["continuation"]),
        meta: m["meta"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), string_of(v, "meta")))
            .collect(),
        created_at: u64_of(&m["created_at"], "created_at"),
    }
}

// ---- comparing ---------------------------------------------------------------

fn same<T: PartialEq + Debug>(problems: &mut Vec<String>, field: &str, got: &T, want: &T) {
    if got != want {
        problems.push(format!("field `{field}`: got {got:?}, want {want:?}"));
    }
}

/// Differences between a decoded envelope and the expected one, field by
/// field.
fn differences(got: &Envelope, want: &Envelope) -> Vec<String> {
    let mut p = Vec::new();
    same(&mut p, "v", &got.v, &want.v);
    same(&mut p, "id", &got.id, &want.id);
    same(&mut p, "task", &got.task, &want.task);
    same(
        &mut p,
        "input",
        &normalized(&got.input),
        &normalized(&want.input),
    );
    same(&mut p, "attempt", &got.attempt, &want.attempt);
    same(
        &mut p,
        "retry.max_retries",
        &got.retry.max_retries,
        &want.retry.max_retries,
    );
    same(
        &mut p,
        "retry.backoff",
        &got.retry.backoff,
        &want.retry.backoff,
    );
    same(&mut p, "eta", &got.eta, &want.eta);
    same(&mut p, "expires", &got.expires, &want.expires);
    same(
        &mut p,
        "tolerance_ms",
        &got.tolerance_ms,
        &want.tolerance_ms,
    );
    same(
        &mut p,
        "soft_time_limit_ms",
        &got.soft_time_limit_ms,
        &want.soft_time_limit_ms,
    );
    same(
        &mut p,
        "hard_time_limit_ms",
        &got.hard_time_limit_ms,
        &want.hard_time_limit_ms,
    );
    same(&mut p, "priority", &got.priority, &want.priority);
    same(
        &mut p,
        "idempotency_key",
        &got.idempotency_key,
        &want.idempotency_key,
    );
    same(&mut p, "root_id", &got.root_id, &want.root_id);
    same(&mut p, "parent_id", &got.parent_id, &want.parent_id);
    same(&mut p, "workflow", &got.workflow, &want.workflow);
    let (gc, wc) = (&got.continuation, &want.continuation);
    same(
        &mut p,
        "continuation.chain.len",
        &gc.chain.len(),
        &wc.chain.len(),
    );
    for (i, (g, w)) in gc.chain.iter().zip(&wc.chain).enumerate() {
        let mut g = g.clone();
        let mut w = w.clone();
        g.input = normalized(&g.input);
        w.input = normalized(&w.input);
        same(&mut p, &format!("continuation.chain[{i}]"), &g, &w);
    }
    same(&mut p, "continuation.group", &gc.group, &wc.group);
    let norm_chord = |c: &Option<ChordRef>| {
        c.clone().map(|mut c| {
            c.callback.input = normalized(&c.callback.input);
            c
        })
    };
    same(
        &mut p,
        "continuation.chord",
        &norm_chord(&gc.chord),
        &norm_chord(&wc.chord),
    );
    same(&mut p, "meta", &got.meta, &want.meta);
    same(&mut p, "created_at", &got.created_at, &want.created_at);
    p
}

/// What is wrong with one vector, if anything.
fn check(vector: &Vector) -> Vec<String> {
    let doc = object(
        &vector.expected,
        &vector.name,
        if vector.expected.get("valid") == Some(&Json::Bool(true)) {
            &["description", "valid", "envelope"]
        } else {
            &["description", "valid", "error"]
        },
    );
    let result = decode(&vector.bytes);
    if doc["valid"] == Json::Bool(true) {
        let want = envelope_of(&doc["envelope"]);
        match result {
            Ok(got) => differences(&got, &want),
            Err(e) => vec![format!("expected a valid envelope, got error {e:?}")],
        }
    } else {
        let err_doc = object(&doc["error"], "error", &["kind", "field"]);
        let want_kind = string_of(&err_doc["kind"], "kind");
        let want_field = opt(&err_doc["field"], |j| string_of(j, "field"));
        match result {
            Ok(env) => vec![format!("expected an error, decoded {env:?}")],
            Err(e) => {
                let mut p = Vec::new();
                same(&mut p, "error kind", &kind(&e), &want_kind.as_str());
                same(
                    &mut p,
                    "error field",
                    &e.field().map(str::to_owned),
                    &want_field,
                );
                p
            }
        }
    }
}

// ---- tests -------------------------------------------------------------------

#[test]
fn golden_vectors_decode_as_their_json_says() {
    let vectors = vectors();
    let mut failures = Vec::new();
    for vector in &vectors {
        for problem in check(vector) {
            failures.push(format!("{}: {problem}", vector.name));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn the_required_vectors_exist() {
    let names: BTreeSet<String> = vectors().into_iter().map(|v| v.name).collect();
    for name in REQUIRED {
        assert!(names.contains(*name), "golden/{name}.msgpack is missing");
    }
}

#[test]
fn both_outcomes_are_covered() {
    let vectors = vectors();
    let valid = vectors
        .iter()
        .filter(|v| v.expected["valid"] == Json::Bool(true))
        .count();
    assert!(valid >= 3, "only {valid} valid vectors");
    assert!(vectors.len() - valid >= 7, "too few invalid vectors");
    let kinds: BTreeSet<String> = vectors
        .iter()
        .filter_map(|v| v.expected.get("error"))
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect();
    for k in ["Field", "Malformed", "TooDeep", "UnsupportedVersion"] {
        assert!(kinds.contains(k), "no vector expects {k}");
    }
}

#[test]
fn valid_vectors_survive_reencoding() {
    for vector in vectors() {
        if vector.expected["valid"] != Json::Bool(true) {
            continue;
        }
        let env = decode(&vector.bytes).unwrap();
        let again = decode(&encode(&env).unwrap())
            .unwrap_or_else(|e| panic!("{}: re-encoded envelope fails: {e}", vector.name));
        assert_eq!(again, env, "{}", vector.name);
    }
}

#[test]
fn the_full_vector_sets_every_optional_field() {
    let vector = vectors().into_iter().find(|v| v.name == "full").unwrap();
    let env = decode(&vector.bytes).unwrap();
    assert!(env.attempt > 0);
    assert!(env.eta.is_some() && env.expires.is_some());
    assert!(env.soft_time_limit_ms.is_some() && env.hard_time_limit_ms.is_some());
    assert!(env.priority > 0);
    assert!(env.idempotency_key.is_some());
    assert!(env.root_id.is_some() && env.parent_id.is_some());
    assert!(env.workflow.is_some());
    assert!(!env.continuation.chain.is_empty());
    assert!(env.continuation.group.is_some() && env.continuation.chord.is_some());
    assert!(env.continuation.chain.iter().any(|s| s.queue.is_some()));
    assert!(!env.meta.is_empty());
    assert_ne!(env.retry, RetryPolicy::default());
}

#[test]
fn task_ids_in_vectors_are_canonical_uuid_v7() {
    for vector in vectors() {
        let Ok(env) = decode(&vector.bytes) else {
            continue;
        };
        let mut ids = vec![env.id];
        ids.extend(env.root_id);
        ids.extend(env.parent_id);
        ids.extend(env.workflow.map(|w| w.workflow_id));
        for id in ids {
            assert_eq!(id.as_uuid().get_version_num(), 7, "{}: {id}", vector.name);
            let text = id.to_string();
            assert_eq!(text, text.to_lowercase());
            assert_eq!(text.len(), 36);
        }
    }
}
