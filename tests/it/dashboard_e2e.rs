//! The dashboard in a real browser: headless Chromium (Debian `chromium`) driven over the
//! Chrome DevTools Protocol opens `GET /` of the real `lambda run` on the workshop's
//! history; the workshop's three messages are produced (through the page's own form, as a
//! teacher would) and the page must show Ali 320 → 400 in the serving layer, +80 in the
//! speed layer, 320 still in the batch layer — without a reload, and with no console error.

use crate::common;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::live::*;
use common::temp_dir;
use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

/// Headless Chromium with its DevTools endpoint; killed when dropped.
struct Browser {
    child: Child,
    port: u16,
}

impl Browser {
    fn start(profile: &Path) -> Browser {
        let mut child = Command::new("chromium")
            .args(["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--remote-debugging-port=0"])
            .args(["--remote-debugging-address=127.0.0.1", "--window-size=1400,1100"])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium runs (./test installs it)");
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let mut port = None;
        for line in stderr.lines() {
            let line = line.unwrap();
            if let Some(rest) = line.split("DevTools listening on ws://127.0.0.1:").nth(1) {
                port = rest.split('/').next().and_then(|p| p.parse().ok());
                break;
            }
        }
        let port = port.expect("chromium says where DevTools listens");
        Browser { child, port }
    }

    /// A DevTools session on the browser's first page.
    fn page(&self) -> Page {
        let (_, targets) = http_get(&format!("127.0.0.1:{}", self.port), "/json/list");
        let target = targets.as_array().unwrap().iter().find(|t| t["type"] == "page").expect("a page").clone();
        let url = target["webSocketDebuggerUrl"].as_str().unwrap();
        let (socket, _) = tungstenite::connect(url).expect("the page's DevTools socket");
        let mut page = Page { socket, next: 0, errors: Vec::new() };
        for method in ["Runtime.enable", "Log.enable", "Page.enable"] {
            page.call(method, json!({}));
        }
        page
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One page over the DevTools Protocol, noting every console error and exception.
struct Page {
    socket: WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>,
    next: u64,
    errors: Vec<String>,
}

impl Page {
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let request = json!({ "id": id, "method": method, "params": params });
        self.socket.send(Message::text(request.to_string())).unwrap();
        loop {
            let Message::Text(text) = self.socket.read().expect("DevTools answers") else { continue };
            let message: Value = serde_json::from_str(&text).unwrap();
            match message["method"].as_str() {
                Some("Runtime.exceptionThrown") => self.errors.push(message["params"].to_string()),
                Some("Runtime.consoleAPICalled") if message["params"]["type"] == "error" => {
                    self.errors.push(message["params"]["args"].to_string())
                }
                Some("Log.entryAdded") if message["params"]["entry"]["level"] == "error" => {
                    self.errors.push(message["params"]["entry"].to_string())
                }
                _ => {}
            }
            if message["id"] == id {
                assert!(message["error"].is_null(), "{method}: {message}");
                return message["result"].clone();
            }
        }
    }

    /// The value of a JavaScript expression.
    fn eval(&mut self, expression: &str) -> Value {
        let result = self.call("Runtime.evaluate", json!({ "expression": expression, "returnByValue": true }));
        result["result"]["value"].clone()
    }

    /// Waits until `expression` is `expected`.
    fn wait_for(&mut self, expression: &str, expected: Value) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let value = self.eval(expression);
            if value == expected {
                return;
            }
            assert!(Instant::now() < deadline, "{expression} stayed {value}, never {expected}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn cell(panel: &str, customer: &str, column: usize) -> String {
    format!("document.querySelector('#{panel} tr[data-key=\"{customer}\"]')?.cells[{column}].textContent ?? null")
}

#[test]
fn the_dashboard_shows_the_workshop_live_in_chromium() {
    the_dashboard_shows_the_workshop(1);
}

#[test]
fn the_dashboard_of_a_two_process_cluster_shows_the_workshop_live() {
    the_dashboard_shows_the_workshop(2);
}

/// The workshop in a real browser, on `processes` processes of two workers (process 0
/// serves the dashboard for the whole cluster).
fn the_dashboard_shows_the_workshop(processes: usize) {
    if Command::new("chromium").arg("--version").output().is_err() {
        panic!("chromium is not installed: run ./test, which installs it");
    }
    let dir = temp_dir(&format!("dashboard-e2e-{processes}"));
    let broker = TestBroker::mock();
    let workshop = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/transactions.json");
    let mut runs = if processes == 1 {
        vec![Run::start(&broker.address(), &workshop, 2, &dir, &["--dashboard-produce"])]
    } else {
        let hosts = hostfile(&dir);
        start_cluster_with(&broker, &workshop, &dir, &hosts, |_| vec!["--dashboard-produce".to_owned()])
    };
    runs[0].views_at(&Default::default());
    let run = &runs[0];

    let browser = Browser::start(&dir.join("profile"));
    let mut page = browser.page();
    page.call("Page.navigate", json!({ "url": format!("http://{}/", run.http) }));
    page.wait_for(&cell("serving", "Ali", 1), json!("320"));
    page.wait_for(&cell("batch", "Ali", 1), json!("320"));
    page.wait_for("document.querySelector('#conn b').textContent", json!("live"));
    // A mark that a reload would erase.
    page.eval("window.notReloaded = true");

    // The workshop's messages, through the page's form.
    for message in atelier_lambda::demo::WORKSHOP_MESSAGES {
        let set = format!("document.querySelector('#produce textarea').value = {}", json!(message));
        page.eval(&set);
        page.eval("document.querySelector('#produce').requestSubmit()");
        page.wait_for("document.querySelector('#produced').textContent.startsWith('sent 1')", json!(true));
        page.eval("document.querySelector('#produced').textContent = ''");
    }
    page.wait_for(&cell("serving", "Ali", 1), json!("400"));
    page.wait_for(&cell("serving", "Mounir", 1), json!("350"));
    page.wait_for(&cell("serving", "Sara", 1), json!("180"));
    page.wait_for(&cell("speed", "Ali", 1), json!("+80"));
    assert_eq!(page.eval(&cell("batch", "Ali", 1)), json!("320"), "the batch layer stays as loaded");
    page.wait_for("document.querySelector('#top rect[data-key=\"Mounir\"]') !== null", json!(true));
    page.wait_for(
        "[...document.querySelectorAll('#partitions td')].some(td => td.textContent === 'real-time-orders/0')",
        json!(true),
    );
    assert_eq!(page.eval("window.notReloaded === true"), json!(true), "the page was not reloaded");

    // The query box.
    page.eval(
        "document.querySelector('#query textarea').value = 'SELECT total FROM customers WHERE customer = \\'Ali\\''",
    );
    page.eval("document.querySelector('#query').requestSubmit()");
    page.wait_for("document.querySelector('#result td')?.textContent ?? null", json!("400"));

    assert!(page.errors.is_empty(), "console errors: {:?}", page.errors);
    let mut runs = runs.into_iter();
    runs.next().expect("process 0").stop();
    // The others stop with the cluster.
    for run in runs {
        run.stop_after_peer();
    }
}
