//! The control plane: orders from worker 0 to every worker, and answers back to worker 0,
//! over timely's own channels — so they reach workers in other processes as well.
//!
//! A small dataflow beside the main one, on every worker:
//!
//! ```text
//! worker 0:   orders ──broadcast──► every worker's inbox (in the order sent)
//! any worker: answers ──exchange to worker 0──► worker 0's inbox
//! ```
//!
//! Timely keeps the messages between two workers in order, so every worker sees the orders
//! in the order worker 0 gave them. Nothing here waits for a frontier: a message is taken
//! from the inbox as soon as it arrives, at the next step of the worker; the inputs' time
//! moves with the clock and with every send ([`Control::send`]).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::vec::input::Input as _;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::InputHandleVec;
use timely::worker::Worker;
use timely::ExchangeData;

/// One worker's ends of the control plane: orders of type `O`, answers of type `A`.
pub struct Control<O: ExchangeData + Clone, A: ExchangeData + Clone> {
    index: usize,
    peers: usize,
    orders: InputHandleVec<u64, O>,
    received: Rc<RefCell<VecDeque<O>>>,
    answers: InputHandleVec<u64, A>,
    gathered: Rc<RefCell<VecDeque<A>>>,
    /// Whether orders or answers wait for [`Control::send`].
    unsent: bool,
}

impl<O: ExchangeData + Clone, A: ExchangeData + Clone> Control<O, A> {
    /// Builds the control dataflow on this worker (every worker must, in the same order
    /// relative to its other dataflows).
    pub fn build(worker: &mut Worker) -> Self {
        let mut orders = InputHandleVec::new();
        let mut answers = InputHandleVec::new();
        let received: Rc<RefCell<VecDeque<O>>> = Rc::default();
        let gathered: Rc<RefCell<VecDeque<A>>> = Rc::default();
        let (inbox, coordinator_inbox) = (Rc::clone(&received), Rc::clone(&gathered));
        worker.dataflow::<u64, _, _>(|scope| {
            scope.input_from(&mut orders).broadcast().sink(Pipeline, "Orders", move |(input, _)| {
                input.for_each(|_, orders| inbox.borrow_mut().extend(orders.drain(..)));
            });
            let to_worker_0 = Exchange::new(|_: &A| 0u64);
            scope.input_from(&mut answers).sink(to_worker_0, "Answers", move |(input, _)| {
                input.for_each(|_, answers| coordinator_inbox.borrow_mut().extend(answers.drain(..)));
            });
        });
        Control { index: worker.index(), peers: worker.peers(), orders, received, answers, gathered, unsent: false }
    }

    /// This worker's index among all workers of all processes.
    pub fn index(&self) -> usize {
        self.index
    }

    /// How many workers there are in all processes.
    pub fn peers(&self) -> usize {
        self.peers
    }

    /// Sends an order to every worker, this one included (worker 0 only).
    pub fn order(&mut self, order: O) {
        self.orders.send(order);
        self.unsent = true;
    }

    /// Sends what [`Control::order`] and [`Control::answer`] gave since the last call, in
    /// one go, and keeps this worker's time up with the clock.
    ///
    /// Advancing the time closes the inputs' epoch, which is what pushes buffered data
    /// through an exchange to other workers (a flush alone leaves it there). The times are
    /// Unix microseconds, and every worker advances at least every millisecond even when it
    /// sends nothing: timely retires a time only once all workers have passed it, and times
    /// that no worker has passed pile up in its progress tracking, which sorts them at every
    /// step — a sender counting its sends would run ahead of the others and pile them up.
    pub fn send(&mut self) {
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        let time = *self.orders.time();
        let next = if std::mem::take(&mut self.unsent) {
            now.max(time + 1)
        } else if now / 1000 > time / 1000 {
            now
        } else {
            time
        };
        if next > time {
            self.orders.advance_to(next);
            self.answers.advance_to(next);
        }
    }

    /// Sends what [`Control::order`] and [`Control::answer`] gave since the last call, without
    /// keeping up with the clock otherwise (an idle worker: see `run::ticker`). The idle
    /// workers' times still move on now and then, so times do not pile up.
    pub fn send_idle(&mut self) {
        if self.unsent {
            self.send();
        }
    }

    /// The orders received since the last call, in order.
    pub fn orders(&self) -> Vec<O> {
        self.received.borrow_mut().drain(..).collect()
    }

    /// Sends an answer to worker 0.
    pub fn answer(&mut self, answer: A) {
        self.answers.send(answer);
        self.unsent = true;
    }

    /// The answers received since the last call (worker 0).
    pub fn answers(&self) -> Vec<A> {
        self.gathered.borrow_mut().drain(..).collect()
    }
}
