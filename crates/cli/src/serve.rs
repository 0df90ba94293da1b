//! `fanfold serve`: the jobs API, the jobs page and a watched local bucket.
//!
//! DIR has the bucket's layout: files dropped into `DIR/incoming/` start jobs
//! (the S3 trigger's rules: `_spec.json` beside the file, or the default),
//! results go to `DIR/results/<job>/`. Job state is in `DIR/_fanfold/jobs.redb`
//! (durable; see `fanfold_local::DbJobStore`).
//!
//! - A file is picked up once its size and modification time have not
//!   changed for [`SETTLE`] (a copy in progress is not read half-way;
//!   uploads through the API appear in one rename anyway).
//! - On start, jobs that a previous run left unfinished are resumed: the
//!   sweep re-dispatches their missing work; a job swept more than
//!   `max_sweeps` times in a row without progress fails with the reason.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use fanfold_api::files::{LocalLinks, Signer};
use fanfold_api::Api;
use fanfold_engine::Spec;
use fanfold_local::{DbJobStore, DirStore, PoolDispatcher};
use fanfold_pipeline::{incoming_skip_reason, now_ms, Config, Layout, ObjectStore, Pipeline, SweepPolicy};

/// How long a dropped file must stay unchanged before it is picked up.
pub const SETTLE: Duration = Duration::from_millis(1000);
const POLL: Duration = Duration::from_millis(250);
const SWEEP_EVERY: Duration = Duration::from_secs(30);

pub struct ServeOptions {
    pub data: PathBuf,
    pub addr: SocketAddr,
    pub token: Option<String>,
    pub workers: usize,
    pub chunk_size: u64,
    pub spec: Spec,
    pub limits: crate::http::Limits,
    /// Where to POST each job's end, and the signing secret.
    pub webhook: Option<(String, Vec<u8>)>,
    /// How long a dataset folder must be quiet before its new version starts.
    pub dataset_quiet_ms: u64,
}

fn random_token() -> Result<String> {
    let mut b = [0u8; 16];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut b)?;
    Ok(hex::encode(b))
}

pub fn serve(opts: ServeOptions) -> Result<ExitCode> {
    let (token, generated) = match opts.token.clone().filter(|t| !t.is_empty()) {
        Some(t) => (t, false),
        None => (random_token().context("generating a token")?, true),
    };
    let store =
        Arc::new(DirStore::new(&opts.data).with_context(|| format!("opening data directory {}", opts.data.display()))?);
    std::fs::create_dir_all(opts.data.join("incoming"))?;
    let state_dir = opts.data.join("_fanfold");
    std::fs::create_dir_all(&state_dir)?;
    let db_path = state_dir.join("jobs.redb");
    let jobs = Arc::new(DbJobStore::open(&db_path).map_err(|e| {
        let m = e.to_string();
        if m.to_ascii_lowercase().contains("already open") {
            anyhow::anyhow!(
                "the job database {} is in use: is another fanfold serve using this directory?",
                db_path.display()
            )
        } else {
            anyhow::anyhow!(
                "the job database {} cannot be read ({m}): move it away to start with no jobs",
                db_path.display()
            )
        }
    })?);
    // Reducers spill beside the data, on its disk; no reducer runs yet, so
    // what a killed server left there goes.
    let spill_dir = opts.data.join("_fanfold");
    fanfold_pipeline::clear_stale_spills(&spill_dir);
    let dispatcher = PoolDispatcher::new();
    let mut pipeline = Pipeline::new(
        store.clone(),
        store.clone(),
        jobs,
        Arc::new(dispatcher.clone()),
        Layout::default(),
        Config {
            chunk_size: opts.chunk_size.max(1),
            dataset_quiet_ms: opts.dataset_quiet_ms,
            spill_dir: spill_dir.clone(),
            ..Config::default()
        },
    );
    pipeline.notifier = opts.webhook.clone().map(|(url, secret)| {
        Arc::new(crate::webhook::Webhook::start(url, secret, std::time::Duration::from_secs(1)))
            as Arc<dyn fanfold_pipeline::notify::Notifier>
    });
    let pipeline = Arc::new(pipeline);
    let _pool = dispatcher.start(&pipeline, opts.workers);

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let listener =
        rt.block_on(tokio::net::TcpListener::bind(opts.addr)).with_context(|| format!("listening on {}", opts.addr))?;
    let addr = listener.local_addr()?;
    let base_url = format!("http://{addr}");

    // Jobs a previous run left unfinished.
    let resumed = pipeline
        .sweep(now_ms(), &SweepPolicy { orphaned: true, ..SweepPolicy::default() })
        .context("resuming unfinished jobs")?;
    for line in &resumed {
        tell!("resumed {line}");
    }

    {
        let pipeline = pipeline.clone();
        let spec = opts.spec.clone();
        std::thread::Builder::new()
            .name("fanfold-watch".into())
            .spawn(move || watch(&pipeline, store.as_ref(), &spec))?;
    }

    let api = Arc::new(Api {
        stream_for: std::time::Duration::from_secs(600),
        pipeline,
        links: Arc::new(LocalLinks { base_url: base_url.clone(), signer: Signer::from_token(&token) }),
        default_spec: opts.spec,
        token: Some(token.clone()),
        files: Some(Signer::from_token(&token)),
    });
    say!("fanfold serve: {base_url}  data {}", opts.data.display());
    if generated {
        say!("token (generated; set --token or FANFOLD_TOKEN to keep one): {token}");
    }
    say!("jobs page: {base_url}/#token={token}");
    use std::io::Write;
    std::io::stdout().flush()?;
    rt.block_on(crate::http::serve(listener, fanfold_api::router(api), opts.limits, async {
        let _ = tokio::signal::ctrl_c().await;
    }));
    // Unfinished jobs stay in the database and resume on the next start.
    std::process::exit(0)
}

/// Watches `incoming/`: submits each settled data file once per content.
fn watch(pipeline: &Pipeline, store: &DirStore, spec: &Spec) {
    // key → (etag, first seen with that etag, submitted)
    let mut seen: HashMap<String, (String, Instant, bool)> = HashMap::new();
    let mut last_sweep = Instant::now();
    loop {
        std::thread::sleep(POLL);
        match store.list("incoming/") {
            Ok(objects) => {
                let now = Instant::now();
                // A file removed from a dataset folder is a change of its dataset.
                let present: std::collections::HashSet<&str> = objects.iter().map(|o| o.key.as_str()).collect();
                for gone in seen.keys().filter(|k| !present.contains(k.as_str())) {
                    if let Err(e) = pipeline.dataset_event(gone) {
                        tracing::warn!(key = gone, error = %e, "noting a removed file");
                    }
                }
                seen.retain(|k, _| present.contains(k.as_str()));
                for o in objects {
                    if incoming_skip_reason(&o.key).is_some() {
                        continue;
                    }
                    let e = seen.entry(o.key.clone()).or_insert_with(|| (o.etag.clone(), now, false));
                    if e.0 != o.etag {
                        *e = (o.etag.clone(), now, false); // still being written, or replaced
                    }
                    if e.2 || now.duration_since(e.1) < SETTLE {
                        continue;
                    }
                    // A dataset's file: its folder's next version, once the folder is quiet.
                    match pipeline.dataset_event(&o.key) {
                        Ok(true) => {
                            e.2 = true;
                            tracing::info!(key = o.key, "noted for its dataset's next version");
                            continue;
                        }
                        Ok(false) => {}
                        Err(err) => {
                            tracing::warn!(key = o.key, error = %err, "reading the folder's spec; will retry");
                            continue;
                        }
                    }
                    match pipeline.submit_object(&o.key, spec) {
                        Ok(s) => {
                            e.2 = true;
                            if s.new {
                                tracing::info!(key = o.key, job = s.id, "submitted");
                            }
                        }
                        Err(err) if err.retryable() => {
                            tracing::warn!(key = o.key, error = %err, "submit failed; will retry")
                        }
                        Err(err) => {
                            e.2 = true;
                            tracing::error!(key = o.key, error = %err, "cannot submit");
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "listing incoming/"),
        }
        match pipeline.start_due_datasets(now_ms()) {
            Ok(started) => started.iter().for_each(|l| tracing::info!("{l}")),
            Err(e) => tracing::warn!(error = %e, "starting dataset versions"),
        }
        if last_sweep.elapsed() >= SWEEP_EVERY {
            last_sweep = Instant::now();
            let policy = SweepPolicy { stale_ms: 10 * 60 * 1000, ..SweepPolicy::default() };
            if let Err(e) = pipeline.sweep(now_ms(), &policy) {
                tracing::warn!(error = %e, "sweep failed");
            }
        }
    }
}
