//! `CREATE [DEFAULT] INDEX … ON relation (columns)` and `DROP INDEX`:
//! a named arrangement of a table's or materialized view's rows by some of
//! its columns, kept by every tick after, so equalities and ranges on them
//! are lookups (`index_table.rs`) and point queries are peeks (`peek.rs`).
//! The index is a catalog object; at start it is built again once its
//! relation is.

use super::{Engine, EngineError, Output, Result};
use crate::catalog::Object;

impl Engine {
    pub(super) fn create_index(
        &self,
        name: Option<String>,
        on: String,
        columns: Option<Vec<String>>,
        if_not_exists: bool,
        sql: String,
    ) -> Result<Output> {
        let done = || Ok(Output::Command("CREATE INDEX".into(), None));
        let default = columns.is_none();
        self.ensure_indexable(&on)?;
        let snapshot = self.dataflows.snapshot(&on, None)?;
        let schema = snapshot.schema();
        let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        let positions = match &columns {
            Some(cols) => cols
                .iter()
                .map(|c| column_position(&names, c))
                .collect::<Result<Vec<_>>>()?,
            // The relation's key (a view's GROUP BY columns, a table's
            // PRIMARY KEY), else all its columns.
            None => snapshot
                .key()
                .map(<[usize]>::to_vec)
                .unwrap_or_else(|| (0..names.len()).collect()),
        };
        if positions.is_empty() {
            return Err(EngineError::Invalid(format!(
                "an index on \"{on}\" needs at least one column"
            )));
        }
        let columns: Vec<String> = positions.iter().map(|i| names[*i].clone()).collect();
        // Materialize's names.
        let name = name.unwrap_or_else(|| match default {
            true => format!("{on}_primary_idx"),
            false => format!("{on}_{}_idx", columns.join("_")),
        });
        if let Some(o) = self.lock()?.get(&name) {
            if if_not_exists && matches!(o, Object::Index { .. }) {
                return done();
            }
            return Err(EngineError::Exists {
                kind: o.kind(),
                name,
            });
        }
        self.dataflows.add_index(&on, &positions)?;
        let stored = self.lock()?.insert(Object::Index {
            name,
            on: on.clone(),
            columns,
            sql,
        });
        if let Err(e) = stored {
            let _ = self.dataflows.drop_index(&on, &positions);
            return Err(e.into());
        }
        done()
    }

    /// Indexes are of relations a dataflow keeps: tables and materialized
    /// views.
    fn ensure_indexable(&self, on: &str) -> Result<()> {
        if self.dataflows.maintains(on) {
            return Ok(());
        }
        Err(match self.lock()?.get(on) {
            Some(o) => EngineError::WrongObject(format!(
                "cannot index {} \"{on}\": indexes are of tables and materialized views \
                 (CREATE MATERIALIZED VIEW … AS SELECT … FROM {on})",
                o.kind()
            )),
            None => EngineError::UnknownObject {
                kind: "relation",
                name: on.to_string(),
            },
        })
    }

    /// Build index `o` again on its relation (at start, after the
    /// relation is in place).
    pub(super) fn restore_index(&self, o: &Object) -> Result<()> {
        let Object::Index { on, columns, .. } = o else {
            return Ok(());
        };
        let positions = self.index_positions(on, columns)?;
        self.dataflows.add_index(on, &positions)?;
        Ok(())
    }

    /// Drop index `o` (its arrangement goes unless something else holds
    /// it).
    pub(super) fn drop_index(&self, o: &Object) -> Result<()> {
        let Object::Index {
            name, on, columns, ..
        } = o
        else {
            return Ok(());
        };
        if self.dataflows.maintains(on)
            && let Ok(positions) = self.index_positions(on, columns)
        {
            self.dataflows.drop_index(on, &positions)?;
        }
        self.lock()?.remove(name)?;
        Ok(())
    }

    /// The indexes on relation `on`.
    pub(super) fn indexes_on(&self, on: &str) -> Result<Vec<Object>> {
        Ok(self
            .lock()?
            .objects()
            .filter(|o| matches!(o, Object::Index { on: x, .. } if x == on))
            .cloned()
            .collect())
    }

    fn index_positions(&self, on: &str, columns: &[String]) -> Result<Vec<usize>> {
        let schema = self.dataflows.snapshot(on, None)?.schema();
        let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        columns.iter().map(|c| column_position(&names, c)).collect()
    }
}

/// Column `c` of `names`: as written, else the one it names ignoring case
/// (an unquoted identifier).
fn column_position(names: &[String], c: &str) -> Result<usize> {
    names
        .iter()
        .position(|n| n == c)
        .or_else(|| names.iter().position(|n| n.eq_ignore_ascii_case(c)))
        .ok_or_else(|| EngineError::UnknownColumn(c.to_string()))
}
