//! What a worker lets programs do: the allowlist, the environment, the
//! working directory, the user, the network and the limits.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use celeriac_schema::exec::ExecSpec;

use crate::task_error::TaskError;

use super::allowlist::{self, Entry};
use super::cgroup::{CgroupLimits, CgroupMode, CgroupParent};
use super::sandbox::ExecNetwork;
use super::user::ExecUser;

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
/// An entry names a program: `*` (any program), an absolute path, a
/// relative path with a `/` (relative to the worker's working directory),
/// or a bare name, looked up on the worker's `PATH` whenever a task is
/// checked. It may constrain the arguments and the task's environment with
/// patterns, e.g. `python3 /opt/jobs/*.py` (the syntax is in
/// [the module documentation](super#argument-patterns)); an entry naming
/// the program alone allows any arguments, which for an interpreter means
/// any code (`python3 -c ...`). A task's program is
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
///
/// // Arguments constrained by a pattern: `-c` never matches `*`.
/// use celeriac_schema::exec::ExecSpec;
/// let config = ExecConfig::new().allow("sh /opt/jobs/*.sh");
/// assert!(config.check_spec(&ExecSpec::new("sh").args(["/opt/jobs/a.sh"])).is_ok());
/// let injected = ExecSpec::new("sh").args(["-c", "id"]);
/// assert_eq!(config.check_spec(&injected).unwrap_err().kind(), "Forbidden");
/// ```
#[derive(Debug, Clone)]
pub struct ExecConfig {
    allow: Vec<String>,
    entries: Vec<Entry>,
    invalid: Vec<String>,
    allow_any: bool,
    env_allow: BTreeSet<String>,
    workdir_root: PathBuf,
    memory_limit: Option<u64>,
    cpu_limit: Option<Duration>,
    cpus: Option<f64>,
    pids_limit: Option<u64>,
    user: Option<ExecUser>,
    network: ExecNetwork,
    cgroup_mode: CgroupMode,
    cgroup: Option<Arc<CgroupParent>>,
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
            entries: Vec::new(),
            invalid: Vec::new(),
            allow_any: false,
            env_allow: DEFAULT_ENV_ALLOW.iter().map(|s| (*s).to_owned()).collect(),
            workdir_root: std::env::temp_dir().join("celeriac-exec"),
            memory_limit: None,
            cpu_limit: None,
            cpus: None,
            pids_limit: None,
            user: None,
            network: ExecNetwork::Host,
            cgroup_mode: CgroupMode::Auto,
            cgroup: None,
            max_output: DEFAULT_MAX_OUTPUT,
            stderr_tail: DEFAULT_STDERR_TAIL,
            term_grace: DEFAULT_TERM_GRACE,
        }
    }

    /// Allows a program: a name looked up on `PATH`, a path, or `*` for any,
    /// optionally followed by argument patterns (see
    /// [the allowlist](ExecConfig#the-allowlist)). An entry that does not
    /// parse allows nothing, and [`ExecConfig::prepare`] reports it.
    pub fn allow(mut self, entry: impl Into<String>) -> ExecConfig {
        let entry = entry.into();
        let entry = entry.trim();
        if entry == "*" {
            self.allow_any = true;
        } else if !entry.is_empty() {
            match Entry::parse(entry) {
                Ok(parsed) => {
                    self.allow.push(entry.to_owned());
                    self.entries.push(parsed);
                }
                Err(e) => self.invalid.push(e),
            }
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

    /// The CPU bandwidth of each run, in CPUs (`0.5`: half of one), as the
    /// cgroup v2 `cpu.max`. No rlimit can do this: without a usable
    /// cgroup it is not enforced, which the worker says at start-up.
    pub fn cpus(mut self, cpus: f64) -> ExecConfig {
        self.cpus = Some(cpus);
        self
    }

    /// The most processes (and threads) of a run: the cgroup v2
    /// `pids.max` of the run; without a usable cgroup, `RLIMIT_NPROC`,
    /// which counts every process of the program's real uid (all runs
    /// together, and nothing at all for root).
    pub fn pids_limit(mut self, count: u64) -> ExecConfig {
        self.pids_limit = Some(count);
        self
    }

    /// Runs programs as this user and group, with no supplementary
    /// groups: the boundary between programs and the worker's files,
    /// processes and `/proc` entries.
    pub fn user(mut self, user: ExecUser) -> ExecConfig {
        self.user = Some(user);
        self
    }

    /// The network programs see: the worker's, or none at all.
    pub fn network(mut self, network: ExecNetwork) -> ExecConfig {
        self.network = network;
        self
    }

    /// Where [`ExecConfig::prepare`] looks for a cgroup v2 to limit runs
    /// with (default [`CgroupMode::Auto`]).
    pub fn cgroup(mut self, mode: CgroupMode) -> ExecConfig {
        self.cgroup_mode = mode;
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

    /// The CPU bandwidth limit, in CPUs.
    pub fn cpu_bandwidth(&self) -> Option<f64> {
        self.cpus
    }

    /// The process count limit.
    pub fn pids(&self) -> Option<u64> {
        self.pids_limit
    }

    /// The user programs run as; `None`: the worker's own.
    pub fn exec_user(&self) -> Option<&ExecUser> {
        self.user.as_ref()
    }

    /// The network programs see.
    pub fn exec_network(&self) -> ExecNetwork {
        self.network
    }

    /// Where a cgroup v2 is looked for.
    pub fn cgroup_mode(&self) -> &CgroupMode {
        &self.cgroup_mode
    }

    /// The cgroup under which runs get theirs, once
    /// [`ExecConfig::prepare`] found one.
    pub fn cgroup_dir(&self) -> Option<&Path> {
        self.cgroup.as_deref().map(CgroupParent::dir)
    }

    pub(crate) fn cgroup_parent(&self) -> Option<&CgroupParent> {
        self.cgroup.as_deref()
    }

    pub(crate) fn set_cgroup_parent(&mut self, parent: CgroupParent) {
        self.cgroup = Some(Arc::new(parent));
    }

    pub(crate) fn cgroup_limits(&self) -> CgroupLimits {
        CgroupLimits {
            memory: self.memory_limit,
            cpus: self.cpus,
            pids: self.pids_limit,
        }
    }

    /// Allowlist entries that did not parse, with why.
    pub(crate) fn invalid_entries(&self) -> &[String] {
        &self.invalid
    }

    pub(crate) fn entries(&self) -> &[Entry] {
        &self.entries
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
    /// allowlist, without running anything: whether some entry names it,
    /// whatever the arguments (see [`ExecConfig::check_spec`] for a whole
    /// task).
    ///
    /// # Errors
    ///
    /// - kind [`FORBIDDEN`](crate::FORBIDDEN) when the allowlist is empty
    ///   or the program is not on it;
    /// - kind [`PROGRAM_NOT_FOUND`](super::PROGRAM_NOT_FOUND) when it is
    ///   allowed (by name or by `*`) but does not exist;
    /// - kind [`PROGRAM_NOT_EXECUTABLE`](super::PROGRAM_NOT_EXECUTABLE)
    ///   when it is not an executable file.
    pub fn check(&self, program: &str) -> Result<PathBuf, TaskError> {
        let entries: Vec<Entry> = self
            .entries
            .iter()
            .map(|entry| entry.program())
            .chain(self.allow_any.then_some("*"))
            .filter_map(|program| Entry::parse(program).ok())
            .collect();
        allowlist::check(&entries, &ExecSpec::new(program))
    }

    /// Checks a whole task against the allowlist: its program as
    /// [`ExecConfig::check`] does, and its arguments and environment
    /// against the patterns of the entries naming that program (one must
    /// fit). Nothing runs.
    ///
    /// # Errors
    ///
    /// Those of [`ExecConfig::check`], and kind
    /// [`FORBIDDEN`](crate::FORBIDDEN) when the program is on the allowlist
    /// but its arguments or variables fit none of its patterns.
    pub fn check_spec(&self, spec: &ExecSpec) -> Result<PathBuf, TaskError> {
        if self.allow_any {
            let any = [Entry::parse("*").map_err(TaskError::forbidden)?];
            return allowlist::check(&any, spec);
        }
        allowlist::check(&self.entries, spec)
    }
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
