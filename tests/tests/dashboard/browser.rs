//! A real headless Chromium drives the dashboard: it logs in, loads every
//! page, checks each against what was sent (two live workers with
//! heartbeats, a queue's lanes inside it), revokes and terminates a running
//! task, finds a failed task by its id, sees why it failed, replays its
//! dead letter from the UI (click, confirm) and sees it succeed, replays
//! several more in bulk, then deletes the rest. Each page's screenshot is
//! saved to `docs/screenshots/`, where the README shows them.

use std::path::PathBuf;
use std::time::Duration;

use celeriac_dashboard::Login;
use celeriac_producer::SendOptions;
use celeriac_schema::store::Store;
use celeriac_schema::workflow::{Node, Workflow};
use celeriac_schema::{TaskId, TaskState};
use serde_json::json;

use crate::support::{
    setup_with, token_login, until, Add, Flaky, Options, Slow, FLAKY_ERROR, HEARTBEAT,
};
use crate::webdriver::Browser;

const WAIT: Duration = Duration::from_secs(30);
const WIDTH: u32 = 1360;

/// Ticks the dead letters of `ids` in the list and waits until the bulk
/// replay button counts them.
async fn select_dead_letters(b: &Browser, ids: &[TaskId]) {
    for id in ids {
        b.click_on(
            &format!("#dead-letters tr[data-id='{id}'] input[type=checkbox]"),
            WAIT,
        )
        .await;
    }
    b.wait_text(
        "#replay-selected",
        &format!("Replay {} selected", ids.len()),
        WAIT,
    )
    .await;
}

fn shot(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/screenshots")
        .join(format!("{name}.png"))
}

#[test]
fn a_browser_finds_a_failed_task_and_replays_it() {
    // The scenario is one large future: polled on a thread with room for
    // it in a debug build (the dashboard and the worker run on the
    // runtime's own threads, with the usual stacks).
    let run = std::thread::Builder::new()
        .stack_size(32 << 20)
        .spawn(|| {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(scenario());
        })
        .unwrap();
    if let Err(panic) = run.join() {
        std::panic::resume_unwind(panic);
    }
}

async fn scenario() {
    let login = token_login();
    let Login::Token(token) = login.clone() else {
        unreachable!()
    };
    let options = Options {
        queues: &["reports"],
        live_workers: &["worker-1", "worker-2"],
        revoke: true,
        ..Options::default()
    };
    let s = setup_with("dash-ui", options, |c| c.login = Some(login)).await;
    let opts = SendOptions::default();
    // A queue nobody consumes: its tasks wait, and the page warns.
    s.producer.ensure_queue("reports").await.unwrap();
    let reports = SendOptions::default().queue("reports");
    for i in 0..3 {
        s.producer.send::<Add>(&(i, 2), &reports).await.unwrap();
    }

    // What the pages will show: tasks that succeed, one that fails into
    // the dead-letter queue, and a workflow with a failed branch.
    let mut adds = Vec::new();
    for i in 0..6 {
        adds.push(
            s.producer
                .send::<Add>(&(i, i * 10), &opts)
                .await
                .unwrap()
                .id(),
        );
    }
    let invoice = s
        .producer
        .send::<Flaky>(&"invoice-2041".to_owned(), &opts)
        .await
        .unwrap()
        .id();
    // More failures, to replay in bulk.
    let mut more = Vec::new();
    for input in ["invoice-2042", "invoice-2043", "receipt-17"] {
        more.push(
            s.producer
                .send::<Flaky>(&input.to_owned(), &opts)
                .await
                .unwrap()
                .id(),
        );
    }
    let mut wf = Workflow::new();
    let arg = |a: i64| rmpv::Value::Array(vec![a.into(), 1.into()]);
    wf.push(Node::new("fetch", "dash.add", arg(1)));
    wf.push(Node::new("resize", "dash.add", arg(2)).after(["fetch"]));
    wf.push(Node::new("thumbnail", "dash.add", arg(3)).after(["fetch"]));
    wf.push(Node::new("publish", "dash.add", arg(4)).after(["resize", "thumbnail"]));
    wf.push(Node::new("audit", "dash.flaky", rmpv::Value::from("audit-7")).after(["fetch"]));
    wf.push(Node::new("archive", "dash.add", arg(5)).after(["audit"]));
    let workflow = s.producer.submit(&wf, &[]).await.unwrap();
    for id in adds.iter().chain([&invoice]).chain(&more) {
        until(WAIT, "the sent tasks to finish", || async {
            let r = s.store.get(*id).await.ok().flatten()?;
            r.state.is_terminal().then_some(())
        })
        .await;
    }
    let _ = workflow.wait(WAIT).await;
    // A long task runs while the pages are looked at.
    let slow = s.producer.send::<Slow>(&600_000, &opts).await.unwrap().id();
    let slow_worker = until(WAIT, "the long task to start", || async {
        let r = s.store.get(slow).await.ok().flatten()?;
        (r.state == TaskState::Started).then_some(r.worker?)
    })
    .await;

    let b = Browser::start(WIDTH, 900).await;
    let base = s.base();

    // The login page, then the queues.
    b.goto(&format!("{base}/#/queues")).await;
    let input = b.wait_for("#token", WAIT).await;
    b.screenshot(&shot("login"), WIDTH).await;
    b.type_text(&input, &token).await;
    let submit = b.wait_for("#login-submit", WAIT).await;
    b.click(&submit).await;
    let row = b.wait_for("#queues tr[data-queue=default]", WAIT).await;
    let text = b.text(&row).await;
    assert!(
        text.contains(&format!("{}.q.default", s.ns.name())),
        "{text}"
    );
    // Five dead letters: the four invoices and the workflow's audit node.
    b.wait_text("#queues tr[data-queue=default] td:last-child", "5", WAIT)
        .await;
    // The tolerance classes are inside their queue, not queues of their
    // own: two logical queues.
    b.wait_text("#stat-queues .value", "2", WAIT).await;
    assert!(
        b.find("#queues tr[data-queue='default.tol.0']")
            .await
            .is_none(),
        "a lane listed as a queue"
    );
    assert_eq!(b.find_all("#queues tbody tr[data-queue]").await.len(), 2);
    b.wait_text(
        "#queues tr[data-queue=default] .lanes-toggle",
        "6 tolerance classes",
        WAIT,
    )
    .await;
    b.click_on("#queues tr[data-queue=default] .lanes-toggle", WAIT)
        .await;
    b.wait_for("#queues tr.lane[data-lane='default.tol.5']", WAIT)
        .await;
    assert_eq!(b.find_all("#queues tr.lane").await.len(), 6);
    // Two workers consume the queue and its six classes: two consumers.
    let consumers = b
        .wait_text("#queues tr[data-queue=default] td:nth-child(5)", "2", WAIT)
        .await;
    assert_eq!(consumers.trim(), "2");
    // The long task is delivered and not acknowledged, once the management
    // API reports the new queue (some seconds after it was declared).
    b.wait_text("#queues tr[data-queue=default] td:nth-child(4)", "1", WAIT)
        .await;
    b.wait_text("#mode", "read-write", WAIT).await;
    let waiting = b
        .wait_text("#queues tr[data-queue=reports]", "no consumers", WAIT)
        .await;
    assert!(waiting.contains('3'), "{waiting}");
    // Rates appear from the second sample on.
    b.wait_text("#queues tr[data-queue=default]", "/s", WAIT)
        .await;
    b.screenshot(&shot("queues"), WIDTH).await;

    // Tasks: every task sent is listed; the failed filter shows only the
    // failures.
    b.goto(&format!("{base}/#/tasks")).await;
    b.wait_for(&format!("#tasks tr[data-id='{}']", adds[0]), WAIT)
        .await;
    for id in adds.iter().chain([&invoice]) {
        assert!(
            b.find(&format!("#tasks tr[data-id='{id}']"))
                .await
                .is_some(),
            "{id} listed"
        );
    }
    b.wait_for(&format!("#tasks tr[data-id='{slow}']"), WAIT)
        .await;
    assert_eq!(
        b.find_all("#tasks tbody tr").await.len(),
        3 + 6 + 1 + 3 + 1 + 6
    );
    b.screenshot(&shot("tasks"), WIDTH).await;
    b.goto(&format!("{base}/#/tasks?state=failed")).await;
    b.wait_for(&format!("#tasks tr[data-id='{invoice}']"), WAIT)
        .await;
    until(WAIT, "the failed filter", || async {
        (b.find_all("#tasks tbody tr").await.len() == 5).then_some(())
    })
    .await;
    // An absolute range that ends before anything was sent: nothing.
    b.goto(&format!("{base}/#/tasks?until=2001-01-01T00:00"))
        .await;
    b.wait_text("#tasks tbody", "No tasks match", WAIT).await;
    let until_value = b
        .execute("return document.getElementById('f-until').value", json!([]))
        .await;
    assert_eq!(until_value, "2001-01-01T00:00");

    // Find the failed task from its id, and see why it failed.
    b.goto(&format!("{base}/#/queues")).await;
    let find = b.wait_for("#find-id", WAIT).await;
    b.type_text(&find, &format!("{invoice}\n")).await;
    let error = b.wait_text("#task-error", FLAKY_ERROR, WAIT).await;
    assert!(error.contains("UpstreamRefused"), "{error}");
    assert!(b.url().await.ends_with(&format!("#/task/{invoice}")));
    b.wait_for("#history tbody tr", WAIT).await;
    let created = b.wait_text("#created", "20", WAIT).await;
    assert!(!created.contains('—'), "{created}");
    b.screenshot(&shot("task-failed"), WIDTH).await;

    // Workflows: the list, and the DAG with a node per state.
    b.goto(&format!("{base}/#/workflows")).await;
    b.wait_for(&format!("#workflows tr[data-id='{}']", workflow.id()), WAIT)
        .await;
    b.screenshot(&shot("workflows"), WIDTH).await;
    b.goto(&format!("{base}/#/workflow/{}", workflow.id()))
        .await;
    b.wait_for("#dag g.node[data-node=archive]", WAIT).await;
    let states = b
        .execute(
            "return Object.fromEntries([...document.querySelectorAll('#dag g.node')].map(g => [g.dataset.node, g.dataset.state]))",
            json!([]),
        )
        .await;
    assert_eq!(
        states,
        json!({"fetch": "succeeded", "resize": "succeeded", "thumbnail": "succeeded",
               "publish": "succeeded", "audit": "failed", "archive": "skipped"})
    );
    assert_eq!(
        b.find_all("#dag path[marker-end]").await.len(),
        6,
        "one edge per dependency"
    );
    // The skipped node never ran: no worker is listed for it.
    let archive = b.wait_text("tr[data-node=archive]", "skipped", WAIT).await;
    assert!(!archive.contains("worker-"), "{archive}");
    b.screenshot(&shot("workflow"), WIDTH).await;

    // Workers: both live from their heartbeats, the long task's worker
    // running it; both seen in the tasks.
    b.goto(&format!("{base}/#/workers")).await;
    for id in ["worker-1", "worker-2"] {
        let row = b
            .wait_text(
                &format!("#heartbeats tr[data-worker='{id}']"),
                "online",
                WAIT,
            )
            .await;
        assert!(row.contains("default"), "{row}");
        assert!(row.contains(env!("CARGO_PKG_VERSION")), "{row}");
        b.wait_for(&format!("#seen tr[data-worker='{id}']"), WAIT)
            .await;
    }
    b.wait_text(
        &format!("#heartbeats tr[data-worker='{slow_worker}']"),
        "1 / 4",
        WAIT,
    )
    .await;
    assert!(b.find("#no-heartbeats").await.is_none());
    // The latest heartbeat is seconds old (a beat every HEARTBEAT).
    let beat = b
        .wait_text(
            &format!("#heartbeats tr[data-worker='{slow_worker}'] td:nth-child(9)"),
            " s ago",
            WAIT,
        )
        .await;
    let secs: u64 = beat.trim_end_matches(" s ago").trim().parse().unwrap();
    assert!(secs <= 3, "{beat} with a heartbeat every {HEARTBEAT:?}");
    b.screenshot(&shot("workers"), WIDTH).await;

    // Revoke the long task from its page: the dialog offers a plain revoke
    // and one that terminates the run; the second stops it.
    b.goto(&format!("{base}/#/task/{slow}")).await;
    b.wait_text("main .page-head h1", "started", WAIT).await;
    b.click_on("#revoke:not([disabled])", WAIT).await;
    let terminate = b.wait_for("#confirm-terminate", WAIT).await;
    b.wait_text("#confirm-ok", "Revoke", WAIT).await;
    b.wait_text("#modal", "SIGTERM", WAIT).await;
    b.screenshot_window(&shot("revoke-confirm"), WIDTH).await;
    b.click(&terminate).await;
    until(WAIT, "the long task to be revoked", || async {
        let r = s.store.get(slow).await.ok().flatten()?;
        (r.state == TaskState::Revoked).then_some(())
    })
    .await;
    b.wait_text("#toast", "terminated", WAIT).await;
    b.wait_text("main .page-head h1", "revoked", WAIT).await;
    // Dismissed, so that it does not cover the next screenshots.
    b.execute("document.getElementById('toast').hidden = true", json!([]))
        .await;

    // Dead letters: all five listed; three picked for a bulk replay.
    b.goto(&format!("{base}/#/dead-letters")).await;
    b.wait_for(&format!("#dead-letters tr[data-id='{invoice}']"), WAIT)
        .await;
    assert_eq!(b.find_all("#dead-letters tbody tr").await.len(), 5);
    let replay = b.wait_for("#replay-selected", WAIT).await;
    assert!(
        b.attribute(&replay, "disabled").await.is_some(),
        "nothing selected yet"
    );
    select_dead_letters(&b, &more).await;
    assert!(
        b.find("#replay-selected:not([disabled])").await.is_some(),
        "three selected"
    );
    b.screenshot(&shot("dead-letters"), WIDTH).await;

    // From the failed task to its dead letter; replay it (click, confirm)
    // once the service is back, and see it succeed.
    b.goto(&format!("{base}/#/task/{invoice}")).await;
    let open = b.wait_for("#to-dead-letter", WAIT).await;
    b.click(&open).await;
    b.wait_text("main", "invoice-2041", WAIT).await;
    b.screenshot(&shot("dead-letter"), WIDTH).await;
    s.healed.heal();
    let replay = b.wait_for("#replay-one", WAIT).await;
    b.click(&replay).await;
    let ok = b.wait_for("#confirm-ok", WAIT).await;
    b.screenshot_window(&shot("replay-confirm"), WIDTH).await;
    b.click(&ok).await;
    until(WAIT, "the replayed task to succeed", || async {
        let r = s.store.get(invoice).await.ok().flatten()?;
        (r.state == TaskState::Succeeded).then_some(())
    })
    .await;
    b.wait_text("main .page-head h1", "succeeded", WAIT).await;
    assert!(b.url().await.ends_with(&format!("#/task/{invoice}")));
    b.wait_text("main", "processed invoice-2041", WAIT).await;
    b.screenshot(&shot("task-replayed"), WIDTH).await;

    // The dead-letter queue kept the other four.
    b.goto(&format!("{base}/#/dead-letters")).await;
    b.wait_for("#dead-letters tbody tr[data-id]", WAIT).await;
    until(WAIT, "four dead letters left", || async {
        let rows = b.find_all("#dead-letters tbody tr[data-id]").await;
        (rows.len() == 4
            && b.find(&format!("#dead-letters tr[data-id='{invoice}']"))
                .await
                .is_none())
        .then_some(())
    })
    .await;

    // Bulk replay: pick three, confirm; each runs again and succeeds.
    select_dead_letters(&b, &more).await;
    b.click_on("#replay-selected", WAIT).await;
    let confirm = b.wait_for("#confirm-ok", WAIT).await;
    assert_eq!(b.text(&confirm).await, "Replay 3");
    let listed = b.text(&b.wait_for("#modal ul", WAIT).await).await;
    for id in &more {
        assert!(listed.contains(&id.to_string()), "{listed}");
    }
    b.click(&confirm).await;
    b.wait_text("#toast", "replayed 3", WAIT).await;
    for id in &more {
        until(WAIT, "the bulk-replayed tasks to succeed", || async {
            let r = s.store.get(*id).await.ok().flatten()?;
            (r.state == TaskState::Succeeded && r.runs == 2).then_some(())
        })
        .await;
    }
    until(WAIT, "one dead letter left", || async {
        let rows = b.find_all("#dead-letters tbody tr[data-id]").await;
        (rows.len() == 1).then_some(())
    })
    .await;

    // Select all, delete, confirm: the dead-letter queue is empty.
    let all = b.wait_for("#select-all", WAIT).await;
    b.click(&all).await;
    b.wait_text("#delete-selected", "Delete 1 selected", WAIT)
        .await;
    let delete = b.wait_for("#delete-selected", WAIT).await;
    b.click(&delete).await;
    let confirm = b.wait_for("#confirm-ok", WAIT).await;
    assert_eq!(b.text(&confirm).await, "Delete 1");
    b.click(&confirm).await;
    b.wait_text("#dead-letters tbody", "No dead letters", WAIT)
        .await;
    b.wait_text("#toast", "deleted 1", WAIT).await;
    b.quit().await;
    s.stop().await;
}
