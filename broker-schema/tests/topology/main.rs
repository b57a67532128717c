#![allow(clippy::unwrap_used)]
//! The topology as data: exact names and arguments, delay routes, and a
//! simulation of RabbitMQ's routing over the declarations that follows a
//! delayed message through the cascade into its work queue.

mod delays;
mod names;
mod routing;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use celeriac_schema::topology::{
    level_ttl_ms, ArgValue, Argument, Declaration, ExchangeKind, DEFAULT_DELIVERY_LIMIT,
    DEFAULT_NAMESPACE, DEFAULT_QUEUE, DELAY_LEVELS, DELAY_UNIT_MS, MAX_DELAY,
};
use celeriac_schema::{Error, TaskId, Topology};

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

fn topo() -> Topology {
    Topology::new(DEFAULT_NAMESPACE).unwrap()
}

fn str_arg(name: &'static str, value: &str) -> Argument {
    (name, ArgValue::Str(value.to_owned()))
}

fn int_arg(name: &'static str, value: i64) -> Argument {
    (name, ArgValue::Int(value))
}

/// The bit words of a delay in units, highest level first.
fn bits(units: u64) -> String {
    (0..DELAY_LEVELS)
        .rev()
        .map(|level| if units >> level & 1 == 1 { "1." } else { "0." })
        .collect()
}
