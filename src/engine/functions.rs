//! Built-in functions where DataFusion's differ from PostgreSQL's, each
//! replaced by a wrapper that answers PostgreSQL's way where they differ
//! and hands every other call to DataFusion's own:
//!
//! - `every(b)`: PostgreSQL's name for `bool_and`; `variance`, its name
//!   for `var_samp`.
//! - `array_length(a, dim)`: NULL for an empty array (DataFusion: 0).
//! - `encode(bytea, 'escape')` and `decode(text, 'escape')`: PostgreSQL's
//!   escape format (zero bytes, bytes with the high bit set and
//!   backslashes as `\nnn` / `\\`), which DataFusion does not have;
//!   `'base64'` padded and in lines of 76, as PostgreSQL writes it
//!   (DataFusion: unpadded, one line).
//! - `substring(bytea FROM s FOR n)` (and `substr`): bytes, 1-based,
//!   clipped as PostgreSQL clips; DataFusion takes only text. DataFusion's
//!   planner binds `SUBSTRING(… FROM … FOR …)` to its own function, so
//!   the parse spells it as a call of `substr` (`rewrite_substring`).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BinaryArray, StringArray, UInt64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};
use datafusion::prelude::SessionContext;

use crate::sqlstate::Coded;

pub fn register(ctx: &SessionContext) {
    for (name, alias) in [("bool_and", "every"), ("var_samp", "variance")] {
        if let Ok(f) = FunctionRegistry::udaf(ctx, name) {
            ctx.register_udaf(f.as_ref().clone().with_aliases([alias]));
        }
    }
    for kind in [Kind::ArrayLength, Kind::Encode, Kind::Decode, Kind::Substr] {
        if let Ok(inner) = FunctionRegistry::udf(ctx, kind.name()) {
            ctx.register_udf(ScalarUDF::new_from_impl(Pg {
                signature: Signature::user_defined(inner.signature().volatility),
                aliases: inner.aliases().to_vec(),
                inner,
                kind,
            }));
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    ArrayLength,
    Encode,
    Decode,
    Substr,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::ArrayLength => "array_length",
            Kind::Encode => "encode",
            Kind::Decode => "decode",
            Kind::Substr => "substr",
        }
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Pg {
    inner: Arc<ScalarUDF>,
    kind: Kind,
    signature: Signature,
    aliases: Vec<String>,
}

fn is_binary(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView
    )
}

/// Whether a call's format argument is the literal `format`.
fn format_is(args: &[ColumnarValue], format: &str) -> bool {
    matches!(
        args.get(1),
        Some(ColumnarValue::Scalar(s)) if s.to_string().eq_ignore_ascii_case(format)
    )
}

fn escape_format(args: &[ColumnarValue]) -> bool {
    format_is(args, "escape")
}

fn escape_format_field(args: &ReturnFieldArgs) -> bool {
    matches!(
        args.scalar_arguments.get(1),
        Some(Some(s)) if s.to_string().eq_ignore_ascii_case("escape")
    )
}

impl Pg {
    /// Whether this call is one PostgreSQL answers differently (by its
    /// argument types).
    fn own_types(&self, types: &[DataType]) -> bool {
        match self.kind {
            Kind::Substr => types.first().is_some_and(is_binary),
            _ => false,
        }
    }
}

impl ScalarUDFImpl for Pg {
    fn name(&self) -> &str {
        self.kind.name()
    }

    fn aliases(&self) -> &[String] {
        &self.aliases
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, types: &[DataType]) -> DfResult<Vec<DataType>> {
        if self.own_types(types) {
            let mut out = vec![DataType::Binary];
            out.extend(types[1..].iter().map(|_| DataType::Int64));
            if out.len() > 3 {
                return Err(DataFusionError::Plan(
                    "substring(bytea, start [, count]) takes at most three arguments".into(),
                ));
            }
            return Ok(out);
        }
        if self.kind == Kind::Encode && types.first().is_some_and(is_binary) {
            return Ok(vec![DataType::Binary, DataType::Utf8]);
        }
        datafusion::logical_expr::type_coercion::functions::fields_with_udf(
            &types
                .iter()
                .map(|t| Arc::new(Field::new("", t.clone(), true)))
                .collect::<Vec<_>>(),
            self.inner.as_ref(),
        )
        .map(|fields| fields.iter().map(|f| f.data_type().clone()).collect())
    }

    fn return_type(&self, types: &[DataType]) -> DfResult<DataType> {
        if self.own_types(types) {
            return Ok(DataType::Binary);
        }
        self.inner.return_type(types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> DfResult<FieldRef> {
        let types: Vec<DataType> = args
            .arg_fields
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        if self.own_types(&types) {
            return Ok(Arc::new(Field::new(self.name(), DataType::Binary, true)));
        }
        match self.kind {
            Kind::Encode if escape_format_field(&args) => {
                Ok(Arc::new(Field::new(self.name(), DataType::Utf8, true)))
            }
            Kind::Decode if escape_format_field(&args) => {
                Ok(Arc::new(Field::new(self.name(), DataType::Binary, true)))
            }
            _ => self.inner.return_field_from_args(args),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let n = args.number_rows;
        let types: Vec<DataType> = args.args.iter().map(|a| a.data_type()).collect();
        if self.own_types(&types) {
            return substring_bytes(&args.args, n);
        }
        match self.kind {
            Kind::Encode if escape_format(&args.args) => {
                let values = cast(&args.args[0].to_array(n)?, &DataType::Binary)?;
                let out: StringArray = values
                    .as_binary::<i32>()
                    .iter()
                    .map(|v| v.map(escape))
                    .collect();
                Ok(ColumnarValue::Array(Arc::new(out)))
            }
            Kind::Decode if escape_format(&args.args) => {
                let values = cast(&args.args[0].to_array(n)?, &DataType::Utf8)?;
                let out = values
                    .as_string::<i32>()
                    .iter()
                    .map(|v| v.map(unescape).transpose())
                    .collect::<DfResult<BinaryArray>>()?;
                Ok(ColumnarValue::Array(Arc::new(out)))
            }
            Kind::Encode if format_is(&args.args, "base64") => {
                // PostgreSQL pads, and breaks lines after 76 characters.
                let mut args = args;
                args.args[1] = ColumnarValue::Scalar("base64pad".into());
                let out = self.inner.invoke_with_args(args)?.to_array(n)?;
                let out = cast(&out, &DataType::Utf8)?;
                let out: StringArray = out
                    .as_string::<i32>()
                    .iter()
                    .map(|v| v.map(|v| lines_of(v, 76)))
                    .collect();
                Ok(ColumnarValue::Array(Arc::new(out)))
            }
            Kind::Decode if format_is(&args.args, "base64") => {
                // Whitespace (the line breaks encode writes) is skipped.
                let mut args = args;
                let text = cast(&args.args[0].to_array(n)?, &DataType::Utf8)?;
                let text: StringArray = text
                    .as_string::<i32>()
                    .iter()
                    .map(|v| v.map(|v| v.split_ascii_whitespace().collect::<String>()))
                    .collect();
                let ty = args.args[0].data_type();
                args.args[0] = ColumnarValue::Array(cast(&(Arc::new(text) as ArrayRef), &ty)?);
                args.args[1] = ColumnarValue::Scalar("base64pad".into());
                self.inner.invoke_with_args(args)
            }
            Kind::ArrayLength => {
                let out = self.inner.invoke_with_args(args)?;
                empty_is_null(out, n)
            }
            _ => self.inner.invoke_with_args(args),
        }
    }
}

/// `text` with a line break after every `width` characters (ASCII).
fn lines_of(text: &str, width: usize) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / width);
    for (i, c) in text.chars().enumerate() {
        if i > 0 && i % width == 0 {
            out.push('\n');
        }
        out.push(c);
    }
    out
}

/// `array_length` of an empty array is NULL in PostgreSQL.
fn empty_is_null(v: ColumnarValue, n: usize) -> DfResult<ColumnarValue> {
    let a = v.to_array(n)?;
    let Some(lengths) = a.as_any().downcast_ref::<UInt64Array>() else {
        return Ok(ColumnarValue::Array(a));
    };
    let out: UInt64Array = lengths.iter().map(|l| l.filter(|l| *l > 0)).collect();
    Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
}

/// PostgreSQL's escape format: zero bytes and bytes with the high bit set
/// as `\nnn` (octal), a backslash doubled, every other byte as itself.
fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            0 | 0x80..=0xff => out.push_str(&format!("\\{b:03o}")),
            _ => out.push(b as char),
        }
    }
    out
}

/// The escape format read back: `\\` and `\nnn`; any other backslash is
/// an error, as in PostgreSQL.
fn unescape(text: &str) -> DfResult<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
        } else if bytes.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else if let Some(d) = bytes.get(i + 1..i + 4)
            && d[0] <= b'3'
            && d.iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
            i += 4;
        } else {
            return Err(coded("22P02", "invalid input syntax for type bytea"));
        }
    }
    Ok(out)
}

fn coded(code: &'static str, message: &str) -> DataFusionError {
    DataFusionError::External(Box::new(Coded {
        code,
        message: message.into(),
    }))
}

/// `substring(bytes FROM start [FOR count])`: the bytes at 1-based
/// positions start ‥ start + count − 1 that exist.
fn substring_bytes(args: &[ColumnarValue], n: usize) -> DfResult<ColumnarValue> {
    let values = cast(&args[0].to_array(n)?, &DataType::Binary)?;
    let values = values.as_binary::<i32>();
    let starts = cast(&args[1].to_array(n)?, &DataType::Int64)?;
    let starts = starts.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
    let counts = match args.get(2) {
        Some(c) => Some(cast(&c.to_array(n)?, &DataType::Int64)?),
        None => None,
    };
    let counts = counts
        .as_ref()
        .map(|c| c.as_primitive::<datafusion::arrow::datatypes::Int64Type>());
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        if values.is_null(i) || starts.is_null(i) || counts.is_some_and(|c| c.is_null(i)) {
            out.push(None);
            continue;
        }
        let v = values.value(i);
        let start = starts.value(i);
        let end = match counts {
            Some(c) => {
                let count = c.value(i);
                if count < 0 {
                    return Err(coded("22011", "negative substring length not allowed"));
                }
                start.saturating_add(count)
            }
            None => i64::MAX,
        };
        // Positions are 1-based; [start, end) clipped to [1, len + 1).
        let from = start.max(1) - 1;
        let to = end.min(v.len() as i64 + 1) - 1;
        out.push(Some(if to > from {
            v[from as usize..to as usize].to_vec()
        } else {
            Vec::new()
        }));
    }
    let out: BinaryArray = out.iter().map(|v| v.as_deref()).collect();
    Ok(ColumnarValue::Array(Arc::new(out)))
}

/// `SUBSTRING(x [FROM s] [FOR n])` as the call `substr(x, s[, n])`, so
/// that it is planned by name (and reaches the wrapper above). sqlparser
/// reads `substr(…)` as the same expression, so a printed and parsed
/// again statement (a view's text) needs this again. Whether anything
/// changed.
pub fn rewrite_substring<V: datafusion::sql::sqlparser::ast::VisitMut>(stmt: &mut V) -> bool {
    use datafusion::sql::sqlparser::ast::{
        Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentList, FunctionArguments,
        Ident, ObjectName, Value,
    };
    let mut changed = false;
    let _ = datafusion::sql::sqlparser::ast::visit_expressions_mut(stmt, |e| {
        if let Expr::Substring {
            expr,
            substring_from,
            substring_for,
            ..
        } = e
        {
            let from = substring_from
                .take()
                .map(|f| *f)
                .unwrap_or_else(|| Expr::value(Value::Number("1".into(), false)));
            let mut args = vec![
                std::mem::replace(expr.as_mut(), Expr::value(Value::Null)),
                from,
            ];
            if let Some(n) = substring_for.take() {
                args.push(*n);
            }
            *e = Expr::Function(Function {
                name: ObjectName::from(vec![Ident::new("substr")]),
                uses_odbc_syntax: false,
                parameters: FunctionArguments::None,
                args: FunctionArguments::List(FunctionArgumentList {
                    duplicate_treatment: None,
                    args: args
                        .into_iter()
                        .map(|a| FunctionArg::Unnamed(FunctionArgExpr::Expr(a)))
                        .collect(),
                    clauses: vec![],
                }),
                filter: None,
                null_treatment: None,
                over: None,
                within_group: vec![],
            });
            changed = true;
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    changed
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn escape_format_round_trips() {
        let bytes = b"a\\b\x00\x01\xff c";
        let text = escape(bytes);
        assert_eq!(text, "a\\\\b\\000\x01\\377 c");
        assert_eq!(unescape(&text).unwrap(), bytes);
        assert!(unescape("\\9").is_err());
        assert!(unescape("trailing\\").is_err());
    }
}
