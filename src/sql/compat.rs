//! Parsing a statement: the user's queries as written, the clients' catalog queries made
//! plannable.
//!
//! `datafusion-pg-catalog`'s parser makes the queries psql, DBeaver, Metabase and the drivers
//! send about `pg_catalog` plannable by rewriting them — and some rewrites change what a query
//! means: a scalar subquery in a select list becomes `NULL` (or gets a `LIMIT 1`). So only a
//! statement that reads the catalog (names a `pg_…` relation or function, `information_schema`,
//! an oid type) goes through it; any other is parsed as written, with only the rewrites that
//! keep its meaning (`= ANY(array)`, `pg_catalog.`-qualified function names, `COLLATE`,
//! `current_user`). `SELECT c.customer, (SELECT count(*) FROM transactions t WHERE
//! t.customer = c.customer) FROM customers c` answers each customer's count.
//!
//! Before pg-catalog's parser, two shapes it leaves unplannable are rewritten here:
//!
//! | written | planned as | sent by |
//! |---|---|---|
//! | `to_regtype($1)` | `$1::regtype` (which pg-catalog looks up in `pg_type`) | psycopg's type lookup, on every SQLAlchemy connect |
//! | `typinput = 'pg_catalog.array_in'::regproc` | `typinput = 'array_in'` | DBeaver's type browsing |
//! | `array(SELECT 'toast.' \|\| x FROM unnest(a) x)` | `prefix_each('toast.', a)` | psql's `\d+` |
//! | `c.reloptions` | `NULL::text[]` (no relation has storage options; pg-catalog's `pg_class` has no such column) | psql's `\d+` |
//! | `pg_table_is_visible(c.oid)` | `c.oid IN (`the relations of `public` and `pg_catalog)` | psql's `\dt`, SQLAlchemy's `get_view_names` |
//!
//! (pg-catalog's own `pg_table_is_visible` says yes to every relation, `information_schema`'s
//! too, which is not on the search path: SQLAlchemy then lists `information_schema.tables`
//! among the views of `public`.)
//!
//! pg-catalog keeps `regproc` columns as the function's name, so a `regproc` literal compared
//! with one compares names. Only statements that mention one of these are parsed twice.

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion_pg_catalog::sql::rules::{self as pg, SqlStatementRewriteRule};
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;

use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Statement, Value, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// What parses statements (see the module's documentation).
pub struct Parsers {
    catalog: PostgresCompatibilityParser,
    plain: Vec<Arc<dyn SqlStatementRewriteRule>>,
}

impl Default for Parsers {
    fn default() -> Self {
        Parsers {
            catalog: PostgresCompatibilityParser::new(),
            plain: vec![
                Arc::new(pg::RewriteArrayAnyAllOperation),
                Arc::new(pg::StripCallableQualifier),
                Arc::new(pg::CurrentUserVariableToSessionUserFunctionCall),
                Arc::new(pg::StripCollate),
            ],
        }
    }
}

impl Parsers {
    /// The statements of `text`; the error says what is wrong, and where.
    pub fn parse(&self, text: &str) -> Result<Vec<Statement>, String> {
        if reads_catalog(text) {
            let rewritten = rewrite(text);
            return self.catalog.parse(rewritten.as_deref().unwrap_or(text)).map_err(|e| {
                // Its errors lose the line and column; sqlparser's own say where.
                plain(text).err().unwrap_or_else(|| e.to_string())
            });
        }
        let statements = plain(text)?;
        Ok(statements.into_iter().map(|s| self.plain.iter().fold(s, |s, rule| rule.rewrite(s))).collect())
    }
}

/// Parsed as written (Postgres' dialect).
fn plain(text: &str) -> Result<Vec<Statement>, String> {
    Parser::new(&PostgreSqlDialect {})
        .with_recursion_limit(64)
        .try_with_sql(text)
        .and_then(|mut p| p.parse_statements())
        .map_err(|e| e.to_string())
}

/// Whether a statement reads the catalog: names a `pg_` relation or function,
/// `information_schema`, or an oid type.
fn reads_catalog(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    ["pg_", "information_schema", "regclass", "regtype", "regproc", "regnamespace", "::oid", "to_regtype"]
        .iter()
        .any(|name| lower.contains(name))
}

/// `text`, rewritten if it needs to be (see the module's documentation).
fn rewrite(text: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    if !["regproc", "to_regtype", "pg_table_is_visible", "array(", "reloptions"].iter().any(|name| lower.contains(name))
    {
        return None;
    }
    let mut statements =
        Parser::new(&PostgreSqlDialect {}).with_recursion_limit(64).try_with_sql(text).ok()?.parse_statements().ok()?;
    let mut changed = Changed(false);
    for statement in &mut statements {
        let _ = statement.visit(&mut changed);
    }
    changed.0.then(|| statements.iter().map(Statement::to_string).collect::<Vec<_>>().join("; "))
}

struct Changed(bool);

impl VisitorMut for Changed {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        match expr {
            Expr::CompoundIdentifier(parts)
                if parts.last().is_some_and(|p| p.value.eq_ignore_ascii_case("reloptions")) =>
            {
                if let Ok(null) = Parser::new(&PostgreSqlDialect {})
                    .try_with_sql("CAST(NULL AS TEXT[])")
                    .and_then(|mut p| p.parse_expr())
                {
                    *expr = null;
                    self.0 = true;
                }
            }
            Expr::Cast { expr: inner, data_type, .. } if type_is(&data_type.to_string(), "regproc") => {
                if let Expr::Value(value) = inner.as_ref() {
                    if let Value::SingleQuotedString(name) = &value.value {
                        let bare = name.strip_prefix("pg_catalog.").unwrap_or(name).to_owned();
                        *expr = Expr::value(Value::SingleQuotedString(bare));
                        self.0 = true;
                    }
                }
            }
            Expr::Function(f) if type_is(&f.name.to_string(), "pg_table_is_visible") => {
                if let FunctionArguments::List(list) = &f.args {
                    if let [FunctionArg::Unnamed(FunctionArgExpr::Expr(arg))] = list.args.as_slice() {
                        *expr = Expr::InSubquery {
                            expr: Box::new(arg.clone()),
                            subquery: visible_relations(),
                            negated: false,
                        };
                        self.0 = true;
                    }
                }
            }
            Expr::Function(f) if f.name.to_string().eq_ignore_ascii_case("array") => {
                if let FunctionArguments::Subquery(query) = &f.args {
                    if let Some((prefix, array)) = prefixed_elements(query) {
                        let call = format!("prefix_each('{}', {array})", prefix.replace('\'', "''"));
                        if let Ok(call) =
                            Parser::new(&PostgreSqlDialect {}).try_with_sql(&call).and_then(|mut p| p.parse_expr())
                        {
                            *expr = call;
                            self.0 = true;
                            return ControlFlow::Continue(());
                        }
                    }
                }
            }
            Expr::Function(f) if f.name.to_string().eq_ignore_ascii_case("to_regtype") => {
                if let FunctionArguments::List(list) = &f.args {
                    if let [FunctionArg::Unnamed(FunctionArgExpr::Expr(arg))] = list.args.as_slice() {
                        let data_type = datafusion::sql::sqlparser::ast::DataType::Custom(
                            datafusion::sql::sqlparser::ast::ObjectName::from(vec![
                                datafusion::sql::sqlparser::ast::Ident::new("regtype"),
                            ]),
                            vec![],
                        );
                        *expr = Expr::Cast {
                            kind: datafusion::sql::sqlparser::ast::CastKind::DoubleColon,
                            expr: Box::new(arg.clone()),
                            data_type,
                            array: false,
                            format: None,
                        };
                        self.0 = true;
                    }
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

/// `SELECT '<prefix>' || x FROM unnest(<array>) x`: the prefix and the array.
fn prefixed_elements(query: &datafusion::sql::sqlparser::ast::Query) -> Option<(String, Expr)> {
    use datafusion::sql::sqlparser::ast::{BinaryOperator, SelectItem, SetExpr, TableFactor};
    let SetExpr::Select(select) = query.body.as_ref() else { return None };
    let [SelectItem::UnnamedExpr(Expr::BinaryOp { left, op: BinaryOperator::StringConcat, right })] =
        select.projection.as_slice()
    else {
        return None;
    };
    let (Expr::Value(prefix), Expr::Identifier(element)) = (left.as_ref(), right.as_ref()) else { return None };
    let Value::SingleQuotedString(prefix) = &prefix.value else { return None };
    let [from] = select.from.as_slice() else { return None };
    let (alias, array) = match &from.relation {
        TableFactor::UNNEST { alias: Some(alias), array_exprs, .. } => match array_exprs.as_slice() {
            [array] => (alias, array.clone()),
            _ => return None,
        },
        // `pg_catalog.unnest(a) x`: a table function.
        TableFactor::Table { name, alias: Some(alias), args: Some(args), .. }
            if name.0.last().and_then(|p| p.as_ident()).is_some_and(|i| i.value.eq_ignore_ascii_case("unnest")) =>
        {
            match args.args.as_slice() {
                [FunctionArg::Unnamed(FunctionArgExpr::Expr(array))] => (alias, array.clone()),
                _ => return None,
            }
        }
        _ => return None,
    };
    let plain = from.joins.is_empty() && select.selection.is_none() && alias.name.value == element.value;
    plain.then(|| (prefix.clone(), array))
}

/// The oids of the relations on the search path.
fn visible_relations() -> Box<datafusion::sql::sqlparser::ast::Query> {
    let sql = "SELECT visible_c.oid FROM pg_catalog.pg_class visible_c \
               JOIN pg_catalog.pg_namespace visible_n ON visible_n.oid = visible_c.relnamespace \
               WHERE visible_n.nspname IN ('public', 'pg_catalog')";
    match Parser::parse_sql(&PostgreSqlDialect {}, sql).map(|mut s| s.remove(0)) {
        Ok(Statement::Query(query)) => query,
        _ => unreachable!("a query that parses"),
    }
}

fn type_is(written: &str, name: &str) -> bool {
    let lower = written.to_ascii_lowercase();
    lower == name || lower == format!("pg_catalog.{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_shapes_are_rewritten_and_others_left_alone() {
        assert_eq!(
            rewrite("SELECT typinput='pg_catalog.array_in'::regproc FROM pg_type").as_deref(),
            Some("SELECT typinput = 'array_in' FROM pg_type")
        );
        assert_eq!(
            rewrite("SELECT oid FROM pg_type WHERE oid = to_regtype($1)").as_deref(),
            Some("SELECT oid FROM pg_type WHERE oid = $1::regtype")
        );
        assert_eq!(
            rewrite("SELECT relname FROM pg_class c WHERE pg_catalog.pg_table_is_visible(c.oid)").as_deref(),
            Some("SELECT relname FROM pg_class c WHERE c.oid IN (SELECT visible_c.oid FROM pg_catalog.pg_class visible_c JOIN pg_catalog.pg_namespace visible_n ON visible_n.oid = visible_c.relnamespace WHERE visible_n.nspname IN ('public', 'pg_catalog'))")
        );
        assert_eq!(
            rewrite("SELECT array(select 'toast.' || x from pg_catalog.unnest(tc.options) x) FROM pg_class tc")
                .as_deref(),
            Some("SELECT prefix_each('toast.', tc.options) FROM pg_class tc")
        );
        assert_eq!(rewrite("SELECT * FROM customers"), None);
    }

    #[test]
    fn a_query_that_does_not_read_the_catalog_keeps_its_meaning() {
        let parsers = Parsers::default();
        let q =
            "SELECT c.customer, (SELECT count(*) FROM transactions t WHERE t.customer = c.customer) FROM customers c";
        assert_eq!(parsers.parse(q).unwrap()[0].to_string(), q);
        let catalog =
            "SELECT c.relname, (SELECT count(*) FROM pg_attribute a WHERE a.attrelid = c.oid) FROM pg_class c";
        assert!(parsers.parse(catalog).unwrap()[0].to_string().contains("pg_catalog.pg_class"));
        assert!(parsers.parse("SELEC 1").unwrap_err().contains("Line: 1, Column: 1"));
    }
}
