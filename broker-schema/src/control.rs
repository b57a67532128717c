//! The control plane's messages: requests broadcast to every worker of a
//! namespace on the fanout exchange `{ns}.control`, and the replies each
//! worker sends back (`SPEC.md` section 16).
//!
//! Both are MessagePack maps with named fields. A request names a
//! [`Command`] (a map tagged by its `name`), optionally the workers it is
//! meant for ([`ControlRequest::destination`]; none means all), and when it
//! was sent. A worker answers each request addressed to it with one
//! [`ControlReply`], through the default exchange to the request's
//! `reply_to`, with its `correlation_id`.
//!
//! With signing configured, a request is signed like a task
//! ([`crate::signing`]) but over [`request_fields`]: the first field is the
//! domain [`CONTROL_DOMAIN`], a name no task message signs, so a task's
//! signature can never pass as a control signature nor the reverse.
//!
//! # Example
//!
//! ```
//! use celeriac_schema::control::{Command, ControlRequest, Inspect};
//!
//! let request = ControlRequest::new(Command::Inspect { what: Inspect::Active })
//!     .to(["worker-1".to_owned()]);
//! let bytes = request.encode()?;
//! let back = ControlRequest::decode(&bytes)?;
//! assert_eq!(back.command, Command::Inspect { what: Inspect::Active });
//! assert!(back.is_for("worker-1"));
//! assert!(!back.is_for("worker-2"));
//! # Ok::<(), celeriac_schema::Error>(())
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::signing::{Field, FieldValue, Keyring, SignatureError};
use crate::{Error, Result};

/// The name of the first signed field of a control request.
pub const DOMAIN_FIELD: &str = "celeriac-domain";
/// The value of [`DOMAIN_FIELD`]: the control plane, version 1.
pub const CONTROL_DOMAIN: &str = "control-v1";
/// How far a signed request's `sent_at` may be from the worker's clock
/// before the worker refuses it as a replay.
pub const MAX_SKEW: Duration = Duration::from_secs(300);
/// Largest control message a worker decodes.
pub const MAX_CONTROL_BYTES: usize = 64 * 1024;

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

/// A worker's answer to one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlReply {
    /// The worker id.
    pub worker: String,
    /// Whether the command was done.
    pub ok: bool,
    /// What it returned, when `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<rmpv::Value>,
    /// Why not, when not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ControlReply {
    /// A successful reply.
    pub fn ok(worker: &str, result: rmpv::Value) -> ControlReply {
        ControlReply {
            worker: worker.to_owned(),
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    /// A refusal or failure.
    pub fn error(worker: &str, error: impl Into<String>) -> ControlReply {
        ControlReply {
            worker: worker.to_owned(),
            ok: false,
            result: None,
            error: Some(error.into()),
        }
    }

    /// The MessagePack body.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`].
    pub fn encode(&self) -> Result<Vec<u8>> {
        encode("control reply", self)
    }

    /// Decodes a body.
    ///
    /// # Errors
    ///
    /// As [`ControlRequest::decode`].
    pub fn decode(bytes: &[u8]) -> Result<ControlReply> {
        decode(bytes)
    }
}

fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>> {
    rmp_serde::to_vec_named(value).map_err(|e| Error::Encode {
        what,
        message: e.to_string(),
    })
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    if bytes.len() > MAX_CONTROL_BYTES {
        return Err(Error::TooLarge {
            size: bytes.len(),
            limit: MAX_CONTROL_BYTES,
        });
    }
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| Error::Field {
        field: e.path().to_string(),
        message: e.inner().to_string(),
    })
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

/// A rate: at most `count` starts per `per`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use celeriac_schema::control::Rate;
///
/// let rate: Rate = "100/m".parse()?;
/// assert_eq!((rate.count, rate.per), (100, Duration::from_secs(60)));
/// assert_eq!(rate.to_string(), "100/m");
/// assert!("0/s".parse::<Rate>().is_err());
/// # Ok::<(), String>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Starts allowed per period.
    pub count: u32,
    /// The period: a second, a minute or an hour.
    pub per: Duration,
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (count, unit) = s.split_once('/').unwrap_or((s, "s"));
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| format!("invalid rate {s:?}: expected N/s, N/m or N/h"))?;
        if count == 0 {
            return Err(format!("invalid rate {s:?}: the count must be at least 1"));
        }
        let per = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            other => return Err(format!("invalid rate unit {other:?} in {s:?}: s, m or h")),
        };
        Ok(Rate { count, per })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            60 => "m",
            3600 => "h",
            _ => "s",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

/// A worker's record in the store's worker hash: its latest `worker.*`
/// event (section 17), of kind `online`, or `lost` once another worker
/// found it silent for three heartbeats.
pub use crate::events::WorkerEvent as WorkerStatus;

/// The field and value a run-time limit is kept under in the store's
/// limits hash ([`crate::store::ControlHash::Limits`]); value `None` lifts
/// the limit (the field is deleted). `None` for other commands.
///
/// # Examples
///
/// ```
/// use celeriac_schema::control::{limit_command, limit_entry, Command};
///
/// let set = Command::TimeLimit { task: "t".into(), soft_ms: None, hard_ms: Some(500) };
/// let (field, value) = limit_entry(&set).unwrap();
/// assert_eq!((field.as_str(), value.as_deref()), ("time:t", Some("- 500")));
/// assert_eq!(limit_command(&field, value.as_deref().unwrap()), Some(set));
/// ```
pub fn limit_entry(command: &Command) -> Option<(String, Option<String>)> {
    match command {
        Command::RateLimit { task, rate } => Some((format!("rate:{task}"), rate.clone())),
        Command::TimeLimit {
            task,
            soft_ms,
            hard_ms,
        } => {
            let show = |ms: &Option<u64>| ms.map_or_else(|| "-".to_owned(), |ms| ms.to_string());
            let value = (soft_ms.is_some() || hard_ms.is_some())
                .then(|| format!("{} {}", show(soft_ms), show(hard_ms)));
            Some((format!("time:{task}"), value))
        }
        _ => None,
    }
}

/// The command a field of the limits hash stands for; `None` for a field
/// this build does not know or cannot read.
pub fn limit_command(field: &str, value: &str) -> Option<Command> {
    if let Some(task) = field.strip_prefix("rate:") {
        value.parse::<Rate>().ok()?;
        return Some(Command::RateLimit {
            task: task.to_owned(),
            rate: Some(value.to_owned()),
        });
    }
    let task = field.strip_prefix("time:")?;
    let (soft, hard) = value.split_once(' ')?;
    let ms = |s: &str| -> Option<Option<u64>> {
        match s {
            "-" => Some(None),
            n => n.parse().ok().map(Some),
        }
    };
    Some(Command::TimeLimit {
        task: task.to_owned(),
        soft_ms: ms(soft)?,
        hard_ms: ms(hard)?,
    })
}

/// The fields a control request is signed over, with its body: the domain,
/// then the AMQP `correlation_id` and `reply_to` (so a captured request
/// cannot be redirected).
pub fn request_fields<'a>(correlation_id: &'a str, reply_to: &'a str) -> [Field<'a>; 3] {
    [
        (DOMAIN_FIELD, FieldValue::from(CONTROL_DOMAIN)),
        ("correlation_id", FieldValue::from(correlation_id)),
        ("reply_to", FieldValue::from(reply_to)),
    ]
}

/// The `celeriac-signature` header of a control request.
///
/// # Examples
///
/// ```
/// use celeriac_schema::control::{sign_request, verify_request};
/// use celeriac_schema::signing::Keyring;
///
/// let ring = Keyring::new("k1", &[9; 32])?;
/// let sig = sign_request(&ring, b"body", "c1", "reply-q");
/// assert!(verify_request(&ring, Some(&sig), b"body", "c1", "reply-q").is_ok());
/// assert!(verify_request(&ring, Some(&sig), b"body", "c1", "other-q").is_err());
/// # Ok::<(), celeriac_schema::Error>(())
/// ```
pub fn sign_request(
    keyring: &Keyring,
    body: &[u8],
    correlation_id: &str,
    reply_to: &str,
) -> String {
    keyring.sign(&request_fields(correlation_id, reply_to), body)
}

/// Verifies a control request's signature; the key id that signed it.
///
/// # Errors
///
/// The [`SignatureError`] that says why it does not verify.
pub fn verify_request<'k>(
    keyring: &'k Keyring,
    signature: Option<&str>,
    body: &[u8],
    correlation_id: &str,
    reply_to: &str,
) -> std::result::Result<&'k str, SignatureError> {
    keyring.verify(signature, &request_fields(correlation_id, reply_to), body)
}

#[cfg(test)]
mod tests {

    /// The worker record a worker publishes as its `worker.*` event is
    /// what the event decoder of section 17 reads.
    #[test]
    fn a_worker_status_decodes_as_a_worker_event() {
        let status = WorkerStatus {
            kind: crate::events::WorkerEventKind::Heartbeat,
            worker: "w1".into(),
            hostname: "h".into(),
            pid: 7,
            queues: vec!["default".into()],
            concurrency: 4,
            in_flight: 1,
            processed: 9,
            started_at: 1,
            at: 2,
            version: "0.1.0".into(),
            heartbeat_ms: 2000,
        };
        let body = status.encode().expect("encodes");
        match crate::events::decode_event(&body).expect("decodes as an event") {
            crate::events::Event::Worker(event) => {
                assert_eq!(event.kind, crate::events::WorkerEventKind::Heartbeat);
                assert_eq!(
                    (
                        event.worker.as_str(),
                        event.pid,
                        event.in_flight,
                        event.heartbeat_ms
                    ),
                    ("w1", 7, 1, 2000)
                );
                assert_eq!(event.queues, ["default"]);
            }
            other => panic!("not a worker event: {other:?}"),
        }
    }

    use super::*;

    #[test]
    fn commands_round_trip_with_their_names() {
        let commands = [
            Command::Ping,
            Command::Shutdown,
            Command::SetConcurrency { concurrency: 3 },
            Command::AddConsumer { queue: "q".into() },
            Command::RateLimit {
                task: "t".into(),
                rate: Some("10/s".into()),
            },
            Command::TimeLimit {
                task: "t".into(),
                soft_ms: None,
                hard_ms: Some(5),
            },
            Command::Revoke {
                ids: vec!["a".into()],
                terminate: true,
                signal: KillSignal::Kill,
                expires_at: 7,
            },
        ];
        for command in commands {
            let request = ControlRequest::new(command.clone());
            let back =
                ControlRequest::decode(&request.encode().expect("encodes")).expect("decodes");
            assert_eq!(back.command, command);
            let value: rmpv::Value =
                rmp_serde::from_slice(&request.encode().expect("encodes")).expect("a value");
            let name = value["command"]["name"].as_str().map(str::to_owned);
            assert_eq!(name.as_deref(), Some(command.name()));
        }
    }

    #[test]
    fn an_unknown_command_names_the_field() {
        let body = rmp_serde::to_vec_named(&serde_json_like()).expect("encodes");
        let err = ControlRequest::decode(&body).expect_err("refused");
        assert!(err.to_string().contains("command"), "{err}");
    }

    fn serde_json_like() -> std::collections::BTreeMap<&'static str, rmpv::Value> {
        let mut map = std::collections::BTreeMap::new();
        map.insert("id", rmpv::Value::from("x"));
        map.insert(
            "command",
            rmpv::Value::Map(vec![(rmpv::Value::from("name"), rmpv::Value::from("nope"))]),
        );
        map.insert("sent_at", rmpv::Value::from(1));
        map
    }

    #[test]
    fn rates_parse_and_refuse() {
        assert_eq!(
            "10/s".parse::<Rate>(),
            Ok(Rate {
                count: 10,
                per: Duration::from_secs(1)
            })
        );
        assert_eq!(
            "1000/h".parse::<Rate>().map(|r| r.to_string()),
            Ok("1000/h".into())
        );
        for bad in ["", "x/s", "10/d", "0/m", "-1/s"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_task_signature_never_verifies_as_control() {
        let ring = Keyring::new("k1", &[3; 32]).expect("key");
        let task_fields = [("message_id", FieldValue::from("c1"))];
        let task_sig = ring.sign(&task_fields, b"body");
        assert!(verify_request(&ring, Some(&task_sig), b"body", "c1", "r").is_err());
    }
}
