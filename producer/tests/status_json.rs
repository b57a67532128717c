#![allow(clippy::unwrap_used)]
//! `celeriac status --json`, version 1 (SPEC.md section 18.7): every
//! record of the store's golden vectors (`broker-schema/golden/store/`, of
//! both layout versions) prints exactly the JSON the vector gives.

use std::collections::HashMap;
use std::path::Path;

use celeriac_producer::status;
use celeriac_schema::store::layout;
use celeriac_schema::TaskId;
use serde_json::Value as Json;

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn every_golden_record_prints_its_status_json() {
    for name in ["records_v2.json", "records.json"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../broker-schema/golden/store")
            .join(name);
        let file: Json = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        check_file(&file);
    }
}

fn check_file(file: &Json) {
    for v in file["vectors"].as_array().unwrap() {
        let name = v["name"].as_str().unwrap();
        let id: TaskId = v["id"].as_str().unwrap().parse().unwrap();
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
        // Version 1 vectors carry their history string beside the hash.
        let record = match v["history_hex"].as_str() {
            Some(history) => layout::v1::parse_record(id, &fields, &hex(history)),
            None => layout::parse_record(id, &fields),
        };
        let record = record.unwrap().unwrap();
        let json = status::to_json(&record);
        assert_eq!(json, v["status"], "{name}");
        assert_eq!(json["v"], status::JSON_VERSION, "{name}");
    }
}
