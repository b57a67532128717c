//! `celeriac run --local flow.yaml`: a YAML workflow run in-process, with no
//! broker, its node states shown as they change and a summary at the end.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use celeriac_consumer::exec::ExecConfig;
use celeriac_consumer::local::{FlowOptions, LocalEvent, LocalEventKind, DEFAULT_MAX_WORKERS};
use celeriac_consumer::{LocalScheduler, TaskError, TaskResult, TaskStatus};
use celeriac_producer::flow::Flow;
use clap::Args;
use serde_json::json;

/// Options of `celeriac run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The YAML workflow file.
    pub file: PathBuf,

    /// Run in-process with no broker (the only mode of `run`: to run a flow
    /// on the cluster, use `celeriac submit FILE --wait`).
    #[arg(long)]
    pub local: bool,

    /// How many tasks run at once.
    #[arg(long, default_value_t = DEFAULT_MAX_WORKERS, value_parser = workers)]
    pub max_workers: usize,

    /// Print JSON Lines: one line per state change, one per node at the end
    /// and a summary line.
    #[arg(long)]
    pub json: bool,

    /// Programs the flow may run (names looked up on PATH, or paths, each
    /// optionally with argument patterns as in `celeriac-worker
    /// --exec-allow`; repeat or separate with commas). Default: any
    /// program, as the file is the user's own.
    #[arg(long, value_delimiter = ',')]
    pub allow: Vec<String>,
}

fn workers(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{s:?} is not a number of workers (1 or more)")),
    }
}

/// Exit code when a node failed or was skipped.
const FAILED: u8 = 1;
/// Exit code for an invalid file or invalid options.
const INVALID: u8 = 2;
/// Exit code after a second interrupt.
const INTERRUPTED: u8 = 130;

/// Runs the flow; exit code 0 when every node succeeded, 1 when one failed
/// or was skipped, 2 for an invalid file.
pub async fn run(args: &RunArgs) -> ExitCode {
    if !args.local {
        eprintln!(
            "error: `celeriac run` runs a flow in-process: add --local (`celeriac run --local {0}`); \
             to run it on the cluster, use `celeriac submit {0} --wait`",
            args.file.display()
        );
        return ExitCode::from(INVALID);
    }
    let flow = match Flow::from_path(&args.file) {
        Ok(flow) => flow,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(INVALID);
        }
    };
    let exec = if args.allow.is_empty() {
        ExecConfig::new().allow_any()
    } else {
        let config = args
            .allow
            .iter()
            .fold(ExecConfig::new(), |config, program| config.allow(program));
        match config.prepare() {
            Ok(config) => config,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(INVALID);
            }
        }
    };
    let options = FlowOptions::new().exec(exec).max_workers(args.max_workers);
    let mut scheduler = match LocalScheduler::from_flow(&flow, options) {
        Ok(scheduler) => scheduler,
        Err(e) => {
            eprintln!("error: {}: {e}", flow.file());
            return ExitCode::from(INVALID);
        }
    };
    let mut events = scheduler.events();
    let cancel = scheduler.cancel_handle();
    let mut out = Printer::new(&flow, args.json);
    out.header(&flow, args.max_workers);

    let mut run = tokio::spawn(scheduler.run());
    let mut interrupts = 0;
    let joined = loop {
        tokio::select! {
            biased;
            Some(event) = events.recv() => out.event(&event),
            joined = &mut run => break joined,
            _ = tokio::signal::ctrl_c() => {
                interrupts += 1;
                if interrupts > 1 {
                    return ExitCode::from(INTERRUPTED);
                }
                eprintln!("interrupted: cancelling the running tasks (Ctrl-C again to exit now)");
                cancel.cancel_all();
            }
        }
        if out.broken {
            // The reader went away (`| head`): nobody is left to tell.
            cancel.cancel_all();
        }
    };
    while let Ok(event) = events.try_recv() {
        out.event(&event);
    }
    let results = match joined {
        Ok(Ok(results)) => results,
        Ok(Err(e)) => {
            eprintln!("error: {}: {e}", flow.file());
            return ExitCode::from(INVALID);
        }
        Err(e) => {
            eprintln!("error: the run stopped: {e}");
            return ExitCode::from(FAILED);
        }
    };
    let all_succeeded = results.values().all(TaskResult::is_success);
    out.summary(&flow, &results);
    if out.broken || all_succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(FAILED)
    }
}

/// Writes progress and the summary, as text or JSON Lines.
struct Printer {
    json: bool,
    color: bool,
    start: Instant,
    width: usize,
    started: HashMap<String, Instant>,
    ended: HashMap<String, Instant>,
    /// stdout was closed by its reader.
    broken: bool,
}

const GREEN: &str = "\x1b[32m";
const RED: &str = "\x1b[31m";
const YELLOW: &str = "\x1b[33m";
const DIM: &str = "\x1b[2m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

impl Printer {
    fn new(flow: &Flow, json: bool) -> Printer {
        let color = !json
            && std::io::stdout().is_terminal()
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        Printer {
            json,
            color,
            start: Instant::now(),
            width: flow
                .tasks()
                .iter()
                .map(|t| t.id.len())
                .max()
                .unwrap_or(4)
                .max(4),
            started: HashMap::new(),
            ended: HashMap::new(),
            broken: false,
        }
    }

    fn line(&mut self, text: &str) {
        if self.broken {
            return;
        }
        let mut stdout = std::io::stdout().lock();
        if let Err(e) = writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                self.broken = true;
            } else {
                eprintln!("error: cannot write to stdout: {e}");
                self.broken = true;
            }
        }
    }

    fn paint(&self, color: &str, text: &str) -> String {
        if self.color {
            format!("{color}{text}{RESET}")
        } else {
            text.to_owned()
        }
    }

    fn header(&mut self, flow: &Flow, workers: usize) {
        if self.json {
            return;
        }
        let text = format!(
            "running {} from {}: {} tasks, up to {workers} at once",
            flow.name(),
            flow.file(),
            flow.tasks().len()
        );
        let text = self.paint(BOLD, &text);
        self.line(&text);
    }

    fn event(&mut self, event: &LocalEvent) {
        let id = event.task.to_string();
        match &event.kind {
            LocalEventKind::Started { .. } => {
                self.started.entry(id.clone()).or_insert(event.at);
            }
            LocalEventKind::Succeeded { .. }
            | LocalEventKind::Failed { .. }
            | LocalEventKind::Skipped { .. } => {
                self.ended.insert(id.clone(), event.at);
            }
            _ => {}
        }
        let elapsed = event.at.saturating_duration_since(self.start);
        if self.json {
            let mut line = json!({
                "type": "event",
                "event": event.kind.name(),
                "node": id,
                "elapsed_ms": millis(elapsed),
            });
            match &event.kind {
                LocalEventKind::Started { attempt } => line["attempt"] = json!(attempt),
                LocalEventKind::Retrying { attempt, error } => {
                    line["attempt"] = json!(attempt);
                    line["error"] = error_json(error);
                }
                LocalEventKind::Succeeded { attempts } => line["attempts"] = json!(attempts),
                LocalEventKind::Failed { attempts, error } => {
                    line["attempts"] = json!(attempts);
                    line["error"] = error_json(error);
                }
                LocalEventKind::Skipped { error } => line["error"] = error_json(error),
                _ => {}
            }
            self.line(&line.to_string());
            return;
        }
        let (color, detail) = match &event.kind {
            LocalEventKind::Started { attempt } if *attempt > 1 => {
                (DIM, format!("attempt {attempt}"))
            }
            LocalEventKind::Started { .. } => (DIM, String::new()),
            LocalEventKind::Retrying { attempt, error } => (
                YELLOW,
                format!("attempt {attempt} failed: {}", one_line(error, 100)),
            ),
            LocalEventKind::Succeeded { .. } => {
                let took = self
                    .started
                    .get(&id)
                    .map(|s| event.at.saturating_duration_since(*s));
                (
                    GREEN,
                    took.map(|d| format!("in {}", secs(d))).unwrap_or_default(),
                )
            }
            LocalEventKind::Failed { attempts, error } => (
                RED,
                format!(
                    "after {attempts} {}: {}",
                    plural(*attempts),
                    one_line(error, 100)
                ),
            ),
            LocalEventKind::Skipped { error } => (YELLOW, one_line(error, 100)),
            _ => (DIM, String::new()),
        };
        let name = self.paint(color, &format!("{:<9}", event.kind.name()));
        let text = format!(
            "{:>8}  {name}  {:<width$}  {detail}",
            secs(elapsed),
            id,
            width = self.width
        );
        self.line(text.trim_end());
    }

    fn summary(&mut self, flow: &Flow, results: &HashMap<String, TaskResult>) {
        let elapsed = self.start.elapsed();
        let count = |status| results.values().filter(|r| r.status == status).count();
        let (ok, failed, skipped) = (
            count(TaskStatus::Success),
            count(TaskStatus::Failed),
            count(TaskStatus::Skipped),
        );
        let mut rows = Vec::with_capacity(results.len());
        for task in flow.tasks() {
            if let Some(result) = results.get(&task.id) {
                let duration = match (self.started.get(&task.id), self.ended.get(&task.id)) {
                    (Some(s), Some(e)) => Some(e.saturating_duration_since(*s)),
                    _ => None,
                };
                rows.push((task.id.as_str(), result, duration));
            }
        }
        // Nodes with a tolerance that started after their deadline.
        let late: Vec<&str> = rows
            .iter()
            .filter(|(_, r, _)| r.deadline_missed)
            .map(|(id, _, _)| *id)
            .collect();
        if self.json {
            for (id, result, duration) in &rows {
                let line = json!({
                    "type": "result",
                    "node": id,
                    "status": result.status.as_str(),
                    "attempts": result.attempts,
                    "duration_ms": duration.map(millis),
                    "result": result.result,
                    "error": result.error.as_ref().map(error_json),
                });
                self.line(&line.to_string());
            }
            let line = json!({
                "type": "summary",
                "flow": flow.name(),
                "succeeded": ok,
                "failed": failed,
                "skipped": skipped,
                "deadline_missed": late.len(),
                "elapsed_ms": millis(elapsed),
            });
            self.line(&line.to_string());
            return;
        }
        self.line("");
        let width = self.width;
        let head = format!(
            "{:<width$}  {:<8}  {:>8}  {:>8}  ERROR",
            "NODE", "STATUS", "ATTEMPTS", "DURATION"
        );
        let head = self.paint(BOLD, &head);
        self.line(&head);
        for (id, result, duration) in &rows {
            let color = match result.status {
                TaskStatus::Success => GREEN,
                TaskStatus::Failed => RED,
                TaskStatus::Skipped => YELLOW,
            };
            let status = self.paint(color, &format!("{:<8}", result.status.as_str()));
            let text = format!(
                "{id:<width$}  {status}  {:>8}  {:>8}  {}",
                result.attempts,
                duration.map(secs).unwrap_or_else(|| "-".into()),
                result
                    .error
                    .as_ref()
                    .map(|e| one_line(e, 60))
                    .unwrap_or_default(),
            );
            self.line(text.trim_end());
        }
        let failures: Vec<(&str, &TaskError)> = rows
            .iter()
            .filter(|(_, r, _)| r.status == TaskStatus::Failed)
            .filter_map(|(id, r, _)| r.error.as_ref().map(|e| (*id, e)))
            .collect();
        for (id, error) in failures {
            self.line("");
            let title = self.paint(RED, &format!("{id} failed: {}", error.kind()));
            self.line(&title);
            for l in error.message().lines() {
                self.line(&format!("  {l}"));
            }
        }
        // The results of the nodes nothing depends on: what the flow made.
        let needed: std::collections::HashSet<&str> = flow
            .tasks()
            .iter()
            .flat_map(|t| t.dependencies.iter().map(String::as_str))
            .collect();
        let outputs: Vec<(&str, &serde_json::Value)> = rows
            .iter()
            .filter(|(id, _, _)| !needed.contains(id))
            .filter_map(|(id, r, _)| r.result.as_ref().map(|v| (*id, v)))
            .collect();
        if !outputs.is_empty() {
            self.line("");
            let title = self.paint(BOLD, "results");
            self.line(&title);
            for (id, value) in outputs {
                let text = cut(&value.to_string(), 100);
                self.line(&format!("  {id:<width$}  {text}"));
            }
        }
        self.line("");
        if !late.is_empty() {
            let text = format!(
                "{} started after their deadline: {}",
                late.len(),
                late.join(", ")
            );
            let text = self.paint(YELLOW, &text);
            self.line(&text);
        }
        let verdict = if failed + skipped == 0 {
            self.paint(GREEN, "all succeeded")
        } else {
            self.paint(RED, "not all succeeded")
        };
        let text = format!(
            "{}: {ok} succeeded, {failed} failed, {skipped} skipped in {}: {verdict}",
            flow.name(),
            secs(elapsed)
        );
        self.line(&text);
    }
}

fn plural(attempts: u32) -> &'static str {
    if attempts == 1 {
        "attempt"
    } else {
        "attempts"
    }
}

fn error_json(error: &TaskError) -> serde_json::Value {
    json!({"kind": error.kind(), "message": error.message()})
}

/// `kind: message` on one line, cut at `max` characters.
fn one_line(error: &TaskError, max: usize) -> String {
    let text = format!("{}: {}", error.kind(), error.message());
    cut(&text.split_whitespace().collect::<Vec<_>>().join(" "), max)
}

/// `text`, cut at `max` characters.
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let cut: String = text.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}
