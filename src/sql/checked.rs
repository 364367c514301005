//! Integer arithmetic that fails on overflow, as Postgres' does, where DataFusion's wraps:
//! `9223372036854775807::bigint + 1` is an error (22003), not `-9223372036854775808`.
//!
//! An analyzer rule, run after DataFusion's type coercion, replaces every `+`, `-` and `*`
//! whose operands are integers with `checked_add`, `checked_sub` or `checked_mul`, which use
//! Arrow's checked kernels. Each expression keeps its name, so that the plan above it (a
//! projection over an aggregation's `a + 1`) still finds it:
//!
//! ```text
//! Projection: t.a + Int64(1)              Projection: checked_add(t.a, Int64(1)) AS t.a + Int64(1)
//!   Filter: t.a * Int64(2) > Int64(10) ─►   Filter: checked_mul(t.a, Int64(2)) > Int64(10)
//! ```
//!
//! Decimals are not rewritten (their overflow is checked against their precision), nor are
//! floats (which overflow to infinity, as Postgres' `double precision` does not — a float
//! is never money here).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef};
use datafusion::arrow::compute::kernels::numeric;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, Result, ScalarValue};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::utils::merge_schema;
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, ExprSchemable, LogicalPlan, Operator, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;

/// The analyzer rule (see the module's documentation).
#[derive(Debug)]
pub struct CheckedArithmetic {
    add: Arc<ScalarUDF>,
    sub: Arc<ScalarUDF>,
    mul: Arc<ScalarUDF>,
}

impl Default for CheckedArithmetic {
    fn default() -> Self {
        let udf = |op| Arc::new(ScalarUDF::from(Checked::new(op)));
        CheckedArithmetic { add: udf(Op::Add), sub: udf(Op::Sub), mul: udf(Op::Mul) }
    }
}

impl CheckedArithmetic {
    /// The rule, with its three functions.
    pub fn new() -> CheckedArithmetic {
        CheckedArithmetic::default()
    }

    fn rewrite(&self, expr: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
        let Expr::BinaryExpr(BinaryExpr { left, op, right }) = &expr else { return Ok(Transformed::no(expr)) };
        let udf = match op {
            Operator::Plus => &self.add,
            Operator::Minus => &self.sub,
            Operator::Multiply => &self.mul,
            _ => return Ok(Transformed::no(expr)),
        };
        // A type that cannot be known here (an outer column of a correlated subquery) is left
        // to DataFusion.
        let integers = matches!((left.get_type(schema), right.get_type(schema)), (Ok(l), Ok(r)) if l.is_integer() && r.is_integer() && l == r);
        if !integers {
            return Ok(Transformed::no(expr));
        }
        let args = vec![left.as_ref().clone(), right.as_ref().clone()];
        Ok(Transformed::yes(Expr::ScalarFunction(ScalarFunction::new_udf(Arc::clone(udf), args))))
    }
}

impl AnalyzerRule for CheckedArithmetic {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        plan.transform_up_with_subqueries(|node| {
            let mut schema = merge_schema(&node.inputs());
            if let LogicalPlan::TableScan(scan) = &node {
                schema.merge(&DFSchema::try_from_qualified_schema(scan.table_name.clone(), &scan.source.schema())?);
            }
            let names = NamePreserver::new(&node);
            let rewritten = node.map_expressions(|expr| {
                let name = names.save(&expr);
                expr.transform_up(|e| self.rewrite(e, &schema)).map(|t| t.update_data(|e| name.restore(e)))
            })?;
            if rewritten.transformed {
                rewritten.map_data(|plan| plan.recompute_schema())
            } else {
                Ok(rewritten)
            }
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "checked_arithmetic"
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Op {
    Add,
    Sub,
    Mul,
}

/// `checked_add(a, b)`, `checked_sub(a, b)`, `checked_mul(a, b)` over two integers of one type.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Checked {
    op: Op,
    signature: Signature,
}

impl Checked {
    fn new(op: Op) -> Checked {
        Checked { op, signature: Signature::any(2, Volatility::Immutable) }
    }
}

impl ScalarUDFImpl for Checked {
    fn name(&self) -> &str {
        match self.op {
            Op::Add => "checked_add",
            Op::Sub => "checked_sub",
            Op::Mul => "checked_mul",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(arg_types[0].clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [left, right] = args.args.as_slice() else {
            return datafusion::common::exec_err!("{} takes two arguments", self.name());
        };
        let kernel = match self.op {
            Op::Add => numeric::add,
            Op::Sub => numeric::sub,
            Op::Mul => numeric::mul,
        };
        let result: ArrayRef = match (left, right) {
            (ColumnarValue::Array(l), ColumnarValue::Array(r)) => kernel(l, r)?,
            (ColumnarValue::Array(l), ColumnarValue::Scalar(r)) => kernel(l, &r.to_scalar()?)?,
            (ColumnarValue::Scalar(l), ColumnarValue::Array(r)) => kernel(&l.to_scalar()?, r)?,
            (ColumnarValue::Scalar(l), ColumnarValue::Scalar(r)) => {
                let one = kernel(&l.to_scalar()?, &r.to_scalar()?)?;
                return Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(one.as_ref(), 0)?));
            }
        };
        debug_assert_eq!(result.len(), args.number_rows.max(result.len()));
        Ok(ColumnarValue::Array(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn answer(sql: &str) -> Result<String> {
        let context = datafusion::execution::context::SessionContext::new();
        context.add_analyzer_rule(Arc::new(CheckedArithmetic::new()));
        let batches = context.sql(sql).await?.collect().await?;
        Ok(datafusion::arrow::util::pretty::pretty_format_batches(&batches)?.to_string())
    }

    #[tokio::test(flavor = "current_thread")]
    async fn integer_overflow_is_an_error_not_a_wrapped_value() {
        let error = answer("SELECT CAST(9223372036854775807 AS BIGINT) + 1").await.unwrap_err();
        assert!(error.find_root().to_string().contains("overflow"), "{error}");
        let error = answer("SELECT x * 2 FROM (VALUES (CAST(5000000000000000000 AS BIGINT))) t(x)").await.unwrap_err();
        assert!(error.find_root().to_string().contains("overflow"), "{error}");
        let error = answer("SELECT CAST(-9223372036854775807 AS BIGINT) - 2").await.unwrap_err();
        assert!(error.find_root().to_string().contains("overflow"), "{error}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn arithmetic_that_fits_answers_and_keeps_its_names() {
        let out = answer("SELECT x + 1, count(*) FROM (VALUES (1), (2), (2)) t(x) GROUP BY x + 1 ORDER BY x + 1")
            .await
            .unwrap();
        assert!(out.contains("| t.x + Int64(1) | count(*) |"), "{out}");
        assert!(out.contains("| 3              | 2        |"), "{out}");
    }
}
