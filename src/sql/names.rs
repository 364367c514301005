//! The names Postgres gives the columns of a `SELECT` that does not name them, given before
//! DataFusion plans it (which would name them after the whole expression).
//!
//! | select item | Postgres | DataFusion alone |
//! |---|---|---|
//! | `sum(amount)` | `sum` | `sum(transactions.amount)` |
//! | `count(*)` | `count` | `count(*)` |
//! | `amount::text` | `amount` | `transactions.amount` |
//! | `CASE … END` | `case` | `CASE WHEN … END` |
//! | `amount * 2`, `1` | `?column?` | `transactions.amount * Int64(2)` |
//!
//! so that `SELECT category, count(*), sum(amount) FROM transactions GROUP BY category`
//! answers the columns `category, count, sum` — what psql, pandas and the views' files show.
//! A name another column of the same `SELECT` already has is not given again (DataFusion
//! wants them unique): that column keeps DataFusion's name.

use std::collections::HashSet;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{Expr, Ident, Query, SelectItem, SetExpr, Statement, VisitMut, VisitorMut};

/// Names the unnamed columns of every `SELECT` of `statement` as Postgres does.
pub fn postgres_names(statement: &mut Statement) {
    let _ = statement.visit(&mut Namer);
}

struct Namer;

impl VisitorMut for Namer {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        name_set(&mut query.body);
        ControlFlow::Continue(())
    }
}

/// The left-most `SELECT` of a set operation names its columns.
fn name_set(body: &mut SetExpr) {
    match body {
        SetExpr::Select(select) => name_items(&mut select.projection),
        SetExpr::SetOperation { left, .. } => name_set(left),
        _ => {}
    }
}

fn name_items(items: &mut [SelectItem]) {
    let mut taken: HashSet<String> = items
        .iter()
        .filter_map(|item| match item {
            SelectItem::ExprWithAlias { alias, .. } => Some(alias.value.clone()),
            SelectItem::UnnamedExpr(e) => column_name(e),
            _ => None,
        })
        .collect();
    for item in items.iter_mut() {
        let SelectItem::UnnamedExpr(expr) = item else { continue };
        if column_name(expr).is_some() {
            continue;
        }
        let name = figure(expr).unwrap_or_else(|| "?column?".to_owned());
        if taken.insert(name.clone()) {
            let expr = std::mem::replace(expr, Expr::value(datafusion::sql::sqlparser::ast::Value::Null));
            *item = SelectItem::ExprWithAlias { expr, alias: Ident::with_quote('"', name) };
        }
    }
}

/// The name of a plain column reference (which DataFusion already names so).
fn column_name(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Identifier(ident) => Some(ident.value.clone()),
        Expr::CompoundIdentifier(parts) => parts.last().map(|i| i.value.clone()),
        _ => None,
    }
}

/// Postgres' name for an expression, if it has one other than `?column?`.
fn figure(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => column_name(expr),
        Expr::Function(f) => f.name.0.last().and_then(|part| part.as_ident()).map(|i| i.value.to_lowercase()),
        Expr::Cast { expr, data_type, .. } => {
            figure(expr).or_else(|| Some(data_type.to_string().to_lowercase().split('(').next()?.trim().to_owned()))
        }
        Expr::Nested(inner) => figure(inner),
        Expr::Case { .. } => Some("case".into()),
        Expr::Exists { .. } => Some("exists".into()),
        Expr::Extract { .. } => Some("extract".into()),
        Expr::Substring { .. } => Some("substring".into()),
        Expr::Trim { .. } => Some("btrim".into()),
        Expr::Position { .. } => Some("position".into()),
        Expr::Ceil { .. } => Some("ceil".into()),
        Expr::Floor { .. } => Some("floor".into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(sql: &str) -> String {
        let dialect = datafusion::sql::sqlparser::dialect::PostgreSqlDialect {};
        let mut statement = datafusion::sql::sqlparser::parser::Parser::parse_sql(&dialect, sql).unwrap().remove(0);
        postgres_names(&mut statement);
        statement.to_string()
    }

    #[test]
    fn unnamed_columns_are_named_as_postgres_names_them() {
        assert_eq!(
            named("SELECT category, count(*), sum(amount), amount::text, amount * 2, 1 FROM t GROUP BY 1"),
            "SELECT category, count(*) AS \"count\", sum(amount) AS \"sum\", amount::TEXT AS \"amount\", amount * 2 AS \"?column?\", 1 FROM t GROUP BY 1"
        );
    }

    #[test]
    fn a_name_is_given_once_and_subqueries_are_named_too() {
        assert_eq!(
            named("SELECT min(a), min(b), x.count FROM (SELECT count(*) FROM t) AS x"),
            "SELECT min(a) AS \"min\", min(b), x.count FROM (SELECT count(*) AS \"count\" FROM t) AS x"
        );
        assert_eq!(named("SELECT sum(a) AS total FROM t"), "SELECT sum(a) AS total FROM t");
    }
}
