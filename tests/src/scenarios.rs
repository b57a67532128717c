//! Workflow cases every executor must run the same way, as data.
//!
//! A [`Scenario`] is a DAG of nodes, each with a [`Behaviour`] and a number
//! of retries, and what each node must end as: its [`Status`], its attempts,
//! part of its error and, for nodes that succeed, its result. Or, for a
//! graph that must be refused, what the refusal must name.
//!
//! An executor runs a case by giving every node a task that calls
//! [`evaluate`] with the node, the attempt and the results of its
//! dependencies by id, then hands what it observed to [`Scenario::check`]
//! (or the refusal to [`Scenario::check_rejection`]). Results are `1 + the
//! sum of the dependencies' results`, so a wrong or missing edge shows in the
//! numbers.

mod cases;

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

/// What a node's task does on each attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Succeeds on the first attempt.
    Succeed,
    /// Fails on every attempt.
    AlwaysFail,
    /// Fails on attempts 1 to n, then succeeds.
    FailTimes(u32),
}

/// One node of a case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioNode {
    /// Its id.
    pub id: String,
    /// Ids it depends on.
    pub dependencies: Vec<String>,
    /// What its task does.
    pub behaviour: Behaviour,
    /// Retries after a failed attempt.
    pub retries: u32,
}

/// How a node ended, in words every executor has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// It returned a result.
    Success,
    /// Its last attempt failed.
    Failed,
    /// It never ran.
    Skipped,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Success => "success",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
        })
    }
}

/// What a node must end as.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpectedNode {
    /// Its status.
    pub status: Status,
    /// How many times it ran.
    pub attempts: u32,
    /// Text its error must contain.
    pub error_contains: Option<String>,
    /// Its result, for a node that succeeds.
    pub result: Option<Value>,
}

/// What a node ended as, as an executor observed it.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// Its status.
    pub status: Status,
    /// How many times it ran.
    pub attempts: u32,
    /// Its error, as text.
    pub error: Option<String>,
    /// Its result.
    pub result: Option<Value>,
}

/// How a case must end.
#[derive(Debug, Clone, PartialEq)]
pub enum Expectation {
    /// It runs, and every node ends as given (no more nodes, no fewer).
    Outcomes(BTreeMap<String, ExpectedNode>),
    /// It is refused before anything runs, with an error containing each of
    /// these texts.
    Rejected {
        /// Texts the error must contain.
        mentions: Vec<String>,
    },
}

/// One case of the suite.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// A short name, usable as a test name.
    pub name: &'static str,
    /// The nodes, in the order they are submitted.
    pub nodes: Vec<ScenarioNode>,
    /// How it must end.
    pub expected: Expectation,
}

/// What a node's task does on `attempt` (1 for the first) given its
/// dependencies' results by id: fails as its [`Behaviour`] says, with
/// `"{id} failed on attempt {attempt}"`, or returns `1 + the sum of its
/// inputs`. It also fails when the inputs are not exactly its
/// dependencies, so an executor that passes the wrong ones fails the case.
///
/// # Errors
///
/// The failure message, as above.
pub fn evaluate(
    node: &ScenarioNode,
    attempt: u32,
    inputs: &BTreeMap<String, Value>,
) -> Result<Value, String> {
    let mut expected: Vec<&str> = node.dependencies.iter().map(String::as_str).collect();
    expected.sort_unstable();
    expected.dedup();
    let given: Vec<&str> = inputs.keys().map(String::as_str).collect();
    if given != expected {
        return Err(format!(
            "{} got inputs {given:?} instead of its dependencies {expected:?}",
            node.id
        ));
    }
    let fails = match node.behaviour {
        Behaviour::Succeed => false,
        Behaviour::AlwaysFail => true,
        Behaviour::FailTimes(n) => attempt <= n,
    };
    if fails {
        return Err(format!("{} failed on attempt {attempt}", node.id));
    }
    let mut sum: i64 = 1;
    for (id, value) in inputs {
        let Some(v) = value.as_i64() else {
            return Err(format!(
                "{} got a non-integer input from {id}: {value}",
                node.id
            ));
        };
        sum += v;
    }
    Ok(Value::from(sum))
}

impl Scenario {
    /// Compares what an executor observed with what this case expects.
    ///
    /// # Errors
    ///
    /// Every difference, one a line; or that the case should have been
    /// refused.
    pub fn check(&self, observed: &BTreeMap<String, Observed>) -> Result<(), String> {
        match &self.expected {
            Expectation::Outcomes(expected) => check_outcomes(expected, observed)
                .map_err(|e| format!("scenario {}:\n{e}", self.name)),
            Expectation::Rejected { mentions } => Err(format!(
                "scenario {} should have been refused naming {mentions:?}, but it ran",
                self.name
            )),
        }
    }

    /// Checks the error with which an executor refused this case.
    ///
    /// # Errors
    ///
    /// When the case should have run, or the error lacks a text it must
    /// contain.
    pub fn check_rejection(&self, error: &str) -> Result<(), String> {
        match &self.expected {
            Expectation::Rejected { mentions } => {
                let missing: Vec<&String> = mentions
                    .iter()
                    .filter(|m| !error.contains(m.as_str()))
                    .collect();
                if missing.is_empty() {
                    Ok(())
                } else {
                    Err(format!(
                        "scenario {}: the error {error:?} does not mention {missing:?}",
                        self.name
                    ))
                }
            }
            Expectation::Outcomes(_) => Err(format!(
                "scenario {} should have run, but it was refused: {error}",
                self.name
            )),
        }
    }
}

/// Compares observed outcomes with expected ones, node by node.
///
/// # Errors
///
/// Every difference, one a line: missing or unexpected nodes, and per node
/// a wrong status, attempt count, error or result.
pub fn check_outcomes(
    expected: &BTreeMap<String, ExpectedNode>,
    observed: &BTreeMap<String, Observed>,
) -> Result<(), String> {
    let mut problems = Vec::new();
    for id in observed.keys() {
        if !expected.contains_key(id) {
            problems.push(format!("{id}: reported but not part of the workflow"));
        }
    }
    for (id, want) in expected {
        let Some(got) = observed.get(id) else {
            problems.push(format!("{id}: no outcome reported"));
            continue;
        };
        if got.status != want.status {
            problems.push(format!(
                "{id}: status {} instead of {}",
                got.status, want.status
            ));
        }
        if got.attempts != want.attempts {
            problems.push(format!(
                "{id}: {} attempts instead of {}",
                got.attempts, want.attempts
            ));
        }
        if let Some(text) = &want.error_contains {
            match &got.error {
                Some(error) if error.contains(text.as_str()) => {}
                Some(error) => {
                    problems.push(format!("{id}: error {error:?} does not contain {text:?}"))
                }
                None => problems.push(format!("{id}: no error, expected one containing {text:?}")),
            }
        }
        if want.result.is_some() && got.result != want.result {
            problems.push(format!(
                "{id}: result {:?} instead of {:?}",
                got.result, want.result
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

pub use cases::{
    all, all_failing, cycle, deep_chain, diamond_all_succeed, diamond_b_fails, diamond_b_recovers,
    duplicate_id, empty, fan_out_fan_in, missing_dependency, single, transitive_skip, CHAIN_LENGTH,
    FAN_WIDTH,
};
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::cases::node;
    use super::*;

    /// Runs a case sequentially in topological order, with no executor:
    /// the expectations must agree with [`evaluate`].
    fn reference_run(scenario: &Scenario) -> BTreeMap<String, Observed> {
        let mut out: BTreeMap<String, Observed> = BTreeMap::new();
        let mut pending: Vec<&ScenarioNode> = scenario.nodes.iter().collect();
        while !pending.is_empty() {
            let before = pending.len();
            pending.retain(|n| {
                let deps: Option<Vec<&Observed>> =
                    n.dependencies.iter().map(|d| out.get(d)).collect();
                let Some(deps) = deps else { return true };
                let observed = if deps.iter().any(|d| d.status != Status::Success) {
                    Observed {
                        status: Status::Skipped,
                        attempts: 0,
                        error: None,
                        result: None,
                    }
                } else {
                    let inputs: BTreeMap<String, Value> = n
                        .dependencies
                        .iter()
                        .zip(&deps)
                        .map(|(id, o)| (id.clone(), o.result.clone().unwrap()))
                        .collect();
                    let mut attempt = 1;
                    loop {
                        match evaluate(n, attempt, &inputs) {
                            Ok(v) => {
                                break Observed {
                                    status: Status::Success,
                                    attempts: attempt,
                                    error: None,
                                    result: Some(v),
                                }
                            }
                            Err(e) if attempt > n.retries => {
                                break Observed {
                                    status: Status::Failed,
                                    attempts: attempt,
                                    error: Some(e),
                                    result: None,
                                }
                            }
                            Err(_) => attempt += 1,
                        }
                    }
                };
                out.insert(n.id.clone(), observed);
                false
            });
            assert!(
                pending.len() < before,
                "{} does not progress",
                scenario.name
            );
        }
        out
    }

    #[test]
    fn expectations_agree_with_a_reference_run() {
        for scenario in all() {
            if let Expectation::Outcomes(_) = scenario.expected {
                scenario.check(&reference_run(&scenario)).unwrap();
            }
        }
    }

    #[test]
    fn the_checker_reports_every_difference() {
        let scenario = diamond_b_fails();
        let mut observed = reference_run(&scenario);
        observed.get_mut("b").map(|b| b.attempts = 2).unwrap();
        observed
            .get_mut("c")
            .map(|c| c.result = Some(Value::from(7)))
            .unwrap();
        observed.remove("e");
        let err = scenario.check(&observed).unwrap_err();
        assert!(err.contains("b: 2 attempts instead of 3"), "{err}");
        assert!(err.contains("c: result"), "{err}");
        assert!(err.contains("e: no outcome"), "{err}");
        assert!(scenario.check_rejection("nope").is_err());
        assert!(cycle().check_rejection("cycle: a -> b -> c -> a").is_ok());
        assert!(cycle().check_rejection("cycle: b -> c -> a -> b").is_err());
    }

    #[test]
    fn evaluate_rejects_wrong_inputs() {
        let n = node("d", &["b", "c"], Behaviour::Succeed, 0);
        let only_b = BTreeMap::from([("b".to_owned(), Value::from(1))]);
        assert!(evaluate(&n, 1, &only_b).unwrap_err().contains("instead of"));
    }
}
