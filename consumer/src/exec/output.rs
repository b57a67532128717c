//! Bytes to and from a program: its stdin, its stdout as a value, and what
//! its exit status and stderr say about a failure.

use std::collections::VecDeque;
use std::process::ExitStatus;

use celeriac_schema::exec::ExecFormat;

use crate::task_error::{TaskError, BAD_INPUT};

use super::OUTPUT_DECODE;

/// Deepest nesting accepted in a MessagePack result, as in envelopes.
const MAX_DEPTH: usize = celeriac_schema::DecodeLimits::DEFAULT_MAX_DEPTH;

/// The bytes written to the program's stdin.
pub(crate) fn encode_input(format: ExecFormat, input: &rmpv::Value) -> Result<Vec<u8>, TaskError> {
    match format {
        ExecFormat::Json => {
            let mut bytes = serde_json::to_vec(input).map_err(|e| {
                TaskError::fatal(
                    BAD_INPUT,
                    format!("the input cannot be written as JSON: {e}"),
                )
            })?;
            // Line-oriented readers (`read` in a shell) want a newline.
            bytes.push(b'\n');
            Ok(bytes)
        }
        ExecFormat::Msgpack => {
            let mut bytes = Vec::new();
            rmpv::encode::write_value(&mut bytes, input).map_err(|e| {
                TaskError::fatal(
                    BAD_INPUT,
                    format!("the input cannot be written as MessagePack: {e}"),
                )
            })?;
            Ok(bytes)
        }
    }
}

/// The result a program printed.
///
/// JSON: empty (or blank) output is nil; JSON is parsed; anything else is
/// kept as a string with trailing whitespace trimmed, or as binary when it
/// is not UTF-8. MessagePack: empty output is nil; otherwise exactly one
/// value, nothing after it.
pub(crate) fn decode_output(format: ExecFormat, stdout: Vec<u8>) -> Result<rmpv::Value, TaskError> {
    match format {
        ExecFormat::Json => {
            if stdout.iter().all(u8::is_ascii_whitespace) {
                return Ok(rmpv::Value::Nil);
            }
            if let Ok(json) = serde_json::from_slice::<serde_json::Value>(&stdout) {
                return celeriac_schema::to_value(&json).map_err(|e| {
                    TaskError::fatal(
                        OUTPUT_DECODE,
                        format!("the JSON output cannot be kept: {e}"),
                    )
                });
            }
            match String::from_utf8(stdout) {
                Ok(text) => Ok(rmpv::Value::from(text.trim_end())),
                Err(e) => Ok(rmpv::Value::Binary(e.into_bytes())),
            }
        }
        ExecFormat::Msgpack => {
            if stdout.is_empty() {
                return Ok(rmpv::Value::Nil);
            }
            let mut rest = stdout.as_slice();
            let value =
                rmpv::decode::read_value_with_max_depth(&mut rest, MAX_DEPTH).map_err(|e| {
                    TaskError::fatal(
                        OUTPUT_DECODE,
                        format!(
                            "the output is not MessagePack ({e}); it begins with {}",
                            preview(&stdout)
                        ),
                    )
                })?;
            if !rest.is_empty() {
                return Err(TaskError::fatal(
                    OUTPUT_DECODE,
                    format!(
                        "the output has {} bytes after its MessagePack value (print exactly one value)",
                        rest.len()
                    ),
                ));
            }
            Ok(value)
        }
    }
}

/// The first bytes of `bytes`, printable.
fn preview(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(32)];
    format!("{:?}", String::from_utf8_lossy(head))
}

/// The last bytes a stream wrote, up to a cap.
#[derive(Debug)]
pub(crate) struct Tail {
    bytes: VecDeque<u8>,
    cap: usize,
    dropped: bool,
}

impl Tail {
    pub(crate) fn new(cap: usize) -> Tail {
        Tail {
            bytes: VecDeque::with_capacity(cap.min(64 * 1024)),
            cap,
            dropped: false,
        }
    }

    pub(crate) fn push(&mut self, chunk: &[u8]) {
        let chunk = if chunk.len() > self.cap {
            self.dropped = true;
            &chunk[chunk.len() - self.cap..]
        } else {
            chunk
        };
        let overflow = (self.bytes.len() + chunk.len()).saturating_sub(self.cap);
        if overflow > 0 {
            self.dropped = true;
            self.bytes.drain(..overflow);
        }
        self.bytes.extend(chunk);
    }

    /// The tail as text (invalid UTF-8 replaced), trailing whitespace
    /// trimmed; `…` in front when earlier bytes were dropped.
    pub(crate) fn text(&self) -> String {
        let (a, b) = self.bytes.as_slices();
        let mut bytes = Vec::with_capacity(a.len() + b.len());
        bytes.extend_from_slice(a);
        bytes.extend_from_slice(b);
        let text = String::from_utf8_lossy(&bytes);
        let text = text.trim_end();
        if self.dropped {
            format!("…{text}")
        } else {
            text.to_owned()
        }
    }
}

/// How a program ended, in words: `exited with status 3` or `killed by
/// signal 9 (SIGKILL)`.
pub(crate) fn describe_status(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => match signal_name(signal) {
            Some(name) => format!("killed by signal {signal} ({name})"),
            None => format!("killed by signal {signal}"),
        },
        (None, None) => format!("ended with {status}"),
    }
}

/// The signal that ended the program, if one did.
pub(crate) fn signal_of(status: &ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    status.signal()
}

pub(crate) const SIGABRT: i32 = 6;
pub(crate) const SIGKILL: i32 = 9;
pub(crate) const SIGSEGV: i32 = 11;
pub(crate) const SIGXCPU: i32 = 24;
pub(crate) const SIGXFSZ: i32 = 25;

fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        SIGABRT => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        SIGKILL => "SIGKILL",
        SIGSEGV => "SIGSEGV",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        SIGXCPU => "SIGXCPU",
        SIGXFSZ => "SIGXFSZ",
        _ => return None,
    })
}
