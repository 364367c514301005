//! The independent recomputation of a Nexmark query: the generator's events applied in order
//! by a map per table (a later bid of an `id` replaces it, a delete removes it), the three
//! tables handed to DataFusion as plain in-memory tables, and the query's `SELECT` run over
//! them — no engine of ours, no arrangement, no compiled view.
//!
//! ```text
//! events ─► person/auction/bid maps (last one wins) ─► Arrow batches ─► DataFusion: SELECT …
//! ```
//!
//! Timestamps keep whole seconds, as the tables' do (see [`crate::table`]): the same rows,
//! so that the answers can be compared value for value.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Builder, StringBuilder, TimestampMicrosecondBuilder};
use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;

use super::generator::{Generator, Options};
use super::{Auction, Bid, Event, Person, Stream};

/// The tables once every event of `options` is applied: people, auctions and live bids.
pub struct Applied {
    people: Vec<Person>,
    auctions: Vec<Auction>,
    bids: HashMap<u64, Bid>,
}

impl Applied {
    /// Generates the events of `options` and applies them in order.
    pub fn new(options: Options) -> Applied {
        let (mut people, mut auctions, mut bids) = (Vec::new(), Vec::new(), HashMap::new());
        for event in Generator::new(options) {
            match event {
                Event::Person(p) => people.push(p),
                Event::Auction(a) => auctions.push(a),
                Event::Bid(b) => {
                    bids.insert(b.id, b);
                }
                Event::BidDeleted(id) => {
                    bids.remove(&id);
                }
            }
        }
        Applied { people, auctions, bids }
    }

    /// Rows of each table.
    pub fn counts(&self) -> [(Stream, usize); 3] {
        [(Stream::Person, self.people.len()), (Stream::Auction, self.auctions.len()), (Stream::Bid, self.bids.len())]
    }

    /// `select` over the tables, by DataFusion alone.
    pub async fn query(self, select: &str) -> datafusion::error::Result<Vec<RecordBatch>> {
        let context = SessionContext::new();
        let (people, auctions, bids) = (self.people, self.auctions, self.bids);
        let person = batch(Stream::Person, people.len(), |columns| {
            for p in &people {
                columns.int(p.id);
                columns.text(&p.name);
                columns.text(&p.email_address);
                columns.text(&p.credit_card);
                columns.text(p.city);
                columns.text(p.state);
                columns.time(p.date_time);
                columns.text(&p.extra);
            }
        })?;
        drop(people);
        let auction = batch(Stream::Auction, auctions.len(), |columns| {
            for a in &auctions {
                columns.int(a.id);
                columns.text(&a.item_name);
                columns.text(&a.description);
                columns.int(a.initial_bid);
                columns.int(a.reserve);
                columns.time(a.date_time);
                columns.time(a.expires);
                columns.int(a.seller);
                columns.int(a.category);
                columns.text(&a.extra);
            }
        })?;
        drop(auctions);
        let bid = batch(Stream::Bid, bids.len(), |columns| {
            for b in bids.values() {
                columns.int(b.id);
                columns.int(b.auction);
                columns.int(b.bidder);
                columns.int(b.price);
                columns.text(&b.channel);
                columns.text(&b.url);
                columns.time(b.date_time);
                columns.text(&b.extra);
            }
        })?;
        drop(bids);
        for (stream, batch) in [(Stream::Person, person), (Stream::Auction, auction), (Stream::Bid, bid)] {
            let table = MemTable::try_new(batch.schema(), vec![vec![batch]])?;
            context.register_table(stream.name(), Arc::new(table))?;
        }
        context.sql(select).await?.collect().await
    }
}

/// The columns of one table being built, filled field by field in the table's column order.
struct Columns {
    kinds: Vec<Kind>,
    next: usize,
}

enum Kind {
    Int(Int64Builder),
    Text(StringBuilder),
    Time(TimestampMicrosecondBuilder),
}

impl Columns {
    fn column(&mut self) -> &mut Kind {
        let at = self.next;
        self.next = (self.next + 1) % self.kinds.len();
        &mut self.kinds[at]
    }

    fn int(&mut self, value: u64) {
        match self.column() {
            Kind::Int(b) => b.append_value(value as i64),
            _ => unreachable!("the fields are appended in the schema's order"),
        }
    }

    fn text(&mut self, value: &str) {
        match self.column() {
            Kind::Text(b) => b.append_value(value),
            _ => unreachable!("the fields are appended in the schema's order"),
        }
    }

    fn time(&mut self, ms: i64) {
        match self.column() {
            // Whole seconds, as the tables keep them.
            Kind::Time(b) => b.append_value(ms.div_euclid(1000) * 1_000_000),
            _ => unreachable!("the fields are appended in the schema's order"),
        }
    }
}

/// One table's rows as one batch: `fill` appends every row's fields in the stream's order
/// ([`crate::table::nexmark::fields`]).
fn batch(stream: Stream, rows: usize, fill: impl FnOnce(&mut Columns)) -> datafusion::error::Result<RecordBatch> {
    use crate::compute::columns::ColumnType;
    let fields = crate::table::nexmark::fields(stream);
    let kinds = fields
        .iter()
        .map(|(_, ty)| match ty {
            ColumnType::Int => Kind::Int(Int64Builder::with_capacity(rows)),
            ColumnType::Time => Kind::Time(
                TimestampMicrosecondBuilder::with_capacity(rows).with_timezone(crate::compute::columns::TIME_ZONE),
            ),
            _ => Kind::Text(StringBuilder::with_capacity(rows, rows * 16)),
        })
        .collect();
    let mut columns = Columns { kinds, next: 0 };
    fill(&mut columns);
    let arrays: Vec<ArrayRef> = columns
        .kinds
        .into_iter()
        .map(|kind| -> ArrayRef {
            match kind {
                Kind::Int(mut b) => Arc::new(b.finish()),
                Kind::Text(mut b) => Arc::new(b.finish()),
                Kind::Time(mut b) => Arc::new(b.finish()),
            }
        })
        .collect();
    let schema = Schema::new(
        fields
            .iter()
            .zip(&arrays)
            .map(|((name, _), array)| Field::new(*name, array.data_type().clone(), true))
            .collect::<Vec<_>>(),
    );
    RecordBatch::try_new(Arc::new(schema), arrays).map_err(Into::into)
}
