//! Canvas and workflows on the cluster: chains, groups, chords, nesting, a
//! DAG with inputs by name, a 10,000-member chord, and workflow status from
//! the API and the `celeriac` command.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use celeriac_consumer::{Registry, TaskContext, TaskError};
use celeriac_producer::canvas::{chain, chord, group, Signature};
use celeriac_producer::{Error, Producer};
use celeriac_schema::store::{NodeProgress, Store, StoreSettings, WorkflowState};
use celeriac_schema::workflow::{node_task_id, InputFrom, Node, Workflow};
use celeriac_schema::{Task, TaskState};
use celeriac_tests::{broker, namespace, redis, redis_store, InProcessWorker, TestNamespace};

struct Inc;
impl Task for Inc {
    const NAME: &'static str = "t.inc";
    type Input = i64;
    type Output = i64;
}

struct Sum;
impl Task for Sum {
    const NAME: &'static str = "t.sum";
    type Input = Vec<i64>;
    type Output = i64;
}

struct Merge;
impl Task for Merge {
    const NAME: &'static str = "t.merge";
    type Input = BTreeMap<String, i64>;
    type Output = String;
}

/// Fails for negative numbers.
struct Check;
impl Task for Check {
    const NAME: &'static str = "t.check";
    type Input = i64;
    type Output = i64;
}

/// Spawns `n` children, each of which spawns a grandchild, and waits:
/// returns the sum of what they return.
struct Parent;
impl Task for Parent {
    const NAME: &'static str = "t.parent";
    type Input = i64;
    type Output = i64;
}

/// Spawns one `t.inc` of its input and returns its result.
struct Child;
impl Task for Child {
    const NAME: &'static str = "t.child";
    type Input = i64;
    type Output = i64;
}

fn registry() -> Registry {
    let mut registry = Registry::new();
    registry
        .register::<Parent, _, _>(|n, ctx: TaskContext| async move {
            let mut handles = Vec::new();
            for i in 0..n {
                handles.push(ctx.spawn::<Child>(&(i * 100)).await?);
            }
            let mut total = 0;
            for handle in handles {
                total += handle
                    .wait(Duration::from_secs(30))
                    .await
                    .map_err(|e| TaskError::new("Subtask", e.to_string()))?;
            }
            Ok::<_, TaskError>(total)
        })
        .register::<Child, _, _>(|n, ctx: TaskContext| async move {
            let grandchild = ctx.spawn::<Inc>(&n).await?;
            grandchild
                .wait(Duration::from_secs(30))
                .await
                .map_err(|e| TaskError::new("Subtask", e.to_string()))
        });
    registry
        .register::<Inc, _, _>(|n, _ctx: TaskContext| async move { Ok::<_, TaskError>(n + 1) })
        .register::<Sum, _, _>(|v: Vec<i64>, _ctx: TaskContext| async move {
            Ok::<_, TaskError>(v.iter().sum())
        })
        .register::<Merge, _, _>(|m: BTreeMap<String, i64>, _ctx: TaskContext| async move {
            Ok::<_, TaskError>(
                m.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(","),
            )
        })
        .register::<Check, _, _>(|n, _ctx: TaskContext| async move {
            if n < 0 {
                Err(TaskError::fatal("Negative", format!("{n} is negative")))
            } else {
                Ok(n)
            }
        });
    registry
}

struct Cluster {
    _ns: TestNamespace,
    producer: Producer,
    store: Arc<dyn Store>,
    worker: InProcessWorker,
}

async fn cluster(name: &str, concurrency: usize) -> Cluster {
    let ns = namespace(name);
    let store: Arc<dyn Store> = Arc::new(redis_store(&ns, StoreSettings::default()).await);
    let worker = InProcessWorker::start(&ns, registry(), |b| {
        b.concurrency(concurrency).store(store.clone())
    })
    .await;
    let producer = Producer::builder(&broker().await.url)
        .namespace(&*ns)
        .store(store.clone())
        .connect()
        .await
        .unwrap();
    Cluster {
        _ns: ns,
        producer,
        store,
        worker,
    }
}

impl Cluster {
    async fn stop(self) {
        self.worker.shutdown().await;
    }
}

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chains_groups_chords_and_their_nestings_pass_results_along() {
    let c = cluster("wf-canvas", 16).await;
    let p = &c.producer;

    // chain: 1 → 2 → 3 → 4
    let canvas = chain([
        Signature::new::<Inc>(&1).unwrap(),
        Signature::callback::<Inc>(),
        Signature::callback::<Inc>(),
    ]);
    let h = p.submit_canvas(&canvas).await.unwrap();
    assert_eq!(h.wait_as::<i64>(WAIT).await.unwrap(), 4);

    // group: results in order
    let canvas = group((0..5).map(|i| Signature::new::<Inc>(&(i * 10)).unwrap()));
    let h = p.submit_canvas(&canvas).await.unwrap();
    assert_eq!(
        h.wait_as::<Vec<i64>>(WAIT).await.unwrap(),
        [1, 11, 21, 31, 41]
    );

    // chord: the callback gets the header's results in order
    let canvas = chord(
        group((1..=10).map(|i| Signature::new::<Inc>(&i).unwrap())),
        Signature::callback::<Sum>(),
    );
    let h = p.submit_canvas(&canvas).await.unwrap();
    assert_eq!(h.wait_as::<i64>(WAIT).await.unwrap(), (2..=11).sum::<i64>());

    // a chain of chords: chord(1+1, 2+1) = 5, then 5 + 1
    let canvas = chain([
        chord(
            group([
                Signature::new::<Inc>(&1).unwrap(),
                Signature::new::<Inc>(&2).unwrap(),
            ]),
            Signature::callback::<Sum>(),
        ),
        Signature::callback::<Inc>().into(),
    ]);
    let h = p.submit_canvas(&canvas).await.unwrap();
    assert_eq!(h.wait_as::<i64>(WAIT).await.unwrap(), 6);

    // a chord of chains: (1+1+1) + (10+1+1)
    let canvas = chord(
        group([
            chain([
                Signature::new::<Inc>(&1).unwrap(),
                Signature::callback::<Inc>(),
            ]),
            chain([
                Signature::new::<Inc>(&10).unwrap(),
                Signature::callback::<Inc>(),
            ]),
        ]),
        Signature::callback::<Sum>(),
    );
    let h = p.submit_canvas(&canvas).await.unwrap();
    assert_eq!(h.wait_as::<i64>(WAIT).await.unwrap(), 15);

    // a DAG whose node gets its dependencies' results by name
    let mut wf = Workflow::new();
    wf.push(Node::new("x", Inc::NAME, rmpv::Value::from(1)));
    wf.push(Node::new("y", Inc::NAME, rmpv::Value::from(20)));
    wf.push(
        Node::new("z", Inc::NAME, rmpv::Value::Nil)
            .after(["x"])
            .input_from(InputFrom::Result),
    );
    wf.push(
        Node::new("m", Merge::NAME, rmpv::Value::Nil)
            .after(["z", "y"])
            .input_from(InputFrom::ByName),
    );
    let h = p.submit(&wf, &[]).await.unwrap();
    assert_eq!(h.wait_as::<String>(WAIT).await.unwrap(), "y=21,z=3");
    let status = h.status().await.unwrap().unwrap();
    assert_eq!(status.workflow.state, WorkflowState::Succeeded);
    assert_eq!(status.workflow.released, 2, "z and m, once each");
    for node in &status.nodes {
        assert_eq!(node.progress, NodeProgress::Succeeded);
        assert_eq!(node.attempts(), 1, "{}", node.id);
        let record = node.record.as_ref().unwrap();
        assert_eq!(
            record.workflow_id.as_deref(),
            Some(h.id().to_string().as_str())
        );
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_node_fails_the_workflow_and_its_status_shows_why() {
    let c = cluster("wf-failure", 8).await;
    let mut wf = Workflow::new();
    wf.push(Node::new("ok", Check::NAME, rmpv::Value::from(1)));
    wf.push(Node::new("bad", Check::NAME, rmpv::Value::from(-1)));
    wf.push(
        Node::new("after-bad", Inc::NAME, rmpv::Value::Nil)
            .after(["bad"])
            .input_from(InputFrom::Result),
    );
    wf.push(
        Node::new("after-ok", Inc::NAME, rmpv::Value::Nil)
            .after(["ok"])
            .input_from(InputFrom::Result),
    );
    let h = c.producer.submit(&wf, &[]).await.unwrap();
    match h.wait(WAIT).await {
        Err(Error::WorkflowFailed {
            failed,
            first_error,
            ..
        }) => {
            assert_eq!(failed, ["bad"]);
            assert!(first_error.unwrap().message.contains("-1 is negative"));
        }
        other => panic!("expected the workflow to fail, got {other:?}"),
    }
    let status = h.status().await.unwrap().unwrap();
    let by_id: BTreeMap<&str, _> = status.nodes.iter().map(|n| (n.id.as_str(), n)).collect();
    assert_eq!(by_id["ok"].progress, NodeProgress::Succeeded);
    assert_eq!(
        by_id["after-ok"].progress,
        NodeProgress::Succeeded,
        "an independent branch completes"
    );
    assert_eq!(by_id["bad"].progress, NodeProgress::Failed);
    assert_eq!(by_id["bad"].attempts(), 1);
    assert_eq!(by_id["after-bad"].progress, NodeProgress::Skipped);
    assert_eq!(by_id["after-bad"].attempts(), 0);
    assert_eq!(
        by_id["after-bad"].record.as_ref().map(|r| r.state),
        Some(TaskState::Skipped)
    );

    // The same from the command line.
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("celeriac");
    let out = std::process::Command::new(&bin)
        .args(["status", &h.id().to_string(), "--namespace", &c._ns])
        .env("REDIS_URL", &redis().await.url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "workflow",
        "failed",
        "after-bad",
        "skipped",
        "-1 is negative",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
    let json = std::process::Command::new(&bin)
        .args([
            "status",
            &h.id().to_string(),
            "--json",
            "--namespace",
            &c._ns,
        ])
        .env("REDIS_URL", &redis().await.url)
        .output()
        .unwrap();
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(value["state"], "failed");
    assert_eq!(value["nodes"].as_array().map(Vec::len), Some(4));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submitting_the_same_workflow_twice_runs_each_node_once() {
    let c = cluster("wf-twice", 8).await;
    let diamond = || {
        let mut wf = Workflow::new();
        wf.push(Node::new("a", Inc::NAME, rmpv::Value::from(1)));
        wf.push(Node::new("b", Inc::NAME, rmpv::Value::from(10)));
        wf.push(
            Node::new("sum", Sum::NAME, rmpv::Value::Nil)
                .after(["a", "b"])
                .input_from(InputFrom::InOrder),
        );
        wf
    };
    let runs_once = |store: Arc<dyn Store>, wf: Workflow| async move {
        for node in ["a", "b", "sum"] {
            let record = store.get(node_task_id(wf.id, node)).await.unwrap().unwrap();
            assert_eq!(record.state, TaskState::Succeeded, "{node}: {record:?}");
            assert_eq!(record.runs, 1, "{node} ran {} times", record.runs);
        }
        let record = store.get_workflow(wf.id).await.unwrap().unwrap();
        assert_eq!(record.state, WorkflowState::Succeeded);
        assert_eq!(record.released, 1, "sum was released once");
    };

    // Twice at once, then once more after it finished.
    let wf = diamond();
    let (first, second) = tokio::join!(c.producer.submit(&wf, &[]), c.producer.submit(&wf, &[]));
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!(first.id(), second.id());
    assert_eq!(first.wait_as::<i64>(WAIT).await.unwrap(), 13);
    let again = c.producer.submit(&wf, &[]).await.unwrap();
    assert_eq!(again.wait_as::<i64>(WAIT).await.unwrap(), 13);
    // Long enough for a duplicate root to be delivered and suppressed.
    tokio::time::sleep(Duration::from_secs(1)).await;
    runs_once(c.store.clone(), wf).await;

    // A submit that stopped right after storing its workflow (its producer
    // died before publishing): submitting again publishes the roots.
    let stopped = diamond();
    assert!(c
        .store
        .create_workflow(&stopped, &["sum".into()])
        .await
        .unwrap());
    let h = c.producer.submit(&stopped, &[]).await.unwrap();
    assert_eq!(h.wait_as::<i64>(WAIT).await.unwrap(), 13);
    tokio::time::sleep(Duration::from_secs(1)).await;
    runs_once(c.store.clone(), stopped).await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chord_of_ten_thousand_members_gets_every_result_in_order() {
    const N: i64 = 10_000;
    let c = cluster("wf-chord-10k", 64).await;
    let canvas = chord(
        group((0..N).map(|i| Signature::new::<Inc>(&i).unwrap())),
        Signature::callback::<Sum>(),
    );
    let started = Instant::now();
    let h = c.producer.submit_canvas(&canvas).await.unwrap();
    let sum = h.wait_as::<i64>(Duration::from_secs(240)).await.unwrap();
    assert_eq!(sum, (1..=N).sum::<i64>());
    let elapsed = started.elapsed();
    // The callback's input is the 10,000 results in member order.
    let status = c.store.get_workflow(h.id()).await.unwrap().unwrap();
    assert_eq!(status.released, 1, "the callback, once");
    let callback = status.outputs[0].clone();
    let record = c
        .store
        .get(node_task_id(h.id(), &callback))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.runs, 1);
    let members: Vec<String> = (0..N as usize)
        .map(|i| format!("{i}-{}", Inc::NAME))
        .collect();
    let ids: Vec<_> = members.iter().map(|m| node_task_id(h.id(), m)).collect();
    let results = c.store.results(&ids).await.unwrap();
    for (i, bytes) in results.iter().enumerate() {
        let value: i64 = celeriac_schema::store::decode_result(bytes.as_ref().unwrap()).unwrap();
        assert_eq!(value, i as i64 + 1, "member {i}");
    }
    // Release latency: last member finished → callback started.
    let mut last_member_ms = 0;
    for chunk in ids.chunks(500) {
        for id in chunk {
            let r = c.store.get(*id).await.unwrap().unwrap();
            last_member_ms = last_member_ms.max(r.finished_at.unwrap());
        }
    }
    let release_ms = record.started_at.unwrap() as i64 - last_member_ms as i64;
    eprintln!(
        "chord of {N}: done in {elapsed:?}; callback started {release_ms} ms after the last member finished"
    );
    assert!(release_ms >= 0);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_spawns_subtasks_that_spawn_their_own_and_waits_for_them() {
    let c = cluster("wf-subtasks", 16).await;
    let parent = c
        .producer
        .send::<Parent>(&3, &celeriac_producer::SendOptions::new())
        .await
        .unwrap();
    // Children return i*100 + 1 through their grandchildren.
    assert_eq!(parent.wait(WAIT).await.unwrap(), 1 + 101 + 201);
    c.stop().await;
}
