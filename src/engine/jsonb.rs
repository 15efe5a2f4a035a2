//! jsonb in SQL: PostgreSQL's operators (`->`, `->>`, `#>`, `#>>`, `@>`,
//! `<@`, `?`, `?|`, `?&`, and `||`, `-` on jsonb) and functions
//! (`jsonb_typeof`, `jsonb_array_length`, `jsonb_build_object`,
//! `to_jsonb`, …, with their `json_` spellings), the aggregates
//! `jsonb_agg` and `jsonb_object_agg`, `convert_from` /
//! `convert_to`, and the cast `::jsonb` (rewritten at parse time into a
//! call of the function `jsonb`, since DataFusion has no JSON type).
//!
//! They are DataFusion scalar functions over jsonb's canonical text
//! (`types::jsonb`), so they run the same in a query and in a
//! materialized view's dataflow; the operators reach them through an
//! `ExprPlanner`, DataFusion's hook for operators it does not plan
//! itself. A value that is not JSON is an error 22P02 (in a view, an error
//! of that row, as any failing expression).
//!
//! Written here rather than taken from datafusion-functions-json: its `->`
//! returns an Arrow union, not a jsonb value, so results would neither
//! print nor compare as PostgreSQL's do.
//!
//! (About 930 lines: each operator and function is a few lines over one value
//! model, kept with it.)

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, BooleanBuilder, Int32Builder, StringBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{DFSchema, Result as DfResult, ScalarValue};
use datafusion::error::DataFusionError;
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ExprSchemable, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    BinaryOperator, CastKind, DataType as SqlType, Expr as SqlExpr, Function, FunctionArg,
    FunctionArgExpr, FunctionArgumentList, FunctionArguments, Ident, ObjectName, Value as SqlValue,
    VisitMut, visit_expressions_mut,
};
use serde_json::Value;

use crate::sqlstate::Coded;
use crate::types::jsonb::{self, Step};

/// What each function computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Op {
    /// `text::jsonb`.
    Parse,
    Get,
    GetText,
    Path,
    PathText,
    Contains,
    ContainedBy,
    Exists,
    ExistsAny,
    ExistsAll,
    Concat,
    Remove,
    TypeOf,
    ArrayLength,
    Pretty,
    StripNulls,
    ToJsonb,
    BuildObject,
    BuildArray,
    ConvertFrom,
    ConvertTo,
}

/// Each function's names (the first is the one the operators call) and
/// what it does.
const FUNCTIONS: &[(&[&str], Op)] = &[
    (&["jsonb", "json"], Op::Parse),
    (&["jsonb_extract", "json_extract"], Op::Get),
    (&["jsonb_extract_text", "json_extract_text"], Op::GetText),
    (&["jsonb_extract_path", "json_extract_path"], Op::Path),
    (
        &["jsonb_extract_path_text", "json_extract_path_text"],
        Op::PathText,
    ),
    (&["jsonb_contains"], Op::Contains),
    (&["jsonb_contained"], Op::ContainedBy),
    (&["jsonb_exists"], Op::Exists),
    (&["jsonb_exists_any"], Op::ExistsAny),
    (&["jsonb_exists_all"], Op::ExistsAll),
    (&["jsonb_concat"], Op::Concat),
    (&["jsonb_delete"], Op::Remove),
    (&["jsonb_typeof", "json_typeof"], Op::TypeOf),
    (
        &["jsonb_array_length", "json_array_length"],
        Op::ArrayLength,
    ),
    (&["jsonb_pretty"], Op::Pretty),
    (&["jsonb_strip_nulls", "json_strip_nulls"], Op::StripNulls),
    (&["to_jsonb", "to_json"], Op::ToJsonb),
    (
        &["jsonb_build_object", "json_build_object"],
        Op::BuildObject,
    ),
    (&["jsonb_build_array", "json_build_array"], Op::BuildArray),
    (&["convert_from"], Op::ConvertFrom),
    (&["convert_to"], Op::ConvertTo),
];

/// Register the jsonb functions and operators with a session.
pub fn register(ctx: &SessionContext) -> DfResult<()> {
    for (names, op) in FUNCTIONS {
        ctx.register_udf(ScalarUDF::new_from_impl(JsonbFn::new(names, *op)));
    }
    register_aggregates(ctx);
    ctx.state_ref()
        .write()
        .register_expr_planner(Arc::new(JsonbPlanner))?;
    Ok(())
}

/// `x::jsonb`, `x::json`, `CAST(x AS jsonb)` and `jsonb '…'` as calls of
/// the function `jsonb` (DataFusion cannot cast to a type it lacks).
/// Whether it changed anything.
pub fn rewrite_casts<V: VisitMut>(stmt: &mut V) -> bool {
    let mut changed = false;
    let call = |arg: SqlExpr| {
        SqlExpr::Function(Function {
            name: ObjectName::from(vec![Ident::new("jsonb")]),
            uses_odbc_syntax: false,
            parameters: FunctionArguments::None,
            args: FunctionArguments::List(FunctionArgumentList {
                duplicate_treatment: None,
                args: vec![FunctionArg::Unnamed(FunctionArgExpr::Expr(arg))],
                clauses: vec![],
            }),
            filter: None,
            null_treatment: None,
            over: None,
            within_group: vec![],
        })
    };
    let is_json = |t: &SqlType| matches!(t, SqlType::JSON | SqlType::JSONB);
    let _ = visit_expressions_mut(stmt, |e| {
        match e {
            SqlExpr::Cast {
                kind: CastKind::Cast | CastKind::DoubleColon,
                expr,
                data_type,
                format: None,
                ..
            } if is_json(data_type) => {
                let inner = std::mem::replace(expr.as_mut(), SqlExpr::value(SqlValue::Null));
                *e = call(inner);
                changed = true;
            }
            SqlExpr::TypedString(ts) if is_json(&ts.data_type) => {
                let v = ts.value.clone();
                *e = call(SqlExpr::Value(v));
                changed = true;
            }
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
    changed
}

/// The numbers `n` of the parameters cast to jsonb (`$n::jsonb`, parsed
/// into `jsonb($n)`): a client binds them as jsonb.
pub fn jsonb_parameters<V: datafusion::sql::sqlparser::ast::Visit>(v: &V) -> Vec<usize> {
    let mut out = Vec::new();
    let _ = datafusion::sql::sqlparser::ast::visit_expressions(v, |e| {
        if let SqlExpr::Function(f) = e
            && f.name.to_string().eq_ignore_ascii_case("jsonb")
            && let FunctionArguments::List(list) = &f.args
            && let [FunctionArg::Unnamed(FunctionArgExpr::Expr(SqlExpr::Value(v)))] =
                list.args.as_slice()
            && let SqlValue::Placeholder(p) = &v.value
            && let Some(n) = p.strip_prefix('$').and_then(|n| n.parse().ok())
        {
            out.push(n);
        }
        ControlFlow::<()>::Continue(())
    });
    out
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonbFn {
    name: &'static str,
    aliases: Vec<String>,
    op: Op,
    signature: Signature,
}

impl JsonbFn {
    fn new(names: &[&'static str], op: Op) -> JsonbFn {
        let signature = match op {
            Op::BuildObject | Op::BuildArray => Signature::variadic_any(Volatility::Immutable),
            Op::Parse
            | Op::TypeOf
            | Op::ArrayLength
            | Op::Pretty
            | Op::StripNulls
            | Op::ToJsonb => Signature::any(1, Volatility::Immutable),
            _ => Signature::any(2, Volatility::Immutable),
        };
        JsonbFn {
            name: names[0],
            aliases: names[1..].iter().map(|s| s.to_string()).collect(),
            op,
            signature,
        }
    }

    fn output(&self) -> (DataType, bool) {
        match self.op {
            Op::GetText | Op::PathText | Op::TypeOf | Op::Pretty | Op::ConvertFrom => {
                (DataType::Utf8, false)
            }
            Op::Contains | Op::ContainedBy | Op::Exists | Op::ExistsAny | Op::ExistsAll => {
                (DataType::Boolean, false)
            }
            Op::ArrayLength => (DataType::Int32, false),
            Op::ConvertTo => (DataType::Binary, false),
            _ => (DataType::Utf8, true),
        }
    }
}

fn invalid(message: String) -> DataFusionError {
    DataFusionError::External(Box::new(Coded {
        code: "22P02",
        message,
    }))
}

fn wrong_type(message: String) -> DataFusionError {
    DataFusionError::External(Box::new(Coded {
        code: "42883",
        message,
    }))
}

/// An argument's rows as text (None for SQL NULL).
struct Texts(ArrayRef);

impl Texts {
    fn new(a: &ArrayRef) -> DfResult<Texts> {
        Ok(Texts(cast(a, &DataType::Utf8)?))
    }

    fn get(&self, i: usize) -> Option<&str> {
        let a = self.0.as_string::<i32>();
        a.is_valid(i).then(|| a.value(i))
    }
}

/// Row `i` of a jsonb argument, parsed.
fn doc(t: &Texts, i: usize) -> DfResult<Option<Value>> {
    t.get(i).map(jsonb::parse).transpose().map_err(invalid)
}

/// A path argument: a `text[]` (ARRAY['a', 'b']) or its literal '{a,b}'.
fn paths(a: &ArrayRef) -> DfResult<Vec<Option<Vec<String>>>> {
    match a.data_type() {
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..) => {
            let list = cast(
                a,
                &DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
            )?;
            let list = list.as_list::<i32>();
            Ok((0..list.len())
                .map(|i| {
                    list.is_valid(i).then(|| {
                        let v = list.value(i);
                        let s = v.as_string::<i32>();
                        (0..s.len()).map(|j| s.value(j).to_string()).collect()
                    })
                })
                .collect())
        }
        _ => {
            let t = Texts::new(a)?;
            (0..a.len())
                .map(|i| match t.get(i) {
                    None => Ok(None),
                    Some(s) => crate::types::input::parse_array(s)
                        .map(|items| {
                            Some(items.into_iter().map(Option::unwrap_or_default).collect())
                        })
                        .ok_or_else(|| invalid(format!("malformed array literal: \"{s}\""))),
                })
                .collect()
        }
    }
}

/// A value of any SQL type as JSON (`to_jsonb`): numbers and booleans as
/// themselves, jsonb as its value, arrays and records as arrays and
/// objects, anything else as its text.
fn to_json(a: &dyn Array, field: &Field, i: usize) -> DfResult<Value> {
    if a.is_null(i) {
        return Ok(Value::Null);
    }
    Ok(match a.data_type() {
        DataType::Null => Value::Null,
        DataType::Boolean => Value::Bool(a.as_boolean().value(i)),
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => {
            let c = cast(&a.slice(i, 1), &DataType::Int64)?;
            Value::from(
                c.as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                    .value(0),
            )
        }
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => {
            let c = cast(&a.slice(i, 1), &DataType::UInt64)?;
            Value::from(
                c.as_primitive::<datafusion::arrow::datatypes::UInt64Type>()
                    .value(0),
            )
        }
        DataType::Float16
        | DataType::Float32
        | DataType::Float64
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => {
            let c = cast(&a.slice(i, 1), &DataType::Float64)?;
            let f = c
                .as_primitive::<datafusion::arrow::datatypes::Float64Type>()
                .value(0);
            serde_json::Number::from_f64(f)
                .map_or_else(|| Value::String(f.to_string()), Value::Number)
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let t = Texts::new(&a.slice(i, 1))?;
            let s = t.get(0).unwrap_or_default();
            if jsonb::is_jsonb(field) {
                jsonb::parse(s).map_err(invalid)?
            } else {
                Value::String(s.to_string())
            }
        }
        DataType::List(f) | DataType::LargeList(f) => {
            let c = cast(&a.slice(i, 1), &DataType::List(Arc::clone(f)))?;
            let items = c.as_list::<i32>().value(0);
            Value::Array(
                (0..items.len())
                    .map(|j| to_json(items.as_ref(), f, j))
                    .collect::<DfResult<_>>()?,
            )
        }
        DataType::Struct(fields) => {
            let s = a.as_struct();
            let mut m = serde_json::Map::new();
            for (f, c) in fields.iter().zip(s.columns()) {
                m.insert(f.name().clone(), to_json(c.as_ref(), f, i)?);
            }
            Value::Object(m)
        }
        _ => {
            let c = cast(&a.slice(i, 1), &DataType::Utf8)?;
            Value::String(c.as_string::<i32>().value(0).to_string())
        }
    })
}

enum Out {
    Jsonb(StringBuilder),
    Text(StringBuilder),
    Bool(BooleanBuilder),
    Int(Int32Builder),
    Bytes(BinaryBuilder),
}

impl Out {
    fn json(&mut self, v: Option<&Value>) {
        match self {
            Out::Jsonb(b) => b.append_option(v.map(jsonb::print)),
            Out::Text(b) => b.append_option(v.and_then(jsonb::as_text)),
            _ => {}
        }
    }

    fn finish(self) -> ArrayRef {
        match self {
            Out::Jsonb(mut b) | Out::Text(mut b) => Arc::new(b.finish()),
            Out::Bool(mut b) => Arc::new(b.finish()),
            Out::Int(mut b) => Arc::new(b.finish()),
            Out::Bytes(mut b) => Arc::new(b.finish()),
        }
    }
}

impl ScalarUDFImpl for JsonbFn {
    fn name(&self) -> &str {
        self.name
    }

    fn aliases(&self) -> &[String] {
        &self.aliases
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(self.output().0)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> DfResult<FieldRef> {
        if matches!(self.op, Op::BuildObject) && args.arg_fields.len() % 2 == 1 {
            return Err(wrong_type(
                "argument list must have even number of elements".into(),
            ));
        }
        let (t, is_jsonb) = self.output();
        let field = Field::new(self.name, t, true);
        Ok(Arc::new(if is_jsonb { jsonb::tag(field) } else { field }))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let n = if scalar { 1 } else { args.number_rows };
        let out = self.rows(&arrays, &args.arg_fields, n)?;
        Ok(if scalar {
            ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?)
        } else {
            ColumnarValue::Array(out)
        })
    }
}

impl JsonbFn {
    fn rows(&self, args: &[ArrayRef], fields: &[FieldRef], n: usize) -> DfResult<ArrayRef> {
        let mut out = match self.output() {
            (DataType::Utf8, true) => Out::Jsonb(StringBuilder::new()),
            (DataType::Utf8, false) => Out::Text(StringBuilder::new()),
            (DataType::Boolean, _) => Out::Bool(BooleanBuilder::new()),
            (DataType::Int32, _) => Out::Int(Int32Builder::new()),
            _ => Out::Bytes(BinaryBuilder::new()),
        };
        let texts = |k: usize| Texts::new(&args[k]);
        match self.op {
            Op::Parse => {
                let t = texts(0)?;
                for i in 0..n {
                    out.json(doc(&t, i)?.as_ref());
                }
            }
            Op::Get | Op::GetText => {
                let t = texts(0)?;
                let by_index = args[1].data_type().is_integer();
                let keys = texts(1)?;
                for i in 0..n {
                    let d = doc(&t, i)?;
                    let v = match (d.as_ref(), keys.get(i)) {
                        (Some(d), Some(k)) if by_index => match k.parse::<i64>() {
                            Ok(idx) => jsonb::get(d, Step::Index(idx)),
                            Err(_) => None,
                        },
                        // A text key never indexes an array with `->`.
                        (Some(Value::Array(_)), Some(_)) => None,
                        (Some(d), Some(k)) => jsonb::get(d, Step::Key(k)),
                        _ => None,
                    };
                    out.json(v);
                }
            }
            Op::Path | Op::PathText => {
                let t = texts(0)?;
                let paths = paths(&args[1])?;
                for (i, path) in paths.iter().enumerate().take(n) {
                    let d = doc(&t, i)?;
                    let v = match (d.as_ref(), path) {
                        (Some(d), Some(p)) => {
                            let p: Vec<&str> = p.iter().map(String::as_str).collect();
                            jsonb::get_path(d, &p)
                        }
                        _ => None,
                    };
                    out.json(v);
                }
            }
            Op::Contains | Op::ContainedBy => {
                let (a, b) = (texts(0)?, texts(1)?);
                let Out::Bool(ref mut o) = out else {
                    unreachable!("boolean output")
                };
                for i in 0..n {
                    match (doc(&a, i)?, doc(&b, i)?) {
                        (Some(x), Some(y)) if self.op == Op::Contains => {
                            o.append_value(jsonb::contains(&x, &y))
                        }
                        (Some(x), Some(y)) => o.append_value(jsonb::contains(&y, &x)),
                        _ => o.append_null(),
                    }
                }
            }
            Op::Exists => {
                let (a, k) = (texts(0)?, texts(1)?);
                let Out::Bool(ref mut o) = out else {
                    unreachable!("boolean output")
                };
                for i in 0..n {
                    match (doc(&a, i)?, k.get(i)) {
                        (Some(d), Some(k)) => o.append_value(jsonb::exists(&d, k)),
                        _ => o.append_null(),
                    }
                }
            }
            Op::ExistsAny | Op::ExistsAll => {
                let a = texts(0)?;
                let keys = paths(&args[1])?;
                let Out::Bool(ref mut o) = out else {
                    unreachable!("boolean output")
                };
                for (i, ks) in keys.iter().enumerate().take(n) {
                    match (doc(&a, i)?, ks) {
                        (Some(d), Some(ks)) => o.append_value(if self.op == Op::ExistsAny {
                            ks.iter().any(|k| jsonb::exists(&d, k))
                        } else {
                            ks.iter().all(|k| jsonb::exists(&d, k))
                        }),
                        _ => o.append_null(),
                    }
                }
            }
            Op::Concat => {
                let (a, b) = (texts(0)?, texts(1)?);
                for i in 0..n {
                    match (doc(&a, i)?, doc(&b, i)?) {
                        (Some(x), Some(y)) => out.json(Some(&jsonb::concat(&x, &y))),
                        _ => out.json(None),
                    }
                }
            }
            Op::Remove => {
                let (a, k) = (texts(0)?, texts(1)?);
                for i in 0..n {
                    match (doc(&a, i)?, k.get(i)) {
                        (Some(d), Some(k)) => out.json(Some(&jsonb::remove_key(&d, k))),
                        _ => out.json(None),
                    }
                }
            }
            Op::TypeOf | Op::ArrayLength | Op::Pretty | Op::StripNulls => {
                let t = texts(0)?;
                for i in 0..n {
                    let d = doc(&t, i)?;
                    match (&mut out, d) {
                        (o, None) => match o {
                            Out::Text(b) | Out::Jsonb(b) => b.append_null(),
                            Out::Int(b) => b.append_null(),
                            _ => {}
                        },
                        (Out::Text(b), Some(d)) if self.op == Op::TypeOf => {
                            b.append_value(jsonb::type_of(&d))
                        }
                        (Out::Text(b), Some(d)) => b.append_value(jsonb::pretty(&d)),
                        (Out::Jsonb(b), Some(d)) => {
                            b.append_value(jsonb::print(&jsonb::strip_nulls(&d)))
                        }
                        (Out::Int(b), Some(Value::Array(items))) => {
                            b.append_value(items.len() as i32)
                        }
                        (Out::Int(_), Some(_)) => {
                            return Err(DataFusionError::External(Box::new(Coded {
                                code: "22023",
                                message: "cannot get array length of a non-array".into(),
                            })));
                        }
                        _ => {}
                    }
                }
            }
            Op::ToJsonb => {
                for i in 0..n {
                    if args[0].is_null(i) {
                        out.json(None);
                    } else {
                        out.json(Some(&to_json(args[0].as_ref(), &fields[0], i)?));
                    }
                }
            }
            Op::BuildArray => {
                for i in 0..n {
                    let items = args
                        .iter()
                        .zip(fields)
                        .map(|(a, f)| to_json(a.as_ref(), f, i))
                        .collect::<DfResult<Vec<_>>>()?;
                    out.json(Some(&Value::Array(items)));
                }
            }
            Op::BuildObject => {
                let keys: Vec<Texts> = args
                    .iter()
                    .step_by(2)
                    .map(Texts::new)
                    .collect::<DfResult<_>>()?;
                for i in 0..n {
                    let mut m = serde_json::Map::new();
                    for (j, k) in keys.iter().enumerate() {
                        let key = k
                            .get(i)
                            .ok_or_else(|| invalid("argument 1: key must not be null".into()))?;
                        let v = to_json(args[2 * j + 1].as_ref(), &fields[2 * j + 1], i)?;
                        m.insert(key.to_string(), v);
                    }
                    out.json(Some(&Value::Object(m)));
                }
            }
            Op::ConvertFrom => {
                let bytes = cast(&args[0], &DataType::Binary)?;
                let bytes = bytes.as_binary::<i32>();
                let enc = texts(1)?;
                let Out::Text(ref mut o) = out else {
                    unreachable!("text output")
                };
                for i in 0..n {
                    match (bytes.is_valid(i).then(|| bytes.value(i)), enc.get(i)) {
                        (Some(b), Some(e)) => o.append_value(decode(b, e)?),
                        _ => o.append_null(),
                    }
                }
            }
            Op::ConvertTo => {
                let (t, enc) = (texts(0)?, texts(1)?);
                let Out::Bytes(ref mut o) = out else {
                    unreachable!("bytes output")
                };
                for i in 0..n {
                    match (t.get(i), enc.get(i)) {
                        (Some(s), Some(e)) => o.append_value(encode(s, e)?),
                        _ => o.append_null(),
                    }
                }
            }
        }
        Ok(out.finish())
    }
}

/// An encoding's name as PostgreSQL reads it (case and `_`/`-` ignored).
fn encoding(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase()
}

fn unknown_encoding(name: &str) -> DataFusionError {
    DataFusionError::External(Box::new(Coded {
        code: "22023",
        message: format!(
            "invalid source encoding name \"{name}\" (supported: UTF8, LATIN1, SQL_ASCII)"
        ),
    }))
}

/// `convert_from(bytes, encoding)`.
fn decode(b: &[u8], enc: &str) -> DfResult<String> {
    match encoding(enc).as_str() {
        "utf8" | "unicode" => std::str::from_utf8(b).map(str::to_string).map_err(|e| {
            DataFusionError::External(Box::new(Coded {
                code: "22021",
                message: format!("invalid byte sequence for encoding \"UTF8\": {e}"),
            }))
        }),
        "latin1" | "iso88591" => Ok(b.iter().map(|&c| c as char).collect()),
        "sqlascii" => Ok(String::from_utf8_lossy(b).into_owned()),
        _ => Err(unknown_encoding(enc)),
    }
}

/// `convert_to(text, encoding)`.
fn encode(s: &str, enc: &str) -> DfResult<Vec<u8>> {
    match encoding(enc).as_str() {
        "utf8" | "unicode" | "sqlascii" => Ok(s.as_bytes().to_vec()),
        "latin1" | "iso88591" => s
            .chars()
            .map(|c| u8::try_from(u32::from(c)).ok())
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| {
                DataFusionError::External(Box::new(Coded {
                    code: "22P05",
                    message: "character has no equivalent in encoding \"LATIN1\"".into(),
                }))
            }),
        _ => Err(unknown_encoding(enc)),
    }
}

/// Plans jsonb's operators as calls of the functions above.
#[derive(Debug)]
struct JsonbPlanner;

fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

impl ExprPlanner for JsonbPlanner {
    fn plan_binary_op(
        &self,
        expr: RawBinaryExpr,
        schema: &DFSchema,
    ) -> DfResult<PlannerResult<RawBinaryExpr>> {
        use BinaryOperator as B;
        let typed = |e: &Expr| -> DfResult<(DataType, bool)> {
            let t = e.get_type(schema)?;
            let tagged = e
                .metadata(schema)?
                .inner()
                .get(jsonb::PG_TYPE_KEY)
                .is_some_and(|v| v == "jsonb");
            Ok((t, tagged))
        };
        let (lt, l_jsonb) = typed(&expr.left)?;
        let (rt, r_jsonb) = typed(&expr.right)?;
        let text_or_unknown = |t: &DataType| is_text(t) || t.is_null();
        let name = match &expr.op {
            B::Arrow
            | B::LongArrow
            | B::HashArrow
            | B::HashLongArrow
            | B::Question
            | B::QuestionPipe
            | B::QuestionAnd
                if text_or_unknown(&lt) =>
            {
                match &expr.op {
                    B::Arrow => "jsonb_extract",
                    B::LongArrow => "jsonb_extract_text",
                    B::HashArrow => "jsonb_extract_path",
                    B::HashLongArrow => "jsonb_extract_path_text",
                    B::Question => "jsonb_exists",
                    B::QuestionPipe => "jsonb_exists_any",
                    _ => "jsonb_exists_all",
                }
            }
            B::Arrow | B::LongArrow | B::HashArrow | B::HashLongArrow => {
                return Err(wrong_type(format!(
                    "operator does not exist: {} {} {}",
                    crate::types::pg_name(&lt),
                    expr.op,
                    crate::types::pg_name(&rt)
                )));
            }
            B::AtArrow if text_or_unknown(&lt) && text_or_unknown(&rt) => "jsonb_contains",
            B::ArrowAt if text_or_unknown(&lt) && text_or_unknown(&rt) => "jsonb_contained",
            B::StringConcat if l_jsonb && r_jsonb => "jsonb_concat",
            B::Minus if l_jsonb && text_or_unknown(&rt) => "jsonb_delete",
            _ => return Ok(PlannerResult::Original(expr)),
        };
        let op = FUNCTIONS
            .iter()
            .find(|(names, _)| names[0] == name)
            .map(|(names, op)| JsonbFn::new(names, *op))
            .ok_or_else(|| DataFusionError::Internal(format!("no jsonb function {name}")))?;
        Ok(PlannerResult::Planned(Expr::ScalarFunction(
            ScalarFunction::new_udf(
                Arc::new(ScalarUDF::new_from_impl(op)),
                vec![expr.left, expr.right],
            ),
        )))
    }
}

/// `jsonb_agg(x)` and `jsonb_object_agg(k, v)` (with their `json_`
/// spellings): DataFusion aggregates, so a materialized view maintains
/// them as it does any aggregate it has no running form for (its
/// per-group multiset of arguments, `dataflow/accumulate.rs`).
#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonbAgg {
    name: &'static str,
    aliases: Vec<String>,
    object: bool,
    signature: Signature,
}

/// Register the jsonb aggregates with a session.
fn register_aggregates(ctx: &SessionContext) {
    for (names, object) in [
        (["jsonb_agg", "json_agg"], false),
        (["jsonb_object_agg", "json_object_agg"], true),
    ] {
        ctx.register_udaf(datafusion::logical_expr::AggregateUDF::new_from_impl(
            JsonbAgg {
                name: names[0],
                aliases: vec![names[1].to_string()],
                object,
                signature: Signature::any(if object { 2 } else { 1 }, Volatility::Immutable),
            },
        ));
    }
}

impl datafusion::logical_expr::AggregateUDFImpl for JsonbAgg {
    fn name(&self) -> &str {
        self.name
    }

    fn aliases(&self) -> &[String] {
        &self.aliases
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn return_field(&self, _arg_fields: &[FieldRef]) -> DfResult<FieldRef> {
        Ok(Arc::new(jsonb::tag(Field::new(
            self.name,
            DataType::Utf8,
            true,
        ))))
    }

    fn state_fields(
        &self,
        args: datafusion::logical_expr::function::StateFieldsArgs,
    ) -> DfResult<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format!("{}[items]", args.name),
            DataType::Utf8,
            true,
        ))])
    }

    fn accumulator(
        &self,
        args: datafusion::logical_expr::function::AccumulatorArgs,
    ) -> DfResult<Box<dyn datafusion::logical_expr::Accumulator>> {
        if !args.order_bys.is_empty() {
            // DataFusion hands this aggregate its rows unsorted: refused
            // rather than answered in the wrong order.
            return Err(DataFusionError::NotImplemented(format!(
                "{}(… ORDER BY …)",
                self.name
            )));
        }
        Ok(Box::new(JsonbAccumulator {
            object: self.object,
            fields: args.expr_fields.to_vec(),
            items: Vec::new(),
        }))
    }
}

/// The values (or key/value pairs) gathered so far, in arrival order.
#[derive(Debug)]
struct JsonbAccumulator {
    object: bool,
    fields: Vec<FieldRef>,
    items: Vec<Value>,
}

impl datafusion::logical_expr::Accumulator for JsonbAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> DfResult<()> {
        let n = values.first().map_or(0, |v| v.len());
        for i in 0..n {
            if self.object {
                let keys = Texts::new(&values[0])?;
                let key = keys
                    .get(i)
                    .ok_or_else(|| invalid("field name must not be null".into()))?;
                let v = to_json(values[1].as_ref(), &self.fields[1], i)?;
                self.items
                    .push(Value::Array(vec![Value::String(key.to_string()), v]));
            } else {
                self.items
                    .push(to_json(values[0].as_ref(), &self.fields[0], i)?);
            }
        }
        Ok(())
    }

    fn evaluate(&mut self) -> DfResult<ScalarValue> {
        if self.items.is_empty() {
            return Ok(ScalarValue::Utf8(None));
        }
        let v = if self.object {
            let mut m = serde_json::Map::new();
            for item in &self.items {
                if let Value::Array(kv) = item
                    && let [Value::String(k), v] = kv.as_slice()
                {
                    m.insert(k.clone(), v.clone());
                }
            }
            Value::Object(m)
        } else {
            Value::Array(self.items.clone())
        };
        Ok(ScalarValue::Utf8(Some(jsonb::print(&v))))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
            + self
                .items
                .iter()
                .map(|v| jsonb::print(v).len() + 32)
                .sum::<usize>()
    }

    fn state(&mut self) -> DfResult<Vec<ScalarValue>> {
        let text = serde_json::to_string(&self.items)
            .map_err(|e| DataFusionError::Execution(e.to_string()))?;
        Ok(vec![ScalarValue::Utf8(Some(text))])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> DfResult<()> {
        let t = Texts::new(&states[0])?;
        for i in 0..states[0].len() {
            if let Some(s) = t.get(i) {
                let items: Vec<Value> = serde_json::from_str(s)
                    .map_err(|e| DataFusionError::Execution(e.to_string()))?;
                self.items.extend(items);
            }
        }
        Ok(())
    }
}
