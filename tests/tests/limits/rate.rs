//! Rate limits shared by the workers of a cluster.

use std::time::{Duration, Instant};

use celeriac_producer::SendOptions;
use celeriac_schema::control::Rate;
use celeriac_schema::store::{burst, ControlHash};

use crate::support::{Cluster, Work, WAIT};

/// The most starts in any window of `window` among `starts`.
fn busiest(starts: &mut [Instant], window: Duration) -> usize {
    starts.sort();
    (0..starts.len())
        .map(|i| {
            starts[i..]
                .iter()
                .take_while(|s| **s - starts[i] < window)
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test]
async fn two_workers_share_one_task_rate() {
    let mut cluster = Cluster::new("limits-rate").await;
    let rate: Rate = "20/s".parse().unwrap();
    for id in ["rate-a", "rate-b"] {
        cluster
            .start_worker(id, |b| b.concurrency(4).rate_limit("test.work", rate))
            .await;
    }
    let n = 80;
    let mut handles = Vec::new();
    for _ in 0..n {
        handles.push(
            cluster
                .producer
                .send::<Work>(&5, &SendOptions::new())
                .await
                .unwrap(),
        );
    }
    for handle in handles {
        assert_eq!(handle.wait(WAIT).await.unwrap(), 5, "no task is lost");
    }
    let runs = cluster.runs.all();
    assert_eq!(runs.len(), n, "every task ran once");
    let mut starts: Vec<Instant> = runs.iter().map(|r| r.start).collect();
    // SPEC §20: in any window T at most rate·T + burst + one batch per
    // worker start (a batch is at most the burst).
    let bound = 20 + burst(rate) as usize * 3;
    let peak = busiest(&mut starts, Duration::from_secs(1));
    assert!(peak <= bound, "{peak} starts in one second, above {bound}");
    let span = *starts.last().unwrap() - starts[0];
    let least = Duration::from_secs_f64((n - bound) as f64 / 20.0);
    assert!(
        span >= least,
        "{n} starts took {span:?}, less than {least:?}"
    );
    let throttled = cluster.metric_sum("celeriac_tasks_throttled_total", "reason=\"rate\"");
    assert!(throttled > 0.0, "some tasks went back through the cascade");
    // Sent back, a task keeps its attempt: throttling is not a retry.
    assert!(
        runs.iter().all(|r| r.attempt == 0),
        "no run counted as a retry"
    );
    for worker in &cluster.workers {
        assert_eq!(worker.stats().retried, 0);
    }
}

#[tokio::test]
async fn a_tenant_limit_throttles_that_tenant_only() {
    let mut cluster = Cluster::new("limits-tenant").await;
    cluster
        .store
        .hash_put(ControlHash::Limits, "tenant-rate:slow", Some(b"2/s"))
        .await
        .unwrap();
    cluster.start_worker("tenant-a", |b| b.concurrency(4)).await;
    let mut handles = Vec::new();
    for tenant in ["slow", "fast"] {
        for _ in 0..5 {
            handles.push(
                cluster
                    .producer
                    .send::<Work>(&5, &SendOptions::new().tenant(tenant))
                    .await
                    .unwrap(),
            );
        }
    }
    for handle in handles {
        handle.wait(WAIT).await.unwrap();
    }
    let runs = cluster.runs.all();
    let starts = |tenant: &str| {
        let mut s: Vec<Instant> = runs
            .iter()
            .filter(|r| r.tenant.as_deref() == Some(tenant))
            .map(|r| r.start)
            .collect();
        s.sort();
        s
    };
    let (slow, fast) = (starts("slow"), starts("fast"));
    assert_eq!((slow.len(), fast.len()), (5, 5));
    let slow_span = *slow.last().unwrap() - slow[0];
    assert!(
        slow_span >= Duration::from_millis(1900),
        "5 starts at 2/s take 2 s at least, took {slow_span:?}"
    );
    let fast_span = *fast.last().unwrap() - fast[0];
    assert!(
        fast_span < Duration::from_millis(1500),
        "the other tenant is not limited, took {fast_span:?}"
    );
}

#[tokio::test]
async fn without_a_store_each_worker_keeps_its_own_rate_and_pools() {
    let ns = celeriac_tests::namespace("limits-local");
    let runs = std::sync::Arc::new(crate::support::Runs::default());
    let worker =
        celeriac_tests::InProcessWorker::start(&ns, crate::support::registry(&runs), |b| {
            b.concurrency(4)
                .rate_limit("test.work", "4/s".parse().unwrap())
                .pool("gpu", 1)
        })
        .await;
    let producer = celeriac_producer::Producer::builder(&celeriac_tests::broker().await.url)
        .namespace(&*ns)
        .connect()
        .await
        .unwrap();
    for _ in 0..4 {
        producer
            .send::<Work>(&50, &SendOptions::new().pool("gpu", 1))
            .await
            .unwrap();
    }
    let done = celeriac_tests::eventually(WAIT, || {
        let n = runs.all().len();
        async move { n == 4 }
    })
    .await;
    assert!(done, "every task ran: {}", runs.all().len());
    let mut starts: Vec<Instant> = runs.all().iter().map(|r| r.start).collect();
    starts.sort();
    let gaps: Vec<Duration> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().all(|g| *g >= Duration::from_millis(240)),
        "starts spaced by 4/s: {gaps:?}"
    );
    assert_eq!(
        runs.pooled_peak.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    worker.shutdown().await;
}
