//! Just enough of the WebDriver protocol to drive a headless Chromium
//! through Debian's chromedriver: open pages, find, click and type, run a
//! script, take screenshots.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::support::request;

/// How a missing browser is installed, said in every failure to find one.
pub const HOW_TO_INSTALL: &str = "the browser test needs Debian's chromium and chromium-driver: \
     `apt-get install -y chromium chromium-driver` (.ci/run installs them when missing), \
     or set CHROMIUM and CHROMEDRIVER to their paths";

/// The key of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn binary(env: &str, candidates: &[&str]) -> String {
    if let Ok(path) = std::env::var(env) {
        return path;
    }
    candidates
        .iter()
        .find(|p| Path::new(p).exists())
        .map(|p| (*p).to_owned())
        .unwrap_or_else(|| panic!("{} not found: {HOW_TO_INSTALL}", candidates[0]))
}

/// A headless Chromium session.
pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver leads its own process group, Chromium's processes
        // included: end them all, even after a failed test.
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    /// Starts chromedriver and a headless Chromium of `width` × `height`.
    pub async fn start(width: u32, height: u32) -> Browser {
        let chromium = binary(
            "CHROMIUM",
            &["/usr/bin/chromium", "/usr/bin/chromium-browser"],
        );
        let chromedriver = binary("CHROMEDRIVER", &["/usr/bin/chromedriver"]);
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {chromedriver}: {e}; {HOW_TO_INSTALL}"));
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut browser = Browser {
            driver,
            addr,
            session: String::new(),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver did not listen within 20 s; {HOW_TO_INSTALL}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile =
            std::env::temp_dir().join(format!("celeriac-chromium-{}", uuid::Uuid::now_v7()));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--hide-scrollbars", "--force-device-scale-factor=1", "--lang=en-US",
                         format!("--window-size={width},{height}"),
                         format!("--user-data-dir={}", profile.display())],
            }
        }}});
        let answer = browser.call("POST", "/session", Some(caps)).await;
        browser.session = answer["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {answer}; {HOW_TO_INSTALL}"))
            .to_owned();
        browser
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string());
        let reply = request(
            self.addr,
            method,
            path,
            &[("Content-Type", "application/json")],
            body.as_deref()
                .or(if method == "POST" { Some("{}") } else { None }),
        )
        .await;
        let value: Value = serde_json::from_str(&reply.body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}: {}", reply.body));
        value.get("value").cloned().map_or(value, |v| {
            if reply.status == 200 {
                v
            } else {
                json!({"error": v})
            }
        })
    }

    async fn session_call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.call(method, &path, body).await
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) {
        let v = self
            .session_call("POST", "/url", Some(json!({"url": url})))
            .await;
        assert!(v.get("error").is_none(), "open {url}: {v}");
    }

    /// The current URL.
    pub async fn url(&self) -> String {
        self.session_call("GET", "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Runs `script` (a function body) with `args` and returns its value.
    pub async fn execute(&self, script: &str, args: Value) -> Value {
        let v = self
            .session_call(
                "POST",
                "/execute/sync",
                Some(json!({"script": script, "args": args})),
            )
            .await;
        assert!(
            v.get("error").is_none() || !v["error"].is_object(),
            "script failed: {v}"
        );
        v
    }

    /// The first element matching `css`, if any.
    pub async fn find(&self, css: &str) -> Option<String> {
        let v = self
            .session_call(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v.get(ELEMENT).and_then(Value::as_str).map(str::to_owned)
    }

    /// Every element matching `css`.
    pub async fn find_all(&self, css: &str) -> Vec<String> {
        let v = self
            .session_call(
                "POST",
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v.as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|e| e.get(ELEMENT).and_then(Value::as_str).map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits (at most `timeout`) for an element matching `css`.
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> String {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(e) = self.find(css).await {
                return e;
            }
            if tokio::time::Instant::now() >= deadline {
                let body = self
                    .execute("return document.body.innerText", json!([]))
                    .await;
                panic!(
                    "no element {css:?} within {timeout:?} at {}; the page says: {body}",
                    self.url().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the element matching `css` contains `text`.
    pub async fn wait_text(&self, css: &str, text: &str, timeout: Duration) -> String {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(e) = self.find(css).await {
                let got = self.text(&e).await;
                if got.contains(text) {
                    return got;
                }
                if tokio::time::Instant::now() >= deadline {
                    panic!("{css:?} never contained {text:?} within {timeout:?}; it says: {got}");
                }
            } else if tokio::time::Instant::now() >= deadline {
                panic!("no element {css:?} within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The visible text of an element.
    pub async fn text(&self, element: &str) -> String {
        self.session_call("GET", &format!("/element/{element}/text"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// An attribute of an element.
    pub async fn attribute(&self, element: &str, name: &str) -> Option<String> {
        self.session_call("GET", &format!("/element/{element}/attribute/{name}"), None)
            .await
            .as_str()
            .map(str::to_owned)
    }

    /// Asks the driver to click an element; its answer.
    async fn click_call(&self, element: &str) -> Value {
        self.session_call(
            "POST",
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await
    }

    /// Clicks an element.
    pub async fn click(&self, element: &str) {
        let v = self.click_call(element).await;
        assert!(v.get("error").is_none(), "click: {v}");
    }

    /// Clicks the element matching `css` once there is one, again if the
    /// page replaced it between the finding and the click (the pages
    /// redraw their tables as they refresh).
    pub async fn click_on(&self, css: &str, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let element = self.wait_for(css, timeout).await;
            let v = self.click_call(&element).await;
            if v.get("error").is_none() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "click on {css:?}: {v}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Types `text` into an element.
    pub async fn type_text(&self, element: &str, text: &str) {
        let v = self
            .session_call(
                "POST",
                &format!("/element/{element}/value"),
                Some(json!({"text": text})),
            )
            .await;
        assert!(v.get("error").is_none(), "type: {v}");
    }

    /// Saves a PNG of the whole page, however tall, `width` pixels wide, to
    /// `path` (through the DevTools protocol chromedriver relays).
    pub async fn screenshot(&self, path: &Path, width: u32) {
        self.capture(
            path,
            width,
            "Math.max(document.documentElement.scrollHeight, document.body.scrollHeight)",
        )
        .await;
    }

    /// Saves a PNG of what the window shows (a dialog over the page).
    pub async fn screenshot_window(&self, path: &Path, width: u32) {
        self.capture(path, width, "window.innerHeight").await;
    }

    async fn capture(&self, path: &Path, width: u32, height: &str) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let height = self
            .execute(&format!("return Math.ceil({height})"), json!([]))
            .await
            .as_u64()
            .unwrap_or(900)
            .clamp(400, 6000);
        let params = json!({
            "format": "png",
            "captureBeyondViewport": true,
            "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
        });
        let shot = self
            .session_call(
                "POST",
                "/goog/cdp/execute",
                Some(json!({"cmd": "Page.captureScreenshot", "params": params})),
            )
            .await;
        let data = shot["data"]
            .as_str()
            .unwrap_or_else(|| panic!("no screenshot: {shot}"));
        let bytes = BASE64.decode(data).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, bytes).unwrap();
    }

    /// Ends the session.
    pub async fn quit(self) {
        self.session_call("DELETE", "", None).await;
    }
}
