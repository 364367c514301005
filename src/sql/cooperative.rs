//! Every join yields: a physical optimizer rule that wraps each join's output in DataFusion's
//! [`CooperativeExec`], so that each batch a join emits spends a unit of the task's budget.
//!
//! DataFusion makes its sources and exchanges cooperative, but a join can emit without end
//! from one input batch: `generate_series(1, 100000) a CROSS JOIN generate_series(1, 100000) b`
//! multiplies each batch of `b` by all of `a`, and an aggregate above it pulls those batches
//! in a loop that never returns `Pending`. Such a statement ran for seconds past its
//! `statement_timeout`, a `CancelRequest` or a stop, since those only take effect when the
//! task yields. Wrapped, the loop yields every few hundred batches:
//!
//! ```text
//! AggregateExec                    AggregateExec
//!   NestedLoopJoinExec      ──►      CooperativeExec
//!     …                                NestedLoopJoinExec
//!                                        …
//! ```

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::ExecutionPlan;

/// The rule (see the module's documentation).
#[derive(Debug, Default)]
pub struct JoinsYield;

impl PhysicalOptimizerRule for JoinsYield {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if node.name().contains("Join") {
                Ok(Transformed::yes(Arc::new(CooperativeExec::new(node)) as Arc<dyn ExecutionPlan>))
            } else {
                Ok(Transformed::no(node))
            }
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "joins_yield"
    }

    fn schema_check(&self) -> bool {
        true
    }
}
