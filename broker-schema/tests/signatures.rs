#![allow(clippy::unwrap_used)]
//! Golden vectors of signed envelopes: `golden/signatures/vectors.json`
//! (SPEC.md section 15) pins the canonical string, the signature header and
//! the verification outcome of fixed keys, fields and bodies.
//!
//! The expected bytes were computed once with another language's HMAC
//! (Python's `hmac` and `hashlib`) from the text of SPEC.md and are checked
//! in; nothing here regenerates them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use base64::Engine;
use celeriac_schema::signing::{
    canonical, FieldValue, Keyring, SignatureError, TaskFields, TASK_FIELDS,
};
use serde_json::Value as Json;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden")
}

fn doc() -> Json {
    let text =
        std::fs::read_to_string(golden_dir().join("signatures").join("vectors.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn secret(doc: &Json, key_id: &str) -> Vec<u8> {
    let b64 = doc["keys"][key_id]
        .as_str()
        .unwrap_or_else(|| panic!("no key {key_id:?} in `keys`"));
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn body(vector: &Json) -> Vec<u8> {
    match (vector.get("body_file"), vector.get("body_hex")) {
        (Some(Json::String(file)), None) => std::fs::read(golden_dir().join(file)).unwrap(),
        (None, Some(Json::String(h))) => hex(h),
        other => panic!(
            "{}: a body_file or a body_hex, got {other:?}",
            vector["name"]
        ),
    }
}

/// The (name, value) pairs of a vector; the strings live in `vector`.
fn fields(vector: &Json) -> Vec<(&str, FieldValue<'_>)> {
    vector["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| {
            let name = pair[0].as_str().unwrap();
            let value = match &pair[1] {
                Json::String(s) => FieldValue::from(s.as_str()),
                Json::Number(n) => FieldValue::Int(n.as_i64().unwrap()),
                other => panic!("field {name}: {other}"),
            };
            (name, value)
        })
        .collect()
}

fn kind(err: &SignatureError) -> &'static str {
    match err {
        SignatureError::Missing => "Missing",
        SignatureError::UnknownKey { .. } => "UnknownKey",
        SignatureError::Mismatch { .. } => "Mismatch",
        SignatureError::Malformed { .. } => "Malformed",
        _ => "unknown",
    }
}

#[test]
fn sign_vectors_give_their_canonical_string_and_signature() {
    let doc = doc();
    let vectors = doc["sign"].as_array().unwrap();
    assert!(vectors.len() >= 5);
    for vector in vectors {
        let name = vector["name"].as_str().unwrap();
        let key_id = vector["key"].as_str().unwrap();
        let fields = fields(vector);
        let body = body(vector);
        let want_canonical = hex(vector["canonical_hex"].as_str().unwrap());
        assert_eq!(
            canonical(&fields, &body),
            want_canonical,
            "{name}: canonical string"
        );
        let ring = Keyring::new(key_id, &secret(&doc, key_id)).unwrap();
        assert_eq!(
            ring.sign(&fields, &body),
            vector["signature"].as_str().unwrap(),
            "{name}: signature"
        );
    }
}

#[test]
fn verify_vectors_come_out_as_expected() {
    let doc = doc();
    let mut kinds = BTreeSet::new();
    for vector in doc["verify"].as_array().unwrap() {
        let name = vector["name"].as_str().unwrap();
        let ids: Vec<&str> = vector["keyring"]
            .as_array()
            .unwrap()
            .iter()
            .map(|id| id.as_str().unwrap())
            .collect();
        let mut ring = Keyring::new(ids[0], &secret(&doc, ids[0])).unwrap();
        for id in &ids[1..] {
            ring = ring.with_verification_key(id, &secret(&doc, id)).unwrap();
        }
        let fields = fields(vector);
        let body = body(vector);
        let got = ring.verify(vector["signature"].as_str(), &fields, &body);
        let expect = &vector["expect"];
        match (expect.get("ok"), expect.get("error"), got) {
            (Some(Json::String(want)), None, Ok(key_id)) => {
                assert_eq!(key_id, want, "{name}");
                kinds.insert("ok");
            }
            (None, Some(Json::String(want)), Err(e)) => {
                assert_eq!(kind(&e), want, "{name}: {e}");
                kinds.insert(kind(&e));
            }
            (_, _, got) => panic!("{name}: expected {expect}, got {got:?}"),
        }
    }
    for k in ["ok", "Missing", "UnknownKey", "Mismatch", "Malformed"] {
        assert!(kinds.contains(k), "no verify vector expects {k}");
    }
}

#[test]
fn task_vectors_list_their_fields_in_canonical_order() {
    let doc = doc();
    for vector in doc["sign"].as_array().unwrap() {
        let name = vector["name"].as_str().unwrap();
        if !name.starts_with("task_") {
            continue;
        }
        let given = fields(vector);
        let collected = TaskFields::collect(|field| {
            Ok(given.iter().find(|(n, _)| *n == field).map(|(_, v)| *v))
        })
        .unwrap();
        assert_eq!(collected.as_slice(), given.as_slice(), "{name}");
        assert!(given.iter().all(|(n, _)| TASK_FIELDS.contains(n)));
    }
}
