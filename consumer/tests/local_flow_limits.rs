//! A flow's `limits:` section run in-process: pool capacities bound the
//! tasks that name the pools, and rates space the starts of a task name.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use celeriac_consumer::local::FlowOptions;
use celeriac_consumer::LocalScheduler;
use celeriac_producer::flow::Flow;

/// The most intervals of `lines` ("start NS" / "end NS") open at once.
fn most_at_once(lines: &str) -> usize {
    let mut marks: Vec<(u128, i32)> = lines
        .lines()
        .map(|line| {
            let (what, at) = line.split_once(' ').unwrap();
            (
                at.trim().parse().unwrap(),
                if what == "start" { 1 } else { -1 },
            )
        })
        .collect();
    marks.sort();
    let (mut open, mut most) = (0, 0);
    for (_, step) in marks {
        open += step;
        most = most.max(open);
    }
    usize::try_from(most).unwrap()
}

#[tokio::test]
async fn a_pool_capacity_from_the_limits_section_bounds_its_tasks() {
    let dir = std::env::temp_dir().join(format!("celeriac-local-limits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("spans.log");
    let _ = std::fs::remove_file(&log);
    let step = format!(
        "[sh, -c, 'echo start $(date +%s%N) >> {0}; sleep 0.2; echo end $(date +%s%N) >> {0}']",
        log.display()
    );
    let text = format!(
        "name: pooled\nlimits:\n  pools: {{gpu: 2}}\ntasks:\n  a: {{run: {step}, pools: {{gpu: 1}}}}\n  b: {{run: {step}, pools: {{gpu: 1}}}}\n  c: {{run: {step}, pools: {{gpu: 1}}}}\n  d: {{run: {step}, pools: {{gpu: 1}}}}\n"
    );
    let flow = Flow::parse(&text, "pooled.yaml").unwrap();
    let results = LocalScheduler::from_flow(&flow, FlowOptions::new().max_workers(4))
        .unwrap()
        .run()
        .await
        .unwrap();
    assert!(results.values().all(|r| r.is_success()), "{results:?}");
    let spans = std::fs::read_to_string(&log).unwrap();
    assert_eq!(spans.lines().count(), 8, "{spans}");
    assert_eq!(most_at_once(&spans), 2, "two gpu units: {spans}");
}

#[tokio::test]
async fn a_rate_from_the_limits_section_spaces_the_starts() {
    let text = "name: paced\nlimits:\n  rate: {celeriac.echo: 5/s}\ntasks:\n  a: {task: celeriac.echo}\n  b: {task: celeriac.echo}\n  c: {task: celeriac.echo}\n  d: {task: celeriac.echo}\n";
    let flow = Flow::parse(text, "paced.yaml").unwrap();
    let started = Instant::now();
    let results = LocalScheduler::from_flow(&flow, FlowOptions::new().max_workers(4))
        .unwrap()
        .run()
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(results.values().all(|r| r.is_success()), "{results:?}");
    // Starts at 0, 200, 400 and 600 ms.
    assert!(took >= Duration::from_millis(590), "{took:?}");
}

#[tokio::test]
async fn a_task_naming_a_pool_without_capacity_is_refused_before_it_runs() {
    let text = "name: unknown\ntasks:\n  a: {task: celeriac.echo, pools: {gpu: 1}}\n";
    let flow = Flow::parse(text, "unknown.yaml").unwrap();
    let scheduler = LocalScheduler::from_flow(&flow, FlowOptions::new()).unwrap();
    let err = scheduler.run().await.unwrap_err();
    assert!(err.to_string().contains("gpu"), "{err}");
}

#[test]
fn a_bad_limits_section_names_its_key() {
    for (limits, key) in [
        (
            "  rate: {celeriac.echo: fast}\n",
            "limits.rate.celeriac.echo",
        ),
        ("  tenant_rate: {acme: 5/d}\n", "limits.tenant_rate.acme"),
        ("  pools: {gpu: 0}\n", "limits.pools.gpu"),
        ("  pools: [gpu]\n", "limits.pools"),
        ("  speed: {x: 1}\n", "speed"),
    ] {
        let text = format!("name: bad\nlimits:\n{limits}tasks:\n  a: {{task: celeriac.echo}}\n");
        let err = Flow::parse(&text, "bad.yaml").unwrap_err().to_string();
        assert!(err.contains(key), "{limits}: {err}");
    }
}
