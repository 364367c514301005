//! The scan of a relation as DataFusion runs it: one partition per worker that holds rows of
//! it, each partition the stream of batches that worker sends (see [`crate::compute::scan`]),
//! so that DataFusion's operators above run in parallel over the workers' shares.
//!
//! `EXPLAIN` shows what is read and how:
//!
//! ```text
//! LiveScan: customers [customer, total], seek customer = 'Ali' on worker 1 of 2
//! LiveScan: transactions [amount, category], every row, 2 workers
//! ```
//!
//! `overall` is held in parts (every worker a part of its one row): its scan is one partition
//! that adds the parts up.

use std::fmt;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{Array, ArrayRef, Decimal128Array, Int64Array};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties};
use futures::{StreamExt, TryStreamExt};

use super::read::Snapshot;
use crate::compute::columns::{Cell, ColumnType, Columns};
use crate::compute::relation::Relation;
use crate::compute::scan::{ScanPart, ScanSpec, Seek};

type Receivers = Vec<Option<tokio::sync::mpsc::Receiver<ScanPart>>>;

/// A scan of one relation at the statement's time.
pub struct LiveScanExec {
    snapshot: Arc<Snapshot>,
    spec: ScanSpec,
    /// The workers whose shares are read (all, or those that hold the keys sought).
    workers: Vec<usize>,
    /// Of all the workers.
    of: usize,
    /// The schema of the batches given out (the projected columns).
    schema: SchemaRef,
    /// For a relation held in parts: the columns given out once they are added up (the
    /// workers send every column).
    output: Vec<usize>,
    properties: Arc<PlanProperties>,
    /// The workers' channels, opened by the first partition that runs.
    opened: Arc<tokio::sync::OnceCell<Result<Mutex<Receivers>, DataFusionError>>>,
}

impl fmt::Debug for LiveScanExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LiveScanExec {:?}", self.spec)
    }
}

impl LiveScanExec {
    /// A scan of `spec` over `workers` (of `of`), at `snapshot`'s time; `output`: the columns
    /// given out, where they are not `spec`'s own (a relation held in parts).
    pub fn new(snapshot: Arc<Snapshot>, mut spec: ScanSpec, workers: Vec<usize>, of: usize) -> Self {
        let output = spec.projection.clone();
        if spec.relation.split_over_workers() {
            spec.projection = (0..spec.columns.len()).collect();
        }
        let schema = ScanSpec { projection: output.clone(), ..spec.clone() }.schema();
        let partitions = if spec.relation.split_over_workers() { 1 } else { workers.len().max(1) };
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        LiveScanExec { snapshot, spec, workers, of, schema, output, properties, opened: Arc::default() }
    }

    /// Opens every worker's channel and asks for the scan (once, for all partitions).
    async fn open(
        snapshot: Arc<Snapshot>,
        spec: ScanSpec,
        workers: Vec<usize>,
        opened: Arc<tokio::sync::OnceCell<Result<Mutex<Receivers>, DataFusionError>>>,
    ) -> Result<(), DataFusionError> {
        let result = opened
            .get_or_init(|| async {
                let time = snapshot.time().await.map_err(|e| DataFusionError::External(Box::new(e)))?;
                let receivers = snapshot
                    .serving()
                    .scan(time, spec, &workers)
                    .map_err(|e| DataFusionError::External(Box::new(super::SqlError::from_read(e))))?;
                Ok(Mutex::new(receivers.into_iter().map(Some).collect()))
            })
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) => Err(DataFusionError::Execution(error.to_string())),
        }
    }
}

impl DisplayAs for LiveScanExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.spec.relation {
            Relation::Groups(id) => format!("view {id}'s groups"),
            Relation::Table(id) => format!("table {id}"),
            Relation::Rows(id) => format!("view {id}'s rows"),
            other => other.name().to_owned(),
        };
        let columns: Vec<&str> = self.output.iter().map(|i| self.spec.column(*i).0).collect();
        write!(f, "LiveScan: {name} [{}]", columns.join(", "))?;
        let key = match self.spec.relation {
            Relation::Groups(_) => self.spec.columns.first().map_or("key", |c| c.0.as_str()),
            other => other.key().and_then(|k| other.columns().get(k)).map_or("key", |c| c.0),
        };
        match &self.spec.seek {
            Seek::All => write!(f, ", every row")?,
            Seek::Keys(keys) => {
                let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
                write!(f, ", seek {key} in ({})", keys.join(", "))?
            }
            Seek::Range { from, to } => {
                let mut bounds = Vec::new();
                if let Some((k, inclusive)) = from {
                    bounds.push(format!("{key} {} {k}", if *inclusive { ">=" } else { ">" }));
                }
                if let Some((k, inclusive)) = to {
                    bounds.push(format!("{key} {} {k}", if *inclusive { "<=" } else { "<" }));
                }
                write!(f, ", seek {}", bounds.join(" AND "))?
            }
        }
        if self.workers.len() == self.of {
            write!(f, ", {} worker{}", self.of, if self.of == 1 { "" } else { "s" })
        } else {
            let workers: Vec<String> = self.workers.iter().map(|w| w.to_string()).collect();
            write!(f, " on worker {} of {}", workers.join(", "), self.of)
        }
    }
}

impl ExecutionPlan for LiveScanExec {
    fn name(&self) -> &str {
        "LiveScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    #[allow(deprecated)]
    fn with_new_children(self: Arc<Self>, _children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<datafusion::execution::SendableRecordBatchStream> {
        let (snapshot, spec, workers, opened) =
            (Arc::clone(&self.snapshot), self.spec.clone(), self.workers.clone(), Arc::clone(&self.opened));
        let split = self.spec.relation.split_over_workers();
        let schema = self.schema.clone();
        let parts = async move {
            LiveScanExec::open(snapshot, spec.clone(), workers.clone(), Arc::clone(&opened)).await?;
            let receivers: Vec<tokio::sync::mpsc::Receiver<ScanPart>> = {
                let opened = opened.get().expect("opened above").as_ref().expect("opened without error");
                let mut all = opened.lock().unwrap_or_else(|p| p.into_inner());
                if split {
                    all.iter_mut().filter_map(Option::take).collect()
                } else {
                    all.get_mut(partition).and_then(Option::take).into_iter().collect()
                }
            };
            let streams = receivers.into_iter().map(|receiver| {
                Box::pin(futures::stream::unfold(receiver, |mut receiver| async move {
                    let part = receiver.recv().await?;
                    let batch = match part {
                        ScanPart::Batch(batch) => Ok(batch),
                        ScanPart::Failed(error) => {
                            Err(DataFusionError::External(Box::new(super::SqlError::from_read(error))))
                        }
                    };
                    Some((batch, receiver))
                }))
            });
            Ok::<_, DataFusionError>(futures::stream::select_all(streams))
        };
        let batches = futures::stream::once(parts).try_flatten();
        let stream: datafusion::execution::SendableRecordBatchStream = if split {
            let output = self.output.clone();
            let merged = futures::stream::once(async move {
                let parts: Vec<RecordBatch> = batches.try_collect().await?;
                merge_overall(&parts, &output, schema.clone())
            });
            Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), merged))
        } else {
            Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), batches.boxed()))
        };
        Ok(stream)
    }
}

/// The one row of `overall` from the workers' parts (total, count, customers; each the sum of
/// the parts'), its average, the columns `projection` names.
fn merge_overall(parts: &[RecordBatch], projection: &[usize], schema: SchemaRef) -> Result<RecordBatch> {
    let (mut total, mut count, mut customers) = (0i128, 0i64, 0i64);
    for part in parts {
        let column = |i: usize| -> Result<ArrayRef> {
            (i < part.num_columns())
                .then(|| Arc::clone(part.column(i)))
                .ok_or_else(|| DataFusionError::Internal(format!("overall's part lacks column {i}")))
        };
        let totals = column(0)?;
        let totals = totals.as_any().downcast_ref::<Decimal128Array>().expect("a money column");
        let counts = column(1)?;
        let counts = counts.as_any().downcast_ref::<Int64Array>().expect("an int column");
        let heads = column(2)?;
        let heads = heads.as_any().downcast_ref::<Int64Array>().expect("an int column");
        for row in 0..part.num_rows() {
            total += totals.value(row);
            count += counts.value(row);
            customers += heads.value(row);
        }
    }
    let avg =
        if count == 0 { Cell::Null } else { Cell::Cents(crate::amount::divide_rounded(total, i128::from(count))) };
    let row = [Cell::Cents(total), Cell::Int(count), Cell::Int(customers), avg];
    let types: Vec<ColumnType> = projection.iter().map(|i| Relation::Overall.columns()[*i].1).collect();
    let mut columns = Columns::new(&types);
    let cells: Vec<Cell<'_>> = projection.iter().map(|i| row[*i]).collect();
    columns.push(&cells);
    Ok(columns.finish(schema))
}
