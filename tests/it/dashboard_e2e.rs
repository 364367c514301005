//! The dashboard in a real browser: headless Chromium (Debian `chromium`) driven over the
//! Chrome DevTools Protocol opens `GET /` of the real `lambda run`.
//!
//! - On the workshop's history: its three messages are produced (through the page's own form,
//!   as a teacher would) and the page must show Ali 320.00 → 400.00 in the serving layer,
//!   +80.00 in the speed layer, 320.00 still in the batch layer — without a reload, and with
//!   no console error; the SQL box answers, shows an error inline, creates a view that then
//!   opens as a panel.
//! - With real data: 100,000 history rows over 10,000 customers, then 2,000 messages a second
//!   for 10 s — the first render within 2 s, the page within 3,000 px, a round trip to the
//!   page's JavaScript within 250 ms throughout, the page moving without a reload, a search
//!   finding a customer.

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
            .args(["--remote-debugging-address=127.0.0.1", "--window-size=1400,1000"])
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
    page.wait_for(&cell("serving", "Ali", 1), json!("320.00"));
    page.wait_for(&cell("batch", "Ali", 1), json!("320.00"));
    page.wait_for("document.querySelector('#conn b').textContent", json!("live"));
    // A mark that a reload would erase.
    page.eval("window.notReloaded = true");

    // The workshop's messages, through the page's form.
    for message in atelier_lambda::demo::WORKSHOP_MESSAGES {
        let set = format!("document.querySelector('#produce textarea').value = {}", json!(message));
        page.eval(&set);
        page.eval("document.querySelector('#produce').requestSubmit()");
        page.wait_for("document.querySelector('#produced').textContent.startsWith('sent 1')", json!(true));
        // Produce → visible, as read-your-writes answers it.
        page.wait_for(
            "/ · in the views [0-9,]+ ms after sending$/.test(document.querySelector('#produced').textContent)",
            json!(true),
        );
        page.eval("document.querySelector('#produced').textContent = ''");
    }
    page.wait_for(&cell("serving", "Ali", 1), json!("400.00"));
    page.wait_for(&cell("serving", "Mounir", 1), json!("350.00"));
    page.wait_for(&cell("serving", "Sara", 1), json!("180.00"));
    page.wait_for(&cell("speed", "Ali", 1), json!("+80.00"));
    assert_eq!(page.eval(&cell("batch", "Ali", 1)), json!("320.00"), "the batch layer stays as loaded");
    // Sorted by total, largest first: Ali 400, Mounir 350, Sara 180.
    page.wait_for(
        "[...document.querySelectorAll('#serving tbody tr')].map(r => r.dataset.key).join()",
        json!("Ali,Mounir,Sara"),
    );
    page.wait_for("document.querySelector('#top .bar[data-key=\"Mounir\"]') !== null", json!(true));
    // Sorted by name, then by name descending (two clicks on the header).
    let keys =
        |panel: &str| format!("[...document.querySelectorAll('#{panel} tbody tr')].map(r => r.dataset.key).join()");
    page.eval("document.querySelector('#serving th').click()");
    page.wait_for(&keys("serving"), json!("Ali,Mounir,Sara"));
    page.eval("document.querySelector('#serving th').click()");
    page.wait_for(&keys("serving"), json!("Sara,Mounir,Ali"));
    // A search in the speed layer: the customers whose names start with it.
    page.eval("const s = document.querySelector('#speed input[type=search]'); s.value = 'Mo'; s.dispatchEvent(new Event('input'))");
    page.wait_for(&keys("speed"), json!("Mounir"));
    page.wait_for(&cell("speed", "Mounir", 1), json!("+200.00"));
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
    page.wait_for("document.querySelector('#result td')?.textContent ?? null", json!("400.00"));
    assert!(page.errors.is_empty(), "console errors: {:?}", page.errors);
    // An error inline, with a caret under where it is (the browser logs the answer's 400).
    page.eval("document.querySelector('#query textarea').value = 'SELECT nope FROM customers'");
    page.eval("document.querySelector('#query').requestSubmit()");
    page.wait_for("document.querySelector('#result .error')?.textContent.startsWith('42703') ?? false", json!(true));
    let refused = page.errors.iter().filter(|e| e.contains("status of 400") && e.contains("/v1/sql")).count();
    assert_eq!((refused, page.errors.len()), (1, 1), "console errors: {:?}", page.errors);
    page.errors.clear();
    // A view created in the box says so, and opens as a panel, a page of its rows.
    let create =
        "CREATE VIEW big_spenders AS SELECT customer, sum(amount) AS spent FROM transactions GROUP BY customer";
    page.eval(&format!("document.querySelector('#query textarea').value = {}", json!(create)));
    page.eval("document.querySelector('#query').requestSubmit()");
    page.wait_for("document.querySelector('#result')?.textContent ?? null", json!("CREATE VIEW"));
    page.eval("document.querySelector('#relations').dispatchEvent(new Event('focus'))");
    page.wait_for(
        "[...document.querySelectorAll('#relations option')].some(o => o.value === 'big_spenders')",
        json!(true),
    );
    page.eval("document.querySelector('#relations').value = 'big_spenders'; document.querySelector('#open').click()");
    page.wait_for(&cell("panel-big_spenders", "Ali", 1), json!("400.00"));

    assert!(page.errors.is_empty(), "console errors: {:?}", page.errors);
    let mut runs = runs.into_iter();
    runs.next().expect("process 0").stop();
    // The others stop with the cluster.
    for run in runs {
        run.stop_after_peer();
    }
}

/// 10,000 customers, and 2,000 messages a second for 10 s: the page stays small and
/// responsive, and moves.
#[test]
fn the_dashboard_stays_responsive_with_ten_thousand_customers() {
    let dir = temp_dir("dashboard-10k");
    let history = dir.join("history.jsonl");
    let made = lambda()
        .args(["gen", "--rows", "100000", "--customers", "10000", "--corrections", "0.05", "--out"])
        .arg(&history)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let broker = TestBroker::mock();
    let mut run = Run::start(&broker.address(), &history, 2, &dir, &[]);
    run.views_at(&Default::default());
    // A customer to look for: one the views hold, in the middle of the names.
    let (_, page) = http_get(&run.http, "/v1/customers?limit=1&after=customer-005000");
    let wanted = page["customers"][0]["customer"].as_str().expect("a customer after 5000").to_owned();

    let browser = Browser::start(&dir.join("profile"));
    let mut page = browser.page();
    let opened = Instant::now();
    page.call("Page.navigate", json!({ "url": format!("http://{}/", run.http) }));
    page.wait_for("document.querySelectorAll('#serving tbody tr').length", json!(20));
    let first_render = opened.elapsed();
    page.wait_for("document.querySelectorAll('#batch tbody tr').length", json!(20));
    page.eval("window.notReloaded = true");
    // Every request is counted below (the buffer holds 250 by default, then stops counting).
    page.eval("performance.setResourceTimingBufferSize(1000000)");
    let before = page.eval("document.querySelector('#serving tbody').textContent");

    let mut producer = lambda()
        .args(["produce", "--brokers", &broker.address(), "--rate", "2000", "--duration", "10"])
        .args(["--customers", "10000", "--corrections", "0.1", "--seed", "11"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (mut slowest, mut tallest, mut rounds) = (Duration::ZERO, 0, 0);
    let mut sample = |page: &mut Page, pause: Duration| {
        let asked = Instant::now();
        let height = page.eval("document.documentElement.scrollHeight").as_u64().unwrap();
        slowest = slowest.max(asked.elapsed());
        tallest = tallest.max(height);
        rounds += 1;
        std::thread::sleep(pause);
    };
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        sample(&mut page, Duration::from_millis(100));
    }
    // Hidden for two seconds (as the browser says of a background tab): no request meanwhile.
    let visibility = |hidden: bool| {
        format!(
            "Object.defineProperty(document, 'hidden', {{ configurable: true, get: () => {hidden} }}); \
             document.dispatchEvent(new Event('visibilitychange'))"
        )
    };
    let requests = "performance.getEntriesByType('resource').length";
    page.eval(&visibility(true));
    sample(&mut page, Duration::from_millis(500)); // a read in flight when hidden ends
    let (hidden_from, hidden_at) =
        (page.eval(requests), page.eval("document.querySelector('#serving tbody').textContent"));
    for _ in 0..15 {
        sample(&mut page, Duration::from_millis(100));
    }
    assert_eq!(page.eval(requests), hidden_from, "a hidden page made requests");
    assert_eq!(page.eval("document.querySelector('#serving tbody').textContent"), hidden_at);
    page.eval(&visibility(false));
    while started.elapsed() < Duration::from_secs(11) {
        sample(&mut page, Duration::from_millis(100));
    }
    assert!(producer.wait().unwrap().success(), "lambda produce failed");
    // The speed layer has rows, and the serving layer moved, without a reload.
    page.wait_for("document.querySelectorAll('#speed tbody tr').length", json!(20));
    let after = page.eval("document.querySelector('#serving tbody').textContent");
    assert_ne!(before, after, "the serving layer never changed on the page");
    assert_ne!(hidden_at, after, "the page did not read again once shown");
    assert_eq!(page.eval("window.notReloaded === true"), json!(true), "the page was reloaded");
    eprintln!("10k customers: first render {first_render:?}; {rounds} round trips, the slowest {slowest:?}; height ≤ {tallest} px");
    assert!(first_render <= Duration::from_secs(2), "first render took {first_render:?}");
    assert!(slowest <= Duration::from_millis(250), "a round trip to the page took {slowest:?}");
    assert!(tallest <= 3000, "the page is {tallest} px tall");

    // A search: the customer's row alone, found by its name.
    let search = format!(
        "const s = document.querySelector('#serving input[type=search]'); s.value = {}; s.dispatchEvent(new Event('input'))",
        json!(wanted)
    );
    page.eval(&search);
    page.wait_for("[...document.querySelectorAll('#serving tbody tr')].map(r => r.dataset.key).join()", json!(wanted));
    assert!(page.errors.is_empty(), "console errors: {:?}", page.errors);
    run.stop();
}
