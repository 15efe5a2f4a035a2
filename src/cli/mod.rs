//! Command line: one clap struct (`Cli`) with environment fallbacks, and the
//! offline tools that work directly on a data directory, like Kafka's own
//! offline tools, so the log can be used and inspected without a server.
//!
//! Owns argument parsing and terminal output; knows the log only through its
//! public API.

pub mod bench;
pub mod demo;
pub mod tools;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::log::LogError;

/// eddy: a streaming SQL database with a built-in Kafka-compatible log.
#[derive(Debug, Parser)]
#[command(name = "eddy", version, about, long_about = None)]
pub struct Cli {
    /// Directory holding eddy's data (topics, segments, offsets).
    #[arg(
        long,
        env = "EDDY_DATA_DIR",
        default_value = "./eddy-data",
        global = true
    )]
    pub data_dir: PathBuf,

    /// Log filter for diagnostics on stderr (tracing's EnvFilter syntax,
    /// e.g. `info` or `eddy=debug`).
    #[arg(long, env = "EDDY_LOG", default_value = "warn", global = true)]
    pub log: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: the Kafka protocol listener over the data directory.
    Serve(Box<crate::server::ServeArgs>),
    /// Try eddy: a server on a temporary data directory fed by the Nexmark
    /// load generator, with views over it; prints the psql and console
    /// addresses and shows progress until Ctrl-C (or --seconds).
    Demo(Box<demo::DemoArgs>),
    /// Create, list, describe, alter and delete topics.
    Topic {
        #[command(subcommand)]
        command: TopicCommand,
    },
    /// Append lines from stdin to a topic, one record per line. A line
    /// `key<TAB>value` gives the record a key (which picks its partition,
    /// murmur2 as in the Java client); other lines are keyless.
    Produce(ProduceArgs),
    /// Print a topic's records to stdout, one value per line, up to the
    /// current end of each partition.
    Consume(ConsumeArgs),
    /// Inspect consumer groups' committed offsets.
    Group {
        #[command(subcommand)]
        command: GroupCommand,
    },
    /// Check every batch of every segment (CRC-32C, offsets), every index,
    /// producer snapshot and topic.json, with eddy stopped; print each
    /// problem with its file, byte and offset and what `eddy repair` would
    /// cut. Exits non-zero when anything is damaged.
    Verify,
    /// With eddy stopped: cut what `eddy verify` reports, as Kafka's
    /// recovery does (truncate a damaged segment at its first invalid batch
    /// and remove the partition's later segments; rebuild indexes; drop
    /// damaged producer snapshots; rewrite a damaged topic.json), printing
    /// each cut first. Cut bytes and removed files are moved under
    /// `<data-dir>/repair-<ms>/`, not deleted.
    Repair,
    /// Run retention and compaction once now.
    Clean,
    /// Benchmarks that print their figures as Markdown.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        /// Number of partitions.
        #[arg(long, short, default_value_t = 1)]
        partitions: i32,
        /// Topic config with Kafka's names, e.g. `--config retention.ms=60000`
        /// or `--config cleanup.policy=compact` (repeatable).
        #[arg(long = "config", short = 'c', value_name = "KEY=VALUE")]
        configs: Vec<String>,
    },
    /// List topics.
    List {
        /// Include internal topics such as __consumer_offsets.
        #[arg(long)]
        all: bool,
    },
    /// Show partitions (start/end offsets, segments, bytes) and config.
    Describe { name: String },
    /// Change config keys (`KEY=VALUE` sets, `KEY=` resets to the default),
    /// or grow the partition count.
    Alter {
        name: String,
        #[arg(long = "config", short = 'c', value_name = "KEY=VALUE")]
        configs: Vec<String>,
        /// New (larger) partition count.
        #[arg(long, short)]
        partitions: Option<i32>,
    },
    /// Delete a topic and its data.
    Delete { name: String },
}

#[derive(Debug, Args)]
pub struct ProduceArgs {
    pub topic: String,
    /// Write every record to this partition instead of choosing by key.
    #[arg(long, short)]
    pub partition: Option<i32>,
    /// Durability before a batch counts as written: 0, 1 or all (fsync).
    #[arg(long, default_value = "all", value_parser = ["0", "1", "all", "-1"])]
    pub acks: String,
    /// Treat whole lines as values even when they contain a TAB.
    #[arg(long)]
    pub no_key: bool,
    /// Records per batch.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
}

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    pub topic: String,
    /// Start at the beginning of the log (default: the end, as Kafka's
    /// console consumer does, unless the group has committed offsets).
    #[arg(long)]
    pub from_beginning: bool,
    /// Read only this partition.
    #[arg(long, short)]
    pub partition: Option<i32>,
    /// Start at this offset (needs --partition).
    #[arg(long, requires = "partition")]
    pub offset: Option<i64>,
    /// Consumer group: start from its committed offsets and commit the
    /// position reached at the end.
    #[arg(long, short)]
    pub group: Option<String>,
    /// Print `key<TAB>value`.
    #[arg(long)]
    pub print_key: bool,
    /// Print `partition<TAB>offset<TAB>` before each record.
    #[arg(long)]
    pub print_offset: bool,
    /// Stop after this many records.
    #[arg(long)]
    pub max_messages: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// List groups with committed offsets.
    List,
    /// Committed offsets, log end and lag per partition.
    Describe { group: String },
    /// Forget a group's committed offsets.
    Delete { group: String },
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Append and read throughput of the log at each durability level.
    Log(bench::LogBenchArgs),
}

/// Errors of the command-line tools.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("{0}")]
    Usage(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0} damaged file(s) or position(s) found; `eddy repair` cuts them")]
    Damaged(usize),
}

/// Run a parsed command.
pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Serve(args) => serve(cli.data_dir, *args),
        Command::Demo(args) => demo::run(*args),
        Command::Topic { command } => tools::topic(&cli.data_dir, command),
        Command::Produce(args) => tools::produce(&cli.data_dir, args),
        Command::Consume(args) => tools::consume(&cli.data_dir, args),
        Command::Group { command } => tools::group(&cli.data_dir, command),
        Command::Verify => tools::verify(&cli.data_dir),
        Command::Repair => tools::repair(&cli.data_dir),
        Command::Clean => tools::clean(&cli.data_dir),
        Command::Bench { command } => match command {
            BenchCommand::Log(args) => bench::log(args),
        },
    }
}

fn serve(data_dir: PathBuf, args: crate::server::ServeArgs) -> Result<(), CliError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("eddy")
        // Planning and evaluating a statement recurse over its tree, which
        // `--max-depth` bounds; this leaves that bound room (the memory is
        // reserved, not used, until a deep statement needs it).
        .thread_stack_size(64 * 1024 * 1024)
        .build()?;
    let served = rt.block_on(async move {
        let shutdown = async {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{SignalKind, signal};
                match signal(SignalKind::terminate()) {
                    Ok(mut term) => {
                        tokio::select! {
                            _ = tokio::signal::ctrl_c() => {}
                            _ = term.recv() => {}
                        }
                    }
                    Err(_) => {
                        let _ = tokio::signal::ctrl_c().await;
                    }
                }
            }
            #[cfg(not(unix))]
            {
                let _ = tokio::signal::ctrl_c().await;
            }
        };
        crate::server::run(data_dir, args, shutdown)
            .await
            .map_err(|e| CliError::Usage(e.to_string()))
    });
    // The log is closed; work still running on blocking threads (a query
    // a client abandoned) must not keep the process from exiting.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    served
}
