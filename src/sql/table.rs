//! A relation as DataFusion sees it: a table provider whose scan reads the arrangements at the
//! statement's one time ([`super::read`]), builds only the columns the statement reads, and
//! turns the filters on the relation's key into seeks.
//!
//! | filter on the key | the scan |
//! |---|---|
//! | `customer = 'Ali'`, `customer IN ('Ali', 'Sara')` | a cursor seek per key, on the worker that holds each (`customers`) |
//! | `customer >= 'M' AND customer < 'N'` | a cursor seek to `M`, read up to `N` |
//! | `id = 't9'` (`transactions`) | a lookup of that identity in every worker's version table |
//! | anything else | every row, filtered by DataFusion above the scan |
//!
//! A seek is exact (DataFusion leaves it to the scan), so it must mean what the filter means:
//! a NULL literal seeks nothing (`x = NULL` is never true), and only text keys are sought.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::ScalarValue;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;

use super::exec::LiveScanExec;
use super::read::STATEMENT;
use crate::compute::columns::{schema, ColumnType, Owned};
use crate::compute::relation::Relation;
use crate::compute::scan::{ScanSpec, Seek};
use crate::dataflow::Time;

/// A relation of the pipeline, readable by DataFusion.
#[derive(Debug)]
pub struct LiveTable {
    relation: Relation,
    columns: Vec<(String, ColumnType)>,
    /// The column a scan can seek, when it is text.
    key: Option<usize>,
    schema: SchemaRef,
    topic: String,
    workers: usize,
    kind: TableType,
    /// A table's primary key, by column name (empty for the other relations).
    primary_key: Vec<String>,
    /// A built-in view's definition ([`super::builtin`]).
    definition: Option<&'static str>,
}

impl LiveTable {
    /// A built-in relation, read from `workers` workers; `topic` is what `offsets` names.
    pub fn built_in(relation: Relation, topic: &str, workers: usize) -> LiveTable {
        let columns: Vec<(String, ColumnType)> = relation.columns().iter().map(|(n, t)| (n.to_string(), *t)).collect();
        let key = relation.key().filter(|k| columns[*k].1 == ColumnType::Text);
        let kind = if relation == Relation::Transactions { TableType::Base } else { TableType::View };
        LiveTable::new(relation, columns, key, topic, workers, kind)
    }

    /// The same relation, a view defined by `sql` (see [`super::builtin`]).
    pub fn defined_by(self, sql: Option<&'static str>) -> LiveTable {
        LiveTable { definition: sql, ..self }
    }

    /// A created view's maintained groups, with these columns (its key first, if it has one).
    pub fn groups(id: u64, columns: Vec<(String, ColumnType)>, keyed: bool, workers: usize) -> LiveTable {
        let key = (keyed && columns.first().is_some_and(|c| c.1 == ColumnType::Text)).then_some(0);
        LiveTable::new(Relation::Groups(id), columns, key, "", workers, TableType::Temporary)
    }

    /// A table, read from `workers` workers (its primary key sought when it is one text column).
    pub fn table(def: &crate::table::TableDef, workers: usize) -> LiveTable {
        let key = match def.key.as_slice() {
            [k] if def.columns[*k].1 == ColumnType::Text => Some(*k),
            _ => None,
        };
        let mut table = LiveTable::new(Relation::Table(def.id), def.columns.clone(), key, "", workers, TableType::Base);
        table.primary_key = def.key_names().into_iter().map(String::from).collect();
        table
    }

    /// A table's primary key, by column name (empty for the other relations).
    pub fn primary_key(&self) -> &[String] {
        &self.primary_key
    }

    /// A compiled view's rows, with these columns.
    pub fn rows(id: u64, columns: Vec<(String, ColumnType)>, workers: usize) -> LiveTable {
        LiveTable::new(Relation::Rows(id), columns, None, "", workers, TableType::Temporary)
    }

    /// The relation it reads.
    pub fn relation(&self) -> Relation {
        self.relation
    }

    /// Its columns.
    pub fn columns(&self) -> &[(String, ColumnType)] {
        &self.columns
    }

    fn new(
        relation: Relation,
        columns: Vec<(String, ColumnType)>,
        key: Option<usize>,
        topic: &str,
        workers: usize,
        kind: TableType,
    ) -> LiveTable {
        let named: Vec<(&str, ColumnType)> = columns.iter().map(|(n, t)| (n.as_str(), *t)).collect();
        let schema = schema(&named);
        LiveTable {
            relation,
            columns,
            key,
            schema,
            topic: topic.to_owned(),
            workers,
            kind,
            primary_key: Vec::new(),
            definition: None,
        }
    }

    /// The seek a filter on the key means, if it is one this relation can seek.
    fn seek_of(&self, filter: &Expr) -> Option<Seek> {
        let key = &self.columns[self.key?].0;
        let ranges = self.relation != Relation::Transactions;
        seek_of(filter, key, ranges)
    }
}

/// The seek a filter on column `key` means: equality, `IN`, or (where `ranges`) a comparison
/// with a text literal.
fn seek_of(filter: &Expr, key: &str, ranges: bool) -> Option<Seek> {
    let is_key = |e: &Expr| matches!(e, Expr::Column(c) if c.name == key);
    match filter {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (op, literal) = if is_key(left) {
                (*op, text(right)?)
            } else if is_key(right) {
                (op.swap()?, text(left)?)
            } else {
                return None;
            };
            match (op, literal) {
                // `key = NULL` holds for no row.
                (Operator::Eq, None) => Some(Seek::Keys(Vec::new())),
                (Operator::Eq, Some(t)) => Some(Seek::Keys(vec![Owned::Text(t)])),
                (_, None) if ranges => Some(Seek::Keys(Vec::new())),
                (Operator::Gt, Some(t)) if ranges => {
                    Some(Seek::Range { from: Some((Owned::Text(t), false)), to: None })
                }
                (Operator::GtEq, Some(t)) if ranges => {
                    Some(Seek::Range { from: Some((Owned::Text(t), true)), to: None })
                }
                (Operator::Lt, Some(t)) if ranges => {
                    Some(Seek::Range { from: None, to: Some((Owned::Text(t), false)) })
                }
                (Operator::LtEq, Some(t)) if ranges => {
                    Some(Seek::Range { from: None, to: Some((Owned::Text(t), true)) })
                }
                _ => None,
            }
        }
        Expr::InList(list) if !list.negated && is_key(&list.expr) => {
            let values: Option<Vec<Option<String>>> = list.list.iter().map(text).collect();
            Some(Seek::Keys(values?.into_iter().flatten().map(Owned::Text).collect()))
        }
        _ => None,
    }
}

/// A text literal: `Some(text)`, `None` for a NULL one; nothing for anything else.
fn text(expr: &Expr) -> Option<Option<String>> {
    match expr {
        Expr::Literal(ScalarValue::Utf8(v) | ScalarValue::LargeUtf8(v) | ScalarValue::Utf8View(v), _) => {
            Some(v.clone())
        }
        _ => None,
    }
}

/// Both seeks at once: the keys of one that the other admits, or the tighter range.
fn both(a: Seek, b: Seek) -> Seek {
    match (a, b) {
        (Seek::All, other) | (other, Seek::All) => other,
        (Seek::Keys(keys), other) | (other, Seek::Keys(keys)) => {
            Seek::Keys(keys.into_iter().filter(|k| other.admits(k)).collect())
        }
        (Seek::Range { from: f1, to: t1 }, Seek::Range { from: f2, to: t2 }) => {
            let from = match (f1, f2) {
                (Some(a), Some(b)) => Some(if a.0 > b.0 || (a.0 == b.0 && !a.1) { a } else { b }),
                (a, b) => a.or(b),
            };
            let to = match (t1, t2) {
                (Some(a), Some(b)) => Some(if a.0 < b.0 || (a.0 == b.0 && !a.1) { a } else { b }),
                (a, b) => a.or(b),
            };
            Seek::Range { from, to }
        }
    }
}

#[async_trait]
impl TableProvider for LiveTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        self.kind
    }

    fn get_table_definition(&self) -> Option<&str> {
        self.definition
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| match self.seek_of(f) {
                Some(_) => TableProviderFilterPushDown::Exact,
                None => TableProviderFilterPushDown::Unsupported,
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let seek = filters.iter().filter_map(|f| self.seek_of(f)).fold(Seek::All, both);
        let projection = projection.cloned().unwrap_or_else(|| (0..self.columns.len()).collect());
        self.plan_scan(projection, seek, None)
    }
}

impl LiveTable {
    /// The scan of `projection` (indices into the columns; with a scan of changes, the index
    /// after them is the difference) of the rows `seek` names — or their changes since
    /// `since` — at the statement's time.
    pub fn plan_scan(&self, projection: Vec<usize>, seek: Seek, since: Option<Time>) -> Result<Arc<dyn ExecutionPlan>> {
        let snapshot = STATEMENT
            .try_with(Arc::clone)
            .map_err(|_| DataFusionError::Internal("a relation is scanned outside a statement".into()))?;
        let workers: Vec<usize> = match (&seek, self.relation) {
            // A customer lives on the worker its name hashes to.
            (Seek::Keys(keys), Relation::Customers) => {
                let mut owners: Vec<usize> = keys
                    .iter()
                    .filter_map(|k| match k {
                        Owned::Text(name) => Some(crate::dataflow::rows::customer_owner(name, self.workers)),
                        _ => None,
                    })
                    .collect();
                owners.sort_unstable();
                owners.dedup();
                owners
            }
            _ => (0..self.workers).collect(),
        };
        let spec = ScanSpec {
            relation: self.relation,
            columns: self.columns.clone(),
            projection,
            seek,
            topic: self.topic.clone(),
            since,
        };
        Ok(Arc::new(LiveScanExec::new(snapshot, spec, workers, self.workers)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{col, lit};

    fn text(t: &str) -> Owned {
        Owned::Text(t.into())
    }

    #[test]
    fn filters_on_the_key_are_seeks() {
        let seek = |e: Expr| seek_of(&e, "customer", true);
        assert_eq!(seek(col("customer").eq(lit("Ali"))), Some(Seek::Keys(vec![text("Ali")])));
        assert_eq!(seek(lit("Ali").eq(col("customer"))), Some(Seek::Keys(vec![text("Ali")])));
        assert_eq!(
            seek(col("customer").in_list(vec![lit("a"), lit("b")], false)),
            Some(Seek::Keys(vec![text("a"), text("b")]))
        );
        assert_eq!(seek(col("customer").in_list(vec![lit("a")], true)), None, "NOT IN is no seek");
        assert_eq!(seek(col("customer").gt(lit("M"))), Some(Seek::Range { from: Some((text("M"), false)), to: None }));
        assert_eq!(seek(lit("M").gt(col("customer"))), Some(Seek::Range { from: None, to: Some((text("M"), false)) }));
        assert_eq!(seek(col("customer").eq(lit(ScalarValue::Utf8(None)))), Some(Seek::Keys(vec![])), "= NULL: no row");
        assert_eq!(seek(col("total").gt(lit(5))), None);
        assert_eq!(seek_of(&col("id").gt(lit("t1")), "id", false), None, "no ranges over the version table");
    }

    #[test]
    fn seeks_on_one_key_combine() {
        let range = |f: &str, t: &str| Seek::Range { from: Some((text(f), true)), to: Some((text(t), false)) };
        assert_eq!(both(Seek::Keys(vec![text("a"), text("m")]), range("b", "z")), Seek::Keys(vec![text("m")]));
        assert_eq!(both(range("a", "y"), range("c", "z")), range("c", "y"));
        assert_eq!(both(Seek::All, range("a", "b")), range("a", "b"));
    }
}
