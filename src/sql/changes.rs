//! A view's changes between two times, computed from its arrangements' updates — what a
//! changefeed sends, without reading the whole view and comparing.
//!
//! A read of a view is its plan over the arrangements it reads. When everything above the
//! scans is *linear* — projections, filters, aliases: each output row depends on one input
//! row — the plan maps the changes of its inputs to its own changes: a row that leaves an
//! input leaves the output as what the plan made of it, a row that joins joins. So the plan
//! is run once more with every scan replaced by a scan of that arrangement's changes between
//! the two times (rows with how many more or fewer times they are there, read from the
//! trace's recent batches, see [`crate::compute::walk::ChangesWalk`]), and the difference is
//! carried through every projection as one more column:
//!
//! ```text
//! CREATE VIEW big AS SELECT customer, sum(amount) AS total FROM transactions
//!                    GROUP BY customer HAVING sum(amount) > 200
//! read:     Projection(customer, total) ← Filter(total > 200) ← groups
//! changes:  Projection(customer, total, __diff) ← Filter(total > 200) ← changes of groups since 7
//! groups:   (Ali, 3, 320, …, -1) (Ali, 4, 400, …, +1) (Sara, 1, 180, …, -1)    from 7 to 9
//! view:     (Ali, 320, -1) (Ali, 400, +1)                  Sara was under 200: no change
//! ```
//!
//! A view whose plan is not linear over arrangements read by their changes (an aggregate or a
//! join at read time, `transactions` or a built-in view of totals scanned) has no changes
//! here: [`Engine::changes_plan`] says so, and its feed reads it whole at each step instead.
//!
//! The changes are exact only while the earlier time is held (no trace compacts past it): a
//! feed holds the time of its last event ([`Hold`]) until it has read the next.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::Column;
use datafusion::datasource::{provider_as_source, source_as_provider, TableProvider, TableType, ViewTable};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, Filter, LogicalPlan, Projection, SubqueryAlias, TableScanBuilder, Volatility};
use datafusion::physical_plan::{execute_stream, ExecutionPlan};
use futures::StreamExt;

use super::read::{Hold, Snapshot, STATEMENT};
use super::table::LiveTable;
use super::{Answer, Engine, SqlError};
use crate::compute::changes::has_changes;
use crate::compute::columns::{schema, ColumnType};
use crate::compute::scan::{Seek, DIFF};

impl Engine {
    /// Holds the latest time every view is complete through, until the hold is dropped.
    pub async fn hold(&self) -> Result<Arc<Hold>, SqlError> {
        let (serving, timeout) = (self.shared.serving.clone(), self.limits.timeout);
        self.on_runtime(async move { Hold::new(&serving, timeout).await.map(Arc::new) }).await?
    }

    /// View `name`'s rows at a held time.
    pub async fn rows_at(&self, name: &str, at: &Arc<Hold>) -> Result<Answer, SqlError> {
        let statement = self.parse(&format!("SELECT * FROM \"{name}\""))?;
        let (engine, snapshot) = (self.clone(), Snapshot::held(Arc::clone(at), None));
        let answer = self
            .on_runtime(async move {
                let answer = STATEMENT.scope(Arc::clone(&snapshot), engine.query(statement, "", None)).await;
                answer.map(|answer| Answer { as_of: snapshot.as_of(), ..answer })
            })
            .await?;
        answer
    }

    /// The plan of view `name`'s changes (see [`Engine::changes`]): `None` when the view's
    /// plan has none to read (see the module docs). Made once for all the reads of a feed.
    pub async fn changes_plan(&self, name: &str) -> Result<Option<ChangesPlan>, SqlError> {
        let statement = self.parse(&format!("SELECT * FROM \"{name}\""))?;
        let (engine, name) = (self.clone(), name.to_owned());
        self.on_runtime(async move {
            let fail = |e: DataFusionError| SqlError::from_datafusion(e, "");
            let state = engine.shared.context.state();
            let plan = state
                .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(statement)))
                .await
                .map_err(fail)?;
            // A view that says `now()` or `random()` means another thing at each time: its
            // changes are not those of its inputs (a subquery is evaluated at one time too).
            if !immutable(&plan) {
                return Ok(None);
            }
            let plan = state.optimize(&plan).map_err(fail)?;
            let made = linear(&plan).and_then(|changes| changes.map(|c| state.optimize(&c)).transpose());
            match made {
                // Optimized once: each read only makes the physical plan.
                Ok(changes) => Ok(changes.map(ChangesPlan)),
                Err(error) => {
                    tracing::warn!(view = %name, %error, "a view's changes cannot be planned: its feeds read it whole");
                    Ok(None)
                }
            }
        })
        .await?
    }

    /// A view's changes (its [`ChangesPlan`]) from the held time `since` to the held time
    /// `at`: its rows, each with how many more (or fewer) times it is there in a last column
    /// [`DIFF`], as the plan makes them of its inputs' changes (a row may appear more than
    /// once, or leave and come back: the caller sums).
    pub async fn changes(&self, plan: &ChangesPlan, since: &Hold, at: &Arc<Hold>) -> Result<Answer, SqlError> {
        let (engine, snapshot, plan) = (self.clone(), Snapshot::held(Arc::clone(at), Some(since)), plan.0.clone());
        self.on_runtime(async move {
            let fail = |e: DataFusionError| SqlError::from_datafusion(e, "");
            let run = async {
                let state = engine.shared.context.state();
                let physical = state.query_planner().create_physical_plan(&plan, &state).await.map_err(fail)?;
                let schema = physical.schema();
                let mut stream = execute_stream(physical, state.task_ctx()).map_err(fail)?;
                let mut batches = Vec::new();
                while let Some(batch) = stream.next().await {
                    batches.push(batch.map_err(fail)?);
                }
                Ok::<_, SqlError>(Answer { schema, batches, as_of: None, tag: None })
            };
            let answer = STATEMENT.scope(Arc::clone(&snapshot), run).await?;
            Ok(Answer { as_of: snapshot.as_of(), ..answer })
        })
        .await?
    }
}

/// A view's plan made to compute its changes between two times (given when it runs).
#[derive(Clone, Debug)]
pub struct ChangesPlan(LogicalPlan);

/// `plan` made to compute its changes (with a last column [`DIFF`]), if it is linear over
/// relations read by their changes.
fn linear(plan: &LogicalPlan) -> Result<Option<LogicalPlan>> {
    let input = linear;
    Ok(Some(match plan {
        LogicalPlan::TableScan(scan) => {
            let provider = source_as_provider(&scan.source)?;
            let Some(live) = provider.as_ref().downcast_ref::<LiveTable>() else { return Ok(None) };
            // A scan cut short (`LIMIT` pushed down) is no map of rows.
            if !has_changes(live.relation()) || scan.fetch.is_some() || live.columns().iter().any(|(n, _)| n == DIFF) {
                return Ok(None);
            }
            // Every column, the filters the scan took as seeks above them (their columns may be
            // no longer projected), then the columns the scan gave.
            let width = live.columns().len();
            let changes = ChangesTable::new(Arc::clone(&provider), live);
            let scanned = TableScanBuilder::new(scan.table_name.clone(), provider_as_source(Arc::new(changes)))
                .with_projection(Some((0..=width).collect()))
                .build()?;
            let mut plan = LogicalPlan::TableScan(scanned);
            if let Some(predicate) = conjunction(scan.filters.clone()) {
                plan = LogicalPlan::Filter(Filter::try_new(predicate, Arc::new(plan))?);
            }
            let projection = scan.projection.clone().unwrap_or_else(|| (0..width).collect());
            let columns = projection
                .into_iter()
                .chain([width])
                .map(|i| Expr::Column(Column::new(Some(scan.table_name.clone()), plan.schema().field(i).name())));
            LogicalPlan::Projection(Projection::try_new(columns.collect(), Arc::new(plan))?)
        }
        LogicalPlan::Projection(projection) => {
            let Some(below) = input(&projection.input)? else { return Ok(None) };
            if projection.schema.fields().iter().any(|f| f.name() == DIFF) {
                return Ok(None);
            }
            let (qualifier, _) = below.schema().qualified_field_with_unqualified_name(DIFF)?;
            let diff = Expr::Column(Column::new(qualifier.cloned(), DIFF));
            let exprs = projection.expr.iter().cloned().chain([diff]).collect();
            LogicalPlan::Projection(Projection::try_new(exprs, Arc::new(below))?)
        }
        LogicalPlan::Filter(filter) => {
            let Some(below) = input(&filter.input)? else { return Ok(None) };
            LogicalPlan::Filter(Filter::try_new(filter.predicate.clone(), Arc::new(below))?)
        }
        LogicalPlan::SubqueryAlias(alias) => {
            let Some(below) = input(&alias.input)? else { return Ok(None) };
            LogicalPlan::SubqueryAlias(SubqueryAlias::try_new(Arc::new(below), alias.alias.clone())?)
        }
        _ => return Ok(None),
    }))
}

/// Whether every expression of `plan`, and of the views it reads, is immutable: no function
/// whose value depends on when it runs (`now()`) or on nothing (`random()`), no subquery.
fn immutable(plan: &LogicalPlan) -> bool {
    let mut immutable = true;
    let _ = plan.apply(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let view = source_as_provider(&scan.source).ok();
            if let Some(view) = view.as_ref().and_then(|v| v.as_ref().downcast_ref::<ViewTable>()) {
                immutable &= self::immutable(view.logical_plan());
            }
        }
        node.apply_expressions(|expr| {
            let _ = expr.apply(|e| {
                immutable &= match e {
                    Expr::ScalarFunction(f) => f.func.signature().volatility == Volatility::Immutable,
                    Expr::ScalarSubquery(_)
                    | Expr::Exists(_)
                    | Expr::InSubquery(_)
                    | Expr::OuterReferenceColumn(..) => false,
                    _ => true,
                };
                Ok(TreeNodeRecursion::Continue)
            });
            Ok(TreeNodeRecursion::Continue)
        })?;
        Ok(if immutable { TreeNodeRecursion::Continue } else { TreeNodeRecursion::Stop })
    });
    immutable
}

/// A relation's changes between the two times of the statement's snapshot, as a table: its
/// columns, then [`DIFF`].
#[derive(Debug)]
struct ChangesTable {
    /// The relation, a [`LiveTable`].
    table: Arc<dyn TableProvider>,
    schema: SchemaRef,
}

impl ChangesTable {
    fn new(table: Arc<dyn TableProvider>, live: &LiveTable) -> ChangesTable {
        let columns: Vec<(&str, ColumnType)> =
            live.columns().iter().map(|(n, t)| (n.as_str(), *t)).chain([(DIFF, ColumnType::Int)]).collect();
        ChangesTable { table, schema: schema(&columns) }
    }
}

#[async_trait]
impl TableProvider for ChangesTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let live = self
            .table
            .as_ref()
            .downcast_ref::<LiveTable>()
            .ok_or_else(|| DataFusionError::Internal("changes of a relation that is not live".into()))?;
        let since = STATEMENT
            .try_with(|snapshot| snapshot.since())
            .ok()
            .flatten()
            .ok_or_else(|| DataFusionError::Internal("changes read outside a read of changes".into()))?;
        let projection = projection.cloned().unwrap_or_else(|| (0..self.schema.fields().len()).collect());
        live.plan_scan(projection, Seek::All, Some(since))
    }
}
