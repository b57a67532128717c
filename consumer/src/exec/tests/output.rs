//! Input and output of programs, their exit status and stderr.

use super::*;

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
