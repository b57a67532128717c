//! `celeriac events`: tails the event stream `{ns}.events` (SPEC.md
//! section 17) through an exclusive, auto-delete queue of its own.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use celeriac_producer::status::rfc3339;
use celeriac_schema::events::{
    decode_event, Event, EventKind, TaskEvent, WorkerEvent, WorkerEventKind,
};
use celeriac_schema::topology::{Declaration, ExchangeKind};
use celeriac_schema::Topology;
use clap::Args;
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};

use crate::{fail, Global, CONNECT_TIMEOUT};

/// Exit code when `--count` events did not arrive before `--timeout`.
pub const COUNT_NOT_REACHED: u8 = 4;

/// Options of `celeriac events`.
#[derive(Debug, Args)]
#[command(
    after_help = "Without filters every event is shown. --task and --kind narrow the task events \
                  (both together: those of that task and kind); --worker adds the worker events \
                  (alone: only them). Events are at most once: one may be missing, and nothing \
                  sent before this command bound its queue is shown.\n\
                  Exit codes: 0 when --count events were shown, at --timeout without --count, or \
                  on Ctrl-C; 1 when the broker cannot be reached or the connection is lost; 2 for \
                  invalid arguments; 4 when --timeout passed before --count events arrived."
)]
pub struct EventsArgs {
    /// Only the events of this task name; repeat for several.
    #[arg(long = "task", value_name = "NAME")]
    pub tasks: Vec<String>,

    /// Only events of this kind: sent, received, started, succeeded,
    /// failed, retried, revoked, expired, dead-lettered (task events) or
    /// online, heartbeat, offline (worker events); repeat for several.
    #[arg(long = "kind", value_name = "KIND")]
    pub kinds: Vec<String>,

    /// Show the worker events (online, heartbeat, offline); alone, only
    /// them.
    #[arg(long)]
    pub worker: bool,

    /// Print each event as one line of JSON, with the body's field names.
    #[arg(long)]
    pub json: bool,

    /// Stop after this many events.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,

    /// Stop after this long (`30s`, `5m`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
}

/// The routing keys to bind for these filters; an error names a bad
/// filter.
///
/// Task names may hold dots, so a task's key is matched as
/// `task.{kind}.{name}` with the kind one word (`*` for any).
pub fn bindings(args: &EventsArgs) -> Result<Vec<String>, String> {
    let mut task_kinds = Vec::new();
    let mut worker_kinds = Vec::new();
    for kind in &args.kinds {
        if let Some(k) = EventKind::parse(kind) {
            task_kinds.push(k.as_str());
        } else if let Some(k) = WorkerEventKind::parse(kind) {
            worker_kinds.push(k.as_str());
        } else {
            return Err(format!(
                "unknown event kind {kind:?}: one of {}, {}",
                EventKind::ALL.map(EventKind::as_str).join(", "),
                WorkerEventKind::ALL.map(WorkerEventKind::as_str).join(", ")
            ));
        }
    }
    for task in &args.tasks {
        celeriac_schema::topology::validate_name("task", task).map_err(|e| e.to_string())?;
    }
    if args.tasks.is_empty() && args.kinds.is_empty() && !args.worker {
        return Ok(vec!["#".to_owned()]);
    }
    let mut keys = Vec::new();
    if !args.tasks.is_empty() || !task_kinds.is_empty() {
        let kinds = if task_kinds.is_empty() {
            vec!["*"]
        } else {
            task_kinds
        };
        let names: Vec<&str> = if args.tasks.is_empty() {
            vec!["#"]
        } else {
            args.tasks.iter().map(String::as_str).collect()
        };
        for kind in &kinds {
            for name in &names {
                keys.push(format!("task.{kind}.{name}"));
            }
        }
    }
    if !worker_kinds.is_empty() {
        keys.extend(worker_kinds.iter().map(|k| format!("worker.{k}")));
    } else if args.worker {
        keys.push("worker.*".to_owned());
    }
    Ok(keys)
}

/// Tails the events.
pub async fn run(global: &Global, args: &EventsArgs) -> ExitCode {
    let keys = match bindings(args) {
        Ok(keys) => keys,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let topology = match Topology::new(global.namespace.clone()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let (connection, channel) = match open(global).await {
        Ok(open) => open,
        Err(code) => return code,
    };
    let consumer = match subscribe(&channel, &topology, &keys).await {
        Ok(consumer) => consumer,
        Err(e) => return fail(&e),
    };
    // On stderr, so that a script knows from when on nothing is missed.
    eprintln!(
        "listening on {} for {}",
        topology.events_exchange(),
        keys.join(" ")
    );
    let code = tail(consumer, args).await;
    let _ = connection.close(200, "done".into()).await;
    code
}

/// Connects to the broker (TLS for `amqps://`) and opens a channel.
pub async fn open(global: &Global) -> Result<(Connection, Channel), ExitCode> {
    match tokio::time::timeout(CONNECT_TIMEOUT, connect(global, "celeriac cli")).await {
        Ok(opened) => opened,
        Err(_) => {
            eprintln!(
                "error: no connection to the broker at {} within {CONNECT_TIMEOUT:?}",
                celeriac_producer::redact_url(&global.amqp_addr)
            );
            Err(ExitCode::from(1))
        }
    }
}

/// A connection to the broker named `name`, and a channel on it, with no
/// time limit of its own; on failure the error is printed and the exit
/// code returned.
pub async fn connect(global: &Global, name: &str) -> Result<(Connection, Channel), ExitCode> {
    let props = lapin::ConnectionProperties::default().with_connection_name(name.into());
    let connection =
        celeriac_producer::tls::connect(&global.amqp_addr, props, &global.tls.broker())
            .await
            .map_err(|e| fail(&e))?;
    match connection.create_channel().await {
        Ok(channel) => Ok((connection, channel)),
        Err(e) => {
            eprintln!("error: cannot open a channel: {e}");
            Err(ExitCode::from(1))
        }
    }
}

async fn subscribe(
    channel: &Channel,
    topology: &Topology,
    keys: &[String],
) -> celeriac_producer::Result<lapin::Consumer> {
    use celeriac_producer::Error;
    let amqp = |doing: &'static str| move |source| Error::Amqp { doing, source };
    let exchange = topology.events_exchange();
    // The exchange exists once any worker or producer started; declaring
    // it (as they do) lets a tail start first.
    celeriac_producer::topology::declare(
        channel,
        &[Declaration::Exchange {
            name: exchange.clone(),
            kind: ExchangeKind::Topic,
        }],
    )
    .await?;
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(amqp("declaring the events queue"))?;
    for key in keys {
        channel
            .queue_bind(
                queue.name().clone(),
                exchange.as_str().into(),
                key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(amqp("binding the events queue"))?;
    }
    channel
        .basic_consume(
            queue.name().clone(),
            "celeriac-events".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(amqp("consuming the events queue"))
}

async fn tail(mut consumer: lapin::Consumer, args: &EventsArgs) -> ExitCode {
    let deadline = args.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut shown: u64 = 0;
    if args.count == Some(0) {
        return ExitCode::SUCCESS;
    }
    loop {
        let next = tokio::select! {
            next = consumer.next() => next,
            _ = sleep_until(deadline) => {
                return if args.count.is_some() {
                    eprintln!("timed out after {shown} of {} events", args.count.unwrap_or(0));
                    ExitCode::from(COUNT_NOT_REACHED)
                } else {
                    ExitCode::SUCCESS
                };
            }
            _ = tokio::signal::ctrl_c() => return ExitCode::SUCCESS,
        };
        let delivery = match next {
            Some(Ok(delivery)) => delivery,
            Some(Err(e)) => {
                eprintln!("error: the events consumer failed: {e}");
                return ExitCode::from(1);
            }
            None => {
                eprintln!("error: the broker closed the events consumer");
                return ExitCode::from(1);
            }
        };
        let event = match decode_event(&delivery.data) {
            Ok(event) => event,
            Err(e) => {
                eprintln!(
                    "warning: an event under {} could not be read: {e}",
                    delivery.routing_key
                );
                continue;
            }
        };
        let line = if args.json {
            match serde_json::to_string(&event) {
                Ok(line) => line,
                Err(e) => {
                    eprintln!("warning: an event could not be written as JSON: {e}");
                    continue;
                }
            }
        } else {
            table_line(&event)
        };
        if !print_line(&line) {
            // The reader went away: it has what it wanted.
            return ExitCode::SUCCESS;
        }
        shown += 1;
        if args.count.is_some_and(|n| shown >= n) {
            return ExitCode::SUCCESS;
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Writes one line; `false` once stdout is closed.
fn print_line(line: &str) -> bool {
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => false,
        Err(e) => {
            eprintln!("error: cannot write to stdout: {e}");
            false
        }
    }
}

/// One event as a readable line: time, kind, what it is about, details.
pub fn table_line(event: &Event) -> String {
    match event {
        Event::Task(e) => task_line(e),
        Event::Worker(e) => worker_line(e),
    }
}

fn task_line(e: &TaskEvent) -> String {
    let mut line = format!(
        "{}  {:<13}  {}  {}  queue={} attempt={}",
        rfc3339(e.at),
        e.kind.as_str(),
        e.task,
        e.id,
        e.queue,
        e.attempt
    );
    let mut add = |name: &str, value: &dyn std::fmt::Display| {
        line.push_str(&format!(" {name}={value}"));
    };
    if let Some(worker) = &e.worker {
        add("worker", worker);
    }
    if e.key != e.id.to_string() {
        add("key", &e.key);
    }
    if let Some(first) = e.succeeded_as.filter(|first| *first != e.id) {
        add("succeeded_as", &first);
    }
    if let Some(ms) = e.runtime_ms {
        add("runtime", &format!("{ms}ms"));
    }
    if let Some(ms) = e.delay_ms {
        add("delay", &format!("{ms}ms"));
    }
    if let Some(ms) = e.waited_ms {
        let over = if e.wait_exceeded == Some(true) {
            " (over the threshold)"
        } else {
            ""
        };
        add("waited", &format!("{ms}ms{over}"));
    }
    if let Some(eta) = e.eta {
        add("eta", &rfc3339(eta));
    }
    if let Some(wf) = e.workflow_id {
        add("workflow", &wf);
    }
    if let Some(reason) = &e.reason {
        add("reason", reason);
    }
    if let Some(kind) = &e.error_type {
        add(
            "error",
            &format!("{kind}: {}", e.error.as_deref().unwrap_or("")),
        );
    }
    line
}

fn worker_line(e: &WorkerEvent) -> String {
    format!(
        "{}  {:<13}  worker {}  host={} pid={} queues={} in_flight={}/{} processed={} up_since={} version={}",
        rfc3339(e.at),
        e.kind.as_str(),
        e.worker,
        e.hostname,
        e.pid,
        e.queues.join(","),
        e.in_flight,
        e.concurrency,
        e.processed,
        rfc3339(e.started_at),
        e.version
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: EventsArgs,
    }

    fn keys(argv: &[&str]) -> Result<Vec<String>, String> {
        let cli = Cli::try_parse_from(std::iter::once("events").chain(argv.iter().copied()))
            .map_err(|e| e.to_string())?;
        bindings(&cli.args)
    }

    #[test]
    fn filters_become_bindings() {
        assert_eq!(keys(&[]).unwrap(), ["#"]);
        assert_eq!(keys(&["--worker"]).unwrap(), ["worker.*"]);
        assert_eq!(keys(&["--task", "a.b"]).unwrap(), ["task.*.a.b"]);
        assert_eq!(
            keys(&["--kind", "dead-lettered"]).unwrap(),
            ["task.dead-lettered.#"]
        );
        assert_eq!(
            keys(&["--kind", "failed", "--kind", "online", "--task", "x"]).unwrap(),
            ["task.failed.x", "worker.online"]
        );
        assert_eq!(
            keys(&["--task", "x", "--worker"]).unwrap(),
            ["task.*.x", "worker.*"]
        );
        assert!(keys(&["--kind", "exploded"])
            .unwrap_err()
            .contains("unknown event kind"));
        assert!(keys(&["--task", "has space"]).is_err());
    }

    #[test]
    fn a_task_line_shows_what_happened() {
        let mut e = TaskEvent::new(
            EventKind::Retried,
            celeriac_schema::TaskId::new(),
            "a.b",
            "q",
            1,
        );
        e.worker = Some("w1".into());
        e.delay_ms = Some(500);
        e.error_type = Some("Io".into());
        e.error = Some("reset".into());
        let line = table_line(&Event::Task(e));
        assert!(line.contains("retried"), "{line}");
        assert!(
            line.contains("worker=w1 delay=500ms error=Io: reset"),
            "{line}"
        );
    }

    #[test]
    fn a_started_line_shows_the_wait() {
        let mut e = TaskEvent::new(
            EventKind::Started,
            celeriac_schema::TaskId::new(),
            "a.b",
            "q",
            0,
        );
        e.waited_ms = Some(1_200);
        e.wait_exceeded = Some(true);
        let line = table_line(&Event::Task(e));
        assert!(
            line.contains("waited=1200ms (over the threshold)"),
            "{line}"
        );
    }
}
