//! What psql's and pgcli's catalog queries need beyond datafusion-pg-catalog.
//!
//! - `pg_catalog.pg_class` says `relkind = 'm'` for materialized views (the
//!   crate only knows tables and views), so `\dm` lists them and `\d mv`
//!   titles them as PostgreSQL does; it also has the `reloptions` and
//!   `relacl` columns psql reads (always NULL: eddy has neither).
//! - Catalog functions psql calls that the crate lacks: `pg_size_pretty`
//!   (PostgreSQL's algorithm), `pg_table_size` / `pg_database_size` (NULL:
//!   unknown), `obj_description` / `shobj_description` / `col_description`
//!   (NULL: eddy keeps no comments), `pg_function_is_visible` /
//!   `pg_type_is_visible` / `pg_operator_is_visible` (true: one search
//!   path), `pg_get_function_result` / `pg_get_function_arguments` /
//!   `pg_get_viewdef` / `pg_tablespace_location` (NULL; `SHOW CREATE` has
//!   a view's definition).
//! - Rewrites of client query shapes DataFusion cannot plan, applied to
//!   the parsed statement (`rewrite`): pgcli's `proargtypes::regtype[]`
//!   (argument types of functions) and psql's `ARRAY(SELECT …)` over
//!   catalog tables (`\du`, `\dp`, `\dT+`, `\d+ NAME`) and
//!   `array_to_string(…acl, …)` (`\dn+`, `\l+`) become NULL: the columns
//!   hold nothing eddy has; `prorettype::regtype::text` becomes
//!   `format_type(prorettype, NULL)`; psql's one-row scalar subqueries over
//!   catalog tables get the `max(…)` DataFusion needs to see one row; and
//!   `interval` / `bytea` literals in PostgreSQL spellings Arrow does not
//!   read are respelled (see `crate::types::input`).
//!
//! (About 950 lines, 75 of them tests: each item above is short and
//! independent; together they are the catalog shim, and a new client's need
//! goes here.)

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, RecordBatch, StringArray, new_null_array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::catalog::{SchemaProvider, Session};
use datafusion::common::ScalarValue;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    self as ast, FunctionArguments, Value, ValueWithSpan, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;

use crate::dataflow::runtime::Dataflows;

/// Install the wrapped `pg_catalog` schema and the extra functions.
pub fn install(ctx: &SessionContext, catalog: &str, dataflows: &Arc<Dataflows>) -> DfResult<()> {
    if let Some(cat) = ctx.catalog(catalog)
        && let Some(inner) = cat.schema("pg_catalog")
    {
        cat.register_schema(
            "pg_catalog",
            Arc::new(PgCatalog {
                inner,
                dataflows: Arc::clone(dataflows),
            }),
        )?;
    }
    use CatalogFnKind::{
        ArrowFullTypeName, ArrowTypeName, Null, SizePretty, True, TypeOf, Version,
    };
    let oid_fns: &[(&'static str, CatalogFnKind, DataType)] = &[
        ("pg_size_pretty", SizePretty, DataType::Utf8),
        ("pg_table_size", Null, DataType::Int64),
        ("pg_indexes_size", Null, DataType::Int64),
        ("pg_database_size", Null, DataType::Int64),
        ("obj_description", Null, DataType::Utf8),
        ("shobj_description", Null, DataType::Utf8),
        ("col_description", Null, DataType::Utf8),
        ("pg_get_function_result", Null, DataType::Utf8),
        ("pg_get_function_arguments", Null, DataType::Utf8),
        ("pg_function_is_visible", True, DataType::Boolean),
        ("pg_type_is_visible", True, DataType::Boolean),
        ("pg_operator_is_visible", True, DataType::Boolean),
        ("pg_collation_is_visible", True, DataType::Boolean),
        ("pg_tablespace_location", Null, DataType::Utf8),
        ("pg_get_viewdef", Null, DataType::Utf8),
        // asyncpg's pool reset calls it; eddy takes no advisory locks, so
        // there are none to release (void: NULL).
        ("pg_advisory_unlock_all", Null, DataType::Utf8),
        // SQLAlchemy asks for a column's sequence: eddy has no sequences
        // (no serial columns), and PostgreSQL answers NULL for a column
        // without one.
        ("pg_get_serial_sequence", Null, DataType::Utf8),
        ("version", Version, DataType::Utf8),
        ("pg_typeof", TypeOf, DataType::Utf8),
        (ARROW_TYPE_NAME, ArrowTypeName, DataType::Utf8),
        (ARROW_FULL_TYPE_NAME, ArrowFullTypeName, DataType::Utf8),
    ];
    for (name, kind, ret) in oid_fns {
        let signature = match kind {
            SizePretty => Signature::uniform(1, vec![DataType::Int64], Volatility::Immutable),
            Version => Signature::nullary(Volatility::Stable),
            TypeOf => Signature::any(1, Volatility::Immutable),
            ArrowTypeName | ArrowFullTypeName => {
                Signature::exact(vec![DataType::Utf8], Volatility::Immutable)
            }
            _ if *name == "pg_advisory_unlock_all" => Signature::nullary(Volatility::Volatile),
            _ => Signature::variadic_any(Volatility::Stable),
        };
        ctx.register_udf(ScalarUDF::new_from_impl(CatalogFn {
            name,
            signature,
            ret: ret.clone(),
            kind: *kind,
        }));
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum CatalogFnKind {
    /// NULL of the return type: nothing eddy knows.
    Null,
    True,
    SizePretty,
    /// `pg_typeof(x)`: PostgreSQL's name of `x`'s type.
    TypeOf,
    /// PostgreSQL's name of the Arrow type DataFusion's information schema
    /// prints (`Int32` is `integer`), as `information_schema.columns`
    /// gives it (every array is `ARRAY`).
    ArrowTypeName,
    /// The same with arrays' element types (`text[]`), as `DESCRIBE`
    /// shows them.
    ArrowFullTypeName,
    /// `version()`: PostgreSQL's shape first, which drivers parse
    /// (SQLAlchemy reads the major version from it), then what eddy is.
    Version,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct CatalogFn {
    name: &'static str,
    signature: Signature,
    ret: DataType,
    kind: CatalogFnKind,
}

impl ScalarUDFImpl for CatalogFn {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(self.ret.clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        match self.kind {
            CatalogFnKind::Null => Ok(ColumnarValue::Scalar(ScalarValue::try_from(&self.ret)?)),
            CatalogFnKind::True => Ok(ColumnarValue::Scalar(ScalarValue::Boolean(Some(true)))),
            CatalogFnKind::TypeOf => Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(
                if crate::types::jsonb::is_jsonb(&args.arg_fields[0]) {
                    "jsonb".to_string()
                } else {
                    crate::types::pg_name(args.arg_fields[0].data_type())
                },
            )))),
            CatalogFnKind::Version => Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(format!(
                "PostgreSQL 15.0 on {}-linux, compiled by rustc (eddy {}, Apache DataFusion {})",
                std::env::consts::ARCH,
                env!("CARGO_PKG_VERSION"),
                datafusion::DATAFUSION_VERSION
            ))))),
            CatalogFnKind::ArrowTypeName | CatalogFnKind::ArrowFullTypeName => {
                let arrays_named = self.kind == CatalogFnKind::ArrowFullTypeName;
                let names = args.args[0].to_array(args.number_rows)?;
                let names = cast(&names, &DataType::Utf8)?;
                let out: StringArray = names
                    .as_string::<i32>()
                    .iter()
                    .map(|n| {
                        n.map(|n| match n.parse::<DataType>() {
                            // PostgreSQL's information_schema says ARRAY
                            // for every array type (udt_name has `_int4`).
                            Ok(
                                DataType::List(_)
                                | DataType::LargeList(_)
                                | DataType::FixedSizeList(..),
                            ) if !arrays_named => "ARRAY".to_string(),
                            Ok(t) => crate::types::pg_name(&t),
                            Err(_) => n.to_string(),
                        })
                    })
                    .collect();
                Ok(ColumnarValue::Array(Arc::new(out)))
            }
            CatalogFnKind::SizePretty => {
                let sizes = args
                    .args
                    .first()
                    .map(|a| a.to_array(args.number_rows))
                    .transpose()?
                    .unwrap_or_else(|| new_null_array(&DataType::Int64, args.number_rows));
                let sizes = cast(&sizes, &DataType::Int64)?;
                let out: StringArray = sizes
                    .as_primitive::<Int64Type>()
                    .iter()
                    .map(|s| s.map(size_pretty))
                    .collect();
                Ok(ColumnarValue::Array(Arc::new(out)))
            }
        }
    }
}

/// PostgreSQL's `pg_size_pretty(bigint)`: bytes below 10 kB, then kB, MB,
/// GB, TB, PB, each used below 20,480 of it (half-rounded).
pub fn size_pretty(size: i64) -> String {
    // (name, limit, half-rounded, bits)
    const UNITS: [(&str, i64, bool, u32); 6] = [
        ("bytes", 10 * 1024, false, 0),
        ("kB", 20 * 1024 - 1, true, 10),
        ("MB", 20 * 1024 - 1, true, 20),
        ("GB", 20 * 1024 - 1, true, 30),
        ("TB", 20 * 1024 - 1, true, 40),
        ("PB", 20 * 1024 - 1, true, 50),
    ];
    let half_rounded = |x: i64| (x + if x < 0 { -1 } else { 1 }) / 2;
    let mut size = size;
    for (i, (name, limit, round, bits)) in UNITS.iter().enumerate() {
        let last = i + 1 == UNITS.len();
        if last || size.unsigned_abs() < *limit as u64 {
            if *round {
                size = half_rounded(size);
            }
            return format!("{size} {name}");
        }
        let (_, _, next_round, next_bits) = UNITS[i + 1];
        let shift = next_bits - bits - u32::from(next_round) + u32::from(*round);
        size /= 1i64 << shift;
    }
    unreachable!("the last unit always formats")
}

/// datafusion-pg-catalog's `pg_catalog` schema with `pg_class` wrapped.
#[derive(Debug)]
struct PgCatalog {
    inner: Arc<dyn SchemaProvider>,
    dataflows: Arc<Dataflows>,
}

#[async_trait]
impl SchemaProvider for PgCatalog {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let t = self.inner.table(name).await?;
        if !name.eq_ignore_ascii_case("pg_class") {
            return Ok(t);
        }
        Ok(t.map(|inner| {
            Arc::new(PgClass::new(inner, Arc::clone(&self.dataflows))) as Arc<dyn TableProvider>
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

/// `pg_class` with `relkind = 'm'` for materialized views, plus the
/// `reloptions` and `relacl` columns (NULL).
#[derive(Debug)]
struct PgClass {
    inner: Arc<dyn TableProvider>,
    dataflows: Arc<Dataflows>,
    schema: SchemaRef,
}

const EXTRA_COLUMNS: [&str; 2] = ["reloptions", "relacl"];

impl PgClass {
    fn new(inner: Arc<dyn TableProvider>, dataflows: Arc<Dataflows>) -> PgClass {
        let base = inner.schema();
        let mut fields: Vec<Field> = base.fields().iter().map(|f| f.as_ref().clone()).collect();
        for c in EXTRA_COLUMNS {
            if base.field_with_name(c).is_err() {
                fields.push(Field::new(
                    c,
                    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                    true,
                ));
            }
        }
        PgClass {
            inner,
            dataflows,
            schema: Arc::new(Schema::new_with_metadata(fields, base.metadata().clone())),
        }
    }

    /// The inner rows with materialized views marked and the extra columns.
    fn adjust(&self, batch: &RecordBatch, views: &HashSet<String>) -> DfResult<RecordBatch> {
        let schema = batch.schema();
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        if let (Ok(name_at), Ok(kind_at)) = (schema.index_of("relname"), schema.index_of("relkind"))
        {
            let names = cast(&columns[name_at], &DataType::Utf8)?;
            let names = names.as_string::<i32>();
            let kinds = cast(&columns[kind_at], &DataType::Utf8)?;
            let kinds = kinds.as_string::<i32>();
            let marked: StringArray = (0..batch.num_rows())
                .map(|i| {
                    if names.is_valid(i) && views.contains(names.value(i)) {
                        Some("m")
                    } else {
                        kinds.is_valid(i).then(|| kinds.value(i))
                    }
                })
                .collect();
            let want = schema.field(kind_at).data_type();
            columns[kind_at] = cast(&(Arc::new(marked) as ArrayRef), want)?;
        }
        for f in self.schema.fields().iter().skip(columns.len()) {
            columns.push(new_null_array(f.data_type(), batch.num_rows()));
        }
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}

#[async_trait]
impl TableProvider for PgClass {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let plan = self.inner.scan(state, None, &[], None).await?;
        let batches = datafusion::physical_plan::collect(plan, state.task_ctx()).await?;
        let views: HashSet<String> = self.dataflows.view_names().into_iter().collect();
        let batches = batches
            .iter()
            .map(|b| self.adjust(b, &views))
            .collect::<DfResult<Vec<_>>>()?;
        Ok(MemorySourceConfig::try_new_exec(
            &[batches],
            self.schema(),
            projection.cloned(),
        )?)
    }
}

/// Rewrite the client catalog query shapes DataFusion cannot plan (see the
/// module doc); true if anything changed.
pub fn rewrite(stmt: &mut ast::Statement) -> bool {
    let mut v = Rewriter { changed: false };
    let _ = stmt.visit(&mut v);
    v.changed
}

struct Rewriter {
    changed: bool,
}

fn null() -> ast::Expr {
    ast::Expr::Value(ValueWithSpan::from(Value::Null))
}

fn lower_last(e: &ast::Expr) -> String {
    match e {
        ast::Expr::Identifier(i) => i.value.to_ascii_lowercase(),
        ast::Expr::CompoundIdentifier(p) => p
            .last()
            .map(|i| i.value.to_ascii_lowercase())
            .unwrap_or_default(),
        _ => String::new(),
    }
}

fn type_name(t: &ast::DataType) -> String {
    t.to_string()
        .to_ascii_lowercase()
        .trim_start_matches("pg_catalog.")
        .to_string()
}

/// `pg_catalog.format_type(expr, NULL)`.
fn format_type(expr: ast::Expr) -> ast::Expr {
    let mut f = datafusion::sql::sqlparser::parser::Parser::new(&PostgreSqlDialect {})
        .try_with_sql("pg_catalog.format_type(x, NULL)")
        .and_then(|mut p| p.parse_expr())
        .expect("a fixed expression parses");
    if let ast::Expr::Function(func) = &mut f
        && let FunctionArguments::List(list) = &mut func.args
        && let Some(ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(x))) =
            list.args.first_mut()
    {
        *x = expr;
    }
    f
}

/// A string literal of type `interval` or `bytea` in a spelling PostgreSQL
/// reads and Arrow does not (`'01:30:00'::interval`, `INTERVAL '3 days
/// 04:00:00'`, `'\\x00ff'::bytea`) respelled so DataFusion reads the same
/// value; true if it did.
fn literal(e: &mut ast::Expr) -> bool {
    fn string(e: &mut ast::Expr) -> Option<&mut String> {
        match e {
            ast::Expr::Value(ValueWithSpan {
                value: Value::SingleQuotedString(s),
                ..
            }) => Some(s),
            _ => None,
        }
    }
    fn respell_interval(s: &mut String) -> bool {
        match crate::types::input::parse_interval(s) {
            // Arrow reads it already (and the user's spelling is kept).
            Some(i) if crate::types::input::arrow_reads_interval(s) == Some(i) => false,
            Some(i) => {
                let text = crate::types::input::arrow_interval_text(i);
                let changed = *s != text;
                *s = text;
                changed
            }
            None => false,
        }
    }
    fn hex_bytea(s: &str) -> Option<ast::Expr> {
        // Without a backslash the text is its own bytes to both readers.
        if !s.contains('\\') {
            return None;
        }
        let bytes = crate::types::input::parse_bytea(s)?;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Some(ast::Expr::Value(ValueWithSpan::from(
            Value::HexStringLiteral(hex),
        )))
    }
    match e {
        ast::Expr::Interval(i) if i.leading_field.is_none() && i.last_field.is_none() => {
            string(&mut i.value).is_some_and(respell_interval)
        }
        ast::Expr::TypedString(t) if matches!(t.data_type, ast::DataType::Timestamp(..)) => {
            match &mut t.value.value {
                Value::SingleQuotedString(s) => respell_timestamp(s),
                _ => false,
            }
        }
        ast::Expr::Cast {
            expr,
            data_type: ast::DataType::Timestamp(..),
            ..
        } => string(expr).is_some_and(respell_timestamp),
        ast::Expr::Cast {
            expr, data_type, ..
        } => match data_type {
            ast::DataType::Interval { .. } => string(expr).is_some_and(respell_interval),
            ast::DataType::Bytea => match string(expr).and_then(|s| hex_bytea(s)) {
                Some(hex) => {
                    *e = hex;
                    true
                }
                None => false,
            },
            _ => false,
        },
        _ => false,
    }
}

/// A timestamp without seconds (`2024-01-01 10:00`, PostgreSQL reads it;
/// Arrow's parser does not) given its `:00`; true if it was.
fn respell_timestamp(s: &mut String) -> bool {
    let b = s.as_bytes();
    let date = b.len() >= 16
        && b[..10].iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        })
        && (b[10] == b' ' || b[10] == b'T');
    if !date {
        return false;
    }
    // HH:MM, then no seconds and no more digits.
    let time = &b[11..];
    let minutes_end = 5;
    let hh_mm = time.len() >= 5
        && time[..2].iter().all(u8::is_ascii_digit)
        && time[2] == b':'
        && time[3..5].iter().all(u8::is_ascii_digit);
    if !hh_mm
        || time
            .get(minutes_end)
            .is_some_and(|c| *c == b':' || c.is_ascii_digit())
    {
        return false;
    }
    s.insert_str(11 + minutes_end, ":00");
    true
}

/// In `INSERT INTO t [(cols)] VALUES …`, a string literal bound for an
/// `interval` or `bytea` column is read as PostgreSQL reads it (DataFusion
/// would take a bytea's text as its raw bytes and reject `'01:30:00'` as an
/// interval): it becomes a cast to the column's type, respelled by
/// `rewrite`. One for an array column (`'{1,2}'`) becomes `ARRAY[…]`. `schema` is the table's; true if anything changed.
pub fn coerce_insert_literals(stmt: &mut ast::Statement, schema: &Schema) -> bool {
    let ast::Statement::Insert(insert) = stmt else {
        return false;
    };
    let Some(source) = insert.source.as_mut() else {
        return false;
    };
    let ast::SetExpr::Values(values) = source.body.as_mut() else {
        return false;
    };
    let targets: Vec<Option<&DataType>> = if insert.columns.is_empty() {
        schema
            .fields()
            .iter()
            .map(|f| Some(f.data_type()))
            .collect()
    } else {
        insert
            .columns
            .iter()
            .map(|c| {
                let name = c.to_string();
                let name = name.trim_matches('"');
                schema
                    .fields()
                    .iter()
                    .find(|f| f.name() == name)
                    .map(|f| f.data_type())
            })
            .collect()
    };
    let mut changed = false;
    for row in &mut values.rows {
        for (value, target) in row.content.iter_mut().zip(&targets) {
            if let (Some(DataType::List(_)), ast::Expr::Value(v)) = (target, &*value)
                && let Value::SingleQuotedString(text) = &v.value
                && let Some(items) = crate::types::input::parse_array(text)
            {
                // `'{1,NULL,3}'` → `ARRAY['1', NULL, '3']`; the INSERT casts
                // the elements to the column's element type.
                let elem = items
                    .into_iter()
                    .map(|i| {
                        ast::Expr::value(match i {
                            None => Value::Null,
                            Some(t) => Value::SingleQuotedString(t),
                        })
                    })
                    .collect();
                *value = ast::Expr::Array(ast::Array { elem, named: true });
                changed = true;
                continue;
            }
            if let (Some(DataType::Timestamp(..)), ast::Expr::Value(v)) = (target, &mut *value)
                && let Value::SingleQuotedString(text) = &mut v.value
            {
                changed |= respell_timestamp(text);
                continue;
            }
            let data_type = match target {
                Some(DataType::Interval(_)) => ast::DataType::Interval {
                    fields: None,
                    precision: None,
                },
                Some(DataType::Binary) => ast::DataType::Bytea,
                _ => continue,
            };
            if matches!(
                value,
                ast::Expr::Value(ValueWithSpan {
                    value: Value::SingleQuotedString(_),
                    ..
                })
            ) {
                *value = ast::Expr::Cast {
                    kind: ast::CastKind::DoubleColon,
                    expr: Box::new(value.clone()),
                    data_type,
                    array: false,
                    format: None,
                };
                changed = true;
            }
        }
    }
    if changed {
        rewrite(stmt);
    }
    changed
}

/// `now()` and `CURRENT_TIMESTAMP` in a materialized view's query become
/// `mz_now()`: DataFusion would fold them into the time the view was
/// created, where a view means the time it is read (RisingWave's temporal
/// filters are written with `now()`).
pub fn now_as_mz_now(query: &mut ast::Query) {
    let _ = ast::visit_expressions_mut(query, |e| {
        if let ast::Expr::Function(f) = e {
            let name = f.name.to_string().to_ascii_lowercase();
            let no_args = match &f.args {
                FunctionArguments::None => true,
                FunctionArguments::List(l) => l.args.is_empty(),
                FunctionArguments::Subquery(_) => false,
            };
            if no_args && matches!(name.as_str(), "now" | "current_timestamp") {
                f.name =
                    ast::ObjectName::from(vec![ast::Ident::new(crate::dataflow::temporal::MZ_NOW)]);
                f.args = FunctionArguments::List(ast::FunctionArgumentList {
                    duplicate_treatment: None,
                    args: vec![],
                    clauses: vec![],
                });
            }
        }
        ControlFlow::<()>::Continue(())
    });
}

/// Parenthesize what sqlparser would print so that it reads back as
/// something else: a minus before a negative operand (`- -1` prints as
/// `--1`, a comment). Applied to a view's query before its text is kept.
pub fn printable(query: &mut ast::Query) {
    let _ = ast::visit_expressions_mut(query, |e| {
        if let ast::Expr::UnaryOp {
            op: ast::UnaryOperator::Minus,
            expr,
        } = e
        {
            let negative = match expr.as_ref() {
                ast::Expr::UnaryOp { .. } => true,
                ast::Expr::Value(v) => v.to_string().starts_with('-'),
                _ => false,
            };
            if negative {
                let inner =
                    std::mem::replace(expr.as_mut(), ast::Expr::Value(ast::Value::Null.into()));
                **expr = ast::Expr::Nested(Box::new(inner));
            }
        }
        ControlFlow::<()>::Continue(())
    });
}

/// A scalar subquery over catalog tables (joined among themselves or not)
/// whose one column is not an aggregate (psql's `(SELECT c.relkind = 'c'
/// FROM pg_class c WHERE c.oid = t.typrelid)`, SQLAlchemy's column
/// reflection): the key makes it one row at most, which PostgreSQL
/// checks at run time but DataFusion wants to see in the plan, so the
/// column is wrapped in `max(…)`.
fn aggregate_catalog_subquery(q: &mut ast::Query) -> bool {
    let ast::SetExpr::Select(sel) = q.body.as_mut() else {
        return false;
    };
    let is_catalog = |r: &ast::TableFactor| {
        let s = r.to_string().to_ascii_lowercase();
        s.trim_start_matches("pg_catalog.").starts_with("pg_")
    };
    let catalog_only = !sel.from.is_empty()
        && sel
            .from
            .iter()
            .all(|t| is_catalog(&t.relation) && t.joins.iter().all(|j| is_catalog(&j.relation)));
    let no_group = matches!(&sel.group_by, ast::GroupByExpr::Expressions(e, _) if e.is_empty());
    if !catalog_only || !no_group || sel.projection.len() != 1 || sel.having.is_some() {
        return false;
    }
    let (expr, alias) = match &sel.projection[0] {
        ast::SelectItem::UnnamedExpr(expr) => (expr, None),
        // SQLAlchemy's reflection names them (`AS pg_get_expr_1`).
        ast::SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias.clone())),
        _ => return false,
    };
    let text = expr.to_string().to_ascii_lowercase();
    if [
        "max(",
        "min(",
        "count(",
        "sum(",
        "bool_or(",
        "bool_and(",
        "array_agg(",
    ]
    .iter()
    .any(|a| text.contains(a))
    {
        return false;
    }
    let wrapped = datafusion::sql::sqlparser::parser::Parser::new(&PostgreSqlDialect {})
        .try_with_sql(&format!("max(({expr}))"))
        .and_then(|mut p| p.parse_expr());
    match wrapped {
        Ok(w) => {
            sel.projection[0] = match alias {
                None => ast::SelectItem::UnnamedExpr(w),
                Some(alias) => ast::SelectItem::ExprWithAlias { expr: w, alias },
            };
            true
        }
        Err(_) => false,
    }
}

/// The function naming an information-schema Arrow type as PostgreSQL.
const ARROW_TYPE_NAME: &str = "eddy_pg_type_of_arrow";
/// The same, arrays named with their element type (`text[]`).
pub const ARROW_FULL_TYPE_NAME: &str = "eddy_pg_full_type_of_arrow";

/// `information_schema.columns` as PostgreSQL fills it where DataFusion's
/// differs: `data_type` by PostgreSQL's type names (`integer`, not
/// `Int32`), `ordinal_position` from 1, the precision of floats and
/// integers in bits. (Its inner reference is quoted, so the rewrite does
/// not take it again.)
fn information_schema_columns() -> Box<ast::Query> {
    let sql = format!(
        "SELECT table_catalog, table_schema, table_name, column_name, \
         CAST(ordinal_position + 1 AS BIGINT) AS ordinal_position, column_default, is_nullable, \
         {ARROW_TYPE_NAME}(data_type) AS data_type, character_maximum_length, \
         CASE WHEN data_type = 'Utf8' THEN 1073741824 ELSE character_octet_length END AS character_octet_length, \
         CASE data_type WHEN 'Float64' THEN 53 WHEN 'Int64' THEN 64 WHEN 'Int16' THEN 16 ELSE numeric_precision END AS numeric_precision, \
         CASE WHEN data_type IN ('Int64', 'Int16') THEN 2 ELSE numeric_precision_radix END AS numeric_precision_radix, \
         CASE WHEN data_type IN ('Int16', 'Int32', 'Int64') THEN 0 ELSE numeric_scale END AS numeric_scale, \
         datetime_precision, interval_type \
         FROM information_schema.\"columns\""
    );
    datafusion::sql::sqlparser::parser::Parser::new(&PostgreSqlDialect {})
        .try_with_sql(&sql)
        .and_then(|mut p| p.parse_query())
        .expect("a fixed query parses")
}

impl VisitorMut for Rewriter {
    type Break = ();

    fn pre_visit_table_factor(&mut self, t: &mut ast::TableFactor) -> ControlFlow<()> {
        // TUMBLE(…) / HOP(…) in FROM: plain SQL (engine/windows.rs).
        if super::windows::expand(t) {
            self.changed = true;
        }
        if let ast::TableFactor::Table {
            name,
            alias,
            args: None,
            ..
        } = t
            && let [schema, table] = name.0.as_slice()
            && let (Some(schema), Some(table)) = (schema.as_ident(), table.as_ident())
            && schema.value.eq_ignore_ascii_case("information_schema")
            && table.quote_style.is_none()
            && table.value.eq_ignore_ascii_case("columns")
        {
            let alias = alias.take().or_else(|| {
                Some(ast::TableAlias {
                    name: ast::Ident::new("columns"),
                    columns: vec![],
                    explicit: true,
                    at: None,
                })
            });
            *t = ast::TableFactor::Derived {
                lateral: false,
                subquery: information_schema_columns(),
                alias,
                sample: None,
            };
            self.changed = true;
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &mut ast::Expr) -> ControlFlow<()> {
        if literal(e) {
            self.changed = true;
            return ControlFlow::Continue(());
        }
        // pgcli: prorettype::regtype::text, the type's name.
        if let ast::Expr::Cast {
            expr, data_type, ..
        } = e
            && type_name(data_type) == "text"
            && let ast::Expr::Cast {
                expr: inner,
                data_type: inner_type,
                ..
            } = expr.as_ref()
            && type_name(inner_type) == "regtype"
            && lower_last(inner).ends_with("type")
        {
            *e = format_type(inner.as_ref().clone());
            self.changed = true;
            return ControlFlow::Continue(());
        }
        if let ast::Expr::Subquery(q) = e
            && aggregate_catalog_subquery(q)
        {
            self.changed = true;
        }
        // psycopg's TypeInfo.fetch: to_regtype(name) is the type's oid or
        // NULL, which the `::regtype` rewrite (a pg_type subquery) gives.
        if let ast::Expr::Function(f) = e
            && f.name.to_string().eq_ignore_ascii_case("to_regtype")
            && let FunctionArguments::List(list) = &f.args
            && let [ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(arg))] =
                list.args.as_slice()
        {
            *e = ast::Expr::Cast {
                kind: ast::CastKind::DoubleColon,
                expr: Box::new(arg.clone()),
                data_type: ast::DataType::Custom(
                    ast::ObjectName::from(vec![ast::Ident::new("regtype")]),
                    vec![],
                ),
                array: false,
                format: None,
            };
            self.changed = true;
            return ControlFlow::Continue(());
        }
        let replace = match e {
            // pgcli: COALESCE(proallargtypes::regtype[], proargtypes::regtype[])
            ast::Expr::Cast {
                expr, data_type, ..
            } => {
                type_name(data_type) == "regtype[]"
                    && matches!(lower_last(expr).as_str(), "proargtypes" | "proallargtypes")
            }
            // psql: ARRAY(SELECT … FROM pg_auth_members …) (`\du`), over
            // pg_enum, ACLs (`\dT+`, `\dp`), reloptions (`\d+ NAME`).
            ast::Expr::Function(f) if f.name.to_string().eq_ignore_ascii_case("array") => {
                match &f.args {
                    FunctionArguments::Subquery(q) => {
                        let text = q.to_string().to_ascii_lowercase();
                        text.contains("pg_") || text.contains("reloptions")
                    }
                    _ => false,
                }
            }
            // psql's `\dn+`, `\l+`, `\dp`: array_to_string(n.nspacl, E'\n')
            // or of ARRAY(SELECT …): access privileges eddy does not have.
            ast::Expr::Function(f)
                if f.name
                    .to_string()
                    .to_ascii_lowercase()
                    .ends_with("array_to_string") =>
            {
                match &f.args {
                    FunctionArguments::List(l) => l.args.first().is_some_and(|a| {
                        matches!(a, ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(x))
                            if lower_last(x).ends_with("acl")
                                || matches!(x, ast::Expr::Function(g)
                                    if g.name.to_string().eq_ignore_ascii_case("array")))
                    }),
                    _ => false,
                }
            }
            _ => false,
        };
        if replace {
            *e = null();
            self.changed = true;
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_pretty_matches_postgres() {
        // Values printed by PostgreSQL 15's pg_size_pretty(bigint).
        for (n, want) in [
            (0, "0 bytes"),
            (10239, "10239 bytes"),
            (10240, "10 kB"),
            (-10240, "-10 kB"),
            (123_456, "121 kB"),
            (20_971_520, "20 MB"),
            (10_485_760, "10 MB"),
            (21_474_836_480, "20 GB"),
            (1_099_511_627_776, "1024 GB"),
            (i64::MAX, "8192 PB"),
        ] {
            assert_eq!(size_pretty(n), want, "{n}");
        }
    }

    #[test]
    fn rewrites_only_the_client_shapes() {
        let parse = |s: &str| {
            datafusion::sql::sqlparser::parser::Parser::parse_sql(
                &datafusion::sql::sqlparser::dialect::PostgreSqlDialect {},
                s,
            )
            .expect("parses")
            .remove(0)
        };
        let mut s = parse(
            "SELECT COALESCE(proallargtypes::regtype[], proargtypes::regtype[])::text[] FROM pg_proc",
        );
        assert!(rewrite(&mut s));
        assert_eq!(
            s.to_string(),
            "SELECT COALESCE(NULL, NULL)::TEXT[] FROM pg_proc"
        );
        let mut s = parse(
            "SELECT ARRAY(SELECT b.rolname FROM pg_catalog.pg_auth_members m WHERE m.member = r.oid) AS memberof FROM pg_roles r",
        );
        assert!(rewrite(&mut s));
        assert!(s.to_string().starts_with("SELECT NULL AS memberof"));
        let mut s = parse("SELECT prorettype::regtype::text FROM pg_proc");
        assert!(rewrite(&mut s));
        assert_eq!(
            s.to_string(),
            "SELECT pg_catalog.format_type(prorettype, NULL) FROM pg_proc"
        );
        let mut s = parse(
            "SELECT 1 FROM pg_type t WHERE (SELECT c.relkind = 'c' FROM pg_catalog.pg_class c WHERE c.oid = t.typrelid)",
        );
        assert!(rewrite(&mut s));
        assert!(
            s.to_string().contains("SELECT max((c.relkind = 'c')) FROM"),
            "{s}"
        );
        let mut s =
            parse("SELECT '01:30:00'::interval, INTERVAL '1 day 02:00:00', '\\x00ff'::bytea");
        assert!(rewrite(&mut s));
        assert_eq!(
            s.to_string(),
            "SELECT '0 mons 0 days 5400.000000000 secs'::INTERVAL, INTERVAL '0 mons 1 days 7200.000000000 secs', X'00ff'"
        );
        // A user's query is left alone.
        let mut s = parse("SELECT (SELECT a FROM t WHERE t.k = u.k) FROM u");
        assert!(!rewrite(&mut s));
        let mut s = parse("SELECT INTERVAL '1 hour', '15 minutes'::interval, 'abc'::bytea");
        assert!(!rewrite(&mut s));
        let mut s = parse("SELECT ARRAY(SELECT x FROM t), y::regtype[] FROM u");
        assert!(!rewrite(&mut s));
    }
}
