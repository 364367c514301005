//! Changefeeds: a view's rows at one logical time, then its changes at every later time —
//! what `GET /v1/subscribe` streams and the Kafka sink produces.
//!
//! One *pump* per view watches it for every subscriber of that view. It reads the view's rows
//! once, at a time it then *holds* (no trace compacts past it), and from then on the view's
//! changes from the held time to the latest, read from the arrangements' recent batches and
//! mapped through the view's plan ([`crate::sql::Engine::changes`]): a step costs what changed,
//! not the view, and nothing is compared. It steps whenever the input offsets have moved —
//! looked at every 2 ms while this process reads messages, every 100 ms otherwise — and at
//! least every [`PROGRESS_EVERY`] (so that a progress event is exact, and the held time moves
//! on). A view whose plan has no changes to read (an aggregate or a join evaluated at read
//! time) is read whole at each step instead, and the difference of two readings is the event.
//! A subscriber starts from the pump's current rows (the snapshot) and then receives every
//! event after it, so that folding them gives the view at each event's time:
//!
//! ```text
//! time 7  snapshot  Ali 320, Sara 180
//! time 9  changes   -Ali 320  +Ali 400          (a correction of one of Ali's orders)
//! time 12 changes   -Sara 180                   (Sara's only order deleted)
//! time 12 progress                               (nothing new for a second)
//! ```
//!
//! Changes at several times between two readings arrive as one event at the later time: the
//! feed is exact at the times it shows, and it shows a time at most a few milliseconds after
//! it is complete. The pump keeps its last events for [`RETAIN`], so that a subscriber that
//! lost its connection resumes from the last time it saw (`Last-Event-ID`), and lingers as long
//! after its last subscriber left. A subscriber that falls [`BACKLOG`] events behind is
//! dropped with a final event saying so, rather than buffered without bound: the pipeline
//! never waits for a reader.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use crate::dataflow::Time;
use crate::output::as_of;
use crate::reading::Reading;
use crate::serve::bound::MinOffsets;
use crate::serve::Serving;
use crate::sql::read::Hold;
use crate::sql::{Engine, SqlError};

mod event;
mod pump;
pub use event::{key_text, Change, Event, Row};
use pump::{rows_of, Pump, Rows, Step};

/// How often a pump asks whether the offsets moved.
const POLL: Duration = Duration::from_millis(2);
/// How long a pump keeps reading the offsets every [`POLL`] after its process read a message.
const ACTIVE: Duration = Duration::from_millis(200);
/// How often a pump reads the offsets otherwise.
const SLOW_POLL: Duration = Duration::from_millis(100);
/// How long events are kept for resuming, and a pump lives on without subscribers.
pub const RETAIN: Duration = Duration::from_secs(30);
/// The most events kept for resuming.
const RETAIN_EVENTS: usize = 10_000;
/// How far a subscriber may fall behind before it is dropped.
pub const BACKLOG: usize = 1024;
/// A progress event at least this often while nothing changes.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// The longest one reading of a view may take.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a subscription was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    /// The view does not exist (or could not be read): the SQL error.
    #[error("{0}")]
    View(SqlError),
    /// The time to resume from is no longer kept; the earliest that is.
    #[error("the time to resume from is no longer kept; the earliest is {earliest}")]
    Gone {
        /// The earliest time one can resume from.
        earliest: Time,
    },
    /// The time to resume from is ahead of the views.
    #[error("the time to resume from is ahead of the views (at {latest})")]
    Ahead {
        /// The latest time of the feed.
        latest: Time,
    },
}

/// A subscription: where it starts, and the events after, read with [`Subscription::next`].
pub struct Subscription {
    /// The view's key column's name, if it has one.
    pub key_column: Option<String>,
    /// The events to send first: the snapshot, or the retained events after the resumed time.
    first: VecDeque<Arc<Event>>,
    /// Every later event; `None` once the subscription has ended.
    events: Option<broadcast::Receiver<Arc<Event>>>,
}

impl Subscription {
    /// The next event: the first ones, then each of the feed's as it comes. The last one
    /// is an [`Event::End`] when the view is dropped or when this subscriber fell more than
    /// [`BACKLOG`] events behind (it is dropped rather than buffered without bound, and the
    /// reason says how to resume); `None` after that, or when the process stops.
    pub async fn next(&mut self) -> Option<Arc<Event>> {
        let events = self.events.as_mut()?;
        let event = match self.first.pop_front() {
            Some(event) => event,
            None => match events.recv().await {
                Ok(event) => event,
                Err(broadcast::error::RecvError::Lagged(n)) => Arc::new(Event::End {
                    reason: format!(
                        "this subscriber read too slowly and was dropped ({n} events behind, more than {BACKLOG} \
                         kept for it); resume with Last-Event-ID"
                    ),
                }),
                Err(broadcast::error::RecvError::Closed) => {
                    self.events = None;
                    return None;
                }
            },
        };
        if matches!(*event, Event::End { .. }) {
            self.events = None;
        }
        Some(event)
    }
}

/// The pumps of a process's feeds, one per view subscribed to.
#[derive(Clone)]
pub struct Feeds {
    engine: Engine,
    serving: Serving,
    topic: String,
    pumps: Arc<tokio::sync::Mutex<HashMap<String, Arc<Pump>>>>,
    /// The latest time held, and when it was: one pin serves every pump that steps then (not
    /// kept alive here: a time nobody reads from is let go).
    latest: Arc<tokio::sync::Mutex<Option<Latest>>>,
    /// The latest events as their subscribers receive them, made once for all of them.
    rendered: Arc<Mutex<VecDeque<Rendered>>>,
}

/// A time held, and when it was pinned.
type Latest = (Instant, std::sync::Weak<Hold>);

/// An event and its text (for `GET /v1/subscribe`, one Server-Sent Events frame).
type Rendered = (std::sync::Weak<Event>, bytes::Bytes);

/// How many events keep their text.
const RENDERED: usize = 64;

impl Feeds {
    /// The one set of feeds of a process, shared by every front end that watches views
    /// (HTTP, the Postgres protocol, the sinks): one pump per view, however many watch it.
    pub fn of(engine: &Engine) -> Self {
        // A pump holds its whole view anyway (the view's own size bounds it), and a keyed
        // subscriber is sent one key of it: `--max-rows`, a bound on an answer, is not one on
        // a feed.
        let limits = crate::sql::Limits { max_rows: usize::MAX, max_bytes: usize::MAX, ..engine.limits() };
        let topic = engine.topic().to_owned();
        Feeds::new(engine.with_limits(limits), engine.serving().clone(), topic)
    }

    /// Feeds over the views `engine` reads; each pump runs on the tokio runtime of the
    /// subscriber that started it.
    pub fn new(engine: Engine, serving: Serving, topic: impl Into<String>) -> Self {
        Feeds {
            engine,
            serving,
            topic: topic.into(),
            pumps: Arc::default(),
            latest: Arc::default(),
            rendered: Arc::default(),
        }
    }

    /// The SQL engine the pumps read through.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Subscribes to view `name`: from its current rows, or resuming after `after`.
    /// With `min`, the snapshot reflects at least those input positions (read-your-writes:
    /// the pump catches up with what the views already reflect within milliseconds).
    pub async fn subscribe(
        &self,
        name: &str,
        after: Option<Time>,
        min: Option<&MinOffsets>,
    ) -> Result<Subscription, SubscribeError> {
        let key = self.engine.view_key(name).map_err(SubscribeError::View)?;
        let key_column = key.as_ref().map(|(_, name)| name.clone());
        let key = key.map(|(k, _)| k);
        let pump = {
            let mut pumps = self.pumps.lock().await;
            match pumps.get(name) {
                Some(pump) if !pump.state().ended => Arc::clone(pump),
                _ => {
                    let pump = Arc::new(self.start(name, key).await.map_err(SubscribeError::View)?);
                    pumps.insert(name.to_owned(), Arc::clone(&pump));
                    let feeds = self.clone();
                    let running = Arc::clone(&pump);
                    tokio::spawn(async move { feeds.pump(running).await });
                    pump
                }
            }
        };
        if let Some(min) = min {
            let deadline = Instant::now() + READ_TIMEOUT;
            while !min.reached_by(&pump.state().positions) && Instant::now() < deadline {
                tokio::time::sleep(POLL).await;
            }
        }
        // Under the state's lock, which the pump sends under: no event is missed or doubled.
        let state = pump.state();
        let events = pump.sender.subscribe();
        let first: VecDeque<_> = match after {
            None => [Arc::new(Event::Snapshot {
                time: state.time,
                offsets: state.offsets.clone(),
                rows: state
                    .rows
                    .values()
                    .flat_map(|(row, n)| std::iter::repeat_n(Arc::clone(row), *n as usize))
                    .collect(),
            })]
            .into(),
            Some(after) if after < state.base => return Err(SubscribeError::Gone { earliest: state.base }),
            Some(after) if after > state.time => return Err(SubscribeError::Ahead { latest: state.time }),
            Some(after) => state
                .retained
                .iter()
                .filter(|(event, _)| event.time().is_some_and(|t| t > after))
                .map(|(event, _)| Arc::clone(event))
                .collect(),
        };
        Ok(Subscription { key_column, first, events: Some(events) })
    }

    /// A pump for view `name`, filled with its rows at the latest time (held, if the view is
    /// read by its changes: they are read from it).
    async fn start(&self, name: &str, key: Option<usize>) -> Result<Pump, SqlError> {
        let plan = self.engine.changes_plan(name).await?;
        let hold = self.latest().await?;
        let rows = self.read(name, key, &hold).await?;
        Ok(Pump::filled(name, key, plan, hold, rows, &self.topic, BACKLOG))
    }

    /// Reads view `name` whole, at a time held: its rows (for a view read whole, each step;
    /// for one read by its changes, at the start and to catch up after changes could not be
    /// read).
    async fn read(&self, name: &str, key: Option<usize>, at: &Arc<Hold>) -> Result<Rows, SqlError> {
        bounded(async { Ok(rows_of(&self.engine.rows_at(name, at).await?, key, false)) }).await
    }

    /// The view's changes from the time its rows are at (held) to the latest: `None` when the
    /// view has no changes to read (see [`crate::sql::Engine::changes_plan`]; it is read whole).
    async fn read_changes(&self, pump: &Pump, at: Arc<Hold>) -> Result<Option<(Arc<Hold>, Rows)>, SqlError> {
        let (since, plan) = {
            let state = pump.state();
            match (&state.hold, &state.plan) {
                (Some(hold), Some(plan)) => (Arc::clone(hold), plan.clone()),
                _ => return Ok(None),
            }
        };
        if at.time() <= since.time() {
            return Ok(Some((since, Rows::new())));
        }
        let answer = bounded(self.engine.changes(&plan, &since, &at)).await?;
        Ok(Some((at, rows_of(&answer, pump.key, true))))
    }

    /// Watches one view until it is gone or nobody has subscribed for [`RETAIN`].
    async fn pump(&self, pump: Arc<Pump>) {
        let mut unwatched_since: Option<Instant> = None;
        let mut last_sent = Instant::now();
        // Messages read by this process's workers: a free signal that the views are about
        // to move (an atomic, where a read of the offsets asks every worker).
        let kafka = self.serving.metrics().records_read(crate::serve::metrics::Source::Kafka);
        let (mut count, mut active_until, mut last_check) = (kafka.get(), Instant::now() + ACTIVE, Instant::now());
        // A table's records move the views without moving the topic's offsets: for ACTIVE
        // after the last one, the view is read whether the offsets moved or not.
        let tables = self.serving.metrics().records_read(crate::serve::metrics::Source::Table);
        let (mut table_count, mut tables_until) = (tables.get(), Instant::now());
        let (mut last_read, mut read_cost) = (Instant::now(), Duration::ZERO);
        let mut interval = tokio::time::interval(POLL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            if pump.sender.receiver_count() == 0 {
                let since = *unwatched_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= RETAIN {
                    self.end(&pump, None).await;
                    return;
                }
            } else {
                unwatched_since = None;
            }
            // A view dropped and created again under its name is a new pump: this one ends first.
            if self.engine.view_key(&pump.view).is_err() {
                self.end(&pump, Some(format!("view {:?} was dropped", pump.view))).await;
                return;
            }
            // Read the offsets every tick while messages arrive (and for ACTIVE after the last,
            // until they are complete); otherwise every SLOW_POLL, for the messages other
            // processes of a cluster read, and for the progress events.
            let now = Instant::now();
            if kafka.get() != count {
                (count, active_until) = (kafka.get(), now + ACTIVE);
            }
            if tables.get() != table_count {
                (table_count, tables_until, active_until) = (tables.get(), now + ACTIVE, now + ACTIVE);
            }
            if now >= active_until && now - last_check < SLOW_POLL {
                continue;
            }
            last_check = now;
            // Only the offsets move the views (the history is loaded before any read): a
            // cheap read says whether a full one is worth it.
            let Ok(latest) = self.latest().await else { continue };
            let offsets = latest.reading();
            let (moved, time, by_changes) = {
                let state = pump.state();
                let moved = as_of(offsets, &self.topic)["offsets"] != state.offsets || now < tables_until;
                (moved, offsets.time, state.hold.is_some())
            };
            // A view read by its changes costs what changed; one read whole costs the workers
            // and this runtime in proportion to its rows: at most a quarter of the time goes
            // to those (busy views are read less often, their changes coalesced into fewer
            // events). A view read by its changes is also read for each progress event, so
            // that the event is exact and its time held moves on.
            let due = last_sent.elapsed() >= PROGRESS_EVERY;
            let pause = if by_changes { read_cost } else { read_cost * 3 };
            if (moved && last_read.elapsed() >= pause) || (due && by_changes) {
                let started = Instant::now();
                let whole = || async {
                    let rows = self.read(&pump.view, pump.key, &latest).await?;
                    Ok::<_, SqlError>(Step::Whole(Arc::clone(&latest), rows))
                };
                let read = match self.read_changes(&pump, Arc::clone(&latest)).await {
                    Ok(Some((hold, changes))) => Ok(Step::Changes(hold, changes)),
                    Ok(None) => whole().await,
                    Err(error) if error.code() == "42P01" => Err(error),
                    // Changes that could not be read (in time, or at all): the view is read
                    // whole at a new time, from which its changes are read again.
                    Err(error) => {
                        tracing::warn!(view = %pump.view, %error, "a changefeed could not read its changes");
                        let hold = pump.state().hold.take();
                        drop(hold);
                        whole().await
                    }
                };
                (last_read, read_cost) = (Instant::now(), started.elapsed());
                match read {
                    Ok(step) => {
                        if pump.advance(step, &self.topic) {
                            last_sent = Instant::now();
                        } else if due && by_changes {
                            let state = pump.state();
                            let _ = pump
                                .sender
                                .send(Arc::new(Event::Progress { time: state.time, offsets: state.offsets.clone() }));
                            last_sent = Instant::now();
                        }
                    }
                    Err(error) if error.code() == "42P01" => {
                        self.end(&pump, Some(format!("view {:?} was dropped", pump.view))).await;
                        return;
                    }
                    Err(error) => tracing::warn!(view = %pump.view, %error, "a changefeed could not read its view"),
                }
            } else if due {
                let mut state = pump.state();
                state.time = state.time.max(time);
                let event = Event::Progress { time: state.time, offsets: state.offsets.clone() };
                let _ = pump.sender.send(Arc::new(event));
                last_sent = Instant::now();
            }
        }
    }

    /// `event` as `render` makes it, made once however many subscribers send it (an event of
    /// a busy second can carry thousands of rows): the text is shared, not copied, by each.
    pub fn rendered(&self, event: &Arc<Event>, render: impl FnOnce(&Event) -> bytes::Bytes) -> bytes::Bytes {
        let weak = Arc::downgrade(event);
        let mut rendered = self.rendered.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, text)) = rendered.iter().find(|(e, _)| e.ptr_eq(&weak)) {
            return text.clone();
        }
        let text = render(event);
        // An event no longer alive cannot be asked for again (its address may be reused).
        rendered.retain(|(e, _)| e.strong_count() > 0);
        if rendered.len() >= RENDERED {
            rendered.pop_front();
        }
        rendered.push_back((weak, text.clone()));
        text
    }

    /// The latest time every view is complete through, held, with the offsets then: pinned
    /// at most once per [`POLL`] for all the pumps (each pin asks every worker), `None` when it
    /// cannot be. A pump steps to it, and holds it as its next time.
    pub async fn latest(&self) -> Result<Arc<Hold>, SqlError> {
        let mut latest = self.latest.lock().await;
        if let Some((at, hold)) = latest.as_ref() {
            if let Some(hold) = hold.upgrade().filter(|_| at.elapsed() < POLL) {
                return Ok(hold);
            }
        }
        let hold = bounded(self.engine.hold()).await?;
        *latest = Some((Instant::now(), Arc::downgrade(&hold)));
        Ok(hold)
    }

    /// The offsets the views reflect now (see [`Feeds::latest`]).
    pub async fn offsets(&self) -> Option<Reading> {
        self.latest().await.ok().map(|hold| hold.reading().clone())
    }

    /// Ends a pump: subscribers get `reason` (if any), and none can join it.
    async fn end(&self, pump: &Arc<Pump>, reason: Option<String>) {
        let mut pumps = self.pumps.lock().await;
        // Its time held goes: the traces compact past it.
        let hold = {
            let mut state = pump.state();
            state.ended = true;
            state.hold.take()
        };
        drop(hold);
        if let Some(reason) = reason {
            let _ = pump.sender.send(Arc::new(Event::End { reason }));
        }
        if pumps.get(&pump.view).is_some_and(|p| Arc::ptr_eq(p, pump)) {
            pumps.remove(&pump.view);
        }
    }
}

/// `read`, failed if it takes longer than [`READ_TIMEOUT`]: a feed never waits on a stalled
/// worker for ever.
async fn bounded<T>(read: impl std::future::Future<Output = Result<T, SqlError>>) -> Result<T, SqlError> {
    tokio::time::timeout(READ_TIMEOUT, read).await.unwrap_or_else(|_| {
        Err(SqlError::Canceled(format!("the read took longer than {} ms", READ_TIMEOUT.as_millis())))
    })
}
