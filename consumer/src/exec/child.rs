//! What the child does between fork and exec: the one place of the crate
//! with unsafe code (`pre_exec`, and `unshare`, which rustix marks unsafe).
//!
//! In order, each step needing what the next one gives up:
//!
//! 1. move into the run's cgroup (write `0` to its `cgroup.procs`);
//! 2. a new, empty network namespace (`unshare(CLONE_NEWNET)`, needs
//!    `CAP_SYS_ADMIN`);
//! 3. rlimits;
//! 4. drop every capability from the bounding set (needs `CAP_SETPCAP`)
//!    and clear the ambient set, so that not even a program run as root
//!    gets capabilities at exec;
//! 5. the exec user: no supplementary groups, its gid, its uid (needs
//!    `CAP_SETGID`, `CAP_SETUID`);
//! 6. clear the remaining capability sets;
//! 7. the parent-death signal (after the uid change, which clears it);
//! 8. `PR_SET_NO_NEW_PRIVS`: no set-user-ID bit or file capability raises
//!    privileges from here on.

use std::fs::File;
use std::io;
use std::time::Duration;

use rustix::process::{Gid, Pid, Resource, Rlimit, Signal, Uid};
use rustix::thread::{CapabilitySet, CapabilitySets, UnshareFlags};
use tokio::process::Command;

/// `ESRCH`: the parent the child should die with is gone.
const ESRCH: i32 = 3;
/// `EINVAL`: past the last capability the kernel knows.
const EINVAL: i32 = 22;

/// What one child gets, computed in the parent.
#[derive(Debug, Default)]
pub(crate) struct ChildPlan {
    /// `RLIMIT_AS`, bytes.
    pub(crate) memory: Option<u64>,
    /// `RLIMIT_CPU`.
    pub(crate) cpu: Option<Duration>,
    /// `RLIMIT_NPROC`.
    pub(crate) processes: Option<u64>,
    /// The uid and gid to run as.
    pub(crate) user: Option<(u32, u32)>,
    /// A new network namespace.
    pub(crate) new_network: bool,
    /// The run's `cgroup.procs`, open for writing.
    pub(crate) cgroup: Option<File>,
}

/// Arms `command` with `plan` (see [the module documentation](self)).
pub(crate) fn prepare(command: &mut Command, plan: ChildPlan) {
    let limits = rlimits(&plan);
    // The worker's pid, to see in the child whether it died before the
    // death signal was armed.
    let parent = i32::try_from(std::process::id())
        .ok()
        .and_then(Pid::from_raw);
    let drop_bounding = rustix::thread::capabilities(None)
        .is_ok_and(|caps| caps.effective.contains(CapabilitySet::SETPCAP));
    let user = plan
        .user
        .map(|(uid, gid)| (Uid::from_raw(uid), Gid::from_raw(gid)));
    let new_network = plan.new_network;
    let cgroup = plan.cgroup;
    // SAFETY: the closure runs in the forked child before exec, where only
    // async-signal-safe work is sound (another thread of the parent may
    // have held the allocator's lock at fork time). It captures values
    // computed above (and owns the cgroup file, whose descriptor was opened
    // close-on-exec) and makes system calls only: rustix makes the raw
    // calls, which neither allocate nor lock, and an error becomes an
    // `io::Error` from the raw errno, which does not allocate either.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(move || {
            if let Some(procs) = &cgroup {
                rustix::io::write(procs, b"0")?;
            }
            if new_network {
                new_network_namespace()?;
            }
            for (resource, limit) in limits.iter().flatten() {
                rustix::process::setrlimit(*resource, *limit)?;
            }
            if drop_bounding {
                drop_bounding_set()?;
            }
            rustix::thread::clear_ambient_capability_set()?;
            if let Some((uid, gid)) = user {
                rustix::thread::set_thread_groups(&[])?;
                rustix::thread::set_thread_gid(gid)?;
                rustix::thread::set_thread_uid(uid)?;
            }
            rustix::thread::set_capabilities(
                None,
                CapabilitySets {
                    effective: CapabilitySet::empty(),
                    permitted: CapabilitySet::empty(),
                    inheritable: CapabilitySet::empty(),
                },
            )?;
            // A worker killed with SIGKILL cannot kill its programs: the
            // kernel does, when the thread that started them (a runtime
            // thread, alive as long as the worker) exits.
            rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
            if rustix::process::getppid() != parent {
                // The worker died before the signal was armed.
                return Err(io::Error::from_raw_os_error(ESRCH));
            }
            rustix::thread::set_no_new_privs(true)?;
            Ok(())
        });
    }
}

/// The rlimits, clamped in the parent to the worker's own hard limits
/// (raising one needs privileges).
fn rlimits(plan: &ChildPlan) -> [Option<(Resource, Rlimit)>; 3] {
    let clamp = |resource: Resource, wanted: u64| {
        let maximum = rustix::process::getrlimit(resource).maximum;
        let limit = maximum.map_or(wanted, |max| wanted.min(max));
        (resource, limit, maximum)
    };
    let fixed = |(resource, limit, _): (Resource, u64, Option<u64>)| {
        (
            resource,
            Rlimit {
                current: Some(limit),
                maximum: Some(limit),
            },
        )
    };
    let memory = plan.memory.map(|bytes| fixed(clamp(Resource::As, bytes)));
    let processes = plan
        .processes
        .map(|count| fixed(clamp(Resource::Nproc, count)));
    let cpu = plan.cpu.map(|limit| {
        let seconds = limit.as_secs() + u64::from(limit.subsec_nanos() > 0);
        let (resource, soft, maximum) = clamp(Resource::Cpu, seconds.max(1));
        // SIGXCPU at the soft limit, SIGKILL one second later.
        let hard = maximum.map_or(soft + 1, |max| (soft + 1).min(max));
        (
            resource,
            Rlimit {
                current: Some(soft),
                maximum: Some(hard),
            },
        )
    });
    [memory, cpu, processes]
}

/// Drops every capability the kernel knows from the bounding set.
fn drop_bounding_set() -> io::Result<()> {
    for bit in 0..64 {
        let capability = CapabilitySet::from_bits_retain(1 << bit);
        match rustix::thread::capability_is_in_bounding_set(capability) {
            Ok(true) => rustix::thread::remove_capability_from_bounding_set(capability)?,
            Ok(false) => {}
            Err(e) if e.raw_os_error() == EINVAL => break,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn new_network_namespace() -> io::Result<()> {
    // SAFETY: `unshare` is unsafe in rustix for `CLONE_FILES`, after which
    // threads could see descriptors from another table; `CLONE_NEWNET`
    // only gives the calling thread a network namespace of its own.
    #[allow(unsafe_code)]
    unsafe {
        rustix::thread::unshare_unsafe(UnshareFlags::NEWNET)?;
    }
    Ok(())
}

/// Whether this process can give a child an empty network namespace:
/// tried on a thread of its own, which ends right after.
pub(crate) fn can_create_network_namespace() -> io::Result<()> {
    std::thread::spawn(new_network_namespace)
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the probe thread panicked")))
}
