//! Finding the dead-letter queues of a namespace.
//!
//! AMQP cannot list queues, so without `--queue` the tool asks RabbitMQ's
//! management API (`GET /api/queues/{vhost}`) for the queues named
//! `{ns}.dlq.{queue}` (the topology's naming) and keeps those whose
//! `{queue}` part is a valid logical queue name.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use celeriac_schema::topology::validate_name;
use celeriac_schema::Topology;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::{Error, Result};

/// Where the management API is and how to log in.
#[derive(Debug, Clone)]
pub struct Management {
    /// `http://host:port`, no trailing slash.
    pub base: String,
    /// User name.
    pub user: String,
    /// Password.
    pub password: String,
    /// Virtual host.
    pub vhost: String,
}

impl Management {
    /// The management endpoint for an AMQP URL: the same host, port 15672
    /// unless `explicit` names another base URL, the URL's credentials and
    /// virtual host.
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] for a URL that does not parse.
    pub fn for_amqp(amqp_url: &str, explicit: Option<&str>) -> Result<Self> {
        let uri: lapin::uri::AMQPUri = amqp_url
            .parse()
            .map_err(|e| Error::Usage(format!("invalid --amqp-addr: {e}")))?;
        let base = match explicit {
            Some(base) => base.trim_end_matches('/').to_owned(),
            None => format!("http://{}:15672", uri.authority.host),
        };
        Ok(Management {
            base,
            user: uri.authority.userinfo.username.clone(),
            password: uri.authority.userinfo.password.clone(),
            vhost: uri.vhost.clone(),
        })
    }

    /// The logical queues that have a dead-letter queue in `topology`'s
    /// namespace, sorted.
    ///
    /// # Errors
    ///
    /// [`Error::Discovery`] when the API cannot be reached or answers
    /// something else than a queue list.
    pub async fn dead_letter_queues(&self, topology: &Topology) -> Result<Vec<String>> {
        let fail = |reason: String| Error::Discovery {
            url: self.base.clone(),
            reason,
        };
        let rest = self
            .base
            .strip_prefix("http://")
            .ok_or_else(|| fail("only http:// management URLs are supported".into()))?;
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let address = if authority.contains(':') {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let path = format!(
            "{prefix}/api/queues/{}?columns=name",
            percent_encode(&self.vhost)
        );
        let auth = BASE64.encode(format!("{}:{}", self.user, self.password));
        let request = format!(
            "GET {path} HTTP/1.0\r\nHost: {authority}\r\nAuthorization: Basic {auth}\r\nAccept: application/json\r\n\r\n"
        );
        let exchange = async {
            let mut stream = tokio::net::TcpStream::connect(&address).await?;
            stream.write_all(request.as_bytes()).await?;
            let mut response = Vec::new();
            stream.read_to_end(&mut response).await?;
            Ok::<_, std::io::Error>(response)
        };
        let response = tokio::time::timeout(Duration::from_secs(5), exchange)
            .await
            .map_err(|_| fail("no answer within 5s".into()))?
            .map_err(|e| fail(e.to_string()))?;
        let text = String::from_utf8_lossy(&response);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| fail("not an HTTP response".into()))?;
        let status = head.lines().next().unwrap_or_default();
        if status.split_whitespace().nth(1) != Some("200") {
            return Err(fail(format!("answered {status:?}")));
        }
        let queues: Vec<serde_json::Value> =
            serde_json::from_str(body).map_err(|e| fail(format!("not a queue list: {e}")))?;
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
    }
}
