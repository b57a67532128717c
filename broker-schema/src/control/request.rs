//! Requests: what a control request holds, and its commands.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{decode, encode};
use crate::Result;

/// One control request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlRequest {
    /// A unique id (a UUID), also used to drop replays.
    pub id: String,
    /// What to do.
    pub command: Command,
    /// The worker ids it is meant for; `None` for every worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<Vec<String>>,
    /// When it was sent, Unix ms.
    pub sent_at: u64,
}

impl ControlRequest {
    /// A request for every worker, stamped now with a fresh id.
    pub fn new(command: Command) -> ControlRequest {
        ControlRequest {
            id: crate::TaskId::new().to_string(),
            command,
            destination: None,
            sent_at: crate::now_ms(),
        }
    }

    /// Addresses the request to these workers only.
    pub fn to<I: IntoIterator<Item = String>>(mut self, workers: I) -> ControlRequest {
        self.destination = Some(workers.into_iter().collect());
        self
    }

    /// Whether the worker `worker` is to act on it.
    pub fn is_for(&self, worker: &str) -> bool {
        self.destination
            .as_ref()
            .is_none_or(|list| list.iter().any(|w| w == worker))
    }

    /// The MessagePack body.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] (never for the types here).
    pub fn encode(&self) -> Result<Vec<u8>> {
        encode("control request", self)
    }

    /// Decodes a body, within [`MAX_CONTROL_BYTES`].
    ///
    /// # Errors
    ///
    /// [`Error::TooLarge`], or [`Error::Field`] naming what is wrong (an
    /// unknown command is `command`).
    pub fn decode(bytes: &[u8]) -> Result<ControlRequest> {
        decode(bytes)
    }
}

/// A control command, tagged by `name` on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Command {
    /// Answer with `"pong"`.
    Ping,
    /// Report some of the worker's state.
    Inspect {
        /// Which.
        what: Inspect,
    },
    /// Stop gracefully, as on SIGTERM.
    Shutdown,
    /// Run at most this many tasks at once from now on.
    SetConcurrency {
        /// The new limit (at least 1).
        concurrency: u32,
    },
    /// Start consuming a logical queue.
    AddConsumer {
        /// The queue.
        queue: String,
    },
    /// Stop consuming a logical queue; its in-flight tasks finish.
    CancelConsumer {
        /// The queue.
        queue: String,
    },
    /// Limit how often a task starts: across the cluster when workers
    /// share a store (SPEC section 20), else on each worker; `None` lifts
    /// it.
    RateLimit {
        /// The task name.
        task: String,
        /// The rate, as [`Rate`] parses it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rate: Option<String>,
    },
    /// Override a task's time limits; `None` keeps the task's own.
    TimeLimit {
        /// The task name.
        task: String,
        /// Soft limit, ms.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        soft_ms: Option<u64>,
        /// Hard limit, ms.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hard_ms: Option<u64>,
    },
    /// Never run these tasks: task ids, workflow ids or idempotency keys.
    Revoke {
        /// The ids and keys.
        ids: Vec<String>,
        /// Also stop runs in progress.
        #[serde(default)]
        terminate: bool,
        /// The signal a terminated run gets.
        #[serde(default)]
        signal: KillSignal,
        /// When the revocation lapses, Unix ms.
        expires_at: u64,
    },
}

impl Command {
    /// The wire name (`ping`, `set-concurrency`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Ping => "ping",
            Command::Inspect { .. } => "inspect",
            Command::Shutdown => "shutdown",
            Command::SetConcurrency { .. } => "set-concurrency",
            Command::AddConsumer { .. } => "add-consumer",
            Command::CancelConsumer { .. } => "cancel-consumer",
            Command::RateLimit { .. } => "rate-limit",
            Command::TimeLimit { .. } => "time-limit",
            Command::Revoke { .. } => "revoke",
        }
    }
}

/// What `inspect` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Inspect {
    /// Tasks running now.
    Active,
    /// Deliveries received and not running yet.
    Reserved,
    /// Messages waiting in the namespace's delay levels.
    Scheduled,
    /// Revocations held.
    Revoked,
    /// Counters, uptime, pid, host, concurrency.
    Stats,
    /// Task names with a handler.
    Registered,
    /// Settings, without secrets.
    Conf,
}

impl Inspect {
    /// Every kind, in the order of `--help`.
    pub const ALL: [Inspect; 7] = [
        Inspect::Active,
        Inspect::Reserved,
        Inspect::Scheduled,
        Inspect::Revoked,
        Inspect::Stats,
        Inspect::Registered,
        Inspect::Conf,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Inspect::Active => "active",
            Inspect::Reserved => "reserved",
            Inspect::Scheduled => "scheduled",
            Inspect::Revoked => "revoked",
            Inspect::Stats => "stats",
            Inspect::Registered => "registered",
            Inspect::Conf => "conf",
        }
    }
}

impl FromStr for Inspect {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Inspect::ALL
            .into_iter()
            .find(|w| w.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown inspection {s:?}; one of: {}",
                    Inspect::ALL.map(Inspect::as_str).join(", ")
                )
            })
    }
}

/// The signal a terminated run gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum KillSignal {
    /// SIGTERM: a program may clean up; a Rust handler gets a short grace.
    #[default]
    Term,
    /// SIGKILL: at once.
    Kill,
}

impl FromStr for KillSignal {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim_start_matches("SIG").to_ascii_uppercase().as_str() {
            "TERM" => Ok(KillSignal::Term),
            "KILL" => Ok(KillSignal::Kill),
            _ => Err(format!("unknown signal {s:?}: TERM or KILL")),
        }
    }
}
