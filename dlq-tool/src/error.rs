//! The one error type of the dead-letter tool, and the exit codes it maps to.

use std::process::ExitCode;

/// A `Result` whose error is the tool's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The process exit codes, documented in `--help` and the README.
pub mod exit {
    /// Success: something matched and every action on it succeeded.
    pub const OK: u8 = 0;
    /// Failure: the broker, a file or a publish failed.
    pub const ERROR: u8 = 1;
    /// Usage: bad flags, bad time, unknown queue, `purge` without `--yes`.
    pub const USAGE: u8 = 2;
    /// No dead letter matched the filters (an empty DLQ included).
    pub const NOTHING_MATCHED: u8 = 3;
    /// Partial: some matching dead letters were skipped (a malformed body
    /// that `replay` may not reset) and stay in the DLQ.
    pub const PARTIAL: u8 = 4;
}

/// What can go wrong.
///
/// Ask the error for its [`exit_code`](Error::exit_code) rather than
/// matching on it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Flags that make no sense together, or a value that cannot be parsed.
    #[error("{0}")]
    Usage(String),
    /// A time filter that is neither RFC 3339 nor a relative duration.
    #[error("invalid time {value:?}: expected RFC 3339 (2025-01-31T12:00:00Z) or a duration ago (2h, 30m, 7d)")]
    BadTime {
        /// What was given.
        value: String,
    },
    /// A namespace or queue name the topology refuses.
    #[error(transparent)]
    Schema(#[from] celeriac_schema::Error),
    /// The dead-letter queue of a logical queue does not exist.
    #[error("unknown queue {queue:?}: dead-letter queue {dlq:?} does not exist in this namespace")]
    UnknownQueue {
        /// The logical queue.
        queue: String,
        /// The broker queue looked for.
        dlq: String,
    },
    /// A destructive command without `--yes`.
    #[error("{command} deletes dead letters; pass --yes to confirm (or --dry-run to see what it would do)")]
    NotConfirmed {
        /// The command.
        command: &'static str,
    },
    /// The broker could not be reached.
    #[error("could not reach the broker at {url}: {reason}")]
    Unreachable {
        /// The URL, password removed.
        url: String,
        /// Why.
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
    /// Publishing a copy failed (returned, nacked, no confirm in time).
    #[error(transparent)]
    Publish(#[from] celeriac_producer::Error),
    /// Reading or writing a file or the terminal failed.
    #[error("{doing}: {source}")]
    Io {
        /// What we were doing.
        doing: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A line of an import file is not a dead letter written by `export`.
    #[error("line {line}: {reason}")]
    BadRecord {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// Listing the namespace's dead-letter queues through the management API
    /// failed.
    #[error("cannot list the dead-letter queues through the management API at {url}: {reason}; name them with --queue")]
    Discovery {
        /// The management URL, password removed.
        url: String,
        /// Why.
        reason: String,
    },
    /// The broker refused some replayed copies; their dead letters stay in
    /// the queue.
    #[error("the broker refused {count} replayed copies; their dead letters stay in the queue")]
    Refused {
        /// How many.
        count: u64,
    },
    /// Standard output was closed by its reader (`| head`): not a failure.
    #[error("broken pipe")]
    BrokenPipe,
}

impl Error {
    /// The process exit code for this error.
    ///
    /// # Examples
    ///
    /// ```
    /// use celeriac_dlq::{exit, Error};
    ///
    /// assert_eq!(Error::NotConfirmed { command: "purge" }.exit_code(), exit::USAGE);
    /// assert_eq!(Error::BrokenPipe.exit_code(), exit::OK);
    /// ```
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_)
            | Error::BadTime { .. }
            | Error::Schema(_)
            | Error::UnknownQueue { .. }
            | Error::NotConfirmed { .. }
            | Error::BadRecord { .. } => exit::USAGE,
            Error::BrokenPipe => exit::OK,
            Error::Unreachable { .. }
            | Error::Amqp { .. }
            | Error::Publish(_)
            | Error::Refused { .. }
            | Error::Io { .. }
            | Error::Discovery { .. } => exit::ERROR,
        }
    }

    /// The exit code as an [`ExitCode`].
    pub fn to_exit_code(&self) -> ExitCode {
        ExitCode::from(self.exit_code())
    }

    pub(crate) fn amqp(doing: &'static str) -> impl FnOnce(lapin::Error) -> Error {
        move |source| Error::Amqp { doing, source }
    }

    pub(crate) fn io(doing: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let doing = doing.into();
        move |source| {
            if source.kind() == std::io::ErrorKind::BrokenPipe {
                Error::BrokenPipe
            } else {
                Error::Io { doing, source }
            }
        }
    }
}
