//! MessagePack values as JSON, without loss (SPEC.md section 18.6).
//!
//! Results are MessagePack; `celeriac status --json` and other JSON
//! outputs show them with this mapping. Every MessagePack value has exactly
//! one JSON form, and [`from_json`] gives the value back. Values JSON can
//! say are written as themselves; the others become a **tag**, a JSON
//! object with exactly one member whose name starts with `$`:
//!
//! | MessagePack | JSON |
//! |---|---|
//! | nil, bool | `null`, `true` / `false` |
//! | integer with `-(2^53 - 1) <= n <= 2^53 - 1` | a number without fraction: `42`, `-7` |
//! | any other integer | `{"$int": "18446744073709551615"}` (decimal) |
//! | finite float32 or float64 | a number with a fraction or exponent: `0.5`, `2.0`, `1e300` (float32 widened to float64) |
//! | NaN, infinities | `{"$float": "NaN"}`, `{"$float": "Infinity"}`, `{"$float": "-Infinity"}` |
//! | str holding UTF-8 | a string |
//! | str holding bytes that are not UTF-8 | `{"$str": "<base64>"}` |
//! | bin | `{"$bin": "<base64>"}` |
//! | ext | `{"$ext": {"type": -128..127, "data": "<base64>"}}` |
//! | array | an array |
//! | map whose keys are distinct strings, unless it has exactly one key and that key starts with `$` | an object |
//! | any other map | `{"$map": [[key, value], ...]}`, entries in order |
//!
//! Base64 is standard (RFC 4648 section 4, `+` and `/`) with padding.
//! A stored result that is not exactly one MessagePack value (the store
//! holds something no worker wrote) is shown as `{"$raw": "<base64>"}`.
//!
//! # Examples
//!
//! ```
//! use celeriac_schema::json_value::{from_json, to_json};
//! use rmpv::Value;
//!
//! let value = Value::Map(vec![
//!     (Value::from("photo"), Value::Binary(vec![0xff, 0xd8])),
//!     (Value::from("size"), Value::from(u64::MAX)),
//! ]);
//! let json = to_json(&value);
//! assert_eq!(
//!     json,
//!     serde_json::json!({"photo": {"$bin": "/9g="}, "size": {"$int": "18446744073709551615"}})
//! );
//! assert_eq!(from_json(&json).unwrap(), value);
//! ```

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use rmpv::Value;
use serde_json::{Map, Number, Value as Json};

use crate::{Error, Result};

/// The largest integer every JSON reader holds exactly: `2^53 - 1`.
pub const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// The value as JSON, by the mapping of this module.
pub fn to_json(value: &Value) -> Json {
    match value {
        Value::Nil => Json::Null,
        Value::Boolean(b) => Json::Bool(*b),
        Value::Integer(n) => {
            if let Some(i) = n
                .as_i64()
                .filter(|i| (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(i))
            {
                Json::from(i)
            } else {
                let text = match (n.as_i64(), n.as_u64()) {
                    (Some(i), _) => i.to_string(),
                    (None, Some(u)) => u.to_string(),
                    (None, None) => String::new(),
                };
                tag("$int", Json::String(text))
            }
        }
        Value::F32(f) => float(f64::from(*f)),
        Value::F64(f) => float(*f),
        Value::String(s) => match s.as_str() {
            Some(text) => Json::String(text.to_owned()),
            None => tag("$str", Json::String(BASE64.encode(s.as_bytes()))),
        },
        Value::Binary(bytes) => tag("$bin", Json::String(BASE64.encode(bytes))),
        Value::Ext(kind, data) => tag(
            "$ext",
            serde_json::json!({ "type": kind, "data": BASE64.encode(data) }),
        ),
        Value::Array(items) => Json::Array(items.iter().map(to_json).collect()),
        Value::Map(entries) => match as_object(entries) {
            Some(object) => Json::Object(object),
            None => tag(
                "$map",
                Json::Array(
                    entries
                        .iter()
                        .map(|(k, v)| Json::Array(vec![to_json(k), to_json(v)]))
                        .collect(),
                ),
            ),
        },
    }
}

/// Stored MessagePack bytes as JSON: the one value they hold, or
/// `{"$raw": "<base64>"}` when they are not exactly one MessagePack value.
///
/// # Examples
///
/// ```
/// use celeriac_schema::json_value::bytes_to_json;
///
/// assert_eq!(bytes_to_json(&[0x05]), serde_json::json!(5));
/// assert_eq!(bytes_to_json(&[0x05, 0x06]), serde_json::json!({"$raw": "BQY="}));
/// ```
pub fn bytes_to_json(bytes: &[u8]) -> Json {
    // The walk refuses what the value reader lets through (the reserved
    // marker `c1`, bytes after the value) without recursing.
    let limits = crate::DecodeLimits {
        max_bytes: usize::MAX,
        max_depth: MAX_RESULT_DEPTH,
    };
    if crate::check_limits(bytes, &limits).is_err() {
        return tag("$raw", Json::String(BASE64.encode(bytes)));
    }
    let mut rest = bytes;
    match rmpv::decode::read_value_with_max_depth(&mut rest, MAX_RESULT_DEPTH + 1) {
        Ok(value) if rest.is_empty() => to_json(&value),
        _ => tag("$raw", Json::String(BASE64.encode(bytes))),
    }
}

/// The deepest nesting [`bytes_to_json`] reads; deeper bytes show raw.
pub const MAX_RESULT_DEPTH: usize = 512;

/// The MessagePack value a JSON form stands for: the inverse of
/// [`to_json`] (float32 comes back as float64).
///
/// # Errors
///
/// [`Error::Field`] naming the path of a tag that is unknown or malformed
/// (`$bin` whose text is not base64, `$int` that is not an integer, ...).
/// `$raw` is an error too: it stands for bytes, not for a value.
pub fn from_json(json: &Json) -> Result<Value> {
    from_json_at(json, "")
}

fn from_json_at(json: &Json, path: &str) -> Result<Value> {
    let bad = |message: String| Error::Field {
        field: if path.is_empty() {
            ".".into()
        } else {
            path.to_owned()
        },
        message,
    };
    Ok(match json {
        Json::Null => Value::Nil,
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => {
            if let Some(u) = n.as_u64() {
                Value::from(u)
            } else if let Some(i) = n.as_i64() {
                Value::from(i)
            } else {
                Value::F64(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Json::String(s) => Value::from(s.as_str()),
        Json::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| from_json_at(item, &format!("{path}[{i}]")))
                .collect::<Result<_>>()?,
        ),
        Json::Object(object) => {
            if let Some((name, inner)) = single_tag(object) {
                let text = || {
                    inner
                        .as_str()
                        .ok_or_else(|| bad(format!("`{name}` holds {inner}, not a string")))
                };
                let base64 = |s: &str| {
                    BASE64
                        .decode(s)
                        .map_err(|e| bad(format!("`{name}`: not base64 ({e})")))
                };
                return match name {
                    "$int" => {
                        let t = text()?;
                        if let Ok(u) = t.parse::<u64>() {
                            Ok(Value::from(u))
                        } else {
                            t.parse::<i64>()
                                .map(Value::from)
                                .map_err(|_| bad(format!("`$int`: {t:?} is not a 64-bit integer")))
                        }
                    }
                    "$float" => match text()? {
                        "NaN" => Ok(Value::F64(f64::NAN)),
                        "Infinity" => Ok(Value::F64(f64::INFINITY)),
                        "-Infinity" => Ok(Value::F64(f64::NEG_INFINITY)),
                        other => Err(bad(format!(
                            "`$float`: {other:?} is not NaN or an infinity"
                        ))),
                    },
                    // Bytes that are not UTF-8 stay as they are.
                    "$str" => Ok(Value::String(match String::from_utf8(base64(text()?)?) {
                        Ok(text) => text.into(),
                        Err(e) => raw_utf8(e.into_bytes()),
                    })),
                    "$bin" => Ok(Value::Binary(base64(text()?)?)),
                    "$ext" => {
                        let kind = inner
                            .get("type")
                            .and_then(Json::as_i64)
                            .and_then(|k| i8::try_from(k).ok())
                            .ok_or_else(|| bad("`$ext`: `type` is not -128 to 127".into()))?;
                        let data = inner
                            .get("data")
                            .and_then(Json::as_str)
                            .ok_or_else(|| bad("`$ext`: `data` is not a string".into()))?;
                        Ok(Value::Ext(kind, base64(data)?))
                    }
                    "$map" => {
                        let pairs = inner
                            .as_array()
                            .ok_or_else(|| bad("`$map` holds no array".into()))?;
                        pairs
                            .iter()
                            .enumerate()
                            .map(|(i, pair)| match pair.as_array().map(Vec::as_slice) {
                                Some([k, v]) => Ok((
                                    from_json_at(k, &format!("{path}.$map[{i}][0]"))?,
                                    from_json_at(v, &format!("{path}.$map[{i}][1]"))?,
                                )),
                                _ => Err(bad(format!(
                                    "`$map`: entry {i} is not a [key, value] pair"
                                ))),
                            })
                            .collect::<Result<Vec<_>>>()
                            .map(Value::Map)
                    }
                    other => Err(bad(format!("unknown tag `{other}`"))),
                };
            }
            Value::Map(
                object
                    .iter()
                    .map(|(k, v)| {
                        let at = if path.is_empty() {
                            k.clone()
                        } else {
                            format!("{path}.{k}")
                        };
                        Ok((Value::from(k.as_str()), from_json_at(v, &at)?))
                    })
                    .collect::<Result<_>>()?,
            )
        }
    })
}

/// A `Utf8String` holding bytes that are not UTF-8.
fn raw_utf8(bytes: Vec<u8>) -> rmpv::Utf8String {
    // rmpv keeps invalid UTF-8 of a decoded str as bytes; decoding a str
    // header around them is the one public way to build such a value.
    let mut encoded = Vec::with_capacity(bytes.len() + 5);
    let _ = rmp::encode::write_str_len(&mut encoded, bytes.len() as u32);
    encoded.extend_from_slice(&bytes);
    match rmpv::decode::read_value(&mut encoded.as_slice()) {
        Ok(Value::String(s)) => s,
        _ => rmpv::Utf8String::from(String::from_utf8_lossy(&bytes).into_owned()),
    }
}

/// `{"name": inner}` for the one-member object of a tag.
fn tag(name: &str, inner: Json) -> Json {
    let mut object = Map::new();
    object.insert(name.to_owned(), inner);
    Json::Object(object)
}

/// The tag name and its content, when `object` is a tag.
fn single_tag(object: &Map<String, Json>) -> Option<(&str, &Json)> {
    match object.iter().next() {
        Some((name, inner)) if object.len() == 1 && name.starts_with('$') => {
            Some((name.as_str(), inner))
        }
        _ => None,
    }
}

/// A finite float as a number, NaN and the infinities as `$float`.
fn float(f: f64) -> Json {
    match Number::from_f64(f) {
        Some(n) => Json::Number(n),
        None if f.is_nan() => tag("$float", Json::String("NaN".into())),
        None if f > 0.0 => tag("$float", Json::String("Infinity".into())),
        None => tag("$float", Json::String("-Infinity".into())),
    }
}

/// The entries as a JSON object, when they can be one without loss.
fn as_object(entries: &[(Value, Value)]) -> Option<Map<String, Json>> {
    let mut object = Map::new();
    for (key, value) in entries {
        let key = key.as_str()?;
        if object.insert(key.to_owned(), to_json(value)).is_some() {
            return None;
        }
    }
    if single_tag(&object).is_some() {
        return None;
    }
    Some(object)
}
