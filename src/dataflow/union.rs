//! UNION ALL: the concatenation of its inputs' changes (by position). UNION
//! is UNION ALL under DISTINCT, as DataFusion plans it. Stateless.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;

use super::checkpoint::{Reader, Writer};
use super::{Counts, Delta, Node, OperatorStats, Result, StepContext};

pub struct Union {
    inputs: Vec<Box<dyn Node>>,
    schema: SchemaRef,
    counts: Counts,
}

impl Union {
    pub fn new(inputs: Vec<Box<dyn Node>>, schema: SchemaRef) -> Union {
        Union {
            inputs,
            schema,
            counts: Counts::default(),
        }
    }
}

impl Node for Union {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn step(&mut self, cx: &mut StepContext<'_>) -> Result<Delta> {
        let mut parts = Vec::with_capacity(self.inputs.len());
        for i in &mut self.inputs {
            parts.push(i.step(cx)?);
        }
        let out = Delta::concat(&self.schema, &parts)?;
        self.counts.rows_in += out.len() as u64;
        self.counts.rows_out += out.len() as u64;
        Ok(out)
    }

    fn stats(&self, out: &mut Vec<OperatorStats>) {
        out.push(self.counts.stats("union"));
        for i in &self.inputs {
            i.stats(out);
        }
    }

    fn progress(&self, out: &mut Vec<(String, i64, i64)>) {
        for i in &self.inputs {
            i.progress(out);
        }
    }

    fn save(&self, w: &mut Writer) {
        w.tag("union");
        w.u64(self.inputs.len() as u64);
        for i in &self.inputs {
            i.save(w);
        }
    }

    fn restore(&mut self, r: &mut Reader<'_>) -> Result<()> {
        r.tag("union")?;
        if r.u64()? != self.inputs.len() as u64 {
            return Err(super::DataflowError::Checkpoint(
                "union has another number of inputs".into(),
            ));
        }
        for i in &mut self.inputs {
            i.restore(r)?;
        }
        Ok(())
    }
}
