//! A real browser for the console test: Debian's headless Chromium driven through ChromeDriver's
//! W3C WebDriver protocol (plain HTTP and JSON). Installed by `scripts/test.sh` (apt packages
//! `chromium` and `chromium-driver`); `REMEDIATOR_CHROMEDRIVER` names another driver binary.

#![allow(dead_code)]

use base64::Engine as _;
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// The driver binary: `REMEDIATOR_CHROMEDRIVER`, else Debian's. `None` (the test skips) when it
/// is missing, unless `REMEDIATOR_TEST_REQUIRE_SERVICES` is set (CI), where that is a failure.
pub fn driver_binary() -> Option<String> {
    let path = std::env::var("REMEDIATOR_CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
    if std::path::Path::new(&path).exists() {
        return Some(path);
    }
    if std::env::var_os("REMEDIATOR_TEST_REQUIRE_SERVICES").is_some() {
        panic!(
            "{path} is missing but REMEDIATOR_TEST_REQUIRE_SERVICES is set: scripts/test.sh installs chromium-driver"
        );
    }
    eprintln!("skipping: {path} missing (apt-get install chromium chromium-driver)");
    None
}

/// A ChromeDriver process and one browser session; both end when it is dropped.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Best effort: ending the session closes Chromium; killing the driver ends the rest.
        let url = format!("{}/session/{}", self.base, self.session);
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
            if let Ok(rt) = rt {
                rt.block_on(async {
                    let _ =
                        tokio::time::timeout(Duration::from_secs(5), reqwest::Client::new().delete(url).send()).await;
                });
            }
        })
        .join();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// One element of the page.
#[derive(Clone, Debug)]
pub struct Element(String);

impl Browser {
    /// Start `driver` on `port` and open a headless Chromium (a fresh profile, no network of
    /// its own beyond the pages it is sent to).
    pub async fn start(driver: &str, port: u16, profile: &std::path::Path) -> Self {
        let mut child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        let t0 = Instant::now();
        loop {
            let ready = match http.get(format!("{base}/status")).send().await {
                Ok(r) => r.json::<Value>().await.ok().and_then(|v| v["value"]["ready"].as_bool()),
                Err(_) => None,
            };
            if ready == Some(true) {
                break;
            }
            if t0.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                panic!("chromedriver not ready after 20 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let binary = std::env::var("REMEDIATOR_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let caps = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": binary,
                    "args": [
                        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                        "--disable-quic", "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--disable-extensions",
                        "--window-size=1280,900",
                        format!("--user-data-dir={}", profile.display()),
                    ]
                }
            }}
        });
        let r: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .expect("session json");
        let Some(session) = r["value"]["sessionId"].as_str().map(str::to_string) else {
            let _ = child.kill();
            panic!("no browser session: {r}");
        };
        Self {
            driver: child,
            base,
            session,
            http,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut req = self.http.request(method, &url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r: Value = req
            .send()
            .await
            .expect("webdriver call")
            .json()
            .await
            .expect("webdriver json");
        if r["value"].get("error").is_some() {
            panic!("webdriver {path}: {}", r["value"]);
        }
        r["value"].clone()
    }

    /// Open `url`.
    pub async fn go(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    /// The elements matching `css` now.
    pub async fn all(&self, css: &str) -> Vec<Element> {
        let v = self
            .call(
                reqwest::Method::POST,
                "/elements",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await;
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e[ELEMENT].as_str().map(|s| Element(s.to_string())))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The first element matching `css`, waiting for it to be there (at most `within`).
    pub async fn find(&self, css: &str, within: Duration) -> Element {
        let t0 = Instant::now();
        loop {
            if let Some(e) = self.all(css).await.into_iter().next() {
                return e;
            }
            assert!(t0.elapsed() < within, "no element {css} after {within:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Wait until the text of the first element matching `css` satisfies `ok`; that text.
    pub async fn wait_text(&self, css: &str, within: Duration, ok: impl Fn(&str) -> bool) -> String {
        let t0 = Instant::now();
        let mut last = String::new();
        loop {
            if let Some(e) = self.all(css).await.into_iter().next() {
                last = self.text(&e).await;
                if ok(&last) {
                    return last;
                }
            }
            assert!(
                t0.elapsed() < within,
                "{css}: text never matched after {within:?}; last: {last:?}"
            );
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    /// Click `e`.
    pub async fn click(&self, e: &Element) {
        self.act(e, "click").await;
    }

    /// Empty the input `e`.
    pub async fn clear(&self, e: &Element) {
        self.act(e, "clear").await;
    }

    async fn act(&self, e: &Element, what: &str) {
        self.call(
            reqwest::Method::POST,
            &format!("/element/{}/{what}", e.0),
            Some(json!({})),
        )
        .await;
    }

    /// Type `text` into `e` (after what it holds).
    pub async fn type_into(&self, e: &Element, text: &str) {
        self.call(
            reqwest::Method::POST,
            &format!("/element/{}/value", e.0),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// The rendered text of `e`.
    pub async fn text(&self, e: &Element) -> String {
        self.call(reqwest::Method::GET, &format!("/element/{}/text", e.0), None)
            .await
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// An attribute or property of `e`.
    pub async fn attribute(&self, e: &Element, name: &str) -> Option<String> {
        self.call(
            reqwest::Method::GET,
            &format!("/element/{}/attribute/{name}", e.0),
            None,
        )
        .await
        .as_str()
        .map(str::to_string)
    }

    /// A screenshot of the page as PNG, written to `path`.
    pub async fn screenshot(&self, path: &std::path::Path) {
        let v = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("screenshot data"))
            .expect("screenshot base64");
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot dir");
        }
        std::fs::write(path, png).expect("write screenshot");
    }
}
