//! The worker's HTTP endpoints and metrics (the started counter among
//! them), scraped from a live worker, and the chart's dead-letter alert
//! firing in a real Prometheus that scrapes one. Each test runs in a namespace of its own.

#![allow(clippy::unwrap_used)]

mod support;

mod alerting;
mod endpoints;
mod exporter;
mod started;
mod token;
