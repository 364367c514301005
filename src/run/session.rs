//! `lambda run` as a command: start the pipeline, serve it (HTTP, the prompt), write its
//! views to files while it runs, log what it holds, and stop it cleanly — on Ctrl-C,
//! SIGTERM, `quit` at the prompt, or a worker's failure.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Settings;
use crate::output;
use crate::reading::Reading;

/// How long the session waits for a reading it writes or logs.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the views are logged.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// When a process of the cluster dies, timely's threads that talk to it panic, and this
/// process's workers cannot go on (timely has no in-flight recovery). Say which process is
/// gone and stop, instead of leaving the rest of the cluster waiting forever.
pub fn stop_when_a_peer_dies(this: usize) {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let name = std::thread::current().name().unwrap_or("").to_owned();
        let peer = name.strip_prefix("timely:recv-").or_else(|| name.strip_prefix("timely:send-"));
        if let Some(peer) = peer {
            let what = info.payload().downcast_ref::<String>().map_or("connection lost", String::as_str);
            tracing::error!(
                "process {peer} of the cluster is gone ({}); process {this} stops too: restart every process",
                what.lines().last().unwrap_or(what)
            );
            std::process::exit(3);
        }
        default(info);
    }));
}

/// Runs the pipeline until `interrupted` is set (or the prompt quits, or a worker fails),
/// then stops it cleanly. With `prompt`, process 0 runs the interactive prompt.
pub fn run(settings: &Settings, interrupted: Arc<AtomicBool>, prompt: bool) -> anyhow::Result<()> {
    // Before anything starts: a front end open to other machines needs the secret.
    let access = crate::serve::access::Access::of(&settings.serve)?;
    let running = super::start(settings)?;
    // Reads are coordinated by worker 0, so process 0 serves for the whole cluster.
    let serves = settings.dataflow.process == 0;
    // One pump per watched view, whichever front ends watch it.
    let engine = &running.engine;
    let feeds = crate::serve::feed::Feeds::of(engine);
    let _http = if serves { crate::serve::http::start(settings, engine, &feeds, &access)? } else { None };
    let _pg = if serves { crate::serve::pg::start(settings, engine, &feeds, &access)? } else { None };
    let _sinks = if serves { crate::serve::sink::start(settings, &running.serving, &feeds)? } else { None };
    if serves {
        tracing::info!("running; Ctrl-C to stop");
    } else {
        tracing::info!(
            process = settings.dataflow.process,
            processes = settings.dataflow.processes,
            "running; process 0 serves the views of the whole cluster"
        );
    }
    let views = ViewFiles::new(settings)?;
    let stopped = running.stop_flag();
    let done = || interrupted.load(Ordering::SeqCst) || stopped.load(Ordering::SeqCst);
    if serves && prompt {
        // The prompt runs here; the views are still written and logged, by a thread.
        std::thread::scope(|scope| {
            scope.spawn(|| keep_up(engine, &views, &done));
            crate::serve::repl::prompt(engine, settings, done);
            interrupted.store(true, Ordering::SeqCst);
        });
    } else if serves {
        keep_up(engine, &views, &done);
    } else {
        while !done() {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    tracing::info!("stopping");
    if serves {
        if let Ok(reading) = engine.read_all_blocking(settings.batch.top) {
            views.write(&reading);
        }
    }
    running.stop();
    let reports = running.join()?;
    let messages: u64 = reports.iter().map(|r| r.messages).sum();
    let offsets: std::collections::BTreeMap<i32, i64> = reports.iter().flat_map(|r| r.offsets.clone()).collect();
    let dead_letters = settings.dead_letter_path(crate::config::CommandName::Run);
    tracing::info!(messages, ?offsets, dead_letters = %dead_letters.display(), "stopped cleanly");
    Ok(())
}

/// Until `done`: writes the view files every period, and logs the views every ten seconds.
fn keep_up(engine: &crate::sql::Engine, views: &ViewFiles, done: &dyn Fn() -> bool) {
    let serving = engine.serving();
    let mut last_report = Instant::now();
    let mut last_write: Option<Instant> = None;
    while !done() {
        std::thread::sleep(Duration::from_millis(10));
        if serving.first_reading().is_none() {
            if let Ok(reading) = engine.read_all_blocking(views.top) {
                serving.keep_first(reading);
            }
        }
        if views.due(last_write) {
            last_write = Some(Instant::now());
            if let Ok(reading) = engine.read_all_blocking(views.top) {
                views.write(&reading);
            }
        }
        if last_report.elapsed() >= REPORT_EVERY {
            last_report = Instant::now();
            if let Ok(r) = serving.read(crate::reading::ReadScope::Totals, READ_TIMEOUT) {
                tracing::info!(
                    time = r.time,
                    customers = r.customer_count,
                    transactions = r.overall.count,
                    total = %crate::amount::format_cents(r.overall.cents),
                    offsets = ?r.offsets,
                    "views"
                );
            }
        }
    }
}

/// `--views-out`: every view and `as_of.json`, rewritten every period.
struct ViewFiles {
    dir: Option<std::path::PathBuf>,
    every: Duration,
    top: usize,
    topic: String,
    view_filter: Option<crate::filter::Filter>,
}

impl ViewFiles {
    fn new(settings: &Settings) -> anyhow::Result<Self> {
        Ok(ViewFiles {
            dir: settings.serve.views_out.clone(),
            every: Duration::from_millis(settings.serve.views_every_ms),
            top: settings.batch.top,
            topic: settings.kafka.topic.clone(),
            view_filter: settings.view_filter()?,
        })
    }

    fn due(&self, last: Option<Instant>) -> bool {
        self.dir.is_some() && last.is_none_or(|at| at.elapsed() >= self.every)
    }

    /// Writes the files; a failure is logged, and the next period tries again.
    fn write(&self, reading: &Reading) {
        let Some(dir) = &self.dir else { return };
        let written = output::write_views(dir, reading, self.view_filter.as_ref(), Some(&self.topic));
        if let Err(error) = written {
            tracing::error!(%error, dir = %dir.display(), "cannot write the views");
        }
    }
}
