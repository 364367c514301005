//! Two workers in one process, worker 0 coordinating: reads exact at their time, compactions
//! and scans ordered among them.
//! The coordinator and the workers' orders, in process: two workers run the dataflow and
//! the control plane as `lambda run` does, without Kafka — every logical time, each
//! admits one transaction — while this thread reads through a serving handle.

use std::collections::VecDeque;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::dataflow::Dataflow;
use crate::event::{Identity, Position, Txn, Update};
use crate::reading::{Reading, WorkerProgress};
use crate::serve::metrics::Metrics;
use crate::serve::serving::{ReadError, Serving, Waker};

/// Amount admitted by worker `w` at time `t`, in cents: the readings can be checked
/// against a sum.
fn cents(w: usize, t: u64) -> i64 {
    (w as i64 + 1) * 1000 + t as i64
}

/// What the views must hold at time `t`: every transaction of times 1..=t of both workers.
fn expected(t: u64) -> (i64, i128) {
    let sum: i64 = (1..=t).flat_map(|t| (0..2).map(move |w| cents(w, t))).sum();
    (2 * t as i64, i128::from(sum))
}

/// Runs two workers up to time `until`, one time every `pace`, while `test` reads through
/// the handle; `extra` lets worker 0's coordinator order more (a test's own reads).
fn two_workers(
    until: u64,
    pace: Duration,
    extra: impl Fn(&mut Coordinator, &mut Control<Order, Answer>, &Answering, Time) + Send + Sync + 'static,
    test: impl FnOnce(&Serving),
) {
    let waker = Arc::new(Waker::default());
    let (serving, requests) = Serving::new(2, Arc::clone(&waker), Arc::new(Metrics::new()));
    let requests = Arc::new(Mutex::new(Some(requests)));
    let answering = Arc::new(Answering::default());
    let done = Arc::new(AtomicBool::new(false));
    let (stop, extra) = (Arc::clone(&done), Arc::new(extra));
    let guards = timely::execute(timely::Config::process(2), move |worker| {
        let mut dataflow = Dataflow::build(worker, None);
        // A view created here fills one identity at install, and no more: this loop never
        // calls `fill`, so it stays being filled.
        dataflow.created.set_chunk(1);
        let mut control = Control::<Order, Answer>::build(worker);
        let mut coordinator = (worker.index() == 0).then(|| {
            waker.register();
            let mut c = Coordinator::new(requests.lock().unwrap().take().unwrap(), 2);
            c.reads_from = Some(0);
            c
        });
        let progress = WorkerProgress::default();
        let outlets = crate::compute::scan::Outlets::default();
        let mut pending = VecDeque::new();
        let mut time = 1;
        let mut last = std::time::Instant::now();
        while !stop.load(Ordering::SeqCst) {
            if time <= until && last.elapsed() >= pace {
                last = std::time::Instant::now();
                dataflow.advance_to(time);
                let w = worker.index();
                dataflow.updates.send(Update {
                    identity: Identity::Id(format!("w{w}-t{time}").into()),
                    position: Position::in_partition(w as i32, time as i64),
                    txn: Some(Txn { customer: "Ali".into(), cents: cents(w, time), ts: None, category: None }),
                });
                time += 1;
                dataflow.advance_to(time);
            }
            worker.step_or_park(Some(Duration::from_millis(1)));
            if let Some(c) = coordinator.as_mut() {
                for answer in control.answers() {
                    c.receive(answer, &mut control, &answering, None, &outlets);
                }
                c.tick(dataflow.complete_through(), &mut control, &answering);
                extra(c, &mut control, &answering, dataflow.complete_through().unwrap_or(0));
            }
            pending.extend(control.orders());
            super::super::worker::carry_out(
                worker,
                &mut pending,
                &mut dataflow,
                &mut control,
                &answering,
                &progress,
                None,
            );
            control.send();
        }
    })
    .unwrap();
    // A failing test stops the workers too, instead of leaving them running forever.
    let tested = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| test(&serving)));
    done.store(true, Ordering::SeqCst);
    for result in guards.join() {
        result.unwrap();
    }
    if let Err(panic) = tested {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn every_read_is_exact_at_the_time_it_says() {
    two_workers(
        60,
        Duration::from_millis(2),
        |_, _, _, _| {},
        |serving| {
            let mut last = 0;
            for _ in 0..40 {
                let reading = serving.read(ReadScope::Totals, Duration::from_secs(10)).expect("an answer");
                // Time 0 is the (empty) history; every later time has both workers' rows.
                let (count, cents) = expected(reading.time.min(60));
                assert_eq!((reading.overall.count, reading.overall.cents), (count, cents), "at {}", reading.time);
                assert!(reading.time >= last, "readings go forward in time");
                last = reading.time;
                std::thread::sleep(Duration::from_millis(3));
            }
            assert!(last > 0, "the reads followed the input");
        },
    );
}

#[test]
fn a_compaction_ordered_after_a_read_does_not_spoil_it() {
    // Once worker 0 is complete through some time T >= 40, it orders a read at T, at once
    // a compaction to T + 10, and a read at T again: the first is carried out before the
    // compaction, exact; the second comes after it, and is refused.
    let answers: Arc<Mutex<Vec<Result<Reading, ReadError>>>> = Arc::default();
    let at: Arc<Mutex<Option<Time>>> = Arc::default();
    let (first, second, read_at) = (Arc::clone(&answers), Arc::clone(&answers), Arc::clone(&at));
    let extra =
        move |c: &mut Coordinator, control: &mut Control<Order, Answer>, answering: &Answering, complete: Time| {
            let mut read_at = read_at.lock().unwrap();
            if complete >= 40 && read_at.is_none() {
                *read_at = Some(complete);
                let (a, b) = (Arc::clone(&first), Arc::clone(&second));
                let reply = |sink: Arc<Mutex<Vec<_>>>| Reply::Call(Arc::new(move |p| sink.lock().unwrap().push(p)));
                c.order_read(control, answering, complete, ReadScope::Totals, reply(a));
                control.order(Order::Compact(complete + 10));
                c.order_read(control, answering, complete, ReadScope::Totals, reply(b));
            }
        };
    two_workers(200, Duration::from_millis(1), extra, |_| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while answers.lock().unwrap().len() < 4 {
            assert!(std::time::Instant::now() < deadline, "the reads were not answered");
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let t = at.lock().unwrap().expect("the reads were ordered");
    let answers = answers.lock().unwrap();
    let (before, after): (Vec<_>, Vec<_>) = answers.iter().partition(|p| p.is_ok());
    assert_eq!(before.len(), 2, "each worker answers the first read: {answers:?}");
    let total: i128 = before.iter().map(|p| p.as_ref().unwrap().overall.cents).sum();
    assert_eq!(total, expected(t).1, "exactly the transactions of times 1..={t}");
    for refused in after {
        assert!(matches!(refused, Err(ReadError::Compacted { .. })), "{refused:?}");
        let Err(ReadError::Compacted { since, time, .. }) = refused else { unreachable!() };
        assert_eq!((*since, *time), (t + 10, t));
    }
}

#[test]
fn a_read_waits_until_the_views_have_passed_its_time() {
    // A read ordered at a time no worker has reached is answered once they have, exact.
    let answers: Arc<Mutex<Vec<Result<Reading, ReadError>>>> = Arc::default();
    let sink = Arc::clone(&answers);
    let ordered = AtomicBool::new(false);
    let extra =
        move |c: &mut Coordinator, control: &mut Control<Order, Answer>, answering: &Answering, complete: Time| {
            if complete >= 1 && !ordered.swap(true, Ordering::SeqCst) {
                let s = Arc::clone(&sink);
                c.order_read(
                    control,
                    answering,
                    30,
                    ReadScope::Totals,
                    Reply::Call(Arc::new(move |p| s.lock().unwrap().push(p))),
                );
            }
        };
    two_workers(60, Duration::from_millis(2), extra, |_| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while answers.lock().unwrap().len() < 2 {
            assert!(std::time::Instant::now() < deadline, "the read was not answered");
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let total: i128 = answers.lock().unwrap().iter().map(|p| p.as_ref().unwrap().overall.cents).sum();
    assert_eq!(total, expected(30).1);
}

#[test]
fn a_scan_of_a_view_being_filled_waits_and_holds_up_nothing_else() {
    use crate::compute::scan::{ScanSpec, Seek};
    use crate::dataflow::created::{Maintained, ViewKey};
    let def = Maintained { id: 77, key: ViewKey::Customer, filter: None, plan: None };
    two_workers(
        400,
        Duration::from_millis(2),
        |_, _, _, _| {},
        |serving| {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            // Some transactions first, so that a worker has more than one identity to fill.
            while serving.read(ReadScope::Totals, Duration::from_secs(10)).expect("an answer").time < 20 {
                std::thread::sleep(Duration::from_millis(5));
            }
            runtime.block_on(serving.install(def, Duration::from_secs(10))).expect("the install is answered at once");
            for _ in 0..3 {
                let reading = serving.read(ReadScope::Totals, Duration::from_secs(10));
                let reading = reading.expect("the other views answer while the view is being filled");
                assert_eq!((reading.overall.count, reading.overall.cents), expected(reading.time.min(400)));
            }
            let pinned = runtime.block_on(serving.pin(Duration::from_secs(10))).expect("a time is pinned");
            let mut columns = vec![("key".to_owned(), crate::compute::columns::ColumnType::Text)];
            columns.extend(crate::compute::relation::GROUP_STATS.iter().map(|(n, t)| (n.to_string(), *t)));
            let spec = ScanSpec {
                relation: crate::compute::relation::Relation::Groups(77),
                columns,
                projection: vec![0, 1],
                seek: Seek::All,
                topic: "t".into(),
                since: None,
            };
            let mut receivers = serving.scan(pinned.time, spec, &[0, 1]).expect("the scan is asked");
            let first =
                runtime.block_on(async { tokio::time::timeout(Duration::from_millis(300), receivers[0].recv()).await });
            assert!(first.is_err(), "a scan of the view waits until it is filled: {first:?}");
            let after = serving.read(ReadScope::Totals, Duration::from_secs(10));
            assert!(after.is_ok(), "reads after it are not held up: {after:?}");
            serving.unpin(pinned.time);
        },
    );
}
