//! Crash test for the coordinator: a 1,000-node DAG (up to three
//! dependencies a node) runs on worker processes that are SIGKILLed and
//! restarted again and again. It completes; every node is released exactly
//! once, ran to success with the right result, and any re-run of a node is
//! explained by a killed worker.

#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use celeriac_producer::Producer;
use celeriac_schema::store::{NodeProgress, Store, StoreSettings, WorkflowState};
use celeriac_schema::workflow::{node_task_id, InputFrom, Node, Workflow};
use celeriac_schema::{Task, TaskId, TaskState};
use celeriac_tests::test_tasks::DagNode;
use celeriac_tests::{
    broker, namespace, read_record, record_file, redis, redis_store, WorkerProcess,
};

const NODES: usize = 1_000;
const WORKERS: usize = 3;
const DELIVERY_LIMIT: &str = "50";

fn worker(ns: &str, url: &str, redis_url: &str, record: &Path) -> WorkerProcess {
    WorkerProcess::start(
        Path::new(env!("CARGO_BIN_EXE_celeriac-test-worker")),
        url,
        ns,
        record,
        &[
            "--redis-url",
            redis_url,
            "--run-lease-ttl",
            "2s",
            "--delivery-limit",
            DELIVERY_LIMIT,
            "--concurrency",
            "16",
            "--prefetch",
            "32",
        ],
    )
}

/// A random DAG (fixed seed): node i depends on up to three earlier nodes.
fn dag() -> (Workflow, Vec<u64>) {
    let mut rng = celeriac_tests::XorShift::new(0x9e37_79b9_7f4a_7c15);
    let mut next = move || rng.next_u64();
    let mut wf = Workflow::new();
    let mut depth = vec![0u64; NODES];
    for i in 0..NODES {
        let mut deps: Vec<usize> = Vec::new();
        if i > 0 {
            for _ in 0..(next() % 4) {
                let d = (next() % i as u64) as usize;
                if !deps.contains(&d) {
                    deps.push(d);
                }
            }
        }
        depth[i] = 1 + deps.iter().map(|&d| depth[d]).max().unwrap_or(0);
        wf.push(
            Node::new(format!("n{i}"), DagNode::NAME, rmpv::Value::Nil)
                .after(deps.iter().map(|d| format!("n{d}")))
                .input_from(InputFrom::ByName),
        );
    }
    (wf, depth)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dag_completes_through_worker_kills_with_every_node_released_once() {
    let ns = namespace("crash-workflow");
    let broker = broker().await;
    let redis_url = redis().await.url.clone();
    let store: Arc<dyn Store> = Arc::new(redis_store(&ns, StoreSettings::default()).await);
    let producer = Producer::builder(&broker.url)
        .namespace(&*ns)
        .delivery_limit(DELIVERY_LIMIT.parse().unwrap())
        .store(store.clone())
        .connect()
        .await
        .unwrap();
    let record = record_file("crash-workflow");
    let (wf, depth) = dag();
    let roots = wf
        .nodes
        .iter()
        .filter(|n| n.dependencies.is_empty())
        .count();
    let edges: usize = wf.nodes.iter().map(|n| n.dependencies.len()).sum();

    let mut workers: Vec<WorkerProcess> = (0..WORKERS)
        .map(|_| worker(&ns, &broker.url, &redis_url, &record))
        .collect();
    let started = Instant::now();
    let handle = producer.submit(&wf, &[]).await.unwrap();

    let mut killed: HashSet<u32> = HashSet::new();
    let mut turn = 0;
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let status = store.get_workflow(handle.id()).await.unwrap().unwrap();
        if status.state != WorkflowState::Running {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {NODES} nodes unfinished at the deadline",
            status.remaining
        );
        if killed.len() < 15 {
            let victim = &mut workers[turn % WORKERS];
            killed.insert(victim.pid());
            victim.signal("KILL");
            victim.wait_timeout(Duration::from_secs(5));
            workers[turn % WORKERS] = worker(&ns, &broker.url, &redis_url, &record);
            turn += 1;
        }
    }
    let elapsed = started.elapsed();
    for worker in &workers {
        worker.signal("TERM");
    }
    for worker in &mut workers {
        worker.wait_timeout(Duration::from_secs(15));
    }

    let status = store.get_workflow(handle.id()).await.unwrap().unwrap();
    assert_eq!(status.state, WorkflowState::Succeeded);
    assert_eq!(status.remaining, 0);
    assert_eq!(
        status.released,
        NODES - roots,
        "every non-root node released exactly once"
    );
    assert!(status
        .progress
        .values()
        .all(|p| *p == NodeProgress::Succeeded));
    let ids: Vec<TaskId> = wf
        .nodes
        .iter()
        .map(|n| node_task_id(wf.id, &n.id))
        .collect();
    let results = store.results(&ids).await.unwrap();
    let mut finished_at: HashMap<TaskId, u64> = HashMap::new();
    for (i, (id, bytes)) in ids.iter().zip(&results).enumerate() {
        let value: u64 = celeriac_schema::store::decode_result(bytes.as_ref().unwrap()).unwrap();
        assert_eq!(value, depth[i], "node n{i} computed from its dependencies");
        let record = store.get(*id).await.unwrap().unwrap();
        assert_eq!(record.state, TaskState::Succeeded);
        finished_at.insert(*id, record.finished_at.unwrap());
    }

    // Every run from the log: no node started after it had succeeded, and
    // every run but the last of a node was in a killed worker.
    let mut starts: HashMap<TaskId, Vec<(u32, u64)>> = HashMap::new();
    for line in read_record(&record) {
        let parts: Vec<&str> = line.split(' ').collect();
        if let ["start", id, pid, at] = parts[..] {
            starts
                .entry(id.parse().unwrap())
                .or_default()
                .push((pid.parse().unwrap(), at.parse().unwrap()));
        }
    }
    assert_eq!(starts.len(), NODES, "every node ran");
    let mut reruns = 0;
    for (id, runs) in &mut starts {
        runs.sort_by_key(|(_, at)| *at);
        for (_, at_us) in runs.iter() {
            assert!(
                at_us / 1000 <= finished_at[id],
                "node {id} ran after it succeeded"
            );
        }
        for (pid, _) in &runs[..runs.len() - 1] {
            assert!(
                killed.contains(pid),
                "node {id} re-ran after a run in live worker {pid}"
            );
            reruns += 1;
        }
    }
    eprintln!(
        "workflow crash test: {}",
        serde_json::json!({
            "nodes": NODES,
            "edges": edges,
            "roots": roots,
            "released": status.released,
            "workers_killed": killed.len(),
            "reruns_from_killed_workers": reruns,
            "seconds": elapsed.as_secs_f64(),
        })
    );
    assert!(killed.len() >= 3, "the run was too short to kill workers");
}
