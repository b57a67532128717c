//! What the machine is and what its processes spend: the CPU, memory and
//! core count of the report, and CPU seconds and resident memory read from
//! /proc.

use serde::Serialize;

use crate::report::{mib, round};

/// Linux `USER_HZ`: /proc CPU times are in these ticks.
const TICKS_PER_SECOND: f64 = 100.0;

#[derive(Debug, Serialize)]
pub struct Machine {
    pub cpu: Option<String>,
    pub cores: usize,
    pub memory_gib: Option<f64>,
}

/// The servers' processes, when they run on this machine: their CPU is
/// measured apart.
#[derive(Debug, Clone, Copy, Default)]
pub struct Servers {
    /// The RabbitMQ node's.
    pub broker: Option<u32>,
    /// The Redis server's (only with `--redis-url`).
    pub store: Option<u32>,
}

/// CPU seconds spent during one measurement: by each process (the broker's
/// and the store's only when they run on this machine), by the whole
/// machine, and by everything else on it (other load skews a run).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CpuSeconds {
    pub broker: Option<f64>,
    pub bench: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<f64>,
    /// The Redis server's, in every measurement of a run with a store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<f64>,
    pub machine: Option<f64>,
    pub other: Option<f64>,
    pub iowait: Option<f64>,
}

/// A `kB` field of /proc/<pid>/status (`VmRSS`, `VmHWM`).
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| kib_field(line, field))
}

/// User plus system CPU time of a process, in seconds.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces: state is the
    // third field, utime the 14th and stime the 15th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

/// Busy and iowait CPU seconds of the whole machine, from /proc/stat.
fn machine_cpu_seconds() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<f64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|t| t.parse().unwrap_or(0.0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is
    // already in user).
    let at = |i: usize| ticks.get(i).copied().unwrap_or(0.0);
    let busy = at(0) + at(1) + at(2) + at(5) + at(6) + at(7);
    Some((busy / TICKS_PER_SECOND, at(4) / TICKS_PER_SECOND))
}

#[derive(Debug, Clone, Copy)]
pub struct CpuSnapshot {
    broker: Option<f64>,
    bench: Option<f64>,
    worker: Option<f64>,
    store: Option<f64>,
    machine: Option<(f64, f64)>,
}

impl CpuSnapshot {
    pub fn take(servers: Servers, worker: Option<u32>) -> Self {
        let of = |pid: Option<u32>| pid.and_then(|pid| cpu_seconds(&pid.to_string()));
        CpuSnapshot {
            broker: of(servers.broker),
            bench: cpu_seconds("self"),
            worker: of(worker),
            store: of(servers.store),
            machine: machine_cpu_seconds(),
        }
    }

    pub fn since(&self, before: &CpuSnapshot) -> CpuSeconds {
        let diff = |a: Option<f64>, b: Option<f64>| Some(a? - b?);
        let broker = diff(self.broker, before.broker);
        let bench = diff(self.bench, before.bench);
        let worker = diff(self.worker, before.worker);
        let store = diff(self.store, before.store);
        let machine = diff(self.machine.map(|m| m.0), before.machine.map(|m| m.0));
        let iowait = diff(self.machine.map(|m| m.1), before.machine.map(|m| m.1));
        let other =
            (|| Some(machine? - broker? - bench? - worker.unwrap_or(0.0) - store.unwrap_or(0.0)))();
        let r = |v: Option<f64>| v.map(|v| round(v, 2));
        CpuSeconds {
            broker: r(broker),
            bench: r(bench),
            worker: r(worker),
            store: r(store),
            machine: r(machine),
            other: r(other.map(|o| o.max(0.0))),
            iowait: r(iowait),
        }
    }
}

pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo.lines().find_map(|l| {
        l.strip_prefix("model name")?
            .split_once(':')
            .map(|(_, v)| v.trim().to_owned())
    });
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let memory_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find_map(|l| kib_field(l, "MemTotal")));
    Machine {
        cpu,
        cores,
        memory_gib: memory_kib.map(|k| round(mib(k) / 1024.0, 1)),
    }
}

/// The value of a `Name:   1234 kB` line.
fn kib_field(line: &str, name: &str) -> Option<u64> {
    line.strip_prefix(name)?
        .strip_prefix(':')?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kib_fields_are_read() {
        assert_eq!(kib_field("VmHWM:\t   19544 kB", "VmHWM"), Some(19_544));
        assert_eq!(kib_field("VmRSS:\t   19544 kB", "VmHWM"), None);
    }
}
