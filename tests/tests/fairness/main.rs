//! Tenant fairness end to end, on the real broker: a tenant flooding a fair
//! queue does not hold another tenant's tasks back beyond the bound of
//! SPEC.md section 21; a retried task returns to its tenant's shard; shard
//! counts kept in the store route producers; bad input is refused.

#![allow(clippy::unwrap_used)]

mod support;

mod depth;
mod flood;
mod input;
mod purge;
mod retry;
