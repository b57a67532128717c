//! The control plane's hooks: a revoke function enables the revoke
//! endpoint (and gets whether to terminate a run), and a heartbeat source
//! fills the live workers table.

use std::sync::{Arc, Mutex};

use celeriac_dashboard::{Config, Dashboard, Login, RevokeHook, WorkerHeartbeat, WorkerSource};
use celeriac_schema::store::StoreSettings;
use celeriac_schema::TaskId;
use celeriac_tests::{broker, namespace, redis_store};
use serde_json::json;

use crate::support::request;

#[derive(Debug)]
struct Beats(Vec<WorkerHeartbeat>);

#[async_trait::async_trait]
impl WorkerSource for Beats {
    async fn heartbeats(&self) -> Result<Option<Vec<WorkerHeartbeat>>, String> {
        Ok(Some(self.0.clone()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_hook_and_a_heartbeat_source_are_used() {
    let ns = namespace("dash-hooks");
    let store = redis_store(&ns, StoreSettings::default()).await;
    let mut config = Config::new(&broker().await.url, ns.name());
    config.login = Some(Login::Token("hook-token".into()));
    let revoked: Arc<Mutex<Vec<(TaskId, bool)>>> = Arc::default();
    let seen = revoked.clone();
    let hook: RevokeHook = Arc::new(move |id, options| {
        let seen = seen.clone();
        Box::pin(async move {
            if let Ok(mut ids) = seen.lock() {
                ids.push((id, options.terminate));
            }
            if ids_len(&seen) > 2 {
                Err("the control exchange refused".to_owned())
            } else {
                Ok(format!("revoke of {id} sent to 2 workers"))
            }
        })
    });
    let beat = WorkerHeartbeat {
        kind: celeriac_schema::events::WorkerEventKind::Heartbeat,
        worker: "w-1".into(),
        hostname: "host-a".into(),
        pid: 42,
        queues: vec!["default".into()],
        concurrency: 8,
        in_flight: 3,
        processed: 1200,
        started_at: 1,
        at: celeriac_schema::now_ms(),
        version: "0.1.0".into(),
        heartbeat_ms: 2000,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        Dashboard::new(config, store)
            .revoke(hook)
            .workers(Arc::new(Beats(vec![beat.clone()])))
            .serve(listener, async {
                let _ = stopped.await;
            }),
    );
    let auth = [("Authorization", "Bearer hook-token")];
    let config = request(addr, "GET", "/api/config", &auth, None)
        .await
        .json();
    assert_eq!(config["revoke"], true);

    let id = TaskId::new();
    let r = request(
        addr,
        "POST",
        &format!("/api/tasks/{id}/revoke"),
        &auth,
        Some("{}"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["revoked"], id.to_string());
    assert_eq!(r.json()["terminate"], false);
    assert!(r.json()["message"].as_str().unwrap().contains("2 workers"));
    assert_eq!(*revoked.lock().unwrap(), vec![(id, false)]);
    // Terminate is passed on; a misspelt option is refused, not ignored.
    let r = request(
        addr,
        "POST",
        &format!("/api/tasks/{id}/revoke"),
        &auth,
        Some(r#"{"terminate": true}"#),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["terminate"], true);
    assert_eq!(*revoked.lock().unwrap(), vec![(id, false), (id, true)]);
    let r = request(
        addr,
        "POST",
        &format!("/api/tasks/{id}/revoke"),
        &auth,
        Some(r#"{"terminat": true}"#),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(revoked.lock().unwrap().len(), 2);
    // A failed revoke says why.
    let r = request(
        addr,
        "POST",
        &format!("/api/tasks/{id}/revoke"),
        &auth,
        Some("{}"),
    )
    .await;
    assert_eq!(r.status, 503);
    assert!(
        r.body.contains("the control exchange refused"),
        "{}",
        r.body
    );

    let workers = request(addr, "GET", "/api/workers", &auth, None)
        .await
        .json();
    assert_eq!(workers["heartbeats"], json!([beat]));
    assert!(workers["seen"].as_array().unwrap().is_empty());

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

fn ids_len(ids: &Mutex<Vec<(TaskId, bool)>>) -> usize {
    ids.lock().map(|v| v.len()).unwrap_or(0)
}
