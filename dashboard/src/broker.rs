//! The dashboard's one AMQP connection: opened on first use, opened again
//! when it was lost; each operation takes a channel of its own (a passive
//! declare of a missing queue closes the channel it was asked on).

use std::time::Duration;

use celeriac_producer::tls::TlsOptions;
use lapin::{Channel, Connection, ConnectionProperties};
use tokio::sync::Mutex;

use crate::error::{Error, Result};

/// How long to try to reach the broker.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) struct Broker {
    url: String,
    tls: TlsOptions,
    connection: Mutex<Option<Connection>>,
}

impl Broker {
    pub(crate) fn new(url: &str, tls: TlsOptions) -> Broker {
        Broker {
            url: url.to_owned(),
            tls,
            connection: Mutex::new(None),
        }
    }

    /// A fresh channel on the (re)opened connection.
    pub(crate) async fn channel(&self) -> Result<Channel> {
        let mut guard = self.connection.lock().await;
        if let Some(connection) = guard.as_ref() {
            if connection.status().connected() {
                if let Ok(channel) = connection.create_channel().await {
                    return Ok(channel);
                }
            }
        }
        let props =
            ConnectionProperties::default().with_connection_name("celeriac-dashboard".into());
        let url = celeriac_producer::redact_url(&self.url);
        let connection = tokio::time::timeout(
            CONNECT_TIMEOUT,
            celeriac_producer::tls::connect(&self.url, props, &self.tls),
        )
        .await
        .map_err(|_| Error::Broker(format!("no connection to {url} within {CONNECT_TIMEOUT:?}")))?
        .map_err(|e| Error::Broker(format!("cannot connect to {url}: {e}")))?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| Error::Broker(format!("cannot open a channel: {e}")))?;
        *guard = Some(connection);
        Ok(channel)
    }

    /// Closes the connection, if open.
    pub(crate) async fn close(&self) {
        if let Some(connection) = self.connection.lock().await.take() {
            let close = connection.close(200, "dashboard stopped".into());
            let _ = tokio::time::timeout(Duration::from_secs(2), close).await;
        }
    }
}

/// Closes a channel, ignoring the outcome (it may be closed already).
pub(crate) async fn close(channel: Channel) {
    let _ = tokio::time::timeout(Duration::from_secs(2), channel.close(200, "done".into())).await;
}
