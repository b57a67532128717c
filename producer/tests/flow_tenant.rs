//! The `tenant:` key of YAML flows: set on a task, inherited from a block
//! or `defaults`, carried into the node and its envelope, and checked.

#![allow(clippy::unwrap_used)]

use celeriac_producer::flow::Flow;
use celeriac_schema::TaskId;

const FLOW: &str = "\
name: report
defaults:
  tenant: acme
tasks:
  fetch:
    run: [echo, hi]
  crunch:
    task: stats.crunch
    tenant: globex
    needs: [fetch]
  publish:
    sequence:
      - upload: {run: [echo, up]}
    tenant: initech
";

fn tenant_of<'a>(flow: &'a Flow, id: &str) -> Option<&'a str> {
    let task = flow.tasks().iter().find(|t| t.id == id).unwrap();
    task.tenant.as_deref()
}

#[test]
fn tenants_come_from_the_task_its_block_or_the_defaults() {
    let flow = Flow::parse(FLOW, "report.yaml").unwrap();
    assert_eq!(tenant_of(&flow, "fetch"), Some("acme"));
    assert_eq!(tenant_of(&flow, "crunch"), Some("globex"));
    assert_eq!(tenant_of(&flow, "publish.upload"), Some("initech"));
}

#[test]
fn the_tenant_reaches_the_node_and_its_envelope() {
    let flow = Flow::parse(FLOW, "report.yaml").unwrap();
    let crunch = flow.tasks().iter().find(|t| t.id == "crunch").unwrap();
    let node = crunch.node();
    assert_eq!(node.tenant.as_deref(), Some("globex"));
    let envelope = node.envelope(TaskId::new(), rmpv::Value::Nil);
    assert_eq!(envelope.tenant.as_deref(), Some("globex"));
}

#[test]
fn a_flow_without_tenants_has_none() {
    let flow = Flow::parse("name: n\ntasks:\n  a: {run: [echo, hi]}\n", "n.yaml").unwrap();
    assert_eq!(flow.tasks()[0].tenant, None);
    assert_eq!(flow.tasks()[0].node().tenant, None);
}

#[test]
fn a_bad_tenant_is_refused_with_its_place_and_reason() {
    for (value, reason) in [
        ("\"\"", "must not be empty"),
        (
            &format!("\"{}\"", "t".repeat(129)) as &str,
            "at most 128 bytes",
        ),
    ] {
        let text = format!("name: n\ntasks:\n  a: {{run: [echo, hi], tenant: {value}}}\n");
        let error = Flow::parse(&text, "n.yaml").unwrap_err().to_string();
        assert!(error.contains("tasks.a.tenant"), "{error}");
        assert!(error.contains(reason), "{error}");
        assert!(error.contains("n.yaml:3"), "{error}");
    }
    let error = Flow::parse(
        "name: n\ntasks:\n  a: {run: [echo, hi], tenant: [x]}\n",
        "n.yaml",
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("a string"), "{error}");
}
