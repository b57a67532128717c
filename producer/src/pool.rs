//! The producer's pool of broker connections (deadpool), each opened by
//! [`crate::tls::connect`] so that `amqps://` URLs get TLS.

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use lapin::{Connection, ConnectionProperties};

use crate::error::Error;
use crate::tls::TlsOptions;

/// A pool of connections to one broker.
pub(crate) type Pool = managed::Pool<Manager>;

/// Opens connections for the pool and drops the ones that closed.
pub(crate) struct Manager {
    url: String,
    tls: TlsOptions,
    name: &'static str,
}

impl Manager {
    /// Connections to `url` with `tls`, named `name` in the broker's list.
    pub(crate) fn new(url: String, tls: TlsOptions, name: &'static str) -> Self {
        Manager { url, tls, name }
    }
}

impl managed::Manager for Manager {
    type Type = Connection;
    type Error = Error;

    async fn create(&self) -> Result<Connection, Error> {
        let properties = ConnectionProperties::default().with_connection_name(self.name.into());
        crate::tls::connect(&self.url, properties, &self.tls).await
    }

    async fn recycle(&self, connection: &mut Connection, _: &Metrics) -> RecycleResult<Error> {
        if connection.status().connected() {
            Ok(())
        } else {
            Err(RecycleError::message(format!(
                "connection is not connected: {:?}",
                connection.status()
            )))
        }
    }
}

/// A pool of at most `size` connections.
pub(crate) fn new(url: String, tls: TlsOptions, size: usize) -> Result<Pool, String> {
    Pool::builder(Manager::new(url, tls, "celeriac-producer"))
        .max_size(size)
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|e| e.to_string())
}
