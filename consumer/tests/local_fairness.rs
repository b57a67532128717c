//! The in-process scheduler shares its workers among tenants: ready tasks
//! of different tenants start in turns, whoever has more waiting.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use celeriac_consumer::{LocalScheduler, LocalTask, TaskError, TaskOptions, TaskStatus};

/// A task that notes its id in `order` when it starts.
fn noting(order: &Arc<Mutex<Vec<String>>>) -> LocalTask {
    let order = order.clone();
    LocalTask::blocking(move |ctx| {
        order.lock().unwrap().push(ctx.id().to_owned());
        Ok::<_, TaskError>(())
    })
}

fn tenant_of(id: &str) -> &str {
    id.split('-').next().unwrap()
}

#[tokio::test]
async fn ready_tasks_of_two_tenants_start_in_turns() {
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut dag = LocalScheduler::with_max_workers(1);
    // The flood becomes ready before the few, all at once.
    for i in 0..20 {
        let options = TaskOptions::new().tenant("flood");
        dag.add_task_with(format!("flood-{i}"), noting(&order), options)
            .unwrap();
    }
    for i in 0..3 {
        let options = TaskOptions::new().tenant("few");
        dag.add_task_with(format!("few-{i}"), noting(&order), options)
            .unwrap();
    }
    let results = dag.run().await.unwrap();
    assert!(results.values().all(|r| r.status == TaskStatus::Success));
    let order = order.lock().unwrap().clone();
    let tenants: Vec<&str> = order.iter().map(|id| tenant_of(id)).collect();
    assert_eq!(
        tenants[..6],
        ["flood", "few", "flood", "few", "flood", "few"],
        "{order:?}"
    );
    // Within a tenant, the order the tasks became ready.
    let flood: Vec<&String> = order.iter().filter(|id| tenant_of(id) == "flood").collect();
    let expected: Vec<String> = (0..20).map(|i| format!("flood-{i}")).collect();
    assert_eq!(flood, expected.iter().collect::<Vec<_>>());
}

#[tokio::test]
async fn a_tenant_ready_later_is_served_at_once_without_banked_credit() {
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut dag = LocalScheduler::with_max_workers(1);
    for i in 0..10 {
        let options = TaskOptions::new().tenant("flood");
        dag.add_task_with(format!("flood-{i}"), noting(&order), options)
            .unwrap();
    }
    // Ready only once flood-0 has run: four flood tasks wait ahead of them.
    for i in 0..4 {
        let options = TaskOptions::new().tenant("late").depends_on(["flood-0"]);
        dag.add_task_with(format!("late-{i}"), noting(&order), options)
            .unwrap();
    }
    dag.run().await.unwrap();
    let order = order.lock().unwrap().clone();
    let tenants: Vec<&str> = order.iter().map(|id| tenant_of(id)).collect();
    // After flood-0, the late tenant alternates with the flood rather than
    // waiting behind its nine: and it does not get a run of its own for
    // the time it was not ready.
    assert_eq!(
        tenants[..9],
        ["flood", "late", "flood", "late", "flood", "late", "flood", "late", "flood"],
        "{order:?}"
    );
}

#[tokio::test]
async fn tasks_without_a_tenant_keep_their_order_and_share_like_one_tenant() {
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut dag = LocalScheduler::with_max_workers(1);
    for i in 0..4 {
        dag.add_task(format!("none-{i}"), noting(&order), &[], 0)
            .unwrap();
    }
    for i in 0..2 {
        let options = TaskOptions::new().tenant("acme");
        dag.add_task_with(format!("acme-{i}"), noting(&order), options)
            .unwrap();
    }
    dag.run().await.unwrap();
    let order = order.lock().unwrap().clone();
    assert_eq!(
        order,
        ["none-0", "acme-0", "none-1", "acme-1", "none-2", "none-3"],
        "{order:?}"
    );
}
