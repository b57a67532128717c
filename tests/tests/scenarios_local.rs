//! The workflow scenario suite on the in-process scheduler.

use std::collections::BTreeMap;
use std::time::Duration;

use celeriac_consumer::{LocalScheduler, LocalTask, TaskError, TaskResult, TaskStatus};
use celeriac_tests::scenarios::{self, evaluate, Observed, Scenario, Status};
use serde_json::Value;

/// Error kind of a scenario node's failure.
const SCENARIO_FAILURE: &str = "ScenarioFailure";

fn observed(result: &TaskResult) -> Observed {
    Observed {
        status: match result.status {
            TaskStatus::Success => Status::Success,
            TaskStatus::Failed => Status::Failed,
            TaskStatus::Skipped => Status::Skipped,
        },
        attempts: result.attempts,
        error: result.error.as_ref().map(ToString::to_string),
        result: result.result.clone(),
    }
}

/// Runs a case on a fresh scheduler and checks it.
async fn run_case(scenario: &Scenario) -> Result<(), String> {
    let mut scheduler = LocalScheduler::new();
    for node in &scenario.nodes {
        let spec = node.clone();
        let task = LocalTask::new(move |ctx| {
            let inputs: BTreeMap<String, Value> = ctx
                .inputs()
                .map(|(id, value)| (id.to_owned(), value.clone()))
                .collect();
            let output = evaluate(&spec, ctx.attempt(), &inputs);
            async move { output.map_err(|m| TaskError::new(SCENARIO_FAILURE, m)) }
        });
        let deps: Vec<&str> = node.dependencies.iter().map(String::as_str).collect();
        if let Err(e) = scheduler.add_task(node.id.clone(), task, &deps, node.retries) {
            return scenario.check_rejection(&e.to_string());
        }
    }
    let run = tokio::time::timeout(Duration::from_secs(60), scheduler.run())
        .await
        .map_err(|_| format!("scenario {} did not finish in 60 s", scenario.name))?;
    match run {
        Err(e) => scenario.check_rejection(&e.to_string()),
        Ok(results) => {
            let observed = results
                .iter()
                .map(|(id, r)| (id.clone(), observed(r)))
                .collect();
            scenario.check(&observed)
        }
    }
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
