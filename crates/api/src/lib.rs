//! fanfold's jobs API: one axum [`Router`] served by the `api` Lambda
//! (through `lambda_http`, behind API Gateway and its JWT authorizer) and by
//! `fanfold serve` (with a bearer token). Handlers translate HTTP into
//! pipeline calls; the ports block, so every handler runs them on a blocking
//! thread.
//!
//! | route | answers |
//! |---|---|
//! | `POST /jobs` | 201 `{id}`; 409 `{id, message}` same source+spec known; 404 no such object; 400 bad spec (names the field) |
//! | `GET /jobs` | 200 `{jobs, next}` newest first; `?limit=1..100&cursor=` |
//! | `GET /jobs/{id}` | 200 results; 425 `{progress}` while running; 406 rejected input (line, byte, column); 410 cancelled or failed; 404 |
//! | `DELETE /jobs/{id}` | 200 cancelled; 409 already finished; 404 |
//! | `POST /jobs/{id}/retry` | 202 started again (a FAILED or CANCELLED job); 409 running or done, or the object changed; 406 the input was rejected; 404 |
//! | `GET /jobs/{id}/events` | 200 `text/event-stream`: the job (as listed) at once and at every change, `event: progress`, then `event: end` when it ends; 404 |
//! | `GET /jobs/{id}/preview` | 200 first rows + largest groups; as `GET /jobs/{id}` otherwise |
//! | `GET /datasets/{dir}` | 200 the newest DONE version of dataset `incoming/<dir>` (as `GET /jobs/{id}`, with `dataset`: the stable `latest.json` and manifest); 404 none yet |
//! | `POST /uploads` | 201 `{key, url, method, expires_in}`: a PUT URL under `incoming/` |
//! | `GET /openapi.json`, `GET /` | the API document, the jobs page (no auth) |
//! | `GET`/`PUT /files/{key}` | serve only: signed download and upload links ([`files`]) |
//!
//! Errors: [`error`] (one shape). The checked-in OpenAPI document is
//! `openapi.json`; `tests/e2e/tests/api.rs` holds it to the router.

pub mod error;
pub mod files;
mod preview;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use fanfold_engine::Spec;
use fanfold_pipeline::{Job, Pipeline, Status, StoreError, Summary};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use error::ApiError;
use error::{json_ok, json_response};

/// The OpenAPI document (checked in beside this file).
pub const OPENAPI: &str = include_str!("../openapi.json");
const PAGE: &str = include_str!("page.html");

/// How long a download or upload link stays valid.
pub const LINK_SECONDS: u64 = 15 * 60;

/// URLs for direct transfers: presigned S3 URLs on AWS, signed links to
/// `fanfold serve` itself locally.
pub trait Links: Send + Sync {
    /// A URL that downloads `key` for [`LINK_SECONDS`].
    fn download(&self, key: &str) -> Result<String, StoreError>;
    /// A URL that takes a `PUT` of `key` for [`LINK_SECONDS`].
    fn upload(&self, key: &str) -> Result<String, StoreError>;
}

/// What the handlers need.
pub struct Api {
    pub pipeline: Arc<Pipeline>,
    pub links: Arc<dyn Links>,
    /// The spec of a job whose object has no `_spec.json` beside it.
    pub default_spec: Spec,
    /// `Some`: requests need `Authorization: Bearer <token>` (serve).
    /// `None`: auth happens in front (API Gateway's JWT authorizer).
    pub token: Option<String>,
    /// `Some`: `/files/…` serves signed links (serve; see [`files`]).
    pub files: Option<files::Signer>,
    /// How long `GET /jobs/{id}/events` streams at most (serve: minutes;
    /// behind API Gateway, which buffers a response for at most 29 s, less).
    pub stream_for: std::time::Duration,
}

type Shared = Arc<Api>;

/// Every route with its methods; the router is built from this table, and
/// the OpenAPI test compares it with the document.
pub fn routes() -> Vec<(&'static str, MethodRouter<Shared>)> {
    vec![
        ("/", get(page)),
        ("/openapi.json", get(openapi)),
        ("/jobs", post(create_job).get(list_jobs)),
        ("/jobs/{id}", get(get_job).delete(cancel_job)),
        ("/jobs/{id}/preview", get(preview_job)),
        ("/jobs/{id}/retry", post(retry_job)),
        ("/jobs/{id}/events", get(job_events)),
        ("/datasets/{dir}", get(get_dataset)),
        ("/uploads", post(create_upload)),
    ]
    .into_iter()
    .chain(files::routes())
    .collect()
}

/// The jobs API.
pub fn router(api: Arc<Api>) -> Router {
    let mut r = Router::new();
    for (path, m) in routes() {
        r = r.route(path, m);
    }
    r.fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this route")
        })
        .layer(axum::middleware::from_fn_with_state(api.clone(), auth))
        .layer(axum::middleware::from_fn(harden))
        .with_state(api)
}

/// On every answer: headers that keep the page out of frames and stop
/// browsers from sniffing types; and an error that a layer below the
/// handlers produced as text (413 from the body limit, a rejected path or
/// query) rewritten into the one JSON error shape.
async fn harden(req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    let status = r.status();
    let is_json = r
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if (status.is_client_error() || status.is_server_error()) && !is_json {
        let message = status.canonical_reason().unwrap_or("error").to_string();
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::URI_TOO_LONG => "uri_too_long",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            s if s.is_server_error() => "internal",
            _ => "bad_request",
        };
        let www = r.headers().get(header::WWW_AUTHENTICATE).cloned();
        r = ApiError::new(status, code, message).into_response();
        if let Some(v) = www {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
    }
    let h = r.headers_mut();
    h.insert(header::X_FRAME_OPTIONS, header::HeaderValue::from_static("DENY"));
    h.insert(header::CONTENT_SECURITY_POLICY, header::HeaderValue::from_static("frame-ancestors 'none'"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, header::HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, header::HeaderValue::from_static("no-referrer"));
    r
}

/// Paths anyone may fetch: the page, the API document, and signed links
/// (their signature is their authorization).
fn public(path: &str) -> bool {
    path == "/" || path == "/openapi.json" || path.starts_with("/files/")
}

/// Compares two secrets in time that does not depend on where they differ
/// (nor on their lengths: both are hashed first).
pub fn secrets_equal(a: &str, b: &str) -> bool {
    Sha256::digest(a.as_bytes()).ct_eq(&Sha256::digest(b.as_bytes())).into()
}

async fn auth(State(api): State<Shared>, req: Request, next: Next) -> Response {
    if let Some(token) = &api.token {
        if !public(req.uri().path()) {
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim);
            if !given.is_some_and(|g| secrets_equal(g, token)) {
                let mut r = ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "missing or wrong token: send Authorization: Bearer <token>",
                )
                .into_response();
                r.headers_mut().insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("valid header"));
                return r;
            }
        }
    }
    next.run(req).await
}

/// Runs blocking port calls off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, ApiError> + Send + 'static) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(ApiError::internal(format!("handler panicked: {e}"), false)),
    }
}

async fn page() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], PAGE).into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("request body: {e}")))
}

/// Job ids are 32 hex digits; anything else cannot name a job.
fn check_id(id: &str) -> Result<(), ApiError> {
    if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(ApiError::not_found("no such job"))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateJob {
    source: String,
    #[serde(default)]
    spec: Option<Value>,
}

/// `source` as a key of the job bucket: `key` or `s3://<bucket>/<key>`.
fn source_key(api: &Api, source: &str) -> Result<String, ApiError> {
    let key = match source.strip_prefix("s3://") {
        Some(rest) => {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket != api.pipeline.config.bucket {
                return Err(ApiError::not_found(format!("unknown source: bucket {bucket:?} is not the job bucket")));
            }
            key
        }
        None => source,
    };
    if key.is_empty() {
        return Err(ApiError::bad_request("source: empty key"));
    }
    if key.starts_with("_fanfold/") || key.starts_with("results/") {
        return Err(ApiError::bad_request("source: results and internal objects cannot be a job's input"));
    }
    Ok(key.to_string())
}

async fn create_job(State(api): State<Shared>, body: Bytes) -> Result<Response, ApiError> {
    let req: CreateJob = parse_body(&body)?;
    let key = source_key(&api, &req.source)?;
    let spec = match &req.spec {
        None => None,
        Some(v) => Some(Spec::from_json(&v.to_string()).map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_spec", format!("spec: {e}")).detail("field", e.field)
        })?),
    };
    blocking(move || {
        let p = &api.pipeline;
        let submitted = match &spec {
            Some(s) => p.submit(&key, s),
            None => p.submit_object(&key, &api.default_spec),
        }
        .map_err(|e| match ApiError::from(e) {
            nf if nf.status == StatusCode::NOT_FOUND => {
                ApiError::not_found(format!("unknown source: no object {key:?}"))
            }
            other => other,
        })?;
        if submitted.new {
            Ok(json_response(StatusCode::CREATED, json!({"id": submitted.id})))
        } else {
            Err(ApiError::new(StatusCode::CONFLICT, "job_exists", "a job for this source (same ETag) and spec exists")
                .with("id", submitted.id))
        }
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[serde(default)]
    limit: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
}

async fn list_jobs(
    State(api): State<Shared>,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Ok(Query(q)) = q else { return Err(ApiError::bad_request("query: expected limit and cursor only")) };
    let limit = match q.limit.as_deref() {
        None => 20,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| ApiError::bad_request("limit: a number from 1 to 100"))?,
    };
    if let Some(c) = &q.cursor {
        if !Job::is_list_key(c) {
            return Err(ApiError::bad_request("cursor: not a cursor from an earlier page"));
        }
    }
    blocking(move || {
        let page = api.pipeline.jobs.list_jobs(limit, q.cursor.as_deref())?;
        let jobs: Vec<Value> = page.jobs.iter().map(brief).collect();
        Ok(json_ok(json!({"jobs": jobs, "next": page.next})))
    })
    .await
}

fn progress(job: &Job) -> Value {
    json!({
        "chunks_done": job.chunks_done,
        "chunks_total": job.chunk_count,
        "bytes_done": job.bytes_done,
        "bytes_total": job.source.size,
        "rows": job.rows,
    })
}

fn source_of(job: &Job) -> Value {
    let kind = match &job.source.kind {
        fanfold_pipeline::InputKind::File => "file",
        fanfold_pipeline::InputKind::Scan { .. } => "scan",
        fanfold_pipeline::InputKind::Dataset { .. } => "dataset",
    };
    json!({"bucket": job.source.bucket, "key": job.source.key, "size": job.source.size, "kind": kind})
}

/// A job in a listing.
fn brief(job: &Job) -> Value {
    let mut v = json!({
        "id": job.id,
        "status": job.status,
        "source": source_of(job),
        "created_ms": job.created_ms,
        "updated_ms": job.updated_ms,
        "progress": progress(job),
    });
    if let Some(e) = &job.error {
        v["error"] = error_of(e);
    }
    v
}

fn error_of(e: &fanfold_pipeline::JobError) -> Value {
    let mut v = json!({"message": e.message, "rejected": e.rejected});
    if let Some(l) = e.line {
        v["line"] = l.into();
    }
    if let Some(b) = e.byte {
        v["byte"] = b.into();
    }
    if let Some(c) = &e.column {
        v["column"] = c.clone().into();
    }
    v
}

/// The job, if it is done; otherwise the answer that says why not.
fn done_job(api: &Api, id: &str) -> Result<Job, ApiError> {
    check_id(id)?;
    let job = api.pipeline.jobs.get_job(id)?.ok_or_else(|| ApiError::not_found("no such job"))?;
    let status = serde_json::to_value(job.status).expect("status serializes");
    match job.status {
        Status::Done => Ok(job),
        Status::Splitting | Status::Running | Status::Merging => Err(ApiError::new(
            StatusCode::TOO_EARLY,
            "not_ready",
            format!("the job is {}; ask again later", status.as_str().unwrap_or("running")),
        )
        .with("id", job.id.clone())
        .with("status", status)
        .with("progress", progress(&job))),
        Status::Failed => {
            let e = job.error.clone().unwrap_or_else(|| fanfold_pipeline::JobError::internal("unknown"));
            let (code, http) = if e.rejected {
                ("input_rejected", StatusCode::NOT_ACCEPTABLE)
            } else {
                ("job_failed", StatusCode::GONE)
            };
            let mut err =
                ApiError::new(http, code, e.message.clone()).with("id", job.id.clone()).with("status", status);
            for (k, v) in [("line", e.line.map(Value::from)), ("byte", e.byte.map(Value::from))] {
                if let Some(v) = v {
                    err = err.detail(k, v);
                }
            }
            if let Some(c) = e.column {
                err = err.detail("column", c);
            }
            Err(err)
        }
        Status::Cancelled => {
            Err(ApiError::new(StatusCode::GONE, "job_cancelled", "the job was cancelled; its results were deleted")
                .with("id", job.id.clone())
                .with("status", status))
        }
    }
}

fn read_small(api: &Api, key: &str, limit: u64) -> Result<Vec<u8>, ApiError> {
    let mut v = Vec::new();
    std::io::Read::read_to_end(&mut api.pipeline.output.get_range(key, 0, Some(limit))?, &mut v)
        .map_err(|e| ApiError::internal(e, true))?;
    Ok(v)
}

async fn get_job(State(api): State<Shared>, Path(id): Path<String>) -> Result<Response, ApiError> {
    blocking(move || Ok(json_ok(job_result(&api, &id)?))).await
}

/// `GET /datasets/{dir}`: the newest DONE version of dataset folder
/// `incoming/<dir>`, as `GET /jobs/{id}` answers for it, with `dataset`.
async fn get_dataset(State(api): State<Shared>, Path(dir): Path<String>) -> Result<Response, ApiError> {
    blocking(move || {
        check_filename(&dir)?;
        let folder = format!("incoming/{dir}");
        let prefix = api
            .pipeline
            .latest_prefix(&folder)
            .ok_or_else(|| ApiError::not_found("this store publishes no dataset versions"))?;
        let bytes = match read_small(&api, &format!("{prefix}latest.json"), 1 << 20) {
            Ok(b) => b,
            Err(e) if e.status == StatusCode::NOT_FOUND => {
                return Err(ApiError::not_found(format!("dataset {folder} has no finished version yet")))
            }
            Err(e) => return Err(e),
        };
        let latest: fanfold_pipeline::Latest =
            serde_json::from_slice(&bytes).map_err(|e| ApiError::internal(format!("latest.json: {e}"), false))?;
        let mut out = job_result(&api, &latest.job)?;
        let stable = format!("{prefix}manifest.json");
        out["dataset"] = json!({
            "folder": folder,
            "latest": {"key": format!("{prefix}latest.json"), "url": api.links.download(&format!("{prefix}latest.json"))?},
            "manifest": {"key": stable, "url": api.links.download(&stable)?},
        });
        Ok(json_ok(out))
    })
    .await
}

/// A DONE job's answer (`GET /jobs/{id}`).
fn job_result(api: &Api, id: &str) -> Result<Value, ApiError> {
    let job = done_job(api, id)?;
    let out = job.outputs.as_ref().ok_or_else(|| ApiError::internal("a DONE job without outputs", false))?;
    let summary = serde_json::from_slice::<Summary>(&read_small(api, &out.summary, 64 << 20)?).ok();
    // The job record lists the first parts; the summary lists them all.
    let listed = match &summary {
        Some(s) if !out.complete_list() => &s.output_files,
        _ => &out.parts,
    };
    let mut files = Vec::new();
    for p in listed {
        files.push(json!({"key": p.key, "bytes": p.bytes, "rows": p.rows, "url": api.links.download(&p.key)?}));
    }
    let mut stats: Value = summary.and_then(|s| serde_json::to_value(s).ok()).unwrap_or(Value::Null);
    if let Some(src) = stats.get_mut("source") {
        *src = job.source.key.clone().into(); // not the store's internal address
    }
    Ok(json!({
        "id": job.id,
        "status": job.status,
        "source": source_of(&job),
        "output_files": files,
        "manifest": {"key": out.manifest, "url": api.links.download(&out.manifest)?},
        "stats": stats,
        "created_ms": job.created_ms,
        "updated_ms": job.updated_ms,
    }))
}

async fn preview_job(State(api): State<Shared>, Path(id): Path<String>) -> Result<Response, ApiError> {
    blocking(move || {
        let job = done_job(&api, &id)?;
        let out = job.outputs.as_ref().ok_or_else(|| ApiError::internal("a DONE job without outputs", false))?;
        let delimiter = Spec::from_json(&job.spec).map(|s| s.csv.delimiter).unwrap_or(b',');
        let (header, rows) = match out.parts.first() {
            Some(p) => preview::rows(&read_small(&api, &p.key, preview::BYTES)?, delimiter, preview::ROWS),
            None => (Vec::new(), Vec::new()),
        };
        let top = serde_json::from_slice::<Summary>(&read_small(&api, &out.summary, 1 << 20)?)
            .map(|s| s.top_groups)
            .unwrap_or_default();
        Ok(json_ok(json!({"id": job.id, "header": header, "rows": rows, "top_groups": top})))
    })
    .await
}

async fn cancel_job(State(api): State<Shared>, Path(id): Path<String>) -> Result<Response, ApiError> {
    check_id(&id)?;
    blocking(move || {
        let p = &api.pipeline;
        let job = p.jobs.get_job(&id)?.ok_or_else(|| ApiError::not_found("no such job"))?;
        if p.cancel(&id)? {
            return Ok(json_ok(json!({"id": id, "status": Status::Cancelled})));
        }
        let now = p.jobs.status(&id)?.unwrap_or(job.status);
        Err(ApiError::new(StatusCode::CONFLICT, "job_finished", "the job has already finished")
            .with("id", id)
            .with("status", serde_json::to_value(now).expect("status serializes")))
    })
    .await
}

/// How often a job's event stream looks at the job.
const EVENTS_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// `GET /jobs/{id}/events`: server-sent events of the job's listing entry,
/// the current one at once and a new one whenever it changes; the stream
/// ends after the job ends (`event: end`) or after [`Api::stream_for`].
async fn job_events(State(api): State<Shared>, Path(id): Path<String>) -> Result<Response, ApiError> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    check_id(&id)?;
    let first = {
        let (api, id) = (api.clone(), id.clone());
        blocking(move || api.pipeline.jobs.get_job(&id)?.ok_or_else(|| ApiError::not_found("no such job"))).await?
    };
    let deadline = tokio::time::Instant::now() + api.stream_for;
    let state = (Some(first), None::<String>, api, id);
    let events = futures::stream::unfold(state, move |(job, last, api, id)| async move {
        let mut job = job?;
        loop {
            let body = brief(&job).to_string();
            if last.as_deref() != Some(body.as_str()) {
                let ended = job.status.is_final();
                let event = Event::default().event(if ended { "end" } else { "progress" }).data(body.clone());
                let next = (!ended).then_some(job);
                return Some((Ok::<_, std::convert::Infallible>(event), (next, Some(body), api, id)));
            }
            if tokio::time::Instant::now() + EVENTS_EVERY > deadline {
                return None;
            }
            tokio::time::sleep(EVENTS_EVERY).await;
            let (a, i) = (api.clone(), id.clone());
            job = match tokio::task::spawn_blocking(move || a.pipeline.jobs.get_job(&i)).await {
                Ok(Ok(Some(j))) => j,
                _ => return None, // gone, or the store failed: the client reconnects
            };
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}

async fn retry_job(State(api): State<Shared>, Path(id): Path<String>) -> Result<Response, ApiError> {
    check_id(&id)?;
    blocking(move || {
        let p = &api.pipeline;
        if p.jobs.get_job(&id)?.is_none() {
            return Err(ApiError::not_found("no such job"));
        }
        match p.retry(&id)? {
            fanfold_pipeline::Retried::Started => {
                let job = p.jobs.get_job(&id)?.ok_or_else(|| ApiError::not_found("no such job"))?;
                let status = serde_json::to_value(job.status).expect("status serializes");
                Ok((StatusCode::ACCEPTED, axum::Json(json!({"id": id, "status": status}))).into_response())
            }
            fanfold_pipeline::Retried::NotEnded(status) => Err(ApiError::new(
                StatusCode::CONFLICT,
                "job_not_ended",
                "only a failed or cancelled job can be started again",
            )
            .with("id", id)
            .with("status", serde_json::to_value(status).expect("status serializes"))),
            fanfold_pipeline::Retried::Rejected(e) => Err(ApiError::new(
                StatusCode::NOT_ACCEPTABLE,
                "input_rejected",
                format!("the input was rejected, and would be again: {}; upload a fixed file (a new job)", e.message),
            )
            .with("id", id)),
            fanfold_pipeline::Retried::ObjectChanged => Err(ApiError::new(
                StatusCode::CONFLICT,
                "object_changed",
                "the object changed or was deleted since the job ran: POST /jobs for a job on its current version",
            )
            .with("id", id)),
        }
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateUpload {
    filename: String,
}

/// A file name for `incoming/`: relative, plain segments, printable.
fn check_filename(name: &str) -> Result<(), ApiError> {
    let bad = |why: &str| Err(ApiError::bad_request(format!("filename: {why}")));
    if name.is_empty() || name.len() > 512 {
        return bad("1 to 512 bytes");
    }
    if name.chars().any(|c| c.is_control() || c == '\\') {
        return bad("no control characters or backslashes");
    }
    if name.split('/').any(|s| s.is_empty() || s == "." || s == ".." || s.starts_with(".fanfold")) {
        return bad("relative, without empty, `.` or `..` segments");
    }
    Ok(())
}

async fn create_upload(State(api): State<Shared>, body: Bytes) -> Result<Response, ApiError> {
    let req: CreateUpload = parse_body(&body)?;
    check_filename(&req.filename)?;
    blocking(move || {
        let key = format!("incoming/{}", req.filename);
        let url = api.links.upload(&key)?;
        Ok(json_response(
            StatusCode::CREATED,
            json!({"key": key, "url": url, "method": Method::PUT.as_str(), "expires_in": LINK_SECONDS}),
        ))
    })
    .await
}
