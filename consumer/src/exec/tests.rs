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

mod output;
mod processes;
mod programs;
