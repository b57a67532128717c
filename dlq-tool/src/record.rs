//! The JSON form of a dead letter, as `export` writes it and `import` reads
//! it back: one JSON object per line.
//!
//! What `import` needs is lossless: `body_base64` (the body byte for byte),
//! `properties` and `headers`, each header value tagged with its AMQP type
//! (`{"string": "..."}`, `{"i64": 3}`, `{"timestamp": 1700000000}`,
//! `{"array": [...]}`, `{"table": {...}}`, ...) so that it is published
//! again exactly as it was. Everything else (`task_id`, `reason`,
//! `failed_at_rfc3339`, the decoded `envelope`, ...) is for people and
//! other programs, and `import` ignores it.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use lapin::types::{AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, ShortString};
use lapin::BasicProperties;
use serde_json::{json, Map, Value};

use crate::dead_letter::DeadLetter;

/// Format marker written in every exported line.
pub const FORMAT: &str = "celeriac-dlq/1";

/// A summary of a dead letter, for `list --json`: no body, no headers.
pub fn summary(dl: &DeadLetter) -> Value {
    json!({
        "task_id": dl.task_id,
        "queue": dl.queue,
        "dlq_queue": dl.dlq_queue,
        "task": dl.task,
        "reason": dl.reason,
        "error_type": dl.error_type,
        "error_message": dl.error_message,
        "failed_at": dl.failed_at,
        "failed_at_rfc3339": dl.failed_at.map(rfc3339),
        "worker": dl.worker,
        "attempts": dl.attempts,
        "replay_count": dl.replay_count,
        "size": dl.body.len(),
    })
}

/// The full, lossless record of a dead letter (`export`, `show --json`).
pub fn full(dl: &DeadLetter) -> Value {
    let mut out = match summary(dl) {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    out.insert("format".into(), Value::from(FORMAT));
    match dl.envelope() {
        Ok(env) => {
            out.insert(
                "envelope".into(),
                serde_json::to_value(&env).unwrap_or(Value::Null),
            );
        }
        Err(e) => {
            out.insert("envelope".into(), Value::Null);
            out.insert("decode_error".into(), Value::from(e.to_string()));
        }
    }
    out.insert("properties".into(), properties_to_json(&dl.properties));
    out.insert("headers".into(), table_to_json(&dl.headers()));
    out.insert("body_base64".into(), Value::from(BASE64.encode(&dl.body)));
    Value::Object(out)
}

/// What `import` takes from a line.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The logical queue whose DLQ it goes back to.
    pub queue: String,
    /// Its properties, headers included.
    pub properties: BasicProperties,
    /// Its body.
    pub body: Vec<u8>,
    /// The task id, for messages.
    pub task_id: String,
}

/// Reads one exported line.
///
/// # Errors
///
/// A message naming what is missing or malformed.
pub fn parse_line(line: &str) -> Result<Imported, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let obj = value.as_object().ok_or("not a JSON object")?;
    let queue = obj
        .get("dlq_queue")
        .or_else(|| obj.get("queue"))
        .and_then(Value::as_str)
        .ok_or("missing \"queue\"")?
        .to_owned();
    let body = obj
        .get("body_base64")
        .and_then(Value::as_str)
        .ok_or("missing \"body_base64\"")?;
    let body = BASE64
        .decode(body)
        .map_err(|e| format!("body_base64: {e}"))?;
    let headers = match obj.get("headers") {
        None | Some(Value::Null) => None,
        Some(Value::Object(map)) => Some(table_from_json(map).map_err(|e| format!("headers.{e}"))?),
        Some(_) => return Err("headers: not an object".into()),
    };
    let mut properties = match obj.get("properties") {
        None | Some(Value::Null) => BasicProperties::default(),
        Some(Value::Object(map)) => {
            properties_from_json(map).map_err(|e| format!("properties.{e}"))?
        }
        Some(_) => return Err("properties: not an object".into()),
    };
    if let Some(headers) = headers {
        properties = properties.with_headers(headers);
    }
    let task_id = obj
        .get("task_id")
        .and_then(Value::as_str)
        .unwrap_or("-")
        .to_owned();
    Ok(Imported {
        queue,
        properties,
        body,
        task_id,
    })
}

/// Unix milliseconds as RFC 3339 (UTC, milliseconds).
pub fn rfc3339(ms: u64) -> String {
    let ms = i64::try_from(ms).unwrap_or(i64::MAX);
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        None => ms.to_string(),
    }
}

/// AMQP properties as a JSON object (headers excluded: see
/// [`table_to_json`]).
pub fn properties_to_json(p: &BasicProperties) -> Value {
    let mut m = Map::new();
    let mut s = |k: &str, v: &Option<ShortString>| {
        if let Some(v) = v {
            m.insert(k.into(), Value::from(v.as_str()));
        }
    };
    s("content_type", p.content_type());
    s("content_encoding", p.content_encoding());
    s("correlation_id", p.correlation_id());
    s("reply_to", p.reply_to());
    s("expiration", p.expiration());
    s("message_id", p.message_id());
    s("type", p.kind());
    s("user_id", p.user_id());
    s("app_id", p.app_id());
    s("cluster_id", p.cluster_id());
    if let Some(v) = p.delivery_mode() {
        m.insert("delivery_mode".into(), Value::from(*v));
    }
    if let Some(v) = p.priority() {
        m.insert("priority".into(), Value::from(*v));
    }
    if let Some(v) = p.timestamp() {
        m.insert("timestamp".into(), Value::from(*v));
    }
    Value::Object(m)
}

fn properties_from_json(m: &Map<String, Value>) -> Result<BasicProperties, String> {
    let mut p = BasicProperties::default();
    for (key, value) in m {
        let text = || {
            value
                .as_str()
                .map(|s| ShortString::from(s.to_owned()))
                .ok_or_else(|| format!("{key}: not a string"))
        };
        let number = || value.as_u64().ok_or_else(|| format!("{key}: not a number"));
        let byte =
            || number().and_then(|n| u8::try_from(n).map_err(|_| format!("{key}: out of range")));
        p = match key.as_str() {
            "content_type" => p.with_content_type(text()?),
            "content_encoding" => p.with_content_encoding(text()?),
            "correlation_id" => p.with_correlation_id(text()?),
            "reply_to" => p.with_reply_to(text()?),
            "expiration" => p.with_expiration(text()?),
            "message_id" => p.with_message_id(text()?),
            "type" => p.with_type(text()?),
            "user_id" => p.with_user_id(text()?),
            "app_id" => p.with_app_id(text()?),
            "cluster_id" => p.with_cluster_id(text()?),
            "delivery_mode" => p.with_delivery_mode(byte()?),
            "priority" => p.with_priority(byte()?),
            "timestamp" => p.with_timestamp(number()?),
            _ => p,
        };
    }
    Ok(p)
}

/// A field table as JSON, each value tagged with its type.
pub fn table_to_json(table: &FieldTable) -> Value {
    Value::Object(
        table
            .inner()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), value_to_json(v)))
            .collect(),
    )
}

fn value_to_json(value: &AMQPValue) -> Value {
    let (tag, v) = match value {
        AMQPValue::Boolean(b) => ("bool", Value::from(*b)),
        AMQPValue::ShortShortInt(n) => ("i8", Value::from(*n)),
        AMQPValue::ShortShortUInt(n) => ("u8", Value::from(*n)),
        AMQPValue::ShortInt(n) => ("i16", Value::from(*n)),
        AMQPValue::ShortUInt(n) => ("u16", Value::from(*n)),
        AMQPValue::LongInt(n) => ("i32", Value::from(*n)),
        AMQPValue::LongUInt(n) => ("u32", Value::from(*n)),
        AMQPValue::LongLongInt(n) => ("i64", Value::from(*n)),
        AMQPValue::Float(f) => ("f32", Value::from(*f)),
        AMQPValue::Double(f) => ("f64", Value::from(*f)),
        AMQPValue::DecimalValue(d) => ("decimal", json!({"scale": d.scale, "value": d.value})),
        AMQPValue::ShortString(s) => ("short_string", Value::from(s.as_str())),
        AMQPValue::LongString(s) => match std::str::from_utf8(s.as_bytes()) {
            Ok(text) => ("string", Value::from(text)),
            Err(_) => ("string_base64", Value::from(BASE64.encode(s.as_bytes()))),
        },
        AMQPValue::FieldArray(a) => (
            "array",
            Value::Array(a.as_slice().iter().map(value_to_json).collect()),
        ),
        AMQPValue::Timestamp(t) => ("timestamp", Value::from(*t)),
        AMQPValue::FieldTable(t) => ("table", table_to_json(t)),
        AMQPValue::ByteArray(b) => ("bytes_base64", Value::from(BASE64.encode(b.as_slice()))),
        AMQPValue::Void => ("void", Value::Null),
    };
    let mut m = Map::new();
    m.insert(tag.into(), v);
    Value::Object(m)
}

fn table_from_json(m: &Map<String, Value>) -> Result<FieldTable, String> {
    let mut map = BTreeMap::new();
    for (k, v) in m {
        let key = ShortString::from(k.clone());
        map.insert(key, value_from_json(v).map_err(|e| format!("{k}: {e}"))?);
    }
    Ok(FieldTable::from(map))
}

fn value_from_json(v: &Value) -> Result<AMQPValue, String> {
    let obj = v
        .as_object()
        .filter(|o| o.len() == 1)
        .ok_or("expected an object with one type tag, like {\"string\": \"...\"}")?;
    let Some((tag, v)) = obj.iter().next() else {
        return Err("empty value".into());
    };
    fn int<T: TryFrom<i64>>(v: &Value) -> Result<T, String> {
        v.as_i64()
            .and_then(|n| T::try_from(n).ok())
            .ok_or_else(|| format!("{v} is not an integer of that width"))
    }
    let text = || v.as_str().ok_or_else(|| format!("{v} is not a string"));
    let b64 = || text().and_then(|s| BASE64.decode(s).map_err(|e| format!("bad base64 ({e})")));
    Ok(match tag.as_str() {
        "bool" => AMQPValue::Boolean(v.as_bool().ok_or("not a boolean")?),
        "i8" => AMQPValue::ShortShortInt(int(v)?),
        "u8" => AMQPValue::ShortShortUInt(int(v)?),
        "i16" => AMQPValue::ShortInt(int(v)?),
        "u16" => AMQPValue::ShortUInt(int(v)?),
        "i32" => AMQPValue::LongInt(int(v)?),
        "u32" => AMQPValue::LongUInt(int(v)?),
        "i64" => AMQPValue::LongLongInt(int(v)?),
        "f32" => AMQPValue::Float(v.as_f64().ok_or("not a number")? as f32),
        "f64" => AMQPValue::Double(v.as_f64().ok_or("not a number")?),
        "decimal" => AMQPValue::DecimalValue(DecimalValue {
            scale: int(v.get("scale").ok_or("decimal without scale")?)?,
            value: int(v.get("value").ok_or("decimal without value")?)?,
        }),
        "short_string" => AMQPValue::ShortString(ShortString::from(text()?.to_owned())),
        "string" => AMQPValue::LongString(text()?.into()),
        "string_base64" => AMQPValue::LongString(b64()?.into()),
        "array" => AMQPValue::FieldArray(FieldArray::from(
            v.as_array()
                .ok_or("not an array")?
                .iter()
                .map(value_from_json)
                .collect::<Result<Vec<_>, _>>()?,
        )),
        "timestamp" => AMQPValue::Timestamp(v.as_u64().ok_or("not a timestamp")?),
        "table" => AMQPValue::FieldTable(table_from_json(v.as_object().ok_or("not an object")?)?),
        "bytes_base64" => AMQPValue::ByteArray(ByteArray::from(b64()?)),
        "void" => AMQPValue::Void,
        other => return Err(format!("unknown type tag {other:?}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_round_trips() {
        let mut inner = FieldTable::default();
        inner.insert("count".into(), AMQPValue::LongLongInt(2));
        inner.insert("time".into(), AMQPValue::Timestamp(1_700_000_000));
        let mut t = FieldTable::default();
        t.insert("a".into(), AMQPValue::Boolean(true));
        t.insert("b".into(), AMQPValue::ShortShortInt(-3));
        t.insert("c".into(), AMQPValue::ShortShortUInt(3));
        t.insert("d".into(), AMQPValue::ShortInt(-300));
        t.insert("e".into(), AMQPValue::ShortUInt(300));
        t.insert("f".into(), AMQPValue::LongInt(-70000));
        t.insert("g".into(), AMQPValue::LongUInt(70000));
        t.insert("h".into(), AMQPValue::LongLongInt(i64::MIN));
        t.insert("i".into(), AMQPValue::Double(1.5));
        t.insert("j".into(), AMQPValue::LongString("héllo".into()));
        t.insert("k".into(), AMQPValue::LongString(vec![0xff, 0x00].into()));
        t.insert(
            "l".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(inner)])),
        );
        t.insert(
            "m".into(),
            AMQPValue::ByteArray(ByteArray::from(vec![1u8, 2])),
        );
        t.insert("n".into(), AMQPValue::Void);
        t.insert(
            "o".into(),
            AMQPValue::DecimalValue(DecimalValue { scale: 2, value: 5 }),
        );
        let json = table_to_json(&t);
        let back = table_from_json(json.as_object().expect("object")).expect("parses");
        assert_eq!(back, t);
    }

    #[test]
    fn properties_round_trip() {
        let p = BasicProperties::default()
            .with_message_id("id".into())
            .with_content_type("application/x-msgpack".into())
            .with_delivery_mode(2)
            .with_priority(3)
            .with_timestamp(17)
            .with_type("t".into());
        let json = properties_to_json(&p);
        let back = properties_from_json(json.as_object().expect("object")).expect("parses");
        assert_eq!(back, p);
    }

    #[test]
    fn bad_lines_are_named() {
        assert!(parse_line("nope").is_err());
        assert!(parse_line("{}").expect_err("an error").contains("queue"));
        assert!(parse_line(r#"{"queue":"q"}"#)
            .expect_err("an error")
            .contains("body_base64"));
        assert!(
            parse_line(r#"{"queue":"q","body_base64":"","headers":{"x":{"huh":1}}}"#)
                .expect_err("an error")
                .contains("headers.x")
        );
    }
}
