#![allow(clippy::unwrap_used)]
//! Golden vectors of the store's layout (SPEC.md section 18): every record
//! of `golden/store/records_v2.json` (layout version 2) and of
//! `golden/store/records.json` (version 1, still read) reads as it says,
//! under the keys it names, and every value of
//! `golden/store/json_values.json` maps to its JSON form and back.
//!
//! The vectors were written once by an independent encoder (Python's
//! `msgpack`) from the text of SPEC.md and are checked in.

use std::collections::HashMap;
use std::path::Path;

use celeriac_schema::json_value::{bytes_to_json, from_json, to_json};
use celeriac_schema::store::layout;
use celeriac_schema::{TaskId, TaskState};
use serde_json::Value as Json;

fn golden(name: &str) -> Json {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("golden")
        .join("store")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn hex(text: &str) -> Vec<u8> {
    assert!(text.len().is_multiple_of(2), "odd hex {text:?}");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn opt_u64(json: &Json) -> Option<u64> {
    json.as_u64()
}

fn opt_str(json: &Json) -> Option<String> {
    json.as_str().map(str::to_owned)
}

#[test]
fn every_record_vector_reads_as_it_says() {
    for (file, version) in [("records_v2.json", 2), ("records.json", 1)] {
        let file = golden(file);
        let vectors = file["vectors"].as_array().unwrap();
        assert!(vectors.len() >= 9, "the store vectors are all there");
        for v in vectors {
            check_record_vector(v, version);
        }
    }
}

fn check_record_vector(v: &Json, version: u32) {
    {
        let name = v["name"].as_str().unwrap();
        let ns = v["namespace"].as_str().unwrap();
        let id: TaskId = v["id"].as_str().unwrap().parse().unwrap();
        assert_eq!(v["keys"]["channel"], layout::done_channel(ns, id), "{name}");

        let fields: HashMap<String, Vec<u8>> = v["fields"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, value)| {
                let bytes = match value {
                    Json::String(text) => text.as_bytes().to_vec(),
                    other => hex(other["hex"].as_str().unwrap()),
                };
                (k.clone(), bytes)
            })
            .collect();
        let record = if version == 1 {
            assert_eq!(
                v["keys"]["record"],
                layout::v1::record_key(ns, id),
                "{name}"
            );
            assert_eq!(
                v["keys"]["history"],
                layout::v1::history_key(ns, id),
                "{name}"
            );
            let history = hex(v["history_hex"].as_str().unwrap());
            layout::v1::parse_record(id, &fields, &history)
        } else {
            assert_eq!(v["keys"]["record"], layout::record_key(ns, id), "{name}");
            layout::parse_record(id, &fields)
        };
        let record = record
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .unwrap_or_else(|| panic!("{name}: no record"));
        let want = &v["record"];
        assert_eq!(record.id, id, "{name}");
        assert_eq!(record.task, want["task"], "{name}");
        assert_eq!(record.queue, want["queue"], "{name}");
        assert_eq!(
            Some(record.state),
            TaskState::parse(want["state"].as_str().unwrap()),
            "{name}"
        );
        assert_eq!(u64::from(record.attempt), want["attempt"], "{name}");
        assert_eq!(u64::from(record.runs), want["runs"], "{name}");
        assert_eq!(record.worker, opt_str(&want["worker"]), "{name}");
        assert_eq!(
            record.idempotency_key,
            opt_str(&want["idempotency_key"]),
            "{name}"
        );
        assert_eq!(record.workflow_id, opt_str(&want["workflow_id"]), "{name}");
        for (got, field) in [
            (record.created_at, "created_at"),
            (record.queued_at, "queued_at"),
            (record.started_at, "started_at"),
            (record.finished_at, "finished_at"),
        ] {
            assert_eq!(got, opt_u64(&want[field]), "{name}: {field}");
        }
        match &want["error"] {
            Json::Null => assert_eq!(record.error, None, "{name}"),
            e => {
                let got = record.error.as_ref().unwrap();
                assert_eq!(got.error_type, e["type"], "{name}");
                assert_eq!(got.message, e["message"], "{name}");
            }
        }
        assert_eq!(
            record.result,
            want["result_hex"].as_str().map(hex),
            "{name}: result bytes"
        );
        let history: Vec<Json> = record
            .history
            .iter()
            .map(|t| serde_json::to_value(t).unwrap())
            .collect();
        assert_eq!(Json::Array(history), want["history"], "{name}: history");
        // The result as the status output shows it.
        let shown = record.result.as_deref().map_or(Json::Null, bytes_to_json);
        assert_eq!(shown, v["status"]["result"], "{name}: result as JSON");
    }
}

#[test]
fn an_empty_hash_is_no_record_and_bad_fields_are_errors() {
    let id = TaskId::new();
    assert_eq!(layout::parse_record(id, &HashMap::new()).unwrap(), None);
    assert_eq!(
        layout::v1::parse_record(id, &HashMap::new(), &[]).unwrap(),
        None
    );
    let field = |pairs: &[(&str, &[u8])]| -> HashMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
            .collect()
    };
    for (bad, what) in [
        (field(&[("task", b"t"), ("state", b"running")]), "state"),
        (
            field(&[("task", b"t"), ("state", b"started"), ("attempt", b"x")]),
            "attempt",
        ),
        (field(&[("task", b"t"), ("q", b"\xc1")]), "queued mark"),
        // A version 1 mark is not one of version 2.
        (field(&[("q", b"\x92\x00\x01")]), "queued mark"),
        (
            field(&[
                ("state", b"started"),
                ("h:0:started:1", b"\x81\xa1\x78\x01"),
            ]),
            "history",
        ),
    ] {
        let err = layout::parse_record(id, &bad).unwrap_err();
        assert!(err.to_string().contains(what), "{err}");
    }
    let v1_bad = field(&[("task", b"t"), ("state", b"started"), ("runs", b"x")]);
    let err = layout::v1::parse_record(id, &v1_bad, &[]).unwrap_err();
    assert!(err.to_string().contains("runs"), "{err}");
    let ok = field(&[("task", b"t"), ("state", b"started")]);
    let err = layout::v1::parse_record(id, &ok, &[0x81, 0xa1, 0x78, 0x01]).unwrap_err();
    assert!(err.to_string().contains("history"), "{err}");
}

#[test]
fn every_value_vector_maps_to_its_json_and_back() {
    let file = golden("json_values.json");
    let vectors = file["vectors"].as_array().unwrap();
    for v in vectors {
        let name = v["name"].as_str().unwrap();
        let bytes = hex(v["msgpack"].as_str().unwrap());
        let value = rmpv::decode::read_value(&mut bytes.as_slice()).unwrap();
        let json = to_json(&value);
        assert_eq!(json, v["json"], "{name}");
        assert_eq!(bytes_to_json(&bytes), v["json"], "{name}: from bytes");
        // Printed and read again, as a client would.
        let reread: Json = serde_json::from_str(&json.to_string()).unwrap();
        let back = from_json(&reread).unwrap_or_else(|e| panic!("{name}: {e}"));
        let widened = match &value {
            rmpv::Value::F32(f) => rmpv::Value::F64(f64::from(*f)),
            other => other.clone(),
        };
        // NaN is not equal to itself: compare the JSON of both sides.
        assert_eq!(to_json(&back), to_json(&widened), "{name}: round trip");
        if !matches!(value, rmpv::Value::F32(_) | rmpv::Value::F64(_)) {
            assert_eq!(back, widened, "{name}: the same value");
        }
    }
}

#[test]
fn bad_tags_are_refused_with_their_path() {
    for (json, says) in [
        (serde_json::json!({"$nope": 1}), "unknown tag"),
        (serde_json::json!({"$bin": "!!"}), "base64"),
        (serde_json::json!({"$int": "1.5"}), "integer"),
        (serde_json::json!({"$float": "1.5"}), "NaN"),
        (
            serde_json::json!({"$ext": {"type": 300, "data": ""}}),
            "type",
        ),
        (serde_json::json!({"$map": [[1]]}), "pair"),
        (serde_json::json!({"$raw": "AA=="}), "unknown tag"),
        (serde_json::json!({"a": [{"$bin": 5}]}), "a[0]"),
    ] {
        let err = from_json(&json).unwrap_err();
        assert!(err.to_string().contains(says), "{json}: {err}");
    }
}

#[test]
fn bytes_that_are_not_one_value_show_raw() {
    assert_eq!(bytes_to_json(&[]), serde_json::json!({"$raw": ""}));
    assert_eq!(bytes_to_json(&[0xc1]), serde_json::json!({"$raw": "wQ=="}));
    assert_eq!(
        bytes_to_json(&[0x01, 0x02]),
        serde_json::json!({"$raw": "AQI="})
    );
}
