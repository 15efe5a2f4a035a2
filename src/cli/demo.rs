//! `eddy demo`: a server on a new temporary data directory, fed by the
//! Nexmark load generator, with the views people build first (a running
//! aggregate per key as in seed 000, a 15-minute sliding window that
//! drops old rows by itself, a join), then the psql and console
//! addresses, and progress while it runs (a live line on a terminal,
//! plain lines otherwise). Ctrl-C (or `--seconds`) stops it; the data
//! directory is removed unless `--keep`.

use std::time::{Duration, Instant};

use clap::Args;
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type};

use super::CliError;
use crate::engine::Engine;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    pub seconds: Option<u64>,
    /// Nexmark events a second, in thousands (LOAD GENERATOR NEXMARK's
    /// SCALE FACTOR).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Keep the data directory at exit.
    #[arg(long)]
    pub keep: bool,
    #[command(flatten)]
    pub serve: crate::server::ServeArgs,
}

/// The demo's pipeline, in the order a newcomer would write it.
pub fn statements(scale: f64) -> String {
    format!(
        "CREATE SOURCE nexmark FROM LOAD GENERATOR NEXMARK \
           (TICK INTERVAL '100ms', SCALE FACTOR {scale}) FOR ALL TABLES;
         CREATE MATERIALIZED VIEW bids_per_channel AS
           SELECT channel, count(*) AS bids, sum(price) AS volume, max(price) AS top_price
           FROM bid GROUP BY channel;
         CREATE MATERIALIZED VIEW bids_last_15min AS
           SELECT auction, count(*) AS bids, max(price) AS top_price
           FROM bid WHERE mz_now() <= date_time + INTERVAL '15 minutes'
           GROUP BY auction;
         CREATE MATERIALIZED VIEW auctions_per_seller AS
           SELECT p.id AS seller, p.name, p.city, count(*) AS auctions
           FROM auction a JOIN person p ON a.seller = p.id
           GROUP BY p.id, p.name, p.city;"
    )
}

/// What the progress line shows, read from the system tables.
const PROGRESS: &str = "SELECT
    (SELECT coalesce(sum(end_offset), 0) FROM eddy_catalog.partitions
       WHERE topic IN ('person', 'auction', 'bid')) AS events,
    (SELECT coalesce(sum(\"rows\"), 0) FROM eddy_catalog.materialized_views) AS view_rows,
    (SELECT \"rows\" FROM eddy_catalog.materialized_views WHERE name = 'bids_last_15min') AS window_rows,
    (SELECT coalesce(sum(stream_records - stream_records_read), 0)
       FROM eddy_catalog.materialized_views) AS behind";

async fn figures(engine: &Engine) -> Result<Vec<i64>, String> {
    let df = engine
        .session()
        .sql(PROGRESS)
        .await
        .map_err(|e| e.to_string())?;
    let batches = df.collect().await.map_err(|e| e.to_string())?;
    let Some(b) = batches.iter().find(|b| b.num_rows() > 0) else {
        return Ok(vec![0; 4]);
    };
    b.columns()
        .iter()
        .map(|c| {
            let c = cast(c, &DataType::Int64).map_err(|e| e.to_string())?;
            let c = c.as_primitive::<Int64Type>();
            Ok(if c.is_null(0) { 0 } else { c.value(0) })
        })
        .collect()
}

pub fn run(args: DemoArgs) -> Result<(), CliError> {
    let dir = std::env::temp_dir().join(format!(
        "eddy-demo-{}-{}",
        std::process::id(),
        crate::log::now_ms()
    ));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("eddy")
        .thread_stack_size(64 * 1024 * 1024)
        .build()?;
    let ran = rt.block_on(demo(&dir, args.serve, args.scale, args.seconds));
    rt.shutdown_timeout(Duration::from_secs(1));
    if args.keep {
        println!("eddy demo: the data directory {} is kept", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    ran
}

async fn demo(
    dir: &std::path::Path,
    serve: crate::server::ServeArgs,
    scale: f64,
    seconds: Option<u64>,
) -> Result<(), CliError> {
    let usage = |e: String| CliError::Usage(e);
    let handle = crate::server::start(dir.to_path_buf(), serve)
        .await
        .map_err(|e| usage(e.to_string()))?;
    let engine = std::sync::Arc::clone(&handle.engine);
    let sql = statements(scale);
    for stmt in engine.parse(&sql).map_err(|e| usage(e.to_string()))? {
        engine
            .execute(stmt)
            .await
            .map_err(|e| usage(format!("demo setup: {e}")))?;
    }
    println!(
        "eddy demo: Nexmark events flow into the topics person, auction and bid ({} a second);\n\
         data in {} (removed at exit unless --keep).\n\n\
         \x20 psql:     psql -h {} -p {} -U eddy\n\
         \x20 console:  http://{}/console/\n\
         \x20 Kafka:    {} (e.g. kcat -b {} -C -t bid -o -5 -e)\n\n\
         Try in psql:\n\
         \x20 SELECT * FROM bids_per_channel ORDER BY bids DESC;\n\
         \x20 SELECT * FROM bids_last_15min ORDER BY bids DESC LIMIT 5;\n\
         \x20 SELECT * FROM auctions_per_seller ORDER BY auctions DESC LIMIT 5;\n\
         \x20 COPY (SUBSCRIBE bids_per_channel) TO STDOUT;\n",
        (1000.0 * scale).round(),
        dir.display(),
        handle.pg_addr.ip(),
        handle.pg_addr.port(),
        handle.http_addr,
        handle.kafka_addr,
        handle.kafka_addr,
    );
    let started = Instant::now();
    let bar = indicatif::ProgressBar::new_spinner();
    let terminal = !bar.is_hidden();
    if terminal {
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{elapsed}] {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
    }
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    let mut last_events = 0;
    // Ctrl-C, SIGTERM or the time given.
    let stop = async {
        let time = async {
            match seconds {
                Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
                None => std::future::pending().await,
            }
        };
        #[cfg(unix)]
        let term = async {
            use tokio::signal::unix::{SignalKind, signal};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    term.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            () = time => {}
            () = term => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = ticks.tick() => {}
        }
        let Ok(f) = figures(&engine).await else {
            continue;
        };
        let line = format!(
            "{} events ({}/s) · {} rows in views · {} auctions in the 15-minute window · {} records not yet in views",
            f[0],
            f[0] - last_events,
            f[1],
            f[2],
            f[3]
        );
        last_events = f[0];
        if terminal {
            bar.set_message(line);
            bar.tick();
        } else if started.elapsed().as_secs().is_multiple_of(5) {
            println!("[{:>4}s] {line}", started.elapsed().as_secs());
        }
    }
    bar.finish_and_clear();
    println!("eddy demo: stopping");
    handle
        .shutdown()
        .await
        .map_err(|e| CliError::Usage(e.to_string()))
}
