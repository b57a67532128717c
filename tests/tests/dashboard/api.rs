//! The JSON API: what each endpoint shows of what was sent (the rules for
//! logins and writes are in `auth.rs`).

use std::time::Duration;

use celeriac_producer::SendOptions;
use celeriac_schema::store::Store;
use celeriac_schema::workflow::{Node, Workflow};
use celeriac_schema::{TaskId, TaskState};
use serde_json::{json, Value};

use crate::support::{request, setup_with, until, Add, Flaky, Options, Setup, FLAKY_ERROR};

pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// Waits until the task reached a final state.
pub(crate) async fn finished(s: &Setup, id: TaskId) -> TaskState {
    until(WAIT, "the task to finish", || async {
        let r = s.store.get(id).await.ok().flatten()?;
        r.state.is_terminal().then_some(r.state)
    })
    .await
}

pub(crate) async fn dead_letter_depth(s: &Setup) -> u64 {
    dead_letter_depth_as(s, &[]).await
}

/// The dead letters of queue `default`, as a client sending `auth` sees
/// them.
pub(crate) async fn dead_letter_depth_as(s: &Setup, auth: &[(&str, &str)]) -> u64 {
    let q = s.get_json("/api/queues", auth).await;
    q["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == "default")
        .and_then(|q| q["dead_letters"].as_u64())
        .unwrap_or(0)
}

pub(crate) fn ids(list: &Value, key: &str) -> Vec<String> {
    list[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect()
}

pub(crate) fn lane_names(queue: &Value) -> Vec<String> {
    queue["lanes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["lane"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_shows_what_was_sent() {
    let options = Options {
        queues: &["reports"],
        fair: Some(("tenants", 2)),
        ..Options::default()
    };
    let s = setup_with("dash-api", options, |_| {}).await;
    let opts = SendOptions::default();
    // "reports": no consumer, one task waiting in its own queue and two
    // messages in a tolerance class queue (declared here, as no worker
    // declares its lanes).
    s.producer.ensure_queue("reports").await.unwrap();
    s.producer
        .send::<Add>(&(1, 1), &SendOptions::default().queue("reports"))
        .await
        .unwrap();
    let lane = s.ns.topology().tolerance_queue("reports", 5);
    let (_conn, channel) = celeriac_tests::broker().await.channel().await;
    channel
        .queue_declare(
            lane.as_str().into(),
            lapin::options::QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    for _ in 0..2 {
        channel
            .basic_publish(
                "".into(),
                lane.as_str().into(),
                lapin::options::BasicPublishOptions::default(),
                b"waits in its class",
                lapin::BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let mut adds = Vec::new();
    for i in 0..3 {
        adds.push(s.producer.send::<Add>(&(i, 1), &opts).await.unwrap().id());
    }
    let flaky = s
        .producer
        .send::<Flaky>(&"inv-1".to_owned(), &opts)
        .await
        .unwrap()
        .id();
    let mut wf = Workflow::new();
    let arg = |a: i64| rmpv::Value::Array(vec![a.into(), 1.into()]);
    wf.push(Node::new("extract", "dash.add", arg(1)));
    wf.push(Node::new("left", "dash.add", arg(2)).after(["extract"]));
    wf.push(Node::new("right", "dash.add", arg(3)).after(["extract"]));
    wf.push(Node::new("join", "dash.add", arg(4)).after(["left", "right"]));
    let workflow = s.producer.submit(&wf, &[]).await.unwrap();
    for id in &adds {
        assert_eq!(finished(&s, *id).await, TaskState::Succeeded);
    }
    assert_eq!(finished(&s, flaky).await, TaskState::Failed);
    workflow.wait(WAIT).await.unwrap();

    // Queues: the default queue, its consumer, its dead letter.
    let queues = s.get_json("/api/queues", &[]).await;
    let default = queues["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == "default")
        .unwrap_or_else(|| panic!("the default queue is listed: {queues}"))
        .clone();
    assert_eq!(
        default["broker_queue"],
        format!("{}.q.default", s.ns.name())
    );
    assert!(default["consumers"].as_u64().unwrap() >= 1, "{default}");
    assert_eq!(default["dead_letters"], 1, "{default}");
    assert_eq!(default["messages"], 0, "{default}");

    // A logical queue's lanes are listed inside it, not as queues of
    // their own: the tolerance classes the worker declares with each
    // queue, and the fair queue's shards. Its figures are their sums.
    let names: Vec<&str> = queues["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["queue"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default", "reports", "tenants"], "{queues}");
    let tolerance: Vec<String> = (0..6).map(|k| format!("default.tol.{k}")).collect();
    assert_eq!(lane_names(&default), tolerance, "{default}");
    for lane in default["lanes"].as_array().unwrap() {
        assert_eq!(lane["kind"], "tolerance", "{lane}");
        assert_eq!(
            lane["broker_queue"],
            format!("{}.q.{}", s.ns.name(), lane["lane"].as_str().unwrap())
        );
        assert_eq!(lane["consumers"], 1, "one worker consumes each: {lane}");
    }
    assert_eq!(default["lanes"][2]["index"], 2);
    assert_eq!(default["consumers"], 1, "one worker: {default}");
    let find = |name: &str| {
        queues["queues"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["queue"] == name)
            .unwrap()
            .clone()
    };
    let tenants = find("tenants");
    let shards: Vec<String> = tenants["lanes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["kind"] == "fair")
        .map(|l| l["lane"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(shards, ["tenants.f.0", "tenants.f.1"], "{tenants}");
    assert!(
        tenants["lanes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["consumers"] == 1),
        "{tenants}"
    );
    assert_eq!(tenants["consumers"], 1, "one worker: {tenants}");
    let reports = find("reports");
    assert_eq!(lane_names(&reports), ["reports.tol.5"], "{reports}");
    assert_eq!(reports["lanes"][0]["messages"], 2, "{reports}");
    // One task in its own queue, two in the lane.
    assert_eq!(reports["messages"], 3, "{reports}");
    assert_eq!(reports["ready"], 3, "{reports}");
    assert_eq!(reports["consumers"], 0, "{reports}");

    // Tasks: everything sent, newest first; filters narrow it down.
    let all = s.get_json("/api/tasks", &[]).await;
    let listed = ids(&all, "tasks");
    for id in adds.iter().chain([&flaky]) {
        assert!(listed.contains(&id.to_string()), "{id} listed in {all}");
    }
    assert_eq!(listed.len(), 3 + 1 + 4 + 1, "{all}");
    let stamps: Vec<u64> = all["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["updated_at"].as_u64().unwrap())
        .collect();
    assert!(
        stamps.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {stamps:?}"
    );
    let failed = s.get_json("/api/tasks?state=failed", &[]).await;
    assert_eq!(ids(&failed, "tasks"), vec![flaky.to_string()]);
    let named = s.get_json("/api/tasks?task=flaky&queue=default", &[]).await;
    assert_eq!(ids(&named, "tasks"), vec![flaky.to_string()]);
    let other = s.get_json("/api/tasks?queue=elsewhere", &[]).await;
    assert!(ids(&other, "tasks").is_empty());
    let future = celeriac_schema::now_ms() + 60_000;
    let later = s.get_json(&format!("/api/tasks?since={future}"), &[]).await;
    assert!(ids(&later, "tasks").is_empty());
    // `until` keeps the tasks whose latest state is no later; with `since`
    // it is a window.
    let middle = stamps[stamps.len() / 2];
    let older = s.get_json(&format!("/api/tasks?until={middle}"), &[]).await;
    let expected: Vec<&Value> = all["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["updated_at"].as_u64().unwrap() <= middle)
        .collect();
    assert!(!expected.is_empty() && expected.len() < stamps.len());
    assert_eq!(
        ids(&older, "tasks").len(),
        expected.len(),
        "until={middle}: {older}"
    );
    assert!(older["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["updated_at"].as_u64().unwrap() <= middle));
    let oldest = *stamps.last().unwrap();
    let before = s
        .get_json(&format!("/api/tasks?until={}", oldest - 1), &[])
        .await;
    assert!(ids(&before, "tasks").is_empty(), "{before}");
    let window = s
        .get_json(&format!("/api/tasks?since={middle}&until={middle}"), &[])
        .await;
    let at_middle = stamps.iter().filter(|t| **t == middle).count();
    assert_eq!(ids(&window, "tasks").len(), at_middle, "{window}");
    let limited = s.get_json("/api/tasks?limit=2", &[]).await;
    assert_eq!(ids(&limited, "tasks").len(), 2);
    assert_eq!(limited["truncated"], true);
    let bad = request(s.addr, "GET", "/api/tasks?state=exploded", &[], None).await;
    assert_eq!(bad.status, 400);
    assert!(bad.json()["error"].as_str().unwrap().contains("exploded"));

    // Task detail: why it failed, and a result.
    let detail = s.get_json(&format!("/api/tasks/{flaky}"), &[]).await;
    assert_eq!(detail["state"], "failed");
    assert_eq!(detail["error"]["type"], "UpstreamRefused");
    assert_eq!(detail["error"]["message"], FLAKY_ERROR);
    assert!(detail["worker"].is_string(), "{detail}");
    // Its creation time: the producer's, else the earliest time known.
    let created = detail["created_at"].as_u64().unwrap();
    let first = detail["history"][0]["at"].as_u64().unwrap();
    assert!(created <= first, "{detail}");
    if let Some(queued) = detail["queued_at"].as_u64() {
        assert!(created <= queued, "{detail}");
    }
    assert!(detail["created_at_inferred"].is_boolean(), "{detail}");
    let states: Vec<&str> = detail["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["state"].as_str().unwrap())
        .collect();
    assert!(states.ends_with(&["started", "failed"]), "{states:?}");
    let sum = s.get_json(&format!("/api/tasks/{}", adds[2]), &[]).await;
    assert_eq!(sum["result"], json!(3));
    let unknown = request(
        s.addr,
        "GET",
        &format!("/api/tasks/{}", TaskId::new()),
        &[],
        None,
    )
    .await;
    assert_eq!(unknown.status, 404);
    assert_eq!(
        request(s.addr, "GET", "/api/tasks/nope", &[], None)
            .await
            .status,
        400
    );

    // Workflows: listed, and the DAG by depth with every node's state.
    let wfs = s.get_json("/api/workflows", &[]).await;
    assert_eq!(wfs["workflows"][0]["id"], workflow.id().to_string());
    assert_eq!(wfs["workflows"][0]["state"], "succeeded");
    let dag = s
        .get_json(&format!("/api/workflows/{}", workflow.id()), &[])
        .await;
    let depth: std::collections::BTreeMap<String, (u64, String)> = dag["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["id"].as_str().unwrap().to_owned(),
                (
                    n["depth"].as_u64().unwrap(),
                    n["state"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect();
    assert_eq!(depth["extract"].0, 0);
    assert_eq!((depth["left"].0, depth["right"].0), (1, 1));
    assert_eq!(depth["join"].0, 2);
    assert!(depth.values().all(|(_, st)| st == "succeeded"), "{depth:?}");

    // Workers: no heartbeat source here, the worker seen in the tasks.
    let workers = s.get_json("/api/workers", &[]).await;
    assert!(workers["heartbeats"].is_null());
    let seen = &workers["seen"][0];
    assert_eq!(seen["worker"], detail["worker"]);
    assert_eq!(seen["failed"], 1);
    assert!(seen["succeeded"].as_u64().unwrap() >= 7, "{seen}");

    // Dead letters: listed and inspected, with the failure and the input.
    let letters = s.get_json("/api/dead-letters", &[]).await;
    assert_eq!(letters["letters"][0]["task_id"], flaky.to_string());
    assert_eq!(letters["letters"][0]["error_type"], "UpstreamRefused");
    assert_eq!(letters["queues"][0]["depth"], 1);
    let letter = s
        .get_json(&format!("/api/dead-letters/default/{flaky}"), &[])
        .await;
    assert_eq!(letter["input"], "inv-1");
    assert_eq!(letter["error_message"], FLAKY_ERROR);
    assert!(letter["headers"]["celeriac-reason"].is_object(), "{letter}");
    let missing = request(
        s.addr,
        "GET",
        &format!("/api/dead-letters/default/{}", TaskId::new()),
        &[],
        None,
    )
    .await;
    assert_eq!(missing.status, 404);
    // Looking changes nothing.
    assert_eq!(dead_letter_depth(&s).await, 1);

    // Read-only without a login: writes answer 403 and say why.
    let config = s.get_json("/api/config", &[]).await;
    assert_eq!(config["read_only"], true);
    let body = json!({"queue": "default", "ids": [flaky.to_string()]}).to_string();
    let refused = request(s.addr, "POST", "/api/dead-letters/replay", &[], Some(&body)).await;
    assert_eq!(refused.status, 403);
    assert!(refused.json()["error"]
        .as_str()
        .unwrap()
        .contains("--token-file"));
    let refused = request(
        s.addr,
        "POST",
        &format!("/api/tasks/{flaky}/revoke"),
        &[],
        Some("{}"),
    )
    .await;
    assert_eq!(refused.status, 403);
    assert_eq!(dead_letter_depth(&s).await, 1);

    // The pages and assets are built in.
    let page = request(s.addr, "GET", "/", &[], None).await;
    assert_eq!(page.status, 200);
    for script in ["/assets/ui.js", "/assets/app.js"] {
        assert!(page.body.contains(script), "the page loads {script}");
        let js = request(s.addr, "GET", script, &[], None).await;
        assert_eq!(js.status, 200, "{script}");
        assert!(js
            .headers
            .to_ascii_lowercase()
            .contains("content-type: text/javascript"));
    }
    assert!(page
        .headers
        .to_ascii_lowercase()
        .contains("content-security-policy"));
    assert_eq!(
        request(s.addr, "GET", "/api/nothing", &[], None)
            .await
            .status,
        404
    );

    // The management API reports a new queue's unacknowledged count after
    // some seconds; from then on the dashboard shows it.
    until(Duration::from_secs(40), "unacknowledged counts", || async {
        let q = s.get_json("/api/queues", &[]).await;
        let default = q["queues"][0].clone();
        let known = default["unacked"].is_u64()
            && default["lanes"]
                .as_array()
                .unwrap()
                .iter()
                .all(|l| l["unacked"].is_u64());
        known.then_some(())
    })
    .await;
    s.stop().await;
}
