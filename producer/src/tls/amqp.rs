//! Opening a broker connection, over TLS when the URL says `amqps://`.

use std::net::{SocketAddr, ToSocketAddrs};

use lapin::tcp::{AsyncTcpStream, RustlsConnector};
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{Connection, ConnectionProperties};
use tracing::warn;

use super::{failure_reason, TlsOptions};
use crate::error::{redact_url, Error, Result};

/// Connects to the broker at `url`: `amqp://` in plaintext, `amqps://`
/// over TLS with `tls`'s trust and client certificate, the server's
/// certificate checked against the URL's host. There is no fallback: a URL
/// that asks for TLS gets TLS or an error, and not one byte of AMQP goes
/// out before the handshake succeeded.
///
/// `tls` is ignored (with a warning when set) for an `amqp://` URL.
///
/// # Errors
///
/// [`Error::InvalidUrl`] for a URL that does not parse;
/// [`Error::TlsConfig`] when a file of `tls` cannot be used;
/// [`Error::Tls`] when the TLS handshake fails (an untrusted or wrong
/// certificate, a plaintext port, a refused or missing client
/// certificate), naming the server and the reason;
/// [`Error::Amqp`] for any other failure (refused connection, login).
///
/// # Examples
///
/// ```no_run
/// # async fn demo() -> celeriac_producer::Result<()> {
/// use celeriac_producer::lapin::ConnectionProperties;
/// use celeriac_producer::tls::{connect, TlsOptions};
///
/// let tls = TlsOptions::new().ca("/etc/celeriac/ca.pem");
/// let connection = connect("amqps://guest:guest@127.0.0.1:5671/%2f", ConnectionProperties::default(), &tls).await?;
/// let channel = connection.create_channel().await.map_err(|e| celeriac_producer::Error::Amqp { doing: "opening a channel", source: e })?;
/// # let _ = channel;
/// # Ok(()) }
/// ```
///
/// `url` may be a comma-separated list of the cluster's nodes: see
/// [`crate::addresses`].
pub async fn connect(
    url: &str,
    properties: ConnectionProperties,
    tls: &TlsOptions,
) -> Result<Connection> {
    let urls = crate::addresses::split(url);
    if urls.len() == 1 {
        return connect_one(urls[0], properties, tls).await;
    }
    crate::addresses::connect_any(&urls, properties, tls).await
}

/// [`connect`] to one address.
pub(crate) async fn connect_one(
    url: &str,
    properties: ConnectionProperties,
    tls: &TlsOptions,
) -> Result<Connection> {
    let uri = parse(url)?;
    if uri.scheme == AMQPScheme::AMQP {
        if !tls.is_empty() {
            warn!(
                url = %redact_url(url),
                "TLS options are set but the broker URL is amqp://, which is plaintext: use amqps:// for TLS"
            );
        }
        return Connection::connect_uri(uri, properties)
            .await
            .map_err(Error::amqp("connecting"));
    }
    let server = format!("{}:{}", uri.authority.host, uri.authority.port);
    let connector = RustlsConnector::from(tls.rustls_config()?);
    let runtime = lapin::runtime::default_runtime().map_err(Error::amqp("connecting"))?;
    let connected = Connection::connector(
        uri,
        runtime,
        async move |uri: AMQPUri, runtime| {
            let host = uri.authority.host.as_str();
            let addresses: Vec<SocketAddr> = (host, uri.authority.port)
                .to_socket_addrs()
                .map_err(lapin::Error::from)?
                .collect();
            let plain = AsyncTcpStream::connect(&runtime, addresses)
                .await
                .map_err(lapin::Error::from)?;
            plain
                .into_rustls(&connector, host)
                .await
                .map_err(lapin::Error::from)
        },
        properties,
    )
    .await;
    connected.map_err(|source| match failure_reason(&source) {
        Some(reason) => Error::Tls { server, reason },
        None => Error::Amqp {
            doing: "connecting",
            source,
        },
    })
}

/// The URL parsed, its host as written: amq-protocol-uri keeps only a
/// domain name and puts `localhost` in place of an IP address, which would
/// connect elsewhere and check the wrong name.
fn parse(url: &str) -> Result<AMQPUri> {
    let invalid = |reason: String| Error::InvalidUrl {
        url: redact_url(url),
        reason,
    };
    let mut uri: AMQPUri = url.parse().map_err(invalid)?;
    match url::Url::parse(url)
        .map_err(|e| invalid(e.to_string()))?
        .host()
    {
        Some(url::Host::Ipv4(ip)) => uri.authority.host = ip.to_string(),
        Some(url::Host::Ipv6(ip)) => uri.authority.host = ip.to_string(),
        Some(url::Host::Domain(_)) | None => {}
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ip_address_stays_the_host() {
        let host = |url: &str| parse(url).map(|uri| uri.authority.host);
        assert_eq!(
            host("amqps://u:p@10.1.2.3:5671/%2f").ok().as_deref(),
            Some("10.1.2.3")
        );
        assert_eq!(host("amqp://[::1]:5672/%2f").ok().as_deref(), Some("::1"));
        assert_eq!(
            host("amqps://rabbit.internal/%2f").ok().as_deref(),
            Some("rabbit.internal")
        );
    }

    #[test]
    fn a_bad_url_is_an_error_without_the_password() {
        let err = parse("amqp://u:secret@host:notaport/%2f")
            .err()
            .map(|e| e.to_string());
        let err = err.unwrap_or_default();
        assert!(err.contains("invalid URL"), "{err}");
        assert!(!err.contains("secret"), "{err}");
        let err = parse("http://host/")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("invalid URL"), "{err}");
    }
}
