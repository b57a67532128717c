//! Shutting down: in-flight tasks finish, or go back when the grace ends.

use super::*;

#[tokio::test]
async fn sigterm_lets_in_flight_tasks_finish() {
    bounded(sigterm_lets_in_flight_tasks_finish_scenario()).await;
}

async fn sigterm_lets_in_flight_tasks_finish_scenario() {
    let ns = namespace("term");
    let producer = producer(&ns).await;
    let record = record_file("term");
    let (_conn, channel) = broker().await.channel().await;
    let work = producer.topology().work_queue("default");

    let mut w = worker(
        &ns,
        &record,
        &["--concurrency", "4", "--prefetch", "8", "--grace", "20s"],
    )
    .await;
    wait_for_consumers(&channel, &work, 1).await;
    let running = send_records(&producer, 4, 2000).await;
    let started = eventually(Duration::from_secs(10), || async {
        ready(&channel, &work).await == 0
    })
    .await;
    assert!(started, "the worker did not take the first four tasks");
    let queued = send_records(&producer, 10, 2000).await;
    // Four of them wait in the prefetch buffer, six in the queue.
    let prefetched = eventually(Duration::from_secs(10), || async {
        ready(&channel, &work).await == 6
    })
    .await;
    assert!(prefetched, "the worker did not fill its prefetch");
    assert!(
        runs(&record).is_empty(),
        "a 2 s task finished before SIGTERM; the signal came too late to test anything"
    );
    let took = terminate(&mut w, Duration::from_secs(25));
    assert!(
        took < Duration::from_secs(20),
        "exit took {took:?}, past the 20 s grace"
    );

    let done = runs(&record);
    let finished: HashSet<String> = done.iter().map(|r| r.task_id.clone()).collect();
    assert_eq!(
        finished,
        id_set(&running),
        "exactly the in-flight tasks finished"
    );
    assert_eq!(done.len(), running.len(), "no in-flight task ran twice");
    let returned = eventually(Duration::from_secs(10), || async {
        ready(&channel, &work).await == 10
    })
    .await;
    assert!(returned, "the queued tasks are not all back in the queue");

    let _second_worker = worker(&ns, &record, &["--concurrency", "10"]).await;
    let all = eventually(Duration::from_secs(30), || async {
        runs(&record).len() >= running.len() + queued.len()
    })
    .await;
    assert!(all, "the second worker did not run the queued tasks");
    let runs = runs(&record);
    let counts = run_counts(&runs);
    let mut sent = id_set(&running);
    sent.extend(id_set(&queued));
    let ran: HashSet<String> = counts.keys().map(|id| (*id).to_owned()).collect();
    assert_eq!(
        ran, sent,
        "every task ran once SIGTERM had handed back the rest"
    );
    assert_eq!(runs.len(), sent.len(), "no task ran twice");
    println!("sigterm: worker exited 0 after {took:?}; 4 in flight finished, 10 handed back");
}

#[tokio::test]
async fn grace_expiry_hands_unfinished_tasks_back() {
    bounded(grace_expiry_hands_unfinished_tasks_back_scenario()).await;
}

async fn grace_expiry_hands_unfinished_tasks_back_scenario() {
    let ns = namespace("grace");
    let producer = producer(&ns).await;
    let record = record_file("grace");
    let (_conn, channel) = broker().await.channel().await;
    let work = producer.topology().work_queue("default");

    let mut w = worker(&ns, &record, &["--concurrency", "4", "--grace", "1s"]).await;
    wait_for_consumers(&channel, &work, 1).await;
    let ids = send_records(&producer, 4, 10_000).await;
    let started = eventually(Duration::from_secs(10), || async {
        ready(&channel, &work).await == 0
    })
    .await;
    assert!(started, "the worker did not take the tasks");
    let took = terminate(&mut w, Duration::from_secs(10));
    assert!(
        took < Duration::from_secs(3),
        "exit took {took:?} with a 1 s grace"
    );
    assert!(
        runs(&record).is_empty(),
        "a 10 s task finished within a 1 s grace"
    );
    let returned = eventually(Duration::from_secs(10), || async {
        ready(&channel, &work).await == 4
    })
    .await;
    assert!(returned, "the abandoned tasks are not back in the queue");

    let second = worker(&ns, &record, &["--concurrency", "4"]).await;
    let done = eventually(Duration::from_secs(30), || async {
        runs(&record).len() >= ids.len()
    })
    .await;
    assert!(done, "the second worker did not run the abandoned tasks");
    let runs = runs(&record);
    let ran: HashSet<String> = runs.iter().map(|r| r.task_id.clone()).collect();
    assert_eq!(ran, id_set(&ids), "every abandoned task ran");
    assert_eq!(runs.len(), ids.len(), "no task ran twice");
    assert!(
        runs.iter().all(|r| r.pid == second.pid()),
        "only the second worker ran them"
    );
    println!("grace expiry: worker exited 0 after {took:?}; 4 tasks handed back and run once");
}
