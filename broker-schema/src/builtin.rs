//! Tasks every `celeriac-worker` can run, for smoke tests, examples and the
//! benchmark.

use serde::{Deserialize, Serialize};

use crate::task::Task;

/// `celeriac.ping`: answers `"pong"`.
#[derive(Debug)]
pub struct Ping;

impl Task for Ping {
    const NAME: &'static str = "celeriac.ping";
    type Input = ();
    type Output = String;
}

/// `celeriac.noop`: takes any input and does nothing.
#[derive(Debug)]
pub struct Noop;

impl Task for Noop {
    const NAME: &'static str = "celeriac.noop";
    type Input = rmpv::Value;
    type Output = ();
}

/// `celeriac.echo`: returns its input.
#[derive(Debug)]
pub struct Echo;

impl Task for Echo {
    const NAME: &'static str = "celeriac.echo";
    type Input = rmpv::Value;
    type Output = rmpv::Value;
}

/// Input of [`Sleep`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SleepInput {
    /// How long to sleep, in milliseconds.
    pub ms: u64,
}

/// `celeriac.sleep`: sleeps, then returns how long it slept (ms).
#[derive(Debug)]
pub struct Sleep;

impl Task for Sleep {
    const NAME: &'static str = "celeriac.sleep";
    type Input = SleepInput;
    type Output = u64;
}

/// Input of [`Fail`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailInput {
    /// The error message.
    pub message: String,
    /// When true, the error is not retried.
    #[serde(default)]
    pub fatal: bool,
}

/// `celeriac.fail`: always fails with the given message (error type
/// `TaskFailed`).
#[derive(Debug)]
pub struct Fail;

impl Task for Fail {
    const NAME: &'static str = "celeriac.fail";
    type Input = FailInput;
    type Output = ();
}

/// `celeriac.panic`: panics with the given message.
#[derive(Debug)]
pub struct Panic;

impl Task for Panic {
    const NAME: &'static str = "celeriac.panic";
    type Input = String;
    type Output = ();
}
