#![allow(clippy::unwrap_used)]
//! Golden vector of a signed control request (`golden/control/vectors.json`,
//! SPEC.md section 16): its body, canonical string and signature, computed
//! once with Python's `hmac` from the text of the spec.

use base64::Engine;
use celeriac_schema::control::{
    request_fields, sign_request, verify_request, Command, ControlRequest,
};
use celeriac_schema::signing::{canonical, Keyring, SignatureError};
use serde_json::Value as Json;

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn doc() -> Json {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/control/vectors.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn the_control_vector_decodes_encodes_and_signs_as_pinned() {
    let doc = doc();
    let body = hex(doc["body_hex"].as_str().unwrap());
    let request = ControlRequest::decode(&body).unwrap();
    assert_eq!(request.id, "r-1");
    assert_eq!(request.command, Command::Ping);
    assert_eq!(request.destination, None);
    assert_eq!(request.sent_at, 1_700_000_000_000);
    assert_eq!(request.encode().unwrap(), body, "encoding is byte for byte");
    let correlation = doc["correlation_id"].as_str().unwrap();
    let reply_to = doc["reply_to"].as_str().unwrap();
    assert_eq!(
        canonical(&request_fields(correlation, reply_to), &body),
        hex(doc["canonical_hex"].as_str().unwrap())
    );
    let secret = base64::engine::general_purpose::STANDARD
        .decode(doc["key"]["secret_b64"].as_str().unwrap())
        .unwrap();
    let ring = Keyring::new(doc["key"]["id"].as_str().unwrap(), &secret).unwrap();
    let signature = doc["signature"].as_str().unwrap();
    assert_eq!(sign_request(&ring, &body, correlation, reply_to), signature);
    assert_eq!(
        verify_request(&ring, Some(signature), &body, correlation, reply_to),
        Ok("ctl-1")
    );
    let task_signature = doc["task_signature"].as_str().unwrap();
    assert!(matches!(
        verify_request(&ring, Some(task_signature), &body, correlation, reply_to),
        Err(SignatureError::Mismatch { .. })
    ));
    assert!(
        verify_request(&ring, Some(signature), &body, correlation, "another-queue").is_err(),
        "a request redirected to another reply queue does not verify"
    );
    assert_eq!(
        verify_request(&ring, None, &body, correlation, reply_to),
        Err(SignatureError::Missing)
    );
}
