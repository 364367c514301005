//! The statements that change the catalog — `CREATE VIEW`, `DROP VIEW` — and `SHOW VIEWS`;
//! and the views of an earlier run, planned again at start.
//!
//! A view is created in this order, each step undone if a later one fails:
//!
//! ```text
//! name checked and held (case-insensitive)  →  SELECT planned by DataFusion (views.rs)
//! → installed on every worker (when it keeps groups; answers from the time they report)
//! → registered with DataFusion under its name  →  kept in the catalog (views.json)
//! ```

use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::datasource::ViewTable;
use datafusion::sql::sqlparser::ast::{ObjectType, Statement};

use super::catalog::ViewDef;
use super::{Answer, Engine, SqlError};
use crate::compute::relation::Relation;
use crate::dataflow::created::Maintained;

/// The longest name a created view may have, in bytes (Postgres' `NAMEDATALEN - 1`).
pub const MAX_NAME_BYTES: usize = 63;

/// A name held in the catalog while its view or table is being created; let go when dropped.
pub(super) struct Reserved<'a> {
    pub(super) engine: &'a Engine,
    pub(super) name: String,
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        self.engine.catalog().lock().unwrap_or_else(|p| p.into_inner()).release(&self.name);
    }
}

/// Answers `CREATE VIEW` or `DROP`.
pub(super) async fn run(engine: &Engine, statement: &Statement, text: &str) -> Result<Answer, SqlError> {
    match statement {
        Statement::CreateView(create) => {
            if create.or_replace || create.or_alter || !create.columns.is_empty() {
                return Err(SqlError::Unsupported("OR REPLACE and column lists in CREATE VIEW".into()));
            }
            // Names are case-insensitive, kept as Postgres folds an unquoted name: lowercase.
            let name = create.name.to_string().trim_matches('"').to_lowercase();
            create_view(engine, &name, &create.query, create.if_not_exists, text).await
        }
        Statement::Drop { object_type: ObjectType::View | ObjectType::MaterializedView, if_exists, names, .. } => {
            let names: Vec<String> = names.iter().map(|n| n.to_string().trim_matches('"').to_lowercase()).collect();
            drop_views(engine, &names, *if_exists).await
        }
        Statement::Drop { object_type, .. } => {
            Err(SqlError::Unsupported(format!("DROP {object_type}: the pipeline's relations are read-only")))
        }
        other => Err(SqlError::Unsupported(format!("{other}"))),
    }
}

async fn create_view(
    engine: &Engine,
    name: &str,
    query: &datafusion::sql::sqlparser::ast::Query,
    if_not_exists: bool,
    text: &str,
) -> Result<Answer, SqlError> {
    check_name(name)?;
    let taken =
        Relation::named(name).is_some() || !engine.catalog().lock().unwrap_or_else(|p| p.into_inner()).reserve(name);
    if taken {
        if if_not_exists {
            return Ok(Answer::tag("CREATE VIEW"));
        }
        return Err(SqlError::DuplicateRelation(format!("relation \"{name}\" already exists")));
    }
    // Held until this creation ends, whichever way.
    let _held = Reserved { engine, name: name.to_owned() };
    let id = engine.catalog().lock().unwrap_or_else(|p| p.into_inner()).next_id();
    let planned = plan(engine, id, query, text, Fresh::Yes).await?;
    let mut def = ViewDef {
        id,
        name: name.to_owned(),
        sql: text.trim().trim_end_matches(';').to_owned(),
        maintained: planned.maintained.clone(),
        reads: planned.reads.clone(),
        key: planned.key.clone(),
    };
    let serving = engine.serving();
    let time = match &planned.maintained {
        Some(maintained) => {
            let time =
                serving.install(maintained.clone(), engine.limits().timeout).await.map_err(SqlError::from_read)?;
            if let Err(error) = complete_through(engine, time).await {
                tracing::warn!(view = %name, %error, "a created view's first time is not complete yet");
            }
            time
        }
        None => 0,
    };
    let registered = register(engine, &def, planned.read);
    if let Err(error) = registered {
        if def.maintained.is_some() {
            let _ = serving.drop_view(id, engine.limits().timeout).await;
        }
        return Err(error);
    }
    def.maintained = planned.maintained;
    let kept = engine.catalog().lock().unwrap_or_else(|p| p.into_inner()).add(def, time);
    kept.map_err(|e| SqlError::Io(format!("the view is installed but its definition could not be kept: {e:#}")))?;
    Ok(Answer::tag("CREATE VIEW"))
}

/// Returns once the pipeline is complete through `time` (a new view's or table's first time
/// on every worker): every statement after this one is then read at or after it — one ordered
/// meanwhile could be pinned at an earlier complete time, before the coordinator heard from
/// every worker, and find the new relation compacted beyond it.
pub(super) async fn complete_through(engine: &Engine, time: u64) -> Result<(), SqlError> {
    let serving = engine.serving();
    let timeout = engine.limits().timeout;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let pinned = serving.pin(timeout).await.map_err(SqlError::from_read)?;
        serving.unpin(pinned.time);
        if pinned.time >= time {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(SqlError::Unavailable(format!(
                "created, but the pipeline is not complete through its time {time} yet"
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

/// Checks the name of a view or table being created.
pub(super) fn check_name(name: &str) -> Result<(), SqlError> {
    if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
        return Err(SqlError::InvalidName(format!("invalid name \"{name}\": letters, digits and _ only")));
    }
    // Postgres' own bound on names; a view is also a file name in `--views-out`.
    if name.len() > MAX_NAME_BYTES {
        return Err(SqlError::NameTooLong(format!("name \"{name}\" is longer than {MAX_NAME_BYTES} bytes")));
    }
    Ok(())
}

/// Plans a view's `SELECT` (see [`super::views`]).
/// Whether a view is being created (checked as new), or planned again at a restart.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fresh {
    Yes,
    Restored,
}

async fn plan(
    engine: &Engine,
    id: u64,
    query: &datafusion::sql::sqlparser::ast::Query,
    text: &str,
    fresh: Fresh,
) -> Result<super::views::Planned, SqlError> {
    let state = engine.shared.context.state();
    let statement = datafusion::sql::parser::Statement::Statement(Box::new(Statement::Query(Box::new(query.clone()))));
    let plan = state.statement_to_plan(statement).await.map_err(|e| SqlError::from_datafusion(e, text))?;
    // A view is read by its columns' names alone: two of one name (`t.customer, i.customer`)
    // could never be read apart. (A view of an earlier run is planned again as it was.)
    let mut names = std::collections::HashSet::new();
    let twice = plan.schema().fields().iter().map(|f| f.name()).find(|n| !names.insert(*n));
    if let (Some(twice), Fresh::Yes) = (twice, fresh) {
        return Err(SqlError::DuplicateColumn(format!(
            "column \"{twice}\" specified more than once (name the view's columns apart with AS)"
        )));
    }
    let optimized = state.optimize(&plan).map_err(|e| SqlError::from_datafusion(e, text))?;
    let mut planned = super::views::plan(id, plan, &optimized, engine.shared.workers)?;
    // The relations it names, as written: DataFusion's plan has the views it reads inlined.
    let mut reads = Vec::new();
    let _ = datafusion::sql::sqlparser::ast::visit_relations(query, |name| {
        if let Some(last) = name.0.last().and_then(|part| part.as_ident()) {
            reads.push(last.value.to_lowercase());
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    reads.sort();
    reads.dedup();
    planned.reads = reads;
    Ok(planned)
}

/// Registers a view with DataFusion under its name, read by `read`.
fn register(engine: &Engine, def: &ViewDef, read: datafusion::logical_expr::LogicalPlan) -> Result<(), SqlError> {
    let view: Arc<dyn TableProvider> = Arc::new(ViewTable::new(read, Some(def.sql.clone())));
    engine
        .shared
        .context
        .register_table(def.name.to_lowercase(), view)
        .map(drop)
        .map_err(|e| SqlError::Internal(format!("cannot register view {}: {e}", def.name)))
}

/// Drops the views `names`: each is checked first (a statement that cannot drop them all
/// drops none), then they go, a view before the views it reads.
async fn drop_views(engine: &Engine, names: &[String], if_exists: bool) -> Result<Answer, SqlError> {
    let mut defs = Vec::new();
    for name in names {
        if Relation::named(name).is_some() {
            return Err(SqlError::WrongObjectType(format!(
                "\"{name}\" is a built-in view; only created views can be dropped"
            )));
        }
        let (def, dependents) = {
            let catalog = engine.catalog().lock().unwrap_or_else(|p| p.into_inner());
            (catalog.get(name).cloned(), catalog.dependents(name))
        };
        let Some(def) = def else {
            if catalog_has_table(engine, name) {
                return Err(SqlError::WrongObjectType(format!("\"{name}\" is a table: DROP TABLE {name}")));
            }
            if if_exists {
                continue;
            }
            return Err(SqlError::UndefinedTable(format!("view \"{name}\" does not exist")));
        };
        let others: Vec<String> = dependents.into_iter().filter(|d| !names.contains(&d.to_lowercase())).collect();
        if !others.is_empty() {
            return Err(SqlError::Dependents(format!(
                "cannot drop view {name}: {} read(s) it; drop them first",
                others.join(", ")
            )));
        }
        if !defs.iter().any(|d: &super::catalog::ViewDef| d.id == def.id) {
            defs.push(def);
        }
    }
    // Created later first: a view over a view was created after it.
    defs.sort_by_key(|d| std::cmp::Reverse(d.id));
    for def in defs {
        if def.maintained.is_some() {
            engine.serving().drop_view(def.id, engine.limits().timeout).await.map_err(SqlError::from_read)?;
        }
        let _ = engine.shared.context.deregister_table(def.name.to_lowercase());
        engine
            .catalog()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&def.name)
            .map_err(|e| SqlError::Io(format!("the view is dropped but its definition could not be removed: {e:#}")))?;
    }
    Ok(Answer::tag("DROP VIEW"))
}

fn catalog_has_table(engine: &Engine, name: &str) -> bool {
    engine.catalog().lock().unwrap_or_else(|p| p.into_inner()).table(name).is_some()
}

/// `SHOW VIEWS`: the built-in views and the created ones, with their definitions, the time
/// they answer from, how many rows they hold now, and — for a created view the dataflow
/// keeps — how many updates its arrangements hold over every worker (its memory, counted as
/// [`crate::dataflow::arranged`] says).
pub(super) async fn show_views(engine: &Engine) -> Result<Answer, SqlError> {
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    /// name, kind, definition, created at, rows, arranged records.
    type Row<'a> = (String, &'a str, Option<String>, Option<i64>, Option<i64>, Option<i64>);
    let mut rows: Vec<Row<'_>> = Vec::new();
    for relation in crate::compute::relation::BUILT_IN.into_iter().filter(|r| *r != Relation::Transactions) {
        let count = count(engine, relation.name()).await?;
        let definition = super::builtin::definition(relation).map(str::to_owned);
        rows.push((relation.name().to_owned(), "built-in", definition, None, count, None));
    }
    let reading = engine
        .serving()
        .read_async(crate::reading::ReadScope::Totals, engine.limits().timeout)
        .await
        .map_err(SqlError::from_read)?;
    let mut arranged: std::collections::HashMap<u64, i64> = std::collections::HashMap::new();
    for (id, records) in reading.workers.iter().flat_map(|w| &w.arranged) {
        *arranged.entry(*id).or_default() += records;
    }
    let created = engine.catalog().lock().unwrap_or_else(|p| p.into_inner()).all();
    for (def, time) in created {
        let count = count(engine, &def.name.to_lowercase()).await?;
        let records = def.maintained.as_ref().map(|_| arranged.get(&def.id).copied().unwrap_or(0));
        rows.push((def.name.clone(), "created", Some(def.sql.clone()), Some(time as i64), count, records));
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, true),
        Field::new("kind", DataType::Utf8, true),
        Field::new("definition", DataType::Utf8, true),
        Field::new("created_at", DataType::Int64, true),
        Field::new("rows", DataType::Int64, true),
        Field::new("arranged_records", DataType::Int64, true),
    ]));
    let batch = datafusion::arrow::record_batch::RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(rows.iter().map(|r| Some(r.0.clone())).collect::<Vec<_>>())),
            Arc::new(StringArray::from(rows.iter().map(|r| Some(r.1)).collect::<Vec<_>>())),
            Arc::new(StringArray::from(rows.iter().map(|r| r.2.clone()).collect::<Vec<_>>())),
            Arc::new(Int64Array::from(rows.iter().map(|r| r.3).collect::<Vec<_>>())),
            Arc::new(Int64Array::from(rows.iter().map(|r| r.4).collect::<Vec<_>>())),
            Arc::new(Int64Array::from(rows.iter().map(|r| r.5).collect::<Vec<_>>())),
        ],
    )
    .map_err(|e| SqlError::Internal(e.to_string()))?;
    Ok(Answer { schema, batches: vec![batch], as_of: None, tag: None })
}

async fn count(engine: &Engine, relation: &str) -> Result<Option<i64>, SqlError> {
    let answer =
        Box::pin(engine.answer(&mut super::Session::default(), &format!("SELECT count(*) FROM \"{relation}\"")))
            .await?;
    Ok(answer.rows().first().and_then(|r| r.first()).and_then(serde_json::Value::as_i64))
}

/// The column a row of a created view is named by, if it shows one (see [`super::views`]).
pub(super) fn key_of(def: &ViewDef) -> Option<(usize, String)> {
    def.key.clone()
}

impl Engine {
    /// The name and index of the column a row of view `name` is named by (a customer, a
    /// category, an hour, a reason, a created view's group key), if it has one; 42P01 for an
    /// unknown view.
    pub fn view_key(&self, name: &str) -> Result<Option<(usize, String)>, SqlError> {
        use crate::compute::relation::Relation;
        if let Some(relation) = Relation::named(name) {
            return Ok(relation.key().map(|k| (k, relation.columns()[k].0.to_owned())));
        }
        let catalog = self.shared.catalog.lock().unwrap_or_else(|p| p.into_inner());
        // A table is watched like a view: its rows named by its key, when that is one column.
        if let Some(table) = catalog.table(name) {
            return Ok(match table.key.as_slice() {
                [k] => Some((*k, table.columns[*k].0.clone())),
                _ => None,
            });
        }
        let def =
            catalog.get(name).ok_or_else(|| SqlError::UndefinedTable(format!("relation \"{name}\" does not exist")))?;
        Ok(key_of(def))
    }

    /// Plans the views of an earlier run again, in creation order, and registers them;
    /// returns what the workers are to keep of them. A view that no longer plans is left
    /// out, with an error in the log (its definition stays in the state directory).
    pub(super) fn restore_views(&self) -> Vec<Maintained> {
        let defs = self.catalog().lock().unwrap_or_else(|p| p.into_inner()).all();
        let mut maintained = Vec::new();
        for (def, _) in defs {
            let engine = self.clone();
            let sql = def.sql.clone();
            let planned = self.runtime().block_on(async move {
                let statement = engine.parse(&sql)?;
                let Statement::CreateView(create) = statement else {
                    return Err(SqlError::Unsupported("a kept view whose statement does not create it".into()));
                };
                plan(&engine, def.id, &create.query, &sql, Fresh::Restored).await
            });
            let planned = match planned {
                Ok(planned) => planned,
                Err(error) => {
                    tracing::error!(view = %def.name, %error, "a view of an earlier run cannot be planned again; it is left out");
                    continue;
                }
            };
            let def = ViewDef {
                maintained: planned.maintained.clone(),
                reads: planned.reads.clone(),
                key: planned.key.clone(),
                ..def
            };
            if let Err(error) = register(self, &def, planned.read) {
                tracing::error!(view = %def.name, %error, "a view of an earlier run cannot be registered; it is left out");
                continue;
            }
            maintained.extend(planned.maintained.clone());
            self.catalog().lock().unwrap_or_else(|p| p.into_inner()).planned(def);
        }
        maintained
    }
}
