#![allow(clippy::unwrap_used)]
//! Golden vectors of the event bodies (`golden/events/`, SPEC.md section
//! 17): each `NAME.msgpack` is what the Rust types encode, byte for byte,
//! and decodes back to them; `NAME.json` spells out its routing key and
//! every field.
//!
//! The vectors were written once from the types below
//! (`CELERIAC_WRITE_GOLDEN=1 cargo test -p celeriac-schema --test
//! event_vectors`) and are checked in: a change to the event encoding
//! fails here until the vectors (and the spec) are changed on purpose.

use std::path::{Path, PathBuf};

use celeriac_schema::events::{
    decode_event, Event, EventKind, TaskEvent, WorkerEvent, WorkerEventKind,
};
use celeriac_schema::TaskId;
use serde_json::json;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("golden")
        .join("events")
}

fn id(s: &str) -> TaskId {
    s.parse().unwrap()
}

const ID: &str = "01890a5d-ac96-774b-bcce-b302099a8057";
const FIRST: &str = "01890a5d-ac96-774b-bcce-b302099a0001";
const WORKFLOW: &str = "01890a5d-ac96-774b-bcce-b302099a00ff";
const AT: u64 = 1_764_079_200_123;

fn task(kind: EventKind, worker: bool) -> TaskEvent {
    let mut e = TaskEvent::new(kind, id(ID), "images.resize", "default", 0);
    e.at = AT;
    e.key = "order-42".into();
    if worker {
        e.worker = Some("host-a-1234".into());
    }
    e
}

/// (name, description, event)
fn vectors() -> Vec<(&'static str, &'static str, Event)> {
    let mut sent = task(EventKind::Sent, false);
    sent.eta = Some(AT + 10_000);
    sent.workflow_id = Some(id(WORKFLOW));
    let mut succeeded = task(EventKind::Succeeded, true);
    succeeded.succeeded_as = Some(id(ID));
    succeeded.runtime_ms = Some(12);
    let mut duplicate = task(EventKind::Succeeded, true);
    duplicate.succeeded_as = Some(id(FIRST));
    let mut failed = task(EventKind::Failed, true);
    failed.runtime_ms = Some(40);
    failed.error_type = Some("Io".into());
    failed.error = Some("connection reset".into());
    let mut retried = task(EventKind::Retried, true);
    retried.error_type = Some("Io".into());
    retried.error = Some("connection reset".into());
    retried.delay_ms = Some(1_500);
    let mut dead = task(EventKind::DeadLettered, true);
    dead.attempt = 3;
    dead.error_type = Some("Io".into());
    dead.error = Some("connection reset".into());
    dead.reason = Some("retries-exhausted".into());
    let mut revoked = task(EventKind::Revoked, true);
    revoked.reason = Some("purged".into());
    let heartbeat = WorkerEvent {
        kind: WorkerEventKind::Heartbeat,
        worker: "host-a-1234".into(),
        hostname: "host-a".into(),
        pid: 1234,
        queues: vec!["default".into(), "images".into()],
        concurrency: 16,
        in_flight: 3,
        processed: 1_200,
        started_at: AT - 60_000,
        at: AT,
        version: "0.1.0".into(),
        heartbeat_ms: 2_000,
    };
    let mut online = heartbeat.clone();
    online.kind = WorkerEventKind::Online;
    online.in_flight = 0;
    online.processed = 0;
    online.at = online.started_at;
    let mut offline = heartbeat.clone();
    offline.kind = WorkerEventKind::Offline;
    offline.in_flight = 0;
    offline.processed = 1_250;
    offline.at = AT + 1_000;
    let mut revoked_by_operator = task(EventKind::Revoked, true);
    revoked_by_operator.reason = Some("revoked".into());
    vec![
        (
            "task_sent",
            "a producer sent a task with an ETA, as a workflow node",
            Event::Task(sent),
        ),
        (
            "task_received",
            "a worker received the task",
            Event::Task(task(EventKind::Received, true)),
        ),
        (
            "task_started",
            "the handler started",
            Event::Task(task(EventKind::Started, true)),
        ),
        (
            "task_succeeded",
            "the handler returned after 12 ms",
            Event::Task(succeeded),
        ),
        (
            "task_succeeded_duplicate",
            "a duplicate whose key succeeded as another task: not run, no runtime",
            Event::Task(duplicate),
        ),
        ("task_failed", "a run failed", Event::Task(failed)),
        (
            "task_retried",
            "the failed run is retried after 1.5 s",
            Event::Task(retried),
        ),
        (
            "task_dead_lettered",
            "the fourth run failed and the retries are exhausted",
            Event::Task(dead),
        ),
        (
            "task_revoked",
            "revoked by an operator: acked without running, or its run stopped",
            Event::Task(revoked_by_operator),
        ),
        (
            "task_revoked_purged",
            "dropped without running: its queue was purged after it was sent",
            Event::Task(revoked),
        ),
        (
            "task_expired",
            "dropped without running: past its expiry",
            Event::Task(task(EventKind::Expired, true)),
        ),
        ("worker_online", "a worker started", Event::Worker(online)),
        (
            "worker_offline",
            "a worker stopped after a graceful shutdown",
            Event::Worker(offline),
        ),
        (
            "worker_heartbeat",
            "a worker is alive",
            Event::Worker(heartbeat),
        ),
    ]
}

fn encode(event: &Event) -> Vec<u8> {
    match event {
        Event::Task(e) => e.encode().unwrap(),
        Event::Worker(e) => e.encode().unwrap(),
    }
}

fn routing_key(event: &Event) -> String {
    match event {
        Event::Task(e) => e.routing_key(),
        Event::Worker(e) => e.routing_key(),
    }
}

#[test]
fn event_bodies_match_their_golden_vectors() {
    let write = std::env::var_os("CELERIAC_WRITE_GOLDEN").is_some();
    if write {
        std::fs::create_dir_all(dir()).unwrap();
    }
    let mut names = Vec::new();
    for (name, description, event) in vectors() {
        let bytes = encode(&event);
        let spelled = json!({
            "description": description,
            "routing_key": routing_key(&event),
            "event": serde_json::to_value(&event).unwrap(),
        });
        let (bin, text) = (
            dir().join(format!("{name}.msgpack")),
            dir().join(format!("{name}.json")),
        );
        if write {
            std::fs::write(&bin, &bytes).unwrap();
            std::fs::write(&text, format!("{:#}\n", spelled)).unwrap();
        }
        let golden = std::fs::read(&bin).unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
        assert_eq!(bytes, golden, "{name}: the encoding changed");
        assert_eq!(
            decode_event(&golden).unwrap(),
            event,
            "{name}: decodes back"
        );
        let expected: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&text).unwrap()).unwrap();
        assert_eq!(expected, spelled, "{name}.json");
        // The JSON is what the body holds, as an independent reader sees it.
        let raw: serde_json::Value = rmp_serde::from_slice(&golden).unwrap();
        assert_eq!(raw, expected["event"], "{name}: the body's fields");
        names.push(format!("{name}.msgpack"));
    }
    // No vector without its source here.
    let mut on_disk: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".msgpack"))
        .collect();
    on_disk.sort();
    names.sort();
    assert_eq!(on_disk, names);
}
