//! The one error type of the store crate.
//!
//! The store's operations answer with [`celeriac_schema::Error`], as the
//! [`Store`](celeriac_schema::store::Store) trait says; this type is for
//! what comes before a connection: a URL that does not parse and TLS
//! settings that cannot be used.

/// A `Result` whose error is the store crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A URL or a TLS setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A broker or Redis URL that does not parse.
    #[error("invalid URL {url}: {reason}")]
    InvalidUrl {
        /// The URL, password removed.
        url: String,
        /// Why it does not parse.
        reason: String,
    },
    /// A TLS setting cannot be used: a file missing or unreadable, no
    /// certificate or key in it, a certificate without its key. The message
    /// names the file.
    #[error("TLS configuration: {0}")]
    TlsConfig(String),
}

/// The URL with any password replaced by `***`, for messages and logs.
///
/// # Examples
///
/// ```
/// assert_eq!(
///     celeriac_store::redact_url("amqp://user:secret@host:5672/%2f"),
///     "amqp://user:***@host:5672/%2f"
/// );
/// assert_eq!(celeriac_store::redact_url("amqp://host"), "amqp://host");
/// assert_eq!(
///     celeriac_store::redact_url("amqp://u:p@a/%2f,amqp://u:p@b/%2f"),
///     "amqp://u:***@a/%2f,amqp://u:***@b/%2f"
/// );
/// ```
pub fn redact_url(url: &str) -> String {
    if url.contains(',') {
        let parts: Vec<String> = url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(redact_url)
            .collect();
        return parts.join(",");
    }
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}{}:***{}",
            &url[..scheme_end + 3],
            &authority[..colon],
            &rest[at..]
        ),
        _ => url.to_owned(),
    }
}
