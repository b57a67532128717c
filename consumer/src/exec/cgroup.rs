//! cgroup v2 limits of programs: a delegated cgroup under which every run
//! gets a child with `memory.max`, `cpu.max` and `pids.max`.
//!
//! A cgroup can limit a run as a whole (every process it starts, however
//! it forks), where rlimits bound each process alone. It needs a cgroup v2
//! the worker can write, whose controllers it can enable for children: a
//! cgroup delegated to it (`Delegate=yes` in systemd, a container with its
//! own cgroup namespace and a writable `/sys/fs/cgroup`), named with
//! `--exec-cgroup PATH`, or found with `--exec-cgroup auto`. Without one
//! (cgroup v1 or hybrid hosts, where the controllers belong to the v1
//! hierarchies; a read-only mount), rlimits alone apply.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use tracing::warn;

/// `statfs` magic of a cgroup v2 file system.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// The `cpu.max` period: 100 ms.
const CPU_PERIOD_US: u64 = 100_000;

/// The leaf the worker moves itself into under `auto`, so that its own
/// cgroup may enable controllers for the runs' cgroups (a cgroup with
/// processes of its own cannot).
const WORKER_LEAF: &str = "celeriac-worker";

/// Where the worker looks for a cgroup v2 (`--exec-cgroup`).
///
/// # Examples
///
/// ```
/// use celeriac_consumer::exec::CgroupMode;
///
/// assert_eq!("auto".parse::<CgroupMode>(), Ok(CgroupMode::Auto));
/// assert_eq!("off".parse::<CgroupMode>(), Ok(CgroupMode::Off));
/// assert!(matches!("/sys/fs/cgroup/jobs".parse::<CgroupMode>(), Ok(CgroupMode::Path(_))));
/// assert!("jobs".parse::<CgroupMode>().is_err());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CgroupMode {
    /// The worker's own cgroup, when it is a cgroup v2 with the needed
    /// controllers and no other process: the worker moves itself into a
    /// leaf `celeriac-worker` below it and creates the runs' cgroups beside
    /// that leaf. Otherwise rlimits alone, said at start-up.
    #[default]
    Auto,
    /// rlimits alone.
    Off,
    /// This delegated cgroup v2 directory, which must exist, be writable,
    /// have the needed controllers and no process of its own; the worker
    /// refuses to start otherwise.
    Path(PathBuf),
}

impl FromStr for CgroupMode {
    type Err = String;

    fn from_str(value: &str) -> Result<CgroupMode, String> {
        match value.trim() {
            "auto" => Ok(CgroupMode::Auto),
            "off" | "" => Ok(CgroupMode::Off),
            path if path.starts_with('/') => Ok(CgroupMode::Path(PathBuf::from(path))),
            other => Err(format!(
                "`{other}` is not auto, off or an absolute cgroup directory"
            )),
        }
    }
}

/// The limits each run's cgroup gets.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct CgroupLimits {
    /// `memory.max`, bytes (and `memory.swap.max` 0 where swap is
    /// accounted, so that the limit is not exceeded through swap).
    pub(crate) memory: Option<u64>,
    /// `cpu.max`, in CPUs (0.5 is half of one).
    pub(crate) cpus: Option<f64>,
    /// `pids.max`.
    pub(crate) pids: Option<u64>,
}

impl CgroupLimits {
    /// The controllers these limits need.
    pub(crate) fn controllers(&self) -> Vec<&'static str> {
        let mut needed = Vec::new();
        if self.memory.is_some() {
            needed.push("memory");
        }
        if self.cpus.is_some() {
            needed.push("cpu");
        }
        if self.pids.is_some() {
            needed.push("pids");
        }
        needed
    }

    /// The files of a run's cgroup and what is written to them.
    fn files(&self) -> Vec<(&'static str, String)> {
        let mut files = Vec::new();
        if let Some(bytes) = self.memory {
            files.push(("memory.max", bytes.to_string()));
        }
        if let Some(cpus) = self.cpus {
            // At least 1 ms per period: the kernel's minimum quota.
            let quota = ((cpus * CPU_PERIOD_US as f64).round() as u64).max(1000);
            files.push(("cpu.max", format!("{quota} {CPU_PERIOD_US}")));
        }
        if let Some(pids) = self.pids {
            files.push(("pids.max", pids.to_string()));
        }
        files
    }
}

/// The cgroup under which runs get their own.
#[derive(Debug)]
pub(crate) struct CgroupParent {
    dir: PathBuf,
    limits: CgroupLimits,
}

/// What start-up found.
#[derive(Debug)]
pub(crate) enum Detected {
    /// Runs get cgroups under this parent.
    Active(CgroupParent),
    /// rlimits alone, and why.
    Fallback(String),
}

/// Finds the cgroup to use for `limits` as `mode` says.
///
/// # Errors
///
/// Only for [`CgroupMode::Path`]: a message saying why that directory
/// cannot be used. `auto` falls back instead.
pub(crate) fn detect(mode: &CgroupMode, limits: CgroupLimits) -> Result<Detected, String> {
    if limits.controllers().is_empty() {
        return Ok(Detected::Fallback(
            "no cgroup limit configured (--exec-memory-limit, --exec-cpus, --exec-pids-limit)"
                .into(),
        ));
    }
    match mode {
        CgroupMode::Off => Ok(Detected::Fallback("--exec-cgroup off".into())),
        CgroupMode::Path(dir) => {
            let is_cgroup2 = rustix::fs::statfs(dir.as_path())
                .map_err(|e| format!("--exec-cgroup {}: {e}", dir.display()))?
                .f_type as i64
                == CGROUP2_SUPER_MAGIC;
            if !is_cgroup2 {
                return Err(format!(
                    "--exec-cgroup {}: not a cgroup v2 directory",
                    dir.display()
                ));
            }
            adopt_delegated(dir, limits)
                .map(Detected::Active)
                .map_err(|e| format!("--exec-cgroup {}: {e}", dir.display()))
        }
        CgroupMode::Auto => {
            let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
            let Some(own) = own_cgroup(&read("/proc/self/cgroup"), &read("/proc/self/mountinfo"))
            else {
                return Ok(Detected::Fallback(
                    "no cgroup v2 hierarchy holds this process".into(),
                ));
            };
            Ok(adopt_own(&own, limits, std::process::id()))
        }
    }
}

/// The directory of this process's cgroup v2, from the contents of
/// `/proc/self/cgroup` and `/proc/self/mountinfo`.
pub(crate) fn own_cgroup(proc_cgroup: &str, mountinfo: &str) -> Option<PathBuf> {
    let relative = proc_cgroup
        .lines()
        .find_map(|line| line.strip_prefix("0::"))?;
    let mount = mountinfo.lines().find_map(|line| {
        let (fields, fs) = line.split_once(" - ")?;
        if fs.split_whitespace().next() != Some("cgroup2") {
            return None;
        }
        let fields: Vec<&str> = fields.split_whitespace().collect();
        Some((unescape(fields.get(3)?), unescape(fields.get(4)?)))
    });
    let (root, mount_point) = mount?;
    // The mount shows the hierarchy from `root` on.
    let below = Path::new(relative).strip_prefix(&root).ok()?;
    Some(Path::new(&mount_point).join(below))
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let mut out = String::new();
    let mut rest = field;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 4);
        match code.and_then(|c| u8::from_str_radix(c, 8).ok()) {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[at + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Uses the worker's own cgroup `dir` when it can: the needed
/// controllers available, and no other process in it.
pub(crate) fn adopt_own(dir: &Path, limits: CgroupLimits, pid: u32) -> Detected {
    let needed = limits.controllers();
    if let Err(why) = check_controllers(dir, &needed) {
        return Detected::Fallback(why);
    }
    if !enabled(dir, &needed) {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        let others = procs
            .split_whitespace()
            .any(|p| p.parse::<u32>().ok() != Some(pid));
        if others {
            return Detected::Fallback(format!(
                "the worker shares its cgroup {} with other processes (give it a delegated cgroup of its own, or --exec-cgroup PATH)",
                dir.display()
            ));
        }
        let leaf = dir.join(WORKER_LEAF);
        let moved = create_dir(&leaf)
            .and_then(|()| std::fs::write(leaf.join("cgroup.procs"), pid.to_string()))
            .and_then(|()| enable(dir, &needed));
        if let Err(e) = moved {
            return Detected::Fallback(format!(
                "cannot delegate {} to the runs: {e}",
                dir.display()
            ));
        }
    }
    sweep(dir);
    Detected::Active(CgroupParent {
        dir: dir.to_path_buf(),
        limits,
    })
}

/// Kills and removes the runs' cgroups a previous worker left behind (one
/// killed with SIGKILL removes nothing).
fn sweep(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_run = path
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name.starts_with("run-"));
        if is_run && path.join("cgroup.procs").exists() {
            remove(&path);
        }
    }
}

/// Uses the cgroup `dir` an operator delegated for the runs.
pub(crate) fn adopt_delegated(dir: &Path, limits: CgroupLimits) -> Result<CgroupParent, String> {
    let needed = limits.controllers();
    check_controllers(dir, &needed)?;
    let procs = std::fs::read_to_string(dir.join("cgroup.procs"))
        .map_err(|e| format!("cannot read cgroup.procs: {e}"))?;
    if !procs.trim().is_empty() {
        return Err(
            "it has processes of its own, so it cannot enable controllers for the runs' cgroups"
                .into(),
        );
    }
    if !enabled(dir, &needed) {
        enable(dir, &needed).map_err(|e| format!("cannot enable {needed:?}: {e}"))?;
    }
    sweep(dir);
    Ok(CgroupParent {
        dir: dir.to_path_buf(),
        limits,
    })
}

fn check_controllers(dir: &Path, needed: &[&str]) -> Result<(), String> {
    let available = std::fs::read_to_string(dir.join("cgroup.controllers"))
        .map_err(|e| format!("{} is not a usable cgroup v2: {e}", dir.display()))?;
    let available: Vec<&str> = available.split_whitespace().collect();
    let missing: Vec<&&str> = needed.iter().filter(|c| !available.contains(c)).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the cgroup v2 {} lacks the controllers {missing:?} (available: {available:?})",
            dir.display()
        ))
    }
}

/// Whether `dir` already enables `needed` for its children.
fn enabled(dir: &Path, needed: &[&str]) -> bool {
    let subtree = std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
    let subtree: Vec<&str> = subtree.split_whitespace().collect();
    needed.iter().all(|c| subtree.contains(c))
}

fn enable(dir: &Path, needed: &[&str]) -> io::Result<()> {
    let line: Vec<String> = needed.iter().map(|c| format!("+{c}")).collect();
    std::fs::write(dir.join("cgroup.subtree_control"), line.join(" "))
}

fn create_dir(dir: &Path) -> io::Result<()> {
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

impl CgroupParent {
    /// The directory under which runs get their cgroups.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The limits, in words, for the start-up log.
    pub(crate) fn describe(&self) -> String {
        let files: Vec<String> = self
            .limits
            .files()
            .into_iter()
            .map(|(file, value)| format!("{file}={value}"))
            .collect();
        files.join(" ")
    }

    /// A fresh cgroup for one run, with the limits written.
    pub(crate) fn create_run(&self) -> io::Result<RunCgroup> {
        let dir = self
            .dir
            .join(format!("run-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir(&dir)?;
        let run = RunCgroup {
            dir: Some(dir.clone()),
        };
        for (file, value) in self.limits.files() {
            std::fs::write(dir.join(file), value)?;
        }
        if self.limits.memory.is_some() && dir.join("memory.swap.max").exists() {
            std::fs::write(dir.join("memory.swap.max"), "0")?;
        }
        Ok(run)
    }
}

/// One run's cgroup: killed and removed when dropped.
#[derive(Debug)]
pub(crate) struct RunCgroup {
    dir: Option<PathBuf>,
}

impl RunCgroup {
    /// Its `cgroup.procs`, open for the child to move itself in.
    pub(crate) fn procs(&self) -> io::Result<File> {
        let dir = self.dir.as_deref().unwrap_or(Path::new("/nonexistent"));
        // A cgroup's files always exist; `create` lets a plain directory
        // stand in for one.
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join("cgroup.procs"))
    }
}

impl Drop for RunCgroup {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn_blocking(move || remove(&dir));
                }
                Err(_) => remove(&dir),
            }
        }
    }
}

/// Kills whatever is left in the cgroup (`cgroup.kill`, Linux 5.14+: a
/// descendant that left the process group too) and removes it once empty.
fn remove(dir: &Path) {
    let kill = dir.join("cgroup.kill");
    if kill.exists() {
        let _ = std::fs::write(&kill, "1");
    }
    const EBUSY: i32 = 16;
    for _ in 0..100 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            // Busy until its last process has gone.
            Err(e) if e.raw_os_error() == Some(EBUSY) => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                warn!(cgroup = %dir.display(), error = %e, "could not remove a run's cgroup");
                return;
            }
        }
    }
    warn!(cgroup = %dir.display(), "a run's cgroup still has processes after cgroup.kill; left in place");
}
