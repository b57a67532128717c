//! Programs as tasks: any executable run as the task `celeriac.exec`.
//!
//! A task names a program and its arguments ([`ExecSpec`]); [`run`] starts
//! it directly (no shell), writes the task's input to its stdin, reads its
//! result from stdout and lets its exit status decide success:
//!
//! | the program                            | the task                                              |
//! |----------------------------------------|-------------------------------------------------------|
//! | exits 0                                | succeeds with what it printed (below)                 |
//! | exits non-zero or dies from a signal   | fails, retryable: [`EXIT_STATUS`], with the status and the tail of stderr |
//! | is not on the allowlist                | fails, never retried: [`FORBIDDEN`](crate::FORBIDDEN) (dead-lettered with reason `forbidden`); nothing is started |
//! | is on it, but its arguments or variables fit none of its entry's patterns | the same: [`FORBIDDEN`](crate::FORBIDDEN), dead-lettered, nothing started |
//! | does not exist / cannot be executed    | fails, never retried: [`PROGRAM_NOT_FOUND`] / [`PROGRAM_NOT_EXECUTABLE`] |
//! | prints more than the output cap        | is killed; fails, never retried: [`OUTPUT_TOO_LARGE`]  |
//! | prints what the format cannot decode   | fails, never retried: [`OUTPUT_DECODE`]                |
//! | reaches its soft time limit            | gets SIGTERM (its whole process group); a program that then exits 0 still succeeds, otherwise [`TIME_LIMIT`](crate::TIME_LIMIT) |
//! | reaches its hard time limit            | its whole process group gets SIGKILL; [`TIME_LIMIT`](crate::TIME_LIMIT) |
//! | is cancelled (or the run is dropped)   | its whole process group gets SIGKILL; [`CANCELLED`](crate::local::CANCELLED) |
//!
//! # Input and output
//!
//! With [`ExecFormat::Json`] (the default) the input is written to stdin
//! as one JSON document and a newline, and stdout is parsed as JSON; output
//! that is not JSON becomes a string with trailing whitespace trimmed (or
//! binary, when it is not UTF-8), and empty output is nil. So `echo hello`
//! returns `"hello"` and `echo '{"n": 1}'` returns a map. With
//! [`ExecFormat::Msgpack`] stdin is one MessagePack value and stdout must be
//! exactly one (or nothing, for nil). stdin, stdout and stderr are all
//! handled at once, so a program that prints much before reading its input
//! does not block.
//!
//! # Argument patterns
//!
//! An allowlist entry is whitespace-separated tokens,
//! `[NAME=GLOB ...] PROGRAM [ARG-GLOB ...] [...]`:
//!
//! - `PROGRAM` alone keeps the plain meaning: that program with **any**
//!   arguments and any task environment (but `LD_*`). For an interpreter
//!   (`python3`, `bash`, `node`, `perl`) that is any code a publisher
//!   sends, through `-c` or `-e`: use a pattern for those.
//! - `python3 /opt/jobs/*.py`: the task's arguments must match the globs
//!   one for one, no more and no fewer. A last token `...` admits any
//!   number of further arguments, none starting with `-`.
//! - A glob matches a whole argument: `*` any run of characters but `/`,
//!   `?` one character but `/`, `\x` the character `x`, anything else
//!   itself. An argument starting with `-` matches only a glob that starts
//!   with a literal `-` (so `*` never admits `-c`), and a glob with a
//!   wildcard never matches an argument with a `.` or `..` path component
//!   (so `/opt/jobs/*/run.py` cannot climb out of `/opt/jobs`). Code
//!   injection through options is refused by construction: only the
//!   options an entry spells out can be passed.
//! - `NAME=GLOB` tokens before the program name the variables a task may
//!   set for this entry; a patterned entry without them lets the task set
//!   none (`PYTHONSTARTUP`, `BASH_ENV`, `NODE_OPTIONS` and `PERL5OPT`
//!   inject code as well as `-c` does).
//!
//! A task is allowed when some entry naming its program fits it. An entry
//! has no spaces or commas inside an argument (`?` stands for one).
//! Symbolic links below a directory in a pattern are followed: keep the
//! directory writable by its owner only.
//!
//! # Isolation
//!
//! - **Allowlist**: see [`ExecConfig`]; an empty allowlist (the default)
//!   forbids every program.
//! - **Environment**: cleared, then only the worker's variables on the
//!   allowlist ([`DEFAULT_ENV_ALLOW`] plus [`ExecConfig::env_allow`], never
//!   the worker's secrets, [`SECRET_ENV`]), then `HOME` and `TMPDIR` set to
//!   the run's working directory, then the task's own [`ExecSpec::env`]
//!   (which may not set the loader's `LD_*` variables: forbidden).
//! - **The worker's secrets**: besides the cleared environment, the worker
//!   makes itself non-dumpable ([`hide_worker_from_programs`]) so that a
//!   process of its uid without `CAP_SYS_PTRACE` cannot read its original
//!   environment block from `/proc/<worker>/environ`, and every program
//!   starts without capabilities (bounding, ambient, permitted, effective
//!   and inheritable sets cleared), so that not even a program running as
//!   root can. `/proc/<worker>/cmdline` stays world-readable: secrets go in
//!   the environment or in files (`--amqp-addr-file`), never in flags.
//! - **User** ([`ExecConfig::user`]): programs run as that uid and gid,
//!   with no supplementary groups. This is the real boundary: a program of
//!   the worker's uid can still signal the worker, write its files, and
//!   read whatever the worker can read.
//! - **No new privileges**: `PR_SET_NO_NEW_PRIVS` in every program, so
//!   set-user-ID binaries (`sudo`, `su`) and file capabilities grant
//!   nothing.
//! - **Network** ([`ExecConfig::network`]): with
//!   [`ExecNetwork::Isolated`] each program starts in a new, empty network
//!   namespace (loopback down): no TCP or UDP anywhere, not even to the
//!   worker's host. Unix sockets on the file system stay reachable.
//! - **Working directory**: a fresh, private directory per run under
//!   [`ExecConfig::workdir_root`], the program's current directory, owned
//!   by the exec user, removed afterwards. There is no file-system
//!   isolation: a program reads and writes whatever its uid may.
//! - **Process group**: the program leads a new process group. Time limits,
//!   cancellation and dropping the [`run`] future signal the whole group,
//!   so children and grandchildren go too; when the program exits, whatever
//!   it left running in its group is killed. If the worker itself is killed
//!   with SIGKILL, the kernel kills the program (`PR_SET_PDEATHSIG`, armed
//!   before it starts); processes it started itself are not reached then.
//! - **rlimits**, per process, always: address space
//!   ([`ExecConfig::memory_limit`], `RLIMIT_AS`) and CPU time
//!   ([`ExecConfig::cpu_limit`], `RLIMIT_CPU`), set in the child before it
//!   executes the program. A program that forks gets them again in each
//!   child: they do not bound a run as a whole.
//! - **cgroup v2**, per run, when [`ExecConfig::prepare`] finds a usable
//!   delegated cgroup ([`CgroupMode`]): each run gets its own cgroup with
//!   `memory.max` (the memory limit, swap excluded), `cpu.max`
//!   ([`ExecConfig::cpus`]) and `pids.max` ([`ExecConfig::pids_limit`]),
//!   and whatever is left in it when the run ends is killed
//!   (`cgroup.kill`). Otherwise rlimits alone, and the worker says so at
//!   start-up.
//! - **Output cap**: at most [`ExecConfig::max_output`] bytes of stdout are
//!   kept; of stderr, only the last [`ExecConfig::stderr_tail`] bytes.
//!
//! # In a worker
//!
//! [`register`] adds `celeriac.exec` to a [`Registry`], with the soft and
//! hard time limits of each task's envelope. `celeriac-worker` always
//! registers it, configured by its `--exec-*` flags and checked by
//! [`ExecConfig::prepare`] before it connects; without `--exec-allow`
//! every exec task is dead-lettered as forbidden.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use celeriac_consumer::exec::{self, ExecConfig, ExecLimits};
//! use celeriac_schema::exec::ExecSpec;
//! use tokio_util::sync::CancellationToken;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let config = ExecConfig::new().allow("sh");
//! let spec = ExecSpec::new("sh").args(["-c", "read n; echo $((n * 2))"]);
//! let limits = ExecLimits { soft: None, hard: Some(Duration::from_secs(10)) };
//! let out = exec::run(&config, &spec, &rmpv::Value::from(21), limits, &CancellationToken::new()).await?;
//! assert_eq!(out, rmpv::Value::from(42));
//!
//! let forbidden = ExecSpec::new("rm").args(["-rf", "/"]);
//! let err = exec::run(&config, &forbidden, &rmpv::Value::Nil, limits, &CancellationToken::new()).await.unwrap_err();
//! assert_eq!(err.kind(), "Forbidden");
//! # Ok::<(), celeriac_consumer::TaskError>(())
//! # }).unwrap();
//! ```

mod allowlist;
mod cgroup;
mod child;
mod config;
mod output;
mod process;
mod sandbox;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_sandbox;
mod user;

use std::sync::Arc;
use std::time::Duration;

use celeriac_schema::exec::{Exec, ExecInput};
pub use celeriac_schema::exec::{ExecFormat, ExecSpec};
use celeriac_schema::Envelope;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use cgroup::CgroupMode;
pub use config::{
    parse_bytes, ExecConfig, DEFAULT_ENV_ALLOW, DEFAULT_MAX_OUTPUT, DEFAULT_STDERR_TAIL,
    DEFAULT_TERM_GRACE,
};
pub use sandbox::{hide_worker_from_programs, ExecNetwork, SECRET_ENV};
pub use user::ExecUser;

use crate::registry::{Registry, TaskContext};
use crate::task_error::TaskError;

/// Error kind of a program that exited non-zero or died from a signal
/// (retryable).
pub const EXIT_STATUS: &str = "ExitStatus";
/// Error kind of a program that does not exist, or whose script
/// interpreter does not (not retried).
pub const PROGRAM_NOT_FOUND: &str = "ProgramNotFound";
/// Error kind of a program that is not an executable file (not retried).
pub const PROGRAM_NOT_EXECUTABLE: &str = "ProgramNotExecutable";
/// Error kind of a program that printed more than the output cap (not
/// retried).
pub const OUTPUT_TOO_LARGE: &str = "OutputTooLarge";
/// Error kind of output that the task's format cannot decode (not
/// retried).
pub const OUTPUT_DECODE: &str = "OutputDecodeError";
/// Error kind of a program that exited while a descendant outside its
/// process group kept its output open (retryable).
pub const OUTPUT_NOT_CLOSED: &str = "OutputNotClosed";
/// Error kind of a run the worker could not set up: working directory,
/// process creation (retryable).
pub const EXEC_SETUP: &str = "ExecSetupError";

/// The time limits of one run.
///
/// At `soft` the program's process group gets SIGTERM; at `hard` (or, with
/// only `soft`, [`ExecConfig::term_grace`] after it) SIGKILL.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use celeriac_consumer::exec::ExecLimits;
///
/// let mut envelope = celeriac_schema::Envelope::new("celeriac.exec", rmpv::Value::Nil);
/// envelope.hard_time_limit_ms = Some(1500);
/// let limits = ExecLimits::from_envelope(&envelope);
/// assert_eq!(limits.hard, Some(Duration::from_millis(1500)));
/// assert_eq!(limits.soft, None);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecLimits {
    /// When SIGTERM is sent.
    pub soft: Option<Duration>,
    /// When SIGKILL is sent and the run fails with
    /// [`TIME_LIMIT`](crate::TIME_LIMIT).
    pub hard: Option<Duration>,
}

impl ExecLimits {
    /// The limits an envelope carries (`soft_time_limit_ms`,
    /// `hard_time_limit_ms`).
    pub fn from_envelope(envelope: &Envelope) -> ExecLimits {
        ExecLimits {
            soft: envelope.soft_time_limit_ms.map(Duration::from_millis),
            hard: envelope.hard_time_limit_ms.map(Duration::from_millis),
        }
    }
}

/// Runs `spec` on `input` and returns what the program printed.
///
/// See [the module documentation](self) for what happens and which error
/// kinds come back. Dropping the returned future kills the program's
/// process group and removes its working directory; so does `cancel`
/// (with kind [`CANCELLED`](crate::local::CANCELLED)).
///
/// # Errors
///
/// A [`TaskError`] whose kind says what went wrong: [`FORBIDDEN`](crate::FORBIDDEN),
/// [`PROGRAM_NOT_FOUND`], [`PROGRAM_NOT_EXECUTABLE`],
/// [`BAD_INPUT`](crate::BAD_INPUT) (an input the format cannot write),
/// [`EXIT_STATUS`], [`TIME_LIMIT`](crate::TIME_LIMIT),
/// [`CANCELLED`](crate::local::CANCELLED), [`OUTPUT_TOO_LARGE`],
/// [`OUTPUT_DECODE`], [`OUTPUT_NOT_CLOSED`] or [`EXEC_SETUP`].
pub async fn run(
    config: &ExecConfig,
    spec: &ExecSpec,
    input: &rmpv::Value,
    limits: ExecLimits,
    cancel: &CancellationToken,
) -> Result<rmpv::Value, TaskError> {
    process::run(config, spec, input, limits, cancel, None).await
}

/// Registers the handler of `celeriac.exec`
/// ([`celeriac_schema::exec::Exec`]): it runs each task's program with
/// `config` and the time limits of the task's envelope.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use celeriac_consumer::exec::{self, ExecConfig};
///
/// let mut registry = celeriac_consumer::Registry::new();
/// exec::register(&mut registry, Arc::new(ExecConfig::new().allow("python3")));
/// assert!(registry.contains("celeriac.exec"));
/// ```
pub fn register(registry: &mut Registry, config: Arc<ExecConfig>) {
    registry.register::<Exec, _, _>(move |input: ExecInput, ctx: TaskContext| {
        let config = config.clone();
        async move {
            let limits = ExecLimits::from_envelope(ctx.envelope());
            let span = tracing::info_span!(
                "exec",
                task_id = %ctx.task_id(),
                program = %input.spec.program,
            );
            // The worker aborts a run by dropping this future, which kills
            // the program's process group. A revocation with `terminate`
            // sends its signal to the group: SIGKILL at once, or SIGTERM
            // and SIGKILL after the grace.
            let cancel = CancellationToken::new();
            let terminate = CancellationToken::new();
            let relay = async {
                ctx.cancelled().await;
                match ctx.cancel_signal() {
                    Some(celeriac_schema::control::KillSignal::Kill) => cancel.cancel(),
                    _ => terminate.cancel(),
                }
                std::future::pending::<()>().await;
            };
            let running = process::run(
                &config,
                &input.spec,
                &input.input,
                limits,
                &cancel,
                Some(&terminate),
            )
            .instrument(span);
            tokio::select! {
                result = running => result,
                // The relay waits forever once it has relayed.
                () = relay => Err(TaskError::new(EXEC_SETUP, "the cancellation relay ended")),
            }
        }
    });
}
