//! The web console on the HTTP listener: the pages (`/console/`, files in
//! `server/console/`, embedded in the binary) and the JSON API they use.
//!
//! - `POST /api/sql` runs statements as psql would and answers their
//!   results as PostgreSQL prints them (`pg::text_value`, the one value
//!   encoder). Every figure the pages show is a query of the
//!   `eddy_catalog` system tables through it, so the console, psql and
//!   `/metrics` cannot disagree.
//! - `GET /api/subscribe?sql=…` streams a SUBSCRIBE as server-sent
//!   events: its columns, then each tick's rows (`mz_timestamp`,
//!   `mz_diff`, the relation's columns), as psql's SUBSCRIBE shows them.
//! - `GET /api/topics/{topic}/messages?partition=&offset=&limit=`: the
//!   message browser, records read from the log.
//!
//! Who runs the statements: with `--pg-auth trust` a trusted role as a
//! loopback psql has (`eddy`, or the Basic user given); with `md5` or
//! `scram-sha-256` every `/api` request needs HTTP Basic credentials of a
//! role with LOGIN and PASSWORD and runs with that role's privileges
//! (401 otherwise). The listener serves loopback only unless
//! `--http-allow-remote`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::auth::{Privilege, Role, TopicAccess};
use crate::engine::{Engine, EngineError, Output, Statement};
use crate::server::pg::{self, PgAuth};

/// Rows one `/api/sql` result carries at most (the rest are counted).
const MAX_ROWS: usize = 10_000;
/// Records one message-browser page reads at most.
const MAX_MESSAGES: usize = 500;

const INDEX: &str = include_str!("console/index.html");
const APP_JS: &str = include_str!("console/app.js");
const APP_CSS: &str = include_str!("console/app.css");

struct Console {
    engine: Arc<Engine>,
    auth: PgAuth,
}

/// The console's routes, to merge into the HTTP listener's router.
pub fn router(engine: Arc<Engine>, auth: PgAuth) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::temporary("/console/") }))
        .route(
            "/console",
            get(|| async { Redirect::temporary("/console/") }),
        )
        .route("/console/", get(|| async { asset("text/html", INDEX) }))
        .route(
            "/console/app.js",
            get(|| async { asset("text/javascript", APP_JS) }),
        )
        .route(
            "/console/app.css",
            get(|| async { asset("text/css", APP_CSS) }),
        )
        .route("/api/sql", post(sql))
        .route("/api/subscribe", get(subscribe))
        .route("/api/topics/{topic}/messages", get(messages))
        .with_state(Arc::new(Console { engine, auth }))
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, format!("{kind}; charset=utf-8")),
            (header::CACHE_CONTROL, "no-cache".to_string()),
        ],
        body,
    )
        .into_response()
}

/// An error as the pages show it: PostgreSQL's SQLSTATE and message.
#[derive(Debug, Serialize)]
struct ApiError {
    code: String,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    hint: Option<String>,
}

impl ApiError {
    fn new(code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            code: code.into(),
            message: message.into(),
            hint: None,
        }
    }

    fn engine(e: EngineError) -> ApiError {
        let (code, message, hint) = pg::describe_error(e);
        ApiError {
            code,
            message,
            hint,
        }
    }
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Basic realm=\"eddy\"")],
        Json(json!({"error": ApiError::new("28P01", "password authentication failed: give the user and password of a role with LOGIN")})),
    )
        .into_response()
}

/// The (user, password) of an `Authorization: Basic` header.
fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

impl Console {
    /// The role a request runs as (see the module docs); None: 401.
    fn role(&self, headers: &HeaderMap) -> Option<Role> {
        match self.auth {
            PgAuth::Trust => {
                let user = basic(headers).map_or_else(|| "eddy".to_string(), |(u, _)| u);
                Some(self.engine.roles().trusted(&user))
            }
            _ => {
                let (user, password) = basic(headers)?;
                self.engine.roles().check_password(&user, &password).ok()
            }
        }
    }
}

#[derive(Debug, Deserialize)]
struct SqlRequest {
    sql: String,
}

#[derive(Debug, Serialize)]
struct Column {
    name: String,
    #[serde(rename = "type")]
    ty: String,
}

/// One statement's result.
#[derive(Debug, Default, Serialize)]
struct StatementResult {
    /// The command tag psql prints (`SELECT 3`, `CREATE VIEW`, …).
    tag: String,
    columns: Vec<Column>,
    rows: Vec<Vec<Option<String>>>,
    /// Rows past [`MAX_ROWS`], not sent.
    truncated: usize,
}

fn columns(schema: &SchemaRef, names: Option<&[String]>) -> Vec<Column> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| Column {
            name: names
                .and_then(|n| n.get(i))
                .cloned()
                .unwrap_or_else(|| f.name().clone()),
            ty: pg::type_name(f),
        })
        .collect()
}

/// Rows as PostgreSQL's text, at most `room` of them; the number left out.
fn text_rows(
    batches: &[RecordBatch],
    out: &mut Vec<Vec<Option<String>>>,
    room: usize,
) -> Result<usize, ApiError> {
    let mut left_out = 0;
    for b in batches {
        for row in 0..b.num_rows() {
            if out.len() >= room {
                left_out += 1;
                continue;
            }
            let values = b
                .columns()
                .iter()
                .map(|c| pg::text_value(c.as_ref(), row))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ApiError::new("XX000", e))?;
            out.push(values);
        }
    }
    Ok(left_out)
}

async fn run_one(
    engine: &Engine,
    role: &Role,
    stmt: Statement,
) -> Result<StatementResult, ApiError> {
    engine.authorize(role, &stmt).map_err(ApiError::engine)?;
    let output = engine.execute(stmt).await.map_err(ApiError::engine)?;
    let (schema, names, batches) = match output {
        Output::Command(tag, n) => {
            let tag = match (tag.as_str(), n) {
                ("INSERT", Some(n)) => format!("INSERT 0 {n}"),
                (_, Some(n)) => format!("{tag} {n}"),
                (_, None) => tag,
            };
            return Ok(StatementResult {
                tag,
                ..StatementResult::default()
            });
        }
        Output::Rows { df, names } => {
            let schema = Arc::new(df.schema().as_arrow().clone());
            let batches = df.collect().await.map_err(|e| ApiError::engine(e.into()))?;
            (schema, Some(names), batches)
        }
        Output::CatalogQuery(sql) => {
            let df = engine
                .session()
                .sql(&sql)
                .await
                .map_err(|e| ApiError::engine(e.into()))?;
            let schema = Arc::new(df.schema().as_arrow().clone());
            let batches = df.collect().await.map_err(|e| ApiError::engine(e.into()))?;
            (schema, None, batches)
        }
        Output::CopyOut {
            schema, batches, ..
        } => (schema, None, batches),
        Output::CopyIn(_) => {
            return Err(ApiError::new(
                "0A000",
                "COPY … FROM STDIN needs a client that sends the data (psql's \\copy, a driver's copy API)",
            ));
        }
        Output::Subscribe { .. } => {
            return Err(ApiError::new(
                "0A000",
                "SUBSCRIBE streams: use the editor's Subscribe button (GET /api/subscribe)",
            ));
        }
        Output::PassThrough(_) | Output::Session(_) => {
            return Err(ApiError::new(
                "0A000",
                "the console runs each request without a session: session settings, transactions and cursors need psql or a driver",
            ));
        }
    };
    let mut result = StatementResult {
        columns: columns(&schema, names.as_deref()),
        ..StatementResult::default()
    };
    result.truncated = text_rows(&batches, &mut result.rows, MAX_ROWS)?;
    result.tag = format!("SELECT {}", result.rows.len() + result.truncated);
    Ok(result)
}

/// `POST /api/sql {"sql": "…"}`: each statement in turn, stopping at the
/// first error: `{"results": […], "error": {code, message}}` (400 when an
/// error ended it).
async fn sql(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Json(request): Json<SqlRequest>,
) -> Response {
    let Some(role) = console.role(&headers) else {
        return unauthorized();
    };
    let statements = match console.engine.parse(&request.sql) {
        Ok(s) => s,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"results": [], "error": ApiError::engine(e)})),
            )
                .into_response();
        }
    };
    let mut results = Vec::with_capacity(statements.len());
    for stmt in statements {
        match run_one(&console.engine, &role, stmt).await {
            Ok(r) => results.push(r),
            Err(e) => {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(json!({"results": results, "error": e})),
                )
                    .into_response();
            }
        }
    }
    Json(json!({ "results": results })).into_response()
}

#[derive(Debug, Deserialize)]
struct SubscribeRequest {
    sql: String,
}

/// `GET /api/subscribe?sql=…`: one SUBSCRIBE (or a query, subscribed to as
/// `SUBSCRIBE (query)`) as server-sent events: `columns`, then `rows`
/// per tick, or one `error` that ends it. The subscription (and the
/// dataflow made for it) ends when the page closes the stream.
async fn subscribe(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Query(request): Query<SubscribeRequest>,
) -> Response {
    let Some(role) = console.role(&headers) else {
        return unauthorized();
    };
    let text = request.sql.trim().trim_end_matches(';');
    let text = if text
        .get(..9)
        .is_some_and(|w| w.eq_ignore_ascii_case("subscribe"))
    {
        text.to_string()
    } else {
        format!("SUBSCRIBE ({text})")
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(64);
    let engine = Arc::clone(&console.engine);
    tokio::spawn(async move {
        if let Err(e) = stream_subscription(&engine, &role, &text, &tx).await {
            let _ = tx.send(event("error", &json!(e))).await;
        }
    });
    let events = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|e| (Ok::<_, std::convert::Infallible>(e), rx))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn event(name: &str, data: &Value) -> Event {
    Event::default().event(name).data(data.to_string())
}

async fn stream_subscription(
    engine: &Engine,
    role: &Role,
    text: &str,
    tx: &tokio::sync::mpsc::Sender<Event>,
) -> Result<(), ApiError> {
    use crate::dataflow::runtime::SubscriptionEnd;
    let mut statements = engine.parse(text).map_err(ApiError::engine)?;
    let (Some(stmt), None) = (statements.pop(), statements.pop()) else {
        return Err(ApiError::new("42601", "subscribe to one query at a time"));
    };
    engine.authorize(role, &stmt).map_err(ApiError::engine)?;
    let Output::Subscribe {
        name,
        schema,
        snapshot,
        start,
        transient,
    } = engine.execute(stmt).await.map_err(ApiError::engine)?
    else {
        return Err(ApiError::new("42601", "not a SUBSCRIBE or a query"));
    };
    // The subscription's own dataflow lives as long as the stream.
    let _dataflow = transient;
    let mut cols = vec![
        Column {
            name: "mz_timestamp".into(),
            ty: "bigint".into(),
        },
        Column {
            name: "mz_diff".into(),
            ty: "bigint".into(),
        },
    ];
    cols.extend(columns(&schema, None));
    let send_rows = async |batch: &RecordBatch, diffs: &[i64], at: i64| -> Result<bool, ApiError> {
        let mut rows = Vec::new();
        text_rows(std::slice::from_ref(batch), &mut rows, usize::MAX)?;
        let rows: Vec<Vec<Option<String>>> = rows
            .into_iter()
            .zip(diffs)
            .map(|(values, diff)| {
                let mut row = vec![Some(at.to_string()), Some(diff.to_string())];
                row.extend(values);
                row
            })
            .collect();
        Ok(tx
            .send(event("rows", &json!({ "rows": rows })))
            .await
            .is_ok())
    };
    if tx
        .send(event("columns", &json!({ "columns": cols })))
        .await
        .is_err()
    {
        return Ok(());
    }
    if snapshot {
        let n = start.snapshot.num_rows();
        if !send_rows(&start.snapshot, &vec![1; n], start.at_ms).await? {
            return Ok(());
        }
    }
    let mut start = start;
    loop {
        let next = tokio::select! {
            next = start.next_change(&name) => next,
            () = tx.closed() => return Ok(()),
        };
        match next {
            Ok((batch, diffs, at)) => {
                let batch = crate::dataflow::with_schema(&batch, &schema)
                    .map_err(|e| ApiError::new("XX000", e.to_string()))?;
                if !send_rows(&batch, &diffs, at).await? {
                    return Ok(());
                }
            }
            Err(SubscriptionEnd::Removed) => {
                return Err(ApiError::new(
                    "42P01",
                    format!("SUBSCRIBE ended: \"{name}\" was dropped or replaced"),
                ));
            }
            Err(SubscriptionEnd::Lagged(n)) => {
                return Err(ApiError::new(
                    "53000",
                    format!("SUBSCRIBE to {name} fell {n} ticks behind and was stopped"),
                ));
            }
            Err(SubscriptionEnd::Closed) => return Ok(()),
        }
    }
}

#[derive(Debug, Deserialize)]
struct MessagesRequest {
    #[serde(default)]
    partition: i32,
    /// The first offset; without it, the newest `limit` records.
    offset: Option<i64>,
    limit: Option<usize>,
}

#[derive(Debug, Serialize)]
struct Message {
    offset: i64,
    timestamp: i64,
    key: Option<String>,
    value: Option<String>,
    /// Key and value that are not UTF-8 are sent in base64 and say so.
    binary: bool,
    headers: Vec<(String, Option<String>)>,
}

fn printable(bytes: Option<&[u8]>, binary: &mut bool) -> Option<String> {
    bytes.map(|b| match std::str::from_utf8(b) {
        Ok(s) => s.to_string(),
        Err(_) => {
            *binary = true;
            base64::engine::general_purpose::STANDARD.encode(b)
        }
    })
}

/// `GET /api/topics/{topic}/messages`: records of one partition, as a
/// read_committed consumer sees them.
async fn messages(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Path(topic): Path<String>,
    Query(request): Query<MessagesRequest>,
) -> Response {
    let Some(role) = console.role(&headers) else {
        return unauthorized();
    };
    let refuse =
        |status: StatusCode, e: ApiError| (status, Json(json!({ "error": e }))).into_response();
    if !console.engine.may(&role, Privilege::Select, &topic) {
        return refuse(
            StatusCode::FORBIDDEN,
            ApiError::new(
                "42501",
                format!(
                    "permission denied for topic \"{topic}\" (SELECT on a stream or table over it needed)"
                ),
            ),
        );
    }
    let limit = request.limit.unwrap_or(50).clamp(1, MAX_MESSAGES);
    let log = Arc::clone(console.engine.log());
    let read = tokio::task::spawn_blocking(move || -> Result<Value, ApiError> {
        let (start, end) = log
            .offsets(&topic, request.partition)
            .map_err(|e| ApiError::engine(e.into()))?;
        let from = request
            .offset
            .unwrap_or(end - limit as i64)
            .clamp(start, end);
        let to = (from + limit as i64).min(end);
        let mut out = Vec::new();
        for records in
            crate::log::records(log.as_ref(), &topic, request.partition, from, to, 1 << 20)
        {
            for r in records.map_err(|e| ApiError::engine(e.into()))? {
                if r.offset >= to {
                    break;
                }
                let mut binary = false;
                let key = printable(r.key.as_deref(), &mut binary);
                let value = printable(r.value.as_deref(), &mut binary);
                let headers = r
                    .headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), printable(v.as_deref(), &mut binary)))
                    .collect();
                out.push(Message {
                    offset: r.offset,
                    timestamp: r.timestamp,
                    key,
                    value,
                    binary,
                    headers,
                });
            }
        }
        Ok(json!({
            "topic": topic,
            "partition": request.partition,
            "start_offset": start,
            "end_offset": end,
            "from": from,
            "messages": out,
        }))
    })
    .await;
    match read {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) if e.code == "42P01" => refuse(StatusCode::NOT_FOUND, e),
        Ok(Err(e)) => refuse(StatusCode::BAD_REQUEST, e),
        Err(e) => refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::new("XX000", e.to_string()),
        ),
    }
}
