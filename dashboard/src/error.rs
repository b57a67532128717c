//! The dashboard's errors, and how each answers an API request.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A flag or file that cannot be used.
    #[error("{0}")]
    Config(String),
    /// The state store failed.
    #[error(transparent)]
    Store(#[from] celeriac_schema::Error),
    /// A dead-letter operation failed.
    #[error(transparent)]
    DeadLetters(#[from] celeriac_dlq::Error),
    /// The broker could not be reached or refused.
    #[error("broker: {0}")]
    Broker(String),
    /// Nothing with this id or name.
    #[error("{0}")]
    NotFound(String),
    /// A request that cannot be understood.
    #[error("{0}")]
    BadRequest(String),
    /// A write while the dashboard is read-only, or a foreign origin.
    #[error("{0}")]
    Forbidden(String),
    /// A feature this deployment does not have (revoke without a control
    /// plane).
    #[error("{0}")]
    NotImplemented(String),
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The dashboard's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The HTTP status an API request that failed this way answers.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::BadRequest(_) | Error::Config(_) => StatusCode::BAD_REQUEST,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            Error::DeadLetters(celeriac_dlq::Error::UnknownQueue { .. }) => StatusCode::NOT_FOUND,
            Error::Store(_) | Error::DeadLetters(_) | Error::Broker(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::Listen { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!("request failed: {self}");
        }
        (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}
