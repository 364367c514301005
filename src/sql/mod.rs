//! SQL over the live views: one engine for the prompt, `POST /v1/sql` and the Postgres
//! protocol, reading the same arrangements as every other answer, at one logical time.
//!
//! A statement is parsed with `sqlparser` and planned ([`plan`]) into a part every worker
//! does on its share — seek or scan, filter, partial aggregates ([`scan`]) — and a part the
//! reader does on the merged shares: the rest of the aggregation, `HAVING`, `ORDER BY`,
//! `LIMIT` and the select list. The relations ([`relation`]) are the live transactions (the
//! upsert's own version table, read as of the time) and the views.
//!
//! ```text
//! lambda> SELECT customer, total FROM customers WHERE total > 200 ORDER BY total DESC;
//! customer | total
//! Ali      | 400
//! Mounir   | 350
//! (2 rows, as of logical time 1795514695312, offsets real-time-orders/0: 1, ...)
//! ```
//!
//! Errors carry Postgres' SQLSTATE codes: 42601 syntax, 42P01 unknown relation, 42703
//! unknown column, 42803 grouping, 42804 and 42883 types, 0A000 unsupported, 54000 too many
//! rows, 57014 timeout.

pub mod catalog;
pub mod error;
pub mod explain;
pub mod expr;
pub mod finish;
pub mod plan;
pub mod relation;
pub mod scan;
mod translate;
pub mod value;
pub mod views;

use std::time::Duration;

use crate::dataflow::Time;
use crate::reading::{ReadScope, Reading};
use crate::serve::bound::{self, Session, WaitError};
use crate::serve::serving::Serving;
pub use error::SqlError;
pub use finish::{finish, Column, Limits};
use plan::{Plan, Select};
use relation::Relation;
use value::{Type, Value};

/// The column a row of `relation` is looked up by, if any.
fn lookup_key(relation: Relation) -> Option<usize> {
    match relation {
        Relation::Categories | Relation::Hourly | Relation::DeadLetters => Some(0),
        other => other.key(),
    }
}

/// What a statement answered.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    /// The columns.
    pub columns: Vec<Column>,
    /// The rows.
    pub rows: Vec<Vec<Value>>,
    /// The reading the rows come from (its time and offsets), when one was read.
    pub reading: Option<Reading>,
    /// For a statement that returns no rows (`BEGIN`, `SET`): its command tag.
    pub tag: Option<&'static str>,
}

impl Answer {
    /// The answer's logical time, if it read the views.
    pub fn time(&self) -> Option<Time> {
        self.reading.as_ref().map(|r| r.time)
    }
}

/// The longest name a created view may have, in bytes (Postgres' `NAMEDATALEN - 1`).
pub const MAX_NAME_BYTES: usize = 63;

/// A view name held in the catalog while its view is being created; let go when dropped.
struct Reserved {
    catalog: std::sync::Arc<std::sync::Mutex<catalog::Catalog>>,
    name: String,
}

impl Drop for Reserved {
    fn drop(&mut self) {
        self.catalog.lock().unwrap_or_else(|p| p.into_inner()).release(&self.name);
    }
}

/// The SQL engine over a running pipeline.
#[derive(Clone)]
pub struct Engine {
    serving: Serving,
    topic: String,
    limits: Limits,
}

impl Engine {
    /// An engine reading through `serving`.
    pub fn new(serving: Serving, topic: impl Into<String>, limits: Limits) -> Self {
        Engine { serving, topic: topic.into(), limits }
    }

    /// Answers one statement (blocking the calling thread).
    pub fn execute(&self, text: &str) -> Result<Answer, SqlError> {
        match self.plan(text)? {
            Plan::CreateView { name, body, if_not_exists } => self.create_view(text, name, body, if_not_exists),
            Plan::DropView { names, if_exists } => self.drop_views(&names, if_exists),
            Plan::ShowViews => self.show_views(),
            Plan::Select(select) => {
                let reading =
                    self.serving.read(self.scope(&select), self.limits.timeout).map_err(SqlError::from_read)?;
                self.finish(&select, reading)
            }
            Plan::ShowAsOf => {
                let reading =
                    self.serving.read(ReadScope::Offsets, self.limits.timeout).map_err(SqlError::from_read)?;
                Ok(self.as_of_answer(reading))
            }
            other => Ok(self.describe(other)),
        }
    }

    /// Answers one statement from an async task.
    pub async fn execute_async(&self, text: &str) -> Result<Answer, SqlError> {
        match self.plan(text)? {
            // These wait on the workers several times: on a thread that may block.
            Plan::CreateView { .. } | Plan::DropView { .. } | Plan::ShowViews => {
                let (engine, text) = (self.clone(), text.to_owned());
                tokio::task::spawn_blocking(move || engine.execute(&text))
                    .await
                    .unwrap_or_else(|e| Err(SqlError::new("XX000", format!("the statement failed: {e}"))))
            }
            Plan::Select(select) => {
                let reading = self
                    .serving
                    .read_async(self.scope(&select), self.limits.timeout)
                    .await
                    .map_err(SqlError::from_read)?;
                self.finish(&select, reading)
            }
            Plan::ShowAsOf => {
                let reading = self
                    .serving
                    .read_async(ReadScope::Offsets, self.limits.timeout)
                    .await
                    .map_err(SqlError::from_read)?;
                Ok(self.as_of_answer(reading))
            }
            other => Ok(self.describe(other)),
        }
    }

    /// Answers one statement of a session (the Postgres protocol's, the prompt's): a
    /// read-your-writes setting (`SET min_offsets = '...'`, `SET timeout_ms = N`) is kept in
    /// `session`, and every other statement first waits for the session's bound.
    pub fn execute_in(&self, session: &mut Session, text: &str) -> Result<Answer, SqlError> {
        if let Some(answer) = self.take_setting(session, text)? {
            return Ok(answer);
        }
        if let Some(bound) = &session.min_offsets {
            let result = self.serving.wait_for(bound, session.timeout());
            result.map_err(|error| self.not_reached(error, bound, session.timeout()))?;
        }
        self.execute(text)
    }

    /// [`Engine::execute_in`] from an async task.
    pub async fn execute_in_async(&self, session: &mut Session, text: &str) -> Result<Answer, SqlError> {
        if let Some(answer) = self.take_setting(session, text)? {
            return Ok(answer);
        }
        if let Some(bound) = &session.min_offsets {
            let result = self.serving.wait_for_async(bound, session.timeout()).await;
            result.map_err(|error| self.not_reached(error, bound, session.timeout()))?;
        }
        self.execute_async(text).await
    }

    fn take_setting(&self, session: &mut Session, text: &str) -> Result<Option<Answer>, SqlError> {
        match bound::setting(text, &self.topic) {
            None => Ok(None),
            Some(Err(message)) => Err(SqlError::new("22023", message)),
            Some(Ok(setting)) => {
                session.set(setting);
                Ok(Some(Answer { columns: Vec::new(), rows: Vec::new(), reading: None, tag: Some("SET") }))
            }
        }
    }

    fn not_reached(&self, error: WaitError, bound: &bound::MinOffsets, timeout: Duration) -> SqlError {
        match error {
            WaitError::NotReached(reading) => SqlError::new(
                "57014",
                format!(
                    "the views did not reach min_offsets {} within {} ms; they reflect {}",
                    bound.display(&self.topic),
                    timeout.as_millis(),
                    crate::output::as_of(&reading, &self.topic)
                ),
            ),
            error @ WaitError::NoSuchPartition { .. } => SqlError::new("22023", error.to_string()),
            WaitError::Read(error) => SqlError::from_read(error),
        }
    }

    /// The statement that reads view `name` (built-in or created), or the row of one `key`
    /// of it: what `GET /v1/views/{name}[/{key}]` answers. 42P01 for an unknown view; 42704
    /// for a key of a view that has none.
    pub fn view_statement(&self, name: &str, key: Option<&str>) -> Result<String, SqlError> {
        let relation = self.view_relation(name)?;
        let name = relation.name();
        let Some(key) = key else { return Ok(format!("SELECT * FROM \"{name}\"")) };
        let column = lookup_key(relation)
            .and_then(|c| relation.columns().get(c))
            .ok_or_else(|| SqlError::new("42704", format!("view \"{name}\" has no key to look up")))?;
        let literal = key.replace('\'', "''");
        Ok(format!("SELECT * FROM \"{name}\" WHERE \"{}\" = '{literal}'", column.0))
    }

    /// The index of the column that names a row of view `name` (a customer, a category, an
    /// hour, a created view's group key), if it has one; 42P01 for an unknown view.
    pub fn view_key(&self, name: &str) -> Result<Option<usize>, SqlError> {
        let relation = self.view_relation(name)?;
        Ok(lookup_key(relation))
    }

    /// View `name`, built-in or created (not the `transactions` table); 42P01 if unknown.
    fn view_relation(&self, name: &str) -> Result<Relation, SqlError> {
        let unknown = || SqlError::new("42P01", format!("view \"{name}\" does not exist"));
        let relation = match Relation::named(name) {
            Some(Relation::Transactions) => return Err(unknown()),
            Some(relation) => relation,
            None => self.catalog().get(name).map(|def| Relation::View(def.id)).ok_or_else(unknown)?,
        };
        Ok(relation)
    }

    /// The columns a statement answers with, without reading (for a protocol's describe).
    pub fn columns(&self, text: &str) -> Result<Vec<Column>, SqlError> {
        Ok(match self.plan(text)? {
            Plan::Select(select) => select.output.iter().map(|(n, _, t)| Column { name: n.clone(), ty: *t }).collect(),
            Plan::CreateView { .. } | Plan::DropView { .. } => Vec::new(),
            Plan::ShowViews => views_columns(),
            other => self.describe(other).columns,
        })
    }

    /// Plans `text` with the views created so far.
    fn plan(&self, text: &str) -> Result<Plan, SqlError> {
        let catalog = self.serving.catalog().lock().unwrap_or_else(|p| p.into_inner());
        plan::plan_in(text, &*catalog)
    }

    fn catalog(&self) -> std::sync::MutexGuard<'_, catalog::Catalog> {
        self.serving.catalog().lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `CREATE VIEW`: installs the view on every worker, checks it is not too large, and keeps
    /// its definition (in the state directory too).
    fn create_view(
        &self,
        text: &str,
        name: String,
        body: views::ViewBody,
        if_not_exists: bool,
    ) -> Result<Answer, SqlError> {
        let tag = |tag| Ok(Answer { columns: Vec::new(), rows: Vec::new(), reading: None, tag: Some(tag) });
        if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
            return Err(SqlError::new("42602", format!("invalid view name \"{name}\": letters, digits and _ only")));
        }
        // Postgres' own bound on names; a view is also a file name in `--views-out`.
        if name.len() > MAX_NAME_BYTES {
            return Err(SqlError::new("42622", format!("view name \"{name}\" is longer than {MAX_NAME_BYTES} bytes")));
        }
        if Relation::named(&name).is_some() || !self.catalog().reserve(&name) {
            if if_not_exists {
                return tag("CREATE VIEW");
            }
            return Err(SqlError::new("42P07", format!("relation \"{name}\" already exists")));
        }
        // Held until this creation ends, whichever way.
        let _held = Reserved { catalog: std::sync::Arc::clone(self.serving.catalog()), name: name.clone() };
        let def = views::ViewDef { id: views::next_id(0), name: name.clone(), sql: text.trim().to_owned(), body };
        views::register(&def);
        let from = self.serving.install(def.clone(), self.limits.timeout).map_err(SqlError::from_read)?;
        self.catalog().add(def, from).map_err(|e| {
            SqlError::new("58030", format!("the view is installed but its definition could not be kept: {e:#}"))
        })?;
        // The same row limit as queries: a view too large to read is not kept.
        let too_large = match self.execute(&format!("SELECT count(*) FROM {name}")) {
            Ok(answer) => {
                matches!(answer.rows.first().and_then(|r| r.first()), Some(Value::Int(n)) if *n as usize > self.limits.max_rows)
            }
            Err(error) => error.code == "54000",
        };
        if too_large {
            let _ = self.drop_views(std::slice::from_ref(&name), true);
            return Err(SqlError::new(
                "54000",
                format!(
                    "view {name} would hold more than {} rows (--max-rows); it was not created",
                    self.limits.max_rows
                ),
            ));
        }
        tag("CREATE VIEW")
    }

    /// `DROP VIEW`: removes each view's dataflow from every worker, and its definition.
    fn drop_views(&self, names: &[String], if_exists: bool) -> Result<Answer, SqlError> {
        for name in names {
            if Relation::named(name).is_some() {
                return Err(SqlError::new(
                    "42809",
                    format!("\"{name}\" is a built-in view; only created views can be dropped"),
                ));
            }
            let Some(def) = self.catalog().get(name).cloned() else {
                if if_exists {
                    continue;
                }
                return Err(SqlError::new("42P01", format!("view \"{name}\" does not exist")));
            };
            let dependents = self.catalog().dependents(Relation::View(def.id));
            if !dependents.is_empty() {
                return Err(SqlError::new(
                    "2BP01",
                    format!("cannot drop view {name}: {} read(s) it; drop them first", dependents.join(", ")),
                ));
            }
            self.serving.drop_view(def.id, self.limits.timeout).map_err(SqlError::from_read)?;
            self.catalog().remove(name).map_err(|e| {
                SqlError::new("58030", format!("the view is dropped but its definition could not be removed: {e:#}"))
            })?;
        }
        Ok(Answer { columns: Vec::new(), rows: Vec::new(), reading: None, tag: Some("DROP VIEW") })
    }

    /// `SHOW VIEWS`: the built-in views and the created ones, with their definitions, the
    /// time they answer from and how many rows they hold now.
    fn show_views(&self) -> Result<Answer, SqlError> {
        let mut rows = Vec::new();
        let text = |t: &str| Value::Text(t.into());
        for relation in Relation::ALL.into_iter().filter(|r| *r != Relation::Transactions) {
            let count = self.count(relation.name())?;
            rows.push(vec![text(relation.name()), text("built-in"), Value::Null, Value::Null, count]);
        }
        let created: Vec<(views::ViewDef, u64)> = self.catalog().all().map(|(d, t)| (d.clone(), t)).collect();
        for (def, time) in created {
            let count = self.count(&def.name)?;
            rows.push(vec![text(&def.name), text("created"), text(&def.sql), Value::Int(time as i64), count]);
        }
        Ok(Answer { columns: views_columns(), rows, reading: None, tag: None })
    }

    fn count(&self, relation: &str) -> Result<Value, SqlError> {
        let answer = self.execute(&format!("SELECT count(*) FROM {relation}"))?;
        Ok(answer.rows.into_iter().next().and_then(|r| r.into_iter().next()).unwrap_or(Value::Null))
    }

    fn scope(&self, select: &Select) -> ReadScope {
        ReadScope::Query {
            scan: Box::new(select.scan.clone()),
            topic: self.topic.clone(),
            max_rows: self.limits.max_rows,
            budget_ms: self.limits.timeout.as_millis() as u64,
        }
    }

    /// Answers the statements that read nothing.
    fn describe(&self, plan: Plan) -> Answer {
        let text = |name: &str| Column { name: name.into(), ty: Type::Text };
        let (columns, rows) = match plan {
            Plan::ShowTables => (
                vec![text("name"), text("kind")],
                Relation::ALL
                    .iter()
                    .map(|r| {
                        let kind = if *r == Relation::Transactions { "table" } else { "view" };
                        vec![Value::Text(r.name().into()), Value::Text(kind.into())]
                    })
                    .collect(),
            ),
            Plan::ShowColumns(relation) => (
                vec![text("name"), text("type")],
                relation
                    .columns()
                    .iter()
                    .map(|(n, t)| vec![Value::Text((*n).into()), Value::Text(t.name().into())])
                    .collect(),
            ),
            Plan::Explain(select) => (
                vec![text("QUERY PLAN")],
                explain::explain(&select, self.serving.workers())
                    .into_iter()
                    .map(|l| vec![Value::Text(l.into())])
                    .collect(),
            ),
            Plan::Nothing(tag) => {
                return Answer { columns: Vec::new(), rows: Vec::new(), reading: None, tag: Some(tag) }
            }
            Plan::CreateView { .. } | Plan::DropView { .. } | Plan::ShowViews => {
                unreachable!("answered by the workers")
            }
            Plan::Select(_) | Plan::ShowAsOf => unreachable!("answered by reading"),
        };
        Answer { columns, rows, reading: None, tag: None }
    }

    fn as_of_answer(&self, reading: Reading) -> Answer {
        let text = |name: &str, ty| Column { name: name.into(), ty };
        let offsets: Vec<String> = reading.offsets.iter().map(|(p, o)| format!("{}/{p}:{o}", self.topic)).collect();
        Answer {
            columns: vec![text("time", Type::BigInt), text("offsets", Type::Text)],
            rows: vec![vec![Value::Int(reading.time as i64), Value::Text(offsets.join(",").into())]],
            reading: Some(reading),
            tag: None,
        }
    }

    fn finish(&self, select: &Select, mut reading: Reading) -> Result<Answer, SqlError> {
        let parts = std::mem::take(&mut reading.rows);
        let (columns, rows) = finish(select, parts, self.limits)?;
        Ok(Answer { columns, rows, reading: Some(reading), tag: None })
    }
}

fn views_columns() -> Vec<Column> {
    let column = |name: &str, ty| Column { name: name.into(), ty };
    vec![
        column("name", Type::Text),
        column("kind", Type::Text),
        column("definition", Type::Text),
        column("created_at", Type::BigInt),
        column("rows", Type::BigInt),
    ]
}

/// An answer as a text table, as the prompt shows it.
pub fn table(answer: &Answer) -> String {
    let header: Vec<&str> = answer.columns.iter().map(|c| c.name.as_str()).collect();
    let rows: Vec<Vec<String>> = answer
        .rows
        .iter()
        .map(|r| r.iter().map(|v| if v.is_null() { String::new() } else { v.to_string() }).collect())
        .collect();
    crate::output::show_table(&header, &rows, rows.len())
}
