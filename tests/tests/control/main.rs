//! The control plane end to end, on the real broker and Redis: revocations
//! of queued, delayed and running tasks (Rust handlers and programs), by
//! id or idempotency key, and of workflows, across several workers, with
//! and without a store; `celeriac revoke` and `celeriac workers`; ping and
//! inspect with a killed worker; concurrency and queues changed at run
//! time; rate limits set by the CLI; unsigned requests to a signing
//! worker.

#![allow(clippy::unwrap_used)]

mod support;

mod cli;
mod limits;
mod nostore;
mod revoke;
mod runtime;
mod signing;
