//! UPDATE and DELETE on tables.
//!
//! A table is the multiset of rows in its changelog topic, where a record
//! carries its diff in the `eddy.diff` header (absent: +1). DELETE reads the
//! rows matching its WHERE from the table's state (one DataFusion query) and
//! appends their retractions; UPDATE reads, in the same query, the matching
//! rows and their new values, and appends the retractions and the
//! insertions. The changes of one statement go into one record batch with
//! one fsync, so a crash leaves all of them or none. Statements run one at
//! a time, and a tick runs before the statement is acknowledged, so the next
//! query sees it.

use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::ParamValues;
use datafusion::sql::sqlparser::ast::{
    AssignmentTarget, Delete, Expr, FromTable, TableFactor, TableWithJoins, Update, Value,
};

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::UInt64Type;
use datafusion::dataframe::DataFrame;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;

use super::txn::{Transaction, session_in};
use super::{Engine, EngineError, Output, Result};
use crate::catalog::Object;
use crate::dataflow::source::DIFF_HEADER;
use crate::format::json;
use crate::format::record::Layout;
use crate::log::batch::{self, NewRecord};
use crate::log::{Durability, now_ms};

/// Parameters whose type is known from where they go (`SET col = $n`).
pub(super) type TypedParams = Vec<(String, DataType)>;

use super::names::quoted as quote;

impl Engine {
    /// The table a DML statement names: (name, alias, topic, column names).
    fn dml_target(&self, t: &TableWithJoins, verb: &str) -> Result<(String, String, Vec<String>)> {
        if !t.joins.is_empty() {
            return Err(EngineError::Unsupported(format!("{verb} with joins")));
        }
        let TableFactor::Table { name, alias, .. } = &t.relation else {
            return Err(EngineError::Unsupported(format!(
                "{verb} of {}",
                t.relation
            )));
        };
        let name = super::names::object(name);
        let from = match alias {
            Some(a) => format!("{} AS {}", quote(&name), a.name),
            None => quote(&name),
        };
        match self.lock()?.get(&name) {
            Some(Object::Table { columns, .. }) => Ok((
                name.clone(),
                from,
                columns.iter().map(|c| c.name.clone()).collect(),
            )),
            Some(o) => Err(EngineError::WrongObject(format!(
                "cannot {verb} \"{name}\": it is a {}, not a table",
                o.kind()
            ))),
            None => Err(EngineError::UnknownObject {
                kind: "relation",
                name,
            }),
        }
    }

    fn table_topic(&self, name: &str) -> Result<(String, Layout)> {
        match self.lock()?.get(name) {
            Some(Object::Table {
                topic,
                columns,
                primary_key,
                ..
            }) => Ok((topic.clone(), Self::table_layout(columns, primary_key)?)),
            _ => Err(EngineError::UnknownObject {
                kind: "table",
                name: name.to_string(),
            }),
        }
    }

    /// Append `(rows, diff)` groups to a table's changelog as one batch,
    /// fsynced, then tick. A keyed table's changelog is upserts: a
    /// retraction is a tombstone for the row's key, an insertion a record
    /// keyed by it; otherwise each record carries its diff in a header.
    async fn write_changes(
        &self,
        topic: &str,
        layout: &Layout,
        parts: Vec<(RecordBatch, i64)>,
    ) -> Result<()> {
        let now = now_ms();
        let mut records = Vec::new();
        let df = |e: datafusion::arrow::error::ArrowError| EngineError::DataFusion(e.into());
        for (batch, diff) in &parts {
            if layout.is_keyed() {
                if *diff < 0 {
                    for key in layout.keys(batch).map_err(df)? {
                        records.push(NewRecord {
                            key: Some(Bytes::from(key)),
                            value: None,
                            timestamp: now,
                            headers: vec![],
                        });
                    }
                } else {
                    for r in layout.encode(batch).map_err(df)? {
                        records.push(NewRecord {
                            key: r.key.map(Bytes::from),
                            value: r.value.map(Bytes::from),
                            timestamp: now,
                            headers: vec![],
                        });
                    }
                }
                continue;
            }
            for row in json::encode(batch).map_err(df)? {
                records.push(NewRecord {
                    key: None,
                    value: Some(Bytes::from(row)),
                    timestamp: now,
                    headers: if *diff == 1 {
                        vec![]
                    } else {
                        vec![(DIFF_HEADER.to_string(), Some(Bytes::from(diff.to_string())))]
                    },
                });
            }
        }
        if records.is_empty() {
            return Ok(());
        }
        let log = Arc::clone(&self.log);
        let topic = topic.to_string();
        tokio::task::spawn_blocking(move || -> Result<()> {
            let bytes = batch::encode(&records).map_err(crate::log::LogError::from)?;
            log.append(&topic, 0, bytes, Durability::Fsync)?;
            Ok(())
        })
        .await
        .map_err(|e| EngineError::Invalid(e.to_string()))??;
        self.tick().await?;
        Ok(())
    }

    /// The query reading the rows a DELETE removes: (table, query).
    pub(super) fn delete_query(&self, d: &Delete) -> Result<(String, String)> {
        if d.using.is_some() || d.returning.is_some() || d.limit.is_some() {
            return Err(EngineError::Unsupported(
                "DELETE with USING, RETURNING or LIMIT".into(),
            ));
        }
        let tables = match &d.from {
            FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
        };
        let [target] = tables.as_slice() else {
            return Err(EngineError::Unsupported(
                "DELETE from several tables".into(),
            ));
        };
        let (name, from, _) = self.dml_target(target, "delete from")?;
        let filter = d
            .selection
            .as_ref()
            .map(|e| format!(" WHERE {e}"))
            .unwrap_or_default();
        Ok((name, format!("SELECT * FROM {from}{filter}")))
    }

    pub(super) async fn delete(&self, d: Delete, params: Option<ParamValues>) -> Result<Output> {
        let (name, query) = self.delete_query(&d)?;
        let (topic, layout) = self.table_topic(&name)?;
        let schema = Arc::clone(layout.schema());
        let _one = self.dml.lock().await;
        let batches = self.query(&query, params).await?;
        let old =
            concat_batches(&schema, &batches).map_err(|e| EngineError::DataFusion(e.into()))?;
        let n = old.num_rows();
        self.write_changes(&topic, &layout, vec![(old, -1)]).await?;
        Ok(Output::Command("DELETE".into(), Some(n)))
    }

    /// The query reading the rows an UPDATE changes, old columns then new:
    /// (table, query, the types of parameters that are a whole new value).
    pub(super) fn update_query(&self, u: &Update) -> Result<(String, String, TypedParams)> {
        if u.from.is_some() || u.returning.is_some() || u.limit.is_some() {
            return Err(EngineError::Unsupported(
                "UPDATE with FROM, RETURNING or LIMIT".into(),
            ));
        }
        let (name, from, columns) = self.dml_target(&u.table, "update")?;
        let (_, layout) = self.table_topic(&name)?;
        let schema = layout.schema();
        let mut new: Vec<String> = columns.iter().map(|c| quote(c)).collect();
        let mut typed = Vec::new();
        for a in &u.assignments {
            let AssignmentTarget::ColumnName(target) = &a.target else {
                return Err(EngineError::Unsupported(
                    "UPDATE of a tuple of columns".into(),
                ));
            };
            let col = target
                .0
                .last()
                .map(|p| p.to_string().trim_matches('"').to_string())
                .unwrap_or_default();
            let Some(i) = columns.iter().position(|c| c.eq_ignore_ascii_case(&col)) else {
                return Err(EngineError::UnknownColumn(col));
            };
            if let Expr::Value(v) = &a.value
                && let Value::Placeholder(p) = &v.value
            {
                typed.push((p.clone(), schema.field(i).data_type().clone()));
            }
            new[i] = format!("({})", a.value);
        }
        let select: Vec<String> = columns
            .iter()
            .map(|c| quote(c))
            .chain(
                new.iter()
                    .enumerate()
                    .map(|(i, e)| format!("{e} AS __new_{i}")),
            )
            .collect();
        let filter = u
            .selection
            .as_ref()
            .map(|e| format!(" WHERE {e}"))
            .unwrap_or_default();
        Ok((
            name,
            format!("SELECT {} FROM {from}{filter}", select.join(", ")),
            typed,
        ))
    }

    pub(super) async fn update(&self, u: Update, params: Option<ParamValues>) -> Result<Output> {
        let (name, query, _) = self.update_query(&u)?;
        let (topic, layout) = self.table_topic(&name)?;
        let schema = Arc::clone(layout.schema());
        let n_cols = schema.fields().len();
        let _one = self.dml.lock().await;
        let batches = self.query(&query, params).await?;
        let mut old_parts = Vec::new();
        let mut new_parts = Vec::new();
        for b in &batches {
            let old_cols = b.columns()[..n_cols].to_vec();
            let new_cols = b.columns()[n_cols..]
                .iter()
                .zip(schema.fields())
                .map(|(c, f)| crate::types::input::cast(c, f.data_type(), false))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| EngineError::Invalid(format!("new value does not fit: {e}")))?;
            let old_cols = old_cols
                .iter()
                .zip(schema.fields())
                .map(|(c, f)| crate::types::input::cast(c, f.data_type(), true))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| EngineError::DataFusion(e.into()))?;
            old_parts.push(
                RecordBatch::try_new(Arc::clone(&schema), old_cols)
                    .map_err(|e| EngineError::DataFusion(e.into()))?,
            );
            new_parts.push(
                RecordBatch::try_new(Arc::clone(&schema), new_cols)
                    .map_err(|e| EngineError::DataFusion(e.into()))?,
            );
        }
        let old =
            concat_batches(&schema, &old_parts).map_err(|e| EngineError::DataFusion(e.into()))?;
        let new =
            concat_batches(&schema, &new_parts).map_err(|e| EngineError::DataFusion(e.into()))?;
        let n = old.num_rows();
        self.write_changes(&topic, &layout, vec![(old, -1), (new, 1)])
            .await?;
        Ok(Output::Command("UPDATE".into(), Some(n)))
    }

    /// INSERT, planned by DataFusion from this parse: the relation's sink
    /// (`relation.rs`) appends its rows to the topic, fsynced, and ticks
    /// the views; inside a transaction block (`txn`) it holds them until
    /// COMMIT instead. The number of rows.
    pub async fn insert(
        &self,
        mut s: SqlStatement,
        params: Option<ParamValues>,
        txn: Option<&Arc<Transaction>>,
    ) -> Result<u64> {
        self.coerce_insert(&mut s).await;
        let state = match txn {
            Some(txn) => session_in(&self.ctx, txn).state(),
            None => self.ctx.state(),
        };
        let mut plan = state
            .statement_to_plan(DfStatement::Statement(Box::new(s)))
            .await?;
        if let Some(params) = params {
            plan = plan.replace_params_with_values(&params)?;
        }
        let batches = DataFrame::new(state, plan).collect().await?;
        Ok(batches
            .iter()
            .filter(|b| b.num_columns() > 0)
            .filter_map(|b| b.column(0).as_primitive_opt::<UInt64Type>().cloned())
            .map(|c| (0..c.len()).map(|i| c.value(i)).sum::<u64>())
            .sum())
    }

    /// Make the string literals of an `INSERT … VALUES` bound for
    /// `interval` / `bytea` / array columns casts, and those for
    /// `timestamp` columns spelled as Arrow reads them, PostgreSQL-style
    /// (`pg_compat::coerce_insert_literals`).
    pub(super) async fn coerce_insert(&self, s: &mut SqlStatement) {
        let Some(schema) = self.insert_target(s).await else {
            return;
        };
        name_leading_columns(s, &schema);
        coerce_insert_literals(s, &schema);
    }

    /// The columns of the relation an INSERT writes.
    async fn insert_target(&self, s: &SqlStatement) -> Option<SchemaRef> {
        let SqlStatement::Insert(insert) = s else {
            return None;
        };
        let datafusion::sql::sqlparser::ast::TableObject::TableName(name) = &insert.table else {
            return None;
        };
        let provider = self
            .ctx
            .table_provider(name.to_string().as_str())
            .await
            .ok()?;
        Some(provider.schema())
    }
}

/// `INSERT INTO t VALUES (…)` without a column list whose rows are shorter
/// than `t` (columns `schema`): PostgreSQL fills the leading columns and
/// leaves the rest NULL; DataFusion refuses. Name the leading columns.
fn name_leading_columns(s: &mut SqlStatement, schema: &SchemaRef) -> Option<()> {
    use datafusion::sql::sqlparser::ast::{Ident, ObjectName, SetExpr};
    let SqlStatement::Insert(insert) = s else {
        return None;
    };
    if !insert.columns.is_empty() {
        return None;
    }
    let SetExpr::Values(values) = insert.source.as_ref()?.body.as_ref() else {
        return None;
    };
    let widest = values.rows.iter().map(|r| r.len()).max()?;
    if widest == 0 || widest >= schema.fields().len() {
        return None;
    }
    insert.columns = schema.fields()[..widest]
        .iter()
        .map(|f| ObjectName::from(vec![Ident::with_quote('"', f.name())]))
        .collect();
    Some(())
}

/// The literals of an INSERT into columns `schema` as PostgreSQL reads
/// them (`pg_compat::coerce_insert_literals`); only a relation with such a
/// column pays for the walk.
fn coerce_insert_literals(s: &mut SqlStatement, schema: &SchemaRef) {
    if schema.fields().iter().any(|f| {
        matches!(
            f.data_type(),
            DataType::Interval(_) | DataType::Binary | DataType::List(_) | DataType::Timestamp(..)
        )
    }) {
        super::pg_compat::coerce_insert_literals(s, schema);
    }
}
