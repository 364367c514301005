//! `CREATE TABLE` and `DROP TABLE`: a table's statement read into its definition
//! ([`crate::table::TableDef`]), installed on every worker, registered with DataFusion under
//! its name and kept in the catalog — and, at a restart, registered and installed again.
//!
//! ```sql
//! CREATE TABLE customer_info (customer text, city text, segment text, PRIMARY KEY (customer))
//! WITH (connector = 'kafka', topic = 'customer-info', path = 'datasets/customers.csv')
//! ```
//!
//! | option | meaning |
//! |---|---|
//! | `connector` | `'kafka'` (needs `topic`) or `'file'` (needs `path`); may be left out when `topic` or `path` says it |
//! | `topic` | the topic its changes come from, read from its first offset |
//! | `path` | a file loaded as its initial collection: CSV with a header (`.csv`), a JSON array, or JSON lines |
//! | `format` | `'json'` (a topic's messages), or the file's: `'csv'`, `'json'` — checked, never guessed otherwise |
//! | `connector = 'nexmark'` | fed by the Nexmark generator in process ([`crate::table::nexmark`]), with `stream` (the table's name by default), `events`, `corrections`, `deletes`, `seed` |
//!
//! A table needs a `PRIMARY KEY`: its rows are replaced and deleted by key. `DROP TABLE` is
//! refused while a view reads the table.

use std::sync::Arc;

use datafusion::sql::sqlparser::ast::{
    ColumnOption, CreateTable, CreateTableOptions, Expr, SqlOption, TableConstraint,
};

use super::ddl::{check_name, Reserved};
use super::{Answer, Engine, SqlError};
use crate::compute::columns::ColumnType;
use crate::compute::relation::Relation;
use crate::table::TableDef;

/// Answers `CREATE TABLE`.
pub(super) async fn create(engine: &Engine, create: &CreateTable, text: &str) -> Result<Answer, SqlError> {
    let name = create.name.to_string().trim_matches('"').to_lowercase();
    check_name(&name)?;
    let sql = text.trim().trim_end_matches(';').to_owned();
    // Read whole before the name is held: a statement that is wrong changes nothing.
    let mut def = definition(create, 0, &name, sql)?;
    let taken =
        Relation::named(&name).is_some() || !engine.catalog().lock().unwrap_or_else(|p| p.into_inner()).reserve(&name);
    if taken {
        if create.if_not_exists {
            return Ok(Answer::tag("CREATE TABLE"));
        }
        return Err(SqlError::DuplicateRelation(format!("relation \"{name}\" already exists")));
    }
    let _held = Reserved { engine, name: name.clone() };
    def.id = engine.catalog().lock().unwrap_or_else(|p| p.into_inner()).next_id();
    let serving = engine.serving();
    let time = serving.create_table(def.clone(), engine.limits().timeout).await.map_err(SqlError::from_read)?;
    if let Err(error) = super::ddl::complete_through(engine, time).await {
        tracing::warn!(table = %name, %error, "a created table's first time is not complete yet");
    }
    register(engine, &def)?;
    let kept = engine.catalog().lock().unwrap_or_else(|p| p.into_inner()).add_table(def);
    kept.map_err(|e| SqlError::Io(format!("the table is created but its definition could not be kept: {e:#}")))?;
    Ok(Answer::tag("CREATE TABLE"))
}

/// Answers `DROP TABLE`.
pub(super) async fn drop_tables(engine: &Engine, names: &[String], if_exists: bool) -> Result<Answer, SqlError> {
    // Each checked first: a statement that cannot drop them all drops none.
    let mut defs: Vec<TableDef> = Vec::new();
    for name in names {
        if Relation::named(name).is_some() {
            return Err(SqlError::WrongObjectType(format!(
                "\"{name}\" is built in; only tables created with CREATE TABLE can be dropped"
            )));
        }
        let (def, dependents) = {
            let catalog = engine.catalog().lock().unwrap_or_else(|p| p.into_inner());
            (catalog.table(name).cloned(), catalog.dependents(name))
        };
        let Some(def) = def else {
            if if_exists {
                continue;
            }
            return Err(SqlError::UndefinedTable(format!("table \"{name}\" does not exist")));
        };
        if !dependents.is_empty() {
            return Err(SqlError::Dependents(format!(
                "cannot drop table {name}: view(s) {} read it; drop them first",
                dependents.join(", ")
            )));
        }
        if !defs.iter().any(|d| d.id == def.id) {
            defs.push(def);
        }
    }
    for def in defs {
        engine.serving().drop_table(def.id, engine.limits().timeout).await.map_err(SqlError::from_read)?;
        let _ = engine.shared.context.deregister_table(def.name.as_str());
        let removed = engine.catalog().lock().unwrap_or_else(|p| p.into_inner()).remove_table(&def.name);
        removed.map_err(|e| {
            SqlError::Io(format!("the table is dropped but its definition could not be removed: {e:#}"))
        })?;
    }
    Ok(Answer::tag("DROP TABLE"))
}

/// Registers a table with DataFusion under its name.
fn register(engine: &Engine, def: &TableDef) -> Result<(), SqlError> {
    let table = Arc::new(super::table::LiveTable::table(def, engine.shared.workers));
    engine
        .shared
        .context
        .register_table(def.name.as_str(), table)
        .map(drop)
        .map_err(|e| SqlError::Internal(format!("cannot register table {}: {e}", def.name)))
}

impl Engine {
    /// Registers the tables of an earlier run again; returns them, for the workers to install.
    pub(super) fn restore_tables(&self) -> Vec<TableDef> {
        let defs = self.catalog().lock().unwrap_or_else(|p| p.into_inner()).tables();
        defs.into_iter()
            .filter(|def| match register(self, def) {
                Ok(()) => true,
                Err(error) => {
                    tracing::error!(table = %def.name, %error, "a table of an earlier run cannot be registered; it is left out");
                    false
                }
            })
            .collect()
    }
}

/// The definition `CREATE TABLE` gives (its id left to the caller).
fn definition(create: &CreateTable, id: u64, name: &str, sql: String) -> Result<TableDef, SqlError> {
    if create.query.is_some() || create.like.is_some() || create.clone.is_some() {
        return Err(SqlError::Unsupported(
            "CREATE TABLE … AS, LIKE or CLONE: a table is fed by a file or a topic".into(),
        ));
    }
    if create.or_replace {
        return Err(SqlError::Unsupported("CREATE OR REPLACE TABLE".into()));
    }
    let mut columns: Vec<(String, ColumnType)> = Vec::new();
    let mut key: Vec<String> = Vec::new();
    for column in &create.columns {
        let column_name = column.name.value.to_lowercase();
        let ty = crate::table::column_type(&column.data_type.to_string()).ok_or_else(|| {
            SqlError::Unsupported(format!(
                "column {column_name} of type {}: a table's columns are text, bigint, numeric or timestamp",
                column.data_type
            ))
        })?;
        if columns.iter().any(|(n, _)| *n == column_name) {
            return Err(SqlError::DuplicateRelation(format!("column \"{column_name}\" specified more than once")));
        }
        if column.options.iter().any(|o| matches!(o.option, ColumnOption::PrimaryKey(_))) {
            key.push(column_name.clone());
        }
        columns.push((column_name, ty));
    }
    if columns.is_empty() {
        return Err(SqlError::InvalidParameter(format!("table {name} has no column")));
    }
    for constraint in &create.constraints {
        match constraint {
            TableConstraint::PrimaryKey(primary) => {
                if !key.is_empty() {
                    return Err(SqlError::InvalidParameter(format!("multiple primary keys for table {name}")));
                }
                for column in &primary.columns {
                    match &column.column.expr {
                        Expr::Identifier(ident) => key.push(ident.value.to_lowercase()),
                        other => {
                            return Err(SqlError::Unsupported(format!("a primary key on {other}: name columns")));
                        }
                    }
                }
            }
            other => return Err(SqlError::Unsupported(format!("the constraint {other}: only PRIMARY KEY"))),
        }
    }
    if key.is_empty() {
        return Err(SqlError::InvalidParameter(format!(
            "table {name} needs a PRIMARY KEY: its rows are replaced and deleted by key"
        )));
    }
    let key = key
        .iter()
        .map(|k| {
            columns
                .iter()
                .position(|(n, _)| n == k)
                .ok_or_else(|| SqlError::UndefinedColumn(format!("primary key column \"{k}\" does not exist")))
        })
        .collect::<Result<Vec<usize>, SqlError>>()?;
    let (path, topic, generated) = source(create, name)?;
    let def = TableDef { id, name: name.to_owned(), columns, key, path, topic, generated, sql };
    if let Some(generated) = &def.generated {
        crate::table::nexmark::check(&def, generated).map_err(SqlError::InvalidParameter)?;
    }
    Ok(def)
}

/// A table's source: its file, its topic, or the generator.
type Source = (Option<String>, Option<String>, Option<crate::table::Generated>);

/// The file and the topic of a table's `WITH` options, checked.
fn source(create: &CreateTable, name: &str) -> Result<Source, SqlError> {
    let options: &[SqlOption] = match &create.table_options {
        CreateTableOptions::None => &[],
        CreateTableOptions::With(options) => options,
        other => return Err(SqlError::Unsupported(format!("table options {other}: use WITH (…)"))),
    };
    let (mut connector, mut topic, mut path, mut format) = (None, None, None, None);
    let mut generator = Vec::new();
    for option in options {
        let SqlOption::KeyValue { key, value } = option else {
            return Err(SqlError::InvalidParameter(format!("table option {option}: key = 'value'")));
        };
        let text = match value {
            Expr::Value(v) => match &v.value {
                datafusion::sql::sqlparser::ast::Value::SingleQuotedString(s) => s.clone(),
                other => other.to_string(),
            },
            Expr::Identifier(ident) => ident.value.clone(),
            other => other.to_string(),
        };
        match key.value.to_lowercase().as_str() {
            "connector" => connector = Some(text.to_lowercase()),
            "topic" => topic = Some(text),
            "path" => path = Some(text),
            "format" => format = Some(text.to_lowercase()),
            known @ ("stream" | "events" | "corrections" | "deletes" | "seed") => {
                generator.push((known.to_owned(), text))
            }
            other => {
                return Err(SqlError::InvalidParameter(format!(
                    "unknown table option {other:?}: connector, topic, path, format \
                     (and for connector 'nexmark': stream, events, corrections, deletes, seed)"
                )))
            }
        }
    }
    match connector.as_deref() {
        None | Some("kafka") | Some("file") => {}
        Some("nexmark") => {
            if topic.is_some() || path.is_some() || format.is_some() {
                return Err(SqlError::InvalidParameter(
                    "connector 'nexmark' generates the rows: no topic, path or format".into(),
                ));
            }
            let generated = crate::table::nexmark::options(name, &generator).map_err(SqlError::InvalidParameter)?;
            return Ok((None, None, Some(generated)));
        }
        Some(other) => {
            return Err(SqlError::InvalidParameter(format!("connector {other:?}: 'kafka', 'file' or 'nexmark'")));
        }
    }
    if let Some((option, _)) = generator.first() {
        return Err(SqlError::InvalidParameter(format!("table option {option:?} belongs to connector 'nexmark'")));
    }
    if connector.as_deref() == Some("kafka") && topic.is_none() {
        return Err(SqlError::InvalidParameter("connector 'kafka' needs a topic: WITH (…, topic = 'name')".into()));
    }
    if connector.as_deref() == Some("file") && path.is_none() {
        return Err(SqlError::InvalidParameter("connector 'file' needs a path: WITH (…, path = 'file.csv')".into()));
    }
    if connector.as_deref() == Some("file") && topic.is_some() {
        return Err(SqlError::InvalidParameter(
            "connector 'file' reads no topic: use connector = 'kafka' with topic and path for history then stream"
                .into(),
        ));
    }
    if topic.is_none() && path.is_none() {
        return Err(SqlError::InvalidParameter(format!(
            "table {name} needs a source: WITH (connector = 'kafka', topic = '…') or (connector = 'file', path = '…')"
        )));
    }
    if let Some(topic) = &topic {
        let valid = !topic.is_empty()
            && topic.len() <= 249
            && topic.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !valid {
            return Err(SqlError::InvalidParameter(format!("{topic:?} is not a Kafka topic name")));
        }
    }
    let path = match path {
        None => None,
        Some(path) => {
            let csv = path.to_lowercase().ends_with(".csv");
            match format.as_deref() {
                None | Some("json") if !csv => {}
                None | Some("csv") if csv => {}
                Some(other) => {
                    return Err(SqlError::InvalidParameter(format!(
                        "format {other:?} for {path}: a .csv file is CSV, any other JSON"
                    )))
                }
                _ => {}
            }
            // Kept absolute: a restart may start elsewhere.
            let absolute = std::fs::canonicalize(&path)
                .map_err(|e| SqlError::InvalidParameter(format!("cannot read the table's file {path}: {e}")))?;
            // Kernel and device files are not data: reading one may block or never end.
            if ["/proc/", "/sys/", "/dev/"].iter().any(|p| absolute.starts_with(p)) {
                return Err(SqlError::InvalidParameter(format!("{path} is a system file, not a table's data")));
            }
            let metadata = std::fs::metadata(&absolute)
                .map_err(|e| SqlError::InvalidParameter(format!("cannot read the table's file {path}: {e}")))?;
            if !metadata.is_file() {
                return Err(SqlError::InvalidParameter(format!("the table's file {path} is not a file")));
            }
            if metadata.len() > crate::table::MAX_FILE_BYTES {
                return Err(SqlError::InvalidParameter(format!(
                    "the table's file {path} is {} bytes, at most {} (stream more through its topic)",
                    metadata.len(),
                    crate::table::MAX_FILE_BYTES
                )));
            }
            Some(absolute.to_string_lossy().into_owned())
        }
    };
    if topic.is_some() && format.as_deref().is_some_and(|f| f != "json") && path.is_none() {
        return Err(SqlError::InvalidParameter("a topic's messages are JSON: format = 'json'".into()));
    }
    Ok((path, topic, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::ast::Statement;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn def(sql: &str) -> Result<TableDef, SqlError> {
        let statement = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap().remove(0);
        let Statement::CreateTable(create) = statement else { panic!("not CREATE TABLE: {sql}") };
        definition(&create, 1, "t", sql.into())
    }

    #[test]
    fn a_table_has_typed_columns_a_key_and_a_source() {
        let t =
            def("CREATE TABLE t (Customer text, city varchar(20), lim numeric(10,2), n bigint, since timestamptz, \
                     PRIMARY KEY (customer)) WITH (connector = 'kafka', topic = 'customer-info')")
            .unwrap();
        let types: Vec<ColumnType> = t.columns.iter().map(|c| c.1).collect();
        use ColumnType::*;
        assert_eq!(types, [Text, Text, Money, Int, Time]);
        assert_eq!((t.key, t.topic.as_deref(), t.path), (vec![0], Some("customer-info"), None));
        let inline = def("CREATE TABLE t (a text PRIMARY KEY, b bigint) WITH (topic = 'x')").unwrap();
        assert_eq!(inline.key, vec![0]);
    }

    #[test]
    fn what_a_table_cannot_be_is_refused_with_the_reason() {
        let error = |sql: &str| def(sql).unwrap_err().to_string().to_lowercase();
        assert!(error("CREATE TABLE t (a text, b text) WITH (topic = 'x')").contains("primary key"));
        assert!(error("CREATE TABLE t (a text PRIMARY KEY, b boolean) WITH (topic = 'x')").contains("boolean"));
        assert!(error("CREATE TABLE t (a text PRIMARY KEY)").contains("needs a source"));
        assert!(error("CREATE TABLE t (a text PRIMARY KEY) WITH (connector = 'kafka')").contains("needs a topic"));
        assert!(error("CREATE TABLE t (a text PRIMARY KEY) WITH (connector = 's3', topic = 'x')").contains("s3"));
        assert!(
            error("CREATE TABLE t (a text PRIMARY KEY) WITH (topic = 'x', seed = 3)").contains("connector 'nexmark'")
        );
        let generated =
            "CREATE TABLE bid (id bigint PRIMARY KEY, price bigint) WITH (connector = 'nexmark', topic = 'x')";
        assert!(error(generated).contains("no topic, path or format"));
        let generated =
            def("CREATE TABLE b (id bigint PRIMARY KEY) WITH (connector = 'nexmark', stream = 'bid', events = 7)");
        let generated = generated.unwrap().generated.unwrap();
        assert_eq!((generated.stream, generated.events), (crate::nexmark::Stream::Bid, 7));
        let typed = "CREATE TABLE t (id bigint PRIMARY KEY, price text) WITH (connector = 'nexmark', stream = 'bid')";
        assert!(error(typed).contains("price of a bid is bigint"));
        assert!(error("CREATE TABLE t (a text PRIMARY KEY) WITH (topic = 'x', colour = 'red')").contains("colour"));
        assert!(error("CREATE TABLE t (a text PRIMARY KEY) WITH (topic = 'a b')").contains("topic name"));
        assert!(error("CREATE TABLE t (a text, PRIMARY KEY (b)) WITH (topic = 'x')").contains("\"b\""));
        assert!(error("CREATE TABLE t (a text PRIMARY KEY) WITH (path = '/no/such/file.csv')").contains("cannot read"));
        assert!(error("CREATE TABLE t (a text PRIMARY KEY, A text) WITH (topic = 'x')").contains("more than once"));
    }
}
