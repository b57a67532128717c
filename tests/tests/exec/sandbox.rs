//! The exec sandbox on a real worker process, started as in production:
//! the broker URL (with its password) in `AMQP_ADDR`, the Redis URL in a
//! file. A probe program (`exec-programs/probe.py`) reports what it can
//! see: its ids, its environment, the worker's `/proc` entries, its
//! privileges, and whether it can reach the broker.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use celeriac_producer::Error;
use celeriac_schema::exec::ExecSpec;
use celeriac_schema::headers;
use celeriac_tests::{
    broker, drain, eventually, header_str, namespace, queue_len, record_file, redis, redis_store,
    StoreCluster, WorkerProcess,
};
use serde_json::{json, Value};

use super::{as_json, program, Cluster, WAIT};

fn probe() -> String {
    program("probe.py").display().to_string()
}

/// The system's Python: one `nobody` can run (a `python3` found first on
/// the worker's `PATH` may live in root's home).
const PYTHON: &str = "/usr/bin/python3";

fn probe_spec() -> ExecSpec {
    assert!(
        Path::new(PYTHON).exists(),
        "{PYTHON} is missing: install it (apt-get install python3)"
    );
    ExecSpec::new(PYTHON).args([probe()])
}

/// A worker allowed to run only `/usr/bin/python3 <probe.py>`, with `extra` flags,
/// its Redis URL read from a file and nothing secret on its command line.
async fn sandboxed(test: &str, extra: &[&str]) -> Cluster {
    let ns = namespace(test);
    let broker = broker().await;
    let redis_url = redis().await.url.clone();
    let secret = record_file(&format!("{test}-redis-url"));
    std::fs::write(&secret, format!("{redis_url}\n")).unwrap();
    let workdir = record_file(&format!("{test}-workdir"));
    let allow = format!("{PYTHON} {}", probe());
    let secret_arg = secret.display().to_string();
    let workdir_arg = workdir.display().to_string();
    let mut args = vec![
        "--redis-url-file",
        &secret_arg,
        "--exec-allow",
        &allow,
        "--exec-workdir",
        &workdir_arg,
    ];
    args.extend_from_slice(extra);
    let worker = WorkerProcess::start(
        Path::new(env!("CARGO_BIN_EXE_celeriac-test-worker")),
        &broker.url,
        &ns,
        &record_file(test),
        &args,
    );
    let store = std::sync::Arc::new(
        redis_store(&ns, celeriac_schema::store::StoreSettings::default()).await,
    );
    let producer = celeriac_producer::Producer::builder(&broker.url)
        .namespace(&*ns)
        .store(store)
        .connect()
        .await
        .unwrap();
    Cluster(StoreCluster {
        producer,
        worker,
        ns,
    })
}

/// What the probe saw, asked to connect to the broker's port.
async fn report(c: &Cluster) -> Value {
    let handle = c
        .send(probe_spec(), json!({"connect": ["127.0.0.1", 5672]}))
        .await;
    as_json(handle.wait(WAIT).await.unwrap())
}

fn denied(report: &Value, entry: &str) {
    assert!(
        report[entry]["error"].is_string() && report[entry].get("ok").is_none(),
        "{entry} was readable: {}",
        report[entry]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_cannot_read_the_workers_secrets() {
    let c = sandboxed("exec-secrets", &[]).await;
    let report = report(&c).await;
    let broker_url = &broker().await.url;
    let redis_url = &redis().await.url;
    assert!(
        broker_url.contains('@'),
        "the broker URL carries a password"
    );
    let text = report.to_string();
    for secret in [broker_url.as_str(), redis_url.as_str(), "guest:guest"] {
        assert!(!text.contains(secret), "the program saw {secret}: {text}");
    }
    let env = report["env"].as_object().unwrap();
    for name in celeriac_consumer::exec::SECRET_ENV {
        assert!(!env.contains_key(*name), "{name} in the program's env");
    }
    // Not from the worker's original environment block either: the worker
    // is non-dumpable and the program, root like it, has no capabilities.
    assert_eq!(report["parent"], json!(c.worker.pid()));
    denied(&report, "parent_environ");
    denied(&report, "parent_maps");
    assert!(report["parent_cmdline"]["ok"].is_string(), "{report}");
    assert_eq!(report["no_new_privs"], json!("1"));
    assert_eq!(report["cap_eff"], json!("0000000000000000"));
    // With the worker's network, the broker is reachable.
    assert_eq!(report["connect"]["ok"], json!("connected"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_exec_user_the_program_is_not_root_and_cannot_see_the_worker() {
    let c = sandboxed("exec-user", &["--exec-user", "nobody"]).await;
    let report = report(&c).await;
    let nobody: celeriac_consumer::exec::ExecUser = "nobody".parse().unwrap();
    assert_eq!(report["uid"], json!(nobody.uid()), "{report}");
    assert_ne!(report["uid"], json!(0));
    assert_eq!(report["gid"], json!(nobody.gid()));
    assert_eq!(report["groups"], json!([]), "no supplementary groups");
    for entry in ["parent_environ", "parent_fd", "parent_maps"] {
        denied(&report, entry);
    }
    assert_eq!(report["no_new_privs"], json!("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_network_the_program_cannot_reach_the_broker() {
    let c = sandboxed("exec-no-network", &["--exec-network", "none"]).await;
    let report = report(&c).await;
    assert!(report["connect"]["error"].is_string(), "{report}");
    assert_eq!(report["no_new_privs"], json!("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arguments_off_the_pattern_are_dead_lettered_and_never_run() {
    let c = sandboxed("exec-pattern", &[]).await;
    let marker = record_file("exec-pattern-marker");
    let code = format!("open({:?}, 'w')", marker.display().to_string());
    let refused = [
        ExecSpec::new(PYTHON).args(["-c".to_owned(), code.clone()]),
        ExecSpec::new(PYTHON).args([probe(), "-c".to_owned(), code]),
        probe_spec().env("PYTHONSTARTUP", marker.display().to_string()),
    ];
    for spec in &refused {
        let handle = c.send(spec.clone(), Value::Null).await;
        match handle.wait(WAIT).await {
            Err(Error::TaskFailed { failure, .. }) => {
                assert_eq!(failure.error_type, "Forbidden", "{failure}");
                assert!(failure.message.contains("allowed only as"), "{failure}");
            }
            other => panic!("expected {spec:?} to be refused, got {other:?}"),
        }
    }
    let (_conn, channel) = broker().await.channel().await;
    let dlq = c.ns.topology().dead_letter_queue("default");
    let arrived = eventually(WAIT, || async {
        queue_len(&channel, &dlq).await >= refused.len() as u32
    })
    .await;
    assert!(arrived, "the refused tasks did not reach {dlq}");
    for dead in drain(&channel, &dlq).await {
        assert_eq!(header_str(&dead, headers::REASON), "forbidden");
    }
    assert!(!marker.exists(), "a refused program ran");
    // The pattern itself runs.
    let handle = c.send(probe_spec(), Value::Null).await;
    assert!(handle.wait(WAIT).await.is_ok());
}

/// Runs the worker binary with `args` and `env` as `uid` (when given)
/// until it exits, which it must do within 20 s; returns its exit code
/// and stderr.
fn refused_start(args: &[&str], env: &[(&str, &str)], uid: Option<u32>) -> (i32, String) {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(env!("CARGO_BIN_EXE_celeriac-test-worker"));
    command
        .args(args)
        // Unreachable: a worker that starts anyway does not touch the
        // shared broker.
        .env("AMQP_ADDR", "amqp://guest:guest@127.0.0.1:1/%2f")
        .env_remove("REDIS_URL")
        .env("CELERIAC_METRICS_ADDR", "off")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(uid) = uid {
        command.uid(uid).gid(uid);
    }
    let mut child = command.spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the worker started with {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_worker_refuses_a_sandbox_it_cannot_set_up() {
    let (code, err) = refused_start(&["--exec-user", "celeriac-no-such-user"], &[], None);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("does not exist"), "{err}");

    // Not root: it cannot switch users, nor create a network namespace.
    let nobody: celeriac_consumer::exec::ExecUser = "nobody".parse().unwrap();
    let (code, err) = refused_start(
        &["--exec-allow", "true", "--exec-user", "12345"],
        &[],
        Some(nobody.uid()),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("lacks the privilege"), "{err}");
    let (code, err) = refused_start(
        &["--exec-allow", "true", "--exec-network", "none"],
        &[],
        Some(nobody.uid()),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot create a network namespace"), "{err}");

    // A cgroup that is not one.
    let (code, err) = refused_start(
        &["--exec-cgroup", "/tmp", "--exec-memory-limit", "1G"],
        &[],
        None,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a cgroup v2"), "{err}");

    // A secret given twice, or from a file that is not there.
    let file = record_file("exec-secret-twice");
    std::fs::write(&file, "amqp://guest:guest@127.0.0.1:1/%2f\n").unwrap();
    let (code, err) = refused_start(&[], &[("AMQP_ADDR_FILE", file.to_str().unwrap())], None);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not both"), "{err}");
    let (code, err) = refused_start(
        &["--redis-url-file", "/nonexistent/celeriac-secret"],
        &[],
        None,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--redis-url-file"), "{err}");
}

#[test]
fn the_worker_says_which_limits_are_active() {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_celeriac-test-worker"))
        .args([
            "--exec-allow",
            "true",
            "--exec-memory-limit",
            "1G",
            "--exec-pids-limit",
            "64",
        ])
        .env("AMQP_ADDR", "amqp://guest:guest@127.0.0.1:1/%2f")
        .env_remove("REDIS_URL")
        .env("CELERIAC_METRICS_ADDR", "off")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let line = std::io::BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .find(|line| line.contains("exec limits"));
    let _ = child.kill();
    let _ = child.wait();
    let line = line.expect("no `exec limits` line at start-up");
    // This host, as documented for hybrid ones, has no usable cgroup v2;
    // a host with a delegated one says so.
    assert!(
        line.contains("rlimits per process only") || line.contains("cgroup v2 per run"),
        "{line}"
    );
}
