//! A compiled program run as a celeriac exec task.
//!
//! Reads one JSON value on stdin and prints
//! `{"total": <the sum of every number in it>, "keys": [<its keys, sorted, when
//! it is a map>], "language": "rust"}`. As a workflow node it thus shows what
//! it received from its dependencies: with inputs by name, a map from each
//! dependency's id to its result.
//!
//! Exit status 2 when stdin is not JSON (the reason on stderr).

use std::io::Read;
use std::process::ExitCode;

use serde_json::{json, Value};

fn total(value: &Value) -> f64 {
    match value {
        Value::Number(n) => n.as_f64().unwrap_or(0.0),
        Value::Array(items) => items.iter().map(total).sum(),
        Value::Object(map) => map.values().map(total).sum(),
        _ => 0.0,
    }
}

fn main() -> ExitCode {
    let mut stdin = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut stdin) {
        eprintln!("cannot read stdin: {e}");
        return ExitCode::from(2);
    }
    let input: Value = match serde_json::from_str(&stdin) {
        Ok(input) => input,
        Err(e) => {
            eprintln!("stdin is not JSON: {e}");
            return ExitCode::from(2);
        }
    };
    let mut keys: Vec<&String> = match &input {
        Value::Object(map) => map.keys().collect(),
        _ => Vec::new(),
    };
    keys.sort();
    println!(
        "{}",
        json!({"total": total(&input), "keys": keys, "language": "rust"})
    );
    ExitCode::SUCCESS
}
