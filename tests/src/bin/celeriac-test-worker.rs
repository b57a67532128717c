//! `celeriac-worker` with two more tasks for the end-to-end tests:
//!
//! - `test.record` `{ "ms": u64 }`: sleeps, then appends
//!   `{task_id} {attempt} {pid}` to the file named by `CELERIAC_TEST_RECORD`,
//!   so a test can count every completed run;
//! - `test.crash`: aborts the whole process, as a poison message would.

use std::io::Write;
use std::time::Duration;

use celeriac_consumer::{TaskContext, TaskError};
use celeriac_tests::test_tasks::{unix_micros, Crash, DagNode, Effect, Record};

fn main() -> std::process::ExitCode {
    celeriac_consumer::cli::main_with(|registry| {
        registry
            .register::<Record, _, _>(|input, ctx: TaskContext| async move {
                tokio::time::sleep(Duration::from_millis(input.ms)).await;
                let path = std::env::var("CELERIAC_TEST_RECORD")
                    .map_err(|_| TaskError::fatal("Config", "CELERIAC_TEST_RECORD is not set"))?;
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?;
                // One write per line: O_APPEND keeps concurrent lines whole.
                let line = format!(
                    "{} {} {}\n",
                    ctx.task_id(),
                    ctx.attempt(),
                    std::process::id()
                );
                file.write_all(line.as_bytes())?;
                Ok(())
            })
            .register::<Effect, _, _>(|input, ctx: TaskContext| async move {
                let line = |phase: &str| {
                    format!(
                        "{phase} {} {} {}\n",
                        ctx.task_id(),
                        std::process::id(),
                        unix_micros()
                    )
                };
                append(&line("start"))?;
                tokio::time::sleep(Duration::from_millis(input.ms)).await;
                append(&line("end"))?;
                Ok(input.n * 2)
            })
            .register::<DagNode, _, _>(|inputs, ctx: TaskContext| async move {
                let line = |phase: &str| {
                    format!(
                        "{phase} {} {} {}\n",
                        ctx.task_id(),
                        std::process::id(),
                        unix_micros()
                    )
                };
                append(&line("start"))?;
                tokio::time::sleep(Duration::from_millis(20)).await;
                append(&line("end"))?;
                Ok(1 + inputs.values().copied().max().unwrap_or(0))
            })
            .register::<Crash, _, _>(|(), _ctx: TaskContext| async move {
                std::process::abort();
            });
    })
}

/// Appends one line to the record file (one write: O_APPEND keeps
/// concurrent lines whole).
fn append(line: &str) -> Result<(), TaskError> {
    let path = std::env::var("CELERIAC_TEST_RECORD")
        .map_err(|_| TaskError::fatal("Config", "CELERIAC_TEST_RECORD is not set"))?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    file.write_all(line.as_bytes())?;
    Ok(())
}
