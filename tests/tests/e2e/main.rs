//! End-to-end tests against a real RabbitMQ (see `celeriac_tests` for how
//! the broker is found). Each test runs in a namespace of its own.

#![allow(clippy::unwrap_used)]

mod support;

mod delays;
mod error_types;
mod failures;
mod faults;
mod roundtrip;
mod store;
mod store_layout;
