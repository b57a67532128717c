//! Who may look and who may act: the login (a bearer token or basic auth,
//! compared in constant time), read-only mode, and the checks every write
//! passes (POST, a JSON body, the dashboard's own origin).
//!
//! Without a login the dashboard is read-only: it never offers an open
//! write endpoint. With a login, every page and API request needs it: a
//! token as `Authorization: Bearer <token>` (or the `celeriac_dashboard`
//! cookie the login page sets), or basic auth.

use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, HOST, ORIGIN, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::App;

/// The name of the cookie the login page sets in token mode.
pub const COOKIE_NAME: &str = "celeriac_dashboard";

/// How users log in.
#[derive(Clone, PartialEq, Eq)]
pub enum Login {
    /// `Authorization: Bearer <token>`, or the login page's cookie.
    Token(String),
    /// HTTP basic auth.
    Basic {
        /// The user name.
        user: String,
        /// The password.
        password: String,
    },
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Login::Token(_) => f.write_str("Login::Token(..)"),
            Login::Basic { user, .. } => write!(f, "Login::Basic({user:?}, ..)"),
        }
    }
}

impl Login {
    /// A token read from a file (surrounding whitespace ignored).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a file that cannot be read or holds no token.
    ///
    /// # Examples
    ///
    /// ```
    /// let dir = std::env::temp_dir().join(format!("dash-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let file = dir.join("token");
    /// std::fs::write(&file, "s3cret\n").unwrap();
    /// let login = celeriac_dashboard::Login::token_file(&file).unwrap();
    /// assert_eq!(login, celeriac_dashboard::Login::Token("s3cret".into()));
    /// ```
    pub fn token_file(path: &Path) -> Result<Login> {
        let text = read(path)?;
        let token = text.trim();
        if token.is_empty() {
            return Err(Error::Config(format!(
                "the token file {} is empty",
                path.display()
            )));
        }
        Ok(Login::Token(token.to_owned()))
    }

    /// `user:password` read from a file (one line; a trailing newline is
    /// ignored), or from a directory holding the files `username` and
    /// `password`, as a mounted Kubernetes `kubernetes.io/basic-auth`
    /// Secret does.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a file that cannot be read or is not
    /// `user:password` with both parts set, or a directory without both
    /// files set.
    ///
    /// # Examples
    ///
    /// ```
    /// let dir = std::env::temp_dir().join(format!("dash-basic-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// std::fs::write(dir.join("username"), "ops").unwrap();
    /// std::fs::write(dir.join("password"), "s3cret\n").unwrap();
    /// let login = celeriac_dashboard::Login::basic_auth_file(&dir).unwrap();
    /// assert_eq!(login, celeriac_dashboard::Login::Basic { user: "ops".into(), password: "s3cret".into() });
    /// ```
    pub fn basic_auth_file(path: &Path) -> Result<Login> {
        if path.is_dir() {
            let part = |name: &str| -> Result<String> {
                let text = read(&path.join(name))?;
                Ok(text.trim_end_matches(['\n', '\r']).to_owned())
            };
            let (user, password) = (part("username")?, part("password")?);
            if user.is_empty() || password.is_empty() || user.contains(':') {
                return Err(Error::Config(format!(
                    "the basic auth directory {} must hold a `username` (without ':') and a `password`, both set",
                    path.display()
                )));
            }
            return Ok(Login::Basic { user, password });
        }
        let text = read(path)?;
        let line = text.trim_end_matches(['\n', '\r']);
        match line.split_once(':') {
            Some((user, password)) if !user.is_empty() && !password.is_empty() => {
                Ok(Login::Basic {
                    user: user.to_owned(),
                    password: password.to_owned(),
                })
            }
            _ => Err(Error::Config(format!(
                "the basic auth file {} must hold one line `user:password`",
                path.display()
            ))),
        }
    }

    /// Whether `headers` carry this login.
    pub fn accepts(&self, headers: &HeaderMap) -> bool {
        let authorization = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        match self {
            Login::Token(token) => {
                let bearer = authorization
                    .strip_prefix("Bearer ")
                    .is_some_and(|given| same(given.trim().as_bytes(), token.as_bytes()));
                bearer
                    || cookie(headers, COOKIE_NAME)
                        .is_some_and(|given| same(given.as_bytes(), session(token).as_bytes()))
            }
            Login::Basic { user, password } => {
                let Some(encoded) = authorization.strip_prefix("Basic ") else {
                    return false;
                };
                let Ok(decoded) = BASE64.decode(encoded.trim()) else {
                    return false;
                };
                let expected = format!("{user}:{password}");
                same(&decoded, expected.as_bytes())
            }
        }
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))
}

/// Compares two secrets in time independent of where they differ (and of
/// their lengths: their digests are compared).
pub fn same(a: &[u8], b: &[u8]) -> bool {
    let (da, db) = (Sha256::digest(a), Sha256::digest(b));
    da.iter()
        .zip(db.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// The login cookie's value for `token`: a digest, so that the cookie
/// never holds the token itself and any token fits in a cookie.
pub fn session(token: &str) -> String {
    Sha256::digest(format!("celeriac-dashboard-session:{token}"))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The value of cookie `name`, if sent.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether a request's `Origin`, when it has one, is the dashboard's own
/// (the scheme-less comparison of its host with the `Host` header).
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(ORIGIN) else {
        // Not a browser's cross-site request (browsers send Origin on
        // every POST).
        return true;
    };
    let (Ok(origin), Some(host)) = (
        origin.to_str(),
        headers.get(HOST).and_then(|h| h.to_str().ok()),
    ) else {
        return false;
    };
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    origin_host == Some(host)
}

fn json_error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// Paths served without a login: the login page and its assets.
fn public(path: &str) -> bool {
    matches!(
        path,
        "/login" | "/api/login" | "/assets/login.js" | "/assets/app.css" | "/assets/favicon.svg"
    )
}

/// The guard every request passes: the login, then the rules for writes.
pub(crate) async fn guard(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let api = path.starts_with("/api/");
    if let Some(login) = &app.login {
        if !public(&path) && !login.accepts(request.headers()) {
            return match login {
                Login::Basic { .. } => {
                    let mut response =
                        json_error(StatusCode::UNAUTHORIZED, "log in with the dashboard's user");
                    if let Ok(value) = "Basic realm=\"celeriac dashboard\"".parse() {
                        response.headers_mut().insert(WWW_AUTHENTICATE, value);
                    }
                    response
                }
                Login::Token(_) if api => json_error(
                    StatusCode::UNAUTHORIZED,
                    "send the dashboard token as `Authorization: Bearer <token>`",
                ),
                Login::Token(_) => axum::response::Redirect::to("/login").into_response(),
            };
        }
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        if request.method() != Method::POST {
            return json_error(StatusCode::METHOD_NOT_ALLOWED, "writes are POST requests");
        }
        if !same_origin(request.headers()) {
            return json_error(
                StatusCode::FORBIDDEN,
                "cross-origin request refused: writes must come from the dashboard's own pages",
            );
        }
        let json = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if !json {
            return json_error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "writes take a JSON body (Content-Type: application/json)",
            );
        }
        if path != "/api/login" && path != "/api/logout" {
            if let Some(why) = app.read_only_reason() {
                return json_error(StatusCode::FORBIDDEN, why);
            }
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, v.parse().expect("header value"));
        }
        map
    }

    #[test]
    fn a_token_is_accepted_as_bearer_or_cookie_only_when_equal() {
        let login = Login::Token("abc".into());
        assert!(login.accepts(&headers(&[("authorization", "Bearer abc")])));
        let cookie = format!("x=1; celeriac_dashboard={}", session("abc"));
        assert!(login.accepts(&headers(&[("cookie", &cookie)])));
        assert!(!login.accepts(&headers(&[("cookie", "celeriac_dashboard=abc")])));
        assert!(!login.accepts(&headers(&[("authorization", "Bearer abd")])));
        assert!(!login.accepts(&headers(&[("authorization", "Bearer ab")])));
        assert!(!login.accepts(&headers(&[("cookie", "celeriac_dashboard=")])));
        assert!(!login.accepts(&HeaderMap::new()));
    }

    #[test]
    fn basic_auth_needs_both_parts() {
        let login = Login::Basic {
            user: "ops".into(),
            password: "pw".into(),
        };
        let good = format!("Basic {}", BASE64.encode("ops:pw"));
        let bad = format!("Basic {}", BASE64.encode("ops:px"));
        assert!(login.accepts(&headers(&[("authorization", &good)])));
        assert!(!login.accepts(&headers(&[("authorization", &bad)])));
        assert!(!login.accepts(&headers(&[("authorization", "Basic !!!")])));
        assert!(!login.accepts(&headers(&[("authorization", "Bearer pw")])));
    }

    #[test]
    fn a_foreign_origin_is_refused() {
        let own = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080"),
        ]);
        assert!(same_origin(&own));
        let foreign = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://evil.example"),
        ]);
        assert!(!same_origin(&foreign));
        let null = headers(&[("host", "127.0.0.1:8080"), ("origin", "null")]);
        assert!(!same_origin(&null));
        assert!(same_origin(&headers(&[("host", "127.0.0.1:8080")])));
    }

    #[test]
    fn login_files_are_checked() {
        let dir = std::env::temp_dir().join(format!("celeriac-dash-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let empty = dir.join("empty");
        std::fs::write(&empty, "  \n").expect("write");
        assert!(matches!(Login::token_file(&empty), Err(Error::Config(_))));
        let basic = dir.join("basic");
        std::fs::write(&basic, "ops:pa:ss\n").expect("write");
        assert_eq!(
            Login::basic_auth_file(&basic).expect("valid"),
            Login::Basic {
                user: "ops".into(),
                password: "pa:ss".into()
            }
        );
        std::fs::write(&basic, "nopassword\n").expect("write");
        assert!(matches!(
            Login::basic_auth_file(&basic),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            Login::token_file(&dir.join("missing")),
            Err(Error::Config(_))
        ));
        // A mounted basic-auth Secret: a directory of two files.
        let secret = dir.join("secret");
        std::fs::create_dir_all(&secret).expect("dir");
        std::fs::write(secret.join("username"), "ops").expect("write");
        assert!(matches!(
            Login::basic_auth_file(&secret),
            Err(Error::Config(m)) if m.contains("password")
        ));
        std::fs::write(secret.join("password"), "pa:ss\n").expect("write");
        assert_eq!(
            Login::basic_auth_file(&secret).expect("valid"),
            Login::Basic {
                user: "ops".into(),
                password: "pa:ss".into()
            }
        );
        std::fs::write(secret.join("password"), "").expect("write");
        assert!(matches!(
            Login::basic_auth_file(&secret),
            Err(Error::Config(_))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
