//! The sandbox against real processes: argument patterns, the exec user,
//! capabilities and no_new_privs, the empty network namespace, start-up
//! checks, and cgroup detection (on plain directories where no delegated
//! cgroup v2 can be had).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use celeriac_schema::exec::ExecSpec;
use rmpv::Value;
use tokio_util::sync::CancellationToken;

use super::cgroup::{self, CgroupLimits, Detected};
use super::*;
use crate::FORBIDDEN;

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir()
        .join("celeriac-exec-sandbox-tests")
        .join(uuid::Uuid::now_v7().simple().to_string());
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn run_with(config: &ExecConfig, spec: &ExecSpec) -> Result<Value, TaskError> {
    let limits = ExecLimits {
        soft: None,
        hard: Some(Duration::from_secs(20)),
    };
    run(config, spec, &Value::Nil, limits, &CancellationToken::new()).await
}

fn text(value: Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

fn sh(script: &str) -> ExecSpec {
    ExecSpec::new("sh").args(["-c", script])
}

/// The fields of `/proc/self/status` that say what a program may do.
const STATUS: &str =
    "grep -E '^(NoNewPrivs|CapInh|CapPrm|CapEff|CapBnd|CapAmb):' /proc/self/status";

#[tokio::test]
async fn a_program_has_no_new_privs_and_no_capabilities() {
    let config = ExecConfig::new().allow("sh").workdir_root(scratch());
    let out = text(run_with(&config, &sh(STATUS)).await.unwrap());
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    let is_root = rustix::process::geteuid().is_root();
    for set in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
        assert!(
            out.contains(&format!("{set}:\t0000000000000000")),
            "{set}: {out}"
        );
    }
    if is_root {
        // Dropped from the bounding set too: a root program gets none at exec.
        assert!(out.contains("CapBnd:\t0000000000000000"), "{out}");
    }
}

#[tokio::test]
async fn a_pattern_refuses_other_arguments_before_anything_runs() {
    let dir = scratch();
    let jobs = dir.join("jobs");
    std::fs::create_dir(&jobs).unwrap();
    let script = jobs.join("hello.sh");
    std::fs::write(&script, "echo hello from $0\n").unwrap();
    let marker = dir.join("ran");
    let config = ExecConfig::new()
        .allow(format!("sh {}/*.sh", jobs.display()))
        .workdir_root(dir.join("work"));

    let ok = ExecSpec::new("sh").args([script.display().to_string()]);
    assert!(text(run_with(&config, &ok).await.unwrap()).starts_with("hello from"));

    let outside = dir.join("evil.sh");
    std::fs::write(&outside, format!("touch {}\n", marker.display())).unwrap();
    let refused = [
        sh(&format!("touch {}", marker.display())),
        ExecSpec::new("sh").args([outside.display().to_string()]),
        ExecSpec::new("sh").args([format!("{}/../evil.sh", jobs.display())]),
        ExecSpec::new("sh").args([script.display().to_string(), "extra".into()]),
        ExecSpec::new("sh")
            .args([script.display().to_string()])
            .env("ENV", outside.display().to_string()),
    ];
    for spec in refused {
        let err = run_with(&config, &spec).await.unwrap_err();
        assert_eq!(err.kind(), FORBIDDEN, "{spec:?}: {err}");
        assert!(!err.is_retryable());
        assert!(err.message().contains("allowed only as"), "{err}");
    }
    assert!(!marker.exists(), "a refused task ran");
    // A bare entry for the same program keeps its plain meaning.
    let config = config.allow("sh");
    run_with(&config, &sh("true")).await.unwrap();
}

#[tokio::test]
async fn an_exec_user_runs_the_program_without_the_workers_groups() {
    let nobody: ExecUser = "nobody".parse().unwrap();
    let config = ExecConfig::new()
        .allow("sh")
        .workdir_root(scratch().join("work"))
        .user(nobody.clone())
        .prepare()
        .unwrap();
    let script = "id -u; id -g; id -G; touch \"$HOME/x\" && echo home-writable; \
                  cat /proc/1/environ >/dev/null 2>&1 && echo read-pid1 || echo pid1-unreadable";
    let out = text(run_with(&config, &sh(script)).await.unwrap());
    let lines: Vec<&str> = out.lines().collect();
    let uid = nobody.uid().to_string();
    let gid = nobody.gid().to_string();
    assert_eq!(
        lines,
        [&*uid, &*gid, &*gid, "home-writable", "pid1-unreadable"],
        "{out}"
    );
    let out = text(run_with(&config, &sh(STATUS)).await.unwrap());
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
}

#[tokio::test]
async fn an_empty_network_namespace_reaches_nothing() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let probe = ExecSpec::new("python3").args([
        "-c".to_owned(),
        format!(
            "import socket\n\
             try:\n    socket.create_connection(('127.0.0.1', {port}), timeout=5); print('connected')\n\
             except OSError as e:\n    print('refused', e.errno)"
        ),
    ]);
    let host = ExecConfig::new().allow("python3").workdir_root(scratch());
    assert_eq!(text(run_with(&host, &probe).await.unwrap()), "connected");

    let none = host
        .clone()
        .network(ExecNetwork::Isolated)
        .prepare()
        .unwrap();
    let out = text(run_with(&none, &probe).await.unwrap());
    assert!(out.starts_with("refused"), "{out}");
    let devices = text(
        run_with(
            &none,
            &ExecSpec::new("python3").args(["-c", "print(open('/proc/net/dev').read())"]),
        )
        .await
        .unwrap(),
    );
    let names: Vec<&str> = devices
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(names, ["lo"], "{devices}");
}

#[test]
fn prepare_refuses_what_it_cannot_honour() {
    let bad_entry = ExecConfig::new().allow("python3 ... /x").prepare();
    assert!(
        bad_entry.unwrap_err().to_string().contains("--exec-allow"),
        "an entry that does not parse"
    );
    for secret in SECRET_ENV {
        let err = ExecConfig::new()
            .allow("sh")
            .env_allow(*secret)
            .prepare()
            .unwrap_err();
        assert!(err.to_string().contains("secrets"), "{secret}: {err}");
    }
    let err = ExecConfig::new().cpus(0.0).prepare().unwrap_err();
    assert!(err.to_string().contains("--exec-cpus"), "{err}");
    let err = ExecConfig::new()
        .cgroup(CgroupMode::Path(scratch()))
        .memory_limit(1 << 30)
        .prepare()
        .unwrap_err();
    assert!(err.to_string().contains("not a cgroup v2"), "{err}");
}

#[test]
fn the_workdir_root_is_opened_to_the_exec_user() {
    use std::os::unix::fs::PermissionsExt;
    let root = scratch().join("work");
    std::fs::create_dir(&root).unwrap();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700)).unwrap();
    let config = ExecConfig::new()
        .workdir_root(&root)
        .user(ExecUser::from_ids(65534, 65534));
    config.prepare().unwrap();
    let mode = std::fs::metadata(&root).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o701, "o+x added, nothing else");
}

// ---- cgroup v2 ------------------------------------------------------------

#[test]
fn on_this_host_auto_detection_says_why_it_falls_back_or_finds_a_cgroup() {
    let limits = CgroupLimits {
        memory: Some(1 << 30),
        cpus: None,
        pids: Some(64),
    };
    match cgroup::detect(&CgroupMode::Auto, limits).unwrap() {
        // A hybrid or v1 host: the controllers belong to v1.
        Detected::Fallback(why) => assert!(!why.is_empty()),
        Detected::Active(parent) => {
            assert!(parent.dir().join("cgroup.subtree_control").exists());
        }
    }
    // Nothing to limit, nothing to detect.
    match cgroup::detect(&CgroupMode::Auto, CgroupLimits::default()).unwrap() {
        Detected::Fallback(why) => assert!(why.contains("no cgroup limit"), "{why}"),
        Detected::Active(_) => panic!("a cgroup with nothing to limit"),
    }
    match cgroup::detect(&CgroupMode::Off, limits).unwrap() {
        Detected::Fallback(why) => assert!(why.contains("off"), "{why}"),
        Detected::Active(_) => panic!("off is off"),
    }
}

#[test]
fn the_own_cgroup_is_found_from_proc() {
    let mountinfo = "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n\
                     41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
    let own = cgroup::own_cgroup("4:memory:/x\n0::/system.slice/app.service\n", mountinfo);
    assert_eq!(
        own.as_deref(),
        Some(Path::new("/sys/fs/cgroup/unified/system.slice/app.service"))
    );
    assert_eq!(
        cgroup::own_cgroup("0::/\n", mountinfo).as_deref(),
        Some(Path::new("/sys/fs/cgroup/unified"))
    );
    // A mount of a subtree (a cgroup namespace's view), with an escaped space.
    let nested = "50 1 0:40 /kube /sys/fs/cgroup\\040x rw - cgroup2 cgroup2 rw\n";
    assert_eq!(
        cgroup::own_cgroup("0::/kube/pod\n", nested).as_deref(),
        Some(Path::new("/sys/fs/cgroup x/pod"))
    );
    assert_eq!(cgroup::own_cgroup("1:cpu:/\n", mountinfo), None, "v1 only");
    assert_eq!(
        cgroup::own_cgroup("0::/\n", "31 23 0:28 / /x rw - tmpfs tmpfs rw\n"),
        None
    );
}

/// A plain directory laid out as a cgroup v2 with `controllers`.
fn fake_cgroup(controllers: &str, procs: &str) -> PathBuf {
    let dir = scratch().join("cg");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("cgroup.controllers"), controllers).unwrap();
    std::fs::write(dir.join("cgroup.subtree_control"), "").unwrap();
    std::fs::write(dir.join("cgroup.procs"), procs).unwrap();
    dir
}

const ALL: CgroupLimits = CgroupLimits {
    memory: Some(256 << 20),
    cpus: Some(0.5),
    pids: Some(32),
};

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn auto_moves_the_worker_into_a_leaf_and_enables_the_controllers() {
    let dir = fake_cgroup("cpuset cpu io memory pids\n", "4242\n");
    match cgroup::adopt_own(&dir, ALL, 4242) {
        Detected::Active(parent) => assert_eq!(parent.dir(), dir),
        Detected::Fallback(why) => panic!("fell back: {why}"),
    }
    assert_eq!(read(&dir.join("celeriac-worker/cgroup.procs")), "4242");
    assert_eq!(
        read(&dir.join("cgroup.subtree_control")),
        "+memory +cpu +pids"
    );
}

#[test]
fn auto_falls_back_without_controllers_or_with_other_processes() {
    let dir = fake_cgroup("hugetlb\n", "4242\n");
    match cgroup::adopt_own(&dir, ALL, 4242) {
        Detected::Fallback(why) => assert!(why.contains("memory"), "{why}"),
        Detected::Active(_) => panic!("used a cgroup without controllers"),
    }
    let dir = fake_cgroup("cpu memory pids\n", "4242\n77\n");
    match cgroup::adopt_own(&dir, ALL, 4242) {
        Detected::Fallback(why) => assert!(why.contains("other processes"), "{why}"),
        Detected::Active(_) => panic!("used a shared cgroup"),
    }
    assert_eq!(
        read(&dir.join("cgroup.subtree_control")),
        "",
        "nothing written"
    );
    assert!(!dir.join("celeriac-worker").exists());
    // Only the controllers the configured limits need.
    let dir = fake_cgroup("pids\n", "4242\n");
    let pids_only = CgroupLimits {
        pids: Some(8),
        ..CgroupLimits::default()
    };
    assert!(matches!(
        cgroup::adopt_own(&dir, pids_only, 4242),
        Detected::Active(_)
    ));
}

#[test]
fn a_delegated_cgroup_must_be_empty() {
    let busy = fake_cgroup("cpu memory pids\n", "1\n");
    let err = cgroup::adopt_delegated(&busy, ALL).unwrap_err();
    assert!(err.contains("processes"), "{err}");
    let missing = fake_cgroup("memory\n", "");
    let err = cgroup::adopt_delegated(&missing, ALL).unwrap_err();
    assert!(err.contains("cpu") && err.contains("pids"), "{err}");
}

#[tokio::test]
async fn each_run_gets_a_cgroup_with_the_limits_and_joins_it() {
    let dir = fake_cgroup("cpu memory pids\n", "");
    let parent = cgroup::adopt_delegated(&dir, ALL).unwrap();
    assert_eq!(
        parent.describe(),
        "memory.max=268435456 cpu.max=50000 100000 pids.max=32"
    );
    let mut config = ExecConfig::new()
        .allow("sh")
        .workdir_root(scratch())
        .memory_limit(256 << 20);
    config.set_cgroup_parent(parent);
    run_with(&config, &sh("true")).await.unwrap();
    // A plain directory cannot be removed with its files: the run's is
    // still there to look at.
    let runs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    let run = &runs[0];
    assert_eq!(read(&run.join("memory.max")), "268435456");
    assert_eq!(read(&run.join("cpu.max")), "50000 100000");
    assert_eq!(read(&run.join("pids.max")), "32");
    // The child moved itself in before exec ("0": the writing process).
    assert_eq!(read(&run.join("cgroup.procs")), "0");
}
