//! `celeriac` reads its broker and Redis URLs from files as well as from
//! flags and variables, and refuses both at once.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

fn celeriac(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_celeriac"))
        .env_remove("AMQP_ADDR")
        .env_remove("REDIS_URL")
        .envs(env.iter().copied())
        .args(args)
        .output()
        .unwrap()
}

fn secret_file(content: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "celeriac-cli-secret-{}",
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::write(&path, content).unwrap();
    path
}

const ID: &str = "01a24959-14a3-74d6-801d-4305f1b23860";

#[test]
fn the_redis_url_comes_from_its_file() {
    // Nothing listens on port 1: the error names the file's URL, redacted.
    let file = secret_file("redis://:file-secret@127.0.0.1:1\n");
    let output = celeriac(
        &["status", ID, "--redis-url-file", file.to_str().unwrap()],
        &[],
    );
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(err.contains("127.0.0.1:1"), "{err}");
    assert!(!err.contains("file-secret"), "{err}");
    std::fs::remove_file(file).unwrap();
}

#[test]
fn a_value_and_a_file_together_are_refused() {
    let file = secret_file("redis://127.0.0.1:1\n");
    let path = file.to_str().unwrap();
    let output = celeriac(
        &["status", ID],
        &[("REDIS_URL", "redis://x"), ("REDIS_URL_FILE", path)],
    );
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(err.contains("not both"), "{err}");
    let output = celeriac(
        &[
            "status",
            ID,
            "--amqp-addr",
            "amqp://x",
            "--amqp-addr-file",
            path,
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(2));
    let missing = celeriac(
        &["status", ID, "--amqp-addr-file", "/nonexistent/celeriac"],
        &[],
    );
    let err = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(missing.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--amqp-addr-file /nonexistent/celeriac"),
        "{err}"
    );
    std::fs::remove_file(file).unwrap();
}
