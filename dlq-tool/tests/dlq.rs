//! The dead-letter tool against a real broker: every command, filter and
//! exit code.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use base64::Engine as _;
use celeriac_schema::headers;
use celeriac_tests::lapin::types::AMQPValue;
use common::*;
use serde_json::Value;

fn ids(records: &[Value]) -> HashSet<String> {
    records
        .iter()
        .filter_map(|r| r.get("task_id")?.as_str().map(str::to_owned))
        .collect()
}

fn published_ids(p: &[Published]) -> HashSet<String> {
    p.iter().map(|p| p.task_id.clone()).collect()
}

/// 4 worker dead letters, 2 broker ones and 1 malformed in `default`; 2 in
/// `emails`.
async fn mixed(s: &Setup) -> Vec<Published> {
    let specs = vec![
        Spec::new("default", "images.resize"),
        Spec::new("default", "images.resize"),
        Spec::new("default", "mail.send").reason("rejected", "BadAddress"),
        Spec::new("default", "mail.send").reason("unknown-task", "UnknownTask"),
        Spec::new("default", "images.resize").broker(),
        Spec::new("default", "crash.me").broker(),
        Spec::new("default", "garbled")
            .reason("malformed", "Malformed")
            .malformed(),
        Spec::new(EMAILS, "mail.send"),
        Spec::new(EMAILS, "mail.send").reason("rejected", "BadAddress"),
    ];
    dead_letters(s, &specs).await
}

#[tokio::test(flavor = "multi_thread")]
async fn reading_commands_leave_the_queues_as_they_were() {
    let s = setup("dlq-read").await;
    let all = mixed(&s).await;
    let before = peek_ids(&s, &dlq_name(&s, "default")).await;
    assert_eq!(before.len(), 7);

    let list = dlq(&s.ns, &["--queue", "default,emails", "list", "--json"]).await;
    assert_eq!(list.code, 0, "{}", list.stderr);
    assert_eq!(ids(&list.records()), published_ids(&all));
    let human = dlq(&s.ns, &["--queue", "default", "list"]).await;
    assert_eq!(human.code, 0);
    assert!(human.stdout.starts_with("TASK ID"));
    assert_eq!(human.stdout.lines().count(), 8);

    // Without --queue: every dead-letter queue the management API lists,
    // or, where the broker has no management API, the default queue's.
    let discovered = dlq(&s.ns, &["list", "--json"]).await;
    assert_eq!(discovered.code, 0, "{}", discovered.stderr);
    let management = std::net::TcpStream::connect(("127.0.0.1", 15672)).is_ok()
        && celeriac_tests::broker().await.url.contains("127.0.0.1");
    let expected = if management { all.len() } else { 7 };
    assert_eq!(
        discovered.records().len(),
        expected,
        "{}",
        discovered.stderr
    );

    let broker_letter = &all[4];
    let show = dlq(
        &s.ns,
        &[
            "--queue",
            "default",
            "show",
            &broker_letter.task_id,
            "--json",
        ],
    )
    .await;
    assert_eq!(show.code, 0, "{}", show.stderr);
    let rec = &show.records()[0];
    assert_eq!(rec["reason"], "delivery-limit");
    assert_eq!(rec["queue"], "default");
    assert_eq!(rec["task"], "images.resize");
    assert_eq!(rec["envelope"]["attempt"], 3);
    let human = dlq(&s.ns, &["--queue", "default", "show", &all[2].task_id]).await;
    assert_eq!(human.code, 0);
    assert!(human.stdout.contains("BadAddress"), "{}", human.stdout);
    let missing = dlq(
        &s.ns,
        &[
            "--queue",
            "default",
            "show",
            "01936b2e-8f40-7a1c-9d2e-3f4a5b6c7d8e",
        ],
    )
    .await;
    assert_eq!(missing.code, 3);

    let stats = dlq(&s.ns, &["--queue", "default,emails", "stats", "--json"]).await;
    assert_eq!(stats.code, 0, "{}", stats.stderr);
    let st = &stats.json()[0];
    assert_eq!(st["total"], 9);
    assert_eq!(st["by_queue"]["default"], 7);
    assert_eq!(st["by_queue"][EMAILS], 2);
    assert_eq!(st["by_task"]["mail.send"], 4);
    assert_eq!(st["by_reason"]["delivery-limit"], 2);
    assert_eq!(st["by_reason"]["rejected"], 2);
    assert_eq!(st["by_reason"]["retries-exhausted"], 3);
    assert_eq!(st["by_error_type"]["BadAddress"], 2);
    let human = dlq(&s.ns, &["--queue", "default,emails", "stats"]).await;
    assert!(human.stdout.starts_with("total  9"), "{}", human.stdout);

    let export = dlq(&s.ns, &["--queue", "default,emails", "export"]).await;
    assert_eq!(export.code, 0);
    assert_eq!(export.records().len(), 9);

    // Same messages, same order, nothing consumed.
    expect_len(&s, &dlq_name(&s, "default"), 7).await;
    assert_eq!(peek_ids(&s, &dlq_name(&s, "default")).await, before);
    expect_len(&s, &dlq_name(&s, EMAILS), 2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn export_and_import_round_trip_byte_for_byte() {
    let s = setup("dlq-export").await;
    let all = mixed(&s).await;
    let file = std::env::temp_dir().join(format!("{}.jsonl", &*s.ns));
    let path = file.to_string_lossy().into_owned();
    let export = dlq(
        &s.ns,
        &["--queue", "default,emails", "export", "--output", &path],
    )
    .await;
    assert_eq!(export.code, 0, "{}", export.stderr);
    let text = std::fs::read_to_string(&file).expect("export file");
    let first: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(first.len(), 9);
    let bodies: HashMap<String, Vec<u8>> = all
        .iter()
        .map(|p| (p.task_id.clone(), p.body.clone()))
        .collect();
    for rec in &first {
        let id = rec["task_id"].as_str().expect("id");
        let body = base64::engine::general_purpose::STANDARD
            .decode(rec["body_base64"].as_str().expect("body"))
            .expect("base64");
        assert_eq!(&body, &bodies[id], "body of {id}");
    }

    let purge = dlq(&s.ns, &["--queue", "default,emails", "purge", "--yes"]).await;
    assert_eq!(purge.code, 0, "{}", purge.stderr);
    expect_len(&s, &dlq_name(&s, "default"), 0).await;
    expect_len(&s, &dlq_name(&s, EMAILS), 0).await;

    let dry = dlq(&s.ns, &["import", "--input", &path, "--dry-run"]).await;
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    expect_len(&s, &dlq_name(&s, "default"), 0).await;
    let import = dlq(&s.ns, &["import", "--input", &path]).await;
    assert_eq!(import.code, 0, "{}", import.stderr);
    expect_len(&s, &dlq_name(&s, "default"), 7).await;
    expect_len(&s, &dlq_name(&s, EMAILS), 2).await;

    let again = dlq(&s.ns, &["--queue", "default,emails", "export"]).await;
    let second: HashMap<String, Value> = again
        .records()
        .into_iter()
        .map(|r| (r["task_id"].as_str().unwrap_or_default().to_owned(), r))
        .collect();
    for rec in &first {
        let id = rec["task_id"].as_str().expect("id");
        let back = &second[id];
        for key in [
            "body_base64",
            "properties",
            "queue",
            "task",
            "reason",
            "error_type",
            "failed_at",
            "attempts",
        ] {
            assert_eq!(back[key], rec[key], "{key} of {id}");
        }
        // Headers come back as they were; a broker dead letter also gets
        // its x-death details as explicit headers.
        for (name, value) in rec["headers"].as_object().expect("headers") {
            assert_eq!(&back["headers"][name], value, "header {name} of {id}");
        }
    }
    let _ = std::fs::remove_file(&file);

    let bad = std::env::temp_dir().join(format!("{}-bad.jsonl", &*s.ns));
    std::fs::write(&bad, "{\"queue\": \"default\"}\n").expect("write");
    let run = dlq(&s.ns, &["import", "--input", &bad.to_string_lossy()]).await;
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("line 1"), "{}", run.stderr);
    let _ = std::fs::remove_file(&bad);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_filter() {
    let s = setup("dlq-filter").await;
    let now = celeriac_schema::now_ms();
    let hour = 3_600_000;
    let specs = vec![
        Spec::new("default", "a").at(now - 48 * hour),
        Spec::new("default", "a")
            .reason("rejected", "Bad")
            .at(now - 3 * hour),
        Spec::new("default", "b")
            .reason("rejected", "Bad")
            .at(now - hour / 2),
        Spec::new("default", "b").broker().at(now - hour / 2),
        Spec::new(EMAILS, "c").at(now),
    ];
    let all = dead_letters(&s, &specs).await;
    let count = |args: Vec<&'static str>| {
        let ns = s.ns.to_string();
        async move {
            let mut full = vec!["--queue", "default,emails", "list", "--json"];
            full.extend(args);
            let run = dlq(&ns, &full).await;
            assert!(run.code == 0 || run.code == 3, "{}", run.stderr);
            run.records().len()
        }
    };
    assert_eq!(count(vec![]).await, 5);
    assert_eq!(count(vec!["--task", "a"]).await, 2);
    assert_eq!(count(vec!["--task", "a,c"]).await, 3);
    assert_eq!(count(vec!["--error-type", "Bad"]).await, 2);
    assert_eq!(count(vec!["--reason", "rejected"]).await, 2);
    assert_eq!(count(vec!["--reason", "delivery-limit"]).await, 1);
    assert_eq!(count(vec!["--reason", "rejected", "--task", "b"]).await, 1);
    assert_eq!(count(vec!["--since", "1h"]).await, 3);
    assert_eq!(count(vec!["--since", "5h", "--until", "1h"]).await, 1);
    assert_eq!(count(vec!["--until", "24h"]).await, 1);
    let since = celeriac_dlq::record::rfc3339(now - 4 * hour);
    let since: &'static str = Box::leak(since.into_boxed_str());
    assert_eq!(count(vec!["--since", since]).await, 4);
    let id: &'static str = Box::leak(all[2].task_id.clone().into_boxed_str());
    assert_eq!(count(vec!["--id", id]).await, 1);
    assert_eq!(count(vec!["--limit", "2"]).await, 2);
    // One queue only.
    let run = dlq(&s.ns, &["--queue", EMAILS, "list", "--json"]).await;
    assert_eq!(run.records().len(), 1);
    // Nothing matched: exit 3.
    let run = dlq(&s.ns, &["--queue", "default", "list", "--task", "nope"]).await;
    assert_eq!(run.code, 3);
    expect_len(&s, &dlq_name(&s, "default"), 4).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_runs_change_nothing() {
    let s = setup("dlq-dry").await;
    mixed(&s).await;
    let before = peek_ids(&s, &dlq_name(&s, "default")).await;
    let replay = dlq(
        &s.ns,
        &[
            "--queue",
            "default",
            "replay",
            "--dry-run",
            "--allow-malformed",
        ],
    )
    .await;
    assert_eq!(replay.code, 0, "{}", replay.stderr);
    assert_eq!(
        replay
            .stdout
            .lines()
            .filter(|l| l.starts_with("would-replay"))
            .count(),
        7
    );
    let purge = dlq(
        &s.ns,
        &["--queue", "default", "purge", "--dry-run", "--json"],
    )
    .await;
    assert_eq!(purge.code, 0, "{}", purge.stderr);
    assert_eq!(purge.records().len(), 7);
    let import_all = dlq(
        &s.ns,
        &["--queue", "default", "replay", "--dry-run", "--json"],
    )
    .await;
    // The malformed one would be skipped: partial.
    assert_eq!(import_all.code, 4);
    expect_len(&s, &dlq_name(&s, "default"), 7).await;
    assert_eq!(peek_ids(&s, &dlq_name(&s, "default")).await, before);
    expect_len(&s, &work_name(&s, "default"), 0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_resets_attempts_and_records_the_replay() {
    let s = setup("dlq-replay").await;
    let all = mixed(&s).await;
    let by_id: HashMap<String, Published> =
        all.iter().map(|p| (p.task_id.clone(), p.clone())).collect();

    // Only the exhausted ones and the broker's (reason filter, any of two).
    let run = dlq(
        &s.ns,
        &[
            "--queue",
            "default",
            "replay",
            "--reason",
            "retries-exhausted,delivery-limit",
            "--json",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let replayed = run.records();
    assert_eq!(replayed.len(), 4, "{}", run.stdout);
    assert!(replayed.iter().all(|r| r["action"] == "replayed"));
    expect_len(&s, &dlq_name(&s, "default"), 3).await;

    let work = celeriac_tests::drain(&s.channel, &work_name(&s, "default")).await;
    assert_eq!(work.len(), 4);
    for msg in &work {
        let env = celeriac_schema::decode(&msg.delivery.data).expect("decodes");
        let original = &by_id[&env.id.to_string()];
        assert_eq!(env.attempt, 0);
        assert_eq!(
            env.idempotency_key.as_deref(),
            Some(original.idempotency_key.as_str())
        );
        let h = msg.delivery.properties.headers().clone().expect("headers");
        let h = h.inner();
        assert_eq!(h.get(headers::ATTEMPT), Some(&AMQPValue::LongLongInt(0)));
        assert_eq!(
            h.get("celeriac-replay-count"),
            Some(&AMQPValue::LongLongInt(1))
        );
        assert!(h.contains_key("celeriac-replayed-at"));
        assert!(!h.contains_key(headers::REASON));
        assert!(!h.contains_key("x-death"));
        assert_eq!(
            msg.delivery
                .properties
                .message_id()
                .as_ref()
                .map(|m| m.as_str().to_owned()),
            Some(env.id.to_string())
        );
    }

    // The malformed one is skipped (exit 4) unless allowed.
    let run = dlq(
        &s.ns,
        &["--queue", "default", "replay", "--reason", "malformed"],
    )
    .await;
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(run.stdout.contains("skipped"), "{}", run.stdout);
    expect_len(&s, &dlq_name(&s, "default"), 3).await;
    let run = dlq(
        &s.ns,
        &[
            "--queue",
            "default",
            "replay",
            "--reason",
            "malformed",
            "--allow-malformed",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let work = celeriac_tests::drain(&s.channel, &work_name(&s, "default")).await;
    assert_eq!(work.len(), 1);
    assert_eq!(work[0].delivery.data, all[6].body, "sent unchanged");

    // A second replay of the same task counts up.
    let run = dlq(
        &s.ns,
        &["--queue", "default", "replay", "--task", "mail.send"],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    expect_len(&s, &dlq_name(&s, "default"), 0).await;
    expect_len(&s, &work_name(&s, "default"), 2).await;
    // Nothing left: exit 3.
    let run = dlq(&s.ns, &["--queue", "default", "replay"]).await;
    assert_eq!(run.code, 3);
    // The other queue was not touched.
    expect_len(&s, &dlq_name(&s, EMAILS), 2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn purge_wants_yes() {
    let s = setup("dlq-purge").await;
    mixed(&s).await;
    let run = dlq(&s.ns, &["--queue", "default", "purge"]).await;
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("--yes"), "{}", run.stderr);
    expect_len(&s, &dlq_name(&s, "default"), 7).await;
    let run = dlq(
        &s.ns,
        &[
            "--queue",
            "default",
            "purge",
            "--yes",
            "--task",
            "mail.send",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    expect_len(&s, &dlq_name(&s, "default"), 5).await;
    let run = dlq(
        &s.ns,
        &["--queue", "default", "purge", "--yes", "--limit", "2"],
    )
    .await;
    assert_eq!(run.code, 0);
    expect_len(&s, &dlq_name(&s, "default"), 3).await;
    expect_len(&s, &dlq_name(&s, EMAILS), 2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_respects_the_rate() {
    let s = setup("dlq-rate").await;
    let specs: Vec<Spec> = (0..30).map(|_| Spec::new("default", "r")).collect();
    dead_letters(&s, &specs).await;
    let started = Instant::now();
    let run = dlq(
        &s.ns,
        &[
            "--queue", "default", "replay", "--rate", "20", "--limit", "20",
        ],
    )
    .await;
    let took = started.elapsed();
    assert_eq!(run.code, 0, "{}", run.stderr);
    // 20 at 20/s: about a second (the first goes at once).
    assert!(took >= Duration::from_millis(900), "took {took:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    expect_len(&s, &work_name(&s, "default"), 20).await;
    let started = Instant::now();
    let run = dlq(&s.ns, &["--queue", "default", "replay"]).await;
    assert_eq!(run.code, 0);
    assert!(started.elapsed() < Duration::from_secs(3));
    expect_len(&s, &work_name(&s, "default"), 30).await;
    let run = dlq(&s.ns, &["--queue", "default", "replay", "--rate", "0"]).await;
    assert_eq!(run.code, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_refused_with_its_exit_code() {
    let s = setup("dlq-bad").await;
    let run = dlq(&s.ns, &["--queue", "nosuch", "list"]).await;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("unknown queue \"nosuch\""),
        "{}",
        run.stderr
    );
    let run = dlq(&s.ns, &["--queue", "a#b", "list"]).await;
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("a#b"), "{}", run.stderr);
    let run = dlq(
        &s.ns,
        &["--queue", "default", "list", "--since", "yesterday"],
    )
    .await;
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("invalid time"), "{}", run.stderr);
    let run = dlq(
        &s.ns,
        &[
            "--queue", "default", "list", "--since", "1h", "--until", "2h",
        ],
    )
    .await;
    assert_eq!(run.code, 2);
    let run = dlq(&s.ns, &["--queue", "default", "list", "--bogus"]).await;
    assert_eq!(run.code, 2);
    // Empty DLQ: nothing matched.
    let run = dlq(&s.ns, &["--queue", "default", "stats"]).await;
    assert_eq!(run.code, 3);
    // Unreachable broker.
    let out = std::process::Command::new(bin())
        .args([
            "--amqp-addr",
            "amqp://guest:guest@127.0.0.1:1/%2f",
            "--queue",
            "default",
            "list",
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("could not reach the broker"), "{stderr}");
    assert!(!stderr.contains("guest:guest"), "password shown: {stderr}");
}
