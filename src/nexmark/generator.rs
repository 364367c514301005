//! The Nexmark generator, after the reference one (`nexmark/nexmark`, `NexmarkGenerator` and
//! its `model/*Generator`): deterministic by seed, in process, one [`Event`] at a time.
//!
//! Event `n` (from 0) is a person, an auction or a bid by `n mod 50`: the first 1 of every 50
//! a person, the next 3 auctions, the other 46 bids. Its event time is `base + n / rate`
//! (10,000 events a second of event time by default). Ids follow the event numbers: the
//! `k`-th person is person `1000 + k`, the `k`-th auction auction `1000 + k`. A bid is for a
//! hot auction (the first of the last 100 auctions' block) half the time, else for one of the
//! 100 auctions in flight (or a few ids ahead); by a hot bidder three times in four, else by
//! one of the last 1,000 people (or a few ahead); its price `round(10^(6u) · 100)` with `u`
//! uniform in [0, 1). Auctions' sellers are hot three times in four, their categories one of
//! five (10–14). Strings and the `extra` padding are random letters, of the reference's average
//! sizes (200, 500 and 100 bytes for a person, an auction and a bid).
//!
//! ```
//! use atelier_lambda::nexmark::generator::{Generator, Options};
//! let events: Vec<_> = Generator::new(Options { events: 50, ..Options::default() }).collect();
//! assert_eq!(events.len(), 50);
//! assert_eq!(events[0].stream().name(), "person");
//! assert_eq!(events[1].stream().name(), "auction");
//! assert_eq!(events[4].stream().name(), "bid");
//! ```
//!
//! Each event draws from a random stream of its own, seeded by the seed and its number (the
//! reference seeds one per event id too), so that one stream's events can be made without the
//! others' ([`Options::only`]): a table fed by the generator makes only its own rows.
//!
//! **Corrections** (ours): after a bid, with probability `corrections` the same bid (same `id`)
//! is sent again with a new price, and with probability `deletes` it is deleted, each some
//! events later (up to 1,000) — extra events, beside the `events` of the streams.

use std::collections::BinaryHeap;

use super::{Auction, Bid, Event, Person};
use crate::rng::Rng;

const PERSON_PROPORTION: u64 = 1;
const AUCTION_PROPORTION: u64 = 3;
const TOTAL_PROPORTION: u64 = 50;
const FIRST_PERSON_ID: u64 = 1000;
const FIRST_AUCTION_ID: u64 = 1000;
const FIRST_CATEGORY_ID: u64 = 10;
const CATEGORIES: u64 = 5;
const ACTIVE_PEOPLE: u64 = 1000;
const IN_FLIGHT_AUCTIONS: u64 = 100;
const ID_LEAD: u64 = 10;
/// One in this many is not hot: `hotAuctionRatio`, `hotSellersRatio`, `hotBiddersRatio`.
const HOT_AUCTION_RATIO: u64 = 2;
const HOT_SELLER_RATIO: u64 = 4;
const HOT_BIDDER_RATIO: u64 = 4;
/// The block a hot auction, seller or bidder is the first (second, for bidders) of.
const HOT_BLOCK: u64 = 100;
const HOT_CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];
const CHANNELS: u64 = 10_000;
const STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
const CITIES: [&str; 10] =
    ["Phoenix", "Los Angeles", "San Francisco", "Boise", "Portland", "Bend", "Redmond", "Seattle", "Kent", "Cheyenne"];
const FIRST_NAMES: [&str; 11] =
    ["Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter"];
const LAST_NAMES: [&str; 9] = ["Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris"];
/// The reference's average sizes of each kind of event, in bytes.
const PERSON_BYTES: usize = 200;
const AUCTION_BYTES: usize = 500;
const BID_BYTES: usize = 100;
/// How far after its bid a correction or a delete comes, at most, in events.
const CORRECTION_DELAY: u64 = 1000;

/// What to generate.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Events of the three streams (corrections and deletes come beside them).
    pub events: u64,
    /// Event-time rate: events per second of event time.
    pub rate: u64,
    /// The first event's time, in milliseconds since the epoch.
    pub base_time_ms: i64,
    /// The same seed gives the same events.
    pub seed: u64,
    /// The probability that a bid is re-sent with a new price.
    pub corrections: f64,
    /// The probability that a bid is deleted.
    pub deletes: f64,
    /// Only this stream's events (and, for bids, their corrections and deletes): the same
    /// events as the whole run's, the others skipped.
    pub only: Option<super::Stream>,
}

impl Default for Options {
    fn default() -> Self {
        // 2025-01-01T00:00:00Z.
        Options {
            events: 1_000_000,
            rate: 10_000,
            base_time_ms: 1_735_689_600_000,
            seed: 1,
            corrections: 0.0,
            deletes: 0.0,
            only: None,
        }
    }
}

/// The events, in order.
pub struct Generator {
    options: Options,
    /// The next event's number.
    next: u64,
    rng: Rng,
    /// Random letters that padding and long strings are cut from.
    letters: String,
    /// Corrections and deletes to come: (due at this event number, order, event), earliest first.
    pending: BinaryHeap<std::cmp::Reverse<(u64, u64, Pending)>>,
    made: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Pending {
    Corrected(u64, u64, u64, u64, i64, u64),
    Deleted(u64),
}

impl Generator {
    /// The events `options` asks for.
    pub fn new(options: Options) -> Generator {
        let mut rng = Rng(options.seed);
        let letters: String = (0..1 << 16).map(|_| (b'a' + rng.below(26) as u8) as char).collect();
        Generator { options, next: 0, rng, letters, pending: BinaryHeap::new(), made: 0 }
    }

    /// The time of event `n`.
    fn time_of(&self, n: u64) -> i64 {
        self.options.base_time_ms + (n as u128 * 1000 / u128::from(self.options.rate.max(1))) as i64
    }

    fn person(&mut self, n: u64) -> Person {
        let id = last_person(n) + FIRST_PERSON_ID;
        let name = format!(
            "{} {}",
            FIRST_NAMES[self.rng.below(FIRST_NAMES.len() as u64) as usize],
            LAST_NAMES[self.rng.below(LAST_NAMES.len() as u64) as usize]
        );
        let email_address = format!("{}@{}.com", self.string(7), self.string(5));
        let credit_card = (0..4).map(|_| format!("{:04}", self.rng.below(10_000))).collect::<Vec<_>>().join(" ");
        let city = CITIES[self.rng.below(CITIES.len() as u64) as usize];
        let state = STATES[self.rng.below(STATES.len() as u64) as usize];
        let size = 8 + name.len() + email_address.len() + credit_card.len() + city.len() + state.len();
        let extra = self.extra(size, PERSON_BYTES);
        Person { id, name, email_address, credit_card, city, state, date_time: self.time_of(n), extra }
    }

    fn auction(&mut self, n: u64) -> Auction {
        let id = last_auction(n) + FIRST_AUCTION_ID;
        let seller = if self.rng.below(HOT_SELLER_RATIO) > 0 {
            (last_person(n) / HOT_BLOCK) * HOT_BLOCK
        } else {
            self.some_person(n)
        } + FIRST_PERSON_ID;
        let category = FIRST_CATEGORY_ID + self.rng.below(CATEGORIES);
        let initial_bid = self.price();
        let date_time = self.time_of(n);
        // An auction lasts, on average, until the auction `IN_FLIGHT_AUCTIONS` ahead opens.
        let ahead = IN_FLIGHT_AUCTIONS * TOTAL_PROPORTION / AUCTION_PROPORTION;
        let horizon = (self.time_of(n + ahead) - date_time).max(1) as u64;
        let expires = date_time + 1 + self.rng.below(2 * horizon) as i64;
        let item_name = self.string(20);
        let description = self.string(100);
        let reserve = initial_bid + self.price();
        let size = 8 + item_name.len() + description.len() + 40;
        let extra = self.extra(size, AUCTION_BYTES);
        Auction { id, item_name, description, initial_bid, reserve, date_time, expires, seller, category, extra }
    }

    fn bid(&mut self, n: u64) -> Bid {
        let auction = if self.rng.below(HOT_AUCTION_RATIO) > 0 {
            (last_auction(n) / HOT_BLOCK) * HOT_BLOCK
        } else {
            let last = last_auction(n);
            let first = last.saturating_sub(IN_FLIGHT_AUCTIONS);
            first + self.rng.below(last - first + 1 + ID_LEAD)
        } + FIRST_AUCTION_ID;
        let bidder = if self.rng.below(HOT_BIDDER_RATIO) > 0 {
            (last_person(n) / HOT_BLOCK) * HOT_BLOCK + 1
        } else {
            self.some_person(n)
        } + FIRST_PERSON_ID;
        let price = self.price();
        let (channel, url) = if self.rng.below(2) > 0 {
            let i = self.rng.below(HOT_CHANNELS.len() as u64);
            (HOT_CHANNELS[i as usize].to_owned(), format!("https://www.nexmark.com/hot/{i}/item.htm?query=1"))
        } else {
            let i = self.rng.below(CHANNELS);
            (format!("channel-{i}"), format!("https://www.nexmark.com/channel/{i}/item.htm?query=1&channel_id={i}"))
        };
        let extra = self.extra(32, BID_BYTES);
        Bid { id: n, auction, bidder, price, channel, url, date_time: self.time_of(n), extra }
    }

    /// One of the active people, or a few ids ahead of the last.
    fn some_person(&mut self, n: u64) -> u64 {
        let people = last_person(n) + 1;
        let active = people.min(ACTIVE_PEOPLE);
        people - active + self.rng.below(active + ID_LEAD)
    }

    fn price(&mut self) -> u64 {
        (10f64.powf(self.rng.unit() * 6.0) * 100.0).round() as u64
    }

    /// Random letters, 3 to `max - 1` of them.
    fn string(&mut self, max: u64) -> String {
        let len = 3 + self.rng.below(max - 3) as usize;
        self.cut(len)
    }

    /// Padding that brings an event of `size` bytes to `average` on average (±20%).
    fn extra(&mut self, size: usize, average: usize) -> String {
        let Some(wanted) = average.checked_sub(size) else { return String::new() };
        let delta = (wanted as f64 * 0.2).round() as usize;
        let len = wanted - delta + if delta == 0 { 0 } else { self.rng.below(2 * delta as u64) as usize };
        self.cut(len)
    }

    fn cut(&mut self, len: usize) -> String {
        let from = self.rng.below((self.letters.len() - len) as u64) as usize;
        self.letters[from..from + len].to_owned()
    }

    /// Schedules what becomes of bid `bid` later, if anything.
    fn schedule(&mut self, bid: &Bid) {
        let (corrections, deletes) = (self.options.corrections, self.options.deletes);
        if corrections <= 0.0 && deletes <= 0.0 {
            return;
        }
        let draw = self.rng.unit();
        let pending = if draw < corrections {
            let price = self.price();
            Pending::Corrected(bid.id, bid.auction, bid.bidder, price, bid.date_time, self.rng.below(CHANNELS))
        } else if draw < corrections + deletes {
            Pending::Deleted(bid.id)
        } else {
            return;
        };
        let due = self.next + 1 + self.rng.below(CORRECTION_DELAY);
        self.made += 1;
        self.pending.push(std::cmp::Reverse((due, self.made, pending)));
    }
}

/// The stream of event `n`.
fn stream_of(n: u64) -> super::Stream {
    match n % TOTAL_PROPORTION {
        o if o < PERSON_PROPORTION => super::Stream::Person,
        o if o < PERSON_PROPORTION + AUCTION_PROPORTION => super::Stream::Auction,
        _ => super::Stream::Bid,
    }
}

/// The random stream event `n` draws from.
fn event_rng(seed: u64, n: u64) -> Rng {
    let mut mixed = Rng(seed ^ n.wrapping_mul(0xD1B5_4A32_D192_ED03));
    Rng(mixed.next())
}

/// The 0-based number of the last person made at or before event `n`.
fn last_person(n: u64) -> u64 {
    let (epoch, offset) = (n / TOTAL_PROPORTION, n % TOTAL_PROPORTION);
    // An auction or a bid: the last person of this epoch.
    let offset = if offset >= PERSON_PROPORTION { PERSON_PROPORTION - 1 } else { offset };
    epoch * PERSON_PROPORTION + offset
}

/// The 0-based number of the last auction made at or before event `n` (the one being made,
/// for an auction event).
fn last_auction(n: u64) -> u64 {
    let (epoch, offset) = (n / TOTAL_PROPORTION, n % TOTAL_PROPORTION);
    if offset < PERSON_PROPORTION {
        // A person: the last auction of the epoch before (none before the first).
        (epoch * AUCTION_PROPORTION).saturating_sub(1)
    } else if offset >= PERSON_PROPORTION + AUCTION_PROPORTION {
        epoch * AUCTION_PROPORTION + AUCTION_PROPORTION - 1
    } else {
        epoch * AUCTION_PROPORTION + offset - PERSON_PROPORTION
    }
}

impl Iterator for Generator {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        let n = loop {
            let due = self.pending.peek().is_some_and(|p| p.0 .0 <= self.next || self.next >= self.options.events);
            if due {
                let std::cmp::Reverse((_, _, pending)) = self.pending.pop().expect("peeked");
                return Some(match pending {
                    Pending::Corrected(id, auction, bidder, price, date_time, channel) => Event::Bid(Bid {
                        id,
                        auction,
                        bidder,
                        price,
                        channel: format!("channel-{channel}"),
                        url: format!("https://www.nexmark.com/channel/{channel}/item.htm?query=1&channel_id={channel}"),
                        date_time,
                        extra: String::new(),
                    }),
                    Pending::Deleted(id) => Event::BidDeleted(id),
                });
            }
            if self.next >= self.options.events {
                return None;
            }
            let n = self.next;
            if self.options.only.is_none_or(|only| only == stream_of(n)) {
                break n;
            }
            self.next += 1;
        };
        self.rng = event_rng(self.options.seed, n);
        let event = match stream_of(n) {
            super::Stream::Person => Event::Person(self.person(n)),
            super::Stream::Auction => Event::Auction(self.auction(n)),
            super::Stream::Bid => {
                let bid = self.bid(n);
                self.schedule(&bid);
                Event::Bid(bid)
            }
        };
        self.next += 1;
        Some(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nexmark::Stream;

    fn events(options: Options) -> Vec<Event> {
        Generator::new(options).collect()
    }

    #[test]
    fn the_streams_come_one_three_forty_six_and_the_same_seed_gives_the_same_events() {
        let all = events(Options { events: 50_000, ..Options::default() });
        let count = |s: Stream| all.iter().filter(|e| e.stream() == s).count();
        assert_eq!((count(Stream::Person), count(Stream::Auction), count(Stream::Bid)), (1_000, 3_000, 46_000));
        assert_eq!(all, events(Options { events: 50_000, ..Options::default() }));
        assert_ne!(all, events(Options { events: 50_000, seed: 2, ..Options::default() }));
    }

    #[test]
    fn people_and_auctions_are_numbered_as_made_and_bids_name_ones_that_are_there_or_about_to_be() {
        let all = events(Options { events: 20_000, ..Options::default() });
        let (mut people, mut auctions) = (0u64, 0u64);
        for event in &all {
            match event {
                Event::Person(p) => {
                    assert_eq!(p.id, FIRST_PERSON_ID + people);
                    people += 1;
                }
                Event::Auction(a) => {
                    assert_eq!(a.id, FIRST_AUCTION_ID + auctions);
                    assert!((10..15).contains(&a.category));
                    assert!(a.expires > a.date_time && a.reserve >= a.initial_bid);
                    assert!(a.seller < FIRST_PERSON_ID + people + ID_LEAD);
                    auctions += 1;
                }
                Event::Bid(b) => {
                    assert!(b.auction < FIRST_AUCTION_ID + auctions + ID_LEAD, "{b:?}");
                    assert!(b.bidder < FIRST_PERSON_ID + people + ID_LEAD, "{b:?}");
                    assert!((100..=100_000_000).contains(&b.price));
                }
                Event::BidDeleted(_) => unreachable!("no corrections asked"),
            }
        }
        // Event time moves 0.1 ms an event; the last of 20,000 is 1.9999 s after the first.
        let time = |e: &Event| match e {
            Event::Person(p) => p.date_time,
            Event::Auction(a) => a.date_time,
            Event::Bid(b) => b.date_time,
            Event::BidDeleted(_) => 0,
        };
        assert_eq!(time(&all[19_999]) - time(&all[0]), 1_999);
        // Half the bids are for hot auctions: the hottest takes ten times the average and more.
        let mut per_auction = std::collections::HashMap::new();
        for event in &all {
            if let Event::Bid(b) = event {
                *per_auction.entry(b.auction).or_insert(0u64) += 1;
            }
        }
        let average = 18_400 / auctions;
        assert!(*per_auction.values().max().unwrap() > 10 * average, "{per_auction:?}");
    }

    #[test]
    fn corrections_resend_bids_by_id_and_deletes_take_them_back_after_they_were_made() {
        let options = Options { events: 100_000, corrections: 0.1, deletes: 0.02, ..Options::default() };
        let all = events(options);
        let mut seen = std::collections::HashSet::new();
        let (mut resent, mut deleted) = (0, 0);
        for event in &all {
            match event {
                Event::Bid(b) if !seen.insert(b.id) => resent += 1,
                Event::BidDeleted(id) => {
                    assert!(seen.contains(id), "a delete after its bid");
                    deleted += 1;
                }
                _ => {}
            }
        }
        let bids = 92_000.0;
        assert!((resent as f64 / bids - 0.1).abs() < 0.01, "{resent}");
        assert!((deleted as f64 / bids - 0.02).abs() < 0.005, "{deleted}");
        assert_eq!(all.len() as u64, 100_000 + resent + deleted);
    }

    #[test]
    fn one_streams_events_alone_are_the_same_as_in_the_whole_run() {
        let options = Options { events: 20_000, corrections: 0.1, deletes: 0.02, seed: 4, ..Options::default() };
        let all = events(options);
        for stream in Stream::ALL {
            let alone = events(Options { only: Some(stream), ..options });
            let within: Vec<Event> = all.iter().filter(|e| e.stream() == stream).cloned().collect();
            assert!(!alone.is_empty());
            assert_eq!(alone, within, "{stream:?}");
        }
    }

    #[test]
    fn every_event_is_one_json_object_of_its_tables_columns() {
        let options = Options { events: 2_000, corrections: 0.1, deletes: 0.05, ..Options::default() };
        for event in Generator::new(options) {
            let json: serde_json::Value = serde_json::from_str(&event.json()).unwrap();
            assert!(json["id"].is_u64());
            if !matches!(event, Event::BidDeleted(_)) {
                assert!(json["date_time"].as_str().unwrap().ends_with('Z'));
            }
        }
    }
}
