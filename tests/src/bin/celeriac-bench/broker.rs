//! The broker: connecting, fresh namespaces and their clean-up, and what
//! can be learnt about the broker itself (its version, its pid when it runs
//! on this machine).

use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use celeriac_producer::tls::TlsOptions;
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};

/// How long connecting to the broker may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects within [`CONNECT_TIMEOUT`] (a broker that accepts TCP but
/// never answers would otherwise hang the bench).
pub async fn connect(url: &str, tls: &TlsOptions, name: &str) -> Result<Connection> {
    let props = ConnectionProperties::default()
        .with_connection_name(format!("celeriac-bench {name}").into());
    let redacted = celeriac_producer::redact_url(url);
    tokio::time::timeout(
        CONNECT_TIMEOUT,
        celeriac_producer::tls::connect(url, props, tls),
    )
    .await
    .map_err(|_| anyhow!("no answer from the broker at {redacted} within {CONNECT_TIMEOUT:?}"))?
    .with_context(|| format!("cannot reach the broker at {redacted}"))
}

/// A fresh namespace: `bench-{kind}-{random}`.
pub fn namespace(kind: &str) -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    format!("bench-{kind}-{}", &id[id.len() - 10..])
}

/// Deletes queues and exchanges, on a connection of its own (the measuring
/// ones may be gone after a failure); reports what it could not delete.
pub async fn cleanup(url: &str, tls: &TlsOptions, queues: &[String], exchanges: &[String]) {
    let work = async {
        let connection = connect(url, tls, "clean-up").await?;
        let mut channel = connection.create_channel().await?;
        let mut failed = Vec::new();
        for queue in queues {
            if !channel.status().connected() {
                channel = connection.create_channel().await?;
            }
            if let Err(e) = channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await
            {
                failed.push(format!("queue {queue}: {e}"));
            }
        }
        for exchange in exchanges {
            if !channel.status().connected() {
                channel = connection.create_channel().await?;
            }
            if let Err(e) = channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await
            {
                failed.push(format!("exchange {exchange}: {e}"));
            }
        }
        let _ = connection.close(200, "clean-up done".into()).await;
        Ok::<_, anyhow::Error>(failed)
    };
    match tokio::time::timeout(Duration::from_secs(60), work).await {
        Ok(Ok(failed)) if failed.is_empty() => {}
        Ok(Ok(failed)) => eprintln!("clean-up: could not delete {}", failed.join("; ")),
        Ok(Err(e)) => eprintln!("clean-up: {e:#}"),
        Err(_) => eprintln!("clean-up: not done within 60 s"),
    }
}

/// The broker's version from its `connection.start` server properties.
pub fn broker_version(url: &str) -> Option<String> {
    use std::io::{Read, Write};
    let uri: lapin::uri::AMQPUri = url.parse().ok()?;
    if uri.scheme != lapin::uri::AMQPScheme::AMQP {
        return None;
    }
    let timeout = Duration::from_secs(5);
    let address = std::net::ToSocketAddrs::to_socket_addrs(&(
        uri.authority.host.as_str(),
        uri.authority.port,
    ))
    .ok()?
    .next()?;
    let mut stream = std::net::TcpStream::connect_timeout(&address, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.write_all(b"AMQP\x00\x00\x09\x01").ok()?;
    let mut header = [0u8; 7];
    stream.read_exact(&mut header).ok()?;
    let size = u32::from_be_bytes([header[3], header[4], header[5], header[6]]) as usize;
    if size > 1 << 20 {
        return None;
    }
    let mut frame = vec![0u8; size];
    stream.read_exact(&mut frame).ok()?;
    let key = b"\x07versionS";
    let at = frame.windows(key.len()).position(|w| w == key)? + key.len();
    let len = u32::from_be_bytes(frame.get(at..at + 4)?.try_into().ok()?) as usize;
    let version = frame.get(at + 4..at + 4 + len)?;
    Some(String::from_utf8_lossy(version).into_owned())
}

/// The pid of the process listening on the broker's port, when the broker
/// runs on this machine (found through its listening socket, so another
/// RabbitMQ node on the same machine is not mistaken for it).
pub fn local_broker_pid(url: &str) -> Option<u32> {
    let uri: lapin::uri::AMQPUri = url.parse().ok()?;
    local_listener_pid(uri.authority.host.as_str(), uri.authority.port)
}

/// The pid of the Redis server of `url`, when it runs on this machine.
pub fn local_store_pid(url: &str) -> Option<u32> {
    let info = redis::IntoConnectionInfo::into_connection_info(url).ok()?;
    match info.addr() {
        redis::ConnectionAddr::Tcp(host, port) => local_listener_pid(host, *port),
        redis::ConnectionAddr::TcpTls { host, port, .. } => local_listener_pid(host, *port),
        _ => None,
    }
}

/// The pid of the process listening on `port` of this machine, if `host`
/// is this machine.
fn local_listener_pid(host: &str, port: u16) -> Option<u32> {
    if !matches!(host, "localhost" | "127.0.0.1" | "::1" | "[::1]") {
        return None;
    }
    let port = format!(":{port:04X}");
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address, state (0A = LISTEN), inode.
            if let (Some(local), Some(&"0A"), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            {
                if local.ends_with(&port) {
                    inodes.push(format!("socket:[{inode}]"));
                }
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
            fds.flatten()
                .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                .any(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
                .then_some(pid)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_listener_is_found_by_its_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a local port");
        let port = listener.local_addr().expect("its address").port();
        assert_eq!(
            local_listener_pid("127.0.0.1", port),
            Some(std::process::id())
        );
        assert_eq!(
            local_store_pid(&format!("redis://127.0.0.1:{port}/0")),
            Some(std::process::id())
        );
        assert_eq!(
            local_broker_pid(&format!("amqp://guest:guest@localhost:{port}/%2f")),
            Some(std::process::id())
        );
    }

    #[test]
    fn remote_or_unparsable_servers_have_no_local_pid() {
        assert_eq!(local_store_pid("redis://redis.internal:6379"), None);
        assert_eq!(local_store_pid("not a url"), None);
        assert_eq!(local_broker_pid("amqp://rabbit.internal:5672/%2f"), None);
    }
}
