//! fanfold's AWS adapters, behind the pipeline's synchronous ports.
//!
//! - [`S3Store`]: `ObjectStore` on aws-sdk-s3 — streamed ranged GETs,
//!   multipart uploads for streams, path-style addressing when an endpoint
//!   URL (`AWS_ENDPOINT_URL`) points at an emulator.
//! - [`DynamoJobStore`]: `JobStore` on one DynamoDB table (layout below).
//! - [`LambdaDispatcher`]: `Dispatcher` as Lambda async invokes, with
//!   bounded concurrency.
//! - [`EventBridgeNotifier`]: `Notifier` as EventBridge `PutEvents`.
//! - [`GlueCatalog`]: `TableCatalog` as Glue `CreateTable`.
//!
//! The SDK is async and the ports are not: every adapter holds a tokio
//! runtime [`Handle`] and blocks on it. Call the ports from a thread that is
//! not a runtime worker (`spawn_blocking`, or a plain thread).
//!
//! Table layout (single table, `pk`/`sk` strings; see `docs/architecture.md`):
//! ```text
//! pk=job#<id>  sk=job            status, source, spec, head, chunk_size, chunk_count,
//!                                chunks_done, rows, bytes_done, chunks_rerun, sweeps,
//!                                range_count, ranges_done, merging_ms, lease_owner,
//!                                lease_until, error, outputs, created_ms, running_ms,
//!                                updated_ms, ttl — constant size
//! pk=job#<id>  sk=chunk#0000042  report (JSON), partial (binary, ≤ 8 KiB) or partial_key,
//!                                state, done, rerun, ttl
//! pk=job#<id>  sk=range#00007    done, lease_owner, lease_until, ttl
//! pk=active   sk=<id>           jobs not known to have ended: the sweeper's list
//!                                (a sweep drops the entries of jobs that ended)
//! pk=jobs      sk=<created_ms:013>.<id>  id: jobs newest first (GET /jobs)
//! ```
//! Marking a chunk or a range done is one `TransactWriteItems`: the flag on
//! its own item and the counter on the job item, so a duplicate adds nothing
//! and no item grows with the chunk count.

mod dynamo;
mod events;
mod glue;
mod lambda;
mod requests;
mod s3;

pub use dynamo::DynamoJobStore;
pub use events::EventBridgeNotifier;
pub use glue::GlueCatalog;
pub use lambda::LambdaDispatcher;
pub use requests::take_request_counts;
pub use s3::{S3Store, MIN_PART_SIZE, PART_SIZE};
pub use tokio::runtime::Handle;

use fanfold_pipeline::StoreError;

/// Loads the SDK configuration from the environment (region, credentials,
/// `AWS_ENDPOINT_URL`).
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await
}

/// Maps an SDK error: throttling, timeouts and 5xx may succeed on retry.
pub(crate) fn sdk_error<E>(
    what: &str,
    e: aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> StoreError
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
    let retryable = match &e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => true,
        SdkError::ServiceError(s) => {
            s.raw().status().as_u16() >= 500
                || s.err().code().is_some_and(|c| {
                    c.contains("Throttl")
                        || c == "SlowDown"
                        || c.contains("LimitExceeded")
                        || c == "TooManyRequestsException"
                })
        }
        _ => false,
    };
    let detail = match &e {
        SdkError::ServiceError(s) => {
            format!("{} {}", s.err().code().unwrap_or("error"), s.err().message().unwrap_or_default())
        }
        other => DisplayErrorContext(other).to_string(),
    };
    StoreError::Other { message: format!("{what}: {detail}"), retryable }
}
