//! The Redis client, over TLS when the URL says `rediss://`.

use redis::{ConnectionAddr, IntoConnectionInfo};
use tracing::debug;

use super::explain::{tls_failure, Peer};
use super::TlsOptions;
use crate::error::{redact_url, Error, Result};

/// A Redis client for `url`: `redis://` in plaintext, `rediss://` over TLS
/// with `tls`'s CA bundle (default: the system's roots) and client
/// certificate, the server's certificate checked against the URL's host.
/// Nothing connects yet.
///
/// `tls` is ignored for a `redis://` URL (a Redis option left unset takes
/// the broker's, which may be meant for the broker alone).
///
/// # Errors
///
/// [`Error::InvalidUrl`] for a URL that does not parse;
/// [`Error::TlsConfig`] when a file of `tls` cannot be used.
///
/// # Examples
///
/// ```
/// use celeriac_store::tls::{redis_client, TlsOptions};
///
/// let plain = redis_client("redis://127.0.0.1:6379", &TlsOptions::new().ca("/unused/for/plaintext.pem"));
/// assert!(plain.is_ok());
/// let tls = redis_client("rediss://127.0.0.1:6380", &TlsOptions::new().ca("/nonexistent/ca.pem"));
/// assert!(tls.unwrap_err().to_string().contains("/nonexistent/ca.pem"));
/// ```
pub fn redis_client(url: &str, tls: &TlsOptions) -> Result<redis::Client> {
    let invalid = |e: redis::RedisError| Error::InvalidUrl {
        url: redact_url(url),
        reason: e.to_string(),
    };
    let info = url.into_connection_info().map_err(invalid)?;
    if !matches!(info.addr(), ConnectionAddr::TcpTls { .. }) {
        return redis::Client::open(info).map_err(invalid);
    }
    // The redis crate builds its TLS settings with the process's default
    // crypto provider; make it ring, as everywhere else.
    if rustls::crypto::ring::default_provider()
        .install_default()
        .is_err()
    {
        debug!("a rustls crypto provider was installed already");
    }
    let loaded = tls.load()?;
    if loaded.ca.is_none() && loaded.identity.is_none() {
        return redis::Client::open(info).map_err(invalid);
    }
    // The redis crate takes PEM bytes; they were just checked.
    let read = |path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|e| Error::TlsConfig(format!("cannot read {}: {e}", path.display())))
    };
    let client_tls = match (tls.cert_path(), tls.key_path()) {
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: read(cert)?,
            client_key: read(key)?,
        }),
        _ => None,
    };
    let root_cert = tls.ca_path().map(read).transpose()?;
    redis::Client::build_with_tls(
        info,
        redis::TlsCertificates {
            client_tls,
            root_cert,
        },
    )
    .map_err(|e| Error::TlsConfig(format!("TLS settings for Redis: {e}")))
}

/// What a failed Redis connection to `url` says: for a `rediss://` URL
/// whose failure is about TLS, the server and the reason; otherwise the
/// client's error.
pub(crate) fn describe(url: &str, error: &redis::RedisError) -> String {
    let server = url
        .into_connection_info()
        .ok()
        .and_then(|info| match info.addr() {
            ConnectionAddr::TcpTls { host, port, .. } => Some(format!("{host}:{port}")),
            _ => None,
        });
    match server.and_then(|server| Some((server, tls_failure(error, Peer::Redis)?))) {
        Some((server, reason)) => format!("TLS connection to {server} failed: {reason}"),
        None => error.to_string(),
    }
}
