//! Kept plans: the logical plan of a query statement, by its text, until
//! the catalog changes. A client that prepares the same statement again
//! and again (the extended protocol's unnamed statement, which pgbench,
//! JDBC and psycopg parse on every execution) is planned once.
//!
//! A plan is valid while the relations it names are the ones registered:
//! every registration and removal of a relation bumps the generation and
//! every kept plan of an older generation is dropped. Plans hold no data
//! (a scan reads its relation's snapshot when it runs), and no clock
//! (`now()` is folded by the optimizer when the plan runs).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;

/// How many plans are kept; past it the oldest generation's are dropped
/// wholesale (the set is cleared), which a steady workload never reaches.
const KEPT: usize = 1024;

#[derive(Debug, Default)]
pub struct Plans {
    generation: AtomicU64,
    kept: Mutex<HashMap<String, Kept>>,
}

#[derive(Debug, Clone)]
struct Kept {
    generation: u64,
    stmt: SqlStatement,
    plan: LogicalPlan,
}

impl Plans {
    /// The catalog changed: no kept plan is used again.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut kept) = self.kept.lock() {
            kept.clear();
        }
    }

    /// The current generation, read before planning: a plan made while
    /// the catalog changed is kept under the older one and never used.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The kept statement and plan for `key`, if planned in this
    /// generation.
    pub fn get(&self, key: &str) -> Option<(SqlStatement, LogicalPlan)> {
        let now = self.generation();
        let kept = self.kept.lock().ok()?;
        let k = kept.get(key)?;
        (k.generation == now).then(|| (k.stmt.clone(), k.plan.clone()))
    }

    /// Keep a plan made in `generation`.
    pub fn put(&self, key: String, generation: u64, stmt: &SqlStatement, plan: &LogicalPlan) {
        if generation != self.generation() {
            return;
        }
        let Ok(mut kept) = self.kept.lock() else {
            return;
        };
        if kept.len() >= KEPT {
            kept.clear();
        }
        kept.insert(
            key,
            Kept {
                generation,
                stmt: stmt.clone(),
                plan: plan.clone(),
            },
        );
    }

    /// How many plans are kept.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.kept.lock().map(|k| k.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::LogicalPlanBuilder;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn stmt(sql: &str) -> SqlStatement {
        Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .expect("parses")
            .remove(0)
    }

    #[test]
    fn a_plan_is_kept_until_the_catalog_changes() {
        let plans = Plans::default();
        let plan = LogicalPlanBuilder::empty(false).build().expect("plan");
        let s = stmt("SELECT 1");
        let g = plans.generation();
        plans.put("SELECT 1".into(), g, &s, &plan);
        assert!(plans.get("SELECT 1").is_some());
        assert!(plans.get("SELECT 2").is_none());
        plans.invalidate();
        assert!(plans.get("SELECT 1").is_none());
        assert_eq!(plans.len(), 0);
        // Planned before a change, kept after it: never used.
        plans.put("SELECT 1".into(), g, &s, &plan);
        assert!(plans.get("SELECT 1").is_none());
    }
}
