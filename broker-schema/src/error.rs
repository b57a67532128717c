//! The one error type of the schema crate.

/// A `Result` whose error is the schema crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong when encoding, decoding or naming things on
/// the wire.
///
/// Every decode error says where the problem is: the byte offset for broken
/// MessagePack, or the dotted path of the field (`retry.max_retries`) for a
/// well-formed message with a wrong or missing field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The message body is larger than the configured limit.
    #[error("message is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// Size of the body in bytes.
        size: usize,
        /// The limit in force.
        limit: usize,
    },
    /// The message nests arrays or maps deeper than the configured limit.
    #[error("message nests deeper than {limit} levels (at byte {offset})")]
    TooDeep {
        /// The limit in force.
        limit: usize,
        /// Byte offset of the container that went too deep.
        offset: usize,
    },
    /// The body is not well-formed MessagePack.
    #[error("message is not valid MessagePack: {reason} at byte {offset}")]
    Malformed {
        /// Byte offset where decoding stopped.
        offset: usize,
        /// What was wrong there.
        reason: &'static str,
    },
    /// A field is missing, or holds a value of the wrong type.
    #[error("field `{field}`: {message}")]
    Field {
        /// Dotted path of the field (`.` for the envelope itself).
        field: String,
        /// What was wrong with it.
        message: String,
    },
    /// The envelope's schema version is not one this build can read.
    #[error("field `v`: unsupported schema version {found}, this build reads version {supported}")]
    UnsupportedVersion {
        /// The version found in the message.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// A value could not be encoded as MessagePack.
    #[error("cannot encode {what}: {message}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's message.
        message: String,
    },
    /// A queue, namespace or task name that cannot be used on the wire.
    #[error("invalid {kind} name {name:?}: {reason}")]
    InvalidName {
        /// `queue`, `namespace` or `task`.
        kind: &'static str,
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A fair queue's shard count out of range.
    #[error("fair queue {queue:?}: {shards} shards; {reason}")]
    InvalidShards {
        /// The logical queue.
        queue: String,
        /// The rejected count.
        shards: u64,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A delay longer than the delay topology can hold.
    #[error("delay of {requested_ms} ms exceeds the longest supported delay of {max_ms} ms")]
    DelayTooLong {
        /// The requested delay.
        requested_ms: u64,
        /// The longest delay the topology supports.
        max_ms: u64,
    },
    /// A delay tolerance of zero or longer than the longest supported one.
    #[error("invalid delay tolerance of {requested_ms} ms: {reason}")]
    InvalidTolerance {
        /// The requested tolerance.
        requested_ms: u64,
        /// Why it was rejected.
        reason: String,
    },
    /// The state store could not be reached or refused an operation.
    #[error("state store unavailable during {op}: {message}")]
    StoreUnavailable {
        /// What was being done (`record`, `get`, `begin`, ...).
        op: &'static str,
        /// The store client's message (credentials redacted).
        message: String,
    },
    /// A signing key that cannot be used: a bad key id, a secret too
    /// short, a repeated key id, or a key file without any key.
    #[error("invalid signing key: {reason}")]
    InvalidKey {
        /// What is wrong with it.
        reason: String,
    },
    /// A line of a key file that is not `<key-id> <base64 secret>`, or
    /// whose key cannot be used.
    #[error("line {line}: {reason}")]
    KeyFile {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A message whose signature does not verify.
    #[error(transparent)]
    Signature(#[from] crate::signing::SignatureError),
    /// The state store holds data this build cannot read.
    #[error("state store holds an unreadable {what}: {message}")]
    StoreData {
        /// What was being read.
        what: &'static str,
        /// What was wrong with it.
        message: String,
    },
}

impl Error {
    /// The kind of the error, as the variant's name: for a decode error one
    /// of `TooLarge`, `TooDeep`, `Malformed`, `UnsupportedVersion` and
    /// `Field` (SPEC.md section 3), which a worker puts in the
    /// `celeriac-error-type` header of the dead letter.
    ///
    /// # Examples
    ///
    /// ```
    /// let err = celeriac_schema::decode(&[0xc1]).unwrap_err();
    /// assert_eq!(err.kind(), "Malformed");
    /// let err = celeriac_schema::decode(&[0x80]).unwrap_err(); // an empty map
    /// assert_eq!(err.kind(), "Field");
    /// ```
    pub fn kind(&self) -> &'static str {
        match self {
            Error::TooLarge { .. } => "TooLarge",
            Error::TooDeep { .. } => "TooDeep",
            Error::Malformed { .. } => "Malformed",
            Error::Field { .. } => "Field",
            Error::UnsupportedVersion { .. } => "UnsupportedVersion",
            Error::Encode { .. } => "Encode",
            Error::InvalidName { .. } => "InvalidName",
            Error::InvalidShards { .. } => "InvalidShards",
            Error::DelayTooLong { .. } => "DelayTooLong",
            Error::InvalidTolerance { .. } => "InvalidTolerance",
            Error::StoreUnavailable { .. } => "StoreUnavailable",
            Error::InvalidKey { .. } => "InvalidKey",
            Error::KeyFile { .. } => "KeyFile",
            Error::Signature(_) => "SignatureError",
            Error::StoreData { .. } => "StoreData",
        }
    }

    /// The field an error is about, when it is about one.
    ///
    /// # Examples
    ///
    /// ```
    /// let err = celeriac_schema::decode(&[0x80]).unwrap_err(); // an empty map
    /// assert_eq!(err.field(), Some("v"));
    /// ```
    pub fn field(&self) -> Option<&str> {
        match self {
            Error::Field { field, .. } => Some(field),
            Error::UnsupportedVersion { .. } => Some("v"),
            _ => None,
        }
    }
}
