//! TLS to the broker (`amqps://`) and the store (`rediss://`).
//!
//! [`TlsOptions`] says whom to trust and who we are: a CA bundle (default:
//! the system's root certificates) and an optional client certificate with
//! its key for mutual TLS, all PEM files. They apply only to URLs whose
//! scheme asks for TLS; a URL that asks for TLS always gets it, with the
//! server's certificate checked against the host name of the URL, and never
//! falls back to plaintext. The options and the Redis side live in
//! [`celeriac_store::tls`]; this module adds the broker connection.
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

use crate::error::{Error, Result};

pub use self::amqp::connect;
pub use celeriac_store::tls::{failure_reason, TlsOptions};

/// A Redis client for `url`: `redis://` in plaintext, `rediss://` over TLS
/// with `tls`'s CA bundle (default: the system's roots) and client
/// certificate, the server's certificate checked against the URL's host.
/// Nothing connects yet. [`celeriac_store::tls::redis_client`] with the
/// producer's error.
///
/// # Errors
///
/// [`Error::InvalidUrl`] for a URL that does not parse;
/// [`Error::TlsConfig`] when a file of `tls` cannot be used.
///
/// # Examples
///
/// ```
/// use celeriac_producer::tls::{redis_client, TlsOptions};
///
/// let plain = redis_client("redis://127.0.0.1:6379", &TlsOptions::new().ca("/unused/for/plaintext.pem"));
/// assert!(plain.is_ok());
/// let tls = redis_client("rediss://127.0.0.1:6380", &TlsOptions::new().ca("/nonexistent/ca.pem"));
/// assert!(matches!(tls, Err(celeriac_producer::Error::TlsConfig(_))));
/// ```
pub fn redis_client(url: &str, tls: &TlsOptions) -> Result<redis::Client> {
    celeriac_store::tls::redis_client(url, tls).map_err(Error::from)
}
