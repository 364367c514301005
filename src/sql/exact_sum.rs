//! `sum` that is exact or fails (22003), never wrapped — as Postgres' `numeric` sum.
//!
//! DataFusion's `sum` adds with wrap-around: of a 64-bit integer column it answers a 64-bit
//! integer, and of `Decimal128` it adds 128-bit integers, so past either bound the answer
//! is silently wrong. Here the argument decides how it is added:
//!
//! | argument | added as | answer |
//! |---|---|---|
//! | an integer | `Decimal128(20, 0)` | `Decimal128(38, 0)`: exact for up to 10¹⁸ rows |
//! | `Decimal128(p, s)`, p ≤ 20 | itself | `Decimal128(38, s)`: exact for up to 10¹⁸ rows |
//! | any other decimal (money is `Decimal128(38, 2)`) | `Decimal256(76, s)` | `Decimal128(38, s)`, or 22003 when the exact sum has more than 38 digits |
//! | floats, intervals | as DataFusion does | |
//!
//! ```text
//! SELECT sum(CAST(999999999999999999999999999999999999.99 AS DECIMAL(38,2)))
//! FROM generate_series(1, 10)        -- was -208471007628153903901238222953046343.78
//! ERROR 22003: numeric field overflow: the sum has more than 38 digits
//! ```

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray};
use datafusion::arrow::compute::{cast_with_options, CastOptions};
use datafusion::arrow::datatypes::{i256, DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, EmitTo, GroupsAccumulator, ReversedUDAF, Signature, Volatility,
};

/// The widest decimal added as itself: 10¹⁸ rows of 20 digits stay within 38.
const NARROW_PRECISION: u8 = 20;
/// What wider decimals are added as.
const WIDE_PRECISION: u8 = 76;

/// The `sum` aggregate (see the module's documentation).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ExactSum {
    inner: datafusion::functions_aggregate::sum::Sum,
    signature: Signature,
}

impl Default for ExactSum {
    fn default() -> Self {
        ExactSum { inner: Default::default(), signature: Signature::user_defined(Volatility::Immutable) }
    }
}

/// The scale of a sum added as `Decimal256`, if `input` is one.
fn wide_scale(input: &DataType) -> Option<i8> {
    match input {
        DataType::Decimal256(_, scale) => Some(*scale),
        _ => None,
    }
}

impl ExactSum {
    /// DataFusion's accumulator arguments with the wide type as the answer, for a wide sum.
    fn inner_args<'a>(args: &AccumulatorArgs<'a>) -> AccumulatorArgs<'a> {
        let mut inner = args.clone();
        if let Some(scale) = wide_scale(args.expr_fields[0].data_type()) {
            let field = Field::new(args.return_field.name(), DataType::Decimal256(WIDE_PRECISION, scale), true);
            inner.return_field = Arc::new(field);
        }
        inner
    }
}

impl AggregateUDFImpl for ExactSum {
    fn name(&self) -> &str {
        "sum"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let [arg] = arg_types else {
            return datafusion::common::plan_err!("sum takes one argument, not {}", arg_types.len());
        };
        Ok(vec![match arg {
            t if t.is_integer() => DataType::Decimal128(NARROW_PRECISION, 0),
            DataType::Null => DataType::Decimal128(NARROW_PRECISION, 0),
            DataType::Decimal128(p, _) | DataType::Decimal32(p, _) | DataType::Decimal64(p, _)
                if *p <= NARROW_PRECISION =>
            {
                arg.clone()
            }
            DataType::Decimal32(_, s)
            | DataType::Decimal64(_, s)
            | DataType::Decimal128(_, s)
            | DataType::Decimal256(_, s) => DataType::Decimal256(WIDE_PRECISION, *s),
            t if t.is_floating() => DataType::Float64,
            DataType::Duration(_) | DataType::Interval(_) => arg.clone(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                return datafusion::common::plan_err!(
                    "No function matches the given name and argument types 'sum({arg})'"
                )
            }
            other => other.clone(),
        }])
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match &arg_types[0] {
            DataType::Decimal128(_, scale) | DataType::Decimal256(_, scale) => Ok(DataType::Decimal128(38, *scale)),
            other => self.inner.return_type(std::slice::from_ref(other)),
        }
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let inner = self.inner.accumulator(Self::inner_args(&args))?;
        Ok(match wide_scale(args.expr_fields[0].data_type()) {
            Some(scale) => Box::new(Narrowed { inner, scale }),
            None => inner,
        })
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        match wide_scale(args.input_fields[0].data_type()) {
            Some(scale) => {
                let field = Field::new(args.return_field.name(), DataType::Decimal256(WIDE_PRECISION, scale), true);
                let wide = StateFieldsArgs { return_field: Arc::new(field), ..args };
                self.inner.state_fields(wide)
            }
            None => self.inner.state_fields(args),
        }
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        self.inner.groups_accumulator_supported(args)
    }

    fn create_groups_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn GroupsAccumulator>> {
        let inner = self.inner.create_groups_accumulator(Self::inner_args(&args))?;
        Ok(match wide_scale(args.expr_fields[0].data_type()) {
            Some(scale) => Box::new(NarrowedGroups { inner, scale }),
            None => inner,
        })
    }

    fn create_sliding_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let inner = self.inner.create_sliding_accumulator(Self::inner_args(&args))?;
        Ok(match wide_scale(args.expr_fields[0].data_type()) {
            Some(scale) => Box::new(Narrowed { inner, scale }),
            None => inner,
        })
    }

    fn reverse_expr(&self) -> ReversedUDAF {
        ReversedUDAF::Identical
    }

    fn default_value(&self, data_type: &DataType) -> Result<ScalarValue> {
        self.inner.default_value(data_type)
    }
}

/// The error of a sum past 38 digits.
fn overflow() -> datafusion::error::DataFusionError {
    datafusion::error::DataFusionError::ArrowError(
        Box::new(datafusion::arrow::error::ArrowError::ArithmeticOverflow(
            "numeric field overflow: the sum has more than 38 digits".into(),
        )),
        None,
    )
}

/// A wide sum's answer as `Decimal128(38, scale)`, or 22003.
fn narrow(value: ScalarValue, scale: i8) -> Result<ScalarValue> {
    match value {
        ScalarValue::Decimal256(None, ..) => Ok(ScalarValue::Decimal128(None, 38, scale)),
        ScalarValue::Decimal256(Some(sum), ..) => {
            let bound = i256::from_i128(10i128.pow(38));
            if sum >= bound || sum <= bound.wrapping_neg() {
                return Err(overflow());
            }
            Ok(ScalarValue::Decimal128(Some(sum.as_i128()), 38, scale))
        }
        other => Ok(other),
    }
}

/// A wide sum's accumulator, answering `Decimal128(38, scale)`.
#[derive(Debug)]
struct Narrowed {
    inner: Box<dyn Accumulator>,
    scale: i8,
}

impl Accumulator for Narrowed {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.inner.update_batch(values)
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        narrow(self.inner.evaluate()?, self.scale)
    }

    fn size(&self) -> usize {
        self.inner.size() + std::mem::size_of::<Self>()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        self.inner.state()
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.inner.merge_batch(states)
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.inner.retract_batch(values)
    }

    fn supports_retract_batch(&self) -> bool {
        self.inner.supports_retract_batch()
    }
}

/// A wide sum's groups accumulator, answering `Decimal128(38, scale)`.
struct NarrowedGroups {
    inner: Box<dyn GroupsAccumulator>,
    scale: i8,
}

impl GroupsAccumulator for NarrowedGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.inner.update_batch(values, group_indices, opt_filter, total_num_groups)
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let wide = self.inner.evaluate(emit_to)?;
        // A checked cast: a value past 38 digits is an error, not a NULL.
        let options = CastOptions { safe: false, ..Default::default() };
        cast_with_options(&wide, &DataType::Decimal128(38, self.scale), &options).map_err(|_| overflow())
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        self.inner.state(emit_to)
    }

    fn merge_batch(&mut self, values: &[ArrayRef], group_indices: &[usize], total_num_groups: usize) -> Result<()> {
        self.inner.merge_batch(values, group_indices, total_num_groups)
    }

    fn convert_to_state(&self, values: &[ArrayRef], opt_filter: Option<&BooleanArray>) -> Result<Vec<ArrayRef>> {
        self.inner.convert_to_state(values, opt_filter)
    }

    fn size(&self) -> usize {
        self.inner.size()
    }
}
