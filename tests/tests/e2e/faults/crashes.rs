//! A worker killed mid-task, and connections closed under it.

use super::*;

#[tokio::test]
async fn sigkill_mid_task_loses_nothing() {
    bounded(sigkill_mid_task_loses_nothing_scenario()).await;
}

async fn sigkill_mid_task_loses_nothing_scenario() {
    let ns = namespace("kill");
    let producer = producer(&ns).await;
    let record = record_file("kill");
    let (_conn, channel) = broker().await.channel().await;
    let work = producer.topology().work_queue("default");

    let mut a = worker(&ns, &record, &["--concurrency", "4", "--prefetch", "8"]).await;
    wait_for_consumers(&channel, &work, 1).await;
    let ids = send_records(&producer, 20, 3000).await;
    // A takes its prefetch of eight and starts four of them.
    let taken = eventually(Duration::from_secs(10), || async {
        ready(&channel, &work).await <= 12
    })
    .await;
    assert!(taken, "worker A never took its prefetch");
    a.signal("KILL");
    let status = a
        .wait_timeout(Duration::from_secs(10))
        .expect("worker A exits after SIGKILL");
    assert!(!status.success(), "a SIGKILLed worker cannot exit cleanly");
    assert!(
        runs(&record).is_empty(),
        "worker A finished a 3 s task before it was killed; the kill came too late to test anything"
    );
    // The broker hands A's unacked deliveries back.
    let back = eventually(Duration::from_secs(10), || async {
        ready(&channel, &work).await == 20
    })
    .await;
    assert!(back, "A's deliveries did not return to the queue");

    let mut b = worker(&ns, &record, &["--concurrency", "20"]).await;
    let done = eventually(Duration::from_secs(30), || async {
        runs(&record).len() >= ids.len()
    })
    .await;
    assert!(
        done,
        "only {} of {} tasks ran after the kill",
        runs(&record).len(),
        ids.len()
    );
    // Once B stops, every ack has reached the broker: nothing may be left
    // to run again.
    terminate(&mut b, Duration::from_secs(10));
    assert_eq!(ready(&channel, &work).await, 0, "tasks left in the queue");

    let runs = runs(&record);
    let counts = run_counts(&runs);
    let ran: HashSet<String> = counts.keys().map(|id| (*id).to_owned()).collect();
    assert_eq!(ran, id_set(&ids), "every sent task ran, and only those");
    let twice = counts.values().filter(|&&n| n > 1).count();
    assert_eq!(twice, 0, "{twice} tasks ran more than once");
    assert!(
        runs.iter().all(|r| r.pid == b.pid()),
        "every run belongs to worker B"
    );
    println!(
        "sigkill: {} tasks, each ran exactly once, all on worker B",
        ids.len()
    );
}

/// How long each task of the connection-fault test runs: long enough that
/// the worker is busy at every fault, short enough that a few thousand
/// pass through.
const CLOSE_TASK_MS: u64 = 20;
/// Tasks per batch while the connection faults are injected.
const CLOSE_BATCH: usize = 50;
/// Ready tasks the sender keeps in the queue until the faults are in.
const CLOSE_BACKLOG: u32 = 100;
/// Tasks sent at least, in total, around the connection faults.
const CLOSE_TOTAL: usize = 2000;
/// Upper bound on tasks sent, whatever the faults' timing.
const CLOSE_MAX: usize = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_connections_lose_nothing_and_the_worker_recovers() {
    bounded(closed_connections_lose_nothing_and_the_worker_recovers_scenario()).await;
}

async fn closed_connections_lose_nothing_and_the_worker_recovers_scenario() {
    let ns = namespace("close");
    let producer = producer(&ns).await;
    let record = record_file("close");
    let (_conn, channel) = broker().await.channel().await;
    let work = producer.topology().work_queue("default");
    // Only this worker's connection is closed: tests running beside this
    // one keep theirs.
    let worker_id = format!("{ns}-worker");
    let mut w = worker(
        &ns,
        &record,
        &["--concurrency", "8", "--worker-id", &worker_id],
    )
    .await;
    wait_for_consumers(&channel, &work, 1).await;

    // Keep a backlog in the queue until both faults are in, so that each one
    // lands while the worker is busy with tasks in flight.
    let faults_done = Arc::new(AtomicBool::new(false));
    let sender = tokio::spawn({
        let producer = producer.clone();
        let faults_done = faults_done.clone();
        let work = work.clone();
        async move {
            let (_conn, channel) = broker().await.channel().await;
            let mut ids = Vec::new();
            while ids.len() < CLOSE_MAX {
                let faults_in = faults_done.load(Ordering::Relaxed);
                if faults_in && ids.len() >= CLOSE_TOTAL {
                    break;
                }
                if faults_in || ready(&channel, &work).await < CLOSE_BACKLOG {
                    ids.extend(send_records(&producer, CLOSE_BATCH, CLOSE_TASK_MS).await);
                } else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            ids
        }
    });

    let mut connection = {
        let found = worker_connections(&worker_id).await;
        assert_eq!(found.len(), 1, "the worker has one connection");
        found[0].clone()
    };
    for round in 1..=2 {
        // The worker consumes on this connection before it is cut.
        let before = runs(&record).len();
        let busy = eventually(Duration::from_secs(20), || async {
            runs(&record).len() >= before + 50
        })
        .await;
        assert!(
            busy,
            "round {round}: the worker ran no tasks on its connection"
        );
        let backlog = ready(&channel, &work).await;
        broker()
            .await
            .rabbitmqctl(&["close_connection", &connection, "fault injected by a test"])
            .await;
        println!("close_connection round {round}: closed with {backlog} tasks ready and the prefetch in flight");
        connection = wait_for_reconnection(&worker_id, &connection)
            .await
            .unwrap_or_else(|| panic!("round {round}: the worker did not reconnect"));
        assert!(alive(&mut w), "round {round}: the worker process died");
    }
    faults_done.store(true, Ordering::Relaxed);
    let ids = sender.await.unwrap();
    assert!(
        ids.len() < CLOSE_MAX,
        "the faults took so long that the sender stopped first"
    );

    let sent = id_set(&ids);
    let all_ran = eventually(Duration::from_secs(60), || async {
        let runs = runs(&record);
        let ran: HashSet<&str> = runs.iter().map(|r| r.task_id.as_str()).collect();
        sent.iter().all(|id| ran.contains(id.as_str()))
    })
    .await;
    let ran_ids: HashSet<String> = runs(&record).into_iter().map(|r| r.task_id).collect();
    assert!(
        all_ran,
        "{} of {} tasks never ran",
        sent.difference(&ran_ids).count(),
        sent.len()
    );

    // After the faults the worker still consumes what comes next.
    let later = send_records(&producer, 100, CLOSE_TASK_MS).await;
    let later_ids = id_set(&later);
    let later_ran = eventually(Duration::from_secs(30), || async {
        let runs = runs(&record);
        let ran: HashSet<&str> = runs.iter().map(|r| r.task_id.as_str()).collect();
        later_ids.iter().all(|id| ran.contains(id.as_str()))
    })
    .await;
    assert!(
        later_ran,
        "the worker stopped consuming after it reconnected"
    );
    terminate(&mut w, Duration::from_secs(20));
    assert_eq!(ready(&channel, &work).await, 0, "tasks left in the queue");

    let runs = runs(&record);
    let counts = run_counts(&runs);
    let unknown = counts
        .keys()
        .filter(|id| !sent.contains(**id) && !later_ids.contains(**id))
        .count();
    assert_eq!(unknown, 0, "runs of tasks that were never sent");
    let total = ids.len() + later.len();
    let duplicates = runs.len() - counts.len();
    println!(
        "close_connection: {total} tasks, {} runs, {duplicates} duplicate runs over {} tasks (at-least-once)",
        runs.len(),
        counts.values().filter(|&&n| n > 1).count()
    );
}
