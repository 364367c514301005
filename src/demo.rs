//! `lambda demo`: the whole workshop with nothing installed.
//!
//! 1. starts the in-process Kafka-protocol broker with `real-time-orders` (3 partitions);
//! 2. starts the pipeline on the shipped history (`datasets/transactions.json`) and prints
//!    the **batch view**;
//! 3. produces the workshop's three messages and prints the **speed-layer deltas** — what
//!    they changed;
//! 4. prints the merged **serving view** (Ali 400, Sara 180, Mounir 350) with the logical
//!    time and Kafka offsets it reflects, then stops.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context;

use crate::amount::format_cents;
use crate::broker::Broker;
use crate::config::Settings;
use crate::output::{customers_table, show_table};
use crate::produce::{produce, Pace};
use crate::reading::{ReadScope, Reading};
use crate::run;
use crate::source::kafka;

/// The workshop's messages on `real-time-orders`.
pub const WORKSHOP_MESSAGES: [&str; 3] = [
    r#"{"customer":"Ali","amount":80}"#,
    r#"{"customer":"Mounir","amount":200}"#,
    r#"{"customer":"Sara","amount":40}"#,
];

/// Runs the demo, returning what it prints.
pub fn demo(settings: &Settings) -> anyhow::Result<String> {
    let (out, running, broker) = workshop(settings)?;
    running.stop();
    running.join()?;
    drop(broker);
    Ok(out)
}

/// `lambda demo --serve`: the demo, printed, then kept running with the HTTP API and the
/// dashboard on `serve.http` (and the in-process broker, for more messages) until
/// `interrupted`.
pub fn demo_and_serve(settings: &Settings, interrupted: &std::sync::atomic::AtomicBool) -> anyhow::Result<()> {
    let access = crate::serve::access::Access::of(&settings.serve)?;
    let (out, running, broker) = workshop(settings)?;
    print!("{out}");
    let mut settings = settings.clone();
    settings.kafka.brokers = broker.address();
    let feeds = crate::serve::feed::Feeds::of(&running.engine);
    let _http = crate::serve::http::start(&settings, &running.engine, &feeds, &access)?
        .context("--serve needs an HTTP address: give --http 127.0.0.1:8080")?;
    println!(
        "\nthe dashboard: http://{}/   (Kafka at {}: lambda produce --brokers {} --input -)   Ctrl-C to stop",
        settings.serve.http,
        broker.address(),
        broker.address()
    );
    while !interrupted.load(std::sync::atomic::Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
    }
    running.stop();
    running.join()?;
    drop(broker);
    Ok(())
}

/// The workshop's three steps, printed; the pipeline and the broker still running.
fn workshop(settings: &Settings) -> anyhow::Result<(String, run::Running, Broker)> {
    let mut settings = settings.clone();
    let topic = settings.kafka.topic.clone();
    let broker = Broker::start(0, &topic, 3)?;
    settings.kafka.brokers = broker.address();
    let view_filter = settings.view_filter()?;
    let top = settings.batch.top;
    let wait = Duration::from_secs(30);
    let mut out = String::new();

    let running = run::start(&settings)?;
    let everything = ReadScope::Everything { top_k: top };
    let batch = running.serving.read(everything.clone(), wait).context("the pipeline did not answer")?;
    running.serving.keep_first(batch.clone());
    let files: Vec<String> = settings.input.files.iter().map(|f| f.display().to_string()).collect();
    writeln!(out, "== Batch layer: {} (the history, logical time 0) ==", files.join(", "))?;
    out.push_str(&customers_table(&batch, view_filter.as_ref(), settings.batch.show));

    writeln!(
        out,
        "\n== Speed layer: {} messages on {topic} (Kafka at {}) ==",
        WORKSHOP_MESSAGES.len(),
        broker.address()
    )?;
    for message in WORKSHOP_MESSAGES {
        writeln!(out, "  {message}")?;
    }
    produce(&settings.kafka.brokers, &topic, WORKSHOP_MESSAGES.iter().map(|m| m.to_string()), Pace::Flat, || false)?;
    let end = kafka::end_offsets(&settings.kafka.brokers, &topic, wait)?;
    let deadline = std::time::Instant::now() + wait;
    let serving = loop {
        let reading = running.serving.read(everything.clone(), wait).context("the pipeline did not answer")?;
        if end.iter().all(|(p, o)| reading.offsets.iter().any(|(q, n)| q == p && n >= o)) {
            break reading;
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "the messages did not reach the views in time");
        std::thread::sleep(Duration::from_millis(2));
    };
    out.push_str(&deltas_table(&batch, &serving));

    let offsets: Vec<String> = serving.offsets.iter().map(|(p, o)| format!("{topic}/{p}: {o}")).collect();
    writeln!(out, "\n== Serving layer: as of logical time {}, next offsets {} ==", serving.time, offsets.join(", "))?;
    out.push_str(&customers_table(&serving, view_filter.as_ref(), settings.batch.show));
    Ok((out, running, broker))
}

/// What the speed layer changed: each customer's total before and after.
fn deltas_table(before: &Reading, after: &Reading) -> String {
    let total = |r: &Reading, c: &str| r.customers.iter().find(|(n, _)| n == c).map_or(0, |(_, row)| row.total);
    let mut rows = Vec::new();
    for (customer, row) in &after.customers {
        let old = total(before, customer);
        if row.total != old {
            let delta = row.total - old;
            let sign = if delta >= 0 { "+" } else { "" };
            rows.push(vec![
                customer.clone(),
                format_cents(old),
                format!("{sign}{}", format_cents(delta)),
                format_cents(row.total),
            ]);
        }
    }
    let count = rows.len();
    format!("speed-layer deltas:\n{}", show_table(&["customer", "batch", "delta", "serving"], &rows, count))
}
