//! Revocations with a store: queued, delayed (by id and by idempotency
//! key) and running tasks (Rust handlers and programs) across three
//! workers, and a workflow mid-run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use celeriac_producer::canvas::{chain, Signature};
use celeriac_producer::control::RevokeOptions;
use celeriac_producer::{Error, SendOptions};
use celeriac_schema::exec::{Exec, ExecInput, ExecSpec};
use celeriac_schema::store::NodeProgress;
use celeriac_schema::TaskState;

use crate::support::{
    pid_in, process_gone, until, until_within, Cluster, Sleep, LONG_COUNTDOWN, LONG_WAIT, WAIT,
};

#[tokio::test]
async fn a_queued_task_revoked_before_any_worker_runs_never_runs() {
    let mut cluster = Cluster::new("ctl-queued").await;
    let handle = cluster
        .producer
        .send::<Sleep>(&10, &SendOptions::new())
        .await
        .unwrap();
    let done = cluster
        .producer
        .revoke(
            &[handle.id().to_string()],
            &RevokeOptions::new().timeout(Duration::from_millis(200)),
        )
        .await
        .unwrap();
    assert!(done.stored, "the revocation is in the store");
    assert!(
        matches!(
            handle.wait(Duration::from_secs(1)).await,
            Err(Error::TaskRevoked { .. })
        ),
        "a handle on a queued task answers at once"
    );
    cluster.three_workers(["w1", "w2", "w3"]).await;
    until("a worker acked the revoked task", || {
        cluster.revoked_total() == 1
    })
    .await;
    assert!(!cluster.runs.has_started(handle.id()));
    let metrics: String = cluster.workers.iter().map(|w| w.metrics()).collect();
    assert!(
        metrics.contains("celeriac_tasks_revoked_total{queue=\"default\",task=\"test.sleep\"} 1"),
        "{metrics}"
    );
    assert_eq!(handle.status().await.unwrap(), Some(TaskState::Revoked));
}

#[tokio::test]
async fn a_delayed_task_revoked_while_it_waits_never_runs() {
    let mut cluster = Cluster::new("ctl-delayed").await;
    cluster.three_workers(["w1", "w2", "w3"]).await;
    let sent = Instant::now();
    let (delayed, control) = cluster.two_delayed_sleeps(LONG_COUNTDOWN).await;
    let done = cluster
        .producer
        .revoke(&[delayed.id().to_string()], &RevokeOptions::new())
        .await
        .unwrap();
    assert!(done.stored);
    assert_eq!(done.replies.replies.len(), 3, "every worker acknowledged");
    assert!(
        sent.elapsed() < LONG_COUNTDOWN / 2,
        "revoked while it waits"
    );
    assert_eq!(
        control.wait(LONG_WAIT).await.unwrap(),
        10,
        "the other delayed task ran"
    );
    assert!(
        sent.elapsed() >= LONG_COUNTDOWN - Duration::from_secs(1),
        "the control task waited out its countdown: {:?}",
        sent.elapsed()
    );
    until_within(
        LONG_WAIT,
        "the revoked task came out of its delay and was acked",
        || cluster.revoked_total() == 1,
    )
    .await;
    assert!(matches!(
        delayed.wait(WAIT).await,
        Err(Error::TaskRevoked { .. })
    ));
    assert!(!cluster.runs.has_started(delayed.id()));
    assert!(cluster.runs.has_started(control.id()));
    assert_eq!(cluster.runs.count(), 1, "only the control task ran");
}

#[tokio::test]
async fn a_delayed_task_revoked_by_its_idempotency_key_never_runs() {
    let mut cluster = Cluster::new("ctl-key").await;
    cluster.three_workers(["w1", "w2", "w3"]).await;
    let key = format!("order-{}", uuid::Uuid::now_v7().simple());
    let countdown = Duration::from_secs(3);
    let keyed = cluster
        .producer
        .send::<Sleep>(
            &10,
            &SendOptions::new()
                .idempotency_key(&key)
                .countdown(countdown),
        )
        .await
        .unwrap();
    let control = cluster
        .producer
        .send::<Sleep>(
            &10,
            &SendOptions::new()
                .idempotency_key(format!("{key}-other"))
                .countdown(countdown),
        )
        .await
        .unwrap();
    let done = cluster
        .producer
        .revoke(std::slice::from_ref(&key), &RevokeOptions::new())
        .await
        .unwrap();
    assert!(done.stored);
    assert_eq!(done.replies.replies.len(), 3);
    assert_eq!(
        control.wait(WAIT).await.unwrap(),
        10,
        "a task with another key ran"
    );
    assert!(matches!(
        keyed.wait(WAIT).await,
        Err(Error::TaskRevoked { .. })
    ));
    until("the keyed task was acked without running", || {
        cluster.revoked_total() == 1
    })
    .await;
    assert!(!cluster.runs.has_started(keyed.id()));
    let record = keyed.record().await.unwrap().unwrap();
    assert_eq!(record.state, TaskState::Revoked);
    assert_eq!(record.idempotency_key.as_deref(), Some(key.as_str()));
    let error = record.error.unwrap();
    assert_eq!(error.error_type, "Revoked");
    assert!(error.message.contains(&key), "{}", error.message);
}

#[tokio::test]
async fn terminate_cancels_a_running_handler() {
    let mut cluster = Cluster::new("ctl-term-rust").await;
    cluster.three_workers(["w1", "w2", "w3"]).await;
    let (handle, done, started) = cluster.terminate_a_running_sleep().await;
    let runs = cluster.runs.clone();
    assert_eq!(done.replies.replies.len(), 3, "every worker acknowledged");
    assert!(matches!(
        handle.wait(WAIT).await,
        Err(Error::TaskRevoked { .. })
    ));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        runs.cancelled.lock().unwrap().contains(&handle.id()),
        "the handler saw its cancellation"
    );
    until("the run is counted as revoked", || {
        cluster.revoked_total() == 1
    })
    .await;
}

#[tokio::test]
async fn terminate_signals_a_running_program() {
    let mut cluster = Cluster::new("ctl-term-exec").await;
    cluster.three_workers(["w1", "w2", "w3"]).await;
    let marker = celeriac_tests::record_file("ctl-term-exec");
    let child = celeriac_tests::record_file("ctl-term-exec-child");
    // The background sleep is in the program's process group, and outlives
    // the shell unless the group is killed.
    let script = "trap 'echo got-term > \"$1\"; exit 3' TERM; sleep 300 & echo $! > \"$2\"; \
                  echo started > \"$1\"; wait";
    let spec = ExecSpec::new("sh").args([
        "-c",
        script,
        "sh",
        marker.to_str().unwrap(),
        child.to_str().unwrap(),
    ]);
    let handle = cluster
        .producer
        .send::<Exec>(&ExecInput::new(spec, rmpv::Value::Nil), &SendOptions::new())
        .await
        .unwrap();
    until("the program runs", || {
        std::fs::read_to_string(&marker).is_ok_and(|s| s.contains("started"))
    })
    .await;
    cluster.revoke_and_terminate(handle.id()).await;
    assert!(matches!(
        handle.wait(WAIT).await,
        Err(Error::TaskRevoked { .. })
    ));
    let text = std::fs::read_to_string(&marker).unwrap();
    assert!(
        text.contains("got-term"),
        "the program got SIGTERM: {text:?}"
    );
    let sleeper = pid_in(&child).await;
    until("the program's background child is gone too", || {
        process_gone(sleeper)
    })
    .await;
    let _ = std::fs::remove_file(&marker);
    let _ = std::fs::remove_file(&child);
}

#[tokio::test]
async fn a_workflow_revoked_mid_run_runs_nothing_more() {
    let mut cluster = Cluster::new("ctl-flow").await;
    cluster.three_workers(["w1", "w2", "w3"]).await;
    let canvas = chain([
        Signature::new::<Sleep>(&800).unwrap(),
        Signature::callback::<Sleep>(),
        Signature::callback::<Sleep>(),
    ]);
    let flow = cluster.producer.submit_canvas(&canvas).await.unwrap();
    let runs = cluster.runs.clone();
    until("the first node runs", || runs.count() == 1).await;
    flow.revoke(&RevokeOptions::new()).await.unwrap();
    assert!(
        flow.wait(WAIT).await.is_err(),
        "the workflow does not succeed"
    );
    let status = flow.status().await.unwrap().unwrap();
    let progress: Vec<NodeProgress> = status.nodes.iter().map(|n| n.progress).collect();
    assert_eq!(
        runs.count(),
        1,
        "no node after the revocation ran: {progress:?}"
    );
    assert!(progress.contains(&NodeProgress::Skipped), "{progress:?}");
    let states: Vec<Option<TaskState>> = status
        .nodes
        .iter()
        .map(|n| n.record.as_ref().map(|r| r.state))
        .collect();
    assert!(states.contains(&Some(TaskState::Revoked)), "{states:?}");
    let _ = Arc::clone(&runs);
}
