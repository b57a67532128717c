//! Signed envelopes on the worker.
//!
//! A worker built with [`WorkerBuilder::signing`](crate::WorkerBuilder::signing)
//! verifies every delivery before it decodes it: an unsigned message, or one
//! whose signature does not verify with the keyring (a changed body or
//! signed header, a key id the ring does not hold, a malformed signature
//! header), becomes [`Outcome::BadSignature`] and is dead-lettered with
//! reason `bad-signature`, its body as delivered; nothing runs. Every task
//! the worker publishes itself (retries, released workflow nodes, subtasks)
//! is signed with the ring's signing key; copies it publishes unchanged
//! (re-delays, lease copies, dead letters) keep the signature they came
//! with.

use celeriac_producer::signing::verify_properties;
use celeriac_schema::signing::Keyring;
use celeriac_schema::{decode_with, DecodeLimits, Envelope};
use lapin::message::Delivery;
use tracing::warn;

use crate::disposition::Outcome;

/// Verifies `delivery` when a keyring is given, then decodes it: the
/// envelope, or the outcome of a message that cannot run.
pub(crate) fn admit(
    keyring: Option<&Keyring>,
    delivery: &Delivery,
    limits: &DecodeLimits,
) -> Result<Envelope, Outcome> {
    if let Some(keyring) = keyring {
        verify_properties(keyring, &delivery.properties, &delivery.data)
            .map_err(|e| Outcome::BadSignature(e.to_string()))?;
    }
    decode_with(&delivery.data, limits).map_err(|e| Outcome::Malformed {
        kind: e.kind(),
        message: e.to_string(),
    })
}

/// Logs why a delivery was refused before it could run.
pub(crate) fn log_refused(outcome: &Outcome) {
    match outcome {
        Outcome::BadSignature(error) => warn!(%error, "bad signature; not decoded, not run"),
        Outcome::Malformed { kind, message } => warn!(kind, error = %message, "malformed message"),
        other => warn!(outcome = ?other, "message refused"),
    }
}
