//! The functions this engine adds to DataFusion's, or means otherwise:
//!
//! | function | why |
//! |---|---|
//! | `sum` | exact or an error (22003), never wrapped (see `exact_sum.rs`) |
//! | `col_description()`, `obj_description()`, `pg_get_viewdef()`, `pg_get_function_result()`, `pg_get_function_arguments()` | NULL: no object has a comment; definitions are in `information_schema.views` (psql's `\d+`); no function of ours is in `pg_proc` (psql's `\df`) |
//! | `prefix_each()` | what psql's `\d+` asks as `array(SELECT 'toast.' \|\| x FROM unnest(a) x)` |
//! | `pg_type_is_visible()`, `pg_function_is_visible()` | true: what SQLAlchemy's `inspect` asks of `pg_catalog`'s types |
//! | `version()` | `PostgreSQL 16.6 …` first, the shape SQLAlchemy and other clients parse |
//! | `lambda_avg(total, count)` | a created view's `avg(amount)` from its groups' total and count, computed as DataFusion's `avg` computes it, so that the view and an ad-hoc query agree to the last digit |
//!
//! `pg_catalog`'s functions (`current_schema()`, `pg_get_userbyid()`, `format_type()`, …) come
//! from `datafusion-pg-catalog`; `current_setting()` is answered from the session before
//! planning (see `sql/session.rs`).

use std::sync::Arc;

use datafusion::arrow::array::{Array, Decimal128Array, Int64Array};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{
    AggregateUDF, ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// The scale of an average of amounts (cents, scale 2), as DataFusion's `avg` gives it.
pub const AVG_SCALE: i8 = 6;

/// Registers the functions on `context`.
pub fn register(context: &datafusion::execution::context::SessionContext) {
    context.register_udaf(AggregateUDF::from(super::exact_sum::ExactSum::default()));
    context.register_udf(ScalarUDF::from(Version::default()));
    context.register_udf(lambda_avg().as_ref().clone());
    context.register_udf(ScalarUDF::from(PrefixEach { signature: Signature::any(2, Volatility::Immutable) }));
    for name in [
        "col_description",
        "obj_description",
        "shobj_description",
        "pg_get_viewdef",
        "pg_get_function_result",
        "pg_get_function_arguments",
    ] {
        context.register_udf(ScalarUDF::from(NoDescription {
            name,
            signature: Signature::variadic_any(Volatility::Stable),
        }));
    }
    for name in ["pg_type_is_visible", "pg_function_is_visible"] {
        context.register_udf(ScalarUDF::from(Visible { name, signature: Signature::any(1, Volatility::Stable) }));
    }
}

/// `prefix_each(prefix, array)`: each element of a text array with `prefix` before it, what
/// psql's `\d+` asks as `array(SELECT 'toast.' || x FROM unnest(a) x)` (see `compat.rs`).
#[derive(Debug, PartialEq, Eq, Hash)]
struct PrefixEach {
    signature: Signature,
}

impl ScalarUDFImpl for PrefixEach {
    fn name(&self) -> &str {
        "prefix_each"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::List(Arc::new(datafusion::arrow::datatypes::Field::new_list_field(DataType::Utf8, true))))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        use datafusion::arrow::array::{AsArray, ListBuilder, StringBuilder};
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let prefixes = datafusion::arrow::compute::cast(&arrays[0], &DataType::Utf8)?;
        let prefixes = prefixes.as_string::<i32>();
        let lists = datafusion::arrow::compute::cast(
            &arrays[1],
            &DataType::List(Arc::new(datafusion::arrow::datatypes::Field::new_list_field(DataType::Utf8, true))),
        )?;
        let lists = lists.as_list::<i32>();
        let mut out = ListBuilder::new(StringBuilder::new());
        for row in 0..args.number_rows {
            if lists.is_null(row) {
                out.append_null();
                continue;
            }
            let prefix = if prefixes.is_null(row) { "" } else { prefixes.value(row) };
            let elements = lists.value(row);
            let elements = elements.as_string::<i32>();
            for i in 0..elements.len() {
                if elements.is_null(i) {
                    out.values().append_null();
                } else {
                    out.values().append_value(format!("{prefix}{}", elements.value(i)));
                }
            }
            out.append(true);
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// `col_description()`, `obj_description()`, `shobj_description()`: NULL — no object has a
/// comment (`COMMENT ON` is not a statement here); psql's `\d+` shows the column empty.
/// `pg_get_viewdef()`: NULL too (a created view's definition is in `SHOW VIEWS` and
/// `information_schema.views`; the catalog's oids do not name it).
#[derive(Debug, PartialEq, Eq, Hash)]
struct NoDescription {
    name: &'static str,
    signature: Signature,
}

impl ScalarUDFImpl for NoDescription {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Ok(ColumnarValue::Array(datafusion::arrow::array::new_null_array(&DataType::Utf8, args.number_rows)))
    }
}

/// `pg_type_is_visible(oid)`, `pg_function_is_visible(oid)`: true — every type and function of
/// `pg_catalog` is on the search path (SQLAlchemy's `inspect` asks, for domains and enums).
#[derive(Debug, PartialEq, Eq, Hash)]
struct Visible {
    name: &'static str,
    signature: Signature,
}

impl ScalarUDFImpl for Visible {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let visible: datafusion::arrow::array::BooleanArray = (0..args.number_rows).map(|_| Some(true)).collect();
        Ok(ColumnarValue::Array(Arc::new(visible)))
    }
}

/// `lambda_avg(total, count)` (see the module's documentation).
pub fn lambda_avg() -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::from(LambdaAvg::default()))
}

/// `version()`: Postgres' shape first.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Version {
    signature: Signature,
}

impl Default for Version {
    fn default() -> Self {
        Version { signature: Signature::exact(vec![], Volatility::Stable) }
    }
}

/// What `version()` answers.
pub fn version() -> String {
    format!(
        "PostgreSQL 16.6 on {} (atelier-lambda {}, Apache DataFusion {})",
        std::env::consts::ARCH,
        env!("CARGO_PKG_VERSION"),
        datafusion::DATAFUSION_VERSION
    )
}

impl ScalarUDFImpl for Version {
    fn name(&self) -> &str {
        "version"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, _: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(version()))))
    }
}

/// `lambda_avg(total, count)`: `total * 10^4 / count` (toward zero) at scale 6 — what
/// DataFusion's `avg` of amounts (scale 2) gives; NULL for no row.
#[derive(Debug, PartialEq, Eq, Hash)]
struct LambdaAvg {
    signature: Signature,
}

impl Default for LambdaAvg {
    fn default() -> Self {
        let money = DataType::Decimal128(38, 2);
        LambdaAvg { signature: Signature::exact(vec![money, DataType::Int64], Volatility::Immutable) }
    }
}

/// The average of `count` amounts that add up to `total` cents, at [`AVG_SCALE`].
pub fn average(total: i128, count: i64) -> Option<i128> {
    (count != 0).then(|| total.saturating_mul(10i128.pow((AVG_SCALE - 2) as u32)) / i128::from(count))
}

impl ScalarUDFImpl for LambdaAvg {
    fn name(&self) -> &str {
        "lambda_avg"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Decimal128(38, AVG_SCALE))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let totals = arrays[0].as_any().downcast_ref::<Decimal128Array>().expect("coerced to money");
        let counts = arrays[1].as_any().downcast_ref::<Int64Array>().expect("coerced to a count");
        let averages: Decimal128Array =
            (0..rows)
                .map(|i| {
                    if totals.is_null(i) || counts.is_null(i) {
                        None
                    } else {
                        average(totals.value(i), counts.value(i))
                    }
                })
                .collect();
        Ok(ColumnarValue::Array(Arc::new(averages.with_precision_and_scale(38, AVG_SCALE)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_truncate_as_datafusion_does() {
        assert_eq!(average(40_000, 3), Some(133_333_333), "133.333333");
        assert_eq!(average(-100, 3), Some(-333_333), "toward zero");
        assert_eq!(average(5, 0), None);
    }

    #[test]
    fn version_starts_the_postgres_way() {
        assert!(version().starts_with("PostgreSQL 16.6 on "));
    }
}
