//! The state store end to end: typed results, task states, enqueue and
//! execution idempotency, run leases, and a worker whose store goes down.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use celeriac_consumer::{Registry, TaskContext, TaskError};
use celeriac_producer::{Error, Producer, SendOptions};
use celeriac_schema::builtin::{Echo, Fail, FailInput, Ping, Sleep, SleepInput};
use celeriac_schema::store::{
    Begin, Claim, MemoryStore, NodeProgress, Ready, Store, StoreSettings, TaskRecord, Update,
    WorkflowState, CLAIM_STALE_AFTER,
};
use celeriac_schema::workflow::{Node, Workflow};
use celeriac_schema::{Backoff, RetryPolicy, Task, TaskId, TaskState};
use celeriac_tests::{
    broker, celeriac_cli, eventually, namespace, queue_len, redis, redis_store,
    HOW_TO_PROVIDE_REDIS,
};
use lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;

use crate::support::{builtins, InProcessWorker};

/// A plain connection to the tests' Redis, to look at or tamper with what
/// the store keeps.
async fn raw_redis() -> celeriac_tests::redis_client::aio::MultiplexedConnection {
    celeriac_tests::redis_client_for(&redis().await.url)
        .unwrap_or_else(|e| panic!("{e}; {HOW_TO_PROVIDE_REDIS}"))
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("{e}; {HOW_TO_PROVIDE_REDIS}"))
}

async fn producer_with(namespace: &str, store: Arc<dyn Store>) -> Producer {
    Producer::builder(&broker().await.url)
        .namespace(namespace)
        .store(store)
        .connect()
        .await
        .unwrap()
}

fn quick_retry(max_retries: u32) -> RetryPolicy {
    RetryPolicy {
        max_retries,
        backoff: Backoff {
            initial_ms: 100,
            multiplier: 1.0,
            max_ms: 100,
            jitter: 0.0,
        },
    }
}

fn short_leases() -> StoreSettings {
    StoreSettings {
        lease_ttl: Duration::from_secs(1),
        ..StoreSettings::default()
    }
}

/// The rules of the store, checked on Redis and on the in-memory store
/// alike.
async fn check_store_rules(store: &dyn Store) {
    let id = TaskId::new();
    let key = format!("key-{id}");
    let update = |state| Update::new(id, "t.rules", "default", state, 0);

    // Producer states never override worker states.
    assert_eq!(
        store
            .begin(&key, "a", &update(TaskState::Started))
            .await
            .unwrap(),
        Begin::Run
    );
    store.record(&[update(TaskState::Queued)]).await.unwrap();
    let record = store.get(id).await.unwrap().unwrap();
    assert_eq!(record.state, TaskState::Started);
    assert!(record.queued_at.is_some() && record.started_at.is_some());
    assert_eq!(record.runs, 1);

    // A second run waits for the lease; only the holder renews it.
    match store
        .begin(&key, "b", &update(TaskState::Started))
        .await
        .unwrap()
    {
        Begin::Busy { retry_after } => assert!(retry_after <= Duration::from_secs(1)),
        other => panic!("a held lease must make the second run wait, got {other:?}"),
    }
    assert!(store.renew(&key, "a").await.unwrap());
    assert!(!store.renew(&key, "b").await.unwrap());

    // A retry releases the lease; success marks the key.
    let mut retrying = update(TaskState::Retrying);
    retrying.error = Some(celeriac_schema::store::TaskFailure {
        error_type: "Io".into(),
        message: "reset".into(),
    });
    store.finish(&key, "a", &retrying).await.unwrap();
    let mut started = update(TaskState::Started);
    started.attempt = 1;
    assert_eq!(store.begin(&key, "b", &started).await.unwrap(), Begin::Run);
    let mut done = update(TaskState::Succeeded);
    done.attempt = 1;
    done.result = Some(celeriac_schema::store::encode_result(&42u32).unwrap());
    store.finish(&key, "b", &done).await.unwrap();
    assert_eq!(
        store.begin(&key, "c", &started).await.unwrap(),
        Begin::Succeeded { task_id: id }
    );
    let record = store.get(id).await.unwrap().unwrap();
    assert_eq!(record.state, TaskState::Succeeded);
    assert_eq!(record.runs, 2);
    assert_eq!(record.attempt, 1);
    assert_eq!(record.error, None, "success clears the earlier error");
    assert_eq!(record.decode_result::<u32>().unwrap(), Some(42));
    let states: Vec<TaskState> = record.history.iter().map(|t| t.state).collect();
    assert_eq!(
        states,
        [
            TaskState::Started,
            TaskState::Retrying,
            TaskState::Started,
            TaskState::Succeeded
        ],
        "a late queued only records its time"
    );
    assert_eq!(
        record.history[1].error.as_ref().map(|e| e.message.as_str()),
        Some("reset")
    );

    // A task sent without a key: `queued` alone is a whole record; after
    // `created` (a workflow's root) it moves the state on; sent again, the
    // first send's time stays.
    let sent = TaskId::new();
    let mut queued = Update::new(sent, "t.rules", "q-plain", TaskState::Queued, 0);
    queued.workflow_id = Some("wf-1".into());
    store.record(&[queued.clone()]).await.unwrap();
    let record = store.get(sent).await.unwrap().unwrap();
    assert_eq!(
        (record.state, record.task.as_str(), record.queue.as_str()),
        (TaskState::Queued, "t.rules", "q-plain")
    );
    assert_eq!(record.workflow_id.as_deref(), Some("wf-1"));
    assert_eq!(record.queued_at, Some(queued.at_ms));
    let mut again = queued.clone();
    again.at_ms += 50;
    store.record(&[again]).await.unwrap();
    let record = store.get(sent).await.unwrap().unwrap();
    assert_eq!(record.queued_at, Some(queued.at_ms));
    let root = TaskId::new();
    let mut created = Update::new(root, "t.rules", "default", TaskState::Created, 0);
    created.workflow_id = Some("wf-2".into());
    let mut queued = created.clone();
    queued.state = TaskState::Queued;
    queued.at_ms += 3;
    store.record(&[created.clone()]).await.unwrap();
    store.record(&[queued.clone()]).await.unwrap();
    let record = store.get(root).await.unwrap().unwrap();
    assert_eq!(record.state, TaskState::Queued, "queued follows created");
    assert_eq!(
        (record.created_at, record.queued_at),
        (Some(created.at_ms), Some(queued.at_ms))
    );
    let states: Vec<TaskState> = record.history.iter().map(|t| t.state).collect();
    assert_eq!(states, [TaskState::Created, TaskState::Queued]);

    // A run too short to have written `started` records it with its
    // outcome: the lease takes nothing else, the outcome writes both.
    let short = TaskId::new();
    let short_key = format!("key-{short}");
    assert_eq!(store.lease(&short_key, "s").await.unwrap(), Begin::Run);
    assert_eq!(
        store.get(short).await.unwrap(),
        None,
        "a lease records nothing"
    );
    let mut done = Update::new(short, "t.rules", "default", TaskState::Succeeded, 0);
    let started_at = done.at_ms - 7;
    done.started_at_ms = Some(started_at);
    store.finish(&short_key, "s", &done).await.unwrap();
    let record = store.get(short).await.unwrap().unwrap();
    assert_eq!(record.state, TaskState::Succeeded);
    assert_eq!(record.runs, 1);
    assert_eq!(record.started_at, Some(started_at));
    assert_eq!(record.finished_at, Some(done.at_ms));
    let history: Vec<(TaskState, u64)> =
        record.history.iter().map(|t| (t.state, t.at_ms)).collect();
    assert_eq!(
        history,
        [
            (TaskState::Started, started_at),
            (TaskState::Succeeded, done.at_ms)
        ]
    );
    // A long run writes `started` on its own while it runs.
    let long = TaskId::new();
    let long_key = format!("key-{long}");
    assert_eq!(store.lease(&long_key, "l").await.unwrap(), Begin::Run);
    store
        .started(&Update::new(
            long,
            "t.rules",
            "default",
            TaskState::Started,
            0,
        ))
        .await
        .unwrap();
    let record = store.get(long).await.unwrap().unwrap();
    assert_eq!((record.state, record.runs), (TaskState::Started, 1));

    // Enqueue claims: the first id wins; a stale `created` is republished;
    // an unclaimed key can be claimed again.
    let first = TaskId::new();
    let second = TaskId::new();
    let ekey = format!("enqueue-{first}");
    let created = |id: TaskId, at_ms: u64| {
        let mut u = Update::new(id, "t.rules", "default", TaskState::Created, 0);
        u.at_ms = at_ms;
        u
    };
    let now = celeriac_schema::now_ms();
    let old = now - CLAIM_STALE_AFTER.as_millis() as u64 - 1_000;
    assert_eq!(
        store
            .claim(&[(ekey.clone(), created(first, old))])
            .await
            .unwrap(),
        [Claim::Claimed]
    );
    assert_eq!(
        store
            .claim(&[(ekey.clone(), created(second, now))])
            .await
            .unwrap(),
        [Claim::Existing {
            task_id: first,
            republish: true
        }],
        "a claim never confirmed within the stale window is published again"
    );
    store
        .record(&[update_for(first, TaskState::Queued)])
        .await
        .unwrap();
    assert_eq!(
        store
            .claim(&[(ekey.clone(), created(second, now))])
            .await
            .unwrap(),
        [Claim::Existing {
            task_id: first,
            republish: false
        }]
    );
    store.unclaim(&[(ekey.clone(), second)]).await.unwrap();
    assert!(
        matches!(
            store
                .claim(&[(ekey.clone(), created(second, now))])
                .await
                .unwrap()[0],
            Claim::Existing { .. }
        ),
        "unclaim leaves a key bound to another task alone"
    );
    store.unclaim(&[(ekey.clone(), first)]).await.unwrap();
    assert_eq!(
        store.claim(&[(ekey, created(second, now))]).await.unwrap(),
        [Claim::Claimed]
    );

    // A workflow is created once: creating it again keeps its definition,
    // outputs and progress.
    let mut wf = Workflow::new();
    wf.push(Node::new("a", "t.rules", rmpv::Value::Nil));
    wf.push(Node::new("b", "t.rules", rmpv::Value::Nil).after(["a"]));
    assert!(store.create_workflow(&wf, &["b".into()]).await.unwrap());
    let released = store.node_succeeded(wf.id, "a").await.unwrap();
    assert_eq!(released.len(), 1);
    assert!(released[0].first);
    let mut changed = wf.clone();
    changed.push(Node::new("c", "t.rules", rmpv::Value::Nil));
    for again in [&wf, &changed] {
        assert!(!store.create_workflow(again, &[]).await.unwrap());
    }
    let record = store.get_workflow(wf.id).await.unwrap().unwrap();
    assert_eq!(record.state, WorkflowState::Running);
    assert_eq!((record.nodes, record.remaining, record.released), (2, 1, 1));
    assert_eq!(record.outputs, ["b"]);
    assert_eq!(record.progress["a"], NodeProgress::Succeeded);
    assert_eq!(record.progress["b"], NodeProgress::Released);
    assert!(!record.progress.contains_key("c"));
    assert_eq!(
        store.node_succeeded(wf.id, "a").await.unwrap()[0],
        Ready {
            node: "b".into(),
            first: false
        },
        "b stays released once"
    );
    store.node_succeeded(wf.id, "b").await.unwrap();
    let done = store.get_workflow(wf.id).await.unwrap().unwrap();
    assert_eq!(done.state, WorkflowState::Succeeded);
    assert!(!store.create_workflow(&wf, &[]).await.unwrap());
    assert_eq!(
        store.get_workflow(wf.id).await.unwrap().unwrap().state,
        WorkflowState::Succeeded,
        "a finished workflow stays finished"
    );
    // Concurrent creates of one id: exactly one creates it.
    let mut fresh = Workflow::new();
    fresh.push(Node::new("x", "t.rules", rmpv::Value::Nil));
    let creates =
        futures_util::future::join_all((0..8).map(|_| store.create_workflow(&fresh, &[]))).await;
    assert_eq!(
        creates.into_iter().filter(|c| *c.as_ref().unwrap()).count(),
        1
    );

    // Unknown ids are `None`; waiting on one times out with `None`.
    assert!(store.get(TaskId::new()).await.unwrap().is_none());
    assert!(store
        .wait(TaskId::new(), Duration::from_millis(50))
        .await
        .unwrap()
        .is_none());
}

fn update_for(id: TaskId, state: TaskState) -> Update {
    Update::new(id, "t.rules", "default", state, 0)
}

#[tokio::test]
async fn redis_and_memory_stores_follow_the_same_rules() {
    let ns = namespace("store-rules");
    check_store_rules(&MemoryStore::new(short_leases())).await;
    check_store_rules(&redis_store(&ns, short_leases()).await).await;
}

#[tokio::test]
async fn an_unreachable_store_is_a_clear_error() {
    let started = Instant::now();
    let err = celeriac_store::RedisStore::connect(
        "redis://:secret@127.0.0.1:1",
        "t-unreachable",
        StoreSettings::default(),
    )
    .await
    .unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, celeriac_schema::Error::StoreUnavailable { .. }),
        "{message}"
    );
    assert!(
        message.contains("127.0.0.1:1"),
        "names the store: {message}"
    );
    assert!(!message.contains("secret"), "hides the password: {message}");
    assert!(started.elapsed() < Duration::from_secs(10));

    // The worker refuses to start without its store, and says why.
    let out = std::process::Command::new(crate::support::worker_bin())
        .args(["--namespace", "t-unreachable"])
        .env("AMQP_ADDR", &broker().await.url)
        .env("REDIS_URL", "redis://127.0.0.1:1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("state store") && stderr.contains("REDIS_URL"),
        "{stderr}"
    );
}

#[tokio::test]
async fn handles_return_typed_results_and_typed_failures() {
    let ns = namespace("store-results").with_queue("idle");
    let store: Arc<dyn Store> = Arc::new(redis_store(&ns, StoreSettings::default()).await);
    let worker = InProcessWorker::start(&ns, builtins(), |b| b.store(store.clone())).await;
    let producer = producer_with(&ns, store.clone()).await;
    let wait = Duration::from_secs(20);

    // Success: the typed output, and every transition with its time.
    let echo = producer
        .send::<Echo>(&rmpv::Value::from("hello"), &SendOptions::new())
        .await
        .unwrap();
    assert_eq!(echo.wait(wait).await.unwrap(), rmpv::Value::from("hello"));
    assert_eq!(echo.status().await.unwrap(), Some(TaskState::Succeeded));
    let record = echo.record().await.unwrap().unwrap();
    assert_eq!(record.task, Echo::NAME);
    assert_eq!(record.runs, 1);
    assert!(record.worker.is_some());
    let (queued, started, finished) = (
        record.queued_at.unwrap(),
        record.started_at.unwrap(),
        record.finished_at.unwrap(),
    );
    assert!(started <= finished && queued <= finished, "{record:?}");

    // A failure for good: the typed error with its type and message.
    let input = FailInput {
        message: "disk on fire".into(),
        fatal: false,
    };
    let failing = producer
        .send::<Fail>(&input, &SendOptions::new().retry(quick_retry(1)))
        .await
        .unwrap();
    match failing.wait(wait).await {
        Err(Error::TaskFailed { task_id, failure }) => {
            assert_eq!(task_id, failing.id());
            assert!(failure.message.contains("disk on fire"), "{failure}");
        }
        other => panic!("expected TaskFailed, got {other:?}"),
    }
    let record = failing.record().await.unwrap().unwrap();
    let states: Vec<TaskState> = record.history.iter().map(|t| t.state).collect();
    assert!(
        states.ends_with(&[
            TaskState::Started,
            TaskState::Retrying,
            TaskState::Started,
            TaskState::Failed
        ]),
        "{states:?}"
    );
    assert_eq!((record.runs, record.attempt), (2, 1));

    // Expired before it ran: `expired`, with the reason, and never run.
    let expired = producer
        .send::<Ping>(
            &(),
            &SendOptions::new()
                .countdown(Duration::from_millis(200))
                .expires_in(Duration::from_millis(100)),
        )
        .await
        .unwrap();
    assert!(matches!(
        expired.wait(wait).await,
        Err(Error::TaskExpired { .. })
    ));
    let record = expired.record().await.unwrap().unwrap();
    assert_eq!(record.state, TaskState::Expired);
    assert_eq!(record.runs, 0, "an expired task never runs");
    assert_eq!(
        record.error.as_ref().map(|e| e.error_type.as_str()),
        Some("Expired")
    );
    assert!(record.finished_at.is_some());
    let json = celeriac_producer::status::to_json(&record);
    assert_eq!(json["state"], "expired");

    // Nobody consumes `idle`: the wait times out and says it is queued.
    let idle = producer
        .send::<Ping>(&(), &SendOptions::new().queue("idle"))
        .await
        .unwrap();
    let started = Instant::now();
    match idle.wait(Duration::from_millis(300)).await {
        Err(Error::WaitTimedOut { state, .. }) => assert_eq!(state, Some(TaskState::Queued)),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3));

    // A handle for an id kept elsewhere; an unknown id has no state.
    let again = producer.handle::<Echo>(echo.id());
    assert_eq!(again.wait(wait).await.unwrap(), rmpv::Value::from("hello"));
    assert_eq!(
        producer
            .handle::<Ping>(TaskId::new())
            .status()
            .await
            .unwrap(),
        None
    );
    worker.stop().await;
}

/// A task that returns its idempotency key and counts its runs.
struct KeyEcho;
impl Task for KeyEcho {
    const NAME: &'static str = "t.key-echo";
    type Input = u64;
    type Output = String;
}

/// A task whose output is not stored.
struct Quiet;
impl Task for Quiet {
    const NAME: &'static str = "t.quiet";
    type Input = ();
    type Output = u32;
    const STORE_RESULT: bool = false;
}

fn counting_registry(
    runs: Arc<AtomicUsize>,
    running: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
) -> Registry {
    let mut registry = builtins();
    registry.register::<KeyEcho, _, _>(move |ms, ctx: TaskContext| {
        let (runs, running, peak) = (runs.clone(), running.clone(), peak.clone());
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            running.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, TaskError>(ctx.idempotency_key())
        }
    });
    registry.register::<Quiet, _, _>(|(), _ctx: TaskContext| async { Ok::<_, TaskError>(7) });
    registry
}

#[tokio::test]
async fn a_long_run_shows_started_while_it_runs_and_a_short_one_with_its_outcome() {
    let ns = namespace("store-started");
    let store: Arc<dyn Store> = Arc::new(redis_store(&ns, StoreSettings::default()).await);
    let worker = InProcessWorker::start(&ns, builtins(), |b| b.store(store.clone())).await;
    let producer = producer_with(&ns, store.clone()).await;
    let wait = Duration::from_secs(20);

    let long = producer
        .send::<Sleep>(&SleepInput { ms: 1500 }, &SendOptions::new())
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            long.status().await.unwrap() == Some(TaskState::Started)
        })
        .await,
        "a run going on for longer than the threshold shows `started`"
    );
    assert_eq!(long.wait(wait).await.unwrap(), 1500);

    let short = producer
        .send::<Echo>(&rmpv::Value::from(1), &SendOptions::new())
        .await
        .unwrap();
    short.wait(wait).await.unwrap();
    for handle in [long.record().await, short.record().await] {
        let record = handle.unwrap().unwrap();
        let states: Vec<TaskState> = record.history.iter().map(|t| t.state).collect();
        assert_eq!(
            states.iter().filter(|s| **s == TaskState::Started).count(),
            1,
            "{states:?}"
        );
        assert_eq!(states.last(), Some(&TaskState::Succeeded), "{states:?}");
        assert_eq!(record.runs, 1);
        let (started, finished) = (record.started_at.unwrap(), record.finished_at.unwrap());
        assert!(started <= finished, "{record:?}");
    }
    worker.stop().await;
}

#[tokio::test]
async fn an_enqueue_key_used_before_returns_the_first_id_and_publishes_nothing() {
    let ns = namespace("store-enqueue-key");
    let store: Arc<dyn Store> = Arc::new(redis_store(&ns, StoreSettings::default()).await);
    let producer = producer_with(&ns, store.clone()).await;
    let opts = SendOptions::new().idempotency_key("order-42");
    let first = producer.send::<KeyEcho>(&0, &opts).await.unwrap();
    let second = producer.send::<KeyEcho>(&0, &opts).await.unwrap();
    assert_eq!(first.id(), second.id());
    let other = producer
        .send::<KeyEcho>(&0, &SendOptions::new().idempotency_key("order-43"))
        .await
        .unwrap();
    assert_ne!(other.id(), first.id());
    let (_conn, channel) = broker().await.channel().await;
    let queued = eventually(Duration::from_secs(5), || async {
        queue_len(&channel, &ns.topology().work_queue("default")).await == 2
    })
    .await;
    assert!(queued, "two keys, two tasks in the queue");
    let record = first.record().await.unwrap().unwrap();
    assert_eq!(record.state, TaskState::Queued);
    assert!(record.created_at.is_some());
    assert_eq!(record.idempotency_key.as_deref(), Some("order-42"));

    // The handler reads the key, and the result is the key.
    let runs = Arc::new(AtomicUsize::new(0));
    let worker = InProcessWorker::start(
        &ns,
        counting_registry(runs.clone(), Arc::default(), Arc::default()),
        |b| b.store(store.clone()),
    )
    .await;
    assert_eq!(
        first.wait(Duration::from_secs(20)).await.unwrap(),
        "order-42"
    );
    assert_eq!(
        other.wait(Duration::from_secs(20)).await.unwrap(),
        "order-43"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);

    // A task that opts out of results succeeds with no stored output.
    let quiet = producer
        .send::<Quiet>(&(), &SendOptions::new())
        .await
        .unwrap();
    assert!(matches!(
        quiet.wait(Duration::from_secs(20)).await,
        Err(Error::NoResult { .. })
    ));
    assert_eq!(quiet.status().await.unwrap(), Some(TaskState::Succeeded));
    worker.stop().await;
}

#[tokio::test]
async fn a_duplicate_never_runs_again_and_its_event_is_emitted_again() {
    let ns = namespace("store-duplicate");
    let events = format!("{}.test-events", &*ns);
    let ns = ns.with_raw_queue(&events);
    let (_conn, channel) = broker().await.channel().await;
    let store: Arc<dyn Store> = Arc::new(redis_store(&ns, short_leases()).await);
    let producer = producer_with(&ns, store.clone()).await;
    channel
        .queue_declare(
            events.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            events.as_str().into(),
            ns.topology().events_exchange().as_str().into(),
            "task.succeeded.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    // Two workers; the same envelope published twice while the first copy
    // runs for 1.5 s: the second waits for the lease, then is suppressed.
    let (runs, running, peak) = (Arc::default(), Arc::default(), Arc::default());
    let task = producer
        .prepare::<KeyEcho>(&1500, &SendOptions::new())
        .unwrap();
    let registry = || counting_registry(Arc::clone(&runs), Arc::clone(&running), Arc::clone(&peak));
    let a = InProcessWorker::start(&ns, registry(), |b| b.store(store.clone()).events(true)).await;
    let b = InProcessWorker::start(&ns, registry(), |b| b.store(store.clone()).events(true)).await;
    producer
        .send_all(&[task.clone(), task.clone()])
        .await
        .unwrap();
    let handle = producer.handle::<KeyEcho>(task.envelope.id);
    handle.wait(Duration::from_secs(20)).await.unwrap();
    let suppressed = eventually(Duration::from_secs(10), || async {
        a.stats().duplicates_suppressed + b.stats().duplicates_suppressed == 1
    })
    .await;
    assert!(
        suppressed,
        "the second copy is counted as a suppressed duplicate"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the handler ran once");
    assert_eq!(
        peak.load(Ordering::SeqCst),
        1,
        "never twice at the same time"
    );

    // The completion event, once per copy.
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while seen.len() < 2 && Instant::now() < deadline {
        match channel
            .basic_get(events.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            Some(msg) => {
                let event: rmpv::Value = rmp_serde::from_slice(&msg.delivery.data).unwrap();
                seen.push(event);
            }
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let got_both = seen.len() == 2;
    assert!(got_both, "events: {seen:?}");
    for event in &seen {
        let field = |name: &str| {
            event
                .as_map()
                .and_then(|m| m.iter().find(|(k, _)| k.as_str() == Some(name)))
                .and_then(|(_, v)| v.as_str().map(str::to_owned))
        };
        assert_eq!(field("id"), Some(task.envelope.id.to_string()));
        assert_eq!(field("kind").as_deref(), Some("succeeded"));
    }
    // Sent again later: still not run.
    producer.send_all(&[task]).await.unwrap();
    let again = eventually(Duration::from_secs(10), || async {
        a.stats().duplicates_suppressed + b.stats().duplicates_suppressed == 2
    })
    .await;
    assert!(again);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_crashed_runs_lease_expires_and_the_task_runs_again() {
    let ns = namespace("store-lease-expiry");
    let store: Arc<dyn Store> = Arc::new(redis_store(&ns, short_leases()).await);
    let producer = producer_with(&ns, store.clone()).await;
    let task = producer
        .prepare::<Echo>(&rmpv::Value::from(1), &SendOptions::new())
        .unwrap();
    // A worker took the lease and died without a word.
    let started = Update::new(
        task.envelope.id,
        Echo::NAME,
        "default",
        TaskState::Started,
        0,
    );
    let key = task.envelope.effective_idempotency_key();
    assert_eq!(
        store.begin(&key, "dead-worker", &started).await.unwrap(),
        Begin::Run
    );
    let taken = Instant::now();
    producer
        .send_all(std::slice::from_ref(&task))
        .await
        .unwrap();
    let worker = InProcessWorker::start(&ns, builtins(), |b| b.store(store.clone())).await;
    let handle = producer.handle::<Echo>(task.envelope.id);
    assert_eq!(
        handle.wait(Duration::from_secs(20)).await.unwrap(),
        rmpv::Value::from(1)
    );
    let record: TaskRecord = handle.record().await.unwrap().unwrap();
    assert_eq!(record.runs, 2, "the dead run and the real one");
    assert!(
        record.started_at.unwrap()
            >= celeriac_schema::now_ms() - taken.elapsed().as_millis() as u64 + 900,
        "the second run waited for the lease to expire"
    );
    worker.stop().await;
}

/// A store that fails on demand, in front of an in-memory one.
#[derive(Debug)]
struct Flaky {
    inner: MemoryStore,
    down: AtomicBool,
}

impl Flaky {
    fn check(&self, op: &'static str) -> celeriac_schema::Result<()> {
        if self.down.load(Ordering::SeqCst) {
            return Err(celeriac_schema::Error::StoreUnavailable {
                op,
                message: "switched off by the test".into(),
            });
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Store for Flaky {
    fn settings(&self) -> &StoreSettings {
        self.inner.settings()
    }
    async fn ping(&self) -> celeriac_schema::Result<()> {
        self.check("ping")
    }
    async fn record(&self, updates: &[Update]) -> celeriac_schema::Result<()> {
        self.check("record")?;
        self.inner.record(updates).await
    }
    async fn get(&self, id: TaskId) -> celeriac_schema::Result<Option<TaskRecord>> {
        self.check("get")?;
        self.inner.get(id).await
    }
    async fn wait(
        &self,
        id: TaskId,
        timeout: Duration,
    ) -> celeriac_schema::Result<Option<TaskRecord>> {
        self.inner.wait(id, timeout).await
    }
    async fn claim(&self, claims: &[(String, Update)]) -> celeriac_schema::Result<Vec<Claim>> {
        self.check("claim")?;
        self.inner.claim(claims).await
    }
    async fn unclaim(&self, claims: &[(String, TaskId)]) -> celeriac_schema::Result<()> {
        self.check("unclaim")?;
        self.inner.unclaim(claims).await
    }
    async fn lease(&self, key: &str, token: &str) -> celeriac_schema::Result<Begin> {
        self.check("lease")?;
        self.inner.lease(key, token).await
    }
    async fn started(&self, update: &Update) -> celeriac_schema::Result<()> {
        self.check("started")?;
        self.inner.started(update).await
    }
    async fn renew(&self, key: &str, token: &str) -> celeriac_schema::Result<bool> {
        self.check("renew")?;
        self.inner.renew(key, token).await
    }
    async fn finish(&self, key: &str, token: &str, update: &Update) -> celeriac_schema::Result<()> {
        self.check("finish")?;
        self.inner.finish(key, token, update).await
    }
    async fn results(&self, ids: &[TaskId]) -> celeriac_schema::Result<Vec<Option<Vec<u8>>>> {
        self.check("results")?;
        self.inner.results(ids).await
    }
    async fn create_workflow(
        &self,
        workflow: &celeriac_schema::workflow::Workflow,
        outputs: &[String],
    ) -> celeriac_schema::Result<bool> {
        self.check("create_workflow")?;
        self.inner.create_workflow(workflow, outputs).await
    }
    async fn workflow_nodes(
        &self,
        workflow: TaskId,
        nodes: &[String],
    ) -> celeriac_schema::Result<Vec<Option<celeriac_schema::workflow::Node>>> {
        self.check("workflow_nodes")?;
        self.inner.workflow_nodes(workflow, nodes).await
    }
    async fn node_succeeded(
        &self,
        workflow: TaskId,
        node: &str,
    ) -> celeriac_schema::Result<Vec<celeriac_schema::store::Ready>> {
        self.check("node_succeeded")?;
        self.inner.node_succeeded(workflow, node).await
    }
    async fn node_failed(
        &self,
        workflow: TaskId,
        node: &str,
    ) -> celeriac_schema::Result<Vec<String>> {
        self.check("node_failed")?;
        self.inner.node_failed(workflow, node).await
    }
    async fn get_workflow(
        &self,
        workflow: TaskId,
    ) -> celeriac_schema::Result<Option<celeriac_schema::store::WorkflowRecord>> {
        self.check("get_workflow")?;
        self.inner.get_workflow(workflow).await
    }
    async fn wait_workflow(
        &self,
        workflow: TaskId,
        timeout: Duration,
    ) -> celeriac_schema::Result<Option<celeriac_schema::store::WorkflowRecord>> {
        self.inner.wait_workflow(workflow, timeout).await
    }
}

#[tokio::test]
async fn a_worker_whose_store_is_down_is_not_ready_and_acks_nothing() {
    let ns = namespace("store-down");
    let flaky = Arc::new(Flaky {
        inner: MemoryStore::new(StoreSettings::default()),
        down: AtomicBool::new(false),
    });
    let store: Arc<dyn Store> = flaky.clone();
    let producer = Producer::builder(&broker().await.url)
        .namespace(&*ns)
        .connect()
        .await
        .unwrap();
    let (runs, running, peak) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::default(),
        Arc::default(),
    );
    let worker = InProcessWorker::start(&ns, counting_registry(runs.clone(), running, peak), |b| {
        b.store(store.clone()).grace(Duration::from_millis(500))
    })
    .await;

    // Down before the run: the task waits, the worker turns not ready.
    flaky.down.store(true, Ordering::SeqCst);
    let first = producer
        .send::<KeyEcho>(&0, &SendOptions::new())
        .await
        .unwrap();
    let not_ready = eventually(Duration::from_secs(5), || async { !worker.is_ready() }).await;
    assert!(not_ready, "a worker without its store is not ready");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        runs.load(Ordering::SeqCst),
        0,
        "nothing runs before `started` is stored"
    );
    flaky.down.store(false, Ordering::SeqCst);
    let record = eventually(Duration::from_secs(10), || async {
        store.get(first.id()).await.ok().flatten().map(|r| r.state) == Some(TaskState::Succeeded)
    })
    .await;
    assert!(record, "the task completes once the store is back");
    assert!(eventually(Duration::from_secs(5), || async { worker.is_ready() }).await);

    // Down after the run: the outcome cannot be stored, so the delivery is
    // not acked; a shutdown hands it back to the queue.
    let (_conn, channel) = broker().await.channel().await;
    let second = producer
        .send::<KeyEcho>(&300, &SendOptions::new())
        .await
        .unwrap();
    let running_now = eventually(Duration::from_secs(5), || async {
        runs.load(Ordering::SeqCst) == 2
    })
    .await;
    assert!(running_now);
    flaky.down.store(true, Ordering::SeqCst);
    let stats = worker.stop().await;
    assert!(stats.store_errors > 0);
    let requeued = eventually(Duration::from_secs(10), || async {
        queue_len(&channel, &ns.topology().work_queue("default")).await == 1
    })
    .await;
    assert!(requeued, "the unstored outcome left the task in the queue");
    flaky.down.store(false, Ordering::SeqCst);
    assert_ne!(
        store.get(second.id()).await.unwrap().map(|r| r.state),
        Some(TaskState::Succeeded)
    );
}

#[tokio::test]
async fn ten_thousand_waiting_handles_share_one_store_connection() {
    const N: usize = 10_000;
    let ns = namespace("store-waiters");
    let store: Arc<dyn Store> = Arc::new(redis_store(&ns, StoreSettings::default()).await);
    let producer = producer_with(&ns, store.clone()).await;
    let ids = producer
        .send_batch::<Ping>(std::iter::repeat_n((), N), &SendOptions::new())
        .await
        .unwrap();
    let waits: Vec<_> = ids
        .iter()
        .map(|id| {
            let handle = producer.handle::<Ping>(*id);
            tokio::spawn(async move { handle.wait(Duration::from_secs(120)).await })
        })
        .collect();
    // Every waiter subscribed, on one connection.
    let mut conn = raw_redis().await;
    let mut subscribers: Vec<usize> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut all_subscribed = false;
    while !all_subscribed && Instant::now() < deadline {
        let list: String = celeriac_tests::redis_client::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut conn)
            .await
            .unwrap();
        subscribers = list
            .lines()
            .filter_map(|line| {
                line.split(' ')
                    .find_map(|f| f.strip_prefix("sub="))
                    .and_then(|n| n.parse::<usize>().ok())
            })
            .filter(|n| *n >= 1_000)
            .collect();
        all_subscribed = subscribers.iter().sum::<usize>() >= N;
        if !all_subscribed {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(all_subscribed, "subscriptions: {subscribers:?}");
    assert_eq!(
        subscribers,
        [N],
        "one connection holds all {N} subscriptions"
    );

    let started = Instant::now();
    let worker = InProcessWorker::start(&ns, builtins(), |b| b.store(store.clone())).await;
    for wait in waits {
        wait.await.unwrap().unwrap();
    }
    eprintln!(
        "{N} waiting handles resolved {:?} after the worker started",
        started.elapsed()
    );
    worker.stop().await;
}

#[tokio::test]
async fn status_cli_shows_a_task_and_says_when_an_id_is_unknown() {
    let ns = namespace("store-status-cli");
    let store: Arc<dyn Store> = Arc::new(redis_store(&ns, StoreSettings::default()).await);
    let worker = InProcessWorker::start(&ns, builtins(), |b| b.store(store.clone())).await;
    let producer = producer_with(&ns, store.clone()).await;
    let input = FailInput {
        message: "no such user".into(),
        fatal: true,
    };
    let failed = producer
        .send::<Fail>(&input, &SendOptions::new())
        .await
        .unwrap();
    assert!(failed.wait(Duration::from_secs(20)).await.is_err());
    let echo = producer
        .send::<Echo>(&rmpv::Value::from(7), &SendOptions::new())
        .await
        .unwrap();
    echo.wait(Duration::from_secs(20)).await.unwrap();
    worker.stop().await;

    let url = redis().await.url.clone();
    let status = |args: &[&str]| {
        std::process::Command::new(celeriac_cli())
            .arg("status")
            .args(args)
            .args(["--namespace", &ns])
            .env("REDIS_URL", &url)
            .output()
            .unwrap()
    };
    let table = status(&[&failed.id().to_string()]);
    assert!(table.status.success());
    let text = String::from_utf8_lossy(&table.stdout);
    for expected in [
        "state      failed",
        "no such user",
        "attempt 0 (1 runs started)",
        "history",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
    let json = status(&[&echo.id().to_string(), "--json"]);
    assert!(json.status.success());
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(value["v"], 1, "the version of SPEC.md section 18.7");
    assert_eq!(value["kind"], "task");
    assert_eq!(value["state"], "succeeded");
    assert_eq!(value["result_stored"], true);
    assert_eq!(value["result"], 7);
    assert_eq!(value["runs"], 1);
    assert!(value["started_at"]["unix_ms"].as_u64().is_some());
    assert!(value["worker"].as_str().is_some());

    let unknown = status(&[&TaskId::new().to_string()]);
    assert_eq!(unknown.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no task"));
    let invalid = status(&["not-an-id"]);
    assert_eq!(invalid.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&invalid.stderr).contains("not a task id"));
}

#[tokio::test]
async fn a_record_keeps_the_last_hundred_transitions() {
    let ns = namespace("store-history");
    for store in [
        Arc::new(MemoryStore::new(StoreSettings::default())) as Arc<dyn Store>,
        Arc::new(redis_store(&ns, StoreSettings::default()).await),
    ] {
        let id = TaskId::new();
        let updates: Vec<Update> = (0..130)
            .map(|attempt| {
                let mut u = Update::new(id, "t.history", "default", TaskState::Retrying, attempt);
                u.error = Some(celeriac_schema::store::TaskFailure {
                    error_type: "Io".into(),
                    message: format!("attempt {attempt}"),
                });
                u
            })
            .collect();
        store.record(&updates).await.unwrap();
        let record = store.get(id).await.unwrap().unwrap();
        assert_eq!(record.history.len(), 100, "{store:?}");
        assert_eq!(record.history[0].attempt, 30);
        assert_eq!(record.history[99].attempt, 129);
        assert_eq!(
            record.history[0].error.as_ref().map(|e| e.message.as_str()),
            Some("attempt 30")
        );
        assert_eq!(record.attempt, 129);
    }
}

/// A TCP relay to Redis that a test can cut off and restore, to take the
/// store's Redis away from it alone (other tests share the same Redis).
struct Relay {
    url: String,
    open: Arc<AtomicBool>,
    links: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Relay {
    /// Listens on a free local port and relays to the Redis of `url`.
    async fn start(url: &str) -> Relay {
        let target = url
            .split("://")
            .nth(1)
            .and_then(|rest| rest.rsplit('@').next())
            .and_then(|rest| rest.split('/').next())
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("a Redis URL with a host and port: {url}"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay_url = url.replacen(&target, &listener.local_addr().unwrap().to_string(), 1);
        let open = Arc::new(AtomicBool::new(true));
        let links: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (accepting, tracked) = (open.clone(), links.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !accepting.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection close
                }
                let target = target.clone();
                let link = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tracked.lock().unwrap().push(link.abort_handle());
            }
        });
        Relay {
            url: relay_url,
            open,
            links,
        }
    }

    /// Closes every relayed connection and refuses new ones.
    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

fn succeeded(id: TaskId) -> Update {
    let mut done = Update::new(id, "t.batch", "default", TaskState::Succeeded, 0);
    done.result = Some(celeriac_schema::store::encode_result(&id.to_string()).unwrap());
    done
}

#[tokio::test]
async fn a_write_that_fails_inside_a_shared_transaction_fails_alone() {
    let ns = namespace("store-batch-alone");
    let store = redis_store(&ns, StoreSettings::default()).await;
    // One record is not a hash: writing it fails inside the transaction.
    let broken = TaskId::new();
    let mut conn = raw_redis().await;
    let _: () = celeriac_tests::redis_client::cmd("SET")
        .arg(format!("{ns}:t:{broken}"))
        .arg("not a hash")
        .arg("PX")
        .arg(60_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    // Sixty-four writes at once share transactions with it.
    let mut ids: Vec<TaskId> = (0..64).map(|_| TaskId::new()).collect();
    ids.insert(32, broken);
    let writes = ids.iter().map(|id| {
        let store = store.clone();
        let id = *id;
        async move {
            let key = format!("key-{id}");
            store.lease(&key, "run").await?;
            store.finish(&key, "run", &succeeded(id)).await
        }
    });
    let outcomes = futures_util::future::join_all(writes).await;
    for (id, outcome) in ids.iter().zip(&outcomes) {
        if *id == broken {
            let e = outcome
                .as_ref()
                .expect_err("the broken record's write fails");
            assert!(e.to_string().contains("WRONGTYPE"), "{e}");
        } else {
            outcome
                .as_ref()
                .unwrap_or_else(|e| panic!("a sound write sharing its batch failed: {e}"));
            let record = store.get(*id).await.unwrap().unwrap();
            assert_eq!(record.state, TaskState::Succeeded);
            assert_eq!(
                record.decode_result::<String>().unwrap(),
                Some(id.to_string())
            );
        }
    }
}

#[tokio::test]
async fn store_writes_fail_while_redis_is_cut_off_and_work_again_after() {
    let ns = namespace("store-cut-off");
    let relay = Relay::start(&redis().await.url).await;
    let store = celeriac_store::RedisStore::connect(&relay.url, &ns, StoreSettings::default())
        .await
        .unwrap_or_else(|e| panic!("Redis store through the relay: {e}; {HOW_TO_PROVIDE_REDIS}"));
    let ids: Vec<TaskId> = (0..16).map(|_| TaskId::new()).collect();
    for id in &ids {
        assert_eq!(
            store.lease(&format!("key-{id}"), "run").await.unwrap(),
            Begin::Run
        );
    }

    relay.cut();
    let started = Instant::now();
    let writes = ids.iter().map(|id| {
        let store = store.clone();
        let id = *id;
        async move {
            store
                .finish(&format!("key-{id}"), "run", &succeeded(id))
                .await
        }
    });
    for outcome in futures_util::future::join_all(writes).await {
        match outcome {
            Err(celeriac_schema::Error::StoreUnavailable { op, .. }) => assert_eq!(op, "finish"),
            other => panic!("a write while Redis is cut off must fail as unavailable: {other:?}"),
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "failed writes answer within the response timeout, took {:?}",
        started.elapsed()
    );

    relay.restore();
    for id in &ids {
        let key = format!("key-{id}");
        assert!(
            eventually(Duration::from_secs(20), || async {
                store.finish(&key, "run", &succeeded(*id)).await.is_ok()
            })
            .await,
            "writes work again once Redis is back"
        );
        let record = store.get(*id).await.unwrap().unwrap();
        assert_eq!(record.state, TaskState::Succeeded);
        assert_eq!(
            store.lease(&key, "again").await.unwrap(),
            Begin::Succeeded { task_id: *id }
        );
    }
}
