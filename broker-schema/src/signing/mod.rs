//! Signed envelopes: an HMAC-SHA256 over a message body and the headers
//! that matter, so a worker runs only what a holder of a shared key sent.
//!
//! The signature covers a **canonical byte string** built from a list of
//! named fields and the body ([`canonical`]); for task messages the fields
//! are the task id and the headers of [`TASK_FIELDS`], collected with
//! [`TaskFields`]. The API takes any body and any list of `(name, value)`
//! pairs, so other kinds of messages can be signed with the same
//! [`Keyring`].
//!
//! The signature travels in the header [`SIGNATURE_HEADER`] as
//! `hmac-sha256-v1:<key-id>:<64 hex digits>`: the algorithm and version,
//! the id of the key that signed, the MAC. A [`Keyring`] signs with its
//! first key and verifies with all of them, so keys rotate without a
//! flag day. `SPEC.md` (section 15) specifies the same for other
//! languages, and `golden/signatures.json` pins exact bytes.
//!
//! # Example
//!
//! ```
//! use celeriac_schema::signing::{FieldValue, Keyring, SignatureError};
//!
//! let ring = Keyring::new("k1", b"a secret of at least sixteen bytes")?;
//! let fields = [("celeriac-task", FieldValue::from("ping")), ("celeriac-attempt", FieldValue::Int(0))];
//! let signature = ring.sign(&fields, b"body");
//! assert!(signature.starts_with("hmac-sha256-v1:k1:"));
//! assert_eq!(ring.verify(Some(&signature), &fields, b"body"), Ok("k1"));
//! assert!(matches!(
//!     ring.verify(Some(&signature), &fields, b"tampered"),
//!     Err(SignatureError::Mismatch { .. })
//! ));
//! # Ok::<(), celeriac_schema::Error>(())
//! ```

mod keyring;

use hmac::Mac;

use crate::headers;

pub use keyring::{Keyring, MAX_KEY_ID_LEN, MIN_SECRET_BYTES};

/// The header that carries a message's signature.
pub const SIGNATURE_HEADER: &str = "celeriac-signature";

/// The algorithm and version named at the start of a signature header.
pub const ALGORITHM: &str = "hmac-sha256-v1";

/// The first bytes of every canonical string: the scheme and its version,
/// then a line feed.
pub const CANONICAL_TAG: &[u8] = b"celeriac-signature-v1\n";

/// The name under which a task message's AMQP `message_id` (its task id)
/// is signed.
pub const MESSAGE_ID: &str = "message_id";

/// The fields signed with the body of a task message, in canonical order:
/// the AMQP `message_id`, then the headers of the task name, attempt,
/// idempotency key and workflow, group and chord ids. A field the message
/// does not carry is left out. The workflow node id travels in the body
/// alone, which is signed whole.
pub const TASK_FIELDS: [&str; 7] = [
    MESSAGE_ID,
    headers::TASK,
    headers::ATTEMPT,
    headers::IDEMPOTENCY_KEY,
    headers::WORKFLOW_ID,
    headers::GROUP_ID,
    headers::CHORD_ID,
];

/// Bytes of a MAC (SHA-256).
pub const MAC_BYTES: usize = 32;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The value of a signed field.
///
/// Text is signed as its UTF-8 bytes; an integer as its decimal digits in
/// ASCII (`-` first when negative, no leading zeros), so that `3` sent as
/// an AMQP `I` by one client and as an `l` by another signs the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValue<'a> {
    /// Text or bytes, signed as they are.
    Bytes(&'a [u8]),
    /// An integer, signed as its decimal digits.
    Int(i64),
}

impl<'a> From<&'a str> for FieldValue<'a> {
    fn from(text: &'a str) -> Self {
        FieldValue::Bytes(text.as_bytes())
    }
}

impl<'a> From<&'a [u8]> for FieldValue<'a> {
    fn from(bytes: &'a [u8]) -> Self {
        FieldValue::Bytes(bytes)
    }
}

impl From<i64> for FieldValue<'_> {
    fn from(n: i64) -> Self {
        FieldValue::Int(n)
    }
}

/// One signed field: its name and value.
pub type Field<'a> = (&'a str, FieldValue<'a>);

/// Why a signature does not verify.
///
/// # Examples
///
/// ```
/// use celeriac_schema::signing::{Keyring, SignatureError};
///
/// let ring = Keyring::new("k1", &[7; 32])?;
/// assert_eq!(ring.verify(None, &[], b""), Err(SignatureError::Missing));
/// let err = ring.verify(Some("hmac-sha256-v1:old:00"), &[], b"").unwrap_err();
/// assert!(matches!(err, SignatureError::Malformed { .. }));
/// # Ok::<(), celeriac_schema::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The message carries no signature.
    #[error("the message carries no `celeriac-signature` header")]
    Missing,
    /// The signature names a key id the keyring does not hold (a removed
    /// key, or one never shared with this party).
    #[error("the message is signed with key {key_id:?}, which is not in the keyring")]
    UnknownKey {
        /// The key id the signature names.
        key_id: String,
    },
    /// The MAC does not match: the body or a signed field was changed, or
    /// the message was signed with another secret under that key id.
    #[error("the signature of key {key_id:?} does not match the message (its body or a signed header was changed, or another secret signed it)")]
    Mismatch {
        /// The key id the signature names.
        key_id: String,
    },
    /// The signature header, or a signed field, cannot be read.
    #[error("malformed signature: {reason}")]
    Malformed {
        /// What is wrong.
        reason: String,
    },
}

impl SignatureError {
    fn malformed(reason: impl Into<String>) -> Self {
        SignatureError::Malformed {
            reason: reason.into(),
        }
    }
}

/// The canonical byte string of `fields` and `body`: what the MAC is
/// computed over. All lengths are unsigned 64-bit big-endian integers:
///
/// ```text
/// "celeriac-signature-v1\n"
/// u64(number of fields)
/// for each field, in the order given: u64(len(name)) name u64(len(value)) value
/// u64(len(body)) body
/// ```
///
/// Signing does not build it (the MAC is fed the same bytes piece by
/// piece); it is here for tests and for implementers comparing bytes.
///
/// # Examples
///
/// ```
/// use celeriac_schema::signing::{canonical, FieldValue};
///
/// let bytes = canonical(&[("a", FieldValue::Int(-7))], b"xy");
/// let mut want = b"celeriac-signature-v1\n".to_vec();
/// want.extend_from_slice(&1u64.to_be_bytes());
/// want.extend_from_slice(&1u64.to_be_bytes());
/// want.extend_from_slice(b"a");
/// want.extend_from_slice(&2u64.to_be_bytes());
/// want.extend_from_slice(b"-7");
/// want.extend_from_slice(&2u64.to_be_bytes());
/// want.extend_from_slice(b"xy");
/// assert_eq!(bytes, want);
/// ```
pub fn canonical(fields: &[Field<'_>], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    feed(
        &mut |bytes: &[u8]| out.extend_from_slice(bytes),
        fields,
        body,
    );
    out
}

/// Feeds the canonical string of `fields` and `body` to `sink`, piece by
/// piece, without building it.
fn feed(sink: &mut impl FnMut(&[u8]), fields: &[Field<'_>], body: &[u8]) {
    sink(CANONICAL_TAG);
    sink(&len_prefix(fields.len()));
    for (name, value) in fields {
        sink(&len_prefix(name.len()));
        sink(name.as_bytes());
        match value {
            FieldValue::Bytes(bytes) => {
                sink(&len_prefix(bytes.len()));
                sink(bytes);
            }
            FieldValue::Int(n) => {
                let mut digits = [0u8; 20];
                let text = decimal(*n, &mut digits);
                sink(&len_prefix(text.len()));
                sink(text);
            }
        }
    }
    sink(&len_prefix(body.len()));
    sink(body);
}

fn len_prefix(len: usize) -> [u8; 8] {
    // usize is at most 64 bits on every supported target.
    (len as u64).to_be_bytes()
}

/// The decimal digits of `n` written into the end of `buf`.
fn decimal(n: i64, buf: &mut [u8; 20]) -> &[u8] {
    let mut magnitude = n.unsigned_abs();
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (magnitude % 10) as u8;
        magnitude /= 10;
        if magnitude == 0 {
            break;
        }
    }
    if n < 0 {
        start -= 1;
        buf[start] = b'-';
    }
    &buf[start..]
}

/// The MAC of `fields` and `body` under a keyed HMAC state.
fn mac(keyed: &HmacSha256, fields: &[Field<'_>], body: &[u8]) -> HmacSha256 {
    let mut mac = keyed.clone();
    feed(&mut |bytes: &[u8]| mac.update(bytes), fields, body);
    mac
}

/// The header value for a MAC made with key `key_id`.
fn header_value(key_id: &str, mac: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(ALGORITHM.len() + key_id.len() + 2 + 2 * mac.len());
    out.push_str(ALGORITHM);
    out.push(':');
    out.push_str(key_id);
    out.push(':');
    for byte in mac {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    out
}

/// A signature header split into its key id and MAC.
///
/// # Errors
///
/// [`SignatureError::Malformed`] when it is not
/// `hmac-sha256-v1:<key-id>:<64 hex digits>`.
///
/// # Examples
///
/// ```
/// let value = format!("hmac-sha256-v1:k1:{}", "ab".repeat(32));
/// let (key_id, mac) = celeriac_schema::signing::parse_signature(&value).unwrap();
/// assert_eq!((key_id, mac[0]), ("k1", 0xab));
/// ```
pub fn parse_signature(value: &str) -> Result<(&str, [u8; MAC_BYTES]), SignatureError> {
    let mut parts = value.split(':');
    let (Some(algorithm), Some(key_id), Some(hex), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SignatureError::malformed(format!(
            "expected `{ALGORITHM}:<key-id>:<mac>`, got {:?}",
            shorten(value)
        )));
    };
    if algorithm != ALGORITHM {
        return Err(SignatureError::malformed(format!(
            "unsupported algorithm {:?} (this build verifies {ALGORITHM})",
            shorten(algorithm)
        )));
    }
    if key_id.is_empty() {
        return Err(SignatureError::malformed("empty key id"));
    }
    let digits = hex.as_bytes();
    if digits.len() != 2 * MAC_BYTES {
        return Err(SignatureError::malformed(format!(
            "the MAC is {} hex digits, not {}",
            digits.len(),
            2 * MAC_BYTES
        )));
    }
    let mut mac = [0u8; MAC_BYTES];
    for (byte, pair) in mac.iter_mut().zip(digits.chunks_exact(2)) {
        match (hex_digit(pair[0]), hex_digit(pair[1])) {
            (Some(high), Some(low)) => *byte = high << 4 | low,
            _ => return Err(SignatureError::malformed("the MAC is not hexadecimal")),
        }
    }
    Ok((key_id, mac))
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// At most 80 characters of untrusted text, for error messages.
fn shorten(text: &str) -> &str {
    match text.char_indices().nth(80) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

/// The signed fields of one task message, collected in the order of
/// [`TASK_FIELDS`] without allocating.
///
/// # Examples
///
/// ```
/// use celeriac_schema::signing::{FieldValue, Keyring, TaskFields};
///
/// // Look the fields up wherever the message keeps them (AMQP properties
/// // and headers); absent ones are left out.
/// let fields = TaskFields::collect(|name| Ok(match name {
///     "message_id" => Some(FieldValue::from("01936b2e-8f40-7a1c-9d2e-3f4a5b6c7d8e")),
///     "celeriac-task" => Some(FieldValue::from("ping")),
///     "celeriac-attempt" => Some(FieldValue::Int(0)),
///     _ => None,
/// }))?;
/// assert_eq!(fields.as_slice().len(), 3);
/// let ring = Keyring::new("k1", &[1; 32]).unwrap();
/// let signature = ring.sign(fields.as_slice(), b"body");
/// assert!(ring.verify(Some(&signature), fields.as_slice(), b"body").is_ok());
/// # Ok::<(), celeriac_schema::signing::SignatureError>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct TaskFields<'a> {
    fields: [Field<'a>; TASK_FIELDS.len()],
    len: usize,
}

impl<'a> TaskFields<'a> {
    /// Asks `lookup` for each name of [`TASK_FIELDS`] in order and keeps
    /// the fields it finds.
    ///
    /// # Errors
    ///
    /// The first error `lookup` returns (a field of a type that cannot be
    /// signed).
    pub fn collect<F>(mut lookup: F) -> Result<Self, SignatureError>
    where
        F: FnMut(&'static str) -> Result<Option<FieldValue<'a>>, SignatureError>,
    {
        let mut fields = [("", FieldValue::Int(0)); TASK_FIELDS.len()];
        let mut len = 0;
        for name in TASK_FIELDS {
            if let Some(value) = lookup(name)? {
                fields[len] = (name, value);
                len += 1;
            }
        }
        Ok(TaskFields { fields, len })
    }

    /// The fields found, in canonical order.
    pub fn as_slice(&self) -> &[Field<'a>] {
        &self.fields[..self.len]
    }

    /// Whether both sign the same: the same names with the same canonical
    /// values (an integer equals its decimal text).
    pub fn signs_like(&self, other: &TaskFields<'_>) -> bool {
        canonical(self.as_slice(), &[]) == canonical(other.as_slice(), &[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_match_the_standard_formatting() {
        for n in [0, 1, 9, 10, 42, -1, -10, 1234567890, i64::MAX, i64::MIN] {
            let mut buf = [0u8; 20];
            assert_eq!(decimal(n, &mut buf), n.to_string().as_bytes(), "{n}");
        }
    }

    #[test]
    fn headers_round_trip() {
        let mac = [0x5au8; MAC_BYTES];
        let value = header_value("key-1.b_c", &mac);
        assert_eq!(parse_signature(&value), Ok(("key-1.b_c", mac)));
        let upper = value.to_uppercase().replacen(
            "HMAC-SHA256-V1:KEY-1.B_C",
            "hmac-sha256-v1:key-1.b_c",
            1,
        );
        assert_eq!(parse_signature(&upper), Ok(("key-1.b_c", mac)));
    }

    #[test]
    fn malformed_headers_say_what_is_wrong() {
        let good_mac = "00".repeat(MAC_BYTES);
        let cases = [
            ("".to_owned(), "expected"),
            ("hmac-sha256-v1:k1".to_owned(), "expected"),
            (format!("hmac-sha256-v1:k1:{good_mac}:x"), "expected"),
            (
                format!("hmac-sha512-v1:k1:{good_mac}"),
                "unsupported algorithm",
            ),
            (format!("hmac-sha256-v1::{good_mac}"), "empty key id"),
            ("hmac-sha256-v1:k1:abcd".to_owned(), "hex digits"),
            (
                format!("hmac-sha256-v1:k1:{}", "zz".repeat(MAC_BYTES)),
                "not hexadecimal",
            ),
        ];
        for (value, want) in cases {
            match parse_signature(&value) {
                Err(SignatureError::Malformed { reason }) => {
                    assert!(reason.contains(want), "{value:?}: {reason}")
                }
                other => panic!("{value:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn the_canonical_string_is_injective_over_field_boundaries() {
        let a = canonical(&[("ab", FieldValue::from("c"))], b"");
        let b = canonical(&[("a", FieldValue::from("bc"))], b"");
        let c = canonical(&[], b"abc");
        assert_ne!(a, b);
        assert_ne!(a, c);
        // An integer and its digits as text sign alike.
        assert_eq!(
            canonical(&[("n", FieldValue::Int(12))], b""),
            canonical(&[("n", FieldValue::from("12"))], b"")
        );
    }

    #[test]
    fn task_fields_keep_canonical_order_and_skip_absent_ones() {
        let fields = TaskFields::collect(|name| {
            Ok(match name {
                headers::CHORD_ID => Some(FieldValue::from("c")),
                MESSAGE_ID => Some(FieldValue::from("m")),
                _ => None,
            })
        })
        .expect("collects");
        let names: Vec<&str> = fields.as_slice().iter().map(|(n, _)| *n).collect();
        assert_eq!(names, [MESSAGE_ID, headers::CHORD_ID]);
        let err = TaskFields::collect(|_| Err(SignatureError::malformed("bad type")));
        assert!(err.is_err());
    }
}
