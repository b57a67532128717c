//! TLS to the broker (`amqps://`) and the store (`rediss://`).
//!
//! [`TlsOptions`] says whom to trust and who we are: a CA bundle (default:
//! the system's root certificates) and an optional client certificate with
//! its key for mutual TLS, all PEM files. They apply only to URLs whose
//! scheme asks for TLS; a URL that asks for TLS always gets it, with the
//! server's certificate checked against the host name of the URL, and never
//! falls back to plaintext.
//!
//! - [`connect`] opens a broker connection: every part of celeriac that
//!   talks AMQP (producer pool, worker, CLIs) goes through it.
//! - [`redis_client`] builds the Redis client of the store and beat.
//! - [`TlsOptions::rustls_config`] is the same trust for other clients
//!   (the dead-letter tool's management API client).
//!
//! A failed handshake is [`Error::Tls`], naming the server and the reason
//! (an unknown CA, a plaintext port, a refused client certificate);
//! unusable files are [`Error::TlsConfig`], naming the file.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> celeriac_producer::Result<()> {
//! use celeriac_producer::tls::TlsOptions;
//! use celeriac_producer::Producer;
//!
//! let tls = TlsOptions::new()
//!     .ca("/etc/celeriac/ca.pem")
//!     .cert("/etc/celeriac/client.pem")
//!     .key("/etc/celeriac/client.key");
//! let producer = Producer::builder("amqps://app:secret@rabbit.internal:5671/%2f")
//!     .tls(tls)
//!     .connect()
//!     .await?;
//! # let _ = producer;
//! # Ok(()) }
//! ```

pub(crate) mod amqp;
mod explain;
mod pem;
mod redis;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};
use tracing::debug;

use crate::error::{Error, Result};

pub use self::amqp::connect;
pub(crate) use self::redis::describe as describe_redis_error;

/// Why a connection to a server with the broker's TLS options failed, when
/// the failure is about TLS (found anywhere in `error`'s chain): the TLS
/// error and its usual cause, such as an untrusted server certificate or a
/// plaintext port. `None` for other failures. For clients other than the
/// broker connection, such as an HTTPS client built on
/// [`TlsOptions::rustls_config`].
pub fn failure_reason(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    explain::tls_failure(error, explain::Peer::Broker)
}
pub use self::redis::redis_client;

/// Whom to trust and who we are on TLS connections: PEM files of a CA
/// bundle and of a client certificate and its key.
///
/// Nothing set (the default) trusts the system's root certificates and
/// presents no client certificate. Files are read at each connection, so a
/// renewed certificate is picked up by the next one.
///
/// # Examples
///
/// ```
/// use celeriac_producer::tls::TlsOptions;
///
/// let broker = TlsOptions::new().ca("/etc/ssl/ours/ca.pem").cert("/etc/ssl/ours/app.pem").key("/etc/ssl/ours/app.key");
/// // Redis takes the broker's settings for whatever it does not set itself.
/// let redis = TlsOptions::new().ca("/etc/ssl/redis/ca.pem").or(&broker);
/// assert_eq!(redis.ca_path().unwrap().to_str(), Some("/etc/ssl/redis/ca.pem"));
/// assert_eq!(redis.cert_path().unwrap().to_str(), Some("/etc/ssl/ours/app.pem"));
/// assert!(TlsOptions::new().is_empty());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

impl TlsOptions {
    /// No CA bundle (the system's roots) and no client certificate.
    pub fn new() -> Self {
        TlsOptions::default()
    }

    /// Trust only the certificates of this PEM file (one or more CA
    /// certificates) instead of the system's roots.
    pub fn ca(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca = Some(path.into());
        self
    }

    /// Present this client certificate (PEM, the chain may follow it) for
    /// mutual TLS; needs [`key`](Self::key).
    pub fn cert(mut self, path: impl Into<PathBuf>) -> Self {
        self.cert = Some(path.into());
        self
    }

    /// The private key of the client certificate (PEM: PKCS#8, PKCS#1 or
    /// SEC1, not encrypted).
    pub fn key(mut self, path: impl Into<PathBuf>) -> Self {
        self.key = Some(path.into());
        self
    }

    /// The CA bundle, if set.
    pub fn ca_path(&self) -> Option<&Path> {
        self.ca.as_deref()
    }

    /// The client certificate, if set.
    pub fn cert_path(&self) -> Option<&Path> {
        self.cert.as_deref()
    }

    /// The client key, if set.
    pub fn key_path(&self) -> Option<&Path> {
        self.key.as_deref()
    }

    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self.ca.is_none() && self.cert.is_none() && self.key.is_none()
    }

    /// These options, each unset one taken from `fallback`.
    pub fn or(self, fallback: &TlsOptions) -> TlsOptions {
        TlsOptions {
            ca: self.ca.or_else(|| fallback.ca.clone()),
            cert: self.cert.or_else(|| fallback.cert.clone()),
            key: self.key.or_else(|| fallback.key.clone()),
        }
    }

    /// Reads and checks every file, as a connection would: for a program
    /// to refuse bad settings at start rather than at its first connection.
    ///
    /// # Errors
    ///
    /// [`Error::TlsConfig`] naming the file that is missing, unreadable or
    /// holds no certificate or key, or a certificate given without its key
    /// (or the other way round).
    ///
    /// # Examples
    ///
    /// ```
    /// use celeriac_producer::tls::TlsOptions;
    ///
    /// let err = TlsOptions::new().ca("/nonexistent/ca.pem").check().unwrap_err();
    /// assert!(err.to_string().contains("/nonexistent/ca.pem"));
    /// ```
    pub fn check(&self) -> Result<()> {
        self.load().map(drop)
    }

    /// A rustls client configuration with these settings (ring crypto,
    /// TLS 1.2 and 1.3), for HTTP or other clients that should trust what
    /// the broker connection trusts.
    ///
    /// # Errors
    ///
    /// As [`check`](Self::check); also when no CA is set and the system has
    /// no root certificates, or the key does not go with the certificate.
    pub fn rustls_config(&self) -> Result<Arc<ClientConfig>> {
        let loaded = self.load()?;
        let roots = match loaded.ca {
            Some(roots) => roots,
            None => system_roots()?,
        };
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| Error::TlsConfig(format!("no usable TLS version: {e}")))?
                .with_root_certificates(roots);
        let config = match loaded.identity {
            Some(identity) => builder
                .with_client_auth_cert(identity.chain, identity.key)
                .map_err(|e| {
                    Error::TlsConfig(format!(
                        "the client certificate {} with the key {} cannot be used: {e}",
                        display(self.cert.as_deref()),
                        display(self.key.as_deref())
                    ))
                })?,
            None => builder.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }

    /// Reads the files that are set.
    fn load(&self) -> Result<Loaded> {
        let ca = match &self.ca {
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for cert in pem::certificates(path, "CA bundle")? {
                    roots.add(cert).map_err(|e| {
                        Error::TlsConfig(format!(
                            "the CA bundle {} holds an unusable certificate: {e}",
                            path.display()
                        ))
                    })?;
                }
                Some(roots)
            }
            None => None,
        };
        let identity = match (&self.cert, &self.key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(Identity {
                chain: pem::certificates(cert, "client certificate")?,
                key: pem::private_key(key)?,
            }),
            (Some(cert), None) => {
                return Err(Error::TlsConfig(format!(
                    "the client certificate {} is given without its private key",
                    cert.display()
                )))
            }
            (None, Some(key)) => {
                return Err(Error::TlsConfig(format!(
                    "the private key {} is given without its client certificate",
                    key.display()
                )))
            }
        };
        Ok(Loaded { ca, identity })
    }
}

/// The files of [`TlsOptions`], read.
struct Loaded {
    ca: Option<RootCertStore>,
    identity: Option<Identity>,
}

/// A client certificate chain and its key.
struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

fn display(path: Option<&Path>) -> String {
    path.map_or_else(|| "(none)".to_owned(), |p| p.display().to_string())
}

/// The system's root certificates; an error only when there are none.
fn system_roots() -> Result<RootCertStore> {
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        debug!(%error, "skipping a system root certificate");
    }
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or_else(String::new, |e| format!(" ({e})"));
        return Err(Error::TlsConfig(format!(
            "no system root certificates found{why}: give the CA bundle that signed the server's certificate"
        )));
    }
    Ok(roots)
}

#[cfg(test)]
mod tests;
