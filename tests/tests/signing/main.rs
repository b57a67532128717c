//! Signed envelopes end to end, on the real broker: workers that require
//! signatures dead-letter unsigned, tampered and foreign messages unchanged
//! without running them, accept every key of their ring, keep workflows,
//! retries and subtasks working by signing what they publish, and run the
//! dead letters `celeriac-dlq replay` sends back.

#![allow(clippy::unwrap_used)]

mod support;

mod flows;
mod refused;
mod replay;
mod rotation;
