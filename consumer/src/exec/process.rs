//! One run of a program: spawned in its own process group, fed, read,
//! timed, killed and cleaned up after.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use celeriac_schema::exec::ExecSpec;
use rustix::process::{Pid, Signal};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::task_error::{TaskError, BAD_INPUT, TIME_LIMIT};

use super::child::{self, ChildPlan};
use super::output::{
    decode_output, describe_status, encode_input, signal_of, Tail, SIGABRT, SIGKILL, SIGSEGV,
    SIGXCPU,
};
use super::sandbox::is_current_identity;
use super::{
    ExecConfig, ExecLimits, ExecNetwork, EXEC_SETUP, EXIT_STATUS, OUTPUT_NOT_CLOSED,
    OUTPUT_TOO_LARGE, PROGRAM_NOT_EXECUTABLE, PROGRAM_NOT_FOUND,
};

/// How long the output pipes may stay open once the program has exited
/// and its process group was killed: only a descendant that left the group
/// can hold them longer.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Why the runner killed the process group.
#[derive(Debug)]
enum Killed {
    Cancelled,
    HardLimit(Duration),
    AfterTerm { soft: Duration, grace: Duration },
    OutputTooLarge,
    ReadFailed(String),
}

pub(crate) async fn run(
    config: &ExecConfig,
    spec: &ExecSpec,
    input: &rmpv::Value,
    limits: ExecLimits,
    cancel: &CancellationToken,
    terminate: Option<&CancellationToken>,
) -> Result<rmpv::Value, TaskError> {
    check_env(spec)?;
    let program = config.check_spec(spec)?;
    let stdin_bytes = encode_input(spec.format, input)?;
    if cancel.is_cancelled() {
        return Err(cancelled("cancelled before the program started"));
    }

    // Declared before the process group so that, when the future is
    // dropped, the group is killed before the directory is removed.
    let workdir = Workdir::create(
        config.workdir(),
        config.exec_user().map(|u| (u.uid(), u.gid())),
    )?;
    // Declared after the working directory: dropped (killed and removed)
    // before it.
    let cgroup = match config.cgroup_parent() {
        Some(parent) => Some(parent.create_run().map_err(|e| {
            TaskError::new(
                EXEC_SETUP,
                format!(
                    "cannot create the run's cgroup under {}: {e}",
                    parent.dir().display()
                ),
            )
        })?),
        None => None,
    };
    let cgroup_procs = match &cgroup {
        Some(run) => Some(run.procs().map_err(|e| {
            TaskError::new(EXEC_SETUP, format!("cannot open the run's cgroup: {e}"))
        })?),
        None => None,
    };
    let mut command = Command::new(&program);
    command
        .args(&spec.args)
        .current_dir(workdir.path())
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    for name in config.env_allowed() {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    command
        .env("HOME", workdir.path())
        .env("TMPDIR", workdir.path())
        .envs(&spec.env);
    child::prepare(
        &mut command,
        ChildPlan {
            memory: config.memory(),
            cpu: config.cpu(),
            // Without a cgroup: the rlimit, per uid (see ExecConfig::pids_limit).
            processes: config.pids().filter(|_| cgroup.is_none()),
            user: config
                .exec_user()
                .map(|u| (u.uid(), u.gid()))
                .filter(|(uid, gid)| !is_current_identity(*uid, *gid)),
            new_network: config.exec_network() == ExecNetwork::Isolated,
            cgroup: cgroup_procs,
        },
    );

    check_format(&spec.program, &program)?;
    debug!(program = %program.display(), args = ?spec.args, workdir = %workdir.path().display(), "starting program");
    let mut child = command
        .spawn()
        .map_err(|e| spawn_error(config, &spec.program, &program, &e))?;
    let mut group = Group::new(child.id());
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(TaskError::new(
            EXEC_SETUP,
            "the program's standard streams were not set up",
        ));
    };

    let write_input = write_all_then_close(stdin, stdin_bytes);
    let read_output = read_capped(stdout, config.output_cap());
    let read_errors = read_tail(stderr, config.stderr_tail_bytes());
    tokio::pin!(write_input, read_output, read_errors);

    let started = Instant::now();
    let soft_at = limits.soft.map(|soft| started + soft);
    let hard_at = limits.hard.map(|hard| started + hard);
    // When SIGKILL follows: the hard limit, or a grace after SIGTERM.
    let mut kill_at = hard_at;
    let mut term_sent = false;
    let mut killed: Option<Killed> = None;
    let mut status: Option<ExitStatus> = None;
    let mut stdout: Option<Vec<u8>> = None;
    let mut stderr: Option<Tail> = None;
    let mut input_written = false;
    let mut drain_until: Option<Instant> = None;
    let mut pipes_closed = true;

    while status.is_none() || stdout.is_none() || stderr.is_none() {
        let running = status.is_none() && killed.is_none();
        tokio::select! {
            biased;
            _ = cancel.cancelled(), if running => {
                group.kill();
                killed = Some(Killed::Cancelled);
            }
            waited = child.wait(), if status.is_none() => {
                let exited = waited.map_err(|e| {
                    TaskError::new(EXEC_SETUP, format!("cannot wait for the program: {e}"))
                })?;
                // Whatever the program left running in its group goes with it.
                group.release();
                status = Some(exited);
                drain_until = Some(Instant::now() + DRAIN_GRACE);
            }
            read = &mut read_output, if stdout.is_none() => match read {
                Ok(bytes) => stdout = Some(bytes),
                Err(end) => {
                    group.kill();
                    killed.get_or_insert(match end {
                        ReadEnd::Overflow => Killed::OutputTooLarge,
                        ReadEnd::Failed(e) => Killed::ReadFailed(e.to_string()),
                    });
                    stdout = Some(Vec::new());
                }
            },
            tail = &mut read_errors, if stderr.is_none() => stderr = Some(tail),
            written = &mut write_input, if !input_written => {
                input_written = true;
                match written {
                    // A program may exit without reading all its input.
                    Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
                        debug!(error = %e, "could not write the program's input");
                    }
                    _ => {}
                }
            }
            // A revocation with SIGTERM: the group gets it, then SIGKILL
            // after the grace, as at the soft time limit.
            _ = async { if let Some(t) = terminate { t.cancelled().await } else { std::future::pending().await } }, if running && !term_sent => {
                term_sent = true;
                group.signal(Signal::TERM);
                warn!("revoked: SIGTERM sent to the program's process group");
                let grace_at = Instant::now() + config.grace_after_term();
                kill_at = Some(kill_at.map_or(grace_at, |at| at.min(grace_at)));
            }
            _ = sleep_until(soft_at), if running && !term_sent => {
                term_sent = true;
                group.signal(Signal::TERM);
                let soft = limits.soft.unwrap_or_default();
                warn!(?soft, "soft time limit reached: SIGTERM sent to the program's process group");
                let grace_at = Instant::now() + config.grace_after_term();
                kill_at = Some(kill_at.map_or(grace_at, |at| at.min(grace_at)));
            }
            _ = sleep_until(kill_at), if running => {
                group.kill();
                let at_hard = hard_at.is_some() && kill_at == hard_at;
                killed = Some(match (at_hard, limits.hard) {
                    (true, Some(hard)) => Killed::HardLimit(hard),
                    _ => Killed::AfterTerm {
                        soft: limits.soft.unwrap_or_default(),
                        grace: config.grace_after_term(),
                    },
                });
                warn!(reason = ?killed, "time limit reached: the program's process group was killed");
            }
            _ = sleep_until(drain_until) => {
                pipes_closed = false;
                break;
            }
        }
    }
    drop(group);
    drop(cgroup);
    workdir.remove().await;

    let stderr = stderr.map(|tail| tail.text()).unwrap_or_default();
    let with_stderr = |message: String| {
        if stderr.is_empty() {
            message
        } else {
            format!("{message}; stderr: {stderr}")
        }
    };
    if let Some(killed) = killed {
        return Err(match killed {
            Killed::Cancelled => cancelled("cancelled: the program's process group was killed"),
            Killed::HardLimit(hard) => TaskError::new(
                TIME_LIMIT,
                with_stderr(format!(
                    "hard time limit of {hard:?} exceeded: the program's process group was killed"
                )),
            ),
            Killed::AfterTerm { soft, grace } => TaskError::new(
                TIME_LIMIT,
                with_stderr(format!(
                    "soft time limit of {soft:?} exceeded: the program did not exit within {grace:?} of SIGTERM and its process group was killed"
                )),
            ),
            Killed::OutputTooLarge => TaskError::fatal(
                OUTPUT_TOO_LARGE,
                format!(
                    "the program printed more than {} bytes to stdout (the worker's cap, --exec-max-output) and was killed",
                    config.output_cap()
                ),
            ),
            Killed::ReadFailed(e) => TaskError::new(
                EXEC_SETUP,
                format!("cannot read the program's output: {e}"),
            ),
        });
    }
    let Some(status) = status else {
        return Err(TaskError::new(
            EXEC_SETUP,
            "the program's exit status is unknown",
        ));
    };
    if !pipes_closed {
        return Err(TaskError::new(
            OUTPUT_NOT_CLOSED,
            format!(
                "the program {} but its output stayed open: a descendant that left its process group still holds it",
                describe_status(&status)
            ),
        ));
    }
    if !status.success() {
        let ended = format!(
            "the program {}{}",
            describe_status(&status),
            hint(config, &status)
        );
        return Err(if term_sent {
            TaskError::new(
                TIME_LIMIT,
                with_stderr(format!(
                    "soft time limit of {:?} exceeded: SIGTERM sent, then {ended}",
                    limits.soft.unwrap_or_default()
                )),
            )
        } else {
            TaskError::new(EXIT_STATUS, with_stderr(ended))
        });
    }
    debug!(elapsed = ?started.elapsed(), "program succeeded");
    decode_output(spec.format, stdout.unwrap_or_default())
}

fn cancelled(message: &str) -> TaskError {
    TaskError::new(crate::local::CANCELLED, message)
}

/// What a limit may have to do with how the program died.
fn hint(config: &ExecConfig, status: &ExitStatus) -> String {
    match (signal_of(status), config.cpu(), config.memory()) {
        (Some(SIGXCPU), Some(cpu), _) => format!(" (its CPU time limit of {cpu:?} was reached)"),
        (Some(SIGKILL), Some(cpu), _) => {
            format!(" (possibly its CPU time limit of {cpu:?}, or killed from outside)")
        }
        (Some(SIGSEGV | SIGABRT), _, Some(memory)) => {
            format!(" (possibly its memory limit of {memory} bytes)")
        }
        _ => String::new(),
    }
}

/// Variables a task may not set: they change what an allowed program
/// loads, not just how it behaves.
fn check_env(spec: &ExecSpec) -> Result<(), TaskError> {
    for name in spec.env.keys() {
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            return Err(TaskError::fatal(
                BAD_INPUT,
                format!("invalid environment variable name {name:?}"),
            ));
        }
        if name.starts_with("LD_") || name.starts_with("DYLD_") {
            return Err(TaskError::forbidden(format!(
                "a task may not set the loader variable {name}"
            )));
        }
    }
    Ok(())
}

/// Refuses a regular file that is neither a binary (ELF) nor a script with
/// a `#!` line. `execvp`, which starts programs once the child is prepared
/// (see [`child::prepare`]), would otherwise hand such a file to `/bin/sh`:
/// programs run without a shell. Files that cannot be read here are left
/// to the spawn, whose error names the cause.
fn check_format(requested: &str, program: &Path) -> Result<(), TaskError> {
    use std::io::Read;
    let Ok(mut file) = std::fs::File::open(program) else {
        return Ok(());
    };
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Ok(());
    }
    let mut magic = [0u8; 4];
    let mut read = 0;
    while read < magic.len() {
        match file.read(&mut magic[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(_) => return Ok(()),
        }
    }
    let magic = &magic[..read];
    if magic.starts_with(b"#!") || magic == b"\x7fELF" {
        return Ok(());
    }
    Err(TaskError::fatal(
        PROGRAM_NOT_EXECUTABLE,
        format!(
            "cannot start `{requested}` ({}): not a binary, and no #! line",
            program.display()
        ),
    ))
}

fn spawn_error(config: &ExecConfig, requested: &str, program: &Path, e: &io::Error) -> TaskError {
    const ENOEXEC: i32 = 8;
    let what = match config.exec_user() {
        Some(user) => format!(
            "cannot start `{requested}` ({}) as {user}",
            program.display()
        ),
        None => format!("cannot start `{requested}` ({})", program.display()),
    };
    match (e.kind(), e.raw_os_error()) {
        (io::ErrorKind::NotFound, _) => TaskError::fatal(
            PROGRAM_NOT_FOUND,
            format!("{what}: {e} (for a script, check the interpreter on its #! line)"),
        ),
        (io::ErrorKind::PermissionDenied, _) => {
            TaskError::fatal(PROGRAM_NOT_EXECUTABLE, format!("{what}: {e}"))
        }
        (_, Some(ENOEXEC)) => TaskError::fatal(
            PROGRAM_NOT_EXECUTABLE,
            format!("{what}: {e} (not a binary, and no #! line)"),
        ),
        (io::ErrorKind::InvalidInput, _) => TaskError::fatal(BAD_INPUT, format!("{what}: {e}")),
        _ => TaskError::new(EXEC_SETUP, format!("{what}: {e}")),
    }
}

/// The program's process group: signalled as a whole, and killed when
/// this is dropped while the program may still run (the worker drops a
/// task's future at its hard time limit).
struct Group {
    pgid: Option<Pid>,
}

impl Group {
    fn new(pid: Option<u32>) -> Group {
        // The child was spawned with `process_group(0)`: its pid is its
        // group id.
        let pgid = pid
            .and_then(|pid| i32::try_from(pid).ok())
            .and_then(Pid::from_raw);
        Group { pgid }
    }

    fn signal(&self, signal: Signal) {
        if let Some(pgid) = self.pgid {
            // ESRCH: everyone in the group is gone already.
            let _ = rustix::process::kill_process_group(pgid, signal);
        }
    }

    fn kill(&self) {
        self.signal(Signal::KILL);
    }

    /// Kills what is left of the group once its leader has been reaped,
    /// and forgets it.
    fn release(&mut self) {
        self.kill();
        self.pgid = None;
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A fresh directory for one run, removed afterwards.
struct Workdir {
    path: Option<PathBuf>,
}

impl Workdir {
    /// A fresh directory under `root`, owned by `owner` (uid, gid) when
    /// given.
    fn create(root: &Path, owner: Option<(u32, u32)>) -> Result<Workdir, TaskError> {
        use std::os::unix::fs::DirBuilderExt;
        let setup = |e: io::Error| {
            TaskError::new(
                EXEC_SETUP,
                format!(
                    "cannot create a working directory under {} (see --exec-workdir): {e}",
                    root.display()
                ),
            )
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(setup)?;
        let path = root.join(format!("run-{}", uuid::Uuid::now_v7().simple()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(setup)?;
        let workdir = Workdir { path: Some(path) };
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(workdir.path(), Some(uid), Some(gid)).map_err(setup)?;
        }
        Ok(workdir)
    }

    fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new("/"))
    }

    async fn remove(mut self) {
        if let Some(path) = self.path.take() {
            let removed = tokio::task::spawn_blocking(move || remove_dir(&path)).await;
            if let Err(e) = removed {
                warn!(error = %e, "could not remove a working directory");
            }
        }
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn_blocking(move || remove_dir(&path));
                }
                Err(_) => remove_dir(&path),
            }
        }
    }
}

fn remove_dir(path: &Path) {
    if let Err(e) = std::fs::remove_dir_all(path) {
        if e.kind() != io::ErrorKind::NotFound {
            warn!(path = %path.display(), error = %e, "could not remove a working directory");
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn write_all_then_close(
    mut stdin: tokio::process::ChildStdin,
    bytes: Vec<u8>,
) -> io::Result<()> {
    stdin.write_all(&bytes).await?;
    stdin.shutdown().await
}

enum ReadEnd {
    Overflow,
    Failed(io::Error),
}

async fn read_capped(mut from: impl AsyncRead + Unpin, cap: usize) -> Result<Vec<u8>, ReadEnd> {
    let mut bytes = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut chunk).await {
            Ok(0) => return Ok(bytes),
            Ok(n) => {
                if bytes.len() + n > cap {
                    return Err(ReadEnd::Overflow);
                }
                bytes.extend_from_slice(&chunk[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ReadEnd::Failed(e)),
        }
    }
}

async fn read_tail(mut from: impl AsyncRead + Unpin, cap: usize) -> Tail {
    let mut tail = Tail::new(cap);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut chunk).await {
            Ok(0) => return tail,
            Ok(n) => tail.push(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return tail,
        }
    }
}
