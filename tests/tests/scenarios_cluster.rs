//! The workflow scenario suite on the cluster: the same cases as on the
//! in-process scheduler, submitted through a producer and run by a worker
//! over RabbitMQ, coordinated through Redis.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use celeriac_consumer::{Registry, TaskContext, TaskError};
use celeriac_producer::{NodeStatus, Producer};
use celeriac_schema::store::{NodeProgress, Store, StoreSettings};
use celeriac_schema::workflow::{InputFrom, Node, Workflow};
use celeriac_schema::{Backoff, RetryPolicy, Task};
use celeriac_tests::scenarios::{self, evaluate, Observed, Scenario, ScenarioNode, Status};
use celeriac_tests::{broker, namespace, redis_store, InProcessWorker};
use serde_json::Value;

/// Error kind of a scenario node's failure.
const SCENARIO_FAILURE: &str = "ScenarioFailure";

/// Every scenario node runs this task; the node's behaviour comes from the
/// case, its inputs from its dependencies' results by name.
struct ScenarioTask;
impl Task for ScenarioTask {
    const NAME: &'static str = "scenario.node";
    type Input = BTreeMap<String, Value>;
    type Output = Value;
}

fn quick_retries(retries: u32) -> RetryPolicy {
    RetryPolicy {
        max_retries: retries,
        backoff: Backoff {
            initial_ms: 100,
            multiplier: 1.0,
            max_ms: 100,
            jitter: 0.0,
        },
    }
}

fn observed(node: &NodeStatus) -> Observed {
    let record = node.record.as_ref();
    Observed {
        status: match node.progress {
            NodeProgress::Succeeded => Status::Success,
            NodeProgress::Skipped => Status::Skipped,
            _ => Status::Failed,
        },
        attempts: node.attempts(),
        error: node.error().map(|e| e.to_string()),
        result: record
            .and_then(|r| r.decode_result::<rmpv::Value>().ok().flatten())
            .and_then(|v| serde_json::to_value(&v).ok()),
    }
}

async fn run_case(scenario: &Scenario) -> Result<(), String> {
    let ns = namespace(&format!("scn-{}", scenario.name.replace('_', "-")));
    let store: Arc<dyn Store> = Arc::new(redis_store(&ns, StoreSettings::default()).await);
    let specs: Arc<HashMap<String, ScenarioNode>> = Arc::new(
        scenario
            .nodes
            .iter()
            .map(|n| (n.id.clone(), n.clone()))
            .collect(),
    );
    let mut registry = Registry::new();
    let nodes = specs.clone();
    registry.register::<ScenarioTask, _, _>(move |inputs, ctx: TaskContext| {
        let spec = ctx
            .envelope()
            .workflow
            .as_ref()
            .and_then(|w| nodes.get(&w.node_id).cloned());
        async move {
            let spec = spec.ok_or_else(|| TaskError::fatal("Scenario", "not a scenario node"))?;
            evaluate(&spec, ctx.attempt() + 1, &inputs)
                .map_err(|m| TaskError::new(SCENARIO_FAILURE, m))
        }
    });
    let worker =
        InProcessWorker::start(&ns, registry, |b| b.concurrency(32).store(store.clone())).await;
    let producer = Producer::builder(&broker().await.url)
        .namespace(&*ns)
        .store(store.clone())
        .connect()
        .await
        .unwrap();

    let mut workflow = Workflow::new();
    for node in &scenario.nodes {
        workflow.push(
            Node::new(node.id.clone(), ScenarioTask::NAME, rmpv::Value::Nil)
                .after(node.dependencies.iter().cloned())
                .input_from(InputFrom::ByName)
                .retry(quick_retries(node.retries)),
        );
    }
    let outcome = match producer.submit(&workflow, &[]).await {
        Err(e) => scenario.check_rejection(&e.to_string()),
        Ok(submitted) => {
            // A failed workflow is an outcome here, not an error.
            let _ = submitted.wait(Duration::from_secs(90)).await;
            let status = submitted
                .status()
                .await
                .map_err(|e| e.to_string())?
                .ok_or("the workflow is unknown to the store")?;
            if status.workflow.remaining != 0 {
                return Err(format!(
                    "scenario {}: {} nodes still unfinished after 90 s",
                    scenario.name, status.workflow.remaining
                ));
            }
            let observed: BTreeMap<String, Observed> = status
                .nodes
                .iter()
                .map(|n| (n.id.clone(), observed(n)))
                .collect();
            scenario.check(&observed)
        }
    };
    worker.shutdown().await;
    outcome
}

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if let Err(e) = run_case(&scenarios::$name()).await {
                    panic!("{e}");
                }
            }
        )*

        #[test]
        fn every_case_of_the_suite_runs_here() {
            let here = [$(stringify!($name)),*];
            let suite: Vec<&str> = scenarios::all().iter().map(|s| s.name).collect();
            assert_eq!(here.as_slice(), suite.as_slice());
        }
    };
}

cases!(
    diamond_all_succeed,
    diamond_b_fails,
    diamond_b_recovers,
    deep_chain,
    fan_out_fan_in,
    transitive_skip,
    all_failing,
    empty,
    single,
    cycle,
    missing_dependency,
    duplicate_id,
);
