//! UNION ALL: the concatenation of its inputs' changes (by position). UNION
//! is UNION ALL under DISTINCT, as DataFusion plans it. Stateless.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;

use super::checkpoint::{Reader, Writer};
use super::{Counts, Delta, Operator, OperatorStats, Result, StepContext};

pub struct Union {
    /// How many inputs it was built with (checked on restore).
    inputs: usize,
    schema: SchemaRef,
    counts: Counts,
}

impl Union {
    pub fn new(inputs: usize, schema: SchemaRef) -> Union {
        Union {
            inputs,
            schema,
            counts: Counts::default(),
        }
    }
}

impl Operator for Union {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn step(&mut self, inputs: Vec<Delta>, _cx: &mut StepContext<'_>) -> Result<Delta> {
        let out = Delta::concat(&self.schema, &inputs)?;
        self.counts.rows_in += out.len() as u64;
        self.counts.rows_out += out.len() as u64;
        Ok(out)
    }

    fn stats(&self, out: &mut Vec<OperatorStats>) {
        out.push(self.counts.stats("union"));
    }

    fn save(&self, w: &mut Writer) {
        w.tag("union");
        w.u64(self.inputs as u64);
    }

    fn restore(&mut self, r: &mut Reader<'_>) -> Result<()> {
        r.tag("union")?;
        if r.u64()? != self.inputs as u64 {
            return Err(super::DataflowError::Checkpoint(
                "union has another number of inputs".into(),
            ));
        }
        Ok(())
    }
}
