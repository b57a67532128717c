//! Urgent work first, deferrable work one slot in every N.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use celeriac_producer::SendOptions;
use celeriac_tests::{eventually, InProcessWorker};

use crate::support::{registry, setup, Mark, WAIT};

const URGENT: usize = 12;
const DEFERRABLE: usize = 4;
const WEIGHT: usize = 4;

#[tokio::test]
async fn urgent_tasks_run_first_and_deferrable_ones_still_get_one_slot_in_n() {
    let (ns, producer) = setup("tol-order").await;
    // The backlog waits before any worker runs.
    let hour = SendOptions::new().delay_tolerance(Duration::from_secs(3_600));
    for i in 0..DEFERRABLE {
        producer
            .send::<Mark>(&format!("d{i}"), &hour)
            .await
            .unwrap();
    }
    for i in 0..URGENT {
        producer
            .send::<Mark>(&format!("u{i}"), &SendOptions::new())
            .await
            .unwrap();
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let worker = InProcessWorker::start(&ns, registry(&seen, Duration::from_millis(40)), |b| {
        b.concurrency(1).urgent_weight(WEIGHT as u32)
    })
    .await;
    let all = eventually(WAIT, || async {
        seen.lock().unwrap().len() == URGENT + DEFERRABLE
    })
    .await;
    worker.stop().await;
    let order = seen.lock().unwrap().clone();
    assert!(all, "not every task ran: {order:?}");
    let deferrable: Vec<usize> = order
        .iter()
        .enumerate()
        .filter(|(_, label)| label.starts_with('d'))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(deferrable.len(), DEFERRABLE, "{order:?}");
    // Urgent first: most of the first N starts are urgent ones.
    let early_urgent = order[..2 * WEIGHT]
        .iter()
        .filter(|label| label.starts_with('u'))
        .count();
    assert!(
        early_urgent >= 2 * WEIGHT - 3,
        "urgent work did not come first: {order:?}"
    );
    // No starvation: the k-th deferrable task starts within the first
    // k * N starts (one slot in every N), give or take the first start.
    for (k, position) in deferrable.iter().enumerate() {
        assert!(
            *position <= (k + 1) * WEIGHT,
            "deferrable task {k} waited too long: {order:?}"
        );
    }
    // Deferrable tasks keep their order within their class.
    let labels: Vec<&String> = deferrable.iter().map(|&i| &order[i]).collect();
    assert_eq!(labels, ["d0", "d1", "d2", "d3"], "{order:?}");
}
