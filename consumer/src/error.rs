//! The one error type of the consumer crate.

/// A `Result` whose error is the consumer's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can stop a worker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The worker was configured wrongly.
    #[error("invalid worker configuration: {0}")]
    Config(String),
    /// A secret's file (`--amqp-addr-file`, `--redis-url-file`) could not
    /// be read.
    #[error("{flag}-file {}: {source}", path.display())]
    SecretFile {
        /// The secret's flag, e.g. `--amqp-addr`.
        flag: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },
    /// Publishing or declaring failed.
    #[error(transparent)]
    Producer(#[from] celeriac_producer::Error),
    /// A name or limit of the wire contract was violated.
    #[error(transparent)]
    Schema(#[from] celeriac_schema::Error),
    /// Connecting to the broker failed (unreachable, a failed TLS handshake,
    /// a refused login); the worker tries again, as the broker's side may
    /// be fixed meanwhile.
    #[error("cannot connect to the broker: {0}")]
    Connect(#[source] celeriac_producer::Error),
    /// The worker has no live broker connection at the moment.
    #[error("no broker connection")]
    Disconnected,
    /// The metrics server could not listen on its address.
    #[error("cannot serve metrics on {addr}: {source}")]
    MetricsServer {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// Why binding failed.
        #[source]
        source: std::io::Error,
    },
    /// An AMQP operation failed.
    #[error("broker error while {doing}: {source}")]
    Amqp {
        /// What we were doing.
        doing: &'static str,
        /// The client's error.
        #[source]
        source: lapin::Error,
    },
}

impl Error {
    pub(crate) fn amqp(doing: &'static str) -> impl FnOnce(lapin::Error) -> Error {
        move |source| Error::Amqp { doing, source }
    }

    /// Whether a reconnect may fix it (as opposed to a configuration error).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Amqp { .. } | Error::Connect(_) | Error::Disconnected => true,
            Error::Producer(e) => e.is_transient(),
            Error::Config(_)
            | Error::SecretFile { .. }
            | Error::Schema(_)
            | Error::MetricsServer { .. } => false,
        }
    }
}

/// A TLS setting or URL the store crate refused: reported as the
/// producer's error, as before the store had its own crate.
impl From<celeriac_store::Error> for Error {
    fn from(error: celeriac_store::Error) -> Self {
        Error::Producer(error.into())
    }
}
