//! fanfold's local adapters and the one-machine run.
//!
//! - [`DirStore`]: an object store on a directory (keys can never escape it).
//! - [`MemoryJobStore`]: job state in memory, with the DynamoDB conditions.
//! - [`DbJobStore`]: the same, written through to an embedded database file.
//! - [`PoolDispatcher`]: a bounded pool of worker threads.
//! - [`run_file`]: `fanfold run` — the same pipeline steps as on AWS, with
//!   these adapters.

mod db;
mod dir;
mod memory;
mod pool;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use db::DbJobStore;
pub use dir::{check_key, DirStore};
pub use memory::MemoryJobStore;
pub use pool::{Pool, PoolDispatcher};

use fanfold_engine::{job_id, Spec};
use fanfold_pipeline::{Config, Job, Layout, ObjectStore, Pipeline, PipelineError, Status, Summary};

/// Options of a local run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub chunk_size: u64,
    pub workers: usize,
    /// Default: `./fanfold-out/<job-id>/`.
    pub out_dir: Option<PathBuf>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            chunk_size: Config::default().chunk_size,
            workers: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            out_dir: None,
        }
    }
}

/// How a local run ended.
#[derive(Debug)]
pub struct RunOutcome {
    pub job: Job,
    pub out_dir: PathBuf,
    pub summary: Option<Summary>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{path}: {message}")]
    Input { path: PathBuf, message: String },
    #[error("output directory {path}: {source}")]
    Output { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

/// Runs the whole job on this machine and waits for it. `progress` is
/// called with a snapshot of the job every few tens of milliseconds.
pub fn run_file(
    file: &Path,
    spec: &Spec,
    opts: &RunOptions,
    mut progress: impl FnMut(&Job),
) -> Result<RunOutcome, RunError> {
    let input_err = |message: String| RunError::Input { path: file.to_path_buf(), message };
    let meta = std::fs::metadata(file).map_err(|e| input_err(e.to_string()))?;
    if meta.is_dir() {
        return Err(input_err("is a directory, not a CSV file".into()));
    }
    let abs = file.canonicalize().map_err(|e| input_err(e.to_string()))?;
    let parent = abs.parent().ok_or_else(|| input_err("has no parent directory".into()))?;
    let name = abs.file_name().and_then(|n| n.to_str()).ok_or_else(|| input_err("file name is not UTF-8".into()))?;
    let input = Arc::new(DirStore::new(parent).map_err(|e| input_err(e.to_string()))?);
    let bucket = format!("file://{}", parent.display());
    let head = input.head(name).map_err(|e| input_err(e.to_string()))?;
    let id = job_id(&bucket, name, &head.etag, spec);

    let out_dir = opts.out_dir.clone().unwrap_or_else(|| PathBuf::from("fanfold-out").join(&id));
    let output =
        Arc::new(DirStore::new(&out_dir).map_err(|source| RunError::Output { path: out_dir.clone(), source })?);
    // Results of an earlier run into the same directory would mix with ours.
    for old in
        output.list("").map_err(|e| RunError::Output { path: out_dir.clone(), source: std::io::Error::other(e) })?
    {
        let k = &old.key;
        if (k.starts_with("part-") && k.ends_with(".csv")) || k == "manifest.json" || k == "summary.json" {
            output
                .delete(k)
                .map_err(|e| RunError::Output { path: out_dir.clone(), source: std::io::Error::other(e) })?;
        }
    }

    let dispatcher = PoolDispatcher::new();
    let jobs = Arc::new(MemoryJobStore::new());
    let pipeline = Arc::new(Pipeline {
        input,
        output: output.clone(),
        jobs: jobs.clone(),
        dispatcher: Arc::new(dispatcher.clone()),
        layout: Layout { results: String::new(), partials: "_fanfold/partials/{job}/".into() },
        config: Config { chunk_size: opts.chunk_size.max(1), bucket, ..Config::default() },
        faults: None,
    });
    let pool = dispatcher.start(&pipeline, opts.workers);
    let submitted = pipeline.submit(name, spec)?;
    let job = loop {
        let job = pipeline.jobs.get_job(&submitted.id).map_err(PipelineError::from)?.expect("submitted jobs exist");
        progress(&job);
        if job.status.is_final() {
            break job;
        }
        std::thread::sleep(Duration::from_millis(40));
    };
    pool.shutdown();
    let summary = match job.status {
        Status::Done => {
            let key = &job.outputs.as_ref().expect("done jobs have outputs").summary;
            let bytes = std::fs::read(output.root().join(key))
                .map_err(|source| RunError::Output { path: out_dir.clone(), source })?;
            serde_json::from_slice(&bytes).ok()
        }
        _ => None,
    };
    Ok(RunOutcome { job, out_dir: output.root().to_path_buf(), summary })
}
