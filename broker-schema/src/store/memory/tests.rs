use super::*;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

fn update(id: TaskId, state: TaskState) -> Update {
    Update::new(id, "t", "default", state, 0)
}

#[test]
fn queued_after_started_keeps_started() {
    rt().block_on(async {
        let store = MemoryStore::new(StoreSettings::default());
        let id = TaskId::new();
        store
            .begin("k", "a", &update(id, TaskState::Started))
            .await?;
        store.record(&[update(id, TaskState::Queued)]).await?;
        let record = store.get(id).await?.expect("a record");
        assert_eq!(record.state, TaskState::Started);
        assert_eq!(record.runs, 1);
        assert_eq!(
            record.history.len(),
            1,
            "the late queued only sets its time"
        );
        assert!(record.queued_at.is_some());
        Ok::<_, crate::Error>(())
    })
    .expect("store calls succeed");
}

#[test]
fn a_held_lease_makes_a_second_run_wait_until_it_expires() {
    rt().block_on(async {
        let store = MemoryStore::new(StoreSettings {
            lease_ttl: Duration::from_millis(50),
            ..StoreSettings::default()
        });
        let id = TaskId::new();
        let started = update(id, TaskState::Started);
        assert_eq!(store.begin("k", "a", &started).await?, Begin::Run);
        assert!(matches!(
            store.begin("k", "b", &started).await?,
            Begin::Busy { .. }
        ));
        assert!(store.renew("k", "a").await?);
        assert!(!store.renew("k", "b").await?);
        tokio::time::sleep(Duration::from_millis(80)).await;
        // The first run's worker died: its lease ran out.
        assert_eq!(store.begin("k", "b", &started).await?, Begin::Run);
        assert!(!store.renew("k", "a").await?);
        Ok::<_, crate::Error>(())
    })
    .expect("store calls succeed");
}

#[test]
fn a_failed_run_releases_the_key_for_the_retry() {
    rt().block_on(async {
        let store = MemoryStore::new(StoreSettings::default());
        let id = TaskId::new();
        store
            .begin("k", "a", &update(id, TaskState::Started))
            .await?;
        store
            .finish("k", "a", &update(id, TaskState::Retrying))
            .await?;
        assert_eq!(
            store
                .begin("k", "b", &update(id, TaskState::Started))
                .await?,
            Begin::Run
        );
        Ok::<_, crate::Error>(())
    })
    .expect("store calls succeed");
}

#[test]
fn claims_return_the_first_id() {
    rt().block_on(async {
        let store = MemoryStore::new(StoreSettings::default());
        let first = TaskId::new();
        let second = TaskId::new();
        let answers = store
            .claim(&[
                ("key".into(), update(first, TaskState::Created)),
                ("key".into(), update(second, TaskState::Created)),
            ])
            .await?;
        assert_eq!(answers[0], Claim::Claimed);
        assert_eq!(
            answers[1],
            Claim::Existing {
                task_id: first,
                republish: false
            }
        );
        Ok::<_, crate::Error>(())
    })
    .expect("store calls succeed");
}

#[test]
fn a_task_claims_its_own_key_again_until_it_is_queued() {
    rt().block_on(async {
        let store = MemoryStore::new(StoreSettings::default());
        let id = TaskId::new();
        let claim = [("key".to_owned(), update(id, TaskState::Created))];
        assert_eq!(store.claim(&claim).await?, vec![Claim::Claimed]);
        // The first answer was lost: the same task claims again.
        assert_eq!(store.claim(&claim).await?, vec![Claim::Claimed]);
        store.record(&[update(id, TaskState::Queued)]).await?;
        assert_eq!(
            store.claim(&claim).await?,
            vec![Claim::Existing {
                task_id: id,
                republish: false
            }]
        );
        Ok::<_, crate::Error>(())
    })
    .expect("store calls succeed");
}

#[test]
fn wait_wakes_on_the_final_write_and_times_out_otherwise() {
    rt().block_on(async {
        let store = std::sync::Arc::new(MemoryStore::new(StoreSettings::default()));
        let id = TaskId::new();
        assert!(store.wait(id, Duration::from_millis(20)).await?.is_none());
        let writer = store.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            writer
                .finish("k", "a", &update(id, TaskState::Succeeded))
                .await
        });
        let record = store.wait(id, Duration::from_secs(5)).await?;
        assert_eq!(record.map(|r| r.state), Some(TaskState::Succeeded));
        task.await.expect("the writer finishes")?;
        Ok::<_, crate::Error>(())
    })
    .expect("store calls succeed");
}

#[test]
fn a_workflow_releases_each_node_once_and_skips_what_follows_a_failure() {
    use crate::workflow::{Node, Workflow};
    rt().block_on(async {
        let store = MemoryStore::new(StoreSettings::default());
        let mut wf = Workflow::new();
        for (id, deps) in [
            ("a", vec![]),
            ("b", vec!["a"]),
            ("c", vec!["a"]),
            ("d", vec!["b", "c"]),
            ("e", vec![]),
        ] {
            wf.push(Node::new(id, "t", rmpv::Value::Nil).after(deps));
        }
        store
            .create_workflow(&wf, &["d".into(), "e".into()])
            .await?;
        let ready = store.node_succeeded(wf.id, "a").await?;
        assert_eq!(
            ready
                .iter()
                .map(|r| (r.node.as_str(), r.first))
                .collect::<Vec<_>>(),
            [("b", true), ("c", true)]
        );
        // Repeated after a crash: the same nodes, not released again.
        let again = store.node_succeeded(wf.id, "a").await?;
        assert!(again.iter().all(|r| !r.first));
        assert!(
            store.node_succeeded(wf.id, "b").await?.is_empty(),
            "d still waits for c"
        );
        let skipped = store.node_failed(wf.id, "c").await?;
        assert_eq!(skipped, ["d"]);
        store.node_succeeded(wf.id, "e").await?;
        let record = store.get_workflow(wf.id).await?.expect("stored");
        assert_eq!(record.state, WorkflowState::Failed);
        assert_eq!(
            (record.remaining, record.failed, record.released),
            (0, 1, 2)
        );
        assert_eq!(record.progress["d"], NodeProgress::Skipped);
        Ok::<_, crate::Error>(())
    })
    .expect("store calls succeed");
}
