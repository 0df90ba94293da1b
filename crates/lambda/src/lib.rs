//! fanfold's Lambda handlers.
//!
//! Every function runs the same bootstrap (`functions/bootstrap`), whose
//! `main` is [`main_from_env`]: the function's `Handler` names its [`Role`],
//! and [`run`] builds the clients once per cold start and serves that
//! role's handler from here. A handler takes the typed
//! event and a [`Pipeline`], translates the event and calls a step; it is
//! synchronous (the ports block) and runs on a blocking thread.
//!
//! Errors: a step error that a retry may fix is returned, so Lambda's async
//! retry and then the dead-letter queue take over; one that cannot be fixed
//! by retrying fails the job with the reason and the invocation succeeds.
//!
//! Configuration (environment): `BUCKET`, `TABLE`, `WORKER_FUNCTION`,
//! `FINALIZER_FUNCTION`, `CHUNK_SIZE`, `INLINE_LIMIT`, `READ_WHOLE`, `RANGE_BYTES`, `LEASE_SECONDS`,
//! `DISPATCH_SECONDS` (a dispatcher's lease, and how long a split, a
//! dispatch or an unstarted reducer may take before the sweeper repairs it),
//! `STALE_SECONDS`, `MAX_SWEEPS`, `EVENT_BUS` (where job ends go; empty: nowhere), `GLUE_DATABASE` (where DONE jobs' tables go; empty: none), `DEFAULT_SPEC` (JSON; default: the BMAT
//! job), `SCAN_THREADS` (default: one per 1,769 MB of the function's memory,
//! Lambda's vCPU share), `READ_STREAMS` (ranged GETs in flight per scan
//! thread, default 4) and `READ_BLOCK` (bytes per GET, default 8 MiB), and,
//! for tests only, `FANFOLD_FAULTS` (see [`faults`]).

mod emf;
pub mod faults;
mod handlers;
mod keys;
mod role;

use std::sync::Arc;

use fanfold_aws::{DynamoJobStore, LambdaDispatcher, S3Store};
use fanfold_engine::Spec;
use fanfold_pipeline::{Config, Dispatcher, Layout, Pipeline, SweepPolicy};
use lambda_runtime::{service_fn, LambdaEvent};
use serde::de::DeserializeOwned;

pub use handlers::{finalizer, splitter, sweeper, worker, HandlerError, SplitOutcome};
pub use keys::decode_s3_key;
pub use role::{main_from_env, Role};

/// What a function needs: the pipeline on AWS adapters and its settings.
pub struct Deps {
    pub pipeline: Pipeline,
    pub default_spec: Spec,
    pub sweep: SweepPolicy,
    pub faults: faults::Faults,
}

/// The vCPUs Lambda gives the function: one per 1,769 MB of memory
/// (`AWS_LAMBDA_FUNCTION_MEMORY_SIZE`; 10,240 MB is six).
fn vcpus() -> usize {
    let mb: f64 = env_or("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", 1769.0);
    (mb / 1769.0).round().max(1.0) as usize
}

/// Where reducers spill (`SPILL_DIR`, else the system's temp dir: `/tmp`),
/// cleared of what an earlier, killed invocation left: an environment runs
/// one invocation at a time, and this runs before its first.
fn spill_dir() -> std::path::PathBuf {
    let dir = std::env::var_os("SPILL_DIR").map(Into::into).unwrap_or_else(std::env::temp_dir);
    fanfold_pipeline::clear_stale_spills(&dir);
    dir
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn required(name: &str) -> Result<String, lambda_runtime::Error> {
    std::env::var(name).map_err(|_| format!("environment variable {name} is not set").into())
}

/// Builds the dependencies from the environment (once per cold start).
pub async fn deps_from_env() -> Result<Deps, lambda_runtime::Error> {
    Ok(build_from_env().await?.0)
}

/// [`deps_from_env`], and the bucket itself (the API presigns URLs with it).
async fn build_from_env() -> Result<(Deps, Arc<S3Store>), lambda_runtime::Error> {
    let config = fanfold_aws::sdk_config().await;
    let rt = tokio::runtime::Handle::current();
    let bucket = required("BUCKET")?;
    let store = Arc::new(S3Store::new(&config, &bucket, rt.clone()));
    let jobs = Arc::new(DynamoJobStore::new(&config, required("TABLE")?, rt.clone()));
    let faults = faults::Faults::from_env(store.clone(), jobs.clone());
    let lambda = LambdaDispatcher::new(
        &config,
        std::env::var("WORKER_FUNCTION").unwrap_or_default(),
        std::env::var("FINALIZER_FUNCTION").unwrap_or_default(),
        rt.clone(),
    );
    let dispatcher: Arc<dyn Dispatcher> =
        if faults.duplicate_tasks { Arc::new(faults::Twice(lambda)) } else { Arc::new(lambda) };
    let default_spec = match std::env::var("DEFAULT_SPEC") {
        Ok(t) if !t.trim().is_empty() => Spec::from_json(&t).map_err(|e| format!("DEFAULT_SPEC: {e}"))?,
        _ => Spec::default(),
    };
    let dispatch_ms = env_or("DISPATCH_SECONDS", 60u64).max(1) * 1000;
    let mut pipeline = Pipeline::new(
        store.clone(),
        store.clone(),
        jobs,
        dispatcher,
        Layout::default(),
        Config {
            chunk_size: env_or("CHUNK_SIZE", Config::default().chunk_size).max(1),
            inline_limit: env_or("INLINE_LIMIT", Config::default().inline_limit),
            read_whole: env_or("READ_WHOLE", Config::default().read_whole),
            range_bytes: env_or("RANGE_BYTES", Config::default().range_bytes).max(1),
            lease_ms: env_or("LEASE_SECONDS", 900u64) * 1000,
            dataset_quiet_ms: env_or("DATASET_QUIET_SECONDS", 60u64) * 1000,
            // The bucket's lifecycle rule removes kept scans after 30 days
            // (and DynamoDB's TTL their job records): a day's margin.
            scan_keep_ms: Some(29 * 86_400_000),
            dispatch_lease_ms: dispatch_ms,
            bucket,
            scan_threads: env_or("SCAN_THREADS", vcpus()).max(1),
            read_streams: env_or("READ_STREAMS", 4usize).max(1),
            read_block: env_or("READ_BLOCK", 8u64 << 20).max(1),
            // /tmp (the function's EphemeralStorage); what a killed reducer
            // left there is removed before this environment runs another.
            spill_dir: spill_dir(),
            glue_database: std::env::var("GLUE_DATABASE")
                .ok()
                .filter(|d| !d.is_empty())
                .unwrap_or_else(|| Config::default().glue_database),
            ..Config::default()
        },
    );
    pipeline.faults = faults.any().then(|| Arc::new(faults.clone()) as Arc<dyn fanfold_pipeline::FaultPoints>);
    // A DONE job's table, in the Glue database GLUE_DATABASE (if set).
    pipeline.catalog = std::env::var("GLUE_DATABASE").ok().filter(|d| !d.is_empty()).map(|_| {
        Arc::new(fanfold_aws::GlueCatalog::new(&config, rt.clone())) as Arc<dyn fanfold_pipeline::athena::TableCatalog>
    });
    // Job ends go to EventBridge unless EVENT_BUS is empty.
    pipeline.notifier = std::env::var("EVENT_BUS").ok().filter(|b| !b.is_empty()).map(|bus| {
        Arc::new(fanfold_aws::EventBridgeNotifier::new(&config, bus, rt.clone()))
            as Arc<dyn fanfold_pipeline::notify::Notifier>
    });
    let sweep = SweepPolicy {
        stale_ms: env_or("STALE_SECONDS", 1200u64) * 1000,
        dispatch_ms,
        max_sweeps: env_or("MAX_SWEEPS", 3u32),
        orphaned: false,
    };
    Ok((Deps { pipeline, default_spec, sweep, faults }, store))
}

/// JSON log lines, each with the invocation's span (request id and job),
/// and the step figures as EMF lines ([`emf`]).
fn init_logs() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,aws=warn,hyper=warn".into());
    let not_metrics = tracing_subscriber::filter::filter_fn(|m| m.target() != fanfold_pipeline::metrics::TARGET);
    let logs = tracing_subscriber::fmt::layer()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .without_time()
        .with_filter(not_metrics);
    tracing_subscriber::registry().with(filter).with(logs).with(emf::Emf).init();
}

thread_local! {
    /// The request id of the invocation this thread runs.
    static REQUEST_ID: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// The request id of the invocation the calling thread runs.
fn request_id() -> String {
    REQUEST_ID.with(|r| r.borrow().clone())
}

/// Serves `handler` for events of type `E` (JSON logs, clients built once).
pub async fn run<E, F>(handler: F) -> Result<(), lambda_runtime::Error>
where
    E: DeserializeOwned + Send + 'static,
    F: Fn(E, &Deps, &str) -> Result<serde_json::Value, HandlerError> + Send + Sync + Copy + 'static,
{
    init_logs();
    let deps = Arc::new(deps_from_env().await?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<E>| {
        let deps = deps.clone();
        let request = event.context.request_id.clone();
        serve(request, move |request| handler(event.payload, &deps, request))
    }))
    .await
}

/// Presigned S3 URLs for the API's download and upload links.
struct S3Links(Arc<S3Store>);

impl fanfold_api::Links for S3Links {
    fn download(&self, key: &str) -> Result<String, fanfold_pipeline::StoreError> {
        self.0.presign_get(key, fanfold_api::LINK_SECONDS)
    }
    fn upload(&self, key: &str) -> Result<String, fanfold_pipeline::StoreError> {
        self.0.presign_put(key, fanfold_api::LINK_SECONDS)
    }
}

/// The `api` function: the jobs API router behind API Gateway (HTTP API,
/// payload 2.0). Auth is the HTTP API's JWT authorizer, in front.
pub async fn run_api() -> Result<(), lambda_runtime::Error> {
    init_logs();
    let (deps, s3) = build_from_env().await?;
    let api = fanfold_api::Api {
        // API Gateway buffers a response for at most 29 s: an event stream
        // there is one snapshot of the job's changes in 25 s.
        stream_for: std::time::Duration::from_secs(25),
        pipeline: Arc::new(deps.pipeline),
        links: Arc::new(S3Links(s3)),
        default_spec: deps.default_spec,
        token: None,
        files: None,
    };
    lambda_http::run(fanfold_api::router(Arc::new(api))).await
}

/// Runs a handler on a blocking thread, inside the invocation's span: every
/// log line it writes has the request id, and the job once the handler
/// records it.
async fn serve<F>(request: String, f: F) -> Result<serde_json::Value, lambda_runtime::Diagnostic>
where
    F: FnOnce(&str) -> Result<serde_json::Value, HandlerError> + Send + 'static,
{
    let span = tracing::info_span!("invocation", request_id = %request, job = tracing::field::Empty);
    let run = move || {
        REQUEST_ID.with(|r| r.borrow_mut().clone_from(&request));
        span.in_scope(|| f(&request))
    };
    match tokio::task::spawn_blocking(run).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            tracing::error!(error = %e, retryable = e.retryable, "invocation failed");
            Err(e.into())
        }
        // A bug, not the data: a retry (on another environment) may get past it.
        Err(join) => Err(HandlerError { message: format!("handler panicked: {join}"), retryable: true }.into()),
    }
}
