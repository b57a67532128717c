//! Shared set-up for the dead-letter tool's tests: a namespace with its
//! topology, dead letters published the way a worker or the broker would
//! have left them, and a way to run the binary.

#![allow(dead_code)]

use std::process::{Command, Output};
use std::time::Duration;

use celeriac_producer::publish::{
    check_confirm, envelope_headers, envelope_properties, long_string, publish, Route,
    DEFAULT_CONFIRM_TIMEOUT,
};
use celeriac_schema::{encode, headers, Envelope};
use celeriac_tests::lapin::options::ConfirmSelectOptions;
use celeriac_tests::lapin::types::{AMQPValue, FieldArray, FieldTable};
use celeriac_tests::lapin::{BasicProperties, Channel, Connection};
use celeriac_tests::TestNamespace;

/// The second logical queue every test namespace has.
pub const EMAILS: &str = "emails";

/// A namespace with `default` and `emails` declared, and a confirming
/// channel.
pub struct Setup {
    pub ns: TestNamespace,
    pub conn: Connection,
    pub channel: Channel,
}

pub async fn setup(test: &str) -> Setup {
    let broker = celeriac_tests::broker().await;
    let ns = celeriac_tests::namespace(test).with_queue(EMAILS);
    let (conn, channel) = broker.channel().await;
    let topo = ns.topology();
    let mut decls = topo.shared_declarations();
    for q in ["default", EMAILS] {
        decls.extend(topo.queue_declarations(q).expect("valid queue"));
    }
    celeriac_producer::topology::declare(&channel, &decls)
        .await
        .expect("declare the topology");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");
    Setup { ns, conn, channel }
}

/// How to make one dead letter.
#[derive(Debug, Clone)]
pub struct Spec {
    pub queue: String,
    pub task: String,
    pub reason: String,
    pub error_type: String,
    pub failed_at: u64,
    pub attempt: u32,
    /// Dead-lettered by the broker (x-death, no celeriac failure headers).
    pub broker: bool,
    /// A body that does not decode.
    pub malformed: bool,
}

impl Spec {
    pub fn new(queue: &str, task: &str) -> Self {
        Spec {
            queue: queue.into(),
            task: task.into(),
            reason: "retries-exhausted".into(),
            error_type: "Timeout".into(),
            failed_at: celeriac_schema::now_ms(),
            attempt: 3,
            broker: false,
            malformed: false,
        }
    }

    pub fn reason(mut self, reason: &str, error_type: &str) -> Self {
        self.reason = reason.into();
        self.error_type = error_type.into();
        self
    }

    pub fn at(mut self, ms: u64) -> Self {
        self.failed_at = ms;
        self
    }

    pub fn broker(mut self) -> Self {
        self.broker = true;
        self
    }

    pub fn malformed(mut self) -> Self {
        self.malformed = true;
        self
    }
}

/// A dead letter as published: its task id and exact body.
#[derive(Debug, Clone)]
pub struct Published {
    pub task_id: String,
    pub body: Vec<u8>,
    pub idempotency_key: String,
}

/// The message a worker (or the broker) would have put in the DLQ.
pub fn build(ns: &str, spec: &Spec) -> (Published, BasicProperties) {
    let mut env = Envelope::new(spec.task.as_str(), rmpv::Value::from(42));
    env.attempt = spec.attempt;
    env.idempotency_key = Some(format!("key-{}", env.id));
    let mut table = envelope_headers(&env, &spec.queue);
    let body = if spec.malformed {
        let mut b = encode(&env).expect("encode");
        b.truncate(b.len() / 2);
        b
    } else {
        encode(&env).expect("encode")
    };
    if spec.broker {
        let mut death = FieldTable::default();
        death.insert("count".into(), AMQPValue::LongLongInt(1));
        death.insert("reason".into(), long_string("delivery_limit"));
        death.insert(
            "queue".into(),
            long_string(&format!("{ns}.q.{}", spec.queue)),
        );
        death.insert("time".into(), AMQPValue::Timestamp(spec.failed_at / 1000));
        death.insert("exchange".into(), long_string(&format!("{ns}.work")));
        death.insert(
            "routing-keys".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![long_string(&spec.queue)])),
        );
        table.insert(
            "x-death".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])),
        );
        table.insert("x-first-death-reason".into(), long_string("delivery_limit"));
        table.insert(
            "x-first-death-queue".into(),
            long_string(&format!("{ns}.q.{}", spec.queue)),
        );
    } else {
        table.insert(headers::REASON.into(), long_string(&spec.reason));
        table.insert(headers::ERROR_TYPE.into(), long_string(&spec.error_type));
        table.insert(headers::ERROR_MESSAGE.into(), long_string("it broke"));
        table.insert(
            headers::FAILED_AT.into(),
            AMQPValue::LongLongInt(spec.failed_at as i64),
        );
        table.insert(headers::WORKER.into(), long_string("test-worker"));
        table.insert(
            headers::ATTEMPTS.into(),
            AMQPValue::LongLongInt(i64::from(spec.attempt) + 1),
        );
    }
    let props = envelope_properties(&env, table);
    (
        Published {
            task_id: env.id.to_string(),
            body,
            idempotency_key: format!("key-{}", env.id),
        },
        props,
    )
}

/// Publishes dead letters into their DLQs through `{ns}.dlx`, confirmed,
/// pipelined.
pub async fn dead_letters(s: &Setup, specs: &[Spec]) -> Vec<Published> {
    let mut out = Vec::with_capacity(specs.len());
    for chunk in specs.chunks(1000) {
        let mut pending = Vec::with_capacity(chunk.len());
        for spec in chunk {
            let (published, props) = build(&s.ns, spec);
            let route = Route {
                exchange: s.ns.topology().dead_letter_exchange(),
                routing_key: spec.queue.clone(),
            };
            let confirm = publish(&s.channel, &route, &published.body, props)
                .await
                .expect("publish a dead letter");
            pending.push((confirm, published.task_id.clone(), route));
            out.push(published);
        }
        for (confirm, id, route) in pending {
            check_confirm(confirm, &id, &route, DEFAULT_CONFIRM_TIMEOUT)
                .await
                .expect("dead letter confirmed");
        }
    }
    out
}

/// The result of one run of the binary.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Stdout parsed as JSON Lines.
    pub fn json(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
            .collect()
    }

    /// The JSON lines that are not a summary.
    pub fn records(&self) -> Vec<serde_json::Value> {
        self.json()
            .into_iter()
            .filter(|v| v.get("summary").is_none())
            .collect()
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_celeriac-dlq")
}

/// Runs `celeriac-dlq --namespace {ns} {args}` against the test broker.
pub async fn dlq(ns: &str, args: &[&str]) -> Run {
    let url = celeriac_tests::broker().await.url.clone();
    let ns = ns.to_owned();
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let output: Output = tokio::task::spawn_blocking(move || {
        Command::new(bin())
            .env("AMQP_ADDR", url)
            .env_remove("CELERIAC_MANAGEMENT_URL")
            .args(["--namespace", &ns])
            .args(&args)
            .output()
            .expect("run celeriac-dlq")
    })
    .await
    .expect("join");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Messages ready in a queue.
pub async fn len(s: &Setup, queue: &str) -> u32 {
    celeriac_tests::queue_len(&s.channel, queue).await
}

/// The broker names of the two DLQs and work queues.
pub fn dlq_name(s: &Setup, queue: &str) -> String {
    s.ns.topology().dead_letter_queue(queue)
}

pub fn work_name(s: &Setup, queue: &str) -> String {
    s.ns.topology().work_queue(queue)
}

/// Message ids in a queue, in order, without removing anything (basic.get,
/// then a nack of all of them).
pub async fn peek_ids(s: &Setup, queue: &str) -> Vec<String> {
    use celeriac_tests::lapin::options::{BasicGetOptions, BasicNackOptions};
    let channel = s.conn.create_channel().await.expect("channel");
    let mut ids = Vec::new();
    let mut last = None;
    while let Some(msg) = channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: false })
        .await
        .expect("basic.get")
    {
        last = Some(msg.delivery.delivery_tag);
        ids.push(
            msg.delivery
                .properties
                .message_id()
                .as_ref()
                .map(|m| m.as_str().to_owned())
                .unwrap_or_default(),
        );
    }
    if let Some(tag) = last {
        channel
            .basic_nack(
                tag,
                BasicNackOptions {
                    multiple: true,
                    requeue: true,
                },
            )
            .await
            .expect("nack");
    }
    let _ = channel.close(200, "peeked".into()).await;
    ids
}

pub fn wait(d: Duration) -> impl std::future::Future<Output = ()> {
    tokio::time::sleep(d)
}

/// Asserts that a queue settles at `expected` ready messages within 10 s
/// (messages a finished run returned to a quorum queue become ready a
/// moment after the run exits).
pub async fn expect_len(s: &Setup, queue: &str, expected: u32) {
    let ok = celeriac_tests::eventually(Duration::from_secs(10), || async {
        len(s, queue).await == expected
    })
    .await;
    assert!(
        ok,
        "{queue} holds {} messages, expected {expected}",
        len(s, queue).await
    );
}
