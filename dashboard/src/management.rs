//! The RabbitMQ management API's queue list (`GET /api/queues/{vhost}`):
//! the names, unacknowledged counts and message counters the Queues page
//! uses.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use celeriac_dlq::discover::Management;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::header::{ACCEPT, AUTHORIZATION};
use hyper_util::client::legacy::connect::Connect;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

/// How long the management API may take to answer.
const TIMEOUT: Duration = Duration::from_secs(3);

/// One queue as the management API reports it.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct QueueInfo {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) messages_unacknowledged: Option<u64>,
    #[serde(default)]
    pub(crate) message_stats: Option<MessageStats>,
}

/// Cumulative counters (present once the queue saw traffic).
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct MessageStats {
    #[serde(default)]
    pub(crate) publish: Option<u64>,
    #[serde(default)]
    pub(crate) ack: Option<u64>,
}

/// Every queue of the virtual host, or why they could not be listed.
pub(crate) async fn queues(management: &Management) -> Result<Vec<QueueInfo>, String> {
    let url = format!(
        "{}/api/queues/{}?columns=name,messages_unacknowledged,message_stats.publish,message_stats.ack",
        management.base,
        percent_encode(&management.vhost)
    );
    let uri: hyper::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    let auth = BASE64.encode(format!("{}:{}", management.user, management.password));
    let request = hyper::Request::get(uri.clone())
        .header(AUTHORIZATION, format!("Basic {auth}"))
        .header(ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let exchange = async {
        match uri.scheme_str() {
            Some("http") => get(Client::builder(TokioExecutor::new()).build_http(), request).await,
            Some("https") => {
                let config = management.tls.rustls_config().map_err(|e| e.to_string())?;
                let connector = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config((*config).clone())
                    .https_only()
                    .enable_http1()
                    .build();
                get(
                    Client::builder(TokioExecutor::new()).build(connector),
                    request,
                )
                .await
            }
            _ => Err("only http:// and https:// management URLs are supported".to_owned()),
        }
    };
    let (status, body) = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer within {TIMEOUT:?}"))??;
    if status != hyper::StatusCode::OK {
        return Err(format!("answered {status}"));
    }
    serde_json::from_slice(&body).map_err(|e| format!("not a queue list: {e}"))
}

async fn get<C>(
    client: Client<C, Empty<Bytes>>,
    request: hyper::Request<Empty<Bytes>>,
) -> Result<(hyper::StatusCode, Bytes), String>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    let response = client.request(request).await.map_err(|e| chain(&e))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| chain(&e))?
        .to_bytes();
    Ok((status, body))
}

fn chain(error: &(dyn std::error::Error + 'static)) -> String {
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
