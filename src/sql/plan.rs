//! Planning: a SQL statement, parsed by `sqlparser`, becomes a [`Plan`] — what each worker
//! reads of its share of a relation (a seek or a scan, a filter, partial aggregates), and
//! what the reader does with the merged shares (the rest of the aggregation, `HAVING`,
//! `ORDER BY`, `LIMIT`, the select list).
//!
//! ```text
//! SELECT customer, sum(amount) FROM transactions WHERE amount >= 100 GROUP BY customer
//!   each worker: scan its live transactions at T, keep amount >= 100, sum per customer
//!   reader:      add the workers' sums per customer, select customer and the sum
//! ```

use serde::{Deserialize, Serialize};
use sqlparser::ast::{self, SelectItem};

use super::expr::Unit;
use super::expr::{Cmp, Expr};
use super::relation::Relation;
use super::translate::{boolean, check_types, coerce_times, has_aggregate, Context};
use super::value::{Type, Value};
use super::views::{FindView, ViewBody, ViewKey};
use super::SqlError;

pub use super::expr::{Agg, AggFunc};

/// Where a worker reads: everything, one key, or a range of keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Seek {
    /// Every row of the worker's share.
    Scan,
    /// The rows whose key equals this value (one worker holds it).
    Key(Value),
    /// The rows whose key is within the bounds (`(value, inclusive)`).
    Range(Option<(Value, bool)>, Option<(Value, bool)>),
}

/// What each worker does with its share of the relation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scan {
    /// The relation.
    pub relation: Relation,
    /// Seek or scan.
    pub seek: Seek,
    /// Rows kept (`WHERE`).
    pub filter: Option<Expr>,
    /// Group keys and aggregates, computed partially by each worker.
    pub group: Option<(Vec<Expr>, Vec<Agg>)>,
    /// Without grouping or ordering: no worker needs to send more than this many rows.
    pub keep: Option<usize>,
    /// The relation's columns the query reads (none: all of them).
    pub needed: Option<Vec<usize>>,
}

/// A planned `SELECT`.
#[derive(Clone, Debug, PartialEq)]
pub struct Select {
    /// What the workers do.
    pub scan: Scan,
    /// The columns of the answer: name, expression over the stage row, type. The stage
    /// row is the relation's row, or, grouped, the keys then the aggregates' results.
    pub output: Vec<(String, Expr, Type)>,
    /// `HAVING`, over the stage row.
    pub having: Option<Expr>,
    /// `ORDER BY`: expression over the stage row, descending.
    pub order: Vec<(Expr, bool)>,
    /// `OFFSET`
    pub offset: usize,
    /// `LIMIT`
    pub limit: Option<usize>,
}

/// A planned statement.
#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    /// A query.
    Select(Box<Select>),
    /// `EXPLAIN <query>`: the reads it would do.
    Explain(Box<Select>),
    /// `SHOW TABLES`
    ShowTables,
    /// `SHOW COLUMNS FROM <relation>`
    ShowColumns(Relation),
    /// `SHOW as_of`: the logical time and offsets the views are at.
    ShowAsOf,
    /// `CREATE [MATERIALIZED] VIEW name AS SELECT ...`
    CreateView {
        /// Its name.
        name: String,
        /// How it is computed.
        body: super::views::ViewBody,
        /// `IF NOT EXISTS`
        if_not_exists: bool,
    },
    /// `DROP VIEW [IF EXISTS] name, ...`
    DropView {
        /// The views.
        names: Vec<String>,
        /// `IF EXISTS`
        if_exists: bool,
    },
    /// `SHOW VIEWS`: every view, built-in and created, with its definition.
    ShowViews,
    /// A statement drivers send that changes nothing here (`BEGIN`, `COMMIT`, `ROLLBACK`,
    /// `SET`): answered with its tag. Every statement reads at its own time; a transaction
    /// does not hold one time for several.
    Nothing(&'static str),
}

/// Plans one statement, over the built-in relations only.
pub fn plan(text: &str) -> Result<Plan, SqlError> {
    plan_in(text, &())
}

/// Plans one statement, with the views `catalog` finds by name.
pub fn plan_in(text: &str, catalog: &impl FindView) -> Result<Plan, SqlError> {
    let trimmed = text.trim().trim_end_matches(';').trim();
    let words: Vec<String> = trimmed.split_whitespace().map(str::to_ascii_lowercase).collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["show", "tables"] => return Ok(Plan::ShowTables),
        ["show", "views"] => return Ok(Plan::ShowViews),
        ["show", "as_of"] => return Ok(Plan::ShowAsOf),
        ["show", "columns", "from", name] | ["describe", name] => {
            return relation(name.trim_matches('"'), catalog).map(Plan::ShowColumns);
        }
        ["begin", ..] | ["start", "transaction", ..] => return Ok(Plan::Nothing("BEGIN")),
        ["commit", ..] | ["end", ..] => return Ok(Plan::Nothing("COMMIT")),
        ["rollback", ..] | ["abort", ..] => return Ok(Plan::Nothing("ROLLBACK")),
        ["set", ..] | ["reset", ..] | ["discard", ..] | ["deallocate", ..] => return Ok(Plan::Nothing("SET")),
        [] => return Err(SqlError::syntax("empty statement", None)),
        _ => {}
    }
    let dialect = sqlparser::dialect::PostgreSqlDialect {};
    let statements =
        sqlparser::parser::Parser::parse_sql(&dialect, trimmed).map_err(|e| SqlError::parse(e, trimmed))?;
    let [statement] = <[ast::Statement; 1]>::try_from(statements)
        .map_err(|s| SqlError::unsupported(format!("{} statements at once; send one at a time", s.len())))?;
    match statement {
        ast::Statement::Query(query) => Ok(Plan::Select(Box::new(select(&query, catalog)?))),
        ast::Statement::CreateView(create) => {
            if !create.columns.is_empty() || create.or_replace || create.or_alter {
                return Err(SqlError::unsupported("column lists and OR REPLACE in CREATE VIEW"));
            }
            let name = create.name.to_string().trim_matches('"').to_owned();
            let select = select(&create.query, catalog)?;
            Ok(Plan::CreateView { name, body: view_body(&select)?, if_not_exists: create.if_not_exists })
        }
        ast::Statement::Drop {
            object_type: ast::ObjectType::View | ast::ObjectType::MaterializedView,
            if_exists,
            names,
            ..
        } => {
            let names = names.iter().map(|n| n.to_string().trim_matches('"').to_owned()).collect();
            Ok(Plan::DropView { names, if_exists })
        }
        ast::Statement::Explain { statement, .. } => match *statement {
            ast::Statement::Query(query) => Ok(Plan::Explain(Box::new(select(&query, catalog)?))),
            other => Err(SqlError::unsupported(format!("EXPLAIN of {}", statement_kind(&other)))),
        },
        other => Err(SqlError::unsupported(format!(
            "{}: the relations are read-only views of the pipeline (SELECT, SHOW and EXPLAIN are supported)",
            statement_kind(&other)
        ))),
    }
}

fn statement_kind(statement: &ast::Statement) -> String {
    let text = statement.to_string();
    text.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

fn relation(name: &str, catalog: &impl FindView) -> Result<Relation, SqlError> {
    if let Some(relation) = Relation::named(name) {
        return Ok(relation);
    }
    match catalog.find_view(name) {
        Some(def) => Ok(Relation::View(def.id)),
        None => {
            let known: Vec<&str> = Relation::ALL.iter().map(|r| r.name()).collect();
            Err(SqlError::new(
                "42P01",
                format!(
                    "relation \"{name}\" does not exist (there are {}, and the views SHOW VIEWS lists)",
                    known.join(", ")
                ),
            ))
        }
    }
}

fn select(query: &ast::Query, catalog: &impl FindView) -> Result<Select, SqlError> {
    if query.with.is_some() {
        return Err(SqlError::unsupported("WITH"));
    }
    let ast::SetExpr::Select(body) = query.body.as_ref() else {
        return Err(SqlError::unsupported("set operations and VALUES (UNION, INTERSECT, EXCEPT, VALUES)"));
    };
    if body.distinct.is_some() {
        return Err(SqlError::unsupported("DISTINCT"));
    }
    let relation = match body.from.as_slice() {
        [] => return Err(SqlError::unsupported("SELECT without FROM")),
        [from] if from.joins.is_empty() => match &from.relation {
            ast::TableFactor::Table { name, args: None, .. } => relation(name.to_string().trim_matches('"'), catalog)?,
            other => return Err(SqlError::unsupported(format!("FROM {other}"))),
        },
        _ => return Err(SqlError::unsupported("joins")),
    };
    let columns: Vec<Type> = relation.columns().iter().map(|(_, t)| *t).collect();
    let mut row = Context::Row(relation);
    let filter = body.selection.as_ref().map(|e| boolean(&row, e, "WHERE")).transpose()?;
    let group_exprs = match &body.group_by {
        ast::GroupByExpr::Expressions(exprs, modifiers) if modifiers.is_empty() => exprs.clone(),
        _ => return Err(SqlError::unsupported("GROUP BY ALL and grouping modifiers")),
    };
    // Select items, with `*` expanded.
    let mut items: Vec<(String, &ast::Expr)> = Vec::new();
    let star: Vec<ast::Expr> =
        relation.columns().iter().map(|(c, _)| ast::Expr::Identifier(ast::Ident::new(*c))).collect();
    for item in &body.projection {
        match item {
            SelectItem::UnnamedExpr(e) => items.push((column_name(e), e)),
            SelectItem::ExprWithAlias { expr, alias } => items.push((alias.value.clone(), expr)),
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => {
                for (e, (c, _)) in star.iter().zip(relation.columns()) {
                    items.push((c.to_string(), e));
                }
            }
        }
    }
    // GROUP BY a select item's position or alias, as Postgres allows.
    let group_exprs: Vec<ast::Expr> = group_exprs
        .into_iter()
        .map(|g| match &g {
            ast::Expr::Value(v) => match &v.value {
                ast::Value::Number(n, _) => n
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| items.get(i.wrapping_sub(1)))
                    .map(|(_, e)| (*e).clone())
                    .ok_or_else(|| SqlError::new("42P10", format!("GROUP BY position {n} is not in the select list"))),
                _ => Ok(g.clone()),
            },
            ast::Expr::Identifier(id) if relation.column(&id.value).is_none() => {
                Ok(items.iter().find(|(n, _)| *n == id.value).map_or(g.clone(), |(_, e)| (*e).clone()))
            }
            _ => Ok(g.clone()),
        })
        .collect::<Result<_, _>>()?;
    let aggregated = !group_exprs.is_empty()
        || body.having.is_some()
        || items.iter().any(|(_, e)| has_aggregate(e))
        || order_exprs(query).iter().any(|o| has_aggregate(&o.expr));
    let (stage, stage_types) = if aggregated {
        let keys: Vec<Expr> = group_exprs.iter().map(|e| row.expr(e)).collect::<Result<_, _>>()?;
        (Context::Grouped { relation, keys, aggs: Vec::new() }, Vec::new())
    } else {
        (row, columns.clone())
    };
    let mut stage = stage;
    let mut output = Vec::new();
    for (name, e) in &items {
        output.push((name.clone(), stage.expr(e)?));
    }
    let having = body.having.as_ref().map(|h| stage.expr(h)).transpose()?;
    // ORDER BY: an output column by position or name, or an expression over the stage row.
    let mut order = Vec::new();
    for o in order_exprs(query) {
        let descending = o.options.asc == Some(false);
        let by_output = match &o.expr {
            ast::Expr::Value(v) => match &v.value {
                ast::Value::Number(n, _) => {
                    let i: usize = n.parse().map_err(|_| SqlError::syntax(format!("ORDER BY {n}"), None))?;
                    let found = output.get(i.wrapping_sub(1)).map(|(_, e)| e.clone());
                    Some(found.ok_or_else(|| {
                        SqlError::new("42P10", format!("ORDER BY position {i} is not in the select list"))
                    })?)
                }
                _ => None,
            },
            ast::Expr::Identifier(id) => output.iter().find(|(n, _)| *n == id.value).map(|(_, e)| e.clone()),
            _ => None,
        };
        let expr = match by_output {
            Some(e) => e,
            None => stage.expr(&o.expr)?,
        };
        order.push((expr, descending));
    }
    let (offset, limit) = limits(query)?;
    let (group, stage_types) = match stage {
        Context::Grouped { keys, aggs, .. } => {
            let mut types: Vec<Type> = keys.iter().map(|k| k.ty(&columns)).collect();
            types.extend(aggs.iter().map(|a| agg_type(a, &columns)));
            (Some((keys, aggs)), types)
        }
        Context::Row(_) => (None, stage_types),
    };
    debug_assert_eq!(group.is_some(), aggregated);
    let output: Vec<(String, Expr, Type)> = output
        .into_iter()
        .map(|(name, e)| {
            let e = coerce_times(e, &stage_types);
            let ty = e.ty(&stage_types);
            (name, e, ty)
        })
        .collect();
    let order: Vec<(Expr, bool)> = order.into_iter().map(|(e, d)| (coerce_times(e, &stage_types), d)).collect();
    let having = having.map(|h| coerce_times(h, &stage_types));
    let filter = filter.map(|f| coerce_times(f, &columns));
    let group = group.map(|(keys, aggs): (Vec<Expr>, Vec<Agg>)| {
        let keys: Vec<Expr> = keys.into_iter().map(|k| coerce_times(k, &columns)).collect();
        (keys, aggs)
    });
    for (e, _) in order.iter() {
        check_types(e, &stage_types)?;
    }
    for (_, e, _) in &output {
        check_types(e, &stage_types)?;
    }
    if let Some(h) = &having {
        check_types(h, &stage_types)?;
    }
    if let Some(f) = &filter {
        check_types(f, &columns)?;
    }
    let seek = filter.as_ref().map_or(Seek::Scan, |f| seek(relation, f));
    let keep = (group.is_none() && order.is_empty()).then(|| limit.map(|l| l + offset)).flatten();
    let mut needed = Vec::new();
    filter.iter().for_each(|f| f.columns(&mut needed));
    match &group {
        Some((keys, aggs)) => {
            keys.iter().for_each(|k| k.columns(&mut needed));
            aggs.iter().filter_map(|a| a.arg.as_ref()).for_each(|a| a.columns(&mut needed));
        }
        None => {
            output.iter().for_each(|(_, e, _)| e.columns(&mut needed));
            order.iter().for_each(|(e, _)| e.columns(&mut needed));
        }
    }
    needed.sort_unstable();
    needed.dedup();
    let scan = Scan { relation, seek, filter, group, keep, needed: Some(needed) };
    Ok(Select { scan, output, having, order, offset, limit })
}

fn order_exprs(query: &ast::Query) -> Vec<ast::OrderByExpr> {
    match &query.order_by {
        Some(ast::OrderBy { kind: ast::OrderByKind::Expressions(exprs), .. }) => exprs.clone(),
        _ => Vec::new(),
    }
}

fn limits(query: &ast::Query) -> Result<(usize, Option<usize>), SqlError> {
    let number = |e: &ast::Expr, what: &str| -> Result<usize, SqlError> {
        match e {
            ast::Expr::Value(v) => match &v.value {
                ast::Value::Number(n, _) => n.parse().ok(),
                _ => None,
            },
            _ => None,
        }
        .ok_or_else(|| SqlError::new("42804", format!("{what} must be a whole number, not {e}")))
    };
    match &query.limit_clause {
        None => Ok((0, None)),
        Some(ast::LimitClause::LimitOffset { limit, offset, limit_by }) if limit_by.is_empty() => {
            let limit = match limit {
                Some(ast::Expr::Value(v)) if matches!(v.value, ast::Value::Null) => None,
                Some(e) => Some(number(e, "LIMIT")?),
                None => None,
            };
            let offset = offset.as_ref().map(|o| number(&o.value, "OFFSET")).transpose()?.unwrap_or(0);
            Ok((offset, limit))
        }
        Some(ast::LimitClause::OffsetCommaLimit { offset, limit }) => {
            Ok((number(offset, "OFFSET")?, Some(number(limit, "LIMIT")?)))
        }
        Some(_) => Err(SqlError::unsupported("LIMIT BY")),
    }
}

fn agg_type(agg: &Agg, columns: &[Type]) -> Type {
    match (agg.func, &agg.arg) {
        (AggFunc::Count, _) => Type::BigInt,
        (AggFunc::Avg, _) => Type::Numeric,
        (_, Some(arg)) => arg.ty(columns),
        (_, None) => Type::BigInt,
    }
}

/// The name Postgres gives an unnamed select item: the column's, or the function's.
fn column_name(e: &ast::Expr) -> String {
    match e {
        ast::Expr::Identifier(id) => id.value.clone(),
        ast::Expr::CompoundIdentifier(ids) => ids.last().map_or_else(String::new, |i| i.value.clone()),
        ast::Expr::Function(f) => f.name.to_string().to_ascii_lowercase(),
        ast::Expr::Nested(e) => column_name(e),
        _ => "?column?".into(),
    }
}

/// Where a filter lets the workers seek instead of scanning: the key column compared with
/// constants, in the `AND`ed conditions of the filter. The filter still applies after.
fn seek(relation: Relation, filter: &Expr) -> Seek {
    let Some(key) = relation.key() else { return Seek::Scan };
    let mut conjuncts = Vec::new();
    flatten_and(filter, &mut conjuncts);
    let mut lower: Option<(Value, bool)> = None;
    let mut upper: Option<(Value, bool)> = None;
    for c in conjuncts {
        let (op, value) = match c {
            Expr::Compare(op, a, b) => match (a.as_ref(), b.as_ref()) {
                (Expr::Column(k), Expr::Literal(v)) if *k == key => (*op, v.clone()),
                (Expr::Literal(v), Expr::Column(k)) if *k == key => (op.flipped(), v.clone()),
                _ => continue,
            },
            Expr::Between(e, l, h, false) => match (e.as_ref(), l.as_ref(), h.as_ref()) {
                (Expr::Column(k), Expr::Literal(l), Expr::Literal(h)) if *k == key => {
                    lower = Some((l.clone(), true));
                    upper = Some((h.clone(), true));
                    continue;
                }
                _ => continue,
            },
            _ => continue,
        };
        if !matches!(value, Value::Text(_)) {
            continue;
        }
        match op {
            Cmp::Eq => return Seek::Key(value),
            Cmp::Gt => lower = Some((value, false)),
            Cmp::Ge => lower = Some((value, true)),
            Cmp::Lt => upper = Some((value, false)),
            Cmp::Le => upper = Some((value, true)),
            Cmp::Ne => {}
        }
    }
    // Only customers keep their keys in order; transactions are hashed by id.
    if (lower.is_some() || upper.is_some()) && relation == Relation::Customers {
        Seek::Range(lower, upper)
    } else {
        Seek::Scan
    }
}

fn flatten_and<'a>(e: &'a Expr, out: &mut Vec<&'a Expr>) {
    match e {
        Expr::And(a, b) => {
            flatten_and(a, out);
            flatten_and(b, out);
        }
        other => out.push(other),
    }
}

/// Turns a planned `SELECT` into a view's body, or says which construct a view cannot have.
pub fn view_body(select: &Select) -> Result<ViewBody, SqlError> {
    let unsupported = |what: &str| Err(SqlError::unsupported(format!("{what} in a view")));
    if !select.order.is_empty() || select.limit.is_some() || select.offset > 0 {
        return unsupported("ORDER BY, LIMIT or OFFSET");
    }
    let scan = &select.scan;
    let columns: Result<Vec<(String, usize)>, SqlError> = select
        .output
        .iter()
        .map(|(name, e, _)| match e {
            Expr::Column(i) => Ok((name.clone(), *i)),
            other => Err(SqlError::unsupported(format!(
                "the expression {other:?} as a column of a view (name a column or an aggregate)"
            ))),
        })
        .collect();
    let columns = columns?;
    if let Some((name, _)) = columns
        .iter()
        .enumerate()
        .find_map(|(i, (n, _))| columns[..i].iter().find(|(m, _)| m.eq_ignore_ascii_case(n)).map(|c| (c.0.clone(), i)))
    {
        return Err(SqlError::new("42701", format!("column \"{name}\" specified more than once (name it with AS)")));
    }
    // A sink writes each row as JSON with its logical `time` beside the columns: a column of
    // that name would be overwritten there (and dropped when the sink reads its topic back).
    if let Some((name, _)) = columns.iter().find(|(n, _)| n.eq_ignore_ascii_case("time")) {
        return Err(SqlError::new(
            "42939",
            format!("column name \"{name}\" is reserved for the logical time of a view's changes (name it with AS)"),
        ));
    }
    match (&scan.group, scan.relation) {
        (None, Relation::Transactions) => {
            unsupported("a view of single transactions (group them, or query transactions)")
        }
        (None, base) => {
            if select.having.is_some() {
                return unsupported("HAVING without GROUP BY");
            }
            Ok(ViewBody::Filter { base, filter: scan.filter.clone(), columns })
        }
        (Some(_), relation) if relation != Relation::Transactions => {
            unsupported("GROUP BY over another view (group the transactions)")
        }
        (Some((keys, aggs)), _) => {
            let key = match keys.as_slice() {
                [] => ViewKey::Nothing,
                [Expr::Column(1)] => ViewKey::Customer,
                [Expr::Column(3)] => ViewKey::Category,
                [Expr::DateTrunc(Unit::Hour, ts)] if **ts == Expr::Column(4) => ViewKey::Hour,
                [Expr::DateTrunc(Unit::Day, ts)] if **ts == Expr::Column(4) => ViewKey::Day,
                _ => return unsupported("a GROUP BY other than customer, category or date_trunc('hour' | 'day', ts)"),
            };
            let mut funcs = Vec::new();
            for agg in aggs {
                match (&agg.arg, agg.func) {
                    (None, AggFunc::Count) | (Some(Expr::Column(2)), _) => funcs.push(agg.func),
                    _ => return unsupported("an aggregate of something else than amount (or count(*))"),
                }
            }
            if let Some(filter) = &scan.filter {
                let mut read = Vec::new();
                filter.columns(&mut read);
                if read.contains(&0) {
                    return unsupported("a filter on id");
                }
            }
            Ok(ViewBody::Aggregate {
                filter: scan.filter.clone(),
                key,
                aggs: funcs,
                having: select.having.clone(),
                columns,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{plan, Plan};

    #[test]
    fn a_view_column_cannot_be_named_time() {
        for name in ["time", "\"Time\""] {
            let sql =
                format!("CREATE VIEW v AS SELECT customer, count(*) AS {name} FROM transactions GROUP BY customer");
            let error = plan(&sql).err().unwrap_or_else(|| panic!("{sql} was accepted"));
            assert_eq!(error.code, "42939", "{}", error.message);
        }
        let sql = "CREATE VIEW v AS SELECT customer, count(*) AS times FROM transactions GROUP BY customer";
        assert!(matches!(plan(sql), Ok(Plan::CreateView { .. })));
    }
}
