//! The environment and working directory of a run, its process group,
//! time limits and cancellation, and the registered task.

use super::*;

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

/// The test: at the hard limit the script and its looping child
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
