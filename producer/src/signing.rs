//! Signed task messages: [`celeriac_schema::signing`] applied to AMQP
//! properties and headers.
//!
//! A task message is signed over its body, its `message_id` and the
//! headers of [`TASK_FIELDS`](celeriac_schema::signing::TASK_FIELDS); the
//! signature goes in the `celeriac-signature` header. A
//! [`Producer`](crate::Producer) built with
//! [`signing`](crate::ProducerBuilder::signing) signs every task it
//! publishes; workers and the dead-letter tool use [`verify_properties`]
//! and [`sign_properties`].
//!
//! # Example
//!
//! ```
//! use celeriac_producer::publish::{envelope_headers, envelope_properties};
//! use celeriac_producer::signing::{sign_headers, verify_properties};
//! use celeriac_schema::signing::Keyring;
//! use celeriac_schema::{encode, Envelope};
//!
//! let ring = Keyring::new("k1", &[42; 32])?;
//! let env = Envelope::new("ping", rmpv::Value::Nil);
//! let body = encode(&env)?;
//! let mut headers = envelope_headers(&env, "default");
//! sign_headers(&ring, &env.id.to_string(), &mut headers, &body)?;
//! let props = envelope_properties(&env, headers);
//! assert_eq!(verify_properties(&ring, &props, &body), Ok("k1"));
//! # Ok::<(), celeriac_schema::Error>(())
//! ```

use std::path::Path;

use celeriac_schema::signing::{
    FieldValue, Keyring, SignatureError, TaskFields, MESSAGE_ID, SIGNATURE_HEADER,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;

use crate::error::{Error, Result};
use crate::publish::long_string;

/// Reads a key file: one key per line, `<key-id> <base64 secret>`; `#`
/// comments and blank lines are ignored; the first key signs, all verify
/// (see [`Keyring::parse`]).
///
/// # Errors
///
/// [`Error::SigningKeys`] naming the file, and the line for a bad key.
pub fn load_keyring(path: &Path) -> Result<Keyring> {
    let bad = |reason: String| Error::SigningKeys {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    Keyring::parse(&text).map_err(|e| bad(e.to_string()))
}

/// The value of header `name` as a signed field: text and byte arrays as
/// their bytes, integers of any AMQP width as integers; `None` when absent.
///
/// # Errors
///
/// [`SignatureError::Malformed`] for a value of another type (a boolean, a
/// float, a table, ...), which no signer writes.
pub fn header_field<'a>(
    table: Option<&'a FieldTable>,
    name: &str,
) -> Result<Option<FieldValue<'a>>, SignatureError> {
    let Some(value) = table.and_then(|t| t.inner().get(name)) else {
        return Ok(None);
    };
    let field = match value {
        AMQPValue::LongString(s) => FieldValue::Bytes(s.as_bytes()),
        AMQPValue::ShortString(s) => FieldValue::Bytes(s.as_str().as_bytes()),
        AMQPValue::ByteArray(b) => FieldValue::Bytes(b.as_slice()),
        AMQPValue::LongLongInt(n) => FieldValue::Int(*n),
        AMQPValue::LongInt(n) => FieldValue::Int(i64::from(*n)),
        AMQPValue::LongUInt(n) => FieldValue::Int(i64::from(*n)),
        AMQPValue::ShortInt(n) => FieldValue::Int(i64::from(*n)),
        AMQPValue::ShortUInt(n) => FieldValue::Int(i64::from(*n)),
        AMQPValue::ShortShortInt(n) => FieldValue::Int(i64::from(*n)),
        AMQPValue::ShortShortUInt(n) => FieldValue::Int(i64::from(*n)),
        other => {
            return Err(SignatureError::Malformed {
                reason: format!(
                    "signed header {name} holds a {:?} value, not a string or an integer",
                    other.get_type()
                ),
            })
        }
    };
    Ok(Some(field))
}

/// The signed fields of a task message with this `message_id` and header
/// table.
///
/// # Errors
///
/// As [`header_field`].
pub fn task_fields<'a>(
    message_id: Option<&'a str>,
    table: Option<&'a FieldTable>,
) -> Result<TaskFields<'a>, SignatureError> {
    TaskFields::collect(|name| {
        if name == MESSAGE_ID {
            Ok(message_id.map(FieldValue::from))
        } else {
            header_field(table, name)
        }
    })
}

/// The signed fields of a task message with these properties.
///
/// # Errors
///
/// As [`header_field`].
pub fn properties_fields(properties: &BasicProperties) -> Result<TaskFields<'_>, SignatureError> {
    task_fields(
        properties.message_id().as_ref().map(|id| id.as_str()),
        properties.headers().as_ref(),
    )
}

/// The `celeriac-signature` header of a table, if any.
///
/// # Errors
///
/// [`SignatureError::Malformed`] when it is not a UTF-8 string.
pub fn signature_header(table: Option<&FieldTable>) -> Result<Option<&str>, SignatureError> {
    let Some(value) = table.and_then(|t| t.inner().get(SIGNATURE_HEADER)) else {
        return Ok(None);
    };
    let bytes = match value {
        AMQPValue::LongString(s) => s.as_bytes(),
        AMQPValue::ShortString(s) => s.as_str().as_bytes(),
        AMQPValue::ByteArray(b) => b.as_slice(),
        _ => {
            return Err(SignatureError::Malformed {
                reason: format!("{SIGNATURE_HEADER} is not a string"),
            })
        }
    };
    std::str::from_utf8(bytes)
        .map(Some)
        .map_err(|_| SignatureError::Malformed {
            reason: format!("{SIGNATURE_HEADER} is not UTF-8"),
        })
}

/// Signs a task message whose headers are `table` (and whose
/// `message_id` is `message_id`) and puts the signature into `table`.
///
/// # Errors
///
/// As [`header_field`]: a signed header of a type that cannot be signed.
pub fn sign_headers(
    keyring: &Keyring,
    message_id: &str,
    table: &mut FieldTable,
    body: &[u8],
) -> Result<(), SignatureError> {
    let signature = {
        let fields = task_fields(Some(message_id), Some(table))?;
        keyring.sign(fields.as_slice(), body)
    };
    table.insert(SIGNATURE_HEADER.into(), long_string(&signature));
    Ok(())
}

/// `properties` with the signature of the message they describe (with
/// `body`), replacing any signature they held.
///
/// # Errors
///
/// As [`header_field`].
pub fn sign_properties(
    keyring: &Keyring,
    properties: BasicProperties,
    body: &[u8],
) -> Result<BasicProperties, SignatureError> {
    let signature = {
        let fields = properties_fields(&properties)?;
        keyring.sign(fields.as_slice(), body)
    };
    let mut table = properties.headers().clone().unwrap_or_default();
    table.insert(SIGNATURE_HEADER.into(), long_string(&signature));
    Ok(properties.with_headers(table))
}

/// Verifies the signature of a task message; returns the id of the key
/// that signed it.
///
/// # Errors
///
/// [`SignatureError::Missing`], [`SignatureError::UnknownKey`],
/// [`SignatureError::Mismatch`], or [`SignatureError::Malformed`] for a
/// signature header, or a signed header, that cannot be read.
pub fn verify_properties<'k>(
    keyring: &'k Keyring,
    properties: &BasicProperties,
    body: &[u8],
) -> Result<&'k str, SignatureError> {
    let table = properties.headers().as_ref();
    let signature = signature_header(table)?;
    let fields = properties_fields(properties)?;
    keyring.verify(signature, fields.as_slice(), body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::{envelope_headers, envelope_properties};
    use celeriac_schema::{encode, headers, Envelope};

    fn ring(id: &str, byte: u8) -> Keyring {
        Keyring::new(id, &[byte; 32]).expect("a valid key")
    }

    fn signed(ring: &Keyring) -> (BasicProperties, Vec<u8>) {
        let env = Envelope::new("ping", rmpv::Value::Nil);
        let body = encode(&env).expect("encodes");
        let mut table = envelope_headers(&env, "default");
        sign_headers(ring, &env.id.to_string(), &mut table, &body).expect("signs");
        (envelope_properties(&env, table), body)
    }

    fn with_header(props: &BasicProperties, name: &str, value: AMQPValue) -> BasicProperties {
        let mut table = props.headers().clone().unwrap_or_default();
        table.insert(name.into(), value);
        props.clone().with_headers(table)
    }

    #[test]
    fn signed_messages_verify_and_tampering_does_not() {
        let k = ring("k1", 1);
        let (props, body) = signed(&k);
        assert_eq!(verify_properties(&k, &props, &body), Ok("k1"));
        let mismatch = Err(SignatureError::Mismatch {
            key_id: "k1".into(),
        });
        let mut flipped = body.clone();
        flipped[3] ^= 1;
        assert_eq!(verify_properties(&k, &props, &flipped), mismatch);
        let attempt = with_header(&props, headers::ATTEMPT, AMQPValue::LongLongInt(1));
        assert_eq!(verify_properties(&k, &attempt, &body), mismatch);
        let task = with_header(&props, headers::TASK, long_string("other"));
        assert_eq!(verify_properties(&k, &task, &body), mismatch);
        let id = props.clone().with_message_id("another".into());
        assert_eq!(verify_properties(&k, &id, &body), mismatch);
        let added = with_header(&props, headers::GROUP_ID, long_string("g"));
        assert_eq!(verify_properties(&k, &added, &body), mismatch);
    }

    #[test]
    fn unsigned_headers_and_integer_widths_do_not_matter() {
        let k = ring("k1", 1);
        let (props, body) = signed(&k);
        let queue = with_header(&props, headers::QUEUE, long_string("elsewhere"));
        let reason = with_header(&queue, headers::REASON, long_string("rejected"));
        assert_eq!(verify_properties(&k, &reason, &body), Ok("k1"));
        // pika writes small integers as a 32-bit `I`.
        let narrow = with_header(&props, headers::ATTEMPT, AMQPValue::LongInt(0));
        assert_eq!(verify_properties(&k, &narrow, &body), Ok("k1"));
    }

    #[test]
    fn missing_unknown_and_malformed_are_told_apart() {
        let k = ring("k1", 1);
        let (props, body) = signed(&k);
        let env = celeriac_schema::decode(&body).expect("decodes");
        let unsigned = envelope_properties(&env, envelope_headers(&env, "default"));
        assert_eq!(
            verify_properties(&k, &unsigned, &body),
            Err(SignatureError::Missing)
        );
        let (other, other_body) = signed(&ring("gone", 2));
        assert_eq!(
            verify_properties(&k, &other, &other_body),
            Err(SignatureError::UnknownKey {
                key_id: "gone".into()
            })
        );
        let not_text = with_header(&props, SIGNATURE_HEADER, AMQPValue::Boolean(true));
        assert!(matches!(
            verify_properties(&k, &not_text, &body),
            Err(SignatureError::Malformed { .. })
        ));
        let odd = with_header(&props, headers::ATTEMPT, AMQPValue::Double(0.0));
        assert!(matches!(
            verify_properties(&k, &odd, &body),
            Err(SignatureError::Malformed { .. })
        ));
    }

    #[test]
    fn sign_properties_replaces_an_old_signature() {
        let old = ring("old", 1);
        let new = ring("new", 2);
        let (props, body) = signed(&old);
        let again = sign_properties(&new, props, &body).expect("signs");
        assert_eq!(verify_properties(&new, &again, &body), Ok("new"));
    }

    #[test]
    fn key_files_name_the_file_and_the_line() {
        let dir = std::env::temp_dir().join(format!("celeriac-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("keys");
        std::fs::write(&path, "k1 c2VjcmV0LXNlY3JldC1zZWNyZXQ=\nk2\n").expect("write");
        let err = load_keyring(&path).expect_err("line 2 is bad").to_string();
        assert!(err.contains("keys: line 2: "), "{err}");
        let missing = load_keyring(&dir.join("absent"))
            .expect_err("no such file")
            .to_string();
        assert!(missing.contains("cannot read it"), "{missing}");
        std::fs::write(&path, "k1 c2VjcmV0LXNlY3JldC1zZWNyZXQ=\n").expect("write");
        assert_eq!(load_keyring(&path).expect("loads").signing_key_id(), "k1");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
