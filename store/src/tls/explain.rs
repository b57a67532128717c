//! Why a TLS connection failed, in words an operator can act on.

use std::error::Error as StdError;
use std::io;

use rustls::{AlertDescription, CertificateError};

/// Which connection failed: the hints name its options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Peer {
    /// The RabbitMQ broker (`--tls-*`).
    Broker,
    /// The Redis store (`--redis-tls-*`).
    Redis,
}

impl Peer {
    fn option(self, which: &str) -> String {
        match self {
            Peer::Broker => format!("--tls-{which}"),
            Peer::Redis => format!("--redis-tls-{which}"),
        }
    }
}

/// Every error of `error`'s chain, with what an `io::Error` or an
/// `Arc<dyn Error>` wraps (their `source` skips it: the redis crate keeps
/// its causes in an `Arc`, and an `io::Error` gives its inner error's
/// source rather than the inner error).
fn chain<'a>(error: &'a (dyn StdError + 'static)) -> Vec<&'a (dyn StdError + 'static)> {
    let mut out = Vec::new();
    let mut pending = vec![error];
    while let Some(e) = pending.pop() {
        if out.len() > 32 {
            break;
        }
        out.push(e);
        if let Some(inner) = e.downcast_ref::<io::Error>().and_then(io::Error::get_ref) {
            pending.push(inner);
        }
        if let Some(inner) = e.downcast_ref::<std::sync::Arc<dyn StdError + Send + Sync>>() {
            pending.push(&**inner);
        }
        if let Some(source) = e.source() {
            pending.push(source);
        }
    }
    out
}

/// The rustls error somewhere in `error`'s chain.
pub(crate) fn rustls_error<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    chain(error)
        .into_iter()
        .find_map(|e| e.downcast_ref::<rustls::Error>())
}

/// The `io::Error` kind somewhere in `error`'s chain.
pub(crate) fn io_kind(error: &(dyn StdError + 'static)) -> Option<io::ErrorKind> {
    chain(error)
        .into_iter()
        .find_map(|e| e.downcast_ref::<io::Error>().map(io::Error::kind))
}

/// What a TLS-level failure means: the error itself and a hint at its
/// usual cause, when there is one.
pub(crate) fn tls_reason(error: &rustls::Error, peer: Peer) -> String {
    let hint = match error {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => Some(format!(
                "the server's certificate is not signed by a trusted CA: give the CA that signed it with {}",
                peer.option("ca")
            )),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                Some("the server's certificate is not issued for the host name of the URL".to_owned())
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                Some("the server's certificate has expired".to_owned())
            }
            _ => None,
        },
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => Some(
            "the server did not answer in TLS: is this a plaintext port (5672 for RabbitMQ, 6379 for Redis)?"
                .to_owned(),
        ),
        rustls::Error::AlertReceived(AlertDescription::CertificateRequired) => Some(format!(
            "the server requires a client certificate: give one with {} and {}",
            peer.option("cert"),
            peer.option("key")
        )),
        rustls::Error::AlertReceived(AlertDescription::HandshakeFailure) => Some(format!(
            "the server refused the handshake; if it requires a client certificate, give one with {} and {}",
            peer.option("cert"),
            peer.option("key")
        )),
        rustls::Error::AlertReceived(
            AlertDescription::UnknownCA
            | AlertDescription::BadCertificate
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateRevoked
            | AlertDescription::AccessDenied,
        ) => Some("the server refused our client certificate".to_owned()),
        _ => None,
    };
    match hint {
        Some(hint) => format!("{error}; {hint}"),
        None => error.to_string(),
    }
}

/// The reason of a failed connection that asked for TLS, when the failure
/// is about TLS: a TLS error, or a server that hung up in the middle of
/// the handshake.
pub(crate) fn tls_failure(error: &(dyn StdError + 'static), peer: Peer) -> Option<String> {
    if let Some(tls) = rustls_error(error) {
        return Some(tls_reason(tls, peer));
    }
    // With TLS 1.3 a server that refuses the client's certificate (or its
    // absence) may say so only after the client has finished its side of
    // the handshake, so the client sees the connection end or reset rather
    // than an alert.
    match io_kind(error) {
        Some(io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset) => Some(format!(
            "the server closed the connection during the TLS handshake: is this a TLS port, and does it accept our client certificate (--{0}cert and --{0}key)?",
            match peer {
                Peer::Broker => "tls-",
                Peer::Redis => "redis-tls-",
            }
        )),
        _ => None,
    }
}
