//! The HTTP endpoints of a worker (and of `celeriac beat`): `/metrics`,
//! `/healthz` and `/readyz`, served for anything that implements
//! [`Endpoints`].
//!
//! - `/metrics`: the worker's metrics in the Prometheus text format;
//! - `/healthz`: 200 while the process runs (a liveness probe);
//! - `/readyz`: 200 while the worker is connected, has declared its
//!   topology, consumes and its state store (if any) answers; 503 with the
//!   reason otherwise, and from the moment a shutdown begins.
//!
//! With a bearer token configured, `/metrics` answers 401 to a request
//! without `Authorization: Bearer <token>`; the probes stay open, since
//! they reveal nothing and the kubelet sends no credentials.
//!
//! Workers take no other inbound traffic, so the server is small: HTTP/1.1
//! on hyper, one task per connection, a header timeout against idle
//! clients.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::metrics::WorkerMetrics;
use crate::stats::WorkerStats;

/// How long a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What a daemon's probe server reports.
///
/// # Examples
///
/// ```
/// use celeriac_consumer::http::Endpoints;
///
/// struct Always;
/// impl Endpoints for Always {
///     fn render_metrics(&self) -> prometheus::Result<String> {
///         Ok("up 1\n".to_owned())
///     }
///     fn readiness(&self) -> Result<(), String> {
///         Ok(())
///     }
///     fn token(&self) -> Option<&str> {
///         None
///     }
/// }
/// assert!(Always.readiness().is_ok());
/// ```
pub trait Endpoints: Send + Sync + 'static {
    /// The metrics in the Prometheus text format.
    ///
    /// # Errors
    ///
    /// When a metric cannot be encoded.
    fn render_metrics(&self) -> prometheus::Result<String>;
    /// `Ok` when ready, else why not (the body of a 503 from `/readyz`).
    ///
    /// # Errors
    ///
    /// The reason the daemon is not ready.
    fn readiness(&self) -> Result<(), String>;
    /// The bearer token `/metrics` requires, if any.
    fn token(&self) -> Option<&str>;
}

/// Whether a request's `Authorization` header lets it read `/metrics`.
fn authorized(token: Option<&str>, header: Option<&HeaderValue>) -> bool {
    let Some(token) = token else {
        return true;
    };
    let Some(presented) = header
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
    else {
        return false;
    };
    constant_time_eq(presented.trim().as_bytes(), token.as_bytes())
}

/// What the worker's endpoints read.
#[derive(Debug, Clone)]
pub(crate) struct HttpState {
    pub(crate) metrics: Arc<WorkerMetrics>,
    pub(crate) stats: Arc<WorkerStats>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) has_store: bool,
    /// The bearer token `/metrics` requires, if any.
    pub(crate) token: Option<Arc<str>>,
}

impl HttpState {
    /// `Ok` when ready, else why not.
    pub(crate) fn readiness(&self) -> Result<(), &'static str> {
        if self.shutdown.is_cancelled() {
            Err("shutting down")
        } else if !self.stats.ready.load(std::sync::atomic::Ordering::Relaxed) {
            Err("not connected to the broker or not consuming")
        } else if self.stats.store_down() {
            Err("state store unreachable")
        } else {
            Ok(())
        }
    }

    #[cfg(test)]
    fn authorized(&self, header: Option<&HeaderValue>) -> bool {
        authorized(self.token.as_deref(), header)
    }

    /// The metrics in the text format, readiness gauges brought up to date.
    pub(crate) fn render_metrics(&self) -> prometheus::Result<String> {
        // Without a store nothing is down: report 1, so the store alert
        // stays silent for workers that run without one.
        let store_up = !self.has_store || !self.stats.store_down();
        self.metrics.render(self.readiness().is_ok(), store_up)
    }
}

impl Endpoints for HttpState {
    fn render_metrics(&self) -> prometheus::Result<String> {
        HttpState::render_metrics(self)
    }

    fn readiness(&self) -> Result<(), String> {
        HttpState::readiness(self).map_err(str::to_owned)
    }

    fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` of `state` on `listener`
/// until `stop` is cancelled; stops accepting the moment it is.
pub async fn serve<E: Endpoints>(listener: TcpListener, state: Arc<E>, stop: CancellationToken) {
    let local = listener.local_addr().ok();
    info!(addr = ?local, "serving /metrics, /healthz and /readyz");
    loop {
        // Biased: once stopped, a connection already waiting is refused, not
        // served, so nothing answers after the worker's `run` returned.
        let (stream, peer) = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Typically out of file descriptors: pause, do not spin.
                    warn!(error = %e, "metrics server cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let response = respond(&*state, &req);
                async move { Ok::<_, Infallible>(response) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        debug!(%peer, error = %e, "metrics connection ended with an error");
                    }
                }
                _ = stop.cancelled() => {}
            }
        });
    }
}

fn respond<E: Endpoints>(state: &E, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
    }
    match req.uri().path() {
        "/metrics" if !authorized(state.token(), req.headers().get(AUTHORIZATION)) => {
            let mut response = text(StatusCode::UNAUTHORIZED, "a bearer token is required\n");
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"celeriac\""),
            );
            response
        }
        "/metrics" => match state.render_metrics() {
            Ok(body) => {
                let mut response = Response::new(Full::new(Bytes::from(body)));
                response.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                response
            }
            Err(e) => {
                warn!(error = %e, "cannot render the metrics");
                text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "cannot render the metrics\n",
                )
            }
        },
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => match state.readiness() {
            Ok(()) => text(StatusCode::OK, "ready\n"),
            Err(reason) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("not ready: {reason}\n"),
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /metrics, /healthz or /readyz\n",
        ),
    }
}

/// Compares without an early exit, so the time taken tells nothing about
/// how much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::copy_from_slice(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Parses a `--metrics-addr` value: `None` for `off` or an empty string.
///
/// # Errors
///
/// A message for a value that is neither `off` nor a socket address.
pub fn parse_metrics_addr(value: &str) -> Result<Option<SocketAddr>, String> {
    let value = value.trim();
    if value.is_empty() || value.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .map_err(|e| format!("{value:?} is not host:port (e.g. 127.0.0.1:9464) nor `off`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_addr_accepts_addresses_and_off() {
        assert_eq!(parse_metrics_addr("off"), Ok(None));
        assert_eq!(parse_metrics_addr(""), Ok(None));
        assert_eq!(
            parse_metrics_addr("0.0.0.0:9464"),
            Ok(Some(SocketAddr::from(([0, 0, 0, 0], 9464))))
        );
        assert!(parse_metrics_addr("localhost").is_err());
    }

    #[test]
    fn metrics_token_is_checked_exactly() {
        let mut state = HttpState {
            metrics: Arc::new(WorkerMetrics::new(&["default".to_owned()], ["t"])),
            stats: Arc::new(WorkerStats::default()),
            shutdown: CancellationToken::new(),
            has_store: false,
            token: None,
        };
        assert!(state.authorized(None), "no token configured: open");
        state.token = Some(Arc::from("s3cret"));
        let header = |v: &'static str| Some(HeaderValue::from_static(v));
        assert!(state.authorized(header("Bearer s3cret").as_ref()));
        assert!(!state.authorized(None));
        assert!(!state.authorized(header("Bearer s3cre").as_ref()));
        assert!(!state.authorized(header("Bearer s3cret2").as_ref()));
        assert!(!state.authorized(header("Basic s3cret").as_ref()));
        assert!(!state.authorized(header("s3cret").as_ref()));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"a", b""));
    }

    #[test]
    fn readiness_follows_connection_store_and_shutdown() {
        let state = HttpState {
            metrics: Arc::new(WorkerMetrics::new(&["default".to_owned()], ["t"])),
            stats: Arc::new(WorkerStats::default()),
            shutdown: CancellationToken::new(),
            has_store: true,
            token: None,
        };
        assert!(state.readiness().is_err());
        state
            .stats
            .ready
            .store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(state.readiness(), Ok(()));
        state
            .stats
            .store_down
            .store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(state.readiness(), Err("state store unreachable"));
        let text = state.render_metrics().expect("renders");
        assert!(text.contains("celeriac_store_up 0"));
        assert!(text.contains("celeriac_worker_ready 0"));
        state
            .stats
            .store_down
            .store(false, std::sync::atomic::Ordering::Relaxed);
        state.shutdown.cancel();
        assert_eq!(state.readiness(), Err("shutting down"));
    }
}
