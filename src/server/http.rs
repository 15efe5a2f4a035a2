//! eddy's HTTP listener (`--http-addr`, default 127.0.0.1:6876):
//! the web console (`/console/`, `server/console.rs`) and `/metrics` in
//! the Prometheus text format. The process-wide counters and
//! histograms of `crate::metrics`, then gauges read at each scrape from the
//! system tables with plain SQL (the same rows `eddy_catalog` shows): one
//! query per table, its leading text columns the labels, the rest values
//! (a NULL value leaves its sample out).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type};
use prometheus::{Encoder, GaugeVec, Opts, Registry, TextEncoder};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::engine::Engine;

/// Gauges read from one system-table query.
struct Scraped {
    sql: &'static str,
    labels: &'static [&'static str],
    /// (metric, help) per value column, after the label columns.
    values: &'static [(&'static str, &'static str)],
}

const SCRAPED: &[Scraped] = &[
    Scraped {
        sql: "SELECT topic, CAST(\"partition\" AS TEXT), start_offset, end_offset, size_bytes \
              FROM eddy_catalog.partitions",
        labels: &["topic", "partition"],
        values: &[
            (
                "eddy_partition_start_offset",
                "The partition's log start offset",
            ),
            (
                "eddy_partition_end_offset",
                "The last stable offset: where readers end (the log end without open transactions)",
            ),
            (
                "eddy_partition_size_bytes",
                "Bytes of the partition's segments on disk",
            ),
        ],
    },
    Scraped {
        sql: "SELECT group_id, topic, CAST(\"partition\" AS TEXT), committed_offset, lag \
              FROM eddy_catalog.consumer_groups",
        labels: &["group", "topic", "partition"],
        values: &[
            (
                "eddy_consumer_group_committed_offset",
                "A consumer group's committed offset",
            ),
            (
                "eddy_consumer_group_lag",
                "Records between a consumer group's committed offset and the partition's end",
            ),
        ],
    },
    Scraped {
        sql: "SELECT name, \"rows\", stream_records_read, stream_records - stream_records_read, \
              CASE WHEN status IN ('running', 'backfilling') THEN 1 ELSE 0 END \
              FROM eddy_catalog.materialized_views",
        labels: &["view"],
        values: &[
            ("eddy_view_rows", "Rows of a materialized view"),
            (
                "eddy_view_records_read",
                "Stream records a materialized view has read",
            ),
            (
                "eddy_view_records_behind",
                "Stream records written but not yet in a materialized view (its freshness, in records)",
            ),
            (
                "eddy_view_up",
                "1 while a materialized view is running or backfilling, 0 when it failed or holds an error",
            ),
        ],
    },
    Scraped {
        sql: "SELECT dataflow, sum(state_rows), sum(state_bytes), sum(late_rows), sum(errors), \
              date_part('epoch', min(watermark)) \
              FROM eddy_catalog.dataflow_operators GROUP BY dataflow",
        labels: &["dataflow"],
        values: &[
            (
                "eddy_dataflow_state_rows",
                "Rows held in a dataflow's operator state",
            ),
            (
                "eddy_dataflow_state_bytes",
                "Bytes held in a dataflow's operator state",
            ),
            (
                "eddy_dataflow_late_rows",
                "Rows a dataflow dropped as late for their window",
            ),
            (
                "eddy_dataflow_row_errors",
                "Rows that raised an error in a dataflow (division by zero, a bad cast)",
            ),
            (
                "eddy_dataflow_watermark_seconds",
                "A dataflow's event-time watermark (Unix time)",
            ),
        ],
    },
    Scraped {
        sql: "SELECT relation, errors FROM eddy_catalog.decode_errors",
        labels: &["relation"],
        values: &[(
            "eddy_decode_errors",
            "Records of a relation's topic that did not decode (skipped)",
        )],
    },
];

/// Serve until `stop` flips.
pub async fn serve(
    listener: TcpListener,
    engine: Arc<Engine>,
    auth: crate::server::pg::PgAuth,
    mut stop: watch::Receiver<bool>,
) {
    let shutdown = async move {
        while !*stop.borrow() {
            if stop.changed().await.is_err() {
                break;
            }
        }
    };
    let app = Router::new()
        .route("/metrics", get(metrics))
        .with_state(Arc::clone(&engine))
        .merge(crate::server::console::router(engine, auth));
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::warn!(error = %e, "HTTP listener failed");
    }
}

async fn metrics(State(engine): State<Arc<Engine>>) -> Response {
    match render(&engine).await {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}

async fn query(engine: &Engine, sql: &str) -> Result<Vec<RecordBatch>, String> {
    let df = engine.session().sql(sql).await.map_err(|e| e.to_string())?;
    df.collect().await.map_err(|e| e.to_string())
}

/// The whole exposition: the process-wide metrics, then the scraped ones.
pub async fn render(engine: &Engine) -> Result<String, String> {
    let scraped = Registry::new();
    for s in SCRAPED {
        let batches = query(engine, s.sql).await?;
        for (i, (name, help)) in s.values.iter().enumerate() {
            let g = GaugeVec::new(Opts::new(*name, *help), s.labels).map_err(|e| e.to_string())?;
            for b in &batches {
                let labels = (0..s.labels.len())
                    .map(|c| cast(b.column(c), &DataType::Utf8))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| e.to_string())?;
                let values = cast(b.column(s.labels.len() + i), &DataType::Float64)
                    .map_err(|e| e.to_string())?;
                let values = values.as_primitive::<Float64Type>();
                for row in 0..b.num_rows() {
                    if values.is_null(row) {
                        continue;
                    }
                    let l: Vec<&str> = labels
                        .iter()
                        .map(|c| {
                            let c = c.as_string::<i32>();
                            if c.is_null(row) { "" } else { c.value(row) }
                        })
                        .collect();
                    g.with_label_values(&l).set(values.value(row));
                }
            }
            scraped.register(Box::new(g)).map_err(|e| e.to_string())?;
        }
    }
    let mut families = crate::metrics::metrics()
        .map(|m| m.registry.gather())
        .unwrap_or_default();
    families.extend(scraped.gather());
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&families, &mut out)
        .map_err(|e| e.to_string())?;
    String::from_utf8(out).map_err(|e| e.to_string())
}
