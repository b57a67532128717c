//! The JSON API's rules for logins and writes: replay and delete need a
//! login, every write is checked, read-only wins, basic auth, and a broker
//! it cannot reach.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use celeriac_dashboard::Login;
use celeriac_producer::SendOptions;
use celeriac_schema::store::Store;
use celeriac_schema::{TaskId, TaskState};
use serde_json::json;

use crate::api::{dead_letter_depth_as, finished, ids, lane_names, WAIT};
use crate::support::{request, setup, token_login, until, Add, Flaky};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_enables_replay_and_delete_and_every_write_is_checked() {
    let login = token_login();
    let Login::Token(token) = login.clone() else {
        unreachable!()
    };
    let s = setup("dash-write", |c| c.login = Some(login)).await;
    let bearer = format!("Bearer {token}");
    let auth = [("Authorization", bearer.as_str())];
    let opts = SendOptions::default();
    let first = s
        .producer
        .send::<Flaky>(&"a".to_owned(), &opts)
        .await
        .unwrap()
        .id();
    let second = s
        .producer
        .send::<Flaky>(&"b".to_owned(), &opts)
        .await
        .unwrap()
        .id();
    finished(&s, first).await;
    finished(&s, second).await;
    until(WAIT, "two dead letters", || async {
        (dead_letter_depth_as(&s, &auth).await == 2).then_some(())
    })
    .await;

    // Every request needs the login.
    assert_eq!(
        request(s.addr, "GET", "/api/queues", &[], None)
            .await
            .status,
        401
    );
    let wrong = [("Authorization", "Bearer wrong")];
    assert_eq!(
        request(s.addr, "GET", "/api/queues", &wrong, None)
            .await
            .status,
        401
    );
    let page = request(s.addr, "GET", "/", &[], None).await;
    assert_eq!(
        page.status, 303,
        "a page redirects to the login: {}",
        page.headers
    );
    assert_eq!(
        request(s.addr, "GET", "/login", &[], None).await.status,
        200
    );
    // The login page sets a cookie that then works alone.
    let bad = request(
        s.addr,
        "POST",
        "/api/login",
        &[],
        Some(r#"{"token":"nope"}"#),
    )
    .await;
    assert_eq!(bad.status, 401);
    let ok = request(
        s.addr,
        "POST",
        "/api/login",
        &[],
        Some(&json!({"token": token}).to_string()),
    )
    .await;
    assert_eq!(ok.status, 200);
    let cookie = ok
        .headers
        .lines()
        .find_map(|l| {
            l.strip_prefix("set-cookie: ")
                .or_else(|| l.strip_prefix("Set-Cookie: "))
        })
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_owned();
    assert!(
        !cookie.contains(&token),
        "the cookie does not hold the token"
    );
    let by_cookie = request(s.addr, "GET", "/api/config", &[("Cookie", &cookie)], None).await;
    assert_eq!(by_cookie.status, 200);
    assert_eq!(by_cookie.json()["read_only"], false);

    // The write rules: POST, JSON, same origin.
    let body = json!({"queue": "default", "ids": [first.to_string()]}).to_string();
    let foreign = [
        ("Authorization", bearer.as_str()),
        ("Origin", "http://evil.example"),
    ];
    let r = request(
        s.addr,
        "POST",
        "/api/dead-letters/replay",
        &foreign,
        Some(&body),
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(r.json()["error"].as_str().unwrap().contains("cross-origin"));
    let form = [
        ("Authorization", bearer.as_str()),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ];
    let r = request(
        s.addr,
        "POST",
        "/api/dead-letters/replay",
        &form,
        Some(&body),
    )
    .await;
    assert_eq!(r.status, 415);
    assert_eq!(
        request(s.addr, "GET", "/api/dead-letters/replay", &auth, None)
            .await
            .status,
        405
    );
    let r = request(
        s.addr,
        "POST",
        "/api/dead-letters/replay",
        &auth,
        Some("{not json"),
    )
    .await;
    assert_eq!(r.status, 400);
    let r = request(
        s.addr,
        "POST",
        "/api/dead-letters/replay",
        &auth,
        Some(r#"{"queue":"default","ids":[]}"#),
    )
    .await;
    assert_eq!(r.status, 400);
    let r = request(
        s.addr,
        "POST",
        "/api/dead-letters/replay",
        &auth,
        Some(r#"{"queue":"no such!","ids":["x"]}"#),
    )
    .await;
    assert_eq!(r.status, 400);
    let r = request(
        s.addr,
        "POST",
        "/api/dead-letters/replay",
        &auth,
        Some(r#"{"queue":"ghost","ids":["x"]}"#),
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(dead_letter_depth_as(&s, &auth).await, 2, "nothing moved");

    // An id that is not there is reported, and nothing moves.
    let ghost = TaskId::new().to_string();
    let r = request(
        s.addr,
        "POST",
        "/api/dead-letters/replay",
        &auth,
        Some(&json!({"queue": "default", "ids": [ghost]}).to_string()),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["not_found"], json!([ghost]));
    assert_eq!(r.json()["done"], json!([]));
    assert_eq!(dead_letter_depth_as(&s, &auth).await, 2);

    // Replay one (healed now): it runs again and succeeds; the other stays.
    s.healed.heal();
    let base = s.base();
    let own = [
        ("Authorization", bearer.as_str()),
        ("Origin", base.as_str()),
    ];
    let r = request(
        s.addr,
        "POST",
        "/api/dead-letters/replay",
        &own,
        Some(&body),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["done"], json!([first.to_string()]));
    until(WAIT, "the replayed task to succeed", || async {
        let rec = s.store.get(first).await.ok().flatten()?;
        (rec.state == TaskState::Succeeded).then_some(())
    })
    .await;
    let rec = s.store.get(first).await.unwrap().unwrap();
    assert_eq!(rec.runs, 2, "ran again once");
    assert_eq!(dead_letter_depth_as(&s, &auth).await, 1);

    // Delete the other.
    let body = json!({"queue": "default", "ids": [second.to_string()]}).to_string();
    let r = request(
        s.addr,
        "POST",
        "/api/dead-letters/delete",
        &auth,
        Some(&body),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["done"], json!([second.to_string()]));
    assert_eq!(dead_letter_depth_as(&s, &auth).await, 0);
    assert_eq!(
        s.store.get(second).await.unwrap().unwrap().state,
        TaskState::Failed
    );

    // No control plane: revoke is not available.
    let r = request(
        s.addr,
        "POST",
        &format!("/api/tasks/{second}/revoke"),
        &auth,
        Some("{}"),
    )
    .await;
    assert_eq!(r.status, 501);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_with_read_only_and_queues_without_a_management_api() {
    let s = setup("dash-basic", |c| {
        c.login = Some(Login::Basic {
            user: "ops".into(),
            password: "pw".into(),
        });
        c.read_only = true;
        // Nothing listens there: queues come from passive declares.
        c.management_url = Some("http://127.0.0.1:9".into());
    })
    .await;
    let basic = format!("Basic {}", BASE64.encode("ops:pw"));
    let auth = [("Authorization", basic.as_str())];
    let denied = request(s.addr, "GET", "/api/queues", &[], None).await;
    assert_eq!(denied.status, 401);
    assert!(denied
        .headers
        .to_ascii_lowercase()
        .contains("www-authenticate: basic"));
    let wrong = format!("Basic {}", BASE64.encode("ops:px"));
    assert_eq!(
        request(s.addr, "GET", "/", &[("Authorization", &wrong)], None)
            .await
            .status,
        401
    );

    let flaky = s
        .producer
        .send::<Flaky>(&"x".to_owned(), &SendOptions::default())
        .await
        .unwrap()
        .id();
    finished(&s, flaky).await;
    let queues = until(WAIT, "the dead letter to be counted", || async {
        let q = s.get_json("/api/queues", &auth).await;
        (q["queues"][0]["dead_letters"] == 1).then_some(q)
    })
    .await;
    assert_eq!(queues["source"], "amqp");
    assert!(
        queues["note"].as_str().unwrap().contains("127.0.0.1:9"),
        "{queues}"
    );
    assert_eq!(queues["queues"][0]["queue"], "default");
    // Without the management API the tolerance classes are asked for by
    // name, and summed in as well (consumers: the one worker).
    assert_eq!(
        lane_names(&queues["queues"][0]).len(),
        6,
        "{}",
        queues["queues"][0]
    );
    assert_eq!(queues["queues"][0]["consumers"], 1);
    assert!(queues["queues"][0]["unacked"].is_null());

    // Read-only wins over the login.
    let config = s.get_json("/api/config", &auth).await;
    assert_eq!(config["read_only"], true);
    assert_eq!(config["login"], "basic");
    let body = json!({"queue": "default", "ids": [flaky.to_string()]}).to_string();
    let r = request(
        s.addr,
        "POST",
        "/api/dead-letters/delete",
        &auth,
        Some(&body),
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(r.json()["error"].as_str().unwrap().contains("--read-only"));
    let letters = s.get_json("/api/dead-letters?queue=default", &auth).await;
    assert_eq!(letters["letters"].as_array().unwrap().len(), 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_it_cannot_reach_is_a_503_that_says_so_and_tasks_still_show() {
    let s = setup("dash-nobroker", |c| {
        c.amqp_addr = "amqp://guest:guest@127.0.0.1:9/%2f".into();
        c.management_url = Some("http://127.0.0.1:9".into());
    })
    .await;
    let id = s
        .producer
        .send::<Add>(&(2, 3), &SendOptions::default())
        .await
        .unwrap()
        .id();
    finished(&s, id).await;
    for path in ["/api/queues", "/api/dead-letters"] {
        let r = request(s.addr, "GET", path, &[], None).await;
        assert_eq!(r.status, 503, "{path}: {}", r.body);
        assert!(
            r.json()["error"].as_str().unwrap().contains("127.0.0.1:9"),
            "{path}: {}",
            r.body
        );
    }
    let tasks = s.get_json("/api/tasks", &[]).await;
    assert_eq!(ids(&tasks, "tasks"), vec![id.to_string()]);
    s.stop().await;
}
