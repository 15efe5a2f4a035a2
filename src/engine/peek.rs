//! Fast-path peeks (Materialize's name): a query that only looks up rows
//! of one table or materialized view by equalities on its columns —
//! `SELECT * | cols FROM rel WHERE a = <literal or $n> [AND …]` — is
//! answered from the relation's arrangement without DataFusion: no
//! planning, no optimizer, no physical plan, per execution. The extended
//! protocol keeps the parsed statement, so a prepared point lookup parses
//! once and then only binds and looks up.
//!
//! The shape is checked on eddy's parse and is deliberately narrow; any
//! query outside it (another clause, an expression, a literal whose
//! coercion PostgreSQL and this path might see differently, a relation
//! that is not maintained, predicates no arrangement is bound by) goes the
//! usual way. The rows are those DataFusion would return: the lookup's
//! superset is filtered by the same equalities with Arrow's kernels, and
//! the columns are the relation's own.

use std::sync::Arc;

use datafusion::arrow::array::{BooleanArray, RecordBatch, Scalar};
use datafusion::arrow::compute::kernels::cmp::eq;
use datafusion::arrow::compute::{and, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::logical_expr::{col, lit};
use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr as SqlExpr, GroupByExpr, Ident, ObjectNamePart, Query, SelectItem,
    SetExpr, Statement as SqlStatement, TableFactor, Value,
};

use super::index_table::plan_probes;
use super::{Engine, Result};
use crate::dataflow::index::exact_type;

/// A query answered by looking rows up (see the module's comment).
#[derive(Debug, Clone)]
pub struct Peek {
    relation: String,
    /// Output columns: (column name in the relation, the name sent).
    columns: Option<Vec<(String, String)>>,
    /// Conjunction of `column = operand`.
    eq: Vec<(String, Operand)>,
}

#[derive(Debug, Clone)]
enum Operand {
    Number(String),
    Text(String),
    Bool(bool),
    /// `$n`, 0-based.
    Param(usize),
}

/// The rows a peek found: their schema, one batch, PostgreSQL's names.
pub struct Peeked {
    pub schema: SchemaRef,
    pub batch: RecordBatch,
    pub names: Vec<String>,
}

/// The peek `stmt` is, if it has the shape.
pub fn peek_of(stmt: &SqlStatement) -> Option<Peek> {
    let SqlStatement::Query(q) = stmt else {
        return None;
    };
    let Query {
        with: None,
        body,
        order_by: None,
        limit_clause: None,
        fetch: None,
        locks,
        for_clause: None,
        settings: None,
        format_clause: None,
        pipe_operators,
    } = q.as_ref()
    else {
        return None;
    };
    if !locks.is_empty() || !pipe_operators.is_empty() {
        return None;
    }
    let SetExpr::Select(s) = body.as_ref() else {
        return None;
    };
    let plain = s.distinct.is_none()
        && s.select_modifiers.is_none()
        && s.top.is_none()
        && s.exclude.is_none()
        && s.into.is_none()
        && s.lateral_views.is_empty()
        && s.prewhere.is_none()
        && s.connect_by.is_empty()
        && matches!(&s.group_by, GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty())
        && s.cluster_by.is_empty()
        && s.distribute_by.is_empty()
        && s.sort_by.is_empty()
        && s.having.is_none()
        && s.named_window.is_empty()
        && s.qualify.is_none()
        && s.value_table_mode.is_none()
        && s.from.len() == 1
        && s.from[0].joins.is_empty();
    if !plain {
        return None;
    }
    let TableFactor::Table {
        name,
        alias,
        args: None,
        with_hints,
        version: None,
        with_ordinality: false,
        partitions,
        json_path: None,
        sample: None,
        index_hints,
    } = &s.from[0].relation
    else {
        return None;
    };
    if !with_hints.is_empty() || !partitions.is_empty() || !index_hints.is_empty() {
        return None;
    }
    if alias.as_ref().is_some_and(|a| !a.columns.is_empty()) {
        return None;
    }
    let [ObjectNamePart::Identifier(table)] = name.0.as_slice() else {
        return None;
    };
    let qualifier = alias.as_ref().map(|a| &a.name).unwrap_or(table);
    let column = |e: &SqlExpr| -> Option<String> {
        match e {
            SqlExpr::Identifier(i) => Some(folded(i)),
            SqlExpr::CompoundIdentifier(parts) => match parts.as_slice() {
                [q, c] if folded(q) == folded(qualifier) => Some(folded(c)),
                _ => None,
            },
            _ => None,
        }
    };
    let columns = match s.projection.as_slice() {
        [SelectItem::Wildcard(o)]
            if o.opt_ilike.is_none()
                && o.opt_exclude.is_none()
                && o.opt_except.is_none()
                && o.opt_replace.is_none()
                && o.opt_rename.is_none()
                && o.opt_alias.is_none() =>
        {
            None
        }
        items => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                out.push(match item {
                    SelectItem::UnnamedExpr(e) => {
                        let c = column(e)?;
                        (c.clone(), c)
                    }
                    SelectItem::ExprWithAlias { expr, alias } => (column(expr)?, folded(alias)),
                    _ => return None,
                });
            }
            Some(out)
        }
    };
    let mut eq = Vec::new();
    conjuncts(s.selection.as_ref()?, &column, &mut eq)?;
    Some(Peek {
        relation: folded(table),
        columns,
        eq,
    })
}

/// PostgreSQL's identifier folding: unquoted names are lower-cased.
fn folded(i: &Ident) -> String {
    match i.quote_style {
        Some(_) => i.value.clone(),
        None => i.value.to_lowercase(),
    }
}

fn conjuncts(
    e: &SqlExpr,
    column: &dyn Fn(&SqlExpr) -> Option<String>,
    out: &mut Vec<(String, Operand)>,
) -> Option<()> {
    match e {
        SqlExpr::Nested(e) => conjuncts(e, column, out),
        SqlExpr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            conjuncts(left, column, out)?;
            conjuncts(right, column, out)
        }
        SqlExpr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } => {
            let (c, v) = match (column(left), column(right)) {
                (Some(c), None) => (c, operand(right)?),
                (None, Some(c)) => (c, operand(left)?),
                _ => return None,
            };
            out.push((c, v));
            Some(())
        }
        _ => None,
    }
}

fn operand(e: &SqlExpr) -> Option<Operand> {
    let SqlExpr::Value(v) = e else {
        return None;
    };
    match &v.value {
        Value::Number(n, false) => Some(Operand::Number(n.clone())),
        Value::SingleQuotedString(s) => Some(Operand::Text(s.clone())),
        Value::Boolean(b) => Some(Operand::Bool(*b)),
        Value::Placeholder(p) => {
            let n: usize = p.strip_prefix('$')?.parse().ok()?;
            Some(Operand::Param(n.checked_sub(1)?))
        }
        _ => None,
    }
}

impl Operand {
    /// The value compared with a column of type `t`, as PostgreSQL would
    /// coerce it; None when this path does not take that pairing (the
    /// query then goes through DataFusion, which decides).
    fn value(&self, t: &DataType, params: Option<&ParamValues>) -> Option<ScalarValue> {
        let int = matches!(
            t,
            DataType::Int8
                | DataType::Int16
                | DataType::Int32
                | DataType::Int64
                | DataType::UInt8
                | DataType::UInt16
                | DataType::UInt32
                | DataType::UInt64
        );
        let text = matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
        match self {
            // An integer literal against an integer column (PostgreSQL
            // compares in the wider type: out of the column's range
            // matches nothing).
            Operand::Number(n) if int => n.parse::<i64>().ok().map(|v| ScalarValue::Int64(Some(v))),
            Operand::Text(s) if text => Some(ScalarValue::Utf8(Some(s.clone()))),
            Operand::Bool(b) if *t == DataType::Boolean => Some(ScalarValue::Boolean(Some(*b))),
            // A parameter typed (at Parse) from the column it is compared
            // with.
            Operand::Param(i) => match params? {
                ParamValues::List(values) => values.get(*i).map(|v| v.value.clone()),
                ParamValues::Map(_) => None,
            },
            _ => None,
        }
    }
}

impl Engine {
    /// Answer `peek` from its relation's arrangement, or None when this
    /// path does not take it (the caller runs the query as usual).
    pub fn peek(&self, peek: &Peek, params: Option<&ParamValues>) -> Result<Option<Peeked>> {
        let version = self.dataflows.version(None);
        // SUBSCRIBE's transient dataflows are maintained but not relations
        // a query may name.
        if peek.relation.starts_with("_eddy") || !version.contains(&peek.relation) {
            return Ok(None);
        }
        // A view in an error state: the usual path reports its error.
        let Ok(snapshot) = version.get(&peek.relation) else {
            return Ok(None);
        };
        let schema = snapshot.schema();
        let index = |name: &str| {
            let mut found = schema
                .fields()
                .iter()
                .enumerate()
                .filter(|(_, f)| f.name() == name);
            match (found.next(), found.next()) {
                (Some((i, _)), None) => Some(i),
                _ => None,
            }
        };
        let mut bound = Vec::with_capacity(peek.eq.len());
        for (name, operand) in &peek.eq {
            let Some(c) = index(name) else {
                return Ok(None);
            };
            let t = schema.field(c).data_type();
            if !exact_type(t) {
                return Ok(None);
            }
            let Some(v) = operand.value(t, params) else {
                return Ok(None);
            };
            bound.push((c, v));
        }
        let filters: Vec<_> = bound
            .iter()
            .map(|(c, v)| {
                col(datafusion::common::Column::new_unqualified(
                    schema.field(*c).name(),
                ))
                .eq(lit(v.clone()))
            })
            .collect();
        let Some(probes) = plan_probes(&snapshot, &filters) else {
            return Ok(None);
        };
        let found = snapshot.lookup(&probes)?;
        // The lookup may hold more than the equalities keep (a probe bound
        // only some of them): filter by all of them.
        let mut keep: Option<BooleanArray> = None;
        for (c, v) in &bound {
            let column = found.column(*c);
            let mask = match v.cast_to(column.data_type()) {
                Ok(cast)
                    if cast.cast_to(&v.data_type()).is_ok_and(|b| b == *v) && !cast.is_null() =>
                {
                    eq(column, &Scalar::new(cast.to_array_of_size(1)?)).map_err(df)?
                }
                // NULL, or a value no row of this type can equal.
                _ => BooleanArray::from(vec![false; found.num_rows()]),
            };
            keep = Some(match keep {
                None => mask,
                Some(k) => and(&k, &mask).map_err(df)?,
            });
        }
        let found = match keep {
            Some(k) => filter_record_batch(&found, &k).map_err(df)?,
            None => found,
        };
        let (batch, names) = match &peek.columns {
            None => {
                let names = schema.fields().iter().map(|f| f.name().clone()).collect();
                (found, names)
            }
            Some(columns) => {
                let mut indices = Vec::with_capacity(columns.len());
                for (name, _) in columns {
                    let Some(i) = index(name) else {
                        return Ok(None);
                    };
                    indices.push(i);
                }
                let fields: Vec<Field> = indices
                    .iter()
                    .zip(columns)
                    .map(|(i, (_, out))| schema.field(*i).clone().with_name(out.clone()))
                    .collect();
                let batch = RecordBatch::try_new(
                    Arc::new(Schema::new(fields)),
                    indices
                        .iter()
                        .map(|i| Arc::clone(found.column(*i)))
                        .collect(),
                )
                .map_err(df)?;
                (batch, columns.iter().map(|(_, n)| n.clone()).collect())
            }
        };
        Ok(Some(Peeked {
            schema: batch.schema(),
            batch,
            names,
        }))
    }
}

fn df(e: datafusion::arrow::error::ArrowError) -> datafusion::error::DataFusionError {
    e.into()
}
