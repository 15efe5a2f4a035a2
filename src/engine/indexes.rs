//! `CREATE [DEFAULT] INDEX … ON relation (columns)` and `DROP INDEX`:
//! a named arrangement of a relation's rows by some of its columns, kept
//! by every tick after, so equalities and ranges on them are lookups
//! (`index_table.rs`) and point queries are peeks (`peek.rs`). The index is
//! a catalog object; at start it is built again once its relation is.
//!
//! Tables and materialized views are kept by a dataflow already. A plain
//! view is not: indexing it makes a dataflow keep it (Materialize's way,
//! `CREATE VIEW v …; CREATE DEFAULT INDEX ON v`), and dropping its last
//! index lets it go back to being planned at each use. Streams are not
//! indexed (nothing keeps their rows).

use datafusion::common::TableReference;
use datafusion::sql::sqlparser::ast::CreateView;

use super::{Engine, EngineError, Output, Result};
use crate::catalog::Object;

impl Engine {
    pub(super) async fn create_index(
        &self,
        name: Option<String>,
        on: String,
        columns: Option<Vec<String>>,
        if_not_exists: bool,
        sql: String,
    ) -> Result<Output> {
        let done = || Ok(Output::Command("CREATE INDEX".into(), None));
        let default = columns.is_none();
        if let Some(o) = self.lock()?.get(&name.clone().unwrap_or_default())
            && if_not_exists
            && matches!(o, Object::Index { .. })
        {
            return done();
        }
        let plain = self.ensure_indexable(&on)?;
        if let Some(view) = &plain {
            self.maintain_view(&on, view, true).await?;
        }
        let result = self.add_named_index(name, &on, columns, default, if_not_exists, sql);
        if plain.is_some() && (self.indexes_on(&on)?.is_empty()) {
            // Nothing came of it: the view goes back to being planned.
            self.unmaintain_view(&on).await?;
        }
        result
    }

    fn add_named_index(
        &self,
        name: Option<String>,
        on: &str,
        columns: Option<Vec<String>>,
        default: bool,
        if_not_exists: bool,
        sql: String,
    ) -> Result<Output> {
        let done = || Ok(Output::Command("CREATE INDEX".into(), None));
        let snapshot = self.dataflows.snapshot(on, None)?;
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
        let name = name.unwrap_or_else(|| {
            let on = on.trim_matches('"');
            match default {
                true => format!("{on}_primary_idx"),
                false => format!("{on}_{}_idx", columns.join("_")),
            }
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
        self.dataflows.add_index(on, &positions)?;
        let stored = self.lock()?.insert(Object::Index {
            name,
            on: on.to_string(),
            columns,
            sql,
        });
        if let Err(e) = stored {
            let _ = self.dataflows.drop_index(on, &positions);
            return Err(e.into());
        }
        done()
    }

    /// Whether `on` can be indexed: a relation a dataflow keeps, or a
    /// plain view (returned, to be kept from now on).
    fn ensure_indexable(&self, on: &str) -> Result<Option<CreateView>> {
        if self.dataflows.maintains(on) {
            return Ok(None);
        }
        let o = self.lock()?.get(on).cloned();
        match o {
            Some(Object::View { sql, .. }) => Ok(Some(self.view_definition(&sql)?)),
            Some(o) => Err(EngineError::WrongObject(format!(
                "cannot index {} \"{on}\": indexes are of tables, views and materialized views \
                 (CREATE MATERIALIZED VIEW … AS SELECT … FROM {on})",
                o.kind()
            ))),
            None => Err(EngineError::UnknownObject {
                kind: "relation",
                name: on.to_string(),
            }),
        }
    }

    /// Keep plain view `name` (defined by `v`) in a dataflow, read through
    /// its arrangement from now on.
    async fn maintain_view(&self, name: &str, v: &CreateView, backfill: bool) -> Result<()> {
        let query = self.maintained_query(v.clone()).await;
        // Its planned definition makes way for the arrangement.
        let _ = self.ctx.deregister_table(TableReference::bare(name));
        if let Err(e) = self
            .install_view(name, &query, backfill, Default::default())
            .await
        {
            self.unmaintain_view(name).await?;
            return Err(e);
        }
        if let Some(version) = self.lock()?.version(name) {
            self.dataflows.set_version(name, version)?;
        }
        Ok(())
    }

    /// Plain view `name` is no longer kept: planned at each use again.
    async fn unmaintain_view(&self, name: &str) -> Result<()> {
        let sql = match self.lock()?.get(name) {
            Some(Object::View { sql, .. }) => sql.clone(),
            _ => return Ok(()),
        };
        self.dataflows.remove(name)?;
        let _ = self.ctx.deregister_table(TableReference::bare(name));
        self.define_view(self.view_definition(&sql)?).await?;
        self.plans.invalidate();
        Ok(())
    }

    /// Build index `o` again on its relation (at start, after every
    /// relation is in place).
    pub(super) async fn restore_index(&self, o: &Object) -> Result<()> {
        let Object::Index { on, columns, .. } = o else {
            return Ok(());
        };
        if let Some(view) = self.ensure_indexable(on)? {
            self.maintain_view(on, &view, false).await?;
        }
        let positions = self.index_positions(on, columns)?;
        self.dataflows.add_index(on, &positions)?;
        Ok(())
    }

    /// DROP INDEX: its arrangement goes unless something else holds it; a
    /// plain view's last index takes the view's dataflow with it, unless a
    /// materialized view reads that.
    pub(super) async fn drop_index(&self, o: &Object) -> Result<()> {
        let Object::Index { name, on, .. } = o else {
            return Ok(());
        };
        let plain = matches!(self.lock()?.get(on), Some(Object::View { .. }));
        let last = self.indexes_on(on)?.iter().all(|i| i.name() == name);
        if plain && last {
            let readers = self.dataflows.dependents(on);
            if !readers.is_empty() {
                return Err(EngineError::Dependents {
                    kind: "index",
                    name: name.clone(),
                    dependents: readers.join(", "),
                });
            }
        }
        self.unindex(o)?;
        if plain && last {
            self.unmaintain_view(on).await?;
        }
        Ok(())
    }

    /// Remove index `o` from its relation's arrangements and the catalog.
    pub(super) fn unindex(&self, o: &Object) -> Result<()> {
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
