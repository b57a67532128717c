//! Encoding and decoding envelopes, with size and nesting limits.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::envelope::{Envelope, SCHEMA_VERSION};
use crate::error::{Error, Result};

/// Limits enforced before a body is decoded.
///
/// # Examples
///
/// ```
/// use celeriac_schema::{decode_with, encode, DecodeLimits, Envelope, Error};
///
/// let env = Envelope::new("ping", rmpv::Value::from("x".repeat(100)));
/// let bytes = encode(&env).unwrap();
/// let tight = DecodeLimits { max_bytes: 64, ..DecodeLimits::default() };
/// assert!(matches!(decode_with(&bytes, &tight), Err(Error::TooLarge { .. })));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest body accepted, in bytes.
    pub max_bytes: usize,
    /// Deepest nesting of arrays and maps accepted (the envelope map is
    /// level 1).
    pub max_depth: usize,
}

impl DecodeLimits {
    /// Default largest body: 1 MiB.
    pub const DEFAULT_MAX_BYTES: usize = 1024 * 1024;
    /// Default deepest nesting: 32 levels.
    pub const DEFAULT_MAX_DEPTH: usize = 32;
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_bytes: Self::DEFAULT_MAX_BYTES,
            max_depth: Self::DEFAULT_MAX_DEPTH,
        }
    }
}

/// Encodes an envelope as a MessagePack map with named fields.
///
/// # Errors
///
/// [`Error::Encode`] if a value cannot be represented (this does not happen
/// for envelopes built from well-formed values).
pub fn encode(envelope: &Envelope) -> Result<Vec<u8>> {
    rmp_serde::to_vec_named(envelope).map_err(|e| Error::Encode {
        what: "envelope",
        message: e.to_string(),
    })
}

/// Decodes an envelope with the default [`DecodeLimits`].
///
/// # Errors
///
/// See [`decode_with`].
pub fn decode(bytes: &[u8]) -> Result<Envelope> {
    decode_with(bytes, &DecodeLimits::default())
}

/// Decodes an envelope, enforcing `limits` first.
///
/// Never panics, whatever the bytes.
///
/// # Errors
///
/// [`Error::TooLarge`], [`Error::TooDeep`] or [`Error::Malformed`] for a body
/// that breaks the limits or is not MessagePack; [`Error::Field`] naming the
/// field for a missing or mistyped field; [`Error::UnsupportedVersion`] for
/// a schema version other than [`SCHEMA_VERSION`].
pub fn decode_with(bytes: &[u8], limits: &DecodeLimits) -> Result<Envelope> {
    check_limits(bytes, limits)?;
    // One pass on the common path; the version is looked at on its own only
    // when something is wrong, so a future version is reported as such
    // rather than as whatever field it changed.
    match from_slice_checked::<Envelope>(bytes) {
        Ok(env) if env.v == SCHEMA_VERSION => Ok(env),
        Ok(env) => Err(Error::UnsupportedVersion {
            found: env.v,
            supported: SCHEMA_VERSION,
        }),
        Err(err) => {
            check_version(bytes)?;
            Err(err)
        }
    }
}

/// Encodes any value as MessagePack with named fields (task inputs and
/// outputs).
///
/// # Errors
///
/// [`Error::Encode`] if the value cannot be represented.
pub fn to_value<T: Serialize>(value: &T) -> Result<rmpv::Value> {
    let encode_error = |message: String| Error::Encode {
        what: "value",
        message,
    };
    // Through the bytes `encode` would write: rmpv's own serializer turns
    // structs into positional arrays and enum variants into indices, which
    // other languages cannot read by name.
    let bytes = rmp_serde::to_vec_named(value).map_err(|e| encode_error(e.to_string()))?;
    rmpv::decode::read_value(&mut bytes.as_slice()).map_err(|e| encode_error(e.to_string()))
}

/// Converts a decoded MessagePack value into a typed one, naming the field
/// on error (paths are relative to `root`, e.g. `input.width`).
///
/// # Errors
///
/// [`Error::Field`] naming the offending field.
///
/// # Examples
///
/// ```
/// let value = rmpv::Value::from(7);
/// let n: u32 = celeriac_schema::from_value(&value, "input").unwrap();
/// assert_eq!(n, 7);
/// let err = celeriac_schema::from_value::<String>(&value, "input").unwrap_err();
/// assert_eq!(err.field(), Some("input"));
/// ```
pub fn from_value<T: DeserializeOwned>(value: &rmpv::Value, root: &str) -> Result<T> {
    // Read as the envelope is read, so that enums spelled by name (as
    // `to_value` and other languages write them) are understood.
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, value).map_err(|e| Error::Field {
        field: root.to_owned(),
        message: e.to_string(),
    })?;
    if let Ok(typed) = rmp_serde::from_slice(&bytes) {
        return Ok(typed);
    }
    let mut de = rmp_serde::Deserializer::new(bytes.as_slice());
    serde_path_to_error::deserialize(&mut de).map_err(|e| field_error(root, e))
}

/// Decodes `bytes` into any type, naming the field on error.
///
/// The plain decode runs first; field paths are tracked only to explain a
/// failure, so the common path pays nothing for them.
pub(crate) fn from_slice_checked<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    if let Ok(value) = rmp_serde::from_slice(bytes) {
        return Ok(value);
    }
    let mut de = rmp_serde::Deserializer::new(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| field_error("", e))
}

fn field_error<E: std::fmt::Display>(root: &str, err: serde_path_to_error::Error<E>) -> Error {
    let path = err.path().to_string();
    let message = err.inner().to_string();
    let mut field = join_path(root, if path == "." { "" } else { &path });
    // serde reports a missing or duplicate field at its parent, in the
    // message.
    if let Some(name) = message
        .strip_prefix("missing field `")
        .or_else(|| message.strip_prefix("duplicate field `"))
        .and_then(|rest| rest.strip_suffix('`'))
    {
        field = join_path(&field, name);
    }
    if field.is_empty() {
        field.push('.');
    }
    Error::Field { field, message }
}

fn join_path(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_owned(),
        (_, true) => a.to_owned(),
        _ => format!("{a}.{b}"),
    }
}

/// Reads only the `v` field so that a future version is reported as such
/// rather than as whatever field it changed.
fn check_version(bytes: &[u8]) -> Result<()> {
    #[derive(serde::Deserialize)]
    struct Version {
        v: u32,
    }
    let Version { v } = from_slice_checked(bytes)?;
    if v != SCHEMA_VERSION {
        return Err(Error::UnsupportedVersion {
            found: v,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(())
}

/// Walks the MessagePack structure without allocating: checks the size, the
/// nesting depth, that every length fits in the body, and that exactly one
/// value fills it.
///
/// # Errors
///
/// [`Error::TooLarge`], [`Error::TooDeep`] or [`Error::Malformed`].
///
/// # Examples
///
/// ```
/// use celeriac_schema::{check_limits, DecodeLimits, Error};
///
/// // Forty nested one-element arrays.
/// let mut bytes = vec![0x91u8; 40];
/// bytes.push(0xc0);
/// let err = check_limits(&bytes, &DecodeLimits::default()).unwrap_err();
/// assert!(matches!(err, Error::TooDeep { limit: 32, .. }));
/// ```
pub fn check_limits(bytes: &[u8], limits: &DecodeLimits) -> Result<()> {
    if bytes.len() > limits.max_bytes {
        return Err(Error::TooLarge {
            size: bytes.len(),
            limit: limits.max_bytes,
        });
    }
    let mut reader = Reader { bytes, pos: 0 };
    // Items still to read in each open container, innermost last.
    let mut open: Vec<u64> = Vec::new();
    let mut remaining_top = 1u64;
    loop {
        // Close finished containers.
        while let Some(0) = open.last() {
            open.pop();
        }
        match open.last_mut() {
            Some(n) => *n -= 1,
            None if remaining_top == 1 => remaining_top = 0,
            None => break,
        }
        let start = reader.pos;
        let marker = reader.u8("truncated: expected a value")?;
        let items = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => 0,
            0x80..=0x8f => u64::from(marker & 0x0f) * 2,
            0x90..=0x9f => u64::from(marker & 0x0f),
            0xa0..=0xbf => {
                reader.skip(usize::from(marker & 0x1f))?;
                0
            }
            0xc1 => return Err(reader.malformed_at(start, "reserved marker 0xc1")),
            0xc4 | 0xd9 => {
                let n = reader.uint(1)?;
                reader.skip_len(n)?;
                0
            }
            0xc5 | 0xda => {
                let n = reader.uint(2)?;
                reader.skip_len(n)?;
                0
            }
            0xc6 | 0xdb => {
                let n = reader.uint(4)?;
                reader.skip_len(n)?;
                0
            }
            0xc7 => {
                let n = reader.uint(1)?;
                reader.skip_len(n + 1)?;
                0
            }
            0xc8 => {
                let n = reader.uint(2)?;
                reader.skip_len(n + 1)?;
                0
            }
            0xc9 => {
                let n = reader.uint(4)?;
                reader.skip_len(n + 1)?;
                0
            }
            0xca | 0xce | 0xd2 => {
                reader.skip(4)?;
                0
            }
            0xcb | 0xcf | 0xd3 => {
                reader.skip(8)?;
                0
            }
            0xcc | 0xd0 => {
                reader.skip(1)?;
                0
            }
            0xcd | 0xd1 => {
                reader.skip(2)?;
                0
            }
            0xd4 => {
                reader.skip(2)?;
                0
            }
            0xd5 => {
                reader.skip(3)?;
                0
            }
            0xd6 => {
                reader.skip(5)?;
                0
            }
            0xd7 => {
                reader.skip(9)?;
                0
            }
            0xd8 => {
                reader.skip(17)?;
                0
            }
            0xdc => reader.uint(2)?,
            0xdd => reader.uint(4)?,
            0xde => reader.uint(2)? * 2,
            0xdf => reader.uint(4)? * 2,
        };
        let is_container = matches!(marker, 0x80..=0x9f | 0xdc..=0xdf);
        if is_container {
            if open.len() + 1 > limits.max_depth {
                return Err(Error::TooDeep {
                    limit: limits.max_depth,
                    offset: start,
                });
            }
            // Every item takes at least one byte: a longer claim is a lie.
            if items > (bytes.len() - reader.pos) as u64 {
                return Err(
                    reader.malformed_at(start, "container claims more items than bytes left")
                );
            }
            open.push(items);
        }
    }
    if reader.pos != bytes.len() {
        return Err(reader.malformed_at(reader.pos, "trailing bytes after the value"));
    }
    Ok(())
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn malformed_at(&self, offset: usize, reason: &'static str) -> Error {
        Error::Malformed { offset, reason }
    }

    fn u8(&mut self, reason: &'static str) -> Result<u8> {
        let b = *self
            .bytes
            .get(self.pos)
            .ok_or_else(|| self.malformed_at(self.pos, reason))?;
        self.pos += 1;
        Ok(b)
    }

    fn uint(&mut self, width: usize) -> Result<u64> {
        let mut n = 0u64;
        for _ in 0..width {
            n = (n << 8) | u64::from(self.u8("truncated: length cut short")?);
        }
        Ok(n)
    }

    fn skip(&mut self, n: usize) -> Result<()> {
        if self.bytes.len() - self.pos < n {
            return Err(self.malformed_at(self.pos, "truncated: value runs past the end"));
        }
        self.pos += n;
        Ok(())
    }

    fn skip_len(&mut self, n: u64) -> Result<()> {
        let n = usize::try_from(n)
            .map_err(|_| self.malformed_at(self.pos, "length does not fit in memory"))?;
        self.skip(n)
    }
}
