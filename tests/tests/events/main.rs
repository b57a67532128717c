//! The event stream (SPEC.md section 17) and `celeriac purge`, on the real
//! broker: every task event kind with its fields, the producer's
//! `task.sent`, `task.revoked` after a control revoke, the workers'
//! `worker.*` events, `celeriac events` printing them, and purge emptying
//! exactly one queue while the store's purge mark drops its delayed tasks
//! (and giving up after its `--timeout`).

#![allow(clippy::unwrap_used)]

mod cli;
mod lifecycle;
mod purge;
mod support;
mod workers;
