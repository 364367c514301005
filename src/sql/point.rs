//! The commonest statement, a point lookup on a relation's key, answered without planning.
//!
//! DataFusion plans every statement afresh — its logical plan, some forty optimizer passes,
//! the physical plan — which costs a point lookup several times what reading the row does.
//! A statement of exactly this shape skips the planner and runs the very scan DataFusion
//! would run ([`super::table::LiveTable::scan`] with the same filter, so the same seek on the
//! worker that holds the key):
//!
//! ```text
//! SELECT <column [AS name], … | *> FROM <customers | transactions | categories>
//! WHERE <the key> = <'text' | $n | a concatenation of them and whole numbers>
//! ```
//!
//! `SELECT customer, total, count FROM customers WHERE customer = 'customer-0' || $1` is one
//! (pgbench's prepared point query). Anything else — another clause, a qualified or quoted
//! name, a parenthesis, a NULL parameter — goes to DataFusion. The recognizer compares the
//! statement as sqlparser prints it with the shape it rebuilt, so a clause it does not know
//! cannot slip through. `tests/it/sql_differential.rs` checks that every point lookup answers
//! exactly what DataFusion answers for the same lookup written so that this path does not
//! take it.

use std::sync::Arc;

use datafusion::common::{ParamValues, ScalarValue};
use datafusion::datasource::TableProvider;
use datafusion::logical_expr::{col, lit};
use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, SelectItem, SetExpr, Statement, TableFactor, Value, WildcardAdditionalOptions,
};

use super::table::LiveTable;
use super::{Answer, Engine, SqlError};
use crate::compute::relation::Relation;

/// A recognized point lookup.
#[derive(Debug, PartialEq)]
pub struct Point {
    relation: Relation,
    /// The relation's columns read, in the answer's order, with the names they are answered as.
    columns: Vec<(usize, String)>,
    key_column: String,
    key: Vec<Part>,
}

/// A part of the key's value, concatenated.
#[derive(Debug, PartialEq)]
enum Part {
    Text(String),
    /// `$n` (from 1).
    Param(usize),
}

/// The point lookup `statement` is, if it is one (see the module's documentation).
pub fn recognize(statement: &Statement) -> Option<Point> {
    let Statement::Query(query) = statement else { return None };
    let SetExpr::Select(select) = query.body.as_ref() else { return None };
    let [from] = select.from.as_slice() else { return None };
    let TableFactor::Table { name, alias: None, args: None, .. } = &from.relation else { return None };
    let [name] = name.0.as_slice() else { return None };
    let name = name.as_ident().filter(|i| i.quote_style.is_none())?.value.to_lowercase();
    let relation = Relation::named(&name)
        .filter(|r| matches!(r, Relation::Customers | Relation::Transactions | Relation::Categories))?;
    let all = relation.columns();
    let key_column = all[relation.key()?].0;
    let unquoted = |e: &Expr| match e {
        Expr::Identifier(i) if i.quote_style.is_none() => {
            let lower = i.value.to_lowercase();
            all.iter().position(|(n, _)| *n == lower)
        }
        _ => None,
    };
    let mut columns = Vec::new();
    for item in &select.projection {
        match item {
            SelectItem::Wildcard(options) if *options == WildcardAdditionalOptions::default() => {
                columns.extend(all.iter().enumerate().map(|(i, (n, _))| (i, n.to_string())))
            }
            SelectItem::UnnamedExpr(e) => {
                let i = unquoted(e)?;
                columns.push((i, all[i].0.to_owned()));
            }
            SelectItem::ExprWithAlias { expr, alias } if alias.quote_style.is_none() => {
                columns.push((unquoted(expr)?, alias.value.to_lowercase()))
            }
            _ => return None,
        }
    }
    // DataFusion refuses two columns of one name; it says so.
    let mut names: Vec<&str> = columns.iter().map(|(_, n)| n.as_str()).collect();
    names.sort_unstable();
    if names.windows(2).any(|w| w[0] == w[1]) {
        return None;
    }
    let Some(Expr::BinaryOp { left, op: BinaryOperator::Eq, right }) = &select.selection else { return None };
    if unquoted(left) != relation.key() {
        return None;
    }
    let mut key = Vec::new();
    parts(right, &mut key)?;
    // The statement must be exactly this shape, nothing more: printed, it reads the same.
    let shape = format!(
        "SELECT {} FROM {} WHERE {} = {}",
        select.projection.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
        from.relation,
        left,
        right
    );
    (statement.to_string() == shape).then_some(Point { relation, columns, key_column: key_column.to_owned(), key })
}

/// The key expression's parts, if it is made only of text, whole numbers and parameters.
fn parts(expr: &Expr, out: &mut Vec<Part>) -> Option<()> {
    match expr {
        Expr::BinaryOp { left, op: BinaryOperator::StringConcat, right } => {
            parts(left, out)?;
            parts(right, out)
        }
        Expr::Value(v) => {
            match &v.value {
                Value::SingleQuotedString(s) => out.push(Part::Text(s.clone())),
                Value::Number(n, false) if n.parse::<i64>().is_ok() => out.push(Part::Text(n.to_string())),
                Value::Placeholder(p) => out.push(Part::Param(p.strip_prefix('$')?.parse().ok().filter(|n| *n > 0)?)),
                _ => return None,
            }
            Some(())
        }
        _ => None,
    }
}

impl Point {
    /// The key sought, its parameters bound to `params`; `None` when one cannot be (a NULL,
    /// a value that is not text or a whole number), for DataFusion to answer.
    pub fn key(&self, params: Option<&ParamValues>) -> Option<String> {
        let mut key = String::new();
        for part in &self.key {
            match part {
                Part::Text(t) => key.push_str(t),
                Part::Param(n) => {
                    let Some(ParamValues::List(values)) = params else { return None };
                    match values.get(n - 1).map(|v| v.value()) {
                        Some(
                            ScalarValue::Utf8(Some(s))
                            | ScalarValue::LargeUtf8(Some(s))
                            | ScalarValue::Utf8View(Some(s)),
                        ) => key.push_str(s),
                        Some(ScalarValue::Int64(Some(i))) => key.push_str(&i.to_string()),
                        Some(ScalarValue::Int32(Some(i))) => key.push_str(&i.to_string()),
                        _ => return None,
                    }
                }
            }
        }
        // A text literal alone is the key; a concatenation with a number is text too.
        Some(key)
    }

    /// Reads the row(s) of `key`, at the statement's time (run within its snapshot).
    pub async fn answer(&self, engine: &Engine, key: String) -> Result<Answer, SqlError> {
        let table = LiveTable::built_in(self.relation, &engine.shared.topic, engine.shared.workers);
        let projection: Vec<usize> = self.columns.iter().map(|(i, _)| *i).collect();
        let filter = col(self.key_column.as_str()).eq(lit(key));
        let state = &engine.shared.point_state;
        let fail = |e: datafusion::error::DataFusionError| SqlError::from_datafusion(e, "");
        let plan = table.scan(state, Some(&projection), &[filter], None).await.map_err(fail)?;
        let batches = datafusion::physical_plan::collect(plan, state.task_ctx()).await.map_err(fail)?;
        // Named as asked (`AS`), typed as the relation's columns are.
        let fields: Vec<_> = self
            .columns
            .iter()
            .map(|(i, name)| table.schema().field(*i).as_ref().clone().with_name(name.clone()))
            .collect();
        let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(fields));
        let batches = batches
            .into_iter()
            .map(|b| datafusion::arrow::record_batch::RecordBatch::try_new(schema.clone(), b.columns().to_vec()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| SqlError::Internal(e.to_string()))?;
        let rows = batches.iter().map(|b| b.num_rows()).sum();
        let bytes = batches.iter().map(|b| b.get_array_memory_size()).sum();
        engine.within_limits(rows, bytes)?;
        Ok(Answer { schema, batches, as_of: None, tag: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(sql: &str) -> Option<Point> {
        let dialect = datafusion::sql::sqlparser::dialect::PostgreSqlDialect {};
        let statement = datafusion::sql::sqlparser::parser::Parser::parse_sql(&dialect, sql).unwrap().remove(0);
        recognize(&statement)
    }

    #[test]
    fn point_lookups_are_recognized_and_nothing_else() {
        let p = point("SELECT customer, total AS t FROM customers WHERE customer = 'Ali'").unwrap();
        assert_eq!(p.columns, vec![(0, "customer".to_string()), (1, "t".to_string())]);
        assert_eq!(p.key(None).as_deref(), Some("Ali"));
        let p = point("select * from transactions where id = 't' || $1").unwrap();
        assert_eq!(p.columns.len(), 5);
        let params = ParamValues::List(vec![ScalarValue::Int64(Some(9)).into()]);
        assert_eq!(p.key(Some(&params)).as_deref(), Some("t9"));
        assert_eq!(p.key(Some(&ParamValues::List(vec![ScalarValue::Utf8(None).into()]))), None);
        assert!(point("SELECT customer FROM customers WHERE customer = 'customer-0' || 12345").is_some());
        for other in [
            "SELECT customer FROM customers WHERE (customer = 'Ali')",
            "SELECT customer, customer FROM customers WHERE customer = 'Ali'",
            "SELECT customer FROM customers WHERE customer = 'Ali' LIMIT 0",
            "SELECT customer FROM customers WHERE customer = 'Ali' ORDER BY 1",
            "SELECT DISTINCT customer FROM customers WHERE customer = 'Ali'",
            "SELECT customer FROM customers c WHERE customer = 'Ali'",
            "SELECT customers.customer FROM customers WHERE customer = 'Ali'",
            "SELECT \"Customer\" FROM customers WHERE customer = 'Ali'",
            "SELECT customer FROM customers WHERE total = 5",
            "SELECT customer FROM customers WHERE customer = 'Ali' OR customer = 'Li'",
            "SELECT customer FROM customers WHERE customer = NULL",
            "SELECT customer FROM customers WHERE customer = 1.5",
            "SELECT count(*) FROM customers WHERE customer = 'Ali'",
            "SELECT customer FROM customers, categories WHERE customer = 'Ali'",
            "SELECT hour FROM hourly WHERE hour = 'x'",
            "WITH c AS (SELECT 1) SELECT customer FROM customers WHERE customer = 'Ali'",
            "SELECT customer FROM customers WHERE customer = 'Ali' UNION SELECT 'x'",
        ] {
            assert_eq!(point(other), None, "{other}");
        }
    }
}
