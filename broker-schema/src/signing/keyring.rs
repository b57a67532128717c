//! The keys a party signs and verifies with.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use hmac::Mac;

use super::{header_value, mac, parse_signature, Field, HmacSha256, SignatureError};
use crate::error::{Error, Result};

/// Shortest secret accepted, in bytes. 32 random bytes are recommended.
pub const MIN_SECRET_BYTES: usize = 16;

/// Longest key id, in characters.
pub const MAX_KEY_ID_LEN: usize = 64;

/// Standard base64, padding optional.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

#[derive(Clone)]
struct Key {
    id: String,
    /// The HMAC state with the secret already absorbed: each message
    /// clones it instead of hashing the key again.
    keyed: HmacSha256,
}

/// One signing key and any number of verification keys, each under a key
/// id.
///
/// The first key signs; every key (the first included) verifies. To rotate:
/// give every verifier the new key beside the old one, then make the new
/// key first on the signers, then remove the old one once no message
/// signed with it can still be in flight (in a queue, a delay queue or a
/// dead-letter queue that will be replayed).
///
/// Its `Debug` output names the key ids, never the secrets.
///
/// # Examples
///
/// ```
/// use celeriac_schema::signing::Keyring;
///
/// let ring = Keyring::parse("# signs\n2025-06 c2VjcmV0LXNlY3JldC1zZWNyZXQ=\n2025-01 b2xkLXNlY3JldC1vbGQtc2VjcmV0\n")?;
/// assert_eq!(ring.signing_key_id(), "2025-06");
/// assert_eq!(ring.key_ids().collect::<Vec<_>>(), ["2025-06", "2025-01"]);
/// assert!(!format!("{ring:?}").contains("c2Vj"));
/// # Ok::<(), celeriac_schema::Error>(())
/// ```
#[derive(Clone)]
pub struct Keyring {
    /// Never empty; the first signs.
    keys: Vec<Key>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("signing", &self.signing_key_id())
            .field("keys", &self.key_ids().collect::<Vec<_>>())
            .finish()
    }
}

impl Keyring {
    /// A keyring that signs (and verifies) with `secret` under `key_id`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`] for a key id that is not 1 to 64 ASCII
    /// letters, digits, `-`, `_` or `.`, or a secret under
    /// [`MIN_SECRET_BYTES`].
    pub fn new(key_id: &str, secret: &[u8]) -> Result<Keyring> {
        Ok(Keyring {
            keys: vec![key(key_id, secret).map_err(|reason| Error::InvalidKey { reason })?],
        })
    }

    /// Adds a key that verifies but does not sign (an older or a newer
    /// key during a rotation).
    ///
    /// # Errors
    ///
    /// As [`Keyring::new`], and for a key id already in the ring.
    ///
    /// # Examples
    ///
    /// ```
    /// use celeriac_schema::signing::Keyring;
    ///
    /// let old = Keyring::new("old", &[1; 32])?;
    /// let signed = old.sign(&[], b"body");
    /// let ring = Keyring::new("new", &[2; 32])?.with_verification_key("old", &[1; 32])?;
    /// assert_eq!(ring.verify(Some(&signed), &[], b"body"), Ok("old"));
    /// assert!(Keyring::new("k", &[1; 32])?.with_verification_key("k", &[3; 32]).is_err());
    /// # Ok::<(), celeriac_schema::Error>(())
    /// ```
    pub fn with_verification_key(mut self, key_id: &str, secret: &[u8]) -> Result<Keyring> {
        if self.contains(key_id) {
            return Err(Error::InvalidKey {
                reason: format!("key id {key_id:?} is already in the keyring"),
            });
        }
        self.keys
            .push(key(key_id, secret).map_err(|reason| Error::InvalidKey { reason })?);
        Ok(self)
    }

    /// Reads a key file: one key per line, `<key-id> <base64 secret>`
    /// separated by spaces or tabs; `#` starts a comment; blank lines are
    /// ignored. The first key signs, all keys verify.
    ///
    /// # Errors
    ///
    /// [`Error::KeyFile`] naming the line of a bad key id, a secret that is
    /// not base64 or is too short, a repeated key id, or a line that is not
    /// two words; [`Error::InvalidKey`] when the text holds no key at all.
    ///
    /// # Examples
    ///
    /// ```
    /// use celeriac_schema::signing::Keyring;
    ///
    /// let err = Keyring::parse("k1 c2VjcmV0LXNlY3JldC1zZWNyZXQ=\nk2 not*base64\n").unwrap_err();
    /// assert!(err.to_string().starts_with("line 2: "), "{err}");
    /// ```
    pub fn parse(text: &str) -> Result<Keyring> {
        let mut keys: Vec<(usize, Key)> = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let content = raw.split('#').next().unwrap_or_default();
            let words: Vec<&str> = content.split_whitespace().collect();
            let bad = |reason: String| Error::KeyFile { line, reason };
            let (id, secret) = match words.as_slice() {
                [] => continue,
                [id, secret] => (*id, *secret),
                [_] => {
                    return Err(bad(
                        "a key id without a secret: expected `<key-id> <base64 secret>`".into(),
                    ))
                }
                more => {
                    return Err(bad(format!(
                        "{} words: expected `<key-id> <base64 secret>`",
                        more.len()
                    )))
                }
            };
            if let Some((first, _)) = keys.iter().find(|(_, k)| k.id == id) {
                return Err(bad(format!(
                    "key id {id:?} appears twice (first on line {first})"
                )));
            }
            let secret = BASE64.decode(secret).map_err(|e| {
                bad(format!(
                    "the secret of key {id:?} is not valid base64 ({e})"
                ))
            })?;
            keys.push((line, key(id, &secret).map_err(bad)?));
        }
        if keys.is_empty() {
            return Err(Error::InvalidKey {
                reason: "no key: expected lines of `<key-id> <base64 secret>`".into(),
            });
        }
        Ok(Keyring {
            keys: keys.into_iter().map(|(_, k)| k).collect(),
        })
    }

    /// The id of the key that signs.
    pub fn signing_key_id(&self) -> &str {
        &self.keys[0].id
    }

    /// Every key id, the signing key's first.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.id.as_str())
    }

    /// Whether a key with this id is in the ring.
    pub fn contains(&self, key_id: &str) -> bool {
        self.keys.iter().any(|k| k.id == key_id)
    }

    /// The signature header value of `fields` and `body` with the signing
    /// key: `hmac-sha256-v1:<key-id>:<64 lower-case hex digits>`.
    pub fn sign(&self, fields: &[Field<'_>], body: &[u8]) -> String {
        let key = &self.keys[0];
        let mac = mac(&key.keyed, fields, body).finalize().into_bytes();
        header_value(&key.id, &mac)
    }

    /// Checks `signature` (the header value, `None` when absent) against
    /// `fields` and `body`, in constant time; returns the id of the key
    /// that signed.
    ///
    /// # Errors
    ///
    /// [`SignatureError::Missing`], [`SignatureError::Malformed`],
    /// [`SignatureError::UnknownKey`] or [`SignatureError::Mismatch`].
    pub fn verify(
        &self,
        signature: Option<&str>,
        fields: &[Field<'_>],
        body: &[u8],
    ) -> Result<&str, SignatureError> {
        let value = signature.ok_or(SignatureError::Missing)?;
        let (key_id, expected) = parse_signature(value)?;
        let Some(key) = self.keys.iter().find(|k| k.id == key_id) else {
            return Err(SignatureError::UnknownKey {
                key_id: super::shorten(key_id).to_owned(),
            });
        };
        mac(&key.keyed, fields, body)
            .verify_slice(&expected)
            .map_err(|_| SignatureError::Mismatch {
                key_id: key.id.clone(),
            })?;
        Ok(&key.id)
    }
}

/// A checked key; the error says what is wrong with it.
fn key(id: &str, secret: &[u8]) -> std::result::Result<Key, String> {
    let valid_id = !id.is_empty()
        && id.chars().count() <= MAX_KEY_ID_LEN
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid_id {
        return Err(format!(
            "invalid key id {:?}: 1 to {MAX_KEY_ID_LEN} ASCII letters, digits, '-', '_' or '.'",
            super::shorten(id)
        ));
    }
    if secret.len() < MIN_SECRET_BYTES {
        return Err(format!(
            "the secret of key {id:?} is {} bytes; at least {MIN_SECRET_BYTES} are needed \
             (32 random bytes are recommended: `head -c 32 /dev/urandom | base64`)",
            secret.len()
        ));
    }
    let keyed = HmacSha256::new_from_slice(secret)
        .map_err(|e| format!("the secret of key {id:?} cannot key HMAC-SHA256: {e}"))?;
    Ok(Key {
        id: id.to_owned(),
        keyed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::FieldValue;

    const SECRET_A: &str = "c2VjcmV0LXNlY3JldC1zZWNyZXQ="; // 21 bytes
    const SECRET_B: &str = "b2xkLXNlY3JldC1vbGQtc2VjcmV0"; // 21 bytes

    fn line_error(text: &str) -> (usize, String) {
        match Keyring::parse(text) {
            Err(Error::KeyFile { line, reason }) => (line, reason),
            other => panic!("{text:?} gave {other:?}"),
        }
    }

    #[test]
    fn comments_blank_lines_and_tabs_are_fine() {
        let text =
            format!("# keys of the cluster\n\n  new\t{SECRET_A}   # since June\nold {SECRET_B}\n");
        let ring = Keyring::parse(&text).expect("parses");
        assert_eq!(ring.key_ids().collect::<Vec<_>>(), ["new", "old"]);
        let unpadded = Keyring::parse("k c2VjcmV0LXNlY3JldC1zZWNyZXQ").expect("no padding");
        assert_eq!(unpadded.signing_key_id(), "k");
    }

    #[test]
    fn the_example_of_the_spec_parses() {
        let text = "# celeriac signing keys: the first signs, all verify\n\
            2025-06  k3T0pXyq0mE2b8JmE0Cq4a8s3v2t1w9xY7zQ6uR5nLo=\n\
            2025-01  Qm9vdHN0cmFwIHNlY3JldCBmb3IgamFudWFyeSAyMDI1   # until the 1st of July\n";
        let ring = Keyring::parse(text).expect("parses");
        assert_eq!(ring.key_ids().collect::<Vec<_>>(), ["2025-06", "2025-01"]);
    }

    #[test]
    fn bad_lines_are_named() {
        let (line, reason) = line_error(&format!("a {SECRET_A}\nb\n"));
        assert_eq!(line, 2);
        assert!(reason.contains("without a secret"), "{reason}");
        let (line, reason) = line_error(&format!("\n\na {SECRET_A} extra\n"));
        assert_eq!(line, 3);
        assert!(reason.contains("3 words"), "{reason}");
        let (line, reason) = line_error(&format!("a {SECRET_A}\n# x\na {SECRET_B}\n"));
        assert_eq!(line, 3);
        assert!(
            reason.contains("appears twice (first on line 1)"),
            "{reason}"
        );
        let (line, reason) = line_error("a !!!!\n");
        assert_eq!(line, 1);
        assert!(reason.contains("not valid base64"), "{reason}");
        let (line, reason) = line_error("a c2hvcnQ=\n");
        assert_eq!(line, 1);
        assert!(reason.contains("5 bytes; at least 16"), "{reason}");
        let (line, reason) = line_error(&format!("bad/id {SECRET_A}\n"));
        assert_eq!(line, 1);
        assert!(reason.contains("invalid key id"), "{reason}");
        let long = "k".repeat(MAX_KEY_ID_LEN + 1);
        let (_, reason) = line_error(&format!("{long} {SECRET_A}\n"));
        assert!(reason.contains("invalid key id"), "{reason}");
    }

    #[test]
    fn a_file_without_keys_is_refused() {
        for text in ["", "\n\n", "# only a comment\n"] {
            assert!(
                matches!(Keyring::parse(text), Err(Error::InvalidKey { .. })),
                "{text:?}"
            );
        }
    }

    #[test]
    fn verification_errors_are_typed() {
        let ring = Keyring::new("k1", &[9; 32]).expect("valid");
        let other = Keyring::new("k2", &[9; 32]).expect("valid");
        let imposter = Keyring::new("k1", &[8; 32]).expect("valid");
        let fields = [("celeriac-attempt", FieldValue::Int(0))];
        let good = ring.sign(&fields, b"b");
        assert_eq!(ring.verify(Some(&good), &fields, b"b"), Ok("k1"));
        assert_eq!(
            ring.verify(None, &fields, b"b"),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            ring.verify(Some(&other.sign(&fields, b"b")), &fields, b"b"),
            Err(SignatureError::UnknownKey {
                key_id: "k2".into()
            })
        );
        let mismatch = Err(SignatureError::Mismatch {
            key_id: "k1".into(),
        });
        assert_eq!(
            ring.verify(Some(&imposter.sign(&fields, b"b")), &fields, b"b"),
            mismatch
        );
        assert_eq!(ring.verify(Some(&good), &fields, b"c"), mismatch);
        let changed = [("celeriac-attempt", FieldValue::Int(1))];
        assert_eq!(ring.verify(Some(&good), &changed, b"b"), mismatch);
        assert_eq!(ring.verify(Some(&good), &[], b"b"), mismatch);
        assert!(matches!(
            ring.verify(Some("nonsense"), &fields, b"b"),
            Err(SignatureError::Malformed { .. })
        ));
    }

    #[test]
    fn debug_shows_no_secret() {
        let ring = Keyring::new("visible", b"0123456789abcdef-hidden").expect("valid");
        let shown = format!("{ring:?}");
        assert!(shown.contains("visible"));
        assert!(!shown.contains("hidden"));
    }
}
