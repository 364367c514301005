//! A created view's `WHERE`, evaluated by DataFusion over a worker's transactions a batch at
//! a time: the view's dataflow is fed only the transactions that pass.
//!
//! The predicate travels as SQL text (it is part of the view's definition, which every worker
//! of every process installs) and each worker plans it against the `transactions` columns, so
//! that it means what it means in an ad-hoc query — the same functions, casts and NULLs:
//!
//! ```
//! use atelier_lambda::compute::filter::TxnFilter;
//! use atelier_lambda::event::Txn;
//! let filter = TxnFilter::new("amount >= 100 AND upper(customer) LIKE 'A%'").unwrap();
//! let txns = [
//!     Txn { customer: "Ali".into(), cents: 12_000, ts: None, category: None },
//!     Txn { customer: "Ali".into(), cents: 8_000, ts: None, category: None },
//!     Txn { customer: "Sara".into(), cents: 20_000, ts: None, category: None },
//! ];
//! assert_eq!(filter.keeps(txns.iter()), [true, false, false]);
//! ```
//!
//! The transaction's `id` is not known where views are fed (the upsert's tap carries the
//! transaction, not its identity): a filter that reads it sees NULL.

use std::sync::Arc;

use datafusion::common::DFSchema;
use datafusion::physical_expr::PhysicalExpr;

use super::columns::{schema, Cell, ColumnType, Columns};
use super::relation::Relation;
use crate::event::Txn;

/// A predicate over transactions, planned once.
#[derive(Clone, Debug)]
pub struct TxnFilter {
    predicate: Arc<dyn PhysicalExpr>,
    schema: datafusion::arrow::datatypes::SchemaRef,
}

impl TxnFilter {
    /// Plans `predicate` (SQL) over the columns of `transactions`.
    pub fn new(predicate: &str) -> Result<TxnFilter, String> {
        let columns: Vec<(&str, ColumnType)> = Relation::Transactions.columns().to_vec();
        let schema = schema(&columns);
        let df_schema = DFSchema::try_from_qualified_schema("transactions", &schema).map_err(|e| e.to_string())?;
        let state = datafusion::execution::context::SessionContext::new().state();
        let expr = state.create_logical_expr(predicate, &df_schema).map_err(|e| e.to_string())?;
        let predicate = state.create_physical_expr(expr, &df_schema).map_err(|e| e.to_string())?;
        Ok(TxnFilter { predicate, schema })
    }

    /// For each transaction, whether it passes (a NULL or an error is no pass).
    pub fn keeps<'a>(&self, txns: impl Iterator<Item = &'a Txn>) -> Vec<bool> {
        let types: Vec<ColumnType> = Relation::Transactions.columns().iter().map(|(_, t)| *t).collect();
        let mut columns = Columns::new(&types);
        for txn in txns {
            columns.push(&[
                Cell::Null,
                Cell::Text(&txn.customer),
                Cell::Cents(i128::from(txn.cents)),
                txn.category.as_deref().map_or(Cell::Null, Cell::Text),
                txn.ts.map_or(Cell::Null, Cell::Seconds),
            ]);
        }
        let rows = columns.rows();
        let batch = columns.finish(self.schema.clone());
        let passed = self
            .predicate
            .evaluate(&batch)
            .and_then(|value| value.into_array(rows))
            .ok()
            .and_then(|array| array.as_any().downcast_ref::<datafusion::arrow::array::BooleanArray>().cloned());
        match passed {
            Some(passed) => {
                (0..rows).map(|i| datafusion::arrow::array::Array::is_valid(&passed, i) && passed.value(i)).collect()
            }
            None => {
                tracing::warn!("a view's filter could not be evaluated; its transactions are left out");
                vec![false; rows]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_reads_every_column_and_nulls_do_not_pass() {
        let filter = TxnFilter::new("category = 'books' OR ts >= '2025-01-01T00:00:00Z'").unwrap();
        let txns = [
            Txn { customer: "a".into(), cents: 1, ts: None, category: Some("books".into()) },
            Txn { customer: "b".into(), cents: 1, ts: Some(1_735_689_600), category: None },
            Txn { customer: "c".into(), cents: 1, ts: Some(1_735_689_599), category: None },
            Txn { customer: "d".into(), cents: 1, ts: None, category: None },
        ];
        assert_eq!(filter.keeps(txns.iter()), [true, true, false, false]);
        assert!(TxnFilter::new("nosuchcolumn > 1").is_err());
        assert!(TxnFilter::new("amount >").is_err());
    }
}
