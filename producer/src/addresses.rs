//! Several broker addresses: every cluster node a client may connect to.
//!
//! Wherever celeriac takes a broker URL (the builders, `AMQP_ADDR`,
//! `--amqp-addr`) it also takes a comma-separated list of URLs, one per
//! node: `amqp://u:p@rabbit-0:5672/%2f,amqp://u:p@rabbit-1:5672/%2f`.
//! Each connection (and each reconnection after a node is lost) starts at a
//! random address of the list and tries the others in turn, so clients
//! spread over the nodes and a dead node costs one refused (or, at worst,
//! timed-out) attempt. A comma inside a password must be written `%2C`.
//!
//! # Examples
//!
//! ```
//! use celeriac_producer::addresses;
//!
//! let list = addresses::join(["amqp://a:5672/%2f", "amqp://b:5672/%2f"]);
//! assert_eq!(list, "amqp://a:5672/%2f,amqp://b:5672/%2f");
//! assert_eq!(addresses::split(&list), vec!["amqp://a:5672/%2f", "amqp://b:5672/%2f"]);
//! assert_eq!(addresses::split(" amqp://a/%2f ,, "), vec!["amqp://a/%2f"]);
//! ```

use std::time::Duration;

use lapin::{Connection, ConnectionProperties};
use tracing::{debug, warn};

use crate::error::{redact_url, Error, Result};
use crate::tls::TlsOptions;

/// How long one address of a list may take to connect before the next one
/// is tried.
pub const ADDRESS_TIMEOUT: Duration = Duration::from_secs(5);

/// The addresses of a comma-separated list, trimmed, empty ones dropped.
pub fn split(urls: &str) -> Vec<&str> {
    urls.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect()
}

/// One string holding `urls`, as every broker URL setting takes it.
pub fn join<I, S>(urls: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut joined = String::new();
    for url in urls {
        let url = url.as_ref().trim();
        if url.is_empty() {
            continue;
        }
        if !joined.is_empty() {
            joined.push(',');
        }
        joined.push_str(url);
    }
    joined
}

/// The order in which to try `n` addresses: a rotation from `start`.
fn rotation(n: usize, start: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |i| (start + i) % n.max(1))
}

/// Connects to the first address of `urls` (from a random one on) that
/// answers; see [`crate::tls::connect`].
///
/// An error that another address cannot fix (a URL that does not parse, an
/// unusable TLS file) is returned at once; otherwise the last address's
/// error when none answered.
pub(crate) async fn connect_any(
    urls: &[&str],
    properties: ConnectionProperties,
    tls: &TlsOptions,
) -> Result<Connection> {
    let start = rand::random_range(0..urls.len().max(1));
    let mut last = None;
    for i in rotation(urls.len(), start) {
        let url = urls[i];
        let attempt = crate::tls::amqp::connect_one(url, properties.clone(), tls);
        let error = match tokio::time::timeout(ADDRESS_TIMEOUT, attempt).await {
            Ok(Ok(connection)) => {
                debug!(url = %redact_url(url), "connected");
                return Ok(connection);
            }
            Ok(Err(e @ (Error::InvalidUrl { .. } | Error::TlsConfig(_)))) => return Err(e),
            Ok(Err(e)) => e,
            Err(_) => Error::Unreachable {
                url: redact_url(url),
                after: ADDRESS_TIMEOUT,
                reason: "timed out".into(),
            },
        };
        warn!(url = %redact_url(url), error = %error, "broker address did not answer; trying the next one");
        last = Some(error);
    }
    Err(last.unwrap_or_else(|| Error::InvalidUrl {
        url: String::new(),
        reason: "no broker address given".into(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotation_visits_every_address_once() {
        let order: Vec<usize> = rotation(3, 2).collect();
        assert_eq!(order, vec![2, 0, 1]);
        assert_eq!(rotation(0, 0).count(), 0);
    }

    #[test]
    fn join_skips_empty_entries() {
        assert_eq!(join(["a", " ", "b "]), "a,b");
        assert_eq!(join(Vec::<String>::new()), "");
    }

    #[tokio::test]
    async fn every_address_is_tried_and_the_last_error_returned() {
        // Two closed local ports: both refuse.
        let ports: Vec<u16> = (0..2)
            .filter_map(|_| std::net::TcpListener::bind("127.0.0.1:0").ok())
            .filter_map(|l| l.local_addr().ok().map(|a| a.port()))
            .collect();
        let urls: Vec<String> = ports
            .iter()
            .map(|p| format!("amqp://u:secret@127.0.0.1:{p}/%2f"))
            .collect();
        let refs: Vec<&str> = urls.iter().map(String::as_str).collect();
        let err = connect_any(
            &refs,
            ConnectionProperties::default(),
            &TlsOptions::default(),
        )
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("connecting"), "{err}");
        assert!(!err.contains("secret"), "{err}");
    }

    #[tokio::test]
    async fn a_bad_url_in_the_list_is_an_error_at_once() {
        let urls = ["amqp://u:secret@127.0.0.1:notaport/%2f"];
        let err = connect_any(
            &urls,
            ConnectionProperties::default(),
            &TlsOptions::default(),
        )
        .await
        .err();
        assert!(matches!(err, Some(Error::InvalidUrl { .. })), "{err:?}");
        let err = connect_any(&[], ConnectionProperties::default(), &TlsOptions::default())
            .await
            .err();
        assert!(matches!(err, Some(Error::InvalidUrl { .. })), "{err:?}");
    }
}
