use super::*;

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

#[test]
fn every_series_exists_at_zero_and_unknown_names_share_one() {
    let metrics = WorkerMetrics::new(&["default".to_owned()], ["celeriac.ping"]);
    let q = metrics.queue("default");
    q.task(Some("celeriac.ping")).received.inc();
    q.task(Some("no.such.task")).received.inc();
    q.task(Some("another.stray")).received.inc();
    q.task(None).received.inc();
    let text = metrics.render(true, true).expect("renders");
    assert_eq!(
        sample(
            &text,
            r#"celeriac_tasks_received_total{queue="default",task="celeriac.ping"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"celeriac_tasks_received_total{queue="default",task="unknown"}"#
        ),
        Some(3.0)
    );
    assert!(!text.contains("no.such.task") && !text.contains("another.stray"));
    for reason in DeadLetterReason::ALL {
        let series = format!(
            r#"celeriac_tasks_dead_lettered_total{{queue="default",reason="{}",task="celeriac.ping"}}"#,
            reason.as_str()
        );
        assert_eq!(sample(&text, &series), Some(0.0), "{series}");
    }
    assert_eq!(sample(&text, "celeriac_worker_ready"), Some(1.0));
    assert_eq!(sample(&text, "celeriac_store_up"), Some(1.0));
    assert_eq!(sample(&text, "celeriac_workflow_releases_total"), Some(0.0));
    assert_eq!(
        sample(
            &text,
            r#"celeriac_queue_messages{kind="dlq",queue="default"}"#
        ),
        Some(0.0)
    );
}

#[test]
fn settled_counts_retries_and_dead_letters_by_reason() {
    let metrics = WorkerMetrics::new(&["q".to_owned()], ["t"]);
    let t = metrics.queue("q");
    let t = t.task(Some("t"));
    t.settled(&Disposition::Retry {
        attempt: 1,
        delay: Duration::from_secs(1),
    });
    t.settled(&Disposition::Ack);
    t.settled(&Disposition::DeadLetter {
        reason: DeadLetterReason::Rejected,
        error_type: "E".into(),
        message: "m".into(),
    });
    let text = metrics.render(false, false).expect("renders");
    assert_eq!(
        sample(&text, r#"celeriac_tasks_retried_total{queue="q",task="t"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"celeriac_tasks_dead_lettered_total{queue="q",reason="rejected",task="t"}"#
        ),
        Some(1.0)
    );
    assert_eq!(sample(&text, "celeriac_worker_ready"), Some(0.0));
    assert_eq!(sample(&text, "celeriac_store_up"), Some(0.0));
}

#[test]
fn error_kinds_are_labelled_up_to_the_cap_then_folded() {
    let metrics = WorkerMetrics::new(&["q".to_owned()], ["t"]);
    metrics.count_error("q", Some("t"), "Timeout");
    metrics.count_error("q", Some("t"), "Timeout");
    metrics.count_error("q", Some("stray"), "Timeout");
    for n in 0..ERROR_TYPES_MAX + 5 {
        metrics.count_error("q", Some("t"), &format!("Kind{n}"));
    }
    let text = metrics.render(true, true).expect("renders");
    assert_eq!(
        sample(
            &text,
            r#"celeriac_task_errors_total{error_type="Timeout",queue="q",task="t"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"celeriac_task_errors_total{error_type="Timeout",queue="q",task="unknown"}"#
        ),
        Some(1.0)
    );
    // Timeout took one of the labels: Kind0..Kind30 get theirs.
    let labelled = text
        .lines()
        .filter(|l| l.starts_with("celeriac_task_errors_total{") && l.contains("Kind"))
        .count();
    assert_eq!(labelled, ERROR_TYPES_MAX - 1);
    assert_eq!(
        sample(
            &text,
            r#"celeriac_task_errors_total{error_type="other",queue="q",task="t"}"#
        ),
        Some(6.0)
    );
}

#[test]
fn the_oldest_run_going_on_is_reported() {
    let metrics = WorkerMetrics::new(&["q".to_owned()], ["t"]);
    let q = metrics.queue("q");
    let series = r#"celeriac_task_oldest_running_seconds{queue="q"}"#;
    let now = celeriac_schema::now_ms();
    let old = q.running(now - 90_000);
    let young = q.running(now - 1_000);
    let text = metrics.render(true, true).expect("renders");
    let age = sample(&text, series).expect("gauge");
    assert!((90.0..91.0).contains(&age), "{age}");
    drop(old);
    let text = metrics.render(true, true).expect("renders");
    assert!(sample(&text, series).expect("gauge") < 2.0);
    drop(young);
    let text = metrics.render(true, true).expect("renders");
    assert_eq!(sample(&text, series), Some(0.0));
}

#[test]
fn queue_wait_starts_at_the_later_of_publish_and_eta() {
    let metrics = WorkerMetrics::new(&["q".to_owned()], ["t"]);
    let q = metrics.queue("q");
    let t = q.task(Some("t"));
    t.observe_wait(1_000, None, 4_000);
    t.observe_wait(1_000, Some(3_500), 4_000);
    t.observe_wait(5_000, None, 4_000);
    assert_eq!(t.queue_wait_seconds.get_sample_count(), 3);
    assert!((t.queue_wait_seconds.get_sample_sum() - 3.5).abs() < 1e-9);
    assert!(WAIT_BUCKETS.iter().any(|b| *b >= 3600.0));
}
