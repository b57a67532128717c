//! The routes: the pages (one built-in front end), the JSON API, and the
//! login.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, SET_COOKIE, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{self, Login};
use crate::dead_letters::{self, Action, Selection};
use crate::error::{Error, Result};
use crate::{queues, tasks, workers, workflows, App};

const INDEX_HTML: &str = include_str!("../assets/index.html");
const LOGIN_HTML: &str = include_str!("../assets/login.html");
const UI_JS: &str = include_str!("../assets/ui.js");
const APP_JS: &str = include_str!("../assets/app.js");
const LOGIN_JS: &str = include_str!("../assets/login.js");
const APP_CSS: &str = include_str!("../assets/app.css");
const FAVICON: &str = include_str!("../assets/favicon.svg");

pub(crate) fn router(app: Arc<App>) -> Router {
    let api = Router::new()
        .route("/api/config", get(config))
        .route("/api/queues", get(queue_list))
        .route("/api/tasks", get(task_list))
        .route("/api/tasks/{id}", get(task_detail))
        .route("/api/tasks/{id}/revoke", post(task_revoke))
        .route("/api/workflows", get(workflow_list))
        .route("/api/workflows/{id}", get(workflow_detail))
        .route("/api/dead-letters", get(dead_letter_list))
        .route("/api/dead-letters/replay", post(dead_letter_replay))
        .route("/api/dead-letters/delete", post(dead_letter_delete))
        .route("/api/dead-letters/{queue}/{id}", get(dead_letter_show))
        .route("/api/workers", get(worker_list))
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
        .fallback(api_not_found);
    Router::new()
        .route("/", get(index))
        .route("/login", get(login_page))
        .route(
            "/assets/ui.js",
            get(|| asset(UI_JS, "text/javascript; charset=utf-8")),
        )
        .route(
            "/assets/app.js",
            get(|| asset(APP_JS, "text/javascript; charset=utf-8")),
        )
        .route(
            "/assets/login.js",
            get(|| asset(LOGIN_JS, "text/javascript; charset=utf-8")),
        )
        .route(
            "/assets/app.css",
            get(|| asset(APP_CSS, "text/css; charset=utf-8")),
        )
        .route(
            "/assets/favicon.svg",
            get(|| asset(FAVICON, "image/svg+xml")),
        )
        .merge(api)
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            auth::guard,
        ))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(app)
}

async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'"),
    );
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.entry(CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

async fn asset(body: &'static str, content_type: &'static str) -> Response {
    ([(CONTENT_TYPE, content_type)], body).into_response()
}

async fn index() -> Response {
    asset(INDEX_HTML, "text/html; charset=utf-8").await
}

async fn login_page() -> Response {
    asset(LOGIN_HTML, "text/html; charset=utf-8").await
}

async fn api_not_found() -> Error {
    Error::NotFound("no such API endpoint; see the dashboard's README for the list".into())
}

async fn config(State(app): State<Arc<App>>) -> Json<Value> {
    let login = match &app.login {
        None => "none",
        Some(Login::Token(_)) => "token",
        Some(Login::Basic { .. }) => "basic",
    };
    Json(json!({
        "namespace": app.topology.namespace(),
        "read_only": app.read_only_reason().is_some(),
        "read_only_reason": app.read_only_reason(),
        "login": login,
        "revoke": app.revoke.is_some(),
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

async fn queue_list(State(app): State<Arc<App>>) -> Result<Json<queues::QueuesView>> {
    queues::list(&app).await.map(Json)
}

async fn task_list(
    State(app): State<Arc<App>>,
    Query(params): Query<tasks::ListParams>,
) -> Result<Json<Value>> {
    tasks::list(&app, &params).await.map(Json)
}

async fn task_detail(State(app): State<Arc<App>>, Path(id): Path<String>) -> Result<Json<Value>> {
    tasks::detail(&app, &id).await.map(Json)
}

/// `POST /api/tasks/{id}/revoke` `{"terminate": bool}`.
async fn task_revoke(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    bytes: axum::body::Bytes,
) -> Result<Json<Value>> {
    // An empty body is a plain revoke.
    let options: tasks::RevokeOptions = if bytes.iter().all(u8::is_ascii_whitespace) {
        tasks::RevokeOptions::default()
    } else {
        body(&bytes)?
    };
    tasks::revoke(&app, &id, options).await.map(Json)
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<usize>,
}

async fn workflow_list(State(app): State<Arc<App>>, Query(q): Query<Limit>) -> Result<Json<Value>> {
    workflows::list(&app, q.limit.unwrap_or(50)).await.map(Json)
}

async fn workflow_detail(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    workflows::detail(&app, &id).await.map(Json)
}

#[derive(Deserialize)]
struct DeadLetterQuery {
    queue: Option<String>,
    limit: Option<usize>,
}

async fn dead_letter_list(
    State(app): State<Arc<App>>,
    Query(q): Query<DeadLetterQuery>,
) -> Result<Json<Value>> {
    let queue = q.queue.as_deref().filter(|s| !s.is_empty());
    dead_letters::list(&app, queue, q.limit).await.map(Json)
}

async fn dead_letter_show(
    State(app): State<Arc<App>>,
    Path((queue, id)): Path<(String, String)>,
) -> Result<Json<Value>> {
    dead_letters::show(&app, &queue, &id).await.map(Json)
}

/// A JSON body, or a 400 that says what is wrong with it.
fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::BadRequest(format!("invalid JSON body: {e}")))
}

async fn dead_letter_replay(
    State(app): State<Arc<App>>,
    bytes: axum::body::Bytes,
) -> Result<Json<Value>> {
    let selection: Selection = body(&bytes)?;
    dead_letters::act(&app, &selection, Action::Replay)
        .await
        .map(Json)
}

async fn dead_letter_delete(
    State(app): State<Arc<App>>,
    bytes: axum::body::Bytes,
) -> Result<Json<Value>> {
    let selection: Selection = body(&bytes)?;
    dead_letters::act(&app, &selection, Action::Delete)
        .await
        .map(Json)
}

async fn worker_list(State(app): State<Arc<App>>) -> Result<Json<Value>> {
    workers::list(&app).await.map(Json)
}

#[derive(Deserialize)]
struct LoginBody {
    token: String,
}

/// `POST /api/login` `{"token": "..."}`: sets the session cookie when the
/// token is right.
async fn login(State(app): State<Arc<App>>, bytes: axum::body::Bytes) -> Result<Response> {
    let Some(Login::Token(token)) = &app.login else {
        return Err(Error::BadRequest(
            "this dashboard has no token login".into(),
        ));
    };
    let given: LoginBody = body(&bytes)?;
    if !auth::same(given.token.trim().as_bytes(), token.as_bytes()) {
        return Ok((
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "wrong token"})),
        )
            .into_response());
    }
    let cookie = format!(
        "{}={}; HttpOnly; SameSite=Strict; Path=/",
        auth::COOKIE_NAME,
        auth::session(token)
    );
    let mut response = Json(json!({"ok": true})).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(SET_COOKIE, value);
    }
    Ok(response)
}

/// `POST /api/logout`: clears the session cookie.
async fn logout() -> Response {
    let mut response = Json(json!({"ok": true})).into_response();
    let cookie = format!(
        "{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
        auth::COOKIE_NAME
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(SET_COOKIE, value);
    }
    response
}
