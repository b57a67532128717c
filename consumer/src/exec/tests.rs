//! The exec runner against real programs (`sh`, coreutils, `python3`).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use celeriac_schema::exec::{ExecFormat, ExecInput, ExecSpec};
use celeriac_schema::headers::DeadLetterReason;
use celeriac_schema::Envelope;
use rmpv::Value;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::disposition::{decide, Disposition, Outcome};
use crate::{FORBIDDEN, TIME_LIMIT};

/// A fresh directory for one test's files.
fn scratch() -> PathBuf {
    let dir = std::env::temp_dir()
        .join("celeriac-exec-tests")
        .join(uuid::Uuid::now_v7().simple().to_string());
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Any program allowed, working directories under a fresh root.
fn open_config() -> ExecConfig {
    ExecConfig::new().allow_any().workdir_root(scratch())
}

fn limits(hard_ms: u64) -> ExecLimits {
    ExecLimits {
        soft: None,
        hard: Some(Duration::from_millis(hard_ms)),
    }
}

fn sh(script: &str) -> ExecSpec {
    ExecSpec::new("sh").args(["-c", script])
}

async fn run_with(config: &ExecConfig, spec: &ExecSpec, input: Value) -> Result<Value, TaskError> {
    run(
        config,
        spec,
        &input,
        limits(10_000),
        &CancellationToken::new(),
    )
    .await
}

async fn run_sh(script: &str) -> Result<Value, TaskError> {
    run_with(&open_config(), &sh(script), Value::Nil).await
}

/// Whether `pid` has ended (gone, or a zombie nobody reaped yet).
fn ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

/// Waits (up to 5 s) until every pid has ended.
async fn all_ended(pids: &[u32]) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if pids.iter().all(|&pid| ended(pid)) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The pids written one per line to `path`, once it has `count` of them.
fn pids_in(path: &Path, count: usize) -> Option<Vec<u32>> {
    let text = std::fs::read_to_string(path).ok()?;
    let pids: Vec<u32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
    (pids.len() >= count).then_some(pids)
}

fn is_empty_dir(path: &Path) -> bool {
    std::fs::read_dir(path).unwrap().next().is_none()
}

/// The script of the issue: a child that loops forever, its pid and the
/// script's own written to `$PIDS`, then the script waits for it.
const LOOPING_CHILD: &str =
    "sh -c 'while :; do :; done' & echo $! > \"$PIDS.tmp\"; echo $$ >> \"$PIDS.tmp\"; mv \"$PIDS.tmp\" \"$PIDS\"; wait";

fn looping_child(pids: &Path) -> ExecSpec {
    sh(LOOPING_CHILD).env("PIDS", pids.display().to_string())
}

// ---- input and output -------------------------------------------------

#[tokio::test]
async fn json_output_is_parsed() {
    let out = run_sh(r#"echo '{"a": [1, 2], "b": "x"}'"#).await.unwrap();
    let expected = celeriac_schema::to_value(&serde_json::json!({"a": [1, 2], "b": "x"})).unwrap();
    assert_eq!(out, expected);
}

#[tokio::test]
async fn other_output_is_a_string_with_trailing_whitespace_trimmed() {
    let out = run_sh("printf '  hello world \\n\\n'").await.unwrap();
    assert_eq!(out, Value::from("  hello world"));
}

#[tokio::test]
async fn empty_or_blank_output_is_nil() {
    assert_eq!(run_sh("true").await.unwrap(), Value::Nil);
    assert_eq!(run_sh("printf ' \\n\\t\\n'").await.unwrap(), Value::Nil);
}

#[tokio::test]
async fn output_that_is_not_utf8_is_binary() {
    let out = run_sh("printf '\\377\\376x'").await.unwrap();
    assert_eq!(out, Value::Binary(vec![0xff, 0xfe, b'x']));
}

#[tokio::test]
async fn the_input_arrives_on_stdin_as_json() {
    let input = celeriac_schema::to_value(&serde_json::json!({"n": 21, "s": "é"})).unwrap();
    let out = run_with(&open_config(), &ExecSpec::new("cat"), input.clone())
        .await
        .unwrap();
    assert_eq!(out, input);
    // One line: `read` sees the whole document.
    let out = run_with(
        &open_config(),
        &sh("read n; echo $((n * 2))"),
        Value::from(21),
    )
    .await
    .unwrap();
    assert_eq!(out, Value::from(42));
}

#[tokio::test]
async fn big_input_output_and_stderr_flow_at_once() {
    // 1 MiB to stderr before reading stdin, then 1 MiB of stdin echoed:
    // with any stream handled after another, this would block forever.
    let big = "x".repeat(1024 * 1024);
    let spec = sh("head -c 1048576 /dev/zero >&2; cat");
    let out = run_with(&open_config(), &spec, Value::from(big.as_str()))
        .await
        .unwrap();
    assert_eq!(out, Value::from(big));
}

#[tokio::test]
async fn msgpack_in_and_out() {
    let input = Value::Map(vec![
        (Value::from("bytes"), Value::Binary(vec![0, 1, 2, 255])),
        (Value::from("n"), Value::from(-7)),
    ]);
    let spec = ExecSpec::new("cat").format(ExecFormat::Msgpack);
    let out = run_with(&open_config(), &spec, input.clone())
        .await
        .unwrap();
    assert_eq!(out, input);
    let spec = sh("true").format(ExecFormat::Msgpack);
    assert_eq!(
        run_with(&open_config(), &spec, input).await.unwrap(),
        Value::Nil
    );
}

#[tokio::test]
async fn msgpack_output_must_be_exactly_one_value() {
    // A truncated array; a value followed by more bytes.
    for script in ["printf '\\222\\001'", "echo hi"] {
        let spec = sh(script).format(ExecFormat::Msgpack);
        let err = run_with(&open_config(), &spec, Value::Nil)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), OUTPUT_DECODE, "{script}: {err}");
        assert!(!err.is_retryable());
    }
}

#[tokio::test]
async fn an_input_json_cannot_hold_is_bad_input() {
    let input = Value::Map(vec![(Value::Nil, Value::from(1))]);
    let err = run_with(&open_config(), &ExecSpec::new("cat"), input)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), crate::BAD_INPUT, "{err}");
}

#[tokio::test]
async fn output_past_the_cap_kills_the_program() {
    let config = open_config().max_output(64 * 1024);
    let started = Instant::now();
    let err = run_with(&config, &ExecSpec::new("yes"), Value::Nil)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), OUTPUT_TOO_LARGE, "{err}");
    assert!(!err.is_retryable());
    assert!(err.message().contains("65536"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // Just under the cap is fine.
    let config = open_config().max_output(10);
    assert_eq!(
        run_with(&config, &sh("printf 123456789"), Value::Nil)
            .await
            .unwrap(),
        Value::from(123_456_789)
    );
}

// ---- exit status and stderr -------------------------------------------

#[tokio::test]
async fn a_non_zero_exit_is_retryable_and_keeps_stderr() {
    let err = run_sh("echo working; echo 'boom: disk full' >&2; exit 3")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), EXIT_STATUS);
    assert!(err.is_retryable());
    assert!(err.message().contains("exited with status 3"), "{err}");
    assert!(err.message().contains("boom: disk full"), "{err}");
}

#[tokio::test]
async fn only_the_tail_of_stderr_is_kept_and_it_need_not_be_utf8() {
    let config = open_config().stderr_tail(64);
    let script =
        "head -c 100000 /dev/zero | tr '\\0' a >&2; printf '\\377\\376 the end' >&2; exit 1";
    let err = run_with(&config, &sh(script), Value::Nil)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), EXIT_STATUS);
    assert!(err.message().contains("the end"), "{err}");
    assert!(err.message().contains('…'), "{err}");
    assert!(err.message().len() < 200, "{err}");
}

#[tokio::test]
async fn death_by_a_signal_is_named() {
    let err = run_sh("kill -9 $$").await.unwrap_err();
    assert_eq!(err.kind(), EXIT_STATUS);
    assert!(err.is_retryable());
    assert!(
        err.message().contains("killed by signal 9 (SIGKILL)"),
        "{err}"
    );
}

// ---- rlimits ------------------------------------------------------------

#[tokio::test]
async fn the_cpu_limit_stops_a_busy_program() {
    let config = open_config().cpu_limit(Duration::from_secs(1));
    let err = run_with(&config, &sh("while :; do :; done"), Value::Nil)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), EXIT_STATUS, "{err}");
    assert!(err.message().contains("SIGXCPU"), "{err}");
    assert!(err.message().contains("CPU time limit"), "{err}");
}

#[tokio::test]
async fn the_memory_limit_fails_a_big_allocation() {
    let config = open_config().memory_limit(256 * 1024 * 1024);
    let spec = ExecSpec::new("python3").args(["-c", "b = bytearray(1 << 30); print(len(b))"]);
    let err = run_with(&config, &spec, Value::Nil).await.unwrap_err();
    assert_eq!(err.kind(), EXIT_STATUS, "{err}");
    assert!(err.message().contains("MemoryError"), "{err}");
    // A smaller allocation fits.
    let spec = ExecSpec::new("python3").args(["-c", "b = bytearray(1 << 26); print(len(b))"]);
    let out = run_with(&config, &spec, Value::Nil).await.unwrap();
    assert_eq!(out, Value::from(1 << 26));
}

// ---- allowlist ----------------------------------------------------------

#[tokio::test]
async fn an_empty_allowlist_forbids_everything_before_anything_runs() {
    let dir = scratch();
    let marker = dir.join("ran");
    let spec = sh(&format!("touch {}", marker.display()));
    let config = ExecConfig::new().workdir_root(dir.join("work"));
    let err = run_with(&config, &spec, Value::Nil).await.unwrap_err();
    assert_eq!(err.kind(), FORBIDDEN, "{err}");
    assert!(!err.is_retryable());
    assert!(!marker.exists());
    assert!(!dir.join("work").exists(), "no working directory either");
}

#[tokio::test]
async fn a_forbidden_program_is_dead_lettered_with_reason_forbidden() {
    let config = ExecConfig::new().allow("cat").workdir_root(scratch());
    let err = run_with(&config, &sh("true"), Value::Nil)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), FORBIDDEN, "{err}");
    assert!(err.message().contains("`sh`"), "{err}");
    let envelope = Envelope::new("celeriac.exec", Value::Nil);
    match decide(&Outcome::Failed(err), Some(&envelope), 0.5) {
        Disposition::DeadLetter { reason, .. } => assert_eq!(reason, DeadLetterReason::Forbidden),
        other => panic!("expected a dead letter, got {other:?}"),
    }
}

#[tokio::test]
async fn names_and_paths_match_the_same_file() {
    let config = ExecConfig::new().allow("sh").workdir_root(scratch());
    let resolved = config.check("sh").unwrap();
    assert!(resolved.is_absolute());
    // The path the name resolves to is allowed, and runs.
    let spec = ExecSpec::new(resolved.display().to_string()).args(["-c", "echo ok"]);
    assert_eq!(
        run_with(&config, &spec, Value::Nil).await.unwrap(),
        Value::from("ok")
    );

    // A path entry allows that file, not a copy of it elsewhere.
    let dir = scratch();
    let script = dir.join("hello");
    std::fs::write(&script, "#!/bin/sh\necho hello\n").unwrap();
    make_executable(&script);
    let copy = scratch().join("hello");
    std::fs::copy(&script, &copy).unwrap();
    make_executable(&copy);
    let config = ExecConfig::new()
        .allow(script.display().to_string())
        .workdir_root(scratch());
    let out = run_with(
        &config,
        &ExecSpec::new(script.display().to_string()),
        Value::Nil,
    )
    .await
    .unwrap();
    assert_eq!(out, Value::from("hello"));
    let err = config.check(&copy.display().to_string()).unwrap_err();
    assert_eq!(err.kind(), FORBIDDEN);
    // Nor a program of the same name found elsewhere.
    assert_eq!(config.check("hello").unwrap_err().kind(), FORBIDDEN);

    // `*` allows anything.
    let config = ExecConfig::new().allow("*").workdir_root(scratch());
    assert!(config.check("cat").is_ok());
}

#[tokio::test]
async fn a_task_may_not_set_loader_variables() {
    let spec = sh("true").env("LD_PRELOAD", "/tmp/evil.so");
    let err = run_with(&open_config(), &spec, Value::Nil)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), FORBIDDEN, "{err}");
}

// ---- program errors ---------------------------------------------------

fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test]
async fn a_missing_program_is_not_found() {
    for program in ["celeriac-no-such-program", "/nonexistent/celeriac/program"] {
        let err = run_with(&open_config(), &ExecSpec::new(program), Value::Nil)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), PROGRAM_NOT_FOUND, "{program}: {err}");
        assert!(!err.is_retryable());
    }
    // Allowed by name but not installed: missing, not forbidden.
    let config = ExecConfig::new().allow("celeriac-no-such-program");
    let err = config.check("celeriac-no-such-program").unwrap_err();
    assert_eq!(err.kind(), PROGRAM_NOT_FOUND, "{err}");
}

#[tokio::test]
async fn a_script_whose_interpreter_is_missing_says_so() {
    let script = scratch().join("bad-interpreter");
    std::fs::write(&script, "#!/nonexistent/interpreter\n").unwrap();
    make_executable(&script);
    let spec = ExecSpec::new(script.display().to_string());
    let err = run_with(&open_config(), &spec, Value::Nil)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), PROGRAM_NOT_FOUND, "{err}");
    assert!(err.message().contains("#!"), "{err}");
}

#[tokio::test]
async fn a_file_that_cannot_be_executed_is_not_executable() {
    let dir = scratch();
    let no_x = dir.join("no-x");
    std::fs::write(&no_x, "#!/bin/sh\necho hi\n").unwrap();
    let no_shebang = dir.join("no-shebang");
    std::fs::write(&no_shebang, "echo hi\n").unwrap();
    make_executable(&no_shebang);
    for path in [no_x, no_shebang, dir.clone()] {
        let spec = ExecSpec::new(path.display().to_string());
        let err = run_with(&open_config(), &spec, Value::Nil)
            .await
            .unwrap_err();
        assert_eq!(
            err.kind(),
            PROGRAM_NOT_EXECUTABLE,
            "{}: {err}",
            path.display()
        );
        assert!(!err.is_retryable());
    }
}

#[tokio::test]
async fn an_argument_with_a_nul_byte_is_bad_input() {
    let spec = ExecSpec::new("echo").args(["a\0b"]);
    let err = run_with(&open_config(), &spec, Value::Nil)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), crate::BAD_INPUT, "{err}");
}

// ---- environment and working directory --------------------------------

#[tokio::test]
async fn the_environment_is_scrubbed_to_the_allowlist() {
    // A variable of this process that is not on the default allowlist.
    let (name, value) = std::env::vars()
        .find(|(name, value)| {
            !DEFAULT_ENV_ALLOW.contains(&name.as_str())
                && !["HOME", "TMPDIR"].contains(&name.as_str())
                && !value.is_empty()
                && !value.contains('\n')
        })
        .expect("the test process has some environment");
    let spec = ExecSpec::new("env").env("FROM_TASK", "yes");
    let out = run_with(&open_config(), &spec, Value::Nil).await.unwrap();
    let Value::String(out) = out else {
        panic!("env printed {out:?}")
    };
    let lines: Vec<&str> = out.as_str().unwrap().lines().collect();
    assert!(lines.contains(&"FROM_TASK=yes"), "{lines:?}");
    assert!(lines.iter().any(|l| l.starts_with("PATH=")), "{lines:?}");
    assert!(
        !lines.iter().any(|l| l.starts_with(&format!("{name}="))),
        "{name} leaked: {lines:?}"
    );
    let allowed = format!("{name}={value}");

    let config = open_config().env_allow(name.clone());
    let out = run_with(&config, &spec, Value::Nil).await.unwrap();
    let out = out.as_str().unwrap().to_owned();
    assert!(out.lines().any(|l| l == allowed), "{name} missing: {out}");

    let config = open_config().env_allow_none();
    let out = run_with(&config, &spec, Value::Nil).await.unwrap();
    let out = out.as_str().unwrap().to_owned();
    assert!(!out.contains("PATH="), "{out}");
}

#[tokio::test]
async fn each_run_gets_a_fresh_directory_that_is_removed() {
    let root = scratch();
    let config = ExecConfig::new().allow("sh").workdir_root(&root);
    let script = "test -z \"$(ls -A)\" || exit 9; touch made-here; pwd; echo \"$HOME\" >&2";
    let first = run_with(&config, &sh(script), Value::Nil).await.unwrap();
    let second = run_with(&config, &sh(script), Value::Nil).await.unwrap();
    let (first, second) = (first.as_str().unwrap(), second.as_str().unwrap());
    assert_ne!(first, second);
    for dir in [first, second] {
        assert!(Path::new(dir).starts_with(&root), "{dir}");
        assert!(!Path::new(dir).exists(), "{dir} was not removed");
    }
    assert!(is_empty_dir(&root));
    // HOME and TMPDIR point there too.
    let out = run_with(
        &config,
        &sh("test \"$HOME\" = \"$PWD\" && test \"$TMPDIR\" = \"$PWD\" && echo same"),
        Value::Nil,
    )
    .await
    .unwrap();
    assert_eq!(out, Value::from("same"));
}

#[tokio::test]
async fn an_unusable_workdir_root_is_a_retryable_setup_error() {
    let file = scratch().join("a-file");
    std::fs::write(&file, "").unwrap();
    let config = ExecConfig::new().allow("sh").workdir_root(file.join("sub"));
    let err = run_with(&config, &sh("true"), Value::Nil)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), EXEC_SETUP, "{err}");
    assert!(err.is_retryable());
}

// ---- process group, time limits, cancellation --------------------------

/// The issue's test: at the hard limit the script and its looping child
/// are killed together.
#[tokio::test]
async fn the_hard_limit_kills_a_script_and_its_looping_child() {
    let dir = scratch();
    let pids = dir.join("pids");
    let started = Instant::now();
    let err = run(
        &open_config(),
        &looping_child(&pids),
        &Value::Nil,
        limits(1_000),
        &CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), TIME_LIMIT, "{err}");
    assert!(err.message().contains("hard time limit"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let pids = pids_in(&pids, 2).expect("the script wrote its pids");
    assert!(all_ended(&pids).await, "still running: {pids:?}");
}

#[tokio::test]
async fn dropping_the_run_kills_the_group_and_removes_the_directory() {
    let dir = scratch();
    let pids_file = dir.join("pids");
    let root = dir.join("work");
    let config = ExecConfig::new().allow("sh").workdir_root(&root);
    let spec = looping_child(&pids_file);
    let cancel = CancellationToken::new();
    let pids = {
        let running = run(&config, &spec, &Value::Nil, ExecLimits::default(), &cancel);
        tokio::pin!(running);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            tokio::select! {
                out = &mut running => panic!("the script ended: {out:?}"),
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
            if let Some(pids) = pids_in(&pids_file, 2) {
                break pids;
            }
            assert!(Instant::now() < deadline, "the script did not start");
        }
        // `running` is dropped here, as the worker drops a task it aborts.
    };
    assert!(all_ended(&pids).await, "still running: {pids:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !is_empty_dir(&root) {
        assert!(Instant::now() < deadline, "the working directory is left");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn cancelling_kills_the_group() {
    let dir = scratch();
    let pids_file = dir.join("pids");
    let cancel = CancellationToken::new();
    let config = open_config();
    let spec = looping_child(&pids_file);
    let running = run(&config, &spec, &Value::Nil, ExecLimits::default(), &cancel);
    let watch = async {
        loop {
            if pids_in(&pids_file, 2).is_some() {
                cancel.cancel();
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let (out, ()) = tokio::time::timeout(Duration::from_secs(5), async {
        tokio::join!(running, watch)
    })
    .await
    .expect("cancelled within 5 s");
    let err = out.unwrap_err();
    assert_eq!(err.kind(), crate::local::CANCELLED, "{err}");
    let pids = pids_in(&pids_file, 2).unwrap();
    assert!(all_ended(&pids).await, "still running: {pids:?}");
}

#[tokio::test]
async fn what_a_program_leaves_behind_is_killed_when_it_exits() {
    let dir = scratch();
    let pid_file = dir.join("pid");
    // The background sleep holds stdout open: without the group kill the
    // run would wait for it.
    let spec =
        sh("sleep 1000 & echo $! > \"$PID\"; echo done").env("PID", pid_file.display().to_string());
    let started = Instant::now();
    let out = run_with(&open_config(), &spec, Value::Nil).await.unwrap();
    assert_eq!(out, Value::from("done"));
    assert!(started.elapsed() < Duration::from_secs(3));
    let pid = pids_in(&pid_file, 1).unwrap();
    assert!(all_ended(&pid).await);
}

/// Prints "stopped" and exits 0 on SIGTERM.
const GRACEFUL: &str = "trap 'echo stopped; exit 0' TERM; while :; do sleep 0.05; done";
const STUBBORN: &str = "trap '' TERM; while :; do sleep 0.05; done";

#[tokio::test]
async fn the_soft_limit_sends_sigterm_first() {
    let limits = ExecLimits {
        // Long enough for the shell to set its trap first.
        soft: Some(Duration::from_millis(500)),
        hard: Some(Duration::from_secs(10)),
    };
    let started = Instant::now();
    let out = run(
        &open_config(),
        &sh(GRACEFUL),
        &Value::Nil,
        limits,
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(out, Value::from("stopped"));
    assert!(started.elapsed() < Duration::from_secs(3));

    // A program that dies of the SIGTERM fails with the time limit.
    let err = run(
        &open_config(),
        &sh("sleep 30"),
        &Value::Nil,
        limits,
        &CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), TIME_LIMIT, "{err}");
    assert!(err.message().contains("SIGTERM sent"), "{err}");
}

#[tokio::test]
async fn a_program_ignoring_sigterm_is_killed_at_the_hard_limit() {
    let limits = ExecLimits {
        soft: Some(Duration::from_millis(400)),
        hard: Some(Duration::from_millis(1200)),
    };
    let started = Instant::now();
    let err = run(
        &open_config(),
        &sh(STUBBORN),
        &Value::Nil,
        limits,
        &CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), TIME_LIMIT, "{err}");
    assert!(err.message().contains("hard time limit of 1.2s"), "{err}");
    assert!(started.elapsed() >= Duration::from_millis(1200));
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn with_only_a_soft_limit_the_kill_follows_a_grace() {
    let config = open_config().term_grace(Duration::from_millis(300));
    let limits = ExecLimits {
        soft: Some(Duration::from_millis(400)),
        hard: None,
    };
    let started = Instant::now();
    let err = run(
        &config,
        &sh(STUBBORN),
        &Value::Nil,
        limits,
        &CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), TIME_LIMIT, "{err}");
    assert!(
        err.message()
            .contains("did not exit within 300ms of SIGTERM"),
        "{err}"
    );
    assert!(started.elapsed() >= Duration::from_millis(700));
    assert!(started.elapsed() < Duration::from_secs(3));
}

// ---- the registered task ------------------------------------------------

#[tokio::test]
async fn the_registered_task_runs_with_the_envelope_limits() {
    let mut registry = Registry::new();
    register(&mut registry, Arc::new(open_config()));
    let handler = registry.get("celeriac.exec").unwrap().clone();
    let call = |spec: ExecSpec, input: Value, hard_ms: Option<u64>| {
        let mut envelope = Envelope::new("celeriac.exec", Value::Nil);
        envelope.hard_time_limit_ms = hard_ms;
        let ctx = TaskContext::new(Arc::new(envelope), "default".into(), "w".into(), None);
        let input = celeriac_schema::to_value(&ExecInput::new(spec, input)).unwrap();
        handler.call(input, ctx)
    };
    let out = call(sh("read n; echo $((n + 1))"), Value::from(41), None)
        .await
        .unwrap();
    assert_eq!(out, Value::from(42));
    let err = call(sh("sleep 30"), Value::Nil, Some(300))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), TIME_LIMIT, "{err}");
    // No program: the input does not match.
    let ctx = TaskContext::new(
        Arc::new(Envelope::new("celeriac.exec", Value::Nil)),
        "default".into(),
        "w".into(),
        None,
    );
    let err = handler.call(Value::from(1), ctx).await.unwrap_err();
    assert_eq!(err.kind(), crate::BAD_INPUT);
}
