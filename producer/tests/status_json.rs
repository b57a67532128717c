#![allow(clippy::unwrap_used)]
//! `celeriac status --json`, version 1 (SPEC.md section 18.7): every
//! record of the store's golden vectors (`broker-schema/golden/store/`)
//! prints exactly the JSON the vector gives.

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
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../broker-schema/golden/store/records.json");
    let file: Json = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
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
        let history = hex(v["history_hex"].as_str().unwrap());
        let record = layout::parse_record(id, &fields, &history)
            .unwrap()
            .unwrap();
        let json = status::to_json(&record);
        assert_eq!(json, v["status"], "{name}");
        assert_eq!(json["v"], status::JSON_VERSION, "{name}");
    }
}
