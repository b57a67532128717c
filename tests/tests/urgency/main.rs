//! Delay tolerance and bounded waiting on the real broker (SPEC.md
//! section 19): promotion of deferrable tasks by their class queue's TTL,
//! urgent-first scheduling without starvation, deadline misses, wait
//! thresholds and bad tolerances.

#![allow(clippy::unwrap_used)]

mod support;

mod cli;
mod deadline;
mod promotion;
mod purge;
mod scheduling;
mod workflow;
