//! Shared by the in-process benchmark runners (`#[path]`-included): run
//! SQL on an engine as a client would, collecting any rows.

use datafusion::arrow::array::RecordBatch;
use eddy::engine::{Engine, Output, parse};

pub async fn exec(engine: &Engine, sql: &str) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    for stmt in parse(sql).unwrap() {
        match engine.execute(stmt).await.unwrap() {
            Output::PassThrough(text) => out.extend(
                engine
                    .session()
                    .sql(&text)
                    .await
                    .unwrap()
                    .collect()
                    .await
                    .unwrap(),
            ),
            Output::Rows { df, .. } => out.extend(df.collect().await.unwrap()),
            _ => {}
        }
    }
    out
}
