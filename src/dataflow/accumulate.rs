//! Retractable accumulators: the per-group state of one aggregate, updated
//! by `(row, diff)` in O(1) or O(log n), and evaluated to the aggregate's
//! value.
//!
//! COUNT, SUM (integers, floats, decimals, intervals), AVG (integers,
//! floats, decimals), MIN/MAX (an ordered
//! multiset of values, so deleting the extreme is correct), BOOL_AND/OR and
//! DISTINCT variants have their own state. Any other aggregate function
//! (STRING_AGG, ARRAY_AGG, STDDEV, …) keeps the multiset of its argument
//! values in the group and evaluates DataFusion's own accumulator over it
//! when the group changes: correct for every function, at a cost
//! proportional to the group's distinct values.

use std::collections::BTreeMap;
use std::sync::Arc;

use ahash::AHashMap;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, UInt32Array, new_null_array,
};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{
    DataType, Decimal128Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type,
    IntervalMonthDayNano, IntervalMonthDayNanoType, IntervalUnit, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::scalar::ScalarValue;

use super::checkpoint::{Reader, Writer};
use super::rows::{Codec, RowBytes};
use super::{DataflowError, Result};

/// One aggregate's state in one group.
pub trait Accumulator: Send {
    /// Apply row `row` of `args` with multiplicity `diff`; `value` is the
    /// row bytes of the argument tuple when [`AccumulatorFactory::encode`]
    /// gives them (accumulators keyed by value).
    fn update(
        &mut self,
        args: &[ArrayRef],
        row: usize,
        value: Option<&[u8]>,
        diff: i64,
    ) -> Result<()>;
    /// The aggregate's current value.
    fn value(&self) -> Result<ScalarValue>;
    /// Approximate bytes of state.
    fn size(&self) -> usize;
    /// Write the state (checkpoints).
    fn save(&self, w: &mut Writer);
    /// Take back what `save` wrote, into a fresh accumulator of the same
    /// aggregate.
    fn restore(&mut self, r: &mut Reader<'_>) -> Result<()>;
}

/// Builds the accumulator of one aggregate for each new group.
pub struct AccumulatorFactory {
    kind: Kind,
    pub expr: Arc<AggregateFunctionExpr>,
    pub return_type: DataType,
    /// Types of the argument columns (including ordering columns).
    pub arg_types: Vec<DataType>,
    distinct: bool,
    /// Codec for the argument tuple (multisets).
    codec: Option<Arc<Codec>>,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Count,
    /// SUM of integers or decimals: an exact i128 running sum (a decimal
    /// keeps its scale, so its unscaled values add up).
    SumExact,
    SumFloat,
    SumInterval,
    AvgFloat,
    AvgDecimal {
        in_scale: i8,
        out_scale: i8,
    },
    Min,
    Max,
    BoolAnd,
    BoolOr,
    Generic,
}

fn is_int(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
    )
}

fn is_float(t: &DataType) -> bool {
    matches!(t, DataType::Float32 | DataType::Float64)
}

impl AccumulatorFactory {
    pub fn new(expr: Arc<AggregateFunctionExpr>, arg_types: Vec<DataType>) -> Result<Self> {
        let return_type = expr.field().data_type().clone();
        let name = expr.fun().name().to_ascii_lowercase();
        let distinct = expr.is_distinct();
        let one = arg_types.len() == 1;
        let arg = arg_types.first().cloned().unwrap_or(DataType::Null);
        let kind = match name.as_str() {
            "count" => Kind::Count,
            "sum" if one && (is_int(&arg) || matches!(arg, DataType::Decimal128(..))) => {
                Kind::SumExact
            }
            "sum" if one && is_float(&arg) => Kind::SumFloat,
            "sum" if one && arg == DataType::Interval(IntervalUnit::MonthDayNano) => {
                Kind::SumInterval
            }
            "avg" | "mean" if one && (is_int(&arg) || is_float(&arg)) => Kind::AvgFloat,
            "avg" | "mean" => match (&arg, &return_type) {
                (DataType::Decimal128(_, s), DataType::Decimal128(_, t)) if one => {
                    Kind::AvgDecimal {
                        in_scale: *s,
                        out_scale: *t,
                    }
                }
                _ => Kind::Generic,
            },
            "min" if one => Kind::Min,
            "max" if one => Kind::Max,
            "bool_and" if one => Kind::BoolAnd,
            "bool_or" if one => Kind::BoolOr,
            _ => Kind::Generic,
        };
        let codec = match kind {
            Kind::Min | Kind::Max | Kind::Generic => Some(Arc::new(Codec::new(&arg_types)?)),
            _ if distinct => Some(Arc::new(Codec::new(&arg_types)?)),
            _ => None,
        };
        Ok(AccumulatorFactory {
            kind,
            expr,
            return_type,
            arg_types,
            distinct,
            codec,
        })
    }

    /// Row bytes of the argument tuples of a batch, when this aggregate keeps
    /// multisets of values (MIN/MAX, DISTINCT, generic); computed once per
    /// batch and handed to `update` row by row.
    pub fn encode(&self, args: &[ArrayRef]) -> Result<Option<super::rows::Encoded>> {
        match &self.codec {
            Some(c) if !args.is_empty() => Ok(Some(c.encode(args)?)),
            _ => Ok(None),
        }
    }

    pub fn create(&self) -> Box<dyn Accumulator> {
        let inner: Box<dyn Accumulator> = match self.kind {
            Kind::Count => Box::new(Count(0)),
            Kind::SumExact => Box::new(SumExact {
                sum: 0,
                n: 0,
                out: self.return_type.clone(),
            }),
            Kind::SumFloat => Box::new(SumFloat { sum: 0.0, n: 0 }),
            Kind::SumInterval => Box::new(SumInterval::default()),
            Kind::AvgFloat => Box::new(AvgFloat { sum: 0.0, n: 0 }),
            Kind::AvgDecimal {
                in_scale,
                out_scale,
            } => Box::new(AvgDecimal {
                sum: 0,
                n: 0,
                in_scale,
                out_scale,
                out: self.return_type.clone(),
            }),
            Kind::Min | Kind::Max => Box::new(Extreme {
                values: BTreeMap::new(),
                max: matches!(self.kind, Kind::Max),
                codec: self.codec.clone(),
                out: self.return_type.clone(),
            }),
            Kind::BoolAnd | Kind::BoolOr => Box::new(Bools {
                trues: 0,
                falses: 0,
                and: matches!(self.kind, Kind::BoolAnd),
            }),
            Kind::Generic => Box::new(Generic {
                values: BTreeMap::new(),
                codec: self.codec.clone(),
                expr: Arc::clone(&self.expr),
                distinct: self.distinct,
                out: self.return_type.clone(),
            }),
        };
        if self.distinct && !matches!(self.kind, Kind::Generic | Kind::Min | Kind::Max) {
            Box::new(Distinct {
                seen: AHashMap::new(),
                inner,
            })
        } else {
            inner
        }
    }
}

/// Whether no argument is NULL in `row`. A `NullArray` (a literal NULL
/// argument, `count(NULL)`) has no validity buffer, so `is_valid` alone
/// would call its rows valid.
fn all_valid(args: &[ArrayRef], row: usize) -> bool {
    args.iter()
        .all(|a| a.data_type() != &DataType::Null && a.is_valid(row))
}

struct Count(i64);

impl Accumulator for Count {
    fn update(
        &mut self,
        args: &[ArrayRef],
        row: usize,
        _value: Option<&[u8]>,
        diff: i64,
    ) -> Result<()> {
        if all_valid(args, row) {
            self.0 += diff;
        }
        Ok(())
    }
    fn value(&self) -> Result<ScalarValue> {
        Ok(ScalarValue::Int64(Some(self.0)))
    }
    fn size(&self) -> usize {
        8
    }
    fn save(&self, w: &mut Writer) {
        w.i64(self.0);
    }
    fn restore(&mut self, r: &mut Reader<'_>) -> Result<()> {
        self.0 = r.i64()?;
        Ok(())
    }
}

fn int_at(a: &ArrayRef, row: usize) -> Result<i128> {
    Ok(match a.data_type() {
        DataType::Int8 => a.as_primitive::<Int8Type>().value(row) as i128,
        DataType::Int16 => a.as_primitive::<Int16Type>().value(row) as i128,
        DataType::Int32 => a.as_primitive::<Int32Type>().value(row) as i128,
        DataType::Int64 => a.as_primitive::<Int64Type>().value(row) as i128,
        DataType::UInt8 => a.as_primitive::<UInt8Type>().value(row) as i128,
        DataType::UInt16 => a.as_primitive::<UInt16Type>().value(row) as i128,
        DataType::UInt32 => a.as_primitive::<UInt32Type>().value(row) as i128,
        DataType::UInt64 => a.as_primitive::<UInt64Type>().value(row) as i128,
        DataType::Decimal128(..) => a.as_primitive::<Decimal128Type>().value(row),
        t => return Err(DataflowError::Other(format!("not an integer column: {t}"))),
    })
}

fn float_at(a: &ArrayRef, row: usize) -> Result<f64> {
    Ok(match a.data_type() {
        DataType::Float32 => a.as_primitive::<Float32Type>().value(row) as f64,
        DataType::Float64 => a.as_primitive::<Float64Type>().value(row),
        _ => int_at(a, row)? as f64,
    })
}

/// A scalar of `out`'s type from an i128 (the sum of an integer column).
fn int_scalar(v: i128, out: &DataType) -> Result<ScalarValue> {
    match out {
        DataType::Int64 => i64::try_from(v)
            .map(|v| ScalarValue::Int64(Some(v)))
            .map_err(|_| DataflowError::Other("bigint out of range".into())),
        DataType::UInt64 => u64::try_from(v)
            .map(|v| ScalarValue::UInt64(Some(v)))
            .map_err(|_| DataflowError::Other("bigint out of range".into())),
        DataType::Decimal128(p, s) => Ok(ScalarValue::Decimal128(Some(v), *p, *s)),
        t => Ok(ScalarValue::Int64(Some(v as i64)).cast_to(t)?),
    }
}

struct SumExact {
    sum: i128,
    n: i64,
    out: DataType,
}

impl Accumulator for SumExact {
    fn update(
        &mut self,
        args: &[ArrayRef],
        row: usize,
        _value: Option<&[u8]>,
        diff: i64,
    ) -> Result<()> {
        if all_valid(args, row) {
            self.sum += int_at(&args[0], row)? * diff as i128;
            self.n += diff;
        }
        Ok(())
    }
    fn value(&self) -> Result<ScalarValue> {
        if self.n == 0 {
            return Ok(ScalarValue::try_from(&self.out)?);
        }
        int_scalar(self.sum, &self.out)
    }
    fn size(&self) -> usize {
        24
    }
    fn save(&self, w: &mut Writer) {
        w.i128(self.sum);
        w.i64(self.n);
    }
    fn restore(&mut self, r: &mut Reader<'_>) -> Result<()> {
        self.sum = r.i128()?;
        self.n = r.i64()?;
        Ok(())
    }
}

/// Interval sums: each field summed on its own (months, days, nanoseconds,
/// as PostgreSQL adds intervals), exactly.
#[derive(Default)]
struct SumInterval {
    months: i64,
    days: i64,
    nanos: i128,
    n: i64,
}

impl Accumulator for SumInterval {
    fn update(
        &mut self,
        args: &[ArrayRef],
        row: usize,
        _value: Option<&[u8]>,
        diff: i64,
    ) -> Result<()> {
        if all_valid(args, row) {
            let v = args[0]
                .as_primitive::<IntervalMonthDayNanoType>()
                .value(row);
            self.months += v.months as i64 * diff;
            self.days += v.days as i64 * diff;
            self.nanos += v.nanoseconds as i128 * diff as i128;
            self.n += diff;
        }
        Ok(())
    }
    fn value(&self) -> Result<ScalarValue> {
        if self.n == 0 {
            return Ok(ScalarValue::IntervalMonthDayNano(None));
        }
        let range = |_| DataflowError::Other("interval out of range".into());
        Ok(ScalarValue::IntervalMonthDayNano(Some(
            IntervalMonthDayNano::new(
                i32::try_from(self.months).map_err(range)?,
                i32::try_from(self.days).map_err(range)?,
                i64::try_from(self.nanos).map_err(range)?,
            ),
        )))
    }
    fn size(&self) -> usize {
        40
    }
    fn save(&self, w: &mut Writer) {
        w.i64(self.months);
        w.i64(self.days);
        w.i128(self.nanos);
        w.i64(self.n);
    }
    fn restore(&mut self, r: &mut Reader<'_>) -> Result<()> {
        self.months = r.i64()?;
        self.days = r.i64()?;
        self.nanos = r.i128()?;
        self.n = r.i64()?;
        Ok(())
    }
}

/// Float sums under retraction: the running sum is exact for the values
/// users store (integers and short decimals as doubles) and otherwise drifts
/// by rounding, as in every streaming system that keeps a running sum.
struct SumFloat {
    sum: f64,
    n: i64,
}

impl Accumulator for SumFloat {
    fn update(
        &mut self,
        args: &[ArrayRef],
        row: usize,
        _value: Option<&[u8]>,
        diff: i64,
    ) -> Result<()> {
        if all_valid(args, row) {
            self.sum += float_at(&args[0], row)? * diff as f64;
            self.n += diff;
        }
        Ok(())
    }
    fn value(&self) -> Result<ScalarValue> {
        Ok(ScalarValue::Float64((self.n != 0).then_some(self.sum)))
    }
    fn size(&self) -> usize {
        16
    }
    fn save(&self, w: &mut Writer) {
        w.f64(self.sum);
        w.i64(self.n);
    }
    fn restore(&mut self, r: &mut Reader<'_>) -> Result<()> {
        self.sum = r.f64()?;
        self.n = r.i64()?;
        Ok(())
    }
}

struct AvgFloat {
    sum: f64,
    n: i64,
}

impl Accumulator for AvgFloat {
    fn update(
        &mut self,
        args: &[ArrayRef],
        row: usize,
        _value: Option<&[u8]>,
        diff: i64,
    ) -> Result<()> {
        if all_valid(args, row) {
            self.sum += float_at(&args[0], row)? * diff as f64;
            self.n += diff;
        }
        Ok(())
    }
    fn value(&self) -> Result<ScalarValue> {
        Ok(ScalarValue::Float64(
            (self.n != 0).then(|| self.sum / self.n as f64),
        ))
    }
    fn size(&self) -> usize {
        16
    }
    fn save(&self, w: &mut Writer) {
        w.f64(self.sum);
        w.i64(self.n);
    }
    fn restore(&mut self, r: &mut Reader<'_>) -> Result<()> {
        self.sum = r.f64()?;
        self.n = r.i64()?;
        Ok(())
    }
}

struct AvgDecimal {
    sum: i128,
    n: i64,
    in_scale: i8,
    out_scale: i8,
    out: DataType,
}

impl Accumulator for AvgDecimal {
    fn update(
        &mut self,
        args: &[ArrayRef],
        row: usize,
        _value: Option<&[u8]>,
        diff: i64,
    ) -> Result<()> {
        if all_valid(args, row) {
            self.sum += int_at(&args[0], row)? * diff as i128;
            self.n += diff;
        }
        Ok(())
    }
    fn value(&self) -> Result<ScalarValue> {
        if self.n == 0 {
            return Ok(ScalarValue::try_from(&self.out)?);
        }
        let shift = (self.out_scale - self.in_scale).max(0) as u32;
        let scaled = self
            .sum
            .checked_mul(10i128.pow(shift))
            .ok_or_else(|| DataflowError::Other("numeric overflow in avg".into()))?;
        let v = scaled / self.n as i128;
        match &self.out {
            DataType::Decimal128(p, s) => Ok(ScalarValue::Decimal128(Some(v), *p, *s)),
            t => Err(DataflowError::Other(format!("avg returning {t}"))),
        }
    }
    fn size(&self) -> usize {
        32
    }
    fn save(&self, w: &mut Writer) {
        w.i128(self.sum);
        w.i64(self.n);
    }
    fn restore(&mut self, r: &mut Reader<'_>) -> Result<()> {
        self.sum = r.i128()?;
        self.n = r.i64()?;
        Ok(())
    }
}

/// MIN or MAX: the multiset of non-null values in value order.
struct Extreme {
    values: BTreeMap<RowBytes, i64>,
    max: bool,
    codec: Option<Arc<Codec>>,
    out: DataType,
}

impl Accumulator for Extreme {
    fn update(
        &mut self,
        args: &[ArrayRef],
        row: usize,
        value: Option<&[u8]>,
        diff: i64,
    ) -> Result<()> {
        if !all_valid(args, row) {
            return Ok(());
        }
        let Some(key) = value else {
            return Err(DataflowError::Other(
                "min/max without encoded values".into(),
            ));
        };
        bump(&mut self.values, key.into(), diff);
        Ok(())
    }
    fn value(&self) -> Result<ScalarValue> {
        let entry = if self.max {
            self.values.iter().rev().find(|(_, n)| **n > 0)
        } else {
            self.values.iter().find(|(_, n)| **n > 0)
        };
        let (Some((bytes, _)), Some(codec)) = (entry, &self.codec) else {
            return Ok(ScalarValue::try_from(&self.out)?);
        };
        let cols = codec.decode([bytes.as_ref()])?;
        let v = ScalarValue::try_from_array(&cols[0], 0)?;
        if v.data_type() != self.out {
            return Ok(v.cast_to(&self.out)?);
        }
        Ok(v)
    }
    fn size(&self) -> usize {
        self.values.keys().map(|k| k.len() + 40).sum()
    }
    fn save(&self, w: &mut Writer) {
        w.counts(
            self.values.len(),
            self.values.iter().map(|(k, n)| (k.as_ref(), *n)),
        );
    }
    fn restore(&mut self, r: &mut Reader<'_>) -> Result<()> {
        self.values = r.counts()?.into_iter().collect();
        Ok(())
    }
}

fn bump<K: Ord>(m: &mut BTreeMap<K, i64>, key: K, diff: i64) {
    use std::collections::btree_map::Entry;
    match m.entry(key) {
        Entry::Occupied(mut e) => {
            *e.get_mut() += diff;
            if *e.get() == 0 {
                e.remove();
            }
        }
        Entry::Vacant(e) => {
            if diff != 0 {
                e.insert(diff);
            }
        }
    }
}

struct Bools {
    trues: i64,
    falses: i64,
    and: bool,
}

impl Accumulator for Bools {
    fn update(
        &mut self,
        args: &[ArrayRef],
        row: usize,
        _value: Option<&[u8]>,
        diff: i64,
    ) -> Result<()> {
        if !all_valid(args, row) {
            return Ok(());
        }
        let b: &BooleanArray = args[0]
            .as_boolean_opt()
            .ok_or_else(|| DataflowError::Other("bool_and/or over a non-boolean".into()))?;
        if b.value(row) {
            self.trues += diff;
        } else {
            self.falses += diff;
        }
        Ok(())
    }
    fn value(&self) -> Result<ScalarValue> {
        if self.trues + self.falses == 0 {
            return Ok(ScalarValue::Boolean(None));
        }
        Ok(ScalarValue::Boolean(Some(if self.and {
            self.falses == 0
        } else {
            self.trues > 0
        })))
    }
    fn size(&self) -> usize {
        16
    }
    fn save(&self, w: &mut Writer) {
        w.i64(self.trues);
        w.i64(self.falses);
    }
    fn restore(&mut self, r: &mut Reader<'_>) -> Result<()> {
        self.trues = r.i64()?;
        self.falses = r.i64()?;
        Ok(())
    }
}

/// `agg(DISTINCT x)`: the inner accumulator sees each distinct value once.
struct Distinct {
    seen: AHashMap<RowBytes, i64>,
    inner: Box<dyn Accumulator>,
}

impl Accumulator for Distinct {
    fn update(
        &mut self,
        args: &[ArrayRef],
        row: usize,
        value: Option<&[u8]>,
        diff: i64,
    ) -> Result<()> {
        if !all_valid(args, row) {
            return Ok(());
        }
        let Some(key) = value else {
            return Err(DataflowError::Other(
                "distinct without encoded values".into(),
            ));
        };
        let before = self.seen.get(key).copied().unwrap_or(0);
        let after = before + diff;
        if after == 0 {
            self.seen.remove(key);
        } else {
            self.seen.insert(key.into(), after);
        }
        if before <= 0 && after > 0 {
            self.inner.update(args, row, value, 1)?;
        } else if before > 0 && after <= 0 {
            self.inner.update(args, row, value, -1)?;
        }
        Ok(())
    }
    fn value(&self) -> Result<ScalarValue> {
        self.inner.value()
    }
    fn size(&self) -> usize {
        self.inner.size() + self.seen.keys().map(|k| k.len() + 40).sum::<usize>()
    }
    fn save(&self, w: &mut Writer) {
        w.counts(
            self.seen.len(),
            self.seen.iter().map(|(k, n)| (k.as_ref(), *n)),
        );
        self.inner.save(w);
    }
    fn restore(&mut self, r: &mut Reader<'_>) -> Result<()> {
        self.seen = r.counts()?.into_iter().collect();
        self.inner.restore(r)
    }
}

/// Any other aggregate: the multiset of argument tuples, evaluated with
/// DataFusion's accumulator when read.
struct Generic {
    values: BTreeMap<RowBytes, i64>,
    codec: Option<Arc<Codec>>,
    expr: Arc<AggregateFunctionExpr>,
    distinct: bool,
    out: DataType,
}

impl Accumulator for Generic {
    fn update(
        &mut self,
        _args: &[ArrayRef],
        _row: usize,
        value: Option<&[u8]>,
        diff: i64,
    ) -> Result<()> {
        let Some(key) = value else {
            return Err(DataflowError::Other(
                "aggregate without encoded values".into(),
            ));
        };
        bump(&mut self.values, key.into(), diff);
        Ok(())
    }
    fn value(&self) -> Result<ScalarValue> {
        let mut acc = self.expr.create_accumulator()?;
        let live: Vec<(&RowBytes, i64)> = self
            .values
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| (k, *n))
            .collect();
        if let (Some(codec), false) = (&self.codec, live.is_empty()) {
            let cols = codec.decode(live.iter().map(|(k, _)| k.as_ref()))?;
            let mut idx = Vec::new();
            for (i, (_, n)) in live.iter().enumerate() {
                let times = if self.distinct { 1 } else { *n };
                for _ in 0..times {
                    idx.push(i as u32);
                }
            }
            let idx = UInt32Array::from(idx);
            let cols: Vec<ArrayRef> = cols
                .iter()
                .map(|c| take(c.as_ref(), &idx, None))
                .collect::<Result<_, _>>()?;
            acc.update_batch(&cols)?;
        } else if self.codec.is_none() {
            let _ = new_null_array(&self.out, 0);
        }
        let v = acc.evaluate()?;
        if v.data_type() != self.out && !v.is_null() {
            return Ok(v.cast_to(&self.out).unwrap_or(v));
        }
        Ok(v)
    }
    fn size(&self) -> usize {
        self.values.keys().map(|k| k.len() + 40).sum()
    }
    fn save(&self, w: &mut Writer) {
        w.counts(
            self.values.len(),
            self.values.iter().map(|(k, n)| (k.as_ref(), *n)),
        );
    }
    fn restore(&mut self, r: &mut Reader<'_>) -> Result<()> {
        self.values = r.counts()?.into_iter().collect();
        Ok(())
    }
}
