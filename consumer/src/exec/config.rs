//! What a worker lets programs do: the allowlist, the environment, the
//! working directory and the limits.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::task_error::TaskError;

use super::{PROGRAM_NOT_EXECUTABLE, PROGRAM_NOT_FOUND};

/// Environment variables of the worker that programs see unless
/// configured otherwise: enough to find programs and to pick a locale.
pub const DEFAULT_ENV_ALLOW: &[&str] = &["PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ"];

/// Default cap on a program's captured stdout: 16 MiB.
pub const DEFAULT_MAX_OUTPUT: usize = 16 * 1024 * 1024;

/// Default number of trailing stderr bytes kept for the error: 4 KiB.
pub const DEFAULT_STDERR_TAIL: usize = 4 * 1024;

/// Default time between SIGTERM at the soft time limit and SIGKILL, when no
/// hard time limit comes sooner: 5 seconds.
pub const DEFAULT_TERM_GRACE: Duration = Duration::from_secs(5);

/// How a worker runs programs: which ones, with what environment, where,
/// and within which limits.
///
/// Built with setters; [`ExecConfig::new`] allows no program at all.
///
/// # The allowlist
///
/// An entry is `*` (any program), an absolute path, a relative path with a
/// `/` (relative to the worker's working directory), or a bare name, looked
/// up on the worker's `PATH` whenever a task is checked. A task's program is
/// resolved the same way and allowed when it names the same file as an
/// entry: the directories are compared after resolving symbolic links (so
/// `/bin/sh` matches `sh` found in `/usr/bin` where `/bin` links to
/// `/usr/bin`), the file names as written (so a multi-call binary reached
/// through a link named `ls` does not allow one named `sh`). The program
/// run is the resolved path, so a task cannot redirect the lookup with its
/// own `PATH`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use celeriac_consumer::exec::ExecConfig;
///
/// let config = ExecConfig::new()
///     .allow("sh")
///     .env_allow("PYTHONPATH")
///     .memory_limit(512 * 1024 * 1024)
///     .cpu_limit(Duration::from_secs(60))
///     .max_output(1024 * 1024);
/// assert!(config.check("sh").is_ok());
/// assert_eq!(config.check("rm").unwrap_err().kind(), "Forbidden");
/// assert_eq!(ExecConfig::new().check("sh").unwrap_err().kind(), "Forbidden");
/// ```
#[derive(Debug, Clone)]
pub struct ExecConfig {
    allow: Vec<String>,
    allow_any: bool,
    env_allow: BTreeSet<String>,
    workdir_root: PathBuf,
    memory_limit: Option<u64>,
    cpu_limit: Option<Duration>,
    max_output: usize,
    stderr_tail: usize,
    term_grace: Duration,
}

impl Default for ExecConfig {
    fn default() -> Self {
        ExecConfig::new()
    }
}

impl ExecConfig {
    /// No program allowed; the environment limited to
    /// [`DEFAULT_ENV_ALLOW`]; working directories under the system's
    /// temporary directory (`celeriac-exec`); no rlimits; stdout capped at
    /// [`DEFAULT_MAX_OUTPUT`].
    pub fn new() -> ExecConfig {
        ExecConfig {
            allow: Vec::new(),
            allow_any: false,
            env_allow: DEFAULT_ENV_ALLOW.iter().map(|s| (*s).to_owned()).collect(),
            workdir_root: std::env::temp_dir().join("celeriac-exec"),
            memory_limit: None,
            cpu_limit: None,
            max_output: DEFAULT_MAX_OUTPUT,
            stderr_tail: DEFAULT_STDERR_TAIL,
            term_grace: DEFAULT_TERM_GRACE,
        }
    }

    /// Allows a program: a name looked up on `PATH`, a path, or `*` for any
    /// (see [the allowlist](ExecConfig#the-allowlist)).
    pub fn allow(mut self, program: impl Into<String>) -> ExecConfig {
        let program = program.into();
        if program == "*" {
            self.allow_any = true;
        } else if !program.is_empty() {
            self.allow.push(program);
        }
        self
    }

    /// Allows every program: for trusted task sources only (e.g. a workflow
    /// file run locally).
    pub fn allow_any(mut self) -> ExecConfig {
        self.allow_any = true;
        self
    }

    /// Passes the worker's variable `name` (when set) to programs, in
    /// addition to [`DEFAULT_ENV_ALLOW`].
    pub fn env_allow(mut self, name: impl Into<String>) -> ExecConfig {
        self.env_allow.insert(name.into());
        self
    }

    /// Passes none of the worker's variables; add some back with
    /// [`ExecConfig::env_allow`].
    pub fn env_allow_none(mut self) -> ExecConfig {
        self.env_allow.clear();
        self
    }

    /// The directory under which each run gets a fresh working directory,
    /// removed afterwards. Created when missing.
    pub fn workdir_root(mut self, path: impl Into<PathBuf>) -> ExecConfig {
        self.workdir_root = path.into();
        self
    }

    /// The largest address space of a program, in bytes (`RLIMIT_AS`): an
    /// allocation past it fails.
    pub fn memory_limit(mut self, bytes: u64) -> ExecConfig {
        self.memory_limit = Some(bytes);
        self
    }

    /// The CPU time a program may use (`RLIMIT_CPU`, whole seconds, rounded
    /// up): past it the program gets SIGXCPU, one second later SIGKILL.
    pub fn cpu_limit(mut self, limit: Duration) -> ExecConfig {
        self.cpu_limit = Some(limit);
        self
    }

    /// The most stdout bytes kept; a program printing more is killed and
    /// its task fails with [`OUTPUT_TOO_LARGE`](super::OUTPUT_TOO_LARGE).
    pub fn max_output(mut self, bytes: usize) -> ExecConfig {
        self.max_output = bytes;
        self
    }

    /// How many trailing bytes of stderr the error of a failed run keeps.
    pub fn stderr_tail(mut self, bytes: usize) -> ExecConfig {
        self.stderr_tail = bytes;
        self
    }

    /// How long a program may take to exit after SIGTERM at its soft time
    /// limit when no hard time limit comes sooner.
    pub fn term_grace(mut self, grace: Duration) -> ExecConfig {
        self.term_grace = grace;
        self
    }

    /// The allowlist entries (without `*`).
    pub fn allowed(&self) -> &[String] {
        &self.allow
    }

    /// Whether every program is allowed.
    pub fn allows_any(&self) -> bool {
        self.allow_any
    }

    /// The names of the worker's variables that programs see.
    pub fn env_allowed(&self) -> impl Iterator<Item = &str> {
        self.env_allow.iter().map(String::as_str)
    }

    /// The root of the per-run working directories.
    pub fn workdir(&self) -> &Path {
        &self.workdir_root
    }

    /// The memory limit, in bytes.
    pub fn memory(&self) -> Option<u64> {
        self.memory_limit
    }

    /// The CPU time limit.
    pub fn cpu(&self) -> Option<Duration> {
        self.cpu_limit
    }

    /// The cap on captured stdout, in bytes.
    pub fn output_cap(&self) -> usize {
        self.max_output
    }

    /// How many trailing stderr bytes an error keeps.
    pub fn stderr_tail_bytes(&self) -> usize {
        self.stderr_tail
    }

    /// The grace between SIGTERM and SIGKILL after a soft time limit.
    pub fn grace_after_term(&self) -> Duration {
        self.term_grace
    }

    /// Resolves `program` as it would be run and checks it against the
    /// allowlist, without running anything.
    ///
    /// # Errors
    ///
    /// - kind [`FORBIDDEN`](crate::FORBIDDEN) when the allowlist is empty
    ///   or the program is not on it;
    /// - kind [`PROGRAM_NOT_FOUND`] when it is allowed (by name or by `*`)
    ///   but does not exist;
    /// - kind [`PROGRAM_NOT_EXECUTABLE`] when it is not an executable file.
    pub fn check(&self, program: &str) -> Result<PathBuf, TaskError> {
        if program.is_empty() {
            return Err(TaskError::fatal(PROGRAM_NOT_FOUND, "the program is empty"));
        }
        if !self.allow_any && self.allow.is_empty() {
            return Err(TaskError::forbidden(format!(
                "program `{program}` is not allowed: this worker allows no program (see --exec-allow)"
            )));
        }
        let resolved = resolve(program);
        let allowed = self.allow_any
            || resolved.as_ref().is_some_and(|path| {
                let id = identity(path);
                self.allow
                    .iter()
                    .filter_map(|entry| resolve(entry))
                    .any(|entry| identity(&entry) == id)
            });
        if !allowed {
            // An entry spelled exactly as the program that does not resolve
            // is a missing program, not a forbidden one.
            let named = self.allow.iter().any(|entry| entry == program);
            if !(named && resolved.is_none()) {
                return Err(TaskError::forbidden(format!(
                    "program `{program}` is not on this worker's exec allowlist"
                )));
            }
        }
        let path = resolved.ok_or_else(|| {
            TaskError::fatal(
                PROGRAM_NOT_FOUND,
                if program.contains('/') {
                    format!("program `{program}` does not exist")
                } else {
                    format!("program `{program}` was not found on the worker's PATH")
                },
            )
        })?;
        check_executable(program, &path)?;
        Ok(path)
    }
}

/// The path a program name stands for: itself when it has a `/` (made
/// absolute against the working directory), else the first executable
/// file of that name on the worker's `PATH`. `None` when nothing is there.
fn resolve(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let path = Path::new(program);
        let path = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir().ok()?.join(path)
        };
        return path.exists().then_some(path);
    }
    let search: OsString = std::env::var_os("PATH")?;
    std::env::split_paths(&search)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable_file(candidate))
}

/// What two paths are compared by: the directory with its links resolved,
/// and the file name as written.
fn identity(path: &Path) -> PathBuf {
    let dir = path
        .parent()
        .and_then(|dir| dir.canonicalize().ok())
        .unwrap_or_else(|| path.parent().map(Path::to_path_buf).unwrap_or_default());
    match path.file_name() {
        Some(name) => dir.join(name),
        None => dir,
    }
}

fn is_executable_file(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn check_executable(program: &str, path: &Path) -> Result<(), TaskError> {
    use std::os::unix::fs::PermissionsExt;
    let metadata = std::fs::metadata(path).map_err(|e| {
        TaskError::fatal(
            PROGRAM_NOT_FOUND,
            format!("program `{program}` ({}): {e}", path.display()),
        )
    })?;
    if !metadata.is_file() {
        return Err(TaskError::fatal(
            PROGRAM_NOT_EXECUTABLE,
            format!("program `{program}` ({}) is not a file", path.display()),
        ));
    }
    if metadata.permissions().mode() & 0o111 == 0 {
        return Err(TaskError::fatal(
            PROGRAM_NOT_EXECUTABLE,
            format!(
                "program `{program}` ({}) is not executable (no x permission)",
                path.display()
            ),
        ));
    }
    Ok(())
}

/// Parses a size in bytes: a number, optionally followed by `K`, `M`, `G`
/// or `T` (powers of 1024; `KiB`, `MB`, ... are read the same way).
///
/// # Examples
///
/// ```
/// use celeriac_consumer::exec::parse_bytes;
///
/// assert_eq!(parse_bytes("4096"), Ok(4096));
/// assert_eq!(parse_bytes("512M"), Ok(512 * 1024 * 1024));
/// assert_eq!(parse_bytes("2GiB"), Ok(2 * 1024 * 1024 * 1024));
/// assert!(parse_bytes("lots").is_err());
/// ```
///
/// # Errors
///
/// A message naming the value when it is not a size.
pub fn parse_bytes(value: &str) -> Result<u64, String> {
    let value = value.trim();
    let digits = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{value}` is not a size (e.g. 4096, 512M, 2G)"))?;
    let unit = unit.trim().to_ascii_uppercase();
    let shift = match unit.trim_end_matches("IB").trim_end_matches('B') {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("`{value}`: unknown unit (use K, M, G or T)")),
    };
    number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("`{value}` is too large"))
}
