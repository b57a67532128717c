//! Cluster-wide rate limits and resource pools end to end, on the real
//! broker and Redis: a task limit shared by two workers, a tenant limit,
//! pools with several workers, a worker killed while it holds a unit, and
//! the producer's admission limits.

#![allow(clippy::unwrap_used)]

mod support;

mod admission;
mod cli;
mod flow;
mod pools;
mod rate;
mod store;
