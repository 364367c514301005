//! A table fed by the Nexmark generator in process ([`crate::nexmark::generator`]) — the way
//! published Nexmark harnesses run it, and RisingWave's `connector = 'nexmark'` and
//! Materialize's load generators: no file, no broker, no JSON; each event made as a row of
//! the table's columns.
//!
//! ```sql
//! CREATE TABLE bid (id bigint, auction bigint, price bigint, date_time timestamp, PRIMARY KEY (id))
//! WITH (connector = 'nexmark', events = 1000000, corrections = 0.1, deletes = 0.02, seed = 1)
//! ```
//!
//! takes the bids of a run of a million events (46 in 50 of them), a tenth of them re-sent
//! later with a new price (the same `id`: the row is replaced) and 2% deleted. The table's
//! `stream` is its name (`person`, `auction`, `bid`) unless the option says another; its
//! columns are any of the stream's fields ([`crate::nexmark::Stream::create_table`] declares
//! them all), its key `id`. Three tables of one `seed` and `events` hold one run's three
//! streams; each makes only its own events. Once every event is in, the table's feed says so
//! (`ended` in `/v1/status`): the table no longer changes.

use super::{Generated, TableDef, Upsert};
use crate::compute::columns::{ColumnType, Owned};
use crate::nexmark::generator::{Generator, Options};
use crate::nexmark::{Event, Stream};

/// The most events a generated table may ask for: its rows are kept (about 0.7 KiB a bid in
/// memory), and any client may create one — as a table's file is capped
/// ([`super::MAX_FILE_BYTES`]).
pub const MAX_EVENTS: u64 = 10_000_000;

/// Each stream's fields and their column types.
pub fn fields(stream: Stream) -> &'static [(&'static str, ColumnType)] {
    use ColumnType::{Int, Text, Time};
    match stream {
        Stream::Person => &[
            ("id", Int),
            ("name", Text),
            ("email_address", Text),
            ("credit_card", Text),
            ("city", Text),
            ("state", Text),
            ("date_time", Time),
            ("extra", Text),
        ],
        Stream::Auction => &[
            ("id", Int),
            ("item_name", Text),
            ("description", Text),
            ("initial_bid", Int),
            ("reserve", Int),
            ("date_time", Time),
            ("expires", Time),
            ("seller", Int),
            ("category", Int),
            ("extra", Text),
        ],
        Stream::Bid => &[
            ("id", Int),
            ("auction", Int),
            ("bidder", Int),
            ("price", Int),
            ("channel", Text),
            ("url", Text),
            ("date_time", Time),
            ("extra", Text),
        ],
    }
}

/// The generator's options of a table named `table` (`stream`, `events`, `corrections`,
/// `deletes`, `seed`), checked.
pub fn options(table: &str, given: &[(String, String)]) -> Result<Generated, String> {
    let mut generated = Generated { stream: Stream::Bid, events: 1_000_000, corrections: 0.0, deletes: 0.0, seed: 1 };
    let mut stream = table.to_owned();
    let whole = |key: &str, text: &str| text.parse::<u64>().map_err(|_| format!("{key} = {text:?}: a whole number"));
    let fraction = |key: &str, text: &str| match text.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!("{key} = {text:?}: a fraction of the bids, from 0 to 1")),
    };
    for (key, text) in given {
        match key.as_str() {
            "stream" => stream = text.to_lowercase(),
            "events" => generated.events = whole(key, text)?,
            "seed" => generated.seed = whole(key, text)?,
            "corrections" => generated.corrections = fraction(key, text)?,
            "deletes" => generated.deletes = fraction(key, text)?,
            other => return Err(format!("{other} is not an option of connector 'nexmark'")),
        }
    }
    if generated.events > MAX_EVENTS {
        return Err(format!("events = {}: at most {MAX_EVENTS}", generated.events));
    }
    generated.stream = Stream::ALL
        .into_iter()
        .find(|s| s.name() == stream)
        .ok_or_else(|| format!("stream {stream:?}: 'person', 'auction' or 'bid' (WITH (…, stream = 'bid'))"))?;
    if generated.corrections + generated.deletes > 1.0 {
        return Err(format!(
            "corrections {} and deletes {}: fractions of the bids, at most 1 together",
            generated.corrections, generated.deletes
        ));
    }
    Ok(generated)
}

/// Whether `def`'s columns are fields of its stream, of their types, and its key is `id`.
pub fn check(def: &TableDef, generated: &Generated) -> Result<(), String> {
    let fields = fields(generated.stream);
    for (name, ty) in &def.columns {
        match fields.iter().find(|(field, _)| field == name) {
            Some((_, field_type)) if field_type == ty => {}
            Some((_, field_type)) => {
                return Err(format!("column {name} of a {} is {}", generated.stream.name(), sql_name(*field_type)))
            }
            None => {
                let names: Vec<&str> = fields.iter().map(|(f, _)| *f).collect();
                return Err(format!(
                    "a {} has no field {name}: its fields are {}",
                    generated.stream.name(),
                    names.join(", ")
                ));
            }
        }
    }
    if def.key_names() != ["id"] {
        return Err(format!("a {} table's primary key is (id)", generated.stream.name()));
    }
    Ok(())
}

/// How `CREATE TABLE` names a column type.
fn sql_name(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Text => "text",
        ColumnType::Int => "bigint",
        ColumnType::Time => "timestamp",
        ColumnType::Money => "numeric",
    }
}

/// The table's changes, in order: each of its stream's events as its row, a deleted bid as
/// the removal of its row.
pub fn changes(def: &TableDef, generated: &Generated) -> impl Iterator<Item = Upsert> + Send + 'static {
    let options = Options {
        events: generated.events,
        seed: generated.seed,
        corrections: generated.corrections,
        deletes: generated.deletes,
        only: Some(generated.stream),
        ..Options::default()
    };
    let columns: Vec<String> = def.columns.iter().map(|(name, _)| name.clone()).collect();
    Generator::new(options).map(move |event| match event {
        Event::BidDeleted(id) => Upsert { key: vec![Owned::Int(id as i64)], row: None },
        event => {
            let row: Vec<Owned> = columns.iter().map(|c| value(&event, c)).collect();
            Upsert { key: vec![value(&event, "id")], row: Some(row) }
        }
    })
}

/// Field `name` of `event` (a column [`check`] let through).
fn value(event: &Event, name: &str) -> Owned {
    let int = |n: u64| Owned::Int(n as i64);
    let text = |t: &str| Owned::Text(t.to_owned());
    // Timestamps keep whole seconds, as every table's do.
    let time = |ms: i64| Owned::Seconds(ms.div_euclid(1000));
    match (event, name) {
        (Event::Person(p), "id") => int(p.id),
        (Event::Person(p), "name") => text(&p.name),
        (Event::Person(p), "email_address") => text(&p.email_address),
        (Event::Person(p), "credit_card") => text(&p.credit_card),
        (Event::Person(p), "city") => text(p.city),
        (Event::Person(p), "state") => text(p.state),
        (Event::Person(p), "date_time") => time(p.date_time),
        (Event::Person(p), "extra") => text(&p.extra),
        (Event::Auction(a), "id") => int(a.id),
        (Event::Auction(a), "item_name") => text(&a.item_name),
        (Event::Auction(a), "description") => text(&a.description),
        (Event::Auction(a), "initial_bid") => int(a.initial_bid),
        (Event::Auction(a), "reserve") => int(a.reserve),
        (Event::Auction(a), "date_time") => time(a.date_time),
        (Event::Auction(a), "expires") => time(a.expires),
        (Event::Auction(a), "seller") => int(a.seller),
        (Event::Auction(a), "category") => int(a.category),
        (Event::Auction(a), "extra") => text(&a.extra),
        (Event::Bid(b), "id") => int(b.id),
        (Event::Bid(b), "auction") => int(b.auction),
        (Event::Bid(b), "bidder") => int(b.bidder),
        (Event::Bid(b), "price") => int(b.price),
        (Event::Bid(b), "channel") => text(&b.channel),
        (Event::Bid(b), "url") => text(&b.url),
        (Event::Bid(b), "date_time") => time(b.date_time),
        (Event::Bid(b), "extra") => text(&b.extra),
        (Event::BidDeleted(id), "id") => int(*id),
        _ => Owned::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(stream: Stream) -> TableDef {
        let columns = fields(stream).iter().map(|(n, t)| (n.to_string(), *t)).collect();
        TableDef {
            id: 1,
            name: stream.name().into(),
            columns,
            key: vec![0],
            path: None,
            topic: None,
            generated: None,
            sql: String::new(),
        }
    }

    #[test]
    fn a_tables_rows_are_its_streams_events_with_deletes_as_removals() {
        let given = [("events", "5000"), ("corrections", "0.1"), ("deletes", "0.05"), ("seed", "3")];
        let given: Vec<(String, String)> = given.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let generated = options("bid", &given).unwrap();
        let def = def(Stream::Bid);
        check(&def, &generated).unwrap();
        let events: Vec<Event> =
            Generator::new(Options { events: 5000, corrections: 0.1, deletes: 0.05, seed: 3, ..Options::default() })
                .filter(|e| e.stream() == Stream::Bid)
                .collect();
        let changes: Vec<Upsert> = changes(&def, &generated).collect();
        assert_eq!(changes.len(), events.len());
        for (change, event) in changes.iter().zip(&events) {
            match event {
                Event::Bid(b) => {
                    let row = change.row.as_ref().expect("a row");
                    assert_eq!((&change.key, &row[3]), (&vec![Owned::Int(b.id as i64)], &Owned::Int(b.price as i64)));
                    assert_eq!(row[6], Owned::Seconds(b.date_time / 1000));
                }
                Event::BidDeleted(id) => assert_eq!((&change.key, &change.row), (&vec![Owned::Int(*id as i64)], &None)),
                other => panic!("{other:?} among the bids"),
            }
        }
        assert!(changes.iter().any(|c| c.row.is_none()), "some bids are deleted");
    }

    #[test]
    fn options_and_columns_that_do_not_fit_are_refused_with_the_reason() {
        let given = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        assert!(options("bids", &[]).unwrap_err().contains("stream \"bids\""));
        assert_eq!(options("x", &given(&[("stream", "person")])).unwrap().stream, Stream::Person);
        assert!(options("bid", &given(&[("events", "-1")])).unwrap_err().contains("whole number"));
        assert!(options("bid", &given(&[("events", "10000001")])).unwrap_err().contains("at most 10000000"));
        assert!(options("bid", &given(&[("corrections", "1.5")])).unwrap_err().contains("from 0 to 1"));
        assert!(options("bid", &given(&[("corrections", "NaN")])).unwrap_err().contains("from 0 to 1"));
        let both = given(&[("corrections", "0.6"), ("deletes", "0.6")]);
        assert!(options("bid", &both).unwrap_err().contains("at most 1 together"));
        let generated = options("person", &[]).unwrap();
        let mut wrong = def(Stream::Person);
        wrong.columns[1].1 = ColumnType::Int;
        assert!(check(&wrong, &generated).unwrap_err().contains("column name of a person is text"));
        wrong.columns[1].0 = "nickname".into();
        assert!(check(&wrong, &generated).unwrap_err().contains("no field nickname"));
        let mut keyed = def(Stream::Person);
        keyed.key = vec![1];
        assert!(check(&keyed, &generated).unwrap_err().contains("primary key is (id)"));
    }
}
