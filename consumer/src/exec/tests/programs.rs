//! Which programs run and how: rlimits, the allowlist and the errors of
//! programs that cannot start.

use super::*;

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
