//! Many dead letters: every command gets through all of them with bounded
//! memory; prints the time and peak resident memory of each.
//!
//! 5,000 by default (seconds, in CI); the figures for 100,000 in the README
//! come from a release run:
//!
//! ```sh
//! DLQ_LARGE_N=100000 cargo test --release -p celeriac-dlq --test large -- --nocapture
//! ```

mod common;

use std::process::Command;
use std::time::Instant;

use common::*;

/// Runs the binary under `/usr/bin/time` and returns (exit code, seconds,
/// peak RSS in KiB).
fn measured(url: &str, ns: &str, args: &[&str]) -> (i32, f64, u64) {
    let started = Instant::now();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%M"])
        .arg(bin())
        .env("AMQP_ADDR", url)
        .args(["--namespace", ns, "--queue", "default"])
        .args(args)
        .stdout(std::process::Stdio::null())
        .output()
        .expect("run /usr/bin/time celeriac-dlq");
    let secs = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let rss = stderr
        .lines()
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .next_back()
        .unwrap_or(0);
    (out.status.code().unwrap_or(-1), secs, rss)
}

/// Peak resident memory any command may reach, in KiB: bodies are never
/// kept, so it does not grow with the number of dead letters.
const RSS_LIMIT_KIB: u64 = 64 * 1024;

#[tokio::test(flavor = "multi_thread")]
async fn many_dead_letters() {
    let n: usize = std::env::var("DLQ_LARGE_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let s = setup("dlq-large").await;
    let url = celeriac_tests::broker().await.url.clone();
    let started = Instant::now();
    let specs: Vec<Spec> = (0..n)
        .map(|i| Spec::new("default", &format!("task.{}", i % 50)))
        .collect();
    dead_letters(&s, &specs).await;
    drop(specs);
    let dead = dlq_name(&s, "default");
    let work = work_name(&s, "default");
    expect_len(&s, &dead, n as u32).await;
    eprintln!(
        "published {n} dead letters in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    for args in [
        vec!["stats"],
        vec!["list", "--json"],
        vec!["export"],
        vec!["replay", "--dry-run", "--json"],
    ] {
        let (code, secs, rss) = measured(&url, &s.ns, &args);
        assert_eq!(code, 0, "{args:?}");
        assert!(rss < RSS_LIMIT_KIB, "{args:?} peaked at {rss} KiB");
        eprintln!(
            "{:<28} {n} in {secs:>6.1}s ({:>7.0}/s), peak RSS {:>6} KiB",
            args.join(" "),
            n as f64 / secs,
            rss
        );
        expect_len(&s, &dead, n as u32).await;
    }
    let (code, secs, rss) = measured(
        &url,
        &s.ns,
        &["replay", "--in-flight", "1", "--limit", "500"],
    );
    assert_eq!(code, 0);
    eprintln!(
        "{:<28} 500 in {secs:>6.1}s ({:>7.0}/s), peak RSS {:>6} KiB",
        "replay --in-flight 1",
        500.0 / secs,
        rss
    );
    let (code, secs, rss) = measured(&url, &s.ns, &["replay"]);
    assert_eq!(code, 0);
    assert!(rss < RSS_LIMIT_KIB, "replay peaked at {rss} KiB");
    let rest = n - 500;
    eprintln!(
        "{:<28} {rest} in {secs:>6.1}s ({:>7.0}/s), peak RSS {:>6} KiB",
        "replay",
        rest as f64 / secs,
        rss
    );
    expect_len(&s, &dead, 0).await;
    expect_len(&s, &work, n as u32).await;
    let (code, _, _) = measured(&url, &s.ns, &["purge", "--yes", "--dry-run"]);
    assert_eq!(code, 3, "the DLQ is empty now: nothing matches");
}
