//! Intervals compared as PostgreSQL compares them: by their length, a
//! month counted as 30 days and a day as 24 hours (`interval '1 day' =
//! interval '24 hours'`, `interval '36 hours' > interval '1 day'`).
//! DataFusion compares an interval's (months, days, nanoseconds) field by
//! field, and `timestamp - timestamp` (a duration) against an interval
//! the same way, so `now() - created < interval '1 day'` answered wrongly
//! for any difference of more than a day's hours. A comparison of two
//! intervals or durations is planned as a comparison of their lengths
//! (`eddy_interval_length`, nanoseconds as numeric).

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, Decimal128Array};
use datafusion::arrow::datatypes::{
    DataType, DurationMicrosecondType, DurationMillisecondType, DurationNanosecondType,
    DurationSecondType, IntervalDayTimeType, IntervalMonthDayNanoType, IntervalUnit,
    IntervalYearMonthType, TimeUnit,
};
use datafusion::common::{DFSchema, DataFusionError, Result as DfResult};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ExprSchemable, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::BinaryOperator;

const NANOS_PER_DAY: i128 = 86_400_000_000_000;

pub fn register(ctx: &SessionContext) -> DfResult<()> {
    ctx.state_ref()
        .write()
        .register_expr_planner(Arc::new(IntervalPlanner))?;
    Ok(())
}

fn length_udf() -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::new_from_impl(IntervalLength {
        signature: Signature::any(1, Volatility::Immutable),
    }))
}

fn is_length(t: &DataType) -> bool {
    matches!(t, DataType::Interval(_) | DataType::Duration(_))
}

#[derive(Debug)]
struct IntervalPlanner;

impl ExprPlanner for IntervalPlanner {
    fn plan_binary_op(
        &self,
        expr: RawBinaryExpr,
        schema: &DFSchema,
    ) -> DfResult<PlannerResult<RawBinaryExpr>> {
        use BinaryOperator as B;
        if !matches!(
            expr.op,
            B::Eq | B::NotEq | B::Lt | B::LtEq | B::Gt | B::GtEq
        ) {
            return Ok(PlannerResult::Original(expr));
        }
        let (Ok(l), Ok(r)) = (expr.left.get_type(schema), expr.right.get_type(schema)) else {
            return Ok(PlannerResult::Original(expr));
        };
        if !(is_length(&l) && is_length(&r)) {
            return Ok(PlannerResult::Original(expr));
        }
        let length = |e: Expr| Expr::ScalarFunction(ScalarFunction::new_udf(length_udf(), vec![e]));
        let op = match expr.op {
            B::Eq => datafusion::logical_expr::Operator::Eq,
            B::NotEq => datafusion::logical_expr::Operator::NotEq,
            B::Lt => datafusion::logical_expr::Operator::Lt,
            B::LtEq => datafusion::logical_expr::Operator::LtEq,
            B::Gt => datafusion::logical_expr::Operator::Gt,
            _ => datafusion::logical_expr::Operator::GtEq,
        };
        Ok(PlannerResult::Planned(Expr::BinaryExpr(
            datafusion::logical_expr::BinaryExpr::new(
                Box::new(length(expr.left)),
                op,
                Box::new(length(expr.right)),
            ),
        )))
    }
}

/// An interval's or duration's length in nanoseconds (30-day months).
#[derive(Debug, PartialEq, Eq, Hash)]
struct IntervalLength {
    signature: Signature,
}

impl ScalarUDFImpl for IntervalLength {
    fn name(&self) -> &str {
        "eddy_interval_length"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Decimal128(38, 0))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let a = args.args[0].to_array(args.number_rows)?;
        let n = a.len();
        let lengths: Vec<Option<i128>> = match a.data_type() {
            DataType::Interval(IntervalUnit::MonthDayNano) => {
                let a = a.as_primitive::<IntervalMonthDayNanoType>();
                (0..n)
                    .map(|i| {
                        a.is_valid(i).then(|| {
                            let v = a.value(i);
                            (v.months as i128 * 30 + v.days as i128) * NANOS_PER_DAY
                                + v.nanoseconds as i128
                        })
                    })
                    .collect()
            }
            DataType::Interval(IntervalUnit::DayTime) => {
                let a = a.as_primitive::<IntervalDayTimeType>();
                (0..n)
                    .map(|i| {
                        a.is_valid(i).then(|| {
                            let v = a.value(i);
                            v.days as i128 * NANOS_PER_DAY + v.milliseconds as i128 * 1_000_000
                        })
                    })
                    .collect()
            }
            DataType::Interval(IntervalUnit::YearMonth) => {
                let a = a.as_primitive::<IntervalYearMonthType>();
                (0..n)
                    .map(|i| {
                        a.is_valid(i)
                            .then(|| a.value(i) as i128 * 30 * NANOS_PER_DAY)
                    })
                    .collect()
            }
            DataType::Duration(unit) => {
                let (values, scale): (Vec<Option<i64>>, i128) = match unit {
                    TimeUnit::Second => (
                        a.as_primitive::<DurationSecondType>().iter().collect(),
                        1_000_000_000,
                    ),
                    TimeUnit::Millisecond => (
                        a.as_primitive::<DurationMillisecondType>().iter().collect(),
                        1_000_000,
                    ),
                    TimeUnit::Microsecond => (
                        a.as_primitive::<DurationMicrosecondType>().iter().collect(),
                        1_000,
                    ),
                    TimeUnit::Nanosecond => (
                        a.as_primitive::<DurationNanosecondType>().iter().collect(),
                        1,
                    ),
                };
                values
                    .into_iter()
                    .map(|v| v.map(|v| v as i128 * scale))
                    .collect()
            }
            other => {
                return Err(DataFusionError::Internal(format!(
                    "eddy_interval_length of {other}"
                )));
            }
        };
        let out = Decimal128Array::from(lengths).with_precision_and_scale(38, 0)?;
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}
