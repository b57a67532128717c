//! The wire form of an exec task: a program run as a task.
//!
//! An exec task is the task [`Exec`] (`celeriac.exec`) whose input is an
//! [`ExecInput`]: the program, its argv (no shell), the value written to its
//! stdin and the format of stdin and stdout. The worker runs it under its
//! own limits (allowlist, scrubbed environment, rlimits, time limits from
//! the envelope); see the consumer crate's `exec` module.
//!
//! A workflow node that runs a program carries an [`ExecSpec`]
//! ([`crate::workflow::Node::exec`]); its envelope's input is then the spec
//! plus the node's input (given, or built from its dependencies' results).
//!
//! # Examples
//!
//! ```
//! use celeriac_schema::exec::{ExecFormat, ExecInput, ExecSpec};
//!
//! let spec = ExecSpec::new("python3").args(["-c", "import sys; print(sys.stdin.read())"]);
//! let input = ExecInput::new(spec, rmpv::Value::from(42));
//! assert_eq!(input.spec.format, ExecFormat::Json);
//! let value = celeriac_schema::to_value(&input).unwrap();
//! let back: ExecInput = celeriac_schema::from_value(&value, "input").unwrap();
//! assert_eq!(back, input);
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::task::Task;

/// How the input is written to the program's stdin and its result read from
/// its stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecFormat {
    /// JSON on stdin; stdout parsed as JSON, or kept as a string when it is
    /// not JSON (trailing whitespace trimmed).
    #[default]
    Json,
    /// MessagePack on stdin and on stdout.
    Msgpack,
}

impl ExecFormat {
    /// The name used in YAML and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecFormat::Json => "json",
            ExecFormat::Msgpack => "msgpack",
        }
    }
}

/// What program to run and how to talk to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecSpec {
    /// The program: a path, or a name looked up on the worker's `PATH`.
    pub program: String,
    /// Its arguments (argv without the program; no shell is involved).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// The stdin/stdout format.
    #[serde(default)]
    pub format: ExecFormat,
    /// Extra environment variables for the program. The worker's own
    /// environment is scrubbed to its allowlist; these are added on top.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

impl ExecSpec {
    /// Runs `program` with no arguments, JSON in and out.
    pub fn new(program: impl Into<String>) -> ExecSpec {
        ExecSpec {
            program: program.into(),
            args: Vec::new(),
            format: ExecFormat::Json,
            env: BTreeMap::new(),
        }
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> ExecSpec
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets the stdin/stdout format.
    pub fn format(mut self, format: ExecFormat) -> ExecSpec {
        self.format = format;
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> ExecSpec {
        self.env.insert(name.into(), value.into());
        self
    }
}

/// The input of [`Exec`]: a spec and the value for the program's stdin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecInput {
    /// The program and how to talk to it.
    #[serde(flatten)]
    pub spec: ExecSpec,
    /// Written to stdin in [`ExecSpec::format`].
    #[serde(default = "nil")]
    pub input: rmpv::Value,
}

impl ExecInput {
    /// `spec` run on `input`.
    pub fn new(spec: ExecSpec, input: rmpv::Value) -> ExecInput {
        ExecInput { spec, input }
    }
}

fn nil() -> rmpv::Value {
    rmpv::Value::Nil
}

/// `celeriac.exec`: runs a program; its result is what the program printed.
#[derive(Debug)]
pub struct Exec;

impl Task for Exec {
    const NAME: &'static str = "celeriac.exec";
    type Input = ExecInput;
    type Output = rmpv::Value;
}
