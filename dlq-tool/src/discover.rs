//! Finding the dead-letter queues of a namespace.
//!
//! AMQP cannot list queues, so without `--queue` the tool asks RabbitMQ's
//! management API (`GET /api/queues/{vhost}`) for the queues named
//! `{ns}.dlq.{queue}` (the topology's naming) and keeps those whose
//! `{queue}` part is a valid logical queue name.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use celeriac_producer::tls::TlsOptions;
use celeriac_schema::topology::validate_name;
use celeriac_schema::Topology;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::header::{ACCEPT, AUTHORIZATION};
use hyper_util::client::legacy::connect::Connect;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::error::{Error, Result};

/// How long the management API may take to answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Where the management API is and how to log in.
#[derive(Debug, Clone)]
pub struct Management {
    /// `http://host:port` or `https://host:port`, no trailing slash.
    pub base: String,
    /// User name.
    pub user: String,
    /// Password.
    pub password: String,
    /// Virtual host.
    pub vhost: String,
    /// Trust and client certificate for an `https://` base (the broker's).
    pub tls: TlsOptions,
}

impl Management {
    /// The management endpoint for an AMQP URL: the same host, port 15672
    /// (`https` on 15671 for an `amqps://` URL) unless `explicit` names
    /// another base URL, the URL's credentials and virtual host.
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] for a URL that does not parse.
    pub fn for_amqp(amqp_url: &str, explicit: Option<&str>) -> Result<Self> {
        // A list of cluster nodes: the management API of the first one.
        let amqp_url = celeriac_producer::addresses::split(amqp_url)
            .first()
            .copied()
            .unwrap_or(amqp_url);
        let uri: lapin::uri::AMQPUri = amqp_url
            .parse()
            .map_err(|e| Error::Usage(format!("invalid --amqp-addr: {e}")))?;
        // As written: the AMQP URI parser keeps only a domain name and
        // puts `localhost` in place of an IP address.
        let host = url::Url::parse(amqp_url)
            .ok()
            .and_then(|url| url.host_str().map(str::to_owned))
            .unwrap_or_else(|| uri.authority.host.clone());
        let base = match explicit {
            Some(base) => base.trim_end_matches('/').to_owned(),
            None if uri.scheme == lapin::uri::AMQPScheme::AMQPS => {
                format!("https://{host}:15671")
            }
            None => format!("http://{host}:15672"),
        };
        Ok(Management {
            base,
            user: uri.authority.userinfo.username.clone(),
            password: uri.authority.userinfo.password.clone(),
            vhost: uri.vhost.clone(),
            tls: TlsOptions::default(),
        })
    }

    /// The same endpoint with TLS options for an `https://` base.
    pub fn with_tls(mut self, tls: TlsOptions) -> Self {
        self.tls = tls;
        self
    }

    /// The logical queues that have a dead-letter queue in `topology`'s
    /// namespace, sorted.
    ///
    /// # Errors
    ///
    /// [`Error::Discovery`] when the API cannot be reached or answers
    /// something else than a queue list.
    pub async fn dead_letter_queues(&self, topology: &Topology) -> Result<Vec<String>> {
        let queues = self.queue_list("name").await?;
        let prefix = format!("{}.dlq.", topology.namespace());
        let mut out: Vec<String> = queues
            .iter()
            .filter_map(|q| q.get("name")?.as_str())
            .filter_map(|name| name.strip_prefix(&prefix))
            .filter(|queue| validate_name("queue", queue).is_ok())
            .map(str::to_owned)
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Every work and dead-letter queue of `topology`'s namespace with its
    /// ready messages and consumers, as the broker counts them now, sorted
    /// by logical queue.
    ///
    /// # Errors
    ///
    /// [`Error::Discovery`] when the API cannot be reached or answers
    /// something else than a queue list.
    pub async fn queue_depths(&self, topology: &Topology) -> Result<Vec<QueueDepth>> {
        let queues = self
            .queue_list("name,messages_ready,messages_unacknowledged,consumers")
            .await?;
        let work = format!("{}.q.", topology.namespace());
        let dead = format!("{}.dlq.", topology.namespace());
        let count = |q: &serde_json::Value, field: &str| {
            q.get(field)
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0)
        };
        let mut out: Vec<QueueDepth> = queues
            .iter()
            .filter_map(|q| {
                let name = q.get("name")?.as_str()?;
                let (kind, queue) = match (name.strip_prefix(&work), name.strip_prefix(&dead)) {
                    (Some(queue), _) => (QueueKind::Work, queue),
                    (_, Some(queue)) => (QueueKind::DeadLetter, queue),
                    _ => return None,
                };
                validate_name("queue", queue).ok()?;
                Some(QueueDepth {
                    queue: queue.to_owned(),
                    kind,
                    ready: count(q, "messages_ready"),
                    unacked: count(q, "messages_unacknowledged"),
                    consumers: count(q, "consumers"),
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.queue, a.kind).cmp(&(&b.queue, b.kind)));
        Ok(out)
    }

    /// `GET /api/queues/{vhost}?columns=...`: the queues of the virtual
    /// host as JSON objects with those fields (comma-separated, dotted for
    /// nested ones: `name,message_stats.publish`).
    ///
    /// # Errors
    ///
    /// [`Error::Discovery`] when the API cannot be reached or answers
    /// something else than a queue list.
    pub async fn queue_list(&self, columns: &str) -> Result<Vec<serde_json::Value>> {
        let fail = |reason: String| Error::Discovery {
            url: self.base.clone(),
            reason,
        };
        let url = format!(
            "{}/api/queues/{}?columns={columns}",
            self.base,
            percent_encode(&self.vhost)
        );
        let uri: hyper::Uri = url.parse().map_err(|e| fail(format!("not a URL: {e}")))?;
        let auth = BASE64.encode(format!("{}:{}", self.user, self.password));
        let request = hyper::Request::get(uri.clone())
            .header(AUTHORIZATION, format!("Basic {auth}"))
            .header(ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| fail(e.to_string()))?;
        let exchange = async {
            match uri.scheme_str() {
                Some("http") => {
                    let client = Client::builder(TokioExecutor::new()).build_http();
                    get(client, request).await
                }
                Some("https") => {
                    let config = self.tls.rustls_config().map_err(|e| e.to_string())?;
                    let connector = hyper_rustls::HttpsConnectorBuilder::new()
                        .with_tls_config((*config).clone())
                        .https_only()
                        .enable_http1()
                        .build();
                    let client = Client::builder(TokioExecutor::new()).build(connector);
                    get(client, request).await
                }
                _ => Err("only http:// and https:// management URLs are supported".to_owned()),
            }
        };
        let (status, body) = tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| fail(format!("no answer within {TIMEOUT:?}")))?
            .map_err(fail)?;
        if status != hyper::StatusCode::OK {
            return Err(fail(format!("answered {status}")));
        }
        serde_json::from_slice(&body).map_err(|e| fail(format!("not a queue list: {e}")))
    }
}

/// Which of a logical queue's broker queues a [`QueueDepth`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum QueueKind {
    /// `{ns}.q.{queue}`, where tasks wait.
    Work,
    /// `{ns}.dlq.{queue}`, where dead letters wait.
    DeadLetter,
}

impl QueueKind {
    /// `work` or `dlq`, the `kind` label of the queue metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueKind::Work => "work",
            QueueKind::DeadLetter => "dlq",
        }
    }
}

/// A broker queue of a namespace, as the management API counts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDepth {
    /// The logical queue (`default`, `emails`).
    pub queue: String,
    /// Work or dead-letter queue.
    pub kind: QueueKind,
    /// Messages ready for delivery.
    pub ready: u64,
    /// Messages delivered and not yet acknowledged.
    pub unacked: u64,
    /// Consumers attached.
    pub consumers: u64,
}

/// Sends `request` and reads the whole answer; the error is the chain of
/// causes (the client's own message is only "client error (Connect)").
async fn get<C>(
    client: Client<C, Empty<Bytes>>,
    request: hyper::Request<Empty<Bytes>>,
) -> std::result::Result<(hyper::StatusCode, Bytes), String>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    let response = client.request(request).await.map_err(|e| reason(&e))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| reason(&e))?
        .to_bytes();
    Ok((status, body))
}

/// What went wrong, from the innermost cause out; a TLS failure with its
/// usual cause.
fn reason(error: &(dyn std::error::Error + 'static)) -> String {
    if let Some(tls) = celeriac_producer::tls::failure_reason(error) {
        return format!("TLS: {tls}");
    }
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(e) = source {
        parts.push(e.to_string());
        source = e.source();
    }
    parts.join(": ")
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_from_amqp_url() {
        let m = Management::for_amqp("amqp://u:p@broker:5672/%2f", None).expect("parses");
        assert_eq!(m.base, "http://broker:15672");
        assert_eq!((m.user.as_str(), m.password.as_str()), ("u", "p"));
        assert_eq!(percent_encode(&m.vhost), "%2F");
        let m = Management::for_amqp("amqps://u:p@broker/%2f", None).expect("parses");
        assert_eq!(m.base, "https://broker:15671");
        let m = Management::for_amqp("amqp://u:p@10.1.2.3:5672/%2f", None).expect("parses");
        assert_eq!(m.base, "http://10.1.2.3:15672");
        let m = Management::for_amqp("amqps://u:p@[::1]/%2f", None).expect("parses");
        assert_eq!(m.base, "https://[::1]:15671");
        let m = Management::for_amqp("amqps://u:p@broker/%2f", Some("http://admin:8080/"))
            .expect("parses");
        assert_eq!(m.base, "http://admin:8080");
    }

    #[tokio::test]
    async fn an_unsupported_scheme_is_a_discovery_error() {
        let m =
            Management::for_amqp("amqp://u:p@broker/%2f", Some("ftp://broker")).expect("parses");
        let topology = Topology::new("ns").expect("a valid namespace");
        let err = m
            .dead_letter_queues(&topology)
            .await
            .expect_err("ftp is refused");
        assert!(
            err.to_string().contains("only http:// and https://"),
            "{err}"
        );
    }
}
