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
//! The requests and their commands are in the `request` module, the
//! replies in `reply`, rates and run-time limits in `limits`; all are
//! named from here.
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

mod limits;
mod reply;
mod request;

pub use limits::{limit_command, limit_entry, Rate};
pub use reply::ControlReply;
pub use request::{Command, ControlRequest, Inspect, KillSignal};

use std::time::Duration;

use serde::Serialize;

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

/// A worker's record in the store's worker hash: its latest `worker.*`
/// event (section 17), of kind `online`, or `lost` once another worker
/// found it silent for three heartbeats.
pub use crate::events::WorkerEvent as WorkerStatus;

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
