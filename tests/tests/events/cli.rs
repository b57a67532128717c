//! `celeriac events`: JSON lines of the events it was asked for, `--count`
//! and `--timeout`, and its exit codes.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use celeriac_producer::SendOptions;
use celeriac_schema::builtin::Echo;
use celeriac_tests::{broker, celeriac_cli, namespace, InProcessWorker};

use crate::support::{builtins, producer};

/// `celeriac events` running in the background, its stderr read by a
/// thread.
struct Tail {
    child: Child,
    stderr: mpsc::Receiver<String>,
}

impl Tail {
    async fn start(ns: &str, args: &[&str]) -> Tail {
        let mut child = Command::new(celeriac_cli())
            .arg("events")
            .args(args)
            .args(["--namespace", ns])
            .env("AMQP_ADDR", &broker().await.url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, stderr) = mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Tail { child, stderr }
    }

    /// Waits until it says it listens (its queue is bound).
    fn listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            match self.stderr.recv_timeout(Duration::from_millis(100)) {
                Ok(line) if line.starts_with("listening on") => return,
                Ok(line) => panic!("celeriac events said: {line}"),
                Err(_) => {}
            }
        }
        panic!("celeriac events never started listening");
    }

    /// Waits for it to exit; returns its exit code, stdout and stderr.
    fn finish(mut self, timeout: Duration) -> (Option<i32>, String, String) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("celeriac events did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stdout = String::new();
        use std::io::Read;
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        let stderr: Vec<String> = self.stderr.try_iter().collect();
        (status.code(), stdout, stderr.join("\n"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn celeriac_events_prints_json_lines_up_to_its_count() {
    let ns = namespace("ev-cli");
    let worker = InProcessWorker::start(&ns, builtins(), |b| b.events(true)).await;
    let producer = producer(&ns).await;
    let tail = Tail::start(
        &ns,
        &[
            "--json",
            "--count",
            "4",
            "--timeout",
            "30s",
            "--task",
            "celeriac.echo",
        ],
    )
    .await;
    tail.listening();
    // A kind filter on a second tail: only the success.
    let succeeded = Tail::start(
        &ns,
        &["--kind", "succeeded", "--count", "1", "--timeout", "30s"],
    )
    .await;
    succeeded.listening();
    let id = producer
        .send::<Echo>(&rmpv::Value::from("hi"), &SendOptions::new())
        .await
        .unwrap()
        .id();

    let (code, stdout, stderr) = tail.finish(Duration::from_secs(30));
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    let mut kinds: Vec<&str> = lines.iter().map(|l| l["kind"].as_str().unwrap()).collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["received", "sent", "started", "succeeded"]);
    for line in &lines {
        assert_eq!(line["id"], id.to_string());
        assert_eq!(line["task"], "celeriac.echo");
        assert_eq!(line["queue"], "default");
        assert_eq!(line["attempt"], 0);
        assert_eq!(line["key"], id.to_string());
        assert!(line["at"].as_u64().is_some());
    }
    let done = lines.iter().find(|l| l["kind"] == "succeeded").unwrap();
    assert_eq!(done["succeeded_as"], id.to_string());
    assert!(done["worker"].as_str().is_some());

    let (code, stdout, stderr) = succeeded.finish(Duration::from_secs(30));
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout.contains("succeeded") && stdout.contains(&id.to_string()),
        "{stdout}"
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn celeriac_events_exits_4_when_the_count_is_not_reached_and_2_for_a_bad_kind() {
    let ns = namespace("ev-cli-timeout");
    let tail = Tail::start(
        &ns,
        &[
            "--count",
            "1",
            "--timeout",
            "300ms",
            "--task",
            "nothing.sends.this",
        ],
    )
    .await;
    tail.listening();
    let (code, stdout, stderr) = tail.finish(Duration::from_secs(15));
    assert_eq!(code, Some(4), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.is_empty());
    assert!(stderr.contains("timed out after 0 of 1"), "{stderr}");

    // A timeout without a count is a normal end.
    let tail = Tail::start(&ns, &["--timeout", "200ms"]).await;
    let (code, _, stderr) = tail.finish(Duration::from_secs(15));
    assert_eq!(code, Some(0), "{stderr}");

    let tail = Tail::start(&ns, &["--kind", "exploded"]).await;
    let (code, _, stderr) = tail.finish(Duration::from_secs(15));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("unknown event kind"), "{stderr}");
}
