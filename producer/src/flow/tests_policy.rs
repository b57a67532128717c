//! Tests of the `tenant:` and `pools:` settings.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use celeriac_schema::TaskId;

use super::*;

fn flow(text: &str) -> Flow {
    match Flow::parse(text, "flow.yaml") {
        Ok(flow) => flow,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn tenant_and_pools_are_inherited_and_reach_the_envelope() {
    let f = flow(
        "name: n\ndefaults: {tenant: acme, pools: {db: 1}}\ntasks:\n  a: {task: t}\n  b: {task: t, tenant: other, pools: {gpu: 2}}\n",
    );
    let a = f.task("a").unwrap();
    assert_eq!(a.tenant.as_deref(), Some("acme"));
    assert_eq!(a.pools, BTreeMap::from([("db".to_owned(), 1)]));
    let b = f.task("b").unwrap();
    assert_eq!(b.tenant.as_deref(), Some("other"));
    assert_eq!(
        b.pools,
        BTreeMap::from([("gpu".to_owned(), 2)]),
        "its own map replaces the default"
    );
    let env = b.node().envelope(TaskId::new(), rmpv::Value::Nil);
    assert_eq!(env.tenant.as_deref(), Some("other"));
    assert_eq!(env.pools.get("gpu"), Some(&2));
}

#[test]
fn bad_pools_and_tenants_say_where() {
    for (text, key) in [
        (
            "name: n\ntasks:\n  a: {task: t, pools: {gpu: 0}}\n",
            "tasks.a.pools.gpu",
        ),
        (
            "name: n\ntasks:\n  a: {task: t, pools: {gpu: many}}\n",
            "tasks.a.pools.gpu",
        ),
        (
            "name: n\ntasks:\n  a: {task: t, pools: [gpu]}\n",
            "tasks.a.pools",
        ),
        (
            "name: n\ntasks:\n  a: {task: t, tenant: \"\"}\n",
            "tasks.a.tenant",
        ),
    ] {
        let err = match Flow::parse(text, "flow.yaml") {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e,
        };
        assert_eq!(err.key(), key, "{err}");
    }
}
