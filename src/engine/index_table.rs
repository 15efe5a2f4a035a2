//! Tables and materialized views as DataFusion sees them: a scan of their
//! state in the dataflow runtime (`dataflow::runtime`) as of the start of
//! the query reading them.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use crate::dataflow::DataflowError;
use crate::dataflow::runtime::Dataflows;

/// A materialized view (or a table) as DataFusion sees it: a scan of its
/// state as of the last epoch published before the query started (every
/// scan of one query passes the same start, so they agree).
pub struct IndexTable {
    name: String,
    schema: SchemaRef,
    dataflows: Arc<Dataflows>,
}

impl IndexTable {
    pub fn new(name: &str, schema: SchemaRef, dataflows: Arc<Dataflows>) -> IndexTable {
        IndexTable {
            name: name.to_string(),
            schema,
            dataflows,
        }
    }
}

impl fmt::Debug for IndexTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IndexTable({})", self.name)
    }
}

#[async_trait]
impl TableProvider for IndexTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let as_of = state.execution_props().query_execution_start_time;
        let batch = self
            .dataflows
            .snapshot(&self.name, as_of)
            .and_then(|b| crate::dataflow::with_schema(&b, &self.schema))
            .map_err(|e| match e {
                // A view in an error state: its error, with its SQLSTATE.
                DataflowError::Row(e) => DataFusionError::External(Box::new(e)),
                e => DataFusionError::Execution(e.to_string()),
            })?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            Arc::clone(&self.schema),
            projection.cloned(),
        )?)
    }
}
