//! Watching a real `lambda` process: a changefeed read over HTTP as Server-Sent Events and
//! folded into the view's rows, and a sink's topic read back with kcat.

use std::collections::BTreeMap;
use std::time::Duration;

use super::live::TOPIC;

/// A Server-Sent Events client on a real HTTP connection: each event as (type, id, data),
/// read on a thread of its own.
pub struct Subscriber {
    /// The response's status.
    pub status: u16,
    /// The events, in order; the sender goes when the stream ends.
    pub events: std::sync::mpsc::Receiver<(String, Option<String>, serde_json::Value)>,
    /// The body when the status is not 200.
    pub error: serde_json::Value,
}

impl Subscriber {
    /// `GET path` with the given headers, kept open.
    pub fn open(address: &str, path: &str, headers: &[(&str, &str)]) -> Subscriber {
        use std::io::BufRead;
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let mut request = agent.get(format!("http://{address}{path}"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut response = request.call().expect("the HTTP API answers");
        let status = response.status().as_u16();
        let (sender, events) = std::sync::mpsc::channel();
        if status != 200 {
            let body = response.body_mut().read_to_string().unwrap_or_default();
            let error = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
            return Subscriber { status, events, error };
        }
        let reader = std::io::BufReader::new(response.into_body().into_reader());
        std::thread::spawn(move || {
            let (mut kind, mut id, mut data) = (String::from("message"), None, String::new());
            for line in reader.lines() {
                let Ok(line) = line else { return };
                if line.is_empty() {
                    if !data.is_empty() {
                        let json = serde_json::from_str(&data).expect("every event's data is JSON");
                        if sender.send((std::mem::take(&mut kind), id.take(), json)).is_err() {
                            return;
                        }
                    }
                    (kind, data) = (String::from("message"), String::new());
                } else if let Some(value) = line.strip_prefix("event:") {
                    kind = value.trim().to_owned();
                } else if let Some(value) = line.strip_prefix("id:") {
                    id = Some(value.trim().to_owned());
                } else if let Some(value) = line.strip_prefix("data:") {
                    data.push_str(value.strip_prefix(' ').unwrap_or(value));
                }
            }
        });
        Subscriber { status, events, error: serde_json::Value::Null }
    }

    /// The next event, within `timeout`.
    pub fn next(&self, timeout: Duration) -> (String, Option<String>, serde_json::Value) {
        self.events.recv_timeout(timeout).expect("an event within the timeout")
    }
}

/// A changefeed folded: the view's rows (as JSON text → how many times) at the last event's
/// time and offsets.
#[derive(Default)]
pub struct Folded {
    pub rows: BTreeMap<String, i64>,
    pub time: u64,
    pub offsets: serde_json::Value,
}

impl Folded {
    /// Applies one event; panics on anything a feed must not send (a row removed that is
    /// not there, a time going back).
    pub fn apply(&mut self, kind: &str, data: &serde_json::Value) {
        let time = data["time"].as_u64().unwrap_or_else(|| panic!("an event with a time: {data}"));
        assert!(time >= self.time, "time went back from {} to {time}: {data}", self.time);
        match kind {
            "snapshot" => {
                self.rows.clear();
                for row in data["rows"].as_array().expect("rows") {
                    *self.rows.entry(row.to_string()).or_default() += 1;
                }
            }
            "changes" => {
                for change in data["changes"].as_array().expect("changes") {
                    let count = self.rows.entry(change["row"].to_string()).or_default();
                    *count += change["diff"].as_i64().expect("a diff");
                    assert!(*count >= 0, "a row removed that was not there: {change}");
                }
                self.rows.retain(|_, n| *n != 0);
            }
            "progress" => {}
            other => panic!("unexpected event {other}: {data}"),
        }
        (self.time, self.offsets) = (time, data["offsets"].clone());
    }

    /// Whether the offsets reached are at least `offsets` (partition → next offset).
    pub fn reached(&self, offsets: &BTreeMap<i32, i64>) -> bool {
        offsets.iter().all(|(p, o)| self.offsets[format!("{TOPIC}/{p}")].as_i64().is_some_and(|n| n >= *o))
    }

    /// The rows, as a view's JSON rows are: each row's JSON text, repeated by its count.
    pub fn rows(&self) -> Vec<String> {
        self.rows.iter().flat_map(|(r, n)| std::iter::repeat_n(r.clone(), *n as usize)).collect()
    }
}

/// What `topic` says with kcat: key → the last value (its `time` left out); tombstoned keys
/// gone.
pub fn kcat_view(brokers: &str, topic: &str) -> BTreeMap<String, String> {
    let out = std::process::Command::new("kcat")
        .args(["-b", brokers, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-Z", "-f", "%k\t%s\n"])
        .output()
        .expect("kcat runs (installed by ./test)");
    assert!(out.status.success(), "kcat: {}", String::from_utf8_lossy(&out.stderr));
    let mut held = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let (key, value) = line.split_once('\t').expect("key and value");
        if value == "NULL" {
            held.remove(key);
        } else {
            let mut row: serde_json::Map<String, serde_json::Value> = serde_json::from_str(value).unwrap();
            assert!(row.remove("time").is_some_and(|t| t.is_u64()), "every value carries its time: {value}");
            held.insert(key.to_owned(), serde_json::Value::Object(row).to_string());
        }
    }
    held
}
