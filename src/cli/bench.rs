//! `eddy bench log`: append and read throughput of the log, at each
//! durability level, with 100-byte records in batches, and fsyncs per second
//! with concurrent appenders (group commit). Prints a Markdown table; the
//! runner script (`scripts/bench.sh`) adds the machine and date and writes
//! BENCHMARKS.md. Scenarios run interleaved (A B C … A B C …) so drift on a
//! shared machine spreads over all of them; each figure is the median of the
//! runs with the min–max beside it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use clap::Args;

use super::CliError;
use crate::log::batch::{self, NewRecord};
use crate::log::{Durability, Log, LogOptions, LogStore};

#[derive(Debug, Args)]
pub struct LogBenchArgs {
    /// Records per scenario for OS-level appends and reads.
    #[arg(long, default_value_t = 4_000_000)]
    pub records: u64,
    /// Records per scenario for fsync-durable appends.
    #[arg(long, default_value_t = 1_000_000)]
    pub fsync_records: u64,
    /// Bytes of value per record.
    #[arg(long, default_value_t = 100)]
    pub record_size: usize,
    /// Records per batch.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Concurrent appenders in the group-commit scenarios.
    #[arg(long, default_value_t = 8)]
    pub appenders: usize,
    /// Repetitions of every scenario.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Scratch directory (removed afterwards).
    #[arg(long, default_value = "./eddy-bench-data")]
    pub dir: PathBuf,
}

#[derive(Clone, Copy)]
struct Figure {
    records_per_s: f64,
    mb_per_s: f64,
    fsyncs_per_s: f64,
}

struct Scenario {
    name: &'static str,
    durability: Durability,
    appenders: usize,
    partitions: i32,
}

fn batches(args: &LogBenchArgs) -> Result<Vec<Bytes>, CliError> {
    // A few distinct batches so nothing is trivially cached; values are
    // JSON-ish text of the requested size.
    let mut out = Vec::new();
    for b in 0..8 {
        let recs: Vec<NewRecord> = (0..args.batch)
            .map(|i| {
                let mut v = format!("{{\"id\":{i},\"batch\":{b},\"pad\":\"");
                while v.len() + 2 < args.record_size {
                    v.push((b'a' + ((i + v.len()) % 26) as u8) as char);
                }
                v.push_str("\"}");
                v.truncate(args.record_size);
                NewRecord {
                    key: Some(Bytes::from(format!("key-{}", i % 1000))),
                    value: Some(Bytes::from(v)),
                    timestamp: 1_700_000_000_000 + i as i64,
                    headers: vec![],
                }
            })
            .collect();
        out.push(
            batch::encode(&recs)
                .map_err(crate::log::LogError::from)?
                .freeze(),
        );
    }
    Ok(out)
}

fn run_append(
    args: &LogBenchArgs,
    sc: &Scenario,
    pool: &[Bytes],
    dir: &PathBuf,
) -> Result<Figure, CliError> {
    let _ = std::fs::remove_dir_all(dir);
    let log = Log::open(
        dir,
        LogOptions {
            cleaner_interval: None,
        },
    )?;
    log.create_topic("bench", sc.partitions, Default::default())?;
    let total = if sc.durability == Durability::Fsync {
        args.fsync_records
    } else {
        args.records
    };
    let batches_total = (total as usize).div_ceil(args.batch);
    let per_appender = batches_total.div_ceil(sc.appenders);
    let bytes_per_batch = pool[0].len();
    let start = Instant::now();
    std::thread::scope(|s| -> Result<(), CliError> {
        let mut handles = Vec::new();
        for a in 0..sc.appenders {
            let log = Arc::clone(&log);
            handles.push(s.spawn(move || -> Result<(), CliError> {
                let partition = (a as i32) % sc.partitions;
                for i in 0..per_appender {
                    let b = BytesMut::from(&pool[(a + i) % pool.len()][..]);
                    log.append("bench", partition, b, sc.durability)?;
                }
                Ok(())
            }));
        }
        for h in handles {
            h.join()
                .map_err(|_| CliError::Usage("benchmark thread panicked".into()))??;
        }
        Ok(())
    })?;
    let secs = start.elapsed().as_secs_f64();
    let topic = log.topic("bench")?;
    let fsyncs: u64 = topic.partitions().iter().map(|p| p.fsync_count()).sum();
    let records = (per_appender * sc.appenders * args.batch) as f64;
    let bytes = (per_appender * sc.appenders * bytes_per_batch) as f64;
    log.close()?;
    Ok(Figure {
        records_per_s: records / secs,
        mb_per_s: bytes / secs / 1e6,
        fsyncs_per_s: fsyncs as f64 / secs,
    })
}

fn run_read(args: &LogBenchArgs, pool: &[Bytes], dir: &PathBuf) -> Result<Figure, CliError> {
    let _ = std::fs::remove_dir_all(dir);
    let log = Log::open(
        dir,
        LogOptions {
            cleaner_interval: None,
        },
    )?;
    log.create_topic("bench", 1, Default::default())?;
    let n = (args.records as usize).div_ceil(args.batch);
    for i in 0..n {
        log.append(
            "bench",
            0,
            BytesMut::from(&pool[i % pool.len()][..]),
            Durability::Os,
        )?;
    }
    let start = Instant::now();
    let mut offset = 0i64;
    let mut records = 0u64;
    let mut bytes = 0u64;
    loop {
        let r = log.read("bench", 0, offset, 1 << 20)?;
        if r.records.is_empty() {
            break;
        }
        bytes += r.records.len() as u64;
        // Walk the batch headers as a consumer's fetch loop would.
        let mut pos = 0;
        while pos < r.records.len() {
            let h =
                batch::BatchHeader::parse(&r.records[pos..]).map_err(crate::log::LogError::from)?;
            records += h.records_count as u64;
            offset = h.next_offset();
            pos += h.total_len();
        }
    }
    let secs = start.elapsed().as_secs_f64();
    log.close()?;
    Ok(Figure {
        records_per_s: records as f64 / secs,
        mb_per_s: bytes as f64 / secs / 1e6,
        fsyncs_per_s: 0.0,
    })
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let min = v.first().copied().unwrap_or(0.0);
    let max = v.last().copied().unwrap_or(0.0);
    (v[v.len() / 2], min, max)
}

fn fmt_rate(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.0} k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

pub fn log(args: LogBenchArgs) -> Result<(), CliError> {
    let pool = batches(&args)?;
    let n = args.appenders.max(1);
    let scenarios = [
        Scenario {
            name: "append acks=0 (no wait), 1 appender, 1 partition",
            durability: Durability::None,
            appenders: 1,
            partitions: 1,
        },
        Scenario {
            name: "append acks=1 (OS), 1 appender, 1 partition",
            durability: Durability::Os,
            appenders: 1,
            partitions: 1,
        },
        Scenario {
            name: "append acks=1 (OS), 2 appenders, 6 partitions",
            durability: Durability::Os,
            appenders: 2,
            partitions: 6,
        },
        Scenario {
            name: "append acks=all (fsync), 1 appender, 1 partition",
            durability: Durability::Fsync,
            appenders: 1,
            partitions: 1,
        },
        Scenario {
            name: "append acks=all (fsync), N appenders, 1 partition",
            durability: Durability::Fsync,
            appenders: n,
            partitions: 1,
        },
        Scenario {
            name: "append acks=all (fsync), N appenders, 6 partitions",
            durability: Durability::Fsync,
            appenders: n,
            partitions: 6,
        },
    ];
    let mut results: Vec<Vec<Figure>> = vec![Vec::new(); scenarios.len() + 1];
    for run in 0..args.runs.max(1) {
        eprintln!("run {}/{}", run + 1, args.runs);
        for (i, sc) in scenarios.iter().enumerate() {
            results[i].push(run_append(&args, sc, &pool, &args.dir)?);
        }
        results[scenarios.len()].push(run_read(&args, &pool, &args.dir)?);
    }
    let _ = std::fs::remove_dir_all(&args.dir);

    println!(
        "Records of {} bytes of value, {} per batch; {} records per OS-level scenario, {} per fsync scenario; N = {} appenders; median of {} runs (min–max).",
        args.record_size, args.batch, args.records, args.fsync_records, n, args.runs
    );
    println!();
    println!("| scenario | records/s | MB/s | fsyncs/s |");
    println!("|---|---|---|---|");
    let mut names: Vec<String> = scenarios
        .iter()
        .map(|s| s.name.replace("N appenders", &format!("{n} appenders")))
        .collect();
    names.push("read, 1 MiB fetches, 1 partition".into());
    for (name, figs) in names.iter().zip(&results) {
        let (r, rmin, rmax) = median(figs.iter().map(|f| f.records_per_s).collect());
        let (m, _, _) = median(figs.iter().map(|f| f.mb_per_s).collect());
        let (fs, _, _) = median(figs.iter().map(|f| f.fsyncs_per_s).collect());
        println!(
            "| {name} | {} ({}–{}) | {m:.0} | {} |",
            fmt_rate(r),
            fmt_rate(rmin),
            fmt_rate(rmax),
            if fs > 0.0 {
                format!("{fs:.0}")
            } else {
                "–".into()
            }
        );
    }
    Ok(())
}
