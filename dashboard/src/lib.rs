//! # celeriac-dashboard: the web dashboard
//!
//! A small web server, in the `celeriac` binary as `celeriac dashboard`,
//! that shows a namespace's queues, tasks, workflows, dead letters and
//! workers, live, and lets an operator replay or delete dead letters and
//! revoke tasks. Every page is a thin client of a JSON API under `/api/`
//! (documented in the crate's README), and every asset is built into the
//! binary.
//!
//! - [`auth`]: the login and the rules every write passes; without a login
//!   the dashboard is read-only.
//! - [`queues`]: depth, consumers, rates and dead letters per work queue,
//!   from the RabbitMQ management API or passive declares.
//! - [`tasks`] and [`workflows`]: the state store's records, through its
//!   index of recent tasks.
//! - [`dead_letters`]: browse, inspect, replay and delete, with the
//!   dead-letter tool's scan (a copy is confirmed before its original is
//!   deleted).
//! - [`workers`]: heartbeats through [`WorkerSource`] (the workers' own
//!   records in the store: [`StoreHeartbeats`]), and the workers seen in
//!   recent tasks.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> celeriac_dashboard::Result<()> {
//! use celeriac_dashboard::{Config, Dashboard};
//! use celeriac_schema::store::StoreSettings;
//!
//! let store = celeriac_store::RedisStore::connect(
//!     "redis://127.0.0.1:6379", "celeriac", StoreSettings::default()).await?;
//! let config = Config::new("amqp://guest:guest@127.0.0.1:5672/%2f", "celeriac");
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await
//!     .map_err(|e| celeriac_dashboard::Error::Config(e.to_string()))?;
//! Dashboard::new(config, store).serve(listener, std::future::pending()).await?;
//! # Ok(()) }
//! ```

pub mod auth;
mod broker;
pub mod dead_letters;
mod error;
mod management;
pub mod queues;
mod routes;
pub mod tasks;
pub mod workers;
pub mod workflows;

use std::future::Future;
use std::sync::Arc;

use celeriac_producer::tls::TlsOptions;
use celeriac_schema::signing::Keyring;
use celeriac_schema::Topology;
use celeriac_store::RedisStore;

pub use auth::Login;
pub use error::{Error, Result};
pub use tasks::{RevokeFuture, RevokeHook, RevokeOptions};
pub use workers::{NoHeartbeats, StoreHeartbeats, WorkerHeartbeat, WorkerSource};

/// What the dashboard serves and how.
#[derive(Debug, Clone)]
pub struct Config {
    /// The broker.
    pub amqp_addr: String,
    /// TLS to an `amqps://` broker (and its management API over https).
    pub broker_tls: TlsOptions,
    /// The management API's base URL (default: the broker's host, port
    /// 15672, or https on 15671 for `amqps://`).
    pub management_url: Option<String>,
    /// The namespace of the queues and the store keys.
    pub namespace: String,
    /// Logical queues to show when the management API cannot list them
    /// (besides `default` and the queues of recent tasks).
    pub queues: Vec<String>,
    /// The login; `None` makes the dashboard read-only.
    pub login: Option<Login>,
    /// Refuse every write even with a login.
    pub read_only: bool,
    /// Keys to sign replayed dead letters with, when workers require
    /// signatures.
    pub signing: Option<Keyring>,
}

impl Config {
    /// A read-only dashboard of `namespace` on the broker at `amqp_addr`.
    pub fn new(amqp_addr: impl Into<String>, namespace: impl Into<String>) -> Config {
        Config {
            amqp_addr: amqp_addr.into(),
            broker_tls: TlsOptions::default(),
            management_url: None,
            namespace: namespace.into(),
            queues: Vec::new(),
            login: None,
            read_only: false,
            signing: None,
        }
    }
}

/// The shared state of the server.
pub(crate) struct App {
    pub(crate) config: Config,
    pub(crate) topology: Topology,
    pub(crate) store: RedisStore,
    pub(crate) login: Option<Login>,
    pub(crate) broker: broker::Broker,
    pub(crate) management: Option<celeriac_dlq::discover::Management>,
    pub(crate) samples: queues::Samples,
    pub(crate) dead_letter_lock: tokio::sync::Mutex<()>,
    pub(crate) workers: Arc<dyn WorkerSource>,
    pub(crate) revoke: Option<RevokeHook>,
}

impl App {
    /// Why writes are refused, or `None` when they are allowed.
    pub(crate) fn read_only_reason(&self) -> Option<&'static str> {
        if self.config.read_only {
            Some("the dashboard is read-only (--read-only): replay, delete and revoke are off")
        } else if self.login.is_none() {
            Some("the dashboard is read-only: start it with --token-file or --basic-auth-file to replay, delete and revoke")
        } else {
            None
        }
    }
}

/// The dashboard server, ready to serve.
pub struct Dashboard {
    config: Config,
    store: RedisStore,
    workers: Arc<dyn WorkerSource>,
    revoke: Option<RevokeHook>,
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard")
            .field("config", &self.config)
            .field("revoke", &self.revoke.is_some())
            .finish()
    }
}

impl Dashboard {
    /// A dashboard of `config.namespace` reading the store `store`, with
    /// no heartbeat source and no revoke.
    pub fn new(config: Config, store: RedisStore) -> Dashboard {
        Dashboard {
            config,
            store,
            workers: Arc::new(NoHeartbeats),
            revoke: None,
        }
    }

    /// Where the Workers page reads heartbeats from.
    pub fn workers(mut self, source: Arc<dyn WorkerSource>) -> Dashboard {
        self.workers = source;
        self
    }

    /// Enables the revoke button: `hook` revokes a task by id, and stops
    /// its run when asked to terminate.
    pub fn revoke(mut self, hook: RevokeHook) -> Dashboard {
        self.revoke = Some(hook);
        self
    }

    /// Serves on `listener` until `shutdown` completes.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid namespace or broker URL,
    /// [`Error::Listen`] when serving fails.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let topology = Topology::new(self.config.namespace.clone())
            .map_err(|e| Error::Config(e.to_string()))?;
        let management = match celeriac_dlq::discover::Management::for_amqp(
            &self.config.amqp_addr,
            self.config.management_url.as_deref(),
        ) {
            Ok(m) => Some(m.with_tls(self.config.broker_tls.clone())),
            Err(e) => return Err(Error::Config(e.to_string())),
        };
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let app = Arc::new(App {
            broker: broker::Broker::new(&self.config.amqp_addr, self.config.broker_tls.clone()),
            login: self.config.login.clone(),
            config: self.config,
            topology,
            store: self.store,
            management,
            samples: queues::Samples::default(),
            dead_letter_lock: tokio::sync::Mutex::new(()),
            workers: self.workers,
            revoke: self.revoke,
        });
        tracing::info!(%addr, read_only = app.read_only_reason().is_some(), "dashboard listening");
        let router = routes::router(app.clone());
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await;
        app.broker.close().await;
        served.map_err(|source| Error::Listen { addr, source })
    }
}
