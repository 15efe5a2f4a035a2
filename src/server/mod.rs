//! Listeners and lifecycle: opens the log and the SQL engine, binds the
//! Kafka and PostgreSQL listeners, serves
//! until the shutdown future resolves, then stops accepting, ends the
//! connections and closes the log cleanly (so the next start skips
//! recovery). The only module that touches sockets.

pub mod console;
pub mod http;
pub mod kafka;
pub mod pg;
pub mod registry;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{ArgAction, Args};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::info;

use crate::kafka::{Broker, BrokerConfig};
use crate::log::{Log, LogError, LogOptions};

/// `eddy serve` settings. Every flag has an environment fallback.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address of the Kafka protocol listener.
    #[arg(long, env = "EDDY_KAFKA_ADDR", default_value = "127.0.0.1:9092")]
    pub kafka_addr: String,
    /// Address of the PostgreSQL wire listener (psql, pgcli, drivers).
    #[arg(long, env = "EDDY_PG_ADDR", default_value = "127.0.0.1:6875")]
    pub pg_addr: String,
    /// Address of the schema registry's REST API (Confluent's; clients'
    /// `schema.registry.url` is `http://` this).
    #[arg(long, env = "EDDY_REGISTRY_ADDR", default_value = "127.0.0.1:8081")]
    pub registry_addr: String,
    /// Let the schema registry bind a non-loopback address (its REST API
    /// has no authentication: anyone reaching it may register and delete
    /// schemas, as with Confluent's registry unsecured).
    #[arg(long, env = "EDDY_REGISTRY_ALLOW_REMOTE")]
    pub registry_allow_remote: bool,
    /// HTTP: `/metrics` (Prometheus).
    #[arg(long, env = "EDDY_HTTP_ADDR", default_value = "127.0.0.1:6876")]
    pub http_addr: String,
    #[arg(long, env = "EDDY_HTTP_ALLOW_REMOTE")]
    pub http_allow_remote: bool,
    /// How pgwire clients authenticate: `trust` (no password; loopback
    /// only unless --pg-allow-remote), `md5` or `scram-sha-256` (a role
    /// with LOGIN and PASSWORD; any address).
    #[arg(long, env = "EDDY_PG_AUTH", value_enum, default_value_t = pg::PgAuth::Trust)]
    pub pg_auth: pg::PgAuth,
    /// With `--pg-auth trust`: accept pgwire connections from non-loopback
    /// addresses too, without a password.
    #[arg(long, env = "EDDY_PG_ALLOW_REMOTE")]
    pub pg_allow_remote: bool,
    /// PEM certificate chain the pgwire listener offers TLS with (clients
    /// choose it with sslmode=require and up, or PostgreSQL 17's
    /// sslnegotiation=direct); needs --pg-tls-key.
    #[arg(long, env = "EDDY_PG_TLS_CERT", requires = "pg_tls_key")]
    pub pg_tls_cert: Option<PathBuf>,
    /// PEM private key of --pg-tls-cert.
    #[arg(long, env = "EDDY_PG_TLS_KEY", requires = "pg_tls_cert")]
    pub pg_tls_key: Option<PathBuf>,
    /// Refuse pgwire clients that do not use TLS (FATAL 28000).
    #[arg(long, env = "EDDY_PG_TLS_REQUIRED", requires = "pg_tls_cert")]
    pub pg_tls_required: bool,
    /// PEM certificate chain for the Kafka listener: it then speaks TLS
    /// only (clients: security.protocol=SSL, or SASL_SSL with
    /// --kafka-sasl); needs --kafka-tls-key.
    #[arg(long, env = "EDDY_KAFKA_TLS_CERT", requires = "kafka_tls_key")]
    pub kafka_tls_cert: Option<PathBuf>,
    /// PEM private key of --kafka-tls-cert.
    #[arg(long, env = "EDDY_KAFKA_TLS_KEY", requires = "kafka_tls_cert")]
    pub kafka_tls_key: Option<PathBuf>,
    /// SASL mechanisms the Kafka listener requires, comma-separated
    /// (`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`); a client then logs in
    /// as a role with LOGIN and PASSWORD. Empty: no authentication.
    #[arg(long, env = "EDDY_KAFKA_SASL", value_delimiter = ',', value_parser = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])]
    pub kafka_sasl: Vec<String>,
    /// Without --kafka-sasl: let the Kafka listener bind a non-loopback
    /// address anyway (every client can then read and write every topic).
    #[arg(long, env = "EDDY_KAFKA_ALLOW_REMOTE")]
    pub kafka_allow_remote: bool,
    /// The superuser role `--superuser-password` sets up.
    #[arg(long, env = "EDDY_SUPERUSER", default_value = "eddy")]
    pub superuser: String,
    /// At start, make `--superuser` a superuser role that may log in with
    /// this password (for a first login under password authentication).
    #[arg(long, env = "EDDY_SUPERUSER_PASSWORD", hide_env_values = true)]
    pub superuser_password: Option<String>,
    /// Host name the Kafka listener tells clients to connect to (Metadata);
    /// default: the listener's IP.
    #[arg(long, env = "EDDY_ADVERTISED_HOST")]
    pub advertised_host: Option<String>,
    /// Port the Kafka listener tells clients to connect to; default: the
    /// port it bound.
    #[arg(long, env = "EDDY_ADVERTISED_PORT")]
    pub advertised_port: Option<u16>,
    /// Create unknown topics when a client asks for them in Metadata (as
    /// Kafka's auto.create.topics.enable).
    #[arg(long, env = "EDDY_AUTO_CREATE_TOPICS", default_value_t = true, action = ArgAction::Set)]
    pub auto_create_topics: bool,
    /// Partitions of auto-created topics (Kafka's num.partitions).
    #[arg(long, env = "EDDY_DEFAULT_PARTITIONS", default_value_t = 1)]
    pub default_partitions: i32,
    /// Largest request frame accepted; a larger one closes its connection
    /// (Kafka's socket.request.max.bytes).
    #[arg(long, env = "EDDY_MAX_REQUEST_BYTES", default_value_t = 100 * 1024 * 1024)]
    pub max_request_bytes: usize,
    /// How often retention and compaction run, in milliseconds (Kafka's
    /// log.retention.check.interval.ms).
    #[arg(long, env = "EDDY_LOG_CLEANER_INTERVAL_MS", default_value_t = 300_000)]
    pub log_cleaner_interval_ms: u64,
    /// How often the state of tables and materialized views is
    /// checkpointed, in milliseconds, so a restart reads only what arrived
    /// since (also at shutdown); 0 turns checkpoints off and a restart
    /// rebuilds every view from the log.
    #[arg(long, env = "EDDY_CHECKPOINT_INTERVAL_MS", default_value_t = 30_000)]
    pub checkpoint_interval_ms: u64,
    /// Largest SQL query string accepted, in bytes; a longer one is
    /// refused with 54000.
    #[arg(long, env = "EDDY_MAX_QUERY_BYTES", default_value_t = crate::engine::Limits::default().max_query_bytes)]
    pub max_query_bytes: usize,
    /// Most statements in one SQL query string (54000 past it).
    #[arg(long, env = "EDDY_MAX_STATEMENTS", default_value_t = crate::engine::Limits::default().max_statements)]
    pub max_statements: usize,
    /// Deepest nesting of expressions, subqueries and set operations in
    /// one statement (54001 past it).
    #[arg(long, env = "EDDY_MAX_DEPTH", default_value_t = crate::engine::Limits::default().max_depth)]
    pub max_depth: usize,
    /// How long a SUBSCRIBE client may leave its changes unread before it
    /// is disconnected, in milliseconds.
    #[arg(long, env = "EDDY_MAX_SUBSCRIBER_STALL_MS", default_value_t = crate::engine::Limits::default().max_subscriber_stall_ms)]
    pub max_subscriber_stall_ms: u64,
    /// How often a `CREATE MATERIALIZED VIEW` still reading its inputs
    /// tells psql how far it got (a NOTICE), in milliseconds; the first
    /// comes after half of it.
    #[arg(
        long,
        env = "EDDY_PROGRESS_NOTICE_INTERVAL_MS",
        default_value_t = 2_000
    )]
    pub progress_notice_interval_ms: u64,
    /// Keep streams, tables' changelogs, sinks' topics and the catalog on
    /// an existing Kafka cluster (`kafka://host:9092[,host:9092…]`)
    /// rather than in the data directory, which then holds only
    /// checkpoints (a fresh one rebuilds every view from the cluster).
    /// eddy's own Kafka listener still serves its local log. (`--log`
    /// itself is the global log-level flag.)
    #[arg(long, env = "EDDY_LOG_CLUSTER")]
    pub log_cluster: Option<String>,
}

impl Default for ServeArgs {
    fn default() -> Self {
        ServeArgs {
            kafka_addr: "127.0.0.1:9092".into(),
            pg_addr: "127.0.0.1:6875".into(),
            registry_addr: "127.0.0.1:8081".into(),
            registry_allow_remote: false,
            http_addr: "127.0.0.1:6876".into(),
            http_allow_remote: false,
            pg_auth: pg::PgAuth::Trust,
            pg_allow_remote: false,
            pg_tls_cert: None,
            pg_tls_key: None,
            pg_tls_required: false,
            kafka_tls_cert: None,
            kafka_tls_key: None,
            kafka_sasl: Vec::new(),
            kafka_allow_remote: false,
            superuser: "eddy".into(),
            superuser_password: None,
            advertised_host: None,
            advertised_port: None,
            auto_create_topics: true,
            default_partitions: 1,
            max_request_bytes: 100 * 1024 * 1024,
            log_cleaner_interval_ms: 300_000,
            checkpoint_interval_ms: 30_000,
            max_query_bytes: crate::engine::Limits::default().max_query_bytes,
            max_statements: crate::engine::Limits::default().max_statements,
            max_depth: crate::engine::Limits::default().max_depth,
            max_subscriber_stall_ms: crate::engine::Limits::default().max_subscriber_stall_ms,
            progress_notice_interval_ms: 2_000,
            log_cluster: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    #[error("{0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// A running server (tests and embedders): its bound addresses and a way to
/// stop it.
pub struct Handle {
    pub kafka_addr: SocketAddr,
    pub pg_addr: SocketAddr,
    pub registry_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub log: Arc<Log>,
    /// The engine behind the listeners (`eddy demo` runs its statements
    /// through it).
    pub engine: Arc<crate::engine::Engine>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), ServerError>>,
}

impl Handle {
    /// Stop accepting, end connections, close the log cleanly.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        let _ = self.stop.send(true);
        match self.task.await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "server task failed");
                Ok(())
            }
        }
    }
}

/// Open the log and bind the listeners, then serve in a background task.
pub async fn start(data_dir: PathBuf, args: ServeArgs) -> Result<Handle, ServerError> {
    // TLS files are read first: a wrong path fails before anything opens.
    let pg_tls = match (&args.pg_tls_cert, &args.pg_tls_key) {
        (Some(cert), Some(key)) => Some(pg::PgTls {
            acceptor: tls::acceptor(cert, key, &[b"postgresql"])?,
            required: args.pg_tls_required,
        }),
        (None, None) if args.pg_tls_required => {
            return Err(ServerError::Config(
                "--pg-tls-required needs --pg-tls-cert and --pg-tls-key".into(),
            ));
        }
        (None, None) => None,
        _ => {
            return Err(ServerError::Config(
                "--pg-tls-cert and --pg-tls-key go together".into(),
            ));
        }
    };
    let kafka_tls = match (&args.kafka_tls_cert, &args.kafka_tls_key) {
        (Some(cert), Some(key)) => Some(tls::acceptor(cert, key, &[])?),
        (None, None) => None,
        _ => {
            return Err(ServerError::Config(
                "--kafka-tls-cert and --kafka-tls-key go together".into(),
            ));
        }
    };
    let log = {
        let dir = data_dir.clone();
        let interval = Duration::from_millis(args.log_cleaner_interval_ms.max(1));
        tokio::task::spawn_blocking(move || {
            Log::open(
                dir,
                LogOptions {
                    cleaner_interval: Some(interval),
                },
            )
        })
        .await
        .map_err(|_| LogError::Closed)??
    };
    let listener = TcpListener::bind(&args.kafka_addr)
        .await
        .map_err(|source| ServerError::Bind {
            addr: args.kafka_addr.clone(),
            source,
        })?;
    let kafka_addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: args.kafka_addr.clone(),
        source,
    })?;
    if !kafka_addr.ip().is_loopback() && args.kafka_sasl.is_empty() && !args.kafka_allow_remote {
        return Err(ServerError::Config(format!(
            "the Kafka listener on {kafka_addr} is reachable beyond this machine but has no authentication: give --kafka-sasl (e.g. SCRAM-SHA-256), or --kafka-allow-remote to serve it open"
        )));
    }
    let cluster_id = cluster_id(&data_dir)?;
    // `--log-cluster kafka://…`: the engine's log is that cluster, which is then
    // what a connection to "this server's own log" names.
    let external = match &args.log_cluster {
        None => None,
        Some(url) => {
            let brokers = url.strip_prefix("kafka://").ok_or_else(|| {
                ServerError::Config(format!(
                    "--log-cluster {url}: expected kafka://host:port[,host:port…]"
                ))
            })?;
            let remote = crate::log::remote::RemoteLog::new(brokers, Default::default())?;
            let probe = brokers.to_string();
            let id = tokio::task::spawn_blocking(move || {
                crate::log::remote::RemoteLog::probe(
                    &probe,
                    &Default::default(),
                    Duration::from_secs(10),
                )
            })
            .await
            .map_err(|_| LogError::Closed)?;
            let crate::log::remote::Probe::Cluster(id) = id else {
                return Err(ServerError::Config(format!(
                    "--log-cluster {url}: the cluster did not answer ({id:?})"
                )));
            };
            Some((Arc::new(remote) as Arc<dyn crate::log::LogStore>, id))
        }
    };
    let options = crate::engine::EngineOptions {
        cluster_id: external
            .as_ref()
            .map_or_else(|| cluster_id.clone(), |(_, id)| id.clone()),
        checkpoint_interval: (args.checkpoint_interval_ms > 0)
            .then(|| Duration::from_millis(args.checkpoint_interval_ms)),
        limits: crate::engine::Limits {
            max_query_bytes: args.max_query_bytes,
            max_statements: args.max_statements.max(1),
            max_depth: args.max_depth.max(1),
            max_subscriber_stall_ms: args.max_subscriber_stall_ms.max(1),
        },
        catch_up: Some(catch_up_progress()),
        progress_notice_interval: Duration::from_millis(args.progress_notice_interval_ms),
        ..Default::default()
    };
    let engine = match &external {
        None => crate::engine::Engine::open_with(Arc::clone(&log), options.clone()).await?,
        Some((store, _)) => {
            crate::engine::Engine::open_on(Arc::clone(store), data_dir.clone(), options.clone())
                .await?
        }
    };
    let final_checkpoint = options.checkpoint_interval.map(|_| Arc::clone(&engine));
    let pg_listener =
        TcpListener::bind(&args.pg_addr)
            .await
            .map_err(|source| ServerError::Bind {
                addr: args.pg_addr.clone(),
                source,
            })?;
    let pg_addr = pg_listener
        .local_addr()
        .map_err(|source| ServerError::Bind {
            addr: args.pg_addr.clone(),
            source,
        })?;
    if let Some(password) = &args.superuser_password {
        bootstrap_superuser(engine.roles(), &args.superuser, password)?;
    }
    let sasl = crate::kafka::Sasl::new(
        &args.kafka_sasl,
        Arc::clone(engine.roles()),
        Arc::clone(&engine) as Arc<dyn crate::auth::TopicAccess>,
    );
    let pg_handlers = Arc::new(pg::Handlers::new(
        Arc::clone(&engine),
        args.pg_auth,
        args.pg_allow_remote,
    ));
    let broker = Broker::new(
        Arc::clone(&log),
        BrokerConfig {
            node_id: 1,
            advertised_host: args
                .advertised_host
                .clone()
                .unwrap_or_else(|| kafka_addr.ip().to_string()),
            advertised_port: args.advertised_port.unwrap_or(kafka_addr.port()) as i32,
            cluster_id,
            auto_create_topics: args.auto_create_topics,
            default_partitions: args.default_partitions.max(1),
        },
        sasl,
    );
    broker.notify_arrivals(engine.arrivals());
    let registry_listener = TcpListener::bind(&args.registry_addr)
        .await
        .map_err(|source| ServerError::Bind {
            addr: args.registry_addr.clone(),
            source,
        })?;
    let registry_addr = registry_listener
        .local_addr()
        .map_err(|source| ServerError::Bind {
            addr: args.registry_addr.clone(),
            source,
        })?;
    if !registry_addr.ip().is_loopback() && !args.registry_allow_remote {
        return Err(ServerError::Config(format!(
            "the schema registry on {registry_addr} is reachable beyond this machine but has no authentication: give --registry-allow-remote to serve it open, or bind it to 127.0.0.1"
        )));
    }
    let http_listener =
        TcpListener::bind(&args.http_addr)
            .await
            .map_err(|source| ServerError::Bind {
                addr: args.http_addr.clone(),
                source,
            })?;
    let http_addr = http_listener
        .local_addr()
        .map_err(|source| ServerError::Bind {
            addr: args.http_addr.clone(),
            source,
        })?;
    if !http_addr.ip().is_loopback() && !args.http_allow_remote {
        return Err(ServerError::Config(format!(
            "the HTTP listener (/metrics) on {http_addr} is reachable beyond this machine but has no authentication: give --http-allow-remote to serve it open, or bind it to 127.0.0.1"
        )));
    }
    info!(%kafka_addr, %pg_addr, %registry_addr, %http_addr, data_dir = %data_dir.display(), "eddy serving");
    let (stop, stopped) = watch::channel(false);
    let registry_task = tokio::spawn(registry::serve(
        registry_listener,
        Arc::clone(engine.registry()),
        stopped.clone(),
    ));
    let http_task = tokio::spawn(http::serve(
        http_listener,
        Arc::clone(&engine),
        args.pg_auth,
        stopped.clone(),
    ));
    let task_log = Arc::clone(&log);
    let max = args.max_request_bytes;
    let pg_stop = stopped.clone();
    let pg_task = tokio::spawn(pg::serve(pg_listener, pg_handlers, pg_tls, pg_stop));
    let task = tokio::spawn(async move {
        kafka::serve(listener, broker, max, kafka_tls, stopped).await;
        let _ = pg_task.await;
        let _ = registry_task.await;
        let _ = http_task.await;
        // Connections have ended: checkpoint the views so the next start
        // need not replay, then close the log on a blocking thread (both
        // fsync).
        if let Some(engine) = final_checkpoint {
            match tokio::task::spawn_blocking(move || engine.checkpoint()).await {
                Ok(Err(e)) => tracing::warn!(error = %e, "checkpoint at shutdown failed"),
                Err(e) => tracing::warn!(error = %e, "checkpoint at shutdown failed"),
                Ok(Ok(_)) => {}
            }
        }
        tokio::task::spawn_blocking(move || task_log.close())
            .await
            .map_err(|_| LogError::Closed)??;
        Ok(())
    });
    Ok(Handle {
        kafka_addr,
        pg_addr,
        registry_addr,
        http_addr,
        log,
        engine: Arc::clone(&engine),
        stop,
        task,
    })
}

/// Progress of the views catching up with the log at start (recovery, or
/// a first start over topics that already hold data): a bar on a
/// terminal (stderr), else a line every five seconds; nothing when there
/// is little to do.
fn catch_up_progress() -> crate::engine::CatchUp {
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template(
            "catching up {bar:40} {pos}/{len} stream records in views ({per_sec}, {eta} left)",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let last_line = std::sync::Mutex::new(std::time::Instant::now());
    crate::engine::CatchUp(Arc::new(move |read: i64, total: i64| {
        if total - read < 10_000 && bar.length() == Some(0) {
            return;
        }
        if bar.is_hidden() {
            if let Ok(mut last) = last_line.lock()
                && last.elapsed() >= Duration::from_secs(5)
            {
                *last = std::time::Instant::now();
                eprintln!("eddy: catching up: {read} of {total} stream records in views");
            }
            return;
        }
        bar.set_length(total.max(0) as u64);
        bar.set_position(read.max(0) as u64);
        if read >= total {
            bar.finish_and_clear();
        }
    }))
}

/// Make `name` a superuser that may log in with `password`, unless it
/// already is one with that password (a restart writes nothing).
/// This data directory's cluster id, made at its first start (a random
/// UUID in the 22 characters Kafka writes one in) and kept in
/// `cluster.id`: what Metadata reports, and how eddy tells itself from
/// another cluster a connection names.
fn cluster_id(data_dir: &std::path::Path) -> Result<String, ServerError> {
    use base64::Engine as _;
    let path = data_dir.join("cluster.id");
    let io = |source| {
        ServerError::Log(LogError::Io {
            path: path.clone(),
            source,
        })
    };
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(crate::auth::random_bytes(16));
    let tmp = data_dir.join("cluster.id.tmp");
    std::fs::write(&tmp, &id).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)?;
    Ok(id)
}

fn bootstrap_superuser(
    roles: &crate::auth::Roles,
    name: &str,
    password: &str,
) -> Result<(), ServerError> {
    let current = roles.get(name);
    if let Some(r) = &current
        && r.superuser
        && r.login
        && r.secret.as_ref().is_some_and(|s| s.verify(password))
    {
        return Ok(());
    }
    let grants = current.map(|r| r.grants).unwrap_or_default();
    roles.put(crate::auth::Role {
        name: name.to_string(),
        login: true,
        superuser: true,
        secret: Some(crate::auth::Secret::new(name, password)),
        grants,
    })?;
    Ok(())
}

/// Serve until `shutdown` resolves (Ctrl-C, SIGTERM, or a test's signal).
pub async fn run(
    data_dir: PathBuf,
    args: ServeArgs,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let handle = start(data_dir, args).await?;
    println!(
        "eddy: Kafka protocol on {}, PostgreSQL protocol on {}, schema registry on http://{}, console on http://{}/console/, metrics on http://{}/metrics",
        handle.kafka_addr, handle.pg_addr, handle.registry_addr, handle.http_addr, handle.http_addr
    );
    shutdown.await;
    info!("shutting down");
    handle.shutdown().await
}
