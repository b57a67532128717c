//! The one error type of the producer crate.

use std::time::Duration;

use celeriac_schema::TaskId;

/// A `Result` whose error is the producer's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while connecting or publishing.
///
/// Ask the error what to do rather than matching on it:
/// [`Error::is_transient`] says whether the same call may succeed later.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No connection to the broker within the connect timeout.
    #[error("could not reach the broker at {url} within {after:?}: {reason}")]
    Unreachable {
        /// The broker URL, password removed.
        url: String,
        /// How long we tried.
        after: Duration,
        /// The last error seen, if any.
        reason: String,
    },
    /// A broker or Redis URL that does not parse.
    #[error("invalid URL {url}: {reason}")]
    InvalidUrl {
        /// The URL, password removed.
        url: String,
        /// Why it does not parse.
        reason: String,
    },
    /// A TLS setting cannot be used: a file missing or unreadable, no
    /// certificate or key in it, a certificate without its key. The message
    /// names the file.
    #[error("TLS configuration: {0}")]
    TlsConfig(String),
    /// The TLS handshake with a server failed: an untrusted or wrong server
    /// certificate, a plaintext port, a missing or refused client
    /// certificate. A URL that asks for TLS never falls back to plaintext.
    #[error("TLS connection to {server} failed: {reason}")]
    Tls {
        /// The server, `host:port`.
        server: String,
        /// What went wrong, with its usual cause when known.
        reason: String,
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
    /// The broker returned a mandatory message: no queue is bound for it.
    #[error("task {task_id} is unroutable: exchange {exchange:?} has no queue for routing key {routing_key:?} ({reply})")]
    Unroutable {
        /// The task that bounced.
        task_id: String,
        /// Where it was published.
        exchange: String,
        /// With which key.
        routing_key: String,
        /// The broker's reply text.
        reply: String,
    },
    /// The broker refused to take responsibility for a message.
    #[error("broker nacked task {task_id}")]
    Nacked {
        /// The refused task.
        task_id: String,
    },
    /// The broker did not confirm a publish in time.
    #[error("no publisher confirm within {after:?}")]
    ConfirmTimeout {
        /// How long we waited.
        after: Duration,
    },
    /// Building or encoding the task failed (bad name, too large, ...).
    #[error(transparent)]
    Schema(#[from] celeriac_schema::Error),
    /// The workflow is not a DAG the cluster can run (a duplicate id, an
    /// unknown dependency, a cycle), named in the message.
    #[error(transparent)]
    Workflow(#[from] celeriac_schema::workflow::WorkflowError),
    /// A schedule or overlap policy was refused.
    #[error(transparent)]
    Schedule(#[from] crate::schedule::ScheduleError),
    /// The producer was configured with contradictory options.
    #[error("invalid send options: {0}")]
    InvalidOptions(String),
    /// A task body is larger than the limit workers accept.
    #[error("task {task_id} is {size} bytes, over the {limit}-byte limit workers accept")]
    TooLarge {
        /// The task.
        task_id: TaskId,
        /// Its encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Results or idempotency were asked of a producer without a store.
    #[error("{what} needs a state store: build the producer with `.store(...)` (for example a RedisStore from REDIS_URL)")]
    NoStore {
        /// What was asked.
        what: &'static str,
    },
    /// The task ran and failed for good.
    #[error("task {task_id} failed: {failure}")]
    TaskFailed {
        /// The task.
        task_id: TaskId,
        /// Its last error.
        failure: celeriac_schema::store::TaskFailure,
    },
    /// The task was revoked before it could succeed.
    #[error("task {task_id} was revoked")]
    TaskRevoked {
        /// The task.
        task_id: TaskId,
    },
    /// The task reached its expiry before a worker could run it, and was
    /// discarded.
    #[error("task {task_id} expired before it could run")]
    TaskExpired {
        /// The task.
        task_id: TaskId,
    },
    /// The task was skipped because a task it depends on failed.
    #[error("task {task_id} was skipped: a task it depends on failed")]
    TaskSkipped {
        /// The task.
        task_id: TaskId,
    },
    /// The task did not finish within the wait.
    #[error("task {task_id} did not finish within {after:?} (state: {})", state.map_or("unknown", |s| s.as_str()))]
    WaitTimedOut {
        /// The task.
        task_id: TaskId,
        /// How long we waited.
        after: Duration,
        /// Its state when the wait ended, if the store knows it.
        state: Option<celeriac_schema::TaskState>,
    },
    /// A workflow finished with failed nodes (their dependents skipped).
    #[error("workflow {workflow_id} failed: node(s) {} failed{}", failed.join(", "), first_error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default())]
    WorkflowFailed {
        /// The workflow.
        workflow_id: TaskId,
        /// The nodes that failed for good.
        failed: Vec<String>,
        /// The first failed node's error, when recorded.
        first_error: Option<celeriac_schema::store::TaskFailure>,
    },
    /// A key file (`--signing-keys`) that cannot be read or holds a bad
    /// key; the reason names the line.
    #[error("signing keys {}: {reason}", path.display())]
    SigningKeys {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong (`line 3: ...`, or why it cannot be read).
        reason: String,
    },
    /// The task succeeded without storing a result (its task type opts
    /// out), so there is nothing to return.
    #[error("task {task_id} succeeded but stored no result (its task opts out of results)")]
    NoResult {
        /// The task.
        task_id: TaskId,
    },
}

impl Error {
    /// Whether retrying the same call later may succeed (the broker was
    /// unreachable, a connection dropped, a confirm was late).
    ///
    /// # Examples
    ///
    /// ```
    /// use celeriac_producer::Error;
    ///
    /// let err = Error::InvalidOptions("eta and countdown".into());
    /// assert!(!err.is_transient());
    /// ```
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Unreachable { .. }
                | Error::Amqp { .. }
                | Error::ConfirmTimeout { .. }
                | Error::Nacked { .. }
                | Error::WaitTimedOut { .. }
                | Error::Schema(celeriac_schema::Error::StoreUnavailable { .. })
        )
    }

    pub(crate) fn amqp(doing: &'static str) -> impl FnOnce(lapin::Error) -> Error {
        move |source| Error::Amqp { doing, source }
    }
}

/// The URL with any password replaced by `***`, for messages and logs.
///
/// # Examples
///
/// ```
/// assert_eq!(
///     celeriac_producer::redact_url("amqp://user:secret@host:5672/%2f"),
///     "amqp://user:***@host:5672/%2f"
/// );
/// assert_eq!(celeriac_producer::redact_url("amqp://host"), "amqp://host");
/// assert_eq!(
///     celeriac_producer::redact_url("amqp://u:p@a/%2f,amqp://u:p@b/%2f"),
///     "amqp://u:***@a/%2f,amqp://u:***@b/%2f"
/// );
/// ```
pub fn redact_url(url: &str) -> String {
    if url.contains(',') {
        let parts: Vec<String> = crate::addresses::split(url)
            .into_iter()
            .map(redact_url)
            .collect();
        return parts.join(",");
    }
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}{}:***{}",
            &url[..scheme_end + 3],
            &authority[..colon],
            &rest[at..]
        ),
        _ => url.to_owned(),
    }
}
