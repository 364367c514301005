//! Nexmark, the streaming benchmark: an online auction's three streams — people who register,
//! auctions they open, bids on them — as the reference generator makes them
//! ([`generator`]), each event one JSON line for its table (`person`, `auction`, `bid`).
//!
//! ```text
//! person  {"id":1000,"name":"Peter Jones","email_address":"…","credit_card":"…","city":"Boise","state":"OR","date_time":"2025-01-01T00:00:00Z","extra":"…"}
//! auction {"id":1000,"item_name":"…","description":"…","initial_bid":2043,"reserve":9867,"date_time":"…","expires":"…","seller":1000,"category":10,"extra":"…"}
//! bid     {"id":4,"auction":1000,"bidder":1001,"price":5311,"channel":"Google","url":"…","date_time":"…","extra":"…"}
//! ```
//!
//! A bid has no identity in Nexmark; here it has its event's number (`id`), so that it can be
//! corrected — re-sent with the same `id` and a new price — or deleted (`"op":"delete"`): the
//! corrections variant, which no published Nexmark has, and which every view must stay exact
//! through.

pub mod bench;
pub mod generator;
pub mod oracle;
pub mod queries;
pub mod send;

/// One event of the three streams.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A person registers.
    Person(Person),
    /// A person opens an auction.
    Auction(Auction),
    /// A person bids (or a bid is re-sent with a new price: the same `id`).
    Bid(Bid),
    /// A bid is taken back: the bid of this `id` is deleted.
    BidDeleted(u64),
}

/// A registered person.
// Nexmark's fields, named as its queries name them (the JSON above).
#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Person {
    pub id: u64,
    pub name: String,
    pub email_address: String,
    pub credit_card: String,
    pub city: &'static str,
    pub state: &'static str,
    /// Event time, in milliseconds since the epoch.
    pub date_time: i64,
    pub extra: String,
}

/// An auction of one item.
// Nexmark's fields, named as its queries name them (the JSON above).
#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Auction {
    pub id: u64,
    pub item_name: String,
    pub description: String,
    pub initial_bid: u64,
    pub reserve: u64,
    pub date_time: i64,
    pub expires: i64,
    pub seller: u64,
    pub category: u64,
    pub extra: String,
}

/// A bid on an auction.
// Nexmark's fields, named as its queries name them (the JSON above).
#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bid {
    /// Ours: the number of the event that made it.
    pub id: u64,
    pub auction: u64,
    pub bidder: u64,
    pub price: u64,
    pub channel: String,
    pub url: String,
    pub date_time: i64,
    pub extra: String,
}

/// The three tables, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// `person`
    Person,
    /// `auction`
    Auction,
    /// `bid`
    Bid,
}

impl Stream {
    /// The three, in the order their events come in an epoch.
    pub const ALL: [Stream; 3] = [Stream::Person, Stream::Auction, Stream::Bid];

    /// The table's name.
    pub fn name(self) -> &'static str {
        match self {
            Stream::Person => "person",
            Stream::Auction => "auction",
            Stream::Bid => "bid",
        }
    }

    /// `CREATE TABLE` of this stream, read as `with` says (`connector = 'kafka', topic = …`
    /// or `connector = 'file', path = …`).
    pub fn create_table(self, with: &str) -> String {
        let columns = match self {
            Stream::Person => {
                "id bigint, name text, email_address text, credit_card text, city text, state text, \
                 date_time timestamp, extra text"
            }
            Stream::Auction => {
                "id bigint, item_name text, description text, initial_bid bigint, reserve bigint, \
                 date_time timestamp, expires timestamp, seller bigint, category bigint, extra text"
            }
            Stream::Bid => {
                "id bigint, auction bigint, bidder bigint, price bigint, channel text, url text, \
                 date_time timestamp, extra text"
            }
        };
        format!("CREATE TABLE {} ({columns}, PRIMARY KEY (id)) WITH ({with})", self.name())
    }
}

impl Event {
    /// The stream it belongs to.
    pub fn stream(&self) -> Stream {
        match self {
            Event::Person(_) => Stream::Person,
            Event::Auction(_) => Stream::Auction,
            Event::Bid(_) | Event::BidDeleted(_) => Stream::Bid,
        }
    }

    /// The event as one JSON line (without the newline).
    pub fn json(&self) -> String {
        let text = |s: &str| serde_json::Value::from(s).to_string();
        let time = |ms: i64| match chrono::DateTime::from_timestamp_millis(ms) {
            Some(t) => text(&t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            None => ms.div_euclid(1000).to_string(),
        };
        match self {
            Event::Person(p) => format!(
                r#"{{"id":{},"name":{},"email_address":{},"credit_card":{},"city":{},"state":{},"date_time":{},"extra":{}}}"#,
                p.id,
                text(&p.name),
                text(&p.email_address),
                text(&p.credit_card),
                text(p.city),
                text(p.state),
                time(p.date_time),
                text(&p.extra)
            ),
            Event::Auction(a) => format!(
                r#"{{"id":{},"item_name":{},"description":{},"initial_bid":{},"reserve":{},"date_time":{},"expires":{},"seller":{},"category":{},"extra":{}}}"#,
                a.id,
                text(&a.item_name),
                text(&a.description),
                a.initial_bid,
                a.reserve,
                time(a.date_time),
                time(a.expires),
                a.seller,
                a.category,
                text(&a.extra)
            ),
            Event::Bid(b) => format!(
                r#"{{"id":{},"auction":{},"bidder":{},"price":{},"channel":{},"url":{},"date_time":{},"extra":{}}}"#,
                b.id,
                b.auction,
                b.bidder,
                b.price,
                text(&b.channel),
                text(&b.url),
                time(b.date_time),
                text(&b.extra)
            ),
            Event::BidDeleted(id) => format!(r#"{{"id":{id},"op":"delete"}}"#),
        }
    }
}
