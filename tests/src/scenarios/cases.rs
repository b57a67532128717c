//! The cases of the suite.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Behaviour, Expectation, ExpectedNode, Scenario, ScenarioNode, Status};

pub(super) fn node(
    id: &str,
    dependencies: &[&str],
    behaviour: Behaviour,
    retries: u32,
) -> ScenarioNode {
    ScenarioNode {
        id: id.to_owned(),
        dependencies: dependencies.iter().map(|d| (*d).to_owned()).collect(),
        behaviour,
        retries,
    }
}

fn success(attempts: u32, result: i64) -> ExpectedNode {
    ExpectedNode {
        status: Status::Success,
        attempts,
        error_contains: None,
        result: Some(Value::from(result)),
    }
}

fn failed(attempts: u32, error: String) -> ExpectedNode {
    ExpectedNode {
        status: Status::Failed,
        attempts,
        error_contains: Some(error),
        result: None,
    }
}

fn skipped() -> ExpectedNode {
    ExpectedNode {
        status: Status::Skipped,
        attempts: 0,
        error_contains: None,
        result: None,
    }
}

fn outcomes<const N: usize>(nodes: [(&str, ExpectedNode); N]) -> Expectation {
    Expectation::Outcomes(
        nodes
            .into_iter()
            .map(|(id, e)| (id.to_owned(), e))
            .collect(),
    )
}

/// A → {B, C} → D, and E on its own, with B behaving as given.
fn diamond(b: Behaviour, b_retries: u32) -> Vec<ScenarioNode> {
    vec![
        node("a", &[], Behaviour::Succeed, 0),
        node("b", &["a"], b, b_retries),
        node("c", &["a"], Behaviour::Succeed, 0),
        node("d", &["b", "c"], Behaviour::Succeed, 0),
        node("e", &[], Behaviour::Succeed, 0),
    ]
}

/// The diamond, everything succeeding: d = 1 + b + c = 5.
pub fn diamond_all_succeed() -> Scenario {
    Scenario {
        name: "diamond_all_succeed",
        nodes: diamond(Behaviour::Succeed, 0),
        expected: outcomes([
            ("a", success(1, 1)),
            ("b", success(1, 2)),
            ("c", success(1, 2)),
            ("d", success(1, 5)),
            ("e", success(1, 1)),
        ]),
    }
}

/// The diamond with B always failing and 2 retries: B fails after 3
/// attempts with its last error, D is skipped, A, C and E succeed.
pub fn diamond_b_fails() -> Scenario {
    Scenario {
        name: "diamond_b_fails",
        nodes: diamond(Behaviour::AlwaysFail, 2),
        expected: outcomes([
            ("a", success(1, 1)),
            ("b", failed(3, "b failed on attempt 3".into())),
            ("c", success(1, 2)),
            ("d", skipped()),
            ("e", success(1, 1)),
        ]),
    }
}

/// The diamond with B failing twice, then succeeding on its last retry.
pub fn diamond_b_recovers() -> Scenario {
    Scenario {
        name: "diamond_b_recovers",
        nodes: diamond(Behaviour::FailTimes(2), 2),
        expected: outcomes([
            ("a", success(1, 1)),
            ("b", success(3, 2)),
            ("c", success(1, 2)),
            ("d", success(1, 5)),
            ("e", success(1, 1)),
        ]),
    }
}

/// Length of [`deep_chain`].
pub const CHAIN_LENGTH: usize = 100;

/// `n0 → n1 → … → n99`: node i returns i + 1.
pub fn deep_chain() -> Scenario {
    let ids: Vec<String> = (0..CHAIN_LENGTH).map(|i| format!("n{i}")).collect();
    let nodes = (0..CHAIN_LENGTH)
        .map(|i| ScenarioNode {
            id: ids[i].clone(),
            dependencies: if i == 0 {
                vec![]
            } else {
                vec![ids[i - 1].clone()]
            },
            behaviour: Behaviour::Succeed,
            retries: 0,
        })
        .collect();
    let expected = (0..CHAIN_LENGTH)
        .map(|i| (ids[i].clone(), success(1, i as i64 + 1)))
        .collect();
    Scenario {
        name: "deep_chain",
        nodes,
        expected: Expectation::Outcomes(expected),
    }
}

/// Width of [`fan_out_fan_in`].
pub const FAN_WIDTH: usize = 200;

/// `source → {m0 … m199} → sink`: each middle node returns 2, the sink
/// 1 + 200 × 2.
pub fn fan_out_fan_in() -> Scenario {
    let middle: Vec<String> = (0..FAN_WIDTH).map(|i| format!("m{i}")).collect();
    let mut nodes = vec![node("source", &[], Behaviour::Succeed, 0)];
    let mut expected = BTreeMap::from([("source".to_owned(), success(1, 1))]);
    for id in &middle {
        nodes.push(node(id, &["source"], Behaviour::Succeed, 0));
        expected.insert(id.clone(), success(1, 2));
    }
    nodes.push(ScenarioNode {
        id: "sink".into(),
        dependencies: middle,
        behaviour: Behaviour::Succeed,
        retries: 0,
    });
    expected.insert("sink".into(), success(1, 1 + 2 * FAN_WIDTH as i64));
    Scenario {
        name: "fan_out_fan_in",
        nodes,
        expected: Expectation::Outcomes(expected),
    }
}

/// A failure deep in one branch skips everything downstream of it, however
/// far, and nothing else: `a → b(fails) → c → d`, `x → y`, and `z` needing
/// both `d` and `y`.
pub fn transitive_skip() -> Scenario {
    Scenario {
        name: "transitive_skip",
        nodes: vec![
            node("a", &[], Behaviour::Succeed, 0),
            node("b", &["a"], Behaviour::AlwaysFail, 1),
            node("c", &["b"], Behaviour::Succeed, 3),
            node("d", &["c"], Behaviour::Succeed, 0),
            node("x", &[], Behaviour::Succeed, 0),
            node("y", &["x"], Behaviour::Succeed, 0),
            node("z", &["d", "y"], Behaviour::Succeed, 0),
        ],
        expected: outcomes([
            ("a", success(1, 1)),
            ("b", failed(2, "b failed on attempt 2".into())),
            ("c", skipped()),
            ("d", skipped()),
            ("x", success(1, 1)),
            ("y", success(1, 2)),
            ("z", skipped()),
        ]),
    }
}

/// Every root fails (one retry each); everything else is skipped.
pub fn all_failing() -> Scenario {
    let mut nodes = Vec::new();
    let mut expected = BTreeMap::new();
    for i in 0..3 {
        let root = format!("root{i}");
        nodes.push(node(&root, &[], Behaviour::AlwaysFail, 1));
        nodes.push(node(
            &format!("leaf{i}"),
            &[&root],
            Behaviour::AlwaysFail,
            1,
        ));
        expected.insert(
            root.clone(),
            failed(2, format!("{root} failed on attempt 2")),
        );
        expected.insert(format!("leaf{i}"), skipped());
    }
    Scenario {
        name: "all_failing",
        nodes,
        expected: Expectation::Outcomes(expected),
    }
}

/// No node at all.
pub fn empty() -> Scenario {
    Scenario {
        name: "empty",
        nodes: Vec::new(),
        expected: Expectation::Outcomes(BTreeMap::new()),
    }
}

/// One node.
pub fn single() -> Scenario {
    Scenario {
        name: "single",
        nodes: vec![node("only", &[], Behaviour::Succeed, 0)],
        expected: outcomes([("only", success(1, 1))]),
    }
}

/// `a → b → c → a`, beside an innocent `e`: refused, naming the cycle.
pub fn cycle() -> Scenario {
    Scenario {
        name: "cycle",
        nodes: vec![
            node("e", &[], Behaviour::Succeed, 0),
            node("a", &["c"], Behaviour::Succeed, 0),
            node("b", &["a"], Behaviour::Succeed, 0),
            node("c", &["b"], Behaviour::Succeed, 0),
        ],
        expected: Expectation::Rejected {
            mentions: vec!["a -> b -> c -> a".into()],
        },
    }
}

/// `b` depends on `ghost`, which is not a node: refused, naming both.
pub fn missing_dependency() -> Scenario {
    Scenario {
        name: "missing_dependency",
        nodes: vec![
            node("a", &[], Behaviour::Succeed, 0),
            node("b", &["a", "ghost"], Behaviour::Succeed, 0),
        ],
        expected: Expectation::Rejected {
            mentions: vec!["b".into(), "ghost".into()],
        },
    }
}

/// Two nodes named `twin`: refused, naming it.
pub fn duplicate_id() -> Scenario {
    Scenario {
        name: "duplicate_id",
        nodes: vec![
            node("twin", &[], Behaviour::Succeed, 0),
            node("twin", &[], Behaviour::Succeed, 0),
        ],
        expected: Expectation::Rejected {
            mentions: vec!["twin".into()],
        },
    }
}

/// Every case of the suite.
pub fn all() -> Vec<Scenario> {
    vec![
        diamond_all_succeed(),
        diamond_b_fails(),
        diamond_b_recovers(),
        deep_chain(),
        fan_out_fan_in(),
        transitive_skip(),
        all_failing(),
        empty(),
        single(),
        cycle(),
        missing_dependency(),
        duplicate_id(),
    ]
}
