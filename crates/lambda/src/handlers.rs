//! The handlers: event in, pipeline step, JSON out.

use aws_lambda_events::event::cloudwatch_events::CloudWatchEvent;
use aws_lambda_events::event::s3::S3Event;
use fanfold_pipeline::{incoming_skip_reason, now_ms, PipelineError, StoreError, Task};
use serde::Serialize;
use serde_json::{json, Value};

use crate::{decode_s3_key, Deps};

/// A failed invocation; `retryable` says whether Lambda's retry can help.
#[derive(Debug)]
pub struct HandlerError {
    pub message: String,
    pub retryable: bool,
}

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hint = if self.retryable { "a retry may help" } else { "a retry cannot help" };
        write!(f, "{} ({hint})", self.message)
    }
}

impl std::error::Error for HandlerError {}

impl HandlerError {
    /// The Lambda `errorType` of a retryable failure (Lambda's retry, or the
    /// sweeper, can finish the work).
    pub const RETRYABLE: &'static str = "fanfold.Retryable";
    /// The Lambda `errorType` of a failure no retry can help.
    pub const PERMANENT: &'static str = "fanfold.Permanent";
}

/// Retryability in the invocation's `errorType`, where Lambda's logs,
/// metrics and destinations show it, not only in the message.
impl From<HandlerError> for lambda_runtime::Diagnostic {
    fn from(e: HandlerError) -> Self {
        let error_type = if e.retryable { HandlerError::RETRYABLE } else { HandlerError::PERMANENT };
        lambda_runtime::Diagnostic { error_type: error_type.into(), error_message: e.to_string() }
    }
}

/// Logs, when the invocation ends, the AWS requests it made, with the step
/// it ran: one line `{"step": …, "requests": {"S3.GetObject": n, …}}` per
/// invocation (`scripts/cloud-local` sums them per step).
struct RequestLog(&'static str);

impl Drop for RequestLog {
    fn drop(&mut self) {
        let requests = fanfold_aws::take_request_counts();
        tracing::info!(step = self.0, requests = %json!(requests), "requests");
    }
}

fn bad_event(e: impl std::fmt::Display) -> HandlerError {
    HandlerError { message: format!("unexpected event: {e}"), retryable: false }
}

/// Runs a step for `job`: a retryable error is returned (Lambda retries it);
/// any other fails the job with the reason, and the invocation succeeds.
fn step(deps: &Deps, job: &str, r: Result<(), PipelineError>) -> Result<Value, HandlerError> {
    match r {
        Ok(()) => Ok(json!({"job": job, "ok": true})),
        Err(e) if e.retryable() => Err(HandlerError { message: format!("job {job}: {e}"), retryable: true }),
        Err(e @ PipelineError::UnknownJob(_)) => Err(HandlerError { message: e.to_string(), retryable: false }),
        Err(e) => {
            tracing::error!(job, error = %e, "step failed; failing the job");
            deps.pipeline.fail_task(job, &e, 1).map_err(|se| HandlerError {
                message: format!("job {job}: {e}; and failing it: {se}"),
                retryable: true,
            })?;
            Ok(json!({"job": job, "ok": false, "error": e.to_string()}))
        }
    }
}

/// What the splitter did with one record of an S3 event.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct SplitOutcome {
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// `false`: the job already existed (a duplicate event).
    pub new: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

fn skip(key: String, why: &str) -> SplitOutcome {
    SplitOutcome { key, job: None, new: false, skipped: Some(why.to_string()) }
}

/// `splitter`: an S3 object-created event → one job per new `incoming/` object.
pub fn splitter(event: Value, deps: &Deps, _request: &str) -> Result<Value, HandlerError> {
    let _log = RequestLog("split");
    if event.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return Ok(json!({"ignored": "s3:TestEvent"}));
    }
    let event: S3Event = serde_json::from_value(event).map_err(bad_event)?;
    let p = &deps.pipeline;
    let mut out = Vec::new();
    for rec in event.records {
        let bucket = rec.s3.bucket.name.unwrap_or_default();
        let key = decode_s3_key(rec.s3.object.key.as_deref().unwrap_or_default());
        if bucket != p.config.bucket {
            out.push(skip(key, "another bucket"));
            continue;
        }
        if let Some(why) = incoming_skip_reason(&key) {
            out.push(skip(key, why));
            continue;
        }
        // A file added to, replaced in or removed from a dataset folder: its
        // next version, started by the sweeper once the folder is quiet.
        let removed = rec.event_name.as_deref().is_some_and(|e| e.starts_with("ObjectRemoved"));
        match p.dataset_event(&key) {
            Ok(true) => {
                out.push(skip(key, "noted for its dataset's next version"));
                continue;
            }
            Ok(false) if removed => {
                out.push(skip(key, "removed"));
                continue;
            }
            Ok(false) => {}
            Err(e) => return Err(HandlerError { message: format!("{key}: {e}"), retryable: e.retryable() }),
        }
        let submitted = p.submit_object(&key, &deps.default_spec);
        match submitted {
            Ok(s) => {
                tracing::Span::current().record("job", s.id.as_str());
                tracing::info!(key, job = s.id, new = s.new, "submitted");
                out.push(SplitOutcome { key, job: Some(s.id), new: s.new, skipped: None });
            }
            Err(PipelineError::Store(StoreError::NotFound(_))) => out.push(skip(key, "object no longer exists")),
            Err(e) => return Err(HandlerError { message: format!("{key}: {e}"), retryable: e.retryable() }),
        }
    }
    Ok(serde_json::to_value(out).expect("outcomes serialize"))
}

/// `worker`: one chunk task.
pub fn worker(task: Task, deps: &Deps, _request: &str) -> Result<Value, HandlerError> {
    let _log = RequestLog("chunk");
    match task {
        Task::Chunk { job, range, state, member } => {
            tracing::Span::current().record("job", job.as_str());
            let r = deps.pipeline.run_chunk(&job, range, state, member);
            step(deps, &job, r)
        }
        other => Err(bad_event(format!("the worker got {other:?}"))),
    }
}

/// `finalizer`: one slice's dispatch, the plan, one key range's reduce, or
/// the commit of a job. The request id owns the leases it takes (Lambda
/// retries an async invoke with the same id, so a retry resumes the lease).
pub fn finalizer(task: Task, deps: &Deps, request: &str) -> Result<Value, HandlerError> {
    let _log = RequestLog(match task {
        Task::Dispatch { .. } => "dispatch",
        Task::Plan { .. } => "plan",
        Task::Reduce { .. } => "reduce",
        Task::Commit { .. } => "commit",
        Task::Chunk { .. } => "chunk",
    });
    match &task {
        Task::Dispatch { .. } | Task::Plan { .. } | Task::Reduce { .. } | Task::Commit { .. } => {
            tracing::Span::current().record("job", task.job());
            let r = deps.pipeline.run_task(&task, request);
            step(deps, task.job(), r)
        }
        other => Err(bad_event(format!("the finalizer got {other:?}"))),
    }
}

/// `sweeper`: scheduled (the EventBridge schedule's event); finishes what
/// crashed.
pub fn sweeper(event: CloudWatchEvent, deps: &Deps, _request: &str) -> Result<Value, HandlerError> {
    let _log = RequestLog("sweep");
    tracing::info!(
        detail_type = event.detail_type.as_deref().unwrap_or(""),
        source = event.source.as_deref().unwrap_or(""),
        time = %event.time,
        "sweep"
    );
    let did = deps
        .pipeline
        .sweep(now_ms(), &deps.sweep)
        .map_err(|e| HandlerError { message: format!("sweep: {e}"), retryable: e.retryable() })?;
    for line in &did {
        tracing::info!(action = line.as_str(), "swept");
    }
    Ok(json!({ "swept": did }))
}
