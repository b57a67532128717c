//! Replies: a worker's answer to one request.

use serde::{Deserialize, Serialize};

use super::{decode, encode};
use crate::Result;

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
