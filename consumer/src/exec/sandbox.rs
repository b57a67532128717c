//! The sandbox checked at start-up: that the user, the network and the
//! cgroup asked for can be had, before the worker takes any task.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use rustix::thread::CapabilitySet;
use tracing::{info, warn};

use crate::error::Error;

use super::cgroup::{self, Detected};
use super::child;
use super::ExecConfig;

/// Variables holding the worker's secrets, or where to read them: never
/// passed to programs, whatever `--exec-env-allow` says.
pub const SECRET_ENV: &[&str] = &["AMQP_ADDR", "AMQP_ADDR_FILE", "REDIS_URL", "REDIS_URL_FILE"];

/// The network programs see (`--exec-network`).
///
/// # Examples
///
/// ```
/// use celeriac_consumer::exec::ExecNetwork;
///
/// assert_eq!("none".parse::<ExecNetwork>(), Ok(ExecNetwork::Isolated));
/// assert_eq!("host".parse::<ExecNetwork>(), Ok(ExecNetwork::Host));
/// assert_eq!(ExecNetwork::Isolated.to_string(), "none");
/// assert!("bridge".parse::<ExecNetwork>().is_err());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ExecNetwork {
    /// The worker's network (`host`).
    #[default]
    Host,
    /// A new, empty network namespace per run (`none`): only a loopback
    /// interface, down, so no connection can be made anywhere, not even to
    /// the worker's host.
    Isolated,
}

impl FromStr for ExecNetwork {
    type Err = String;

    fn from_str(value: &str) -> Result<ExecNetwork, String> {
        match value.trim() {
            "host" => Ok(ExecNetwork::Host),
            "none" => Ok(ExecNetwork::Isolated),
            other => Err(format!("`{other}` is not none or host")),
        }
    }
}

impl fmt::Display for ExecNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExecNetwork::Host => "host",
            ExecNetwork::Isolated => "none",
        })
    }
}

impl ExecConfig {
    /// Checks at start-up that programs can run as configured, finds the
    /// cgroup v2 to limit them with, and logs which mechanisms are active.
    ///
    /// Without it [`run`](super::run) still switches user and network
    /// (failing each run that cannot) but limits runs by rlimits alone.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when an allowlist entry does not parse, when
    /// `--exec-env-allow` names a secret ([`SECRET_ENV`]), when the exec
    /// user cannot be switched to (no `CAP_SETUID`/`CAP_SETGID`) or cannot
    /// reach the working directories, when no network namespace can be
    /// created for [`ExecNetwork::Isolated`], or when the cgroup named by
    /// [`CgroupMode::Path`](super::CgroupMode::Path) cannot be used.
    pub fn prepare(mut self) -> Result<ExecConfig, Error> {
        if let Some(invalid) = self.invalid_entries().first() {
            return Err(Error::Config(format!("--exec-allow: {invalid}")));
        }
        if let Some(secret) = self.env_allowed().find(|name| SECRET_ENV.contains(name)) {
            return Err(Error::Config(format!(
                "--exec-env-allow {secret}: the worker's secrets are never passed to programs"
            )));
        }
        if let Some(cpus) = self.cpu_bandwidth() {
            if !(cpus.is_finite() && cpus > 0.0) {
                return Err(Error::Config(format!(
                    "--exec-cpus {cpus}: give a positive number of CPUs"
                )));
            }
        }
        if let Some(user) = self.exec_user() {
            check_can_switch_to(user.uid(), user.gid())
                .map_err(|why| Error::Config(format!("--exec-user {user}: {why}")))?;
            prepare_workdir_root(self.workdir(), user.uid())
                .map_err(|why| Error::Config(format!("--exec-user {user}: {why}")))?;
        }
        if self.exec_network() == ExecNetwork::Isolated {
            child::can_create_network_namespace().map_err(|e| {
                Error::Config(format!(
                    "--exec-network none: cannot create a network namespace ({e}); the worker needs CAP_SYS_ADMIN (root, or a container allowed unshare), and will not run programs with the network instead"
                ))
            })?;
        }
        match cgroup::detect(self.cgroup_mode(), self.cgroup_limits()).map_err(Error::Config)? {
            Detected::Active(parent) => {
                info!(
                    cgroup = %parent.dir().display(),
                    limits = %parent.describe(),
                    "exec limits: cgroup v2 per run, plus rlimits per process"
                );
                self.set_cgroup_parent(parent);
            }
            Detected::Fallback(why) => {
                info!(reason = %why, "exec limits: rlimits per process only (no cgroup v2)");
                if let Some(cpus) = self.cpu_bandwidth() {
                    warn!(
                        cpus,
                        "--exec-cpus is not enforced: it needs a cgroup v2 with the cpu controller"
                    );
                }
                if self.pids().is_some() {
                    warn!("--exec-pids-limit falls back to RLIMIT_NPROC: per user, not per run, and not enforced for root");
                }
            }
        }
        self.log_summary();
        Ok(self)
    }

    fn log_summary(&self) {
        for entry in self.entries().iter().filter(|e| e.is_bare()) {
            warn!(
                program = entry.program(),
                "exec allowlist entry without argument patterns: any arguments are allowed (for an interpreter, any code)"
            );
        }
        if self.allows_any() {
            warn!("--exec-allow '*': tasks may run any program with any arguments");
        }
        info!(
            user = %self.exec_user().map_or_else(|| "the worker's (capabilities dropped)".to_owned(), ToString::to_string),
            network = %self.exec_network(),
            memory_limit = ?self.memory(),
            cpu_limit = ?self.cpu(),
            "exec sandbox"
        );
    }
}

/// Whether this process may switch a child to `uid`:`gid` with no
/// supplementary groups.
fn check_can_switch_to(uid: u32, gid: u32) -> Result<(), String> {
    if is_current_identity(uid, gid) {
        return Ok(());
    }
    let caps = rustix::thread::capabilities(None)
        .map_err(|e| format!("cannot read this process's capabilities: {e}"))?;
    let needed = CapabilitySet::SETUID | CapabilitySet::SETGID;
    if caps.effective.contains(needed) {
        Ok(())
    } else {
        Err(format!(
            "the worker (uid {}) lacks the privilege to switch users (CAP_SETUID and CAP_SETGID): run it as root, or grant those capabilities",
            rustix::process::geteuid().as_raw()
        ))
    }
}

/// Whether this process already runs as `uid`:`gid` with no
/// supplementary groups: then a child has nothing to switch.
pub(crate) fn is_current_identity(uid: u32, gid: u32) -> bool {
    rustix::process::getuid().as_raw() == uid
        && rustix::process::geteuid().as_raw() == uid
        && rustix::process::getgid().as_raw() == gid
        && rustix::process::getegid().as_raw() == gid
        && rustix::process::getgroups().is_ok_and(|groups| groups.is_empty())
}

/// Creates the root of the working directories so that the exec user can
/// reach its own run directory in it (mode 0711: enter, not list), or
/// checks that an existing one allows that.
fn prepare_workdir_root(root: &Path, uid: u32) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    if !root.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(root)
            .map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    }
    let metadata = std::fs::metadata(root).map_err(|e| format!("{}: {e}", root.display()))?;
    let reachable = metadata.uid() == uid || metadata.mode() & 0o001 != 0;
    if !reachable && metadata.uid() == rustix::process::geteuid().as_raw() {
        // The worker's own directory (from a run without --exec-user).
        use std::os::unix::fs::PermissionsExt;
        let mode = (metadata.mode() & 0o7777) | 0o001;
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("cannot chmod o+x {}: {e}", root.display()))?;
        return Ok(());
    }
    if !reachable {
        return Err(format!(
            "it cannot enter the working directory root {} (mode {:o}): chmod o+x it, or choose another --exec-workdir",
            root.display(),
            metadata.mode() & 0o7777
        ));
    }
    Ok(())
}

/// Makes the worker's `/proc/<pid>` entries (`environ`, `mem`, `fd`, ...)
/// unreadable by processes of the same uid that lack `CAP_SYS_PTRACE`, so
/// that a program cannot read the worker's secrets from its original
/// environment block (`PR_SET_DUMPABLE` 0). Side effects: no core dump of
/// the worker, and no debugger attaches without that capability.
///
/// # Errors
///
/// The `prctl` error.
pub fn hide_worker_from_programs() -> std::io::Result<()> {
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)?;
    Ok(())
}
