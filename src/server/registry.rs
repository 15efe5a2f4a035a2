//! The schema registry's REST API: Confluent Schema Registry's endpoints
//! and JSON shapes (what confluent-kafka's `SchemaRegistryClient`, the
//! Java serializers, ksqlDB and Materialize call), over
//! [`crate::registry::Registry`]. Errors are Confluent's:
//! `{"error_code": 40401, "message": "Subject 'x' not found."}` with the
//! HTTP status the code starts with.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::registry::{Level, NewSchema, Reference, Registry, RegistryError, SchemaType};

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

type Params = Query<HashMap<String, String>>;
type Shared = State<Arc<Registry>>;

/// A reply: JSON in the registry's content type.
struct Reply(StatusCode, Value);

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        (
            self.0,
            [(header::CONTENT_TYPE, CONTENT_TYPE)],
            self.1.to_string(),
        )
            .into_response()
    }
}

impl From<RegistryError> for Reply {
    fn from(e: RegistryError) -> Reply {
        Reply(
            StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            json!({"error_code": e.code, "message": e.message}),
        )
    }
}

type Answer = Result<Reply, Reply>;

fn ok(v: Value) -> Answer {
    Ok(Reply(StatusCode::OK, v))
}

fn flag(params: &HashMap<String, String>, name: &str) -> bool {
    params
        .get(name)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// The body of a register, lookup or compatibility request.
fn new_schema(body: &[u8]) -> Result<NewSchema, Reply> {
    let bad = |why: String| Reply::from(RegistryError::invalid_schema(why));
    let v: Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("the body is not JSON: {e}")))?;
    let text = v
        .get("schema")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("the body has no \"schema\" string".into()))?
        .to_string();
    let kind = match v.get("schemaType").and_then(Value::as_str) {
        None => SchemaType::Avro,
        Some(t) => SchemaType::parse(t).ok_or_else(|| bad(format!("unknown schemaType {t}")))?,
    };
    let references: Vec<Reference> = match v.get("references") {
        None | Some(Value::Null) => vec![],
        Some(r) => {
            serde_json::from_value(r.clone()).map_err(|e| bad(format!("bad references: {e}")))?
        }
    };
    Ok(NewSchema {
        text,
        kind,
        references,
    })
}

/// The JSON of a schema, with `schemaType` and `references` when they
/// are not the defaults (as Confluent's registry omits them).
fn schema_json(registry: &Registry, id: u32, mut out: serde_json::Map<String, Value>) -> Value {
    if let Some(s) = registry.schema(id) {
        out.insert("schema".into(), Value::String(s.text));
        if s.kind != SchemaType::Avro {
            out.insert("schemaType".into(), json!(s.kind));
        }
        if !s.references.is_empty() {
            out.insert("references".into(), json!(s.references));
        }
    }
    Value::Object(out)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RegistryError> + Send + 'static,
) -> Result<T, Reply> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Reply::from(RegistryError::store(e)))?
        .map_err(Reply::from)
}

async fn root() -> Answer {
    ok(json!({}))
}

async fn types() -> Answer {
    ok(json!(["JSON", "PROTOBUF", "AVRO"]))
}

fn id_of(id: &str) -> Result<u32, Reply> {
    id.parse()
        .map_err(|_| Reply::from(RegistryError::schema_not_found(id)))
}

async fn schema_by_id(State(r): Shared, Path(id): Path<String>) -> Answer {
    let n = id_of(&id)?;
    if r.schema(n).is_none() {
        return Err(RegistryError::schema_not_found(&id).into());
    }
    ok(schema_json(&r, n, serde_json::Map::new()))
}

async fn raw_by_id(State(r): Shared, Path(id): Path<String>) -> Answer {
    let s = r
        .schema(id_of(&id)?)
        .ok_or_else(|| Reply::from(RegistryError::schema_not_found(&id)))?;
    ok(raw(&s.text))
}

/// A schema's own text as JSON (an Avro or JSON schema is JSON; another
/// language's text is a JSON string).
fn raw(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

async fn subjects_of_id(State(r): Shared, Path(id): Path<String>) -> Answer {
    let mut subjects: Vec<String> = r
        .versions_of(id_of(&id)?)?
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    subjects.dedup();
    ok(json!(subjects))
}

async fn versions_of_id(State(r): Shared, Path(id): Path<String>) -> Answer {
    let vs: Vec<Value> = r
        .versions_of(id_of(&id)?)?
        .into_iter()
        .map(|(s, v)| json!({"subject": s, "version": v}))
        .collect();
    ok(json!(vs))
}

async fn subjects(State(r): Shared, Query(p): Params) -> Answer {
    let prefix = p.get("subjectPrefix").cloned().unwrap_or_default();
    let list: Vec<String> = r
        .subjects(flag(&p, "deleted"))
        .into_iter()
        .filter(|s| s.starts_with(&prefix))
        .collect();
    ok(json!(list))
}

async fn versions(State(r): Shared, Path(subject): Path<String>, Query(p): Params) -> Answer {
    ok(json!(r.versions(&subject, flag(&p, "deleted"))?))
}

async fn register(State(r): Shared, Path(subject): Path<String>, body: Bytes) -> Answer {
    let new = new_schema(&body)?;
    let id = blocking(move || r.register(&subject, &new)).await?;
    ok(json!({"id": id}))
}

async fn lookup(
    State(r): Shared,
    Path(subject): Path<String>,
    Query(p): Params,
    body: Bytes,
) -> Answer {
    let new = new_schema(&body)?;
    let v = r.lookup(&subject, &new, flag(&p, "deleted"))?;
    let mut out = serde_json::Map::new();
    out.insert("subject".into(), json!(v.subject));
    out.insert("version".into(), json!(v.version));
    out.insert("id".into(), json!(v.id));
    ok(schema_json(&r, v.id, out))
}

async fn version(
    State(r): Shared,
    Path((subject, version)): Path<(String, String)>,
    Query(p): Params,
) -> Answer {
    let v = r.version(&subject, &version, flag(&p, "deleted"))?;
    let mut out = serde_json::Map::new();
    out.insert("subject".into(), json!(v.subject));
    out.insert("version".into(), json!(v.version));
    out.insert("id".into(), json!(v.id));
    ok(schema_json(&r, v.id, out))
}

async fn version_schema(
    State(r): Shared,
    Path((subject, version)): Path<(String, String)>,
    Query(p): Params,
) -> Answer {
    let v = r.version(&subject, &version, flag(&p, "deleted"))?;
    let s = r
        .schema(v.id)
        .ok_or_else(|| Reply::from(RegistryError::schema_not_found(&v.id.to_string())))?;
    ok(raw(&s.text))
}

async fn referenced_by(
    State(r): Shared,
    Path((subject, version)): Path<(String, String)>,
) -> Answer {
    r.version(&subject, &version, false)?;
    ok(json!([]))
}

async fn delete_subject(State(r): Shared, Path(subject): Path<String>, Query(p): Params) -> Answer {
    let permanent = flag(&p, "permanent");
    let vs = blocking(move || r.delete(&subject, None, permanent)).await?;
    ok(json!(vs))
}

async fn delete_version(
    State(r): Shared,
    Path((subject, version)): Path<(String, String)>,
    Query(p): Params,
) -> Answer {
    let permanent = flag(&p, "permanent");
    let vs = blocking(move || r.delete(&subject, Some(&version), permanent)).await?;
    ok(json!(vs.first()))
}

async fn get_config(State(r): Shared) -> Answer {
    ok(json!({"compatibilityLevel": r.level(None).name()}))
}

/// The level in a `PUT /config` body (`{"compatibility": "FULL"}`).
fn level_of(body: &[u8]) -> Result<Level, Reply> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| Reply::from(RegistryError::invalid_level(&e.to_string())))?;
    let name = v
        .get("compatibility")
        .or_else(|| v.get("compatibilityLevel"))
        .and_then(Value::as_str)
        .ok_or_else(|| Reply::from(RegistryError::invalid_level("(none given)")))?;
    Ok(Level::parse(name)?)
}

async fn put_config(State(r): Shared, body: Bytes) -> Answer {
    let level = level_of(&body)?;
    blocking(move || r.set_level(None, level)).await?;
    ok(json!({"compatibility": level.name()}))
}

async fn get_subject_config(
    State(r): Shared,
    Path(subject): Path<String>,
    Query(p): Params,
) -> Answer {
    match r.subject_level(&subject) {
        Some(l) => ok(json!({"compatibilityLevel": l.name()})),
        None if flag(&p, "defaultToGlobal") => {
            ok(json!({"compatibilityLevel": r.level(None).name()}))
        }
        None => Err(Reply(
            StatusCode::NOT_FOUND,
            json!({"error_code": 40408, "message": format!("Subject '{subject}' does not have subject-level compatibility configured")}),
        )),
    }
}

async fn put_subject_config(State(r): Shared, Path(subject): Path<String>, body: Bytes) -> Answer {
    let level = level_of(&body)?;
    blocking(move || r.set_level(Some(&subject), level)).await?;
    ok(json!({"compatibility": level.name()}))
}

async fn delete_subject_config(State(r): Shared, Path(subject): Path<String>) -> Answer {
    let was = blocking(move || r.delete_level(&subject)).await?;
    ok(json!({"compatibilityLevel": was.name()}))
}

fn compatibility(
    r: &Registry,
    subject: &str,
    version: Option<&str>,
    verbose: bool,
    body: &[u8],
) -> Answer {
    let new = new_schema(body)?;
    // A subject with no versions accepts anything (nothing to be
    // compatible with), unless a version was named.
    if version.is_none() && r.versions(subject, false).is_err() {
        return ok(json!({"is_compatible": true}));
    }
    let problems = r.check(subject, &new, version)?;
    let mut out = json!({"is_compatible": problems.is_empty()});
    if verbose {
        out["messages"] = json!(problems);
    }
    ok(out)
}

async fn compatible_with(
    State(r): Shared,
    Path((subject, version)): Path<(String, String)>,
    Query(p): Params,
    body: Bytes,
) -> Answer {
    compatibility(&r, &subject, Some(&version), flag(&p, "verbose"), &body)
}

async fn compatible_with_all(
    State(r): Shared,
    Path(subject): Path<String>,
    Query(p): Params,
    body: Bytes,
) -> Answer {
    compatibility(&r, &subject, None, flag(&p, "verbose"), &body)
}

async fn mode() -> Answer {
    ok(json!({"mode": "READWRITE"}))
}

async fn not_found() -> Reply {
    Reply(
        StatusCode::NOT_FOUND,
        json!({"error_code": 404, "message": "HTTP 404 Not Found"}),
    )
}

/// The registry's routes.
pub fn router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/schemas/types", get(types))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(raw_by_id))
        .route("/schemas/ids/{id}/subjects", get(subjects_of_id))
        .route("/schemas/ids/{id}/versions", get(versions_of_id))
        .route("/subjects", get(subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route("/subjects/{subject}/versions", get(versions).post(register))
        .route(
            "/subjects/{subject}/versions/{version}",
            get(version).delete(delete_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(version_schema),
        )
        .route(
            "/subjects/{subject}/versions/{version}/referencedby",
            get(referenced_by),
        )
        .route("/config", get(get_config).put(put_config))
        .route(
            "/config/{subject}",
            get(get_subject_config)
                .put(put_subject_config)
                .delete(delete_subject_config),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(compatible_with),
        )
        .route(
            "/compatibility/subjects/{subject}/versions",
            post(compatible_with_all),
        )
        .route("/mode", get(mode))
        .route("/mode/{subject}", get(mode))
        .fallback(not_found)
        .with_state(registry)
}

/// Serve the registry on `listener` until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    mut stop: watch::Receiver<bool>,
) {
    let shutdown = async move {
        while !*stop.borrow() {
            if stop.changed().await.is_err() {
                break;
            }
        }
    };
    if let Err(e) = axum::serve(listener, router(registry))
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::warn!(error = %e, "schema registry listener failed");
    }
}
