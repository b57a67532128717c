//! Alerting end to end: a real Prometheus scrapes a real worker on
//! loopback, loads the chart's alert rules (with their `for:` durations
//! shortened) and fires the dead-letter alert once the DLQ fills.
//!
//! Needs the `prometheus` binary (Debian's `prometheus` package); the test
//! installs it with apt-get when it is missing, like `charts/check` does for
//! promtool, and fails with instructions when it cannot.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use celeriac_producer::SendOptions;
use celeriac_tests::eventually;

use crate::support::{producer, MetricsWorker};

/// The chart's rules file, the one source of truth for the alerts.
const ALERTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../charts/celeriac/files/alerts.yaml"
);
/// The scrape job the rules select (`job="celeriac"`).
const JOB: &str = "celeriac";
const ALERT: &str = "CeleriacDeadLetterQueueNotEmpty";
const HOW_TO_PROVIDE_PROMETHEUS: &str = "install Debian's prometheus package \
     (`apt-get install prometheus`, which the test tries itself when run as root) \
     or put a `prometheus` 2.x binary on PATH";

/// The `prometheus` binary: on PATH, or installed from Debian's package.
fn prometheus_binary() -> PathBuf {
    let find = || {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("prometheus"))
                .find(|p| p.is_file())
        })
    };
    if let Some(found) = find() {
        return found;
    }
    eprintln!("prometheus is not on PATH; installing Debian's prometheus package");
    let installed = Command::new("sh")
        .args([
            "-c",
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null",
        ])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    match find() {
        Some(found) => found,
        None => panic!(
            "no prometheus binary (apt-get install {}); {HOW_TO_PROVIDE_PROMETHEUS}",
            if installed {
                "succeeded but none is on PATH"
            } else {
                "failed"
            }
        ),
    }
}

/// A Prometheus server on a free loopback port with a directory of its own;
/// killed and cleaned up when dropped.
struct PrometheusServer {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
}

impl PrometheusServer {
    /// Scrapes `target` every second as job `celeriac` and evaluates
    /// `rules` every second.
    fn start(target: SocketAddr, rules: &str) -> Self {
        let binary = prometheus_binary();
        let dir = std::env::temp_dir().join(format!(
            "celeriac-prometheus-{}",
            uuid::Uuid::now_v7().simple()
        ));
        std::fs::create_dir_all(dir.join("data"))
            .unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        std::fs::write(dir.join("alerts.yaml"), rules).unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules}\n\
             scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n      - targets: ['{target}']\n",
            rules = dir.join("alerts.yaml").display(),
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let addr = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new(&binary)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "start {}: {e}; {HOW_TO_PROVIDE_PROMETHEUS}",
                    binary.display()
                )
            });
        PrometheusServer { child, dir, addr }
    }

    /// `GET path` on the HTTP API, parsed as JSON (`None` if it does not
    /// answer yet).
    async fn api(&self, path: &str) -> Option<serde_json::Value> {
        let (status, body) = crate::support::get(self.addr, path).await;
        // The API answers with chunked encoding: take the JSON object out.
        let start = body.find('{')?;
        let end = body.rfind('}')?;
        (status == 200).then(|| serde_json::from_str(&body[start..=end]).ok())?
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// The chart's rules with every `for:` shortened to one second.
fn rules_for_test(chart_rules: &Path) -> String {
    let text = std::fs::read_to_string(chart_rules)
        .unwrap_or_else(|e| panic!("read {}: {e}", chart_rules.display()));
    assert!(
        text.contains(ALERT) && text.contains("job=\"celeriac\""),
        "{ALERT} in the chart's rules"
    );
    text.lines()
        .map(|line| match line.trim_start().strip_prefix("for:") {
            Some(_) => format!("{}for: 1s", &line[..line.len() - line.trim_start().len()]),
            None => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The state of `alert` for queue `default` (`None` when not pending or
/// firing).
fn dlq_alert_state(alerts: &serde_json::Value) -> Option<String> {
    alerts["data"]["alerts"].as_array()?.iter().find_map(|a| {
        (a["labels"]["alertname"] == ALERT && a["labels"]["queue"] == "default")
            .then(|| a["state"].as_str().unwrap_or_default().to_owned())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_fires_the_dead_letter_alert() {
    let started = Instant::now();
    let ns = celeriac_tests::namespace("alert-dlq");
    let worker = MetricsWorker::start(&ns, Duration::from_millis(300)).await;
    worker.wait_ready().await;
    let prometheus = PrometheusServer::start(worker.addr, &rules_for_test(Path::new(ALERTS)));

    // Prometheus is up, has loaded the rules and scrapes the worker.
    let query = "/api/v1/query?query=celeriac_worker_ready%7Bjob%3D%22celeriac%22%7D";
    let scraping = eventually(Duration::from_secs(15), || async {
        prometheus
            .api(query)
            .await
            .and_then(|v| {
                v["data"]["result"][0]["value"][1]
                    .as_str()
                    .map(|s| s == "1")
            })
            .unwrap_or(false)
    })
    .await;
    assert!(
        scraping,
        "Prometheus never scraped celeriac_worker_ready=1 from the worker; targets: {:?}; log:\n{}",
        prometheus.api("/api/v1/targets").await,
        prometheus.log()
    );
    let rules = prometheus.api("/api/v1/rules").await.unwrap_or_default();
    assert!(
        rules.to_string().contains(ALERT),
        "the rules are loaded: {rules}"
    );
    let alerts = prometheus.api("/api/v1/alerts").await.unwrap_or_default();
    assert_eq!(
        dlq_alert_state(&alerts),
        None,
        "the DLQ alert before any dead letter: {alerts}"
    );
    let scraped_at = started.elapsed();

    // Fill the DLQ: tasks nobody handles are dead-lettered at once.
    let producer = producer(&ns).await;
    for _ in 0..3 {
        let stray = producer
            .prepare_value("test.nobody-home", rmpv::Value::Nil, &SendOptions::new())
            .unwrap();
        producer.send_prepared(&stray).await.unwrap();
    }
    let filled = Instant::now();
    let seen = std::sync::Mutex::new(serde_json::Value::Null);
    let firing = eventually(Duration::from_secs(20), || async {
        let alerts = prometheus.api("/api/v1/alerts").await.unwrap_or_default();
        let state = dlq_alert_state(&alerts);
        *seen.lock().unwrap() = alerts;
        state.as_deref() == Some("firing")
    })
    .await;
    let last = seen.into_inner().unwrap();
    assert!(
        firing,
        "{ALERT} did not fire within 20 s of filling the DLQ; alerts: {last}; worker: {:?}; log:\n{}",
        worker.handle.stats(),
        prometheus.log()
    );
    let alert = last["data"]["alerts"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["labels"]["alertname"] == ALERT))
        .cloned()
        .unwrap_or_default();
    assert_eq!(alert["labels"]["severity"], "warning");
    assert_eq!(
        alert["value"].as_str().and_then(|v| v.parse::<f64>().ok()),
        Some(3.0),
        "{alert}"
    );
    eprintln!(
        "{ALERT} firing {:.1} s after the DLQ was filled (Prometheus scraping after {:.1} s, {:.1} s in all)",
        filled.elapsed().as_secs_f64(),
        scraped_at.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    drop(prometheus);
    worker.stop().await;
}
