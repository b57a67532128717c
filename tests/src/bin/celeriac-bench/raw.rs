//! The raw lapin loop: a publisher with publisher confirms and a consumer
//! with manual acks on a durable quorum queue, with each ingredient of
//! celeriac's way of using the broker switchable ([`RawConfig`]), so that
//! the like-for-like loop, the ablation variants and the best loop are the
//! same code.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use celeriac_producer::publish;
use celeriac_producer::topology::field_table;
use celeriac_schema::{encode, Envelope, Task, Topology};
use celeriac_tests::latency::Histogram;
use celeriac_tests::test_tasks::{unix_micros, BenchNoop, NoopInput};
use futures_util::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, Consumer, ExchangeKind, PublisherConfirm,
};
use serde::Serialize;

use crate::broker::{cleanup, connect, namespace};
use crate::machine::{CpuSeconds, CpuSnapshot, Servers};
use crate::report::{round, RawFigures};
use crate::Args;

/// Confirms in flight at once, as in `Producer::send_batch`.
pub const CONFIRM_WINDOW: usize = 2048;
/// The body of the "tiny body" variant, in bytes.
const TINY_BODY: usize = 16;

/// Which of a celeriac work queue's arguments the queue is declared with
/// (always `x-queue-type quorum`, always durable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueArgs {
    /// All of them: delivery limit, at-least-once dead-lettering,
    /// reject-publish overflow.
    Celeriac,
    /// Only the delivery limit.
    DeliveryLimit,
    /// Only at-least-once dead-lettering with reject-publish overflow (the
    /// one needs the other).
    DeadLettering,
    /// None: a plain durable quorum queue.
    Plain,
}

/// The message headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Headers {
    /// celeriac's (`envelope_headers`).
    Celeriac,
    /// No header table (the other properties stay).
    None,
}

/// The message body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// celeriac's encoded envelope of a `bench.noop` task, built for every
    /// message.
    Envelope,
    /// As many zero bytes as the envelope has.
    Zeros,
    /// [`TINY_BODY`] zero bytes.
    Tiny,
}

/// How the consumer acks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// One `multiple=true` ack per burst of deliveries that arrived
    /// together.
    Multiple,
    /// One ack per delivery.
    PerMessage,
}

/// How the publisher hands its publishes to the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writes {
    /// Each publish is queued on the channel and the next follows at once;
    /// the write is awaited with its confirm (what `send_batch` does).
    Pipelined,
    /// Each publish waits until the connection wrote it before the next.
    Awaited,
}

/// One way to run the raw loop. Every one keeps a durable quorum queue,
/// persistent messages, publisher confirms and manual acks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawConfig {
    pub queue: QueueArgs,
    pub mandatory: bool,
    pub headers: Headers,
    pub body: Body,
    pub window: usize,
    pub acks: Acks,
    pub writes: Writes,
}

impl RawConfig {
    /// What celeriac does: the baseline of the project's goal.
    pub const LIKE_FOR_LIKE: RawConfig = RawConfig {
        queue: QueueArgs::Celeriac,
        mandatory: true,
        headers: Headers::Celeriac,
        body: Body::Envelope,
        window: CONFIRM_WINDOW,
        acks: Acks::Multiple,
        writes: Writes::Pipelined,
    };

    /// The fastest loop with the same safety and the same body: no queue
    /// extras, no mandatory flag, no headers, a wider confirm window,
    /// batched acks.
    pub const BEST: RawConfig = RawConfig {
        queue: QueueArgs::Plain,
        mandatory: false,
        headers: Headers::None,
        body: Body::Envelope,
        window: 8192,
        acks: Acks::Multiple,
        writes: Writes::Pipelined,
    };

    /// What the report says about this loop.
    pub fn figures(&self, envelope_bytes: usize) -> RawConfigFigures {
        RawConfigFigures {
            queue_arguments: match self.queue {
                QueueArgs::Celeriac => {
                    "quorum, delivery limit, at-least-once dead-lettering, reject-publish"
                }
                QueueArgs::DeliveryLimit => "quorum, delivery limit",
                QueueArgs::DeadLettering => "quorum, at-least-once dead-lettering, reject-publish",
                QueueArgs::Plain => "quorum",
            },
            mandatory: self.mandatory,
            headers: match self.headers {
                Headers::Celeriac => "celeriac",
                Headers::None => "none",
            },
            body: match self.body {
                Body::Envelope => "celeriac envelope",
                Body::Zeros => "zeros, the envelope's length",
                Body::Tiny => "tiny",
            },
            body_bytes: match self.body {
                Body::Envelope | Body::Zeros => envelope_bytes,
                Body::Tiny => TINY_BODY,
            },
            confirm_window: self.window,
            acks: match self.acks {
                Acks::Multiple => "multiple=true per burst",
                Acks::PerMessage => "one per message",
            },
            writes: match self.writes {
                Writes::Pipelined => "pipelined",
                Writes::Awaited => "each awaited",
            },
        }
    }

    fn keeps_argument(&self, name: &str) -> bool {
        let dead_lettering = name.starts_with("x-dead-letter") || name == "x-overflow";
        match self.queue {
            QueueArgs::Celeriac => true,
            QueueArgs::DeliveryLimit => name == "x-queue-type" || name == "x-delivery-limit",
            QueueArgs::DeadLettering => name == "x-queue-type" || dead_lettering,
            QueueArgs::Plain => name == "x-queue-type",
        }
    }
}

/// A raw loop's settings, as reported.
#[derive(Debug, Clone, Serialize)]
pub struct RawConfigFigures {
    pub queue_arguments: &'static str,
    pub mandatory: bool,
    pub headers: &'static str,
    pub body: &'static str,
    pub body_bytes: usize,
    pub confirm_window: usize,
    pub acks: &'static str,
    pub writes: &'static str,
}

pub struct RawResult {
    pub tasks: u64,
    pub seconds: f64,
    pub publish_seconds: f64,
    pub acks: u64,
    pub cpu: CpuSeconds,
}

impl RawResult {
    pub fn msgs_per_sec(&self) -> f64 {
        self.tasks as f64 / self.seconds
    }

    pub fn figures(&self) -> RawFigures {
        RawFigures {
            msgs_per_sec: round(self.msgs_per_sec(), 1),
            seconds: round(self.seconds, 3),
            publish_seconds: Some(round(self.publish_seconds, 3)),
            acks_sent: Some(self.acks),
            cpu_seconds: Some(self.cpu),
        }
    }
}

/// The envelope `Producer::send_batch` builds for one `bench.noop` task.
pub fn noop_envelope() -> Result<Envelope> {
    let input = celeriac_schema::to_value(&NoopInput { t: unix_micros() })?;
    Ok(Envelope::new(BenchNoop::NAME, input))
}

/// Measures one raw loop in a fresh namespace (deleted afterwards), then
/// waits `--settle`. `label` names it in the progress lines.
pub async fn raw_phase(
    args: &Args,
    servers: Servers,
    run: u64,
    config: &RawConfig,
    label: &str,
) -> Result<RawResult> {
    let topology = Topology::new(namespace("raw"))?;
    eprintln!(
        "run {run}/{}: {label} in {}",
        args.runs,
        topology.namespace()
    );
    let result = tokio::time::timeout(args.timeout, raw_measure(args, &topology, servers, config))
        .await
        .map_err(|_| anyhow!("{label}: not done within {:?}", args.timeout))
        .and_then(|r| r);
    cleanup_raw(args, &topology).await;
    let result = result.with_context(|| label.to_owned())?;
    eprintln!(
        "run {run}/{}: {label}: {} msgs in {:.3} s = {:.0} msgs/s (published in {:.3} s, {} acks)",
        args.runs,
        result.tasks,
        result.seconds,
        result.msgs_per_sec(),
        result.publish_seconds,
        result.acks
    );
    tokio::time::sleep(args.settle).await;
    Ok(result)
}

/// Deletes a raw loop's queue and exchange.
pub async fn cleanup_raw(args: &Args, topology: &Topology) {
    cleanup(
        &args.amqp_addr,
        &args.tls.broker(),
        &[topology.work_queue("raw")],
        &[topology.work_exchange()],
    )
    .await;
}

/// A raw loop's two connections: the consumer's (consuming since before
/// the first publish) and the publisher's (in confirm mode).
pub struct RawLoop {
    pub consuming: Connection,
    pub publishing: Connection,
    pub channel: Channel,
    consumer: Option<Consumer>,
    pub publisher: Channel,
    pub exchange: String,
}

/// A publish handed to the channel whose write may still be pending; it
/// resolves to the confirm.
pub type Queued = Pin<Box<dyn Future<Output = lapin::Result<PublisherConfirm>> + Send>>;

impl RawLoop {
    /// Publishes one message: with [`Writes::Pipelined`] returns as soon as
    /// the channel holds it (lapin takes the delivery tag and queues the
    /// frames on the first poll), with [`Writes::Awaited`] once the
    /// connection wrote it.
    pub async fn publish(
        &self,
        writes: Writes,
        options: BasicPublishOptions,
        body: Vec<u8>,
        props: BasicProperties,
    ) -> Result<Queued> {
        let channel = self.publisher.clone();
        let exchange = self.exchange.clone();
        let mut publish: Queued = Box::pin(async move {
            channel
                .basic_publish(
                    exchange.as_str().into(),
                    "raw".into(),
                    options,
                    &body,
                    props,
                )
                .await
        });
        match writes {
            Writes::Pipelined => match futures_util::poll!(publish.as_mut()) {
                Poll::Pending => Ok(publish),
                Poll::Ready(done) => Ok(Box::pin(std::future::ready(Ok(done?)))),
            },
            Writes::Awaited => {
                let confirm = publish.await?;
                Ok(Box::pin(std::future::ready(Ok(confirm))))
            }
        }
    }

    /// Declares the exchange and the queue as `config` says, starts
    /// consuming and puts the publisher in confirm mode.
    pub async fn open(args: &Args, topology: &Topology, config: &RawConfig) -> Result<RawLoop> {
        let queue = topology.work_queue("raw");
        let exchange = topology.work_exchange();
        let consuming = connect(&args.amqp_addr, &args.tls.broker(), "raw consumer").await?;
        let publishing = connect(&args.amqp_addr, &args.tls.broker(), "raw publisher").await?;

        let channel = consuming.create_channel().await?;
        channel
            .exchange_declare(
                exchange.as_str().into(),
                ExchangeKind::Direct,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        let arguments: Vec<_> = topology
            .work_queue_arguments("raw")
            .into_iter()
            .filter(|(name, _)| config.keeps_argument(name))
            .collect();
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                field_table(&arguments),
            )
            .await?;
        channel
            .queue_bind(
                queue.as_str().into(),
                exchange.as_str().into(),
                "raw".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        channel
            .basic_qos(args.prefetch(), BasicQosOptions { global: false })
            .await?;
        let consumer = channel
            .basic_consume(
                queue.as_str().into(),
                "celeriac-bench-raw".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;

        let publisher = publishing.create_channel().await?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(RawLoop {
            consuming,
            publishing,
            channel,
            consumer: Some(consumer),
            publisher,
            exchange,
        })
    }

    /// The consumer (once).
    pub fn take_consumer(&mut self) -> Result<Consumer> {
        self.consumer
            .take()
            .ok_or_else(|| anyhow!("the raw consumer was taken already"))
    }

    pub async fn close(self) {
        let _ = self.publishing.close(200, "done".into()).await;
        let _ = self.consuming.close(200, "done".into()).await;
    }
}

/// Builds one message's body and properties as `config` says.
pub struct Messages {
    config: RawConfig,
    zeros: Vec<u8>,
}

impl Messages {
    pub fn new(config: &RawConfig) -> Result<Messages> {
        let len = match config.body {
            Body::Envelope => 0,
            Body::Zeros => encode(&noop_envelope()?)?.len(),
            Body::Tiny => TINY_BODY,
        };
        Ok(Messages {
            config: *config,
            zeros: vec![0; len],
        })
    }

    /// The next message: a fresh envelope (its input stamped now) and what
    /// goes on the wire for it.
    pub fn next(&self) -> Result<(Vec<u8>, BasicProperties)> {
        let env = noop_envelope()?;
        let body = match self.config.body {
            Body::Envelope => encode(&env)?,
            Body::Zeros | Body::Tiny => self.zeros.clone(),
        };
        let props = match self.config.headers {
            Headers::Celeriac => {
                publish::envelope_properties(&env, publish::envelope_headers(&env, "raw"))
            }
            Headers::None => BasicProperties::default()
                .with_message_id(env.id.to_string().into())
                .with_content_type(celeriac_schema::CONTENT_TYPE.into())
                .with_delivery_mode(2)
                .with_timestamp(env.created_at / 1000)
                .with_type(env.task.as_str().into()),
        };
        Ok((body, props))
    }

    pub fn options(&self) -> BasicPublishOptions {
        BasicPublishOptions {
            mandatory: self.config.mandatory,
            ..BasicPublishOptions::default()
        }
    }
}

async fn raw_measure(
    args: &Args,
    topology: &Topology,
    servers: Servers,
    config: &RawConfig,
) -> Result<RawResult> {
    let n = args.tasks;
    let mut raw = RawLoop::open(args, topology, config).await?;
    let messages = Messages::new(config)?;
    let options = messages.options();
    let window = config.window.max(1);

    let cpu_before = CpuSnapshot::take(servers, None);
    let start = Instant::now();
    let consumed = tokio::spawn(raw_consume(
        raw.channel.clone(),
        raw.take_consumer()?,
        n,
        config.acks,
        None,
    ));
    let mut pending = VecDeque::with_capacity(window);
    for _ in 0..n {
        let (body, props) = messages.next()?;
        pending.push_back(raw.publish(config.writes, options, body, props).await?);
        if pending.len() >= window {
            if let Some(queued) = pending.pop_front() {
                check_confirm(queued.await?.await?)?;
            }
        }
    }
    while let Some(queued) = pending.pop_front() {
        check_confirm(queued.await?.await?)?;
    }
    let published = start.elapsed();
    let (end, acks) = consumed.await.context("the raw consumer panicked")??;
    let cpu = CpuSnapshot::take(servers, None).since(&cpu_before);
    raw.close().await;
    Ok(RawResult {
        tasks: n,
        seconds: end.duration_since(start).as_secs_f64(),
        publish_seconds: published.as_secs_f64(),
        acks,
        cpu,
    })
}

pub fn check_confirm(confirmation: Confirmation) -> Result<()> {
    match confirmation {
        Confirmation::Ack(None) => Ok(()),
        other => bail!("the broker did not take a message: {other:?}"),
    }
}

/// Consumes `n` deliveries, acking as `acks` says (with `Multiple`, each
/// burst that arrived together with one `multiple` ack); returns when the
/// last ack is written and how many acks were sent. With `latency`, each
/// body is decoded and the time since its input's `t` recorded.
pub async fn raw_consume(
    channel: Channel,
    mut consumer: Consumer,
    n: u64,
    acks: Acks,
    latency: Option<Arc<Histogram>>,
) -> Result<(Instant, u64)> {
    let record = |data: &[u8]| -> Result<()> {
        if let Some(histogram) = &latency {
            let now = unix_micros();
            let env = celeriac_schema::decode(data)?;
            let input: NoopInput = celeriac_schema::from_value(&env.input, "input")?;
            histogram.record(now.saturating_sub(input.t));
        }
        Ok(())
    };
    let mut received = 0u64;
    let mut sent = 0u64;
    while received < n {
        let delivery = consumer
            .next()
            .await
            .ok_or_else(|| anyhow!("the broker cancelled the raw consumer"))??;
        record(&delivery.data)?;
        let mut last = delivery.delivery_tag;
        received += 1;
        if acks == Acks::PerMessage {
            channel
                .basic_ack(last, BasicAckOptions { multiple: false })
                .await?;
            sent += 1;
            continue;
        }
        while received < n {
            match consumer.next().now_or_never() {
                Some(Some(Ok(delivery))) => {
                    record(&delivery.data)?;
                    last = delivery.delivery_tag;
                    received += 1;
                }
                Some(Some(Err(e))) => return Err(e.into()),
                Some(None) => bail!("the broker cancelled the raw consumer"),
                None => break,
            }
        }
        channel
            .basic_ack(last, BasicAckOptions { multiple: true })
            .await?;
        sent += 1;
    }
    Ok((Instant::now(), sent))
}
