//! One error shape for every non-2xx answer:
//!
//! ```json
//! {"message": "…", "error": {"code": "…", "message": "…", …details}, …context}
//! ```
//!
//! `details` are the input position of a rejected job (`line`, `byte`,
//! `column`); `context` is e.g. the `id` of an existing job (409). Server
//! faults never show their cause (it may name internal paths): they are
//! logged, and the body says so.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fanfold_pipeline::{PipelineError, StoreError};
use serde_json::{Map, Value};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Extra fields of `error`.
    pub details: Map<String, Value>,
    /// Extra top-level fields.
    pub context: Map<String, Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), details: Map::new(), context: Map::new() }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn with(mut self, k: &str, v: impl Into<Value>) -> Self {
        self.context.insert(k.to_string(), v.into());
        self
    }
    pub fn detail(mut self, k: &str, v: impl Into<Value>) -> Self {
        self.details.insert(k.to_string(), v.into());
        self
    }
    /// A fault of ours (or of a store): logged in full, shown without detail.
    pub fn internal(what: impl std::fmt::Display, retryable: bool) -> Self {
        tracing::error!(error = %what, "request failed");
        if retryable {
            Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "a store is unavailable; try again shortly")
        } else {
            Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; see the server log")
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(_) => ApiError::not_found("no such object"),
            StoreError::InvalidKey { reason, .. } => ApiError::bad_request(format!("invalid key: {reason}")),
            other => {
                let r = other.retryable();
                ApiError::internal(other, r)
            }
        }
    }
}

impl From<PipelineError> for ApiError {
    fn from(e: PipelineError) -> Self {
        match e {
            PipelineError::Store(s) => s.into(),
            PipelineError::UnknownJob(_) => ApiError::not_found("no such job"),
            other => {
                let r = other.retryable();
                ApiError::internal(other, r)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = Map::new();
        error.insert("code".into(), self.code.into());
        error.insert("message".into(), self.message.clone().into());
        error.extend(self.details);
        let mut body = Map::new();
        body.insert("message".into(), self.message.into());
        body.insert("error".into(), Value::Object(error));
        body.extend(self.context);
        (self.status, axum::Json(Value::Object(body))).into_response()
    }
}

/// Every answer of the API is JSON, errors included.
pub fn json_response(status: StatusCode, v: Value) -> Response {
    (status, axum::Json(v)).into_response()
}

pub fn json_ok(v: Value) -> Response {
    json_response(StatusCode::OK, v)
}
