//! The store's rules, checked on Redis and on the in-memory store alike.

use super::*;

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
    // The holder asking again (its first answer lost with a connection)
    // has the lease: it does not wait for itself.
    assert_eq!(store.lease(&key, "a").await.unwrap(), Begin::Run);
    assert_eq!(
        store.admit(&key, "a", &[key.as_str()]).await.unwrap(),
        Begin::Run
    );
    // So has a task run under its own id as key.
    let own = TaskId::new().to_string();
    assert_eq!(store.lease(&own, "a").await.unwrap(), Begin::Run);
    assert_eq!(store.lease(&own, "a").await.unwrap(), Begin::Run);
    assert!(matches!(
        store.lease(&own, "b").await.unwrap(),
        Begin::Busy { .. }
    ));

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
    // A task sent without a key runs under its own id: once it succeeded
    // (in the same millisecond as it started), taking its lease again
    // answers that it did, and a failed run of another such task leaves
    // the lease free for its redelivery.
    let own = TaskId::new();
    let own_key = own.to_string();
    assert_eq!(store.lease(&own_key, "o").await.unwrap(), Begin::Run);
    let mut done = Update::new(own, "t.rules", "default", TaskState::Succeeded, 0);
    done.started_at_ms = Some(done.at_ms);
    store.finish(&own_key, "o", &done).await.unwrap();
    assert_eq!(
        store.lease(&own_key, "p").await.unwrap(),
        Begin::Succeeded { task_id: own }
    );
    let record = store.get(own).await.unwrap().unwrap();
    let states: Vec<TaskState> = record.history.iter().map(|t| t.state).collect();
    assert_eq!(states, [TaskState::Started, TaskState::Succeeded]);
    assert_eq!(record.runs, 1);
    let lost = TaskId::new();
    let lost_key = lost.to_string();
    assert_eq!(store.lease(&lost_key, "x").await.unwrap(), Begin::Run);
    let mut failed = Update::new(lost, "t.rules", "default", TaskState::Failed, 0);
    failed.error = Some(celeriac_schema::store::TaskFailure {
        error_type: "Io".into(),
        message: "gone".into(),
    });
    store.finish(&lost_key, "x", &failed).await.unwrap();
    assert_eq!(store.lease(&lost_key, "y").await.unwrap(), Begin::Run);

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
            .claim(&[(ekey.clone(), created(first, old))])
            .await
            .unwrap(),
        [Claim::Claimed],
        "a send whose claim answer was lost claims its own key again"
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
    assert_eq!(
        store
            .claim(&[(ekey.clone(), created(first, now))])
            .await
            .unwrap(),
        [Claim::Existing {
            task_id: first,
            republish: false
        }],
        "a queued task sent again is not published again"
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
