//! A real browser for the console tests: Debian's headless Chromium, driven through
//! `chromedriver` with the W3C WebDriver protocol (JSON over HTTP, spoken here with reqwest).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::{find_program, free_port};

/// One browser session; ends it and stops chromedriver when dropped.
#[derive(Debug)]
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
}

/// An element of the page, as WebDriver names it.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    /// Starts chromedriver and a headless Chromium session with a `width`×`height` window.
    pub async fn start(width: u32, height: u32) -> Browser {
        let chromedriver = find_program("chromedriver").expect("chromedriver is installed (scripts/setup.sh installs chromium-driver)");
        let chromium = find_program("chromium").expect("chromium is installed (scripts/setup.sh installs it)");
        let port = free_port(std::net::Ipv4Addr::LOCALHOST);
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("client");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = http.get(format!("{base}/status")).send().await.ok().map(|r| r.status().is_success());
            if ready == Some(true) {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not answer on {base} within 20 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            // The test cluster's CA is not in the browser's trust store; the API's own tests
            // check its TLS, here the page is what is tested.
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": chromium,
                // --no-sandbox: the tests run as root, where Chromium's sandbox cannot start.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", format!("--window-size={width},{height}")],
            },
            "goog:loggingPrefs": { "browser": "ALL" },
        } } });
        let answer: Value =
            http.post(format!("{base}/session")).json(&capabilities).send().await.expect("new session").json().await.expect("session JSON");
        let session = answer["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no browser session: {answer}")).to_owned();
        Browser { driver, base, session, http }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut request = self.http.request(method.clone(), &url);
        if let Some(body) = body {
            request = request.json(&body);
        } else if method == reqwest::Method::POST {
            request = request.json(&json!({}));
        }
        let answer: Value = request.send().await.unwrap_or_else(|e| panic!("WebDriver {path}: {e}")).json().await.expect("WebDriver JSON");
        if let Some(error) = answer["value"]["error"].as_str() {
            panic!("WebDriver {method} {path}: {error}: {}", answer["value"]["message"]);
        }
        answer["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url }))).await;
    }

    /// The first element `css` selects.
    pub async fn find(&self, css: &str) -> Element {
        let found = self.call(reqwest::Method::POST, "/element", Some(json!({ "using": "css selector", "value": css }))).await;
        // The reference is the one value of the object WebDriver answers with (its key names
        // the protocol's element type).
        let reference = found.as_object().and_then(|o| o.values().next()).and_then(Value::as_str);
        Element(reference.unwrap_or_else(|| panic!("no element {css}: {found}")).to_owned())
    }

    pub async fn click(&self, element: &Element) {
        self.call(reqwest::Method::POST, &format!("/element/{}/click", element.0), None).await;
    }

    pub async fn type_into(&self, element: &Element, text: &str) {
        self.call(reqwest::Method::POST, &format!("/element/{}/value", element.0), Some(json!({ "text": text }))).await;
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page; what it returns.
    pub async fn run(&self, script: &str, args: Value) -> Value {
        self.call(reqwest::Method::POST, "/execute/sync", Some(json!({ "script": script, "args": args }))).await
    }

    /// Waits until `script` returns something other than `null` or `false`; that value.
    pub async fn wait_for(&self, what: &str, timeout: Duration, script: &str, args: Value) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.run(script, args.clone()).await;
            if !value.is_null() && value != Value::Bool(false) {
                return value;
            }
            if Instant::now() > deadline {
                let page = self.run("return document.body.innerText", json!([])).await;
                let log: Vec<String> = self.console_log().await.into_iter().map(|(level, message)| format!("{level}: {message}")).collect();
                panic!(
                    "the page did not show {what} within {timeout:?}; it shows:\n{}\nits console said:\n{}",
                    page.as_str().unwrap_or_default(),
                    log.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Saves a PNG of the window to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let png = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD.decode(png.as_str().expect("base64")).expect("PNG");
        std::fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// What the page logged since the last call: `(level, message)`, e.g. `SEVERE` for a
    /// console error, an uncaught exception or a failed request.
    pub async fn console_log(&self) -> Vec<(String, String)> {
        let entries = self.call(reqwest::Method::POST, "/se/log", Some(json!({ "type": "browser" }))).await;
        entries
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| (e["level"].as_str().unwrap_or_default().to_owned(), e["message"].as_str().unwrap_or_default().to_owned()))
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session closes Chromium (killing chromedriver would leave it running). A
        // plain blocking request: Drop cannot await.
        use std::io::{Read as _, Write as _};
        let address = self.base.trim_start_matches("http://").to_owned();
        if let Ok(mut stream) = std::net::TcpStream::connect(&address) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let request =
                format!("DELETE /session/{} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", self.session);
            if stream.write_all(request.as_bytes()).is_ok() {
                let _ = stream.read_to_end(&mut Vec::new());
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
