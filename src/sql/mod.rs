//! SQL over the live views: Apache DataFusion plans and runs every statement — for the
//! prompt, `POST /v1/sql`, the Postgres protocol, the views' routes and the changefeeds —
//! over table providers that read the arrangements, every relation of a statement at one
//! logical time.
//!
//! ```text
//! text ─► complexity check ─► parse (Postgres dialect; client catalog queries rewritten)
//!      ─► SET / SHOW / BEGIN / CREATE VIEW / DROP VIEW / SHOW VIEWS: answered here
//!      ─► any query: DataFusion's plan ─► table providers ─► each worker's share at time T
//!         (T pinned on the first scan: see `read.rs`) ─► DataFusion's operators
//!      ─► the answer, with the time and input positions it reflects (`as_of`)
//! ```
//!
//! | module | what |
//! |---|---|
//! | [`context`] | the DataFusion session: relations, `pg_catalog`, `information_schema`, functions, memory |
//! | [`table`], [`exec`] | a relation as DataFusion reads it: projection and key seeks pushed to the workers |
//! | [`read`] | the statement's one time, pinned |
//! | [`session`] | `SET`, `SHOW`, read-your-writes, `statement_timeout` |
//! | [`limits`] | what a statement may take: rows, bytes, time, memory, complexity |
//! | `compat` | parsing: the user's queries as written, the clients' catalog queries through pg-catalog's rewrites |
//! | `names` | the names Postgres gives unnamed columns (`sum(amount)` is `sum`) |
//! | [`catalog`], [`views`], `ddl`, `create_table` | created views and tables: kept, planned, installed |
//! | [`compile`], `joins`, `scalars`, `top_k` | a view's plan compiled into the dataflow's; which joins it keeps; its expressions; its rankings kept as top-k |
//! | [`information_schema`] | Postgres' `information_schema`, for the clients that browse with it |
//! | [`checked`] | integer arithmetic that fails on overflow (22003), as Postgres' does |
//! | [`cooperative`] | joins yield, so a timeout, a cancel or a stop reaches a statement |
//! | `exact_sum` | `sum` exact or 22003, never wrapped |
//! | [`point`] | a point lookup on a key, answered without planning |
//! | [`functions`] | `version()`, the views' averages, catalog functions clients call |
//! | [`answer`], [`error`] | what a statement answers, or why not (with its SQLSTATE) |
//!
//! The statements run on a runtime of their own (two threads per core), so that a heavy query
//! never holds up the front ends that accept new ones; the workers' part of a scan is sliced
//! between their own steps (see [`crate::compute::scan`]), so that no query stops the stream.

pub mod answer;
pub mod builtin;
pub mod catalog;
mod changes;
pub mod checked;
mod compat;
pub mod compile;
pub mod context;
pub mod cooperative;
mod create_table;
mod ddl;
pub mod error;
mod exact_sum;
pub mod exec;
pub mod functions;
pub mod information_schema;
mod joins;
pub mod limits;
pub mod names;
pub mod point;
pub mod read;
mod scalars;
pub mod session;
pub mod table;
mod top_k;
pub mod views;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast::{Expr as SqlExpr, Statement, Value as SqlValue, VisitMut, VisitorMut};
use futures::StreamExt;

pub use answer::Answer;
pub use changes::ChangesPlan;
pub use error::SqlError;
pub use limits::Limits;
use read::{Snapshot, STATEMENT};
use session::{Said, Session};

use crate::reading::Reading;
use crate::serve::bound::WaitError;
use crate::serve::Serving;

/// What an earlier run created, planned and registered again, for the workers to install.
#[derive(Default)]
pub struct Restored {
    /// Its tables, in creation order.
    pub tables: Vec<crate::table::TableDef>,
    /// What the workers keep of its views, in creation order.
    pub views: Vec<crate::dataflow::created::Maintained>,
}

/// The SQL engine of a running pipeline: cheap to clone, shared by every front end.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
    limits: Limits,
}

struct Shared {
    serving: Serving,
    topic: String,
    workers: usize,
    context: SessionContext,
    catalog: Arc<Mutex<catalog::Catalog>>,
    parsers: compat::Parsers,
    /// A session state made once, for the scans of point lookups (see `point.rs`).
    point_state: datafusion::execution::session_state::SessionState,
    /// Held by a statement that changes the catalog, from its checks to its end: a view is
    /// never created over a table being dropped, nor a table dropped under a view being made.
    ddl: tokio::sync::Mutex<()>,
    /// Where statements run; shut down with the engine.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Engine {
    /// An engine over the pipeline `serving` reads (`workers` workers, reading `topic`), whose
    /// created views are kept in `catalog`. Returns it and what the workers are to keep of
    /// the views created by an earlier run (planned again here, in creation order).
    pub fn new(
        serving: Serving,
        topic: &str,
        limits: Limits,
        catalog: Arc<Mutex<catalog::Catalog>>,
    ) -> anyhow::Result<(Engine, Restored)> {
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        // More threads than cores: a statement that plans for long (a 50,000-value IN list)
        // holds a thread without yielding, and the kernel's time slices keep the others,
        // point lookups among them, answering meanwhile. Each statement's parallelism stays
        // the cores'.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads((2 * threads).max(4))
            .thread_name("sql")
            // Planning recurses over the statement (bounded by `limits::check_complexity`).
            .thread_stack_size(16 << 20)
            .enable_all()
            .build()?;
        let workers = serving.workers();
        let context = context::session(topic, workers, threads)?;
        runtime.block_on(builtin::check(&context.state(), workers))?;
        let shared = Arc::new(Shared {
            serving,
            topic: topic.to_owned(),
            workers,
            point_state: context.state(),
            context,
            catalog,
            parsers: compat::Parsers::default(),
            ddl: tokio::sync::Mutex::new(()),
            runtime: Some(runtime),
        });
        let engine = Engine { shared, limits };
        // Tables first: a view may read one.
        let tables = engine.restore_tables();
        let views = engine.restore_views();
        Ok((engine, Restored { tables, views }))
    }

    /// The same engine with other limits.
    pub fn with_limits(&self, limits: Limits) -> Engine {
        Engine { shared: Arc::clone(&self.shared), limits }
    }

    /// Its limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The pipeline it reads.
    pub fn serving(&self) -> &Serving {
        &self.shared.serving
    }

    /// The topic the views read.
    pub fn topic(&self) -> &str {
        &self.shared.topic
    }

    /// The created views.
    pub fn catalog(&self) -> &Arc<Mutex<catalog::Catalog>> {
        &self.shared.catalog
    }

    fn runtime(&self) -> &tokio::runtime::Handle {
        self.shared.runtime.as_ref().expect("the runtime lives as long as the engine").handle()
    }

    /// Answers one statement (outside a session: its settings last for it alone).
    pub async fn execute(&self, text: &str) -> Result<Answer, SqlError> {
        self.execute_in(&mut Session::default(), text).await
    }

    /// Answers one statement of `session`, from any async task: it runs on the engine's own
    /// runtime, within the statement's time limit.
    pub async fn execute_in(&self, session: &mut Session, text: &str) -> Result<Answer, SqlError> {
        let (engine, text, mut owned) = (self.clone(), text.to_owned(), session.clone());
        let (answer, back) = self
            .on_runtime(async move {
                let answer = engine.run(&mut owned, &text).await;
                (answer, owned)
            })
            .await?;
        *session = back;
        answer
    }

    /// Runs `work` on the engine's runtime. Dropping the returned future (a client gone, a
    /// `CancelRequest`) aborts the work: no statement goes on computing for nobody.
    async fn on_runtime<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Result<T, SqlError> {
        /// Aborts its task when dropped; a no-op once the task has ended.
        struct AbortOnDrop(tokio::task::AbortHandle);
        impl Drop for AbortOnDrop {
            fn drop(&mut self) {
                self.0.abort();
            }
        }
        let task = self.runtime().spawn(work);
        let _abort = AbortOnDrop(task.abort_handle());
        task.await.map_err(|e| SqlError::Internal(format!("the statement failed: {e}")))
    }

    /// [`Engine::execute_in`] from a thread that may block (the prompt).
    pub fn execute_blocking(&self, session: &mut Session, text: &str) -> Result<Answer, SqlError> {
        let (engine, text, mut owned) = (self.clone(), text.to_owned(), std::mem::take(session));
        let (answer, back) = self.runtime().block_on(async move {
            let answer = engine.run(&mut owned, &text).await;
            (answer, owned)
        });
        *session = back;
        answer
    }

    /// Parses `text` into one statement, client catalog queries rewritten.
    fn parse(&self, text: &str) -> Result<Statement, SqlError> {
        limits::check_complexity(text)?;
        let mut statements = self.shared.parsers.parse(text).map_err(|e| SqlError::parse(&e, text))?;
        match statements.len() {
            0 => Err(SqlError::Syntax { message: "no statement".into(), position: None }),
            1 => {
                let mut statement = statements.remove(0);
                names::postgres_names(&mut statement);
                Ok(statement)
            }
            n => Err(SqlError::Syntax { message: format!("{n} statements: send one at a time"), position: None }),
        }
    }

    /// Answers one statement, on this task, within its time limit.
    async fn run(&self, session: &mut Session, text: &str) -> Result<Answer, SqlError> {
        let timeout = session.statement_timeout.unwrap_or(self.limits.timeout);
        match tokio::time::timeout(timeout, self.answer(session, text)).await {
            Ok(answer) => answer,
            Err(_) => {
                Err(SqlError::Canceled(format!("it took longer than {} ms (statement_timeout)", timeout.as_millis())))
            }
        }
    }

    async fn answer(&self, session: &mut Session, text: &str) -> Result<Answer, SqlError> {
        let mut statement = self.parse(text)?;
        if let Some(said) = session.take(&statement, &self.shared.topic) {
            return match said? {
                Said::Set => Ok(Answer::tag("SET")),
                Said::Shown(name, _) if name == "as_of" => Ok(self.as_of_answer(session.as_of.as_ref())),
                Said::Shown(name, value) => one_text(&name, &value),
            };
        }
        match &statement {
            Statement::StartTransaction { .. } => return Ok(Answer::tag("BEGIN")),
            Statement::Commit { .. } => return Ok(Answer::tag("COMMIT")),
            Statement::Rollback { .. } => return Ok(Answer::tag("ROLLBACK")),
            // Drivers wrap reads in savepoints (SQLAlchemy's nested transactions): nothing to undo.
            Statement::Savepoint { .. } => return Ok(Answer::tag("SAVEPOINT")),
            Statement::ReleaseSavepoint { .. } => return Ok(Answer::tag("RELEASE")),
            Statement::CreateTable(create) => {
                let _ddl = self.shared.ddl.lock().await;
                return create_table::create(self, create, text).await;
            }
            Statement::Drop {
                object_type: datafusion::sql::sqlparser::ast::ObjectType::Table,
                if_exists,
                names,
                ..
            } => {
                let names: Vec<String> = names.iter().map(|n| n.to_string().trim_matches('"').to_lowercase()).collect();
                let _ddl = self.shared.ddl.lock().await;
                return create_table::drop_tables(self, &names, *if_exists).await;
            }
            Statement::CreateView(_) | Statement::Drop { .. } => {
                let _ddl = self.shared.ddl.lock().await;
                return ddl::run(self, &statement, text).await;
            }
            Statement::ShowViews { .. } => return ddl::show_views(self).await,
            Statement::Query(_)
            | Statement::Explain { .. }
            | Statement::ShowTables { .. }
            | Statement::ShowColumns { .. } => {}
            other => {
                let what = other.to_string();
                let what = what.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
                return Err(SqlError::Unsupported(format!(
                    "{what}: the pipeline's relations are read-only (the inputs are the history and Kafka)"
                )));
            }
        }
        // `current_setting('x')` is the session's value, as text.
        let _ = statement.visit(&mut Settings { session, topic: &self.shared.topic });
        if let Some(bound) = session.min_offsets.clone() {
            self.shared
                .serving
                .wait_for_async(&bound, session.wait())
                .await
                .map_err(|e| self.not_reached(e, session))?;
        }
        let snapshot = Snapshot::new(self.shared.serving.clone(), self.limits.timeout);
        let answer = match point::recognize(&statement).and_then(|p| Some((p.key(None)?, p))) {
            Some((key, point)) => STATEMENT.scope(Arc::clone(&snapshot), point.answer(self, key)).await,
            None => STATEMENT.scope(Arc::clone(&snapshot), self.query(statement, text, None)).await,
        };
        let answer = answer.map(|mut answer| {
            answer.as_of = snapshot.as_of();
            answer
        })?;
        if answer.as_of.is_some() {
            session.as_of = answer.as_of.clone();
        }
        Ok(answer)
    }

    /// Plans and runs a query (its `$n` parameters bound to `params`), its answer collected
    /// within the row and byte limits.
    async fn query(
        &self,
        statement: Statement,
        text: &str,
        params: Option<datafusion::common::ParamValues>,
    ) -> Result<Answer, SqlError> {
        let fail = |e: datafusion::error::DataFusionError| SqlError::from_datafusion(e, text);
        let state = self.shared.context.state();
        let mut plan: LogicalPlan = state
            .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(statement)))
            .await
            .map_err(fail)?;
        if let Some(params) = params {
            plan = plan.replace_params_with_values(&params).map_err(fail)?;
        }
        let frame = self.shared.context.execute_logical_plan(plan).await.map_err(fail)?;
        let schema = std::sync::Arc::new(frame.schema().as_arrow().clone());
        let mut stream = frame.execute_stream().await.map_err(fail)?;
        let (mut batches, mut rows, mut bytes) = (Vec::new(), 0usize, 0usize);
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(fail)?;
            rows += batch.num_rows();
            bytes += batch.get_array_memory_size();
            self.within_limits(rows, bytes)?;
            batches.push(batch);
        }
        Ok(Answer { schema, batches, as_of: None, tag: None })
    }

    /// An answer of `rows` rows taking `bytes` bytes, if the limits allow it (54000 otherwise).
    fn within_limits(&self, rows: usize, bytes: usize) -> Result<(), SqlError> {
        if rows > self.limits.max_rows {
            return Err(SqlError::TooLarge(format!(
                "the query would return more than {} rows; narrow it with WHERE or LIMIT",
                self.limits.max_rows
            )));
        }
        if bytes > self.limits.max_bytes {
            return Err(SqlError::TooLarge(format!(
                "the answer would take more than {} MiB; narrow it with WHERE, LIMIT or fewer columns",
                self.limits.max_bytes >> 20
            )));
        }
        Ok(())
    }

    /// Answers a query whose `$n` parameters are bound to typed values (never pasted into its
    /// text), for the Postgres protocol's extended queries.
    pub async fn execute_bound(
        &self,
        session: &mut Session,
        text: &str,
        params: datafusion::common::ParamValues,
    ) -> Result<Answer, SqlError> {
        let statement = self.parse(text)?;
        if !matches!(statement, Statement::Query(_)) {
            return self.execute_in(session, text).await;
        }
        if let Some(bound) = session.min_offsets.clone() {
            self.shared
                .serving
                .wait_for_async(&bound, session.wait())
                .await
                .map_err(|e| self.not_reached(e, session))?;
        }
        let (engine, text, timeout) =
            (self.clone(), text.to_owned(), session.statement_timeout.unwrap_or(self.limits.timeout));
        let snapshot = Snapshot::new(self.shared.serving.clone(), self.limits.timeout);
        let scoped = Arc::clone(&snapshot);
        let ran = self
            .on_runtime(async move {
                let point = point::recognize(&statement).and_then(|p| Some((p.key(Some(&params))?, p)));
                let query = async {
                    match point {
                        Some((key, point)) => point.answer(&engine, key).await,
                        None => engine.query(statement, &text, Some(params)).await,
                    }
                };
                tokio::time::timeout(timeout, STATEMENT.scope(scoped, query)).await
            })
            .await?;
        let mut answer = match ran {
            Ok(answer) => answer?,
            Err(_) => {
                return Err(SqlError::Canceled(format!(
                    "it took longer than {} ms (statement_timeout)",
                    timeout.as_millis()
                )))
            }
        };
        answer.as_of = snapshot.as_of();
        if answer.as_of.is_some() {
            session.as_of = answer.as_of.clone();
        }
        Ok(answer)
    }

    /// The types of a statement's `$n` parameters and its columns, without running it (the
    /// Postgres protocol's Describe): `None` columns for a statement that answers no rows.
    pub async fn describe(
        &self,
        text: &str,
    ) -> Result<
        (Vec<Option<datafusion::arrow::datatypes::DataType>>, Option<datafusion::arrow::datatypes::SchemaRef>),
        SqlError,
    > {
        let statement = self.parse(text)?;
        if !matches!(
            statement,
            Statement::Query(_)
                | Statement::Explain { .. }
                | Statement::ShowTables { .. }
                | Statement::ShowColumns { .. }
        ) {
            if let Statement::ShowVariable { variable } = &statement {
                let name = variable.iter().map(|i| i.value.clone()).collect::<Vec<_>>().join(" ");
                let answer =
                    if name.eq_ignore_ascii_case("as_of") { self.as_of_answer(None) } else { one_text(&name, "")? };
                return Ok((Vec::new(), Some(answer.schema)));
            }
            return Ok((Vec::new(), None));
        }
        let (engine, text) = (self.clone(), text.to_owned());
        self.on_runtime(async move {
            let state = engine.shared.context.state();
            let plan = state
                .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(statement)))
                .await
                .map_err(|e| SqlError::from_datafusion(e, &text))?;
            let types = plan.get_parameter_types().map_err(|e| SqlError::from_datafusion(e, &text))?;
            let mut named: Vec<(usize, Option<datafusion::arrow::datatypes::DataType>)> = types
                .into_iter()
                .filter_map(|(name, ty)| Some((name.trim_start_matches('$').parse::<usize>().ok()?, ty)))
                .collect();
            named.sort_by_key(|(n, _)| *n);
            let count = named.last().map_or(0, |(n, _)| *n);
            let mut params = vec![None; count];
            for (n, ty) in named {
                params[n - 1] = ty;
            }
            Ok((params, Some(std::sync::Arc::new(plan.schema().as_arrow().clone()))))
        })
        .await?
    }

    fn not_reached(&self, error: WaitError, session: &Session) -> SqlError {
        let topic = &self.shared.topic;
        match error {
            WaitError::NotReached(reading) => SqlError::Canceled(format!(
                "the views did not reach min_offsets {} within {} ms; they reflect {}",
                session.min_offsets.as_ref().map_or(String::new(), |b| b.display(topic)),
                session.wait().as_millis(),
                crate::output::as_of(&reading, topic)
            )),
            error @ WaitError::NoSuchPartition { .. } => SqlError::InvalidParameter(error.to_string()),
            WaitError::Read(error) => SqlError::from_read(error),
        }
    }

    /// `SHOW as_of`: the time and input positions of the session's previous answer.
    fn as_of_answer(&self, reading: Option<&Reading>) -> Answer {
        use datafusion::arrow::array::{Int64Array, StringArray};
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        let schema = Arc::new(Schema::new(vec![
            Field::new("time", DataType::Int64, true),
            Field::new("offsets", DataType::Utf8, true),
        ]));
        let topic = &self.shared.topic;
        let offsets =
            reading.map(|r| r.offsets.iter().map(|(p, o)| format!("{topic}/{p}:{o}")).collect::<Vec<_>>().join(","));
        let batch = datafusion::arrow::record_batch::RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![reading.map(|r| r.time as i64)])),
                Arc::new(StringArray::from(vec![offsets])),
            ],
        )
        .expect("two columns of one row");
        Answer { schema, batches: vec![batch], as_of: reading.cloned(), tag: None }
    }

    /// Every view at one time: the built-in ones as the HTTP API and the view files show them
    /// (the `top` view cut to `top_k`), and the created ones' rows.
    pub async fn read_all(&self, top_k: usize) -> Result<Reading, SqlError> {
        let serving = self.shared.serving.clone();
        let snapshot = Snapshot::new(serving.clone(), self.limits.timeout);
        let time = snapshot.time().await?;
        let scope = crate::reading::ReadScope::Everything { top_k };
        let mut reading = serving.read_at(time, scope, self.limits.timeout).await.map_err(SqlError::from_read)?;
        let views = self.shared.catalog.lock().unwrap_or_else(|p| p.into_inner()).all();
        let unlimited = self.with_limits(Limits { max_rows: usize::MAX, max_bytes: usize::MAX, ..self.limits });
        for (def, _) in views {
            let statement = self.parse(&format!("SELECT * FROM \"{}\"", def.name))?;
            let answer = STATEMENT.scope(Arc::clone(&snapshot), unlimited.query(statement, "", None)).await;
            // A view dropped meanwhile is left out.
            let Ok(answer) = answer else { continue };
            reading.created.push(crate::reading::CreatedRows {
                name: def.name.clone(),
                definition: def.sql.clone(),
                columns: answer.columns().into_iter().map(|(n, _)| n).collect(),
                rows: answer.rows(),
            });
        }
        Ok(reading)
    }

    /// [`Engine::read_all`] from a thread that may block.
    pub fn read_all_blocking(&self, top_k: usize) -> Result<Reading, SqlError> {
        let engine = self.clone();
        self.runtime().block_on(async move { engine.read_all(top_k).await })
    }
}

/// An answer of one text value in a column named `name`.
fn one_text(name: &str, value: &str) -> Result<Answer, SqlError> {
    use datafusion::arrow::array::StringArray;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    let schema = Arc::new(Schema::new(vec![Field::new(name, DataType::Utf8, true)]));
    let batch = datafusion::arrow::record_batch::RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(StringArray::from(vec![value]))],
    )
    .map_err(|e| SqlError::Internal(e.to_string()))?;
    Ok(Answer { schema, batches: vec![batch], as_of: None, tag: None })
}

/// Replaces `current_setting('name')` by the session's value of the setting, as text.
struct Settings<'a> {
    session: &'a Session,
    topic: &'a str,
}

impl VisitorMut for Settings<'_> {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut SqlExpr) -> std::ops::ControlFlow<()> {
        if let SqlExpr::Function(function) = expr {
            let name = function.name.to_string().to_lowercase();
            if name == "current_setting" || name == "pg_catalog.current_setting" {
                let argument = function.args.to_string();
                let setting = argument.trim_matches(|c| c == '(' || c == ')' || c == '\'' || c == ' ');
                let value = self.session.get(setting, self.topic).unwrap_or_default();
                *expr = SqlExpr::Value(SqlValue::SingleQuotedString(value).into());
            }
        }
        std::ops::ControlFlow::Continue(())
    }
}

/// How long a statement waits for the workers at most, beside its own limit.
pub const READ_WAIT: Duration = Duration::from_secs(10);
