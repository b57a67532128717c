//! The control plane end to end, on the real broker and Redis: revocations
//! of queued, delayed and running tasks (Rust handlers and programs) and of
//! workflows, across several workers; ping and inspect with a killed
//! worker; concurrency and queues changed at run time; rate limits set by
//! the CLI; unsigned requests to a signing worker.

#![allow(clippy::unwrap_used)]

mod support;

mod limits;
mod revoke;
mod runtime;
mod signing;
