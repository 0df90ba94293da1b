//! fanfold's local adapters and the one-machine run.
//!
//! - [`DirStore`]: an object store on a directory (keys can never escape it).
//! - [`MemoryJobStore`]: job state in memory, with the DynamoDB conditions.
//! - [`DbJobStore`]: the same, written through to an embedded database file.
//! - [`PoolDispatcher`]: a bounded pool of worker threads.
//! - [`run_file`]: `fanfold run` — the same pipeline steps as on AWS, with
//!   these adapters; [`run_dataset`]: the same over a folder of files.

mod db;
mod dir;
mod memory;
mod out_dir;
mod pool;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use db::DbJobStore;
pub use dir::{check_key, DirStore};
pub use memory::MemoryJobStore;
pub use out_dir::{OutDirError, MARKER as OUT_MARKER};
pub use pool::{Pool, PoolDispatcher, RunTask};

use fanfold_engine::{job_id, Spec};
use fanfold_pipeline::{
    Config, Job, JobStore, Layout, ObjectStore, Pipeline, PipelineError, ResultsAt, Status, Summary,
};

/// A local run's estimated result bytes per key range. Each range is
/// merged by its own reducer on a worker thread: one range leaves the final
/// merge to a single reducer whose fan-in re-encodes runs between threads,
/// and a 1 GB zipf file (a 55 MB result: one range at 128 MiB, two at this)
/// took 4.36 s instead of 4.08 on two cores. Much smaller ranges only add
/// files (bmat's 1 GB result is ~30 of them). The deployed default
/// (`RangeBytes`) is larger: there a range is a Lambda of its own.
pub const LOCAL_RANGE_BYTES: u64 = 32 << 20;

/// Options of a local run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Bytes per chunk (at most; see `even_waves`).
    pub chunk_size: u64,
    /// Shrink the chunks a little so that their count is a multiple of
    /// `workers`: a last wave with fewer chunks than workers leaves cores
    /// idle. The result is the same for any chunking.
    pub even_waves: bool,
    pub workers: usize,
    /// Default: `./fanfold-out/<job-id>/`.
    pub out_dir: Option<PathBuf>,
    /// Estimated result bytes per key range (see `Config::range_bytes`).
    /// Default [`LOCAL_RANGE_BYTES`].
    pub range_bytes: u64,
    /// Threads that scan one chunk (see `Config::scan_threads`).
    pub scan_threads: usize,
    /// A dataset run keeps its files' scans here (and their job records in
    /// `jobs.redb`), so that the next run over the folder scans only new
    /// and changed files; `None`: nothing is kept.
    pub keep_scans: Option<PathBuf>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            chunk_size: Config::default().chunk_size,
            even_waves: true,
            workers: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            out_dir: None,
            range_bytes: LOCAL_RANGE_BYTES,
            scan_threads: Config::default().scan_threads,
            keep_scans: None,
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
    OutDir(#[from] OutDirError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

/// The chunk size a run uses (see [`RunOptions::even_waves`]).
fn chunk_size(file_size: u64, opts: &RunOptions) -> u64 {
    let chunk = opts.chunk_size.max(1);
    let workers = opts.workers.max(1) as u64;
    if !opts.even_waves || file_size <= chunk {
        return chunk;
    }
    let waves = file_size.div_ceil(chunk.saturating_mul(workers));
    file_size.div_ceil(waves.saturating_mul(workers)).clamp(1, chunk)
}

/// Runs the whole job on this machine and waits for it. `progress` is
/// called with a snapshot of the job every few tens of milliseconds.
pub fn run_file(
    file: &Path,
    spec: &Spec,
    opts: &RunOptions,
    progress: impl FnMut(&Job),
) -> Result<RunOutcome, RunError> {
    let input_err = |message: String| RunError::Input { path: file.to_path_buf(), message };
    let meta = std::fs::metadata(file).map_err(|e| input_err(e.to_string()))?;
    if meta.is_dir() {
        return Err(input_err("is a directory, not a CSV file".into()));
    }
    if !meta.is_file() {
        // A FIFO or a device: opening one can block forever, and its size says nothing.
        return Err(input_err("is not a regular file (a pipe or a device?): save the data to a file first".into()));
    }
    let abs = file.canonicalize().map_err(|e| input_err(e.to_string()))?;
    let parent = abs.parent().ok_or_else(|| input_err("has no parent directory".into()))?;
    let name = abs.file_name().and_then(|n| n.to_str()).ok_or_else(|| input_err("file name is not UTF-8".into()))?;
    let input = Arc::new(DirStore::new(parent).map_err(|e| input_err(e.to_string()))?);
    let bucket = format!("file://{}", parent.display());
    let head = input.head(name).map_err(|e| input_err(e.to_string()))?;
    let id = job_id(&bucket, name, &head.etag, spec);

    let out_dir = opts.out_dir.clone().unwrap_or_else(|| PathBuf::from("fanfold-out").join(&id));
    // Results of an earlier run into the same directory would mix with ours;
    // only what a run wrote is removed, and never the input.
    out_dir::prepare(&out_dir, &abs)?;
    let size = meta.len();
    let jobs: Arc<dyn JobStore> = Arc::new(MemoryJobStore::new());
    run_in(input, bucket, &out_dir, chunk_size(size, opts), opts, (jobs, None), progress, |p| p.submit(name, spec))
}

/// Runs one job over every CSV file of folder `dir` (a dataset: see
/// `fanfold_pipeline`'s dataset steps), or over those whose name matches
/// `pattern` (`*.csv`), and waits for it. The result is that of the files'
/// concatenation in name order.
pub fn run_dataset(
    dir: &Path,
    pattern: Option<&glob::Pattern>,
    spec: &Spec,
    opts: &RunOptions,
    progress: impl FnMut(&Job),
) -> Result<RunOutcome, RunError> {
    let input_err = |message: String| RunError::Input { path: dir.to_path_buf(), message };
    let abs = dir.canonicalize().map_err(|e| input_err(e.to_string()))?;
    if !abs.is_dir() {
        return Err(input_err("is not a directory".into()));
    }
    let input = Arc::new(DirStore::new(&abs).map_err(|e| input_err(e.to_string()))?);
    let bucket = format!("file://{}", abs.display());
    let mut files = Vec::new();
    let mut total = 0u64;
    for m in input.list("").map_err(|e| input_err(e.to_string()))? {
        let chosen = pattern.is_none_or(|p| p.matches(&m.key));
        if !m.key.contains('/') && fanfold_pipeline::is_dataset_file(&m.key) && chosen {
            total += m.size;
            files.push(m);
        }
    }
    let Some(first) = files.iter().min_by(|a, b| a.key.cmp(&b.key)) else {
        let which = pattern.map_or("CSV files".to_string(), |p| format!("files matching {}", p.as_str()));
        return Err(input_err(format!("holds no {which}")));
    };
    // The version's id, as the pipeline will derive it, names the default
    // output directory.
    let out_dir = match &opts.out_dir {
        Some(d) => d.clone(),
        None => {
            use sha2::Digest;
            let mut h = sha2::Sha256::new();
            for f in &files {
                h.update(f.key.as_bytes());
                h.update(f.etag.as_bytes());
            }
            let short = hex::encode(&h.finalize()[..8]);
            PathBuf::from("fanfold-out").join(format!("dataset-{short}"))
        }
    };
    std::fs::create_dir_all(&out_dir).map_err(|source| RunError::Output { path: out_dir.clone(), source })?;
    if out_dir.canonicalize().map_err(|source| RunError::Output { path: out_dir.clone(), source })? == abs {
        return Err(input_err("is also the output directory: its results would be the next run's input".into()));
    }
    out_dir::prepare(&out_dir, &abs.join(&first.key))?;
    // One chunk size for every file, from the folder's total (each file is
    // cut on its own; a small file is one chunk).
    let chunk = chunk_size(total, opts);
    // Kept scans: their objects and job records in a directory of their own.
    let (jobs, kept): (Arc<dyn JobStore>, Option<Arc<dyn ObjectStore>>) = match &opts.keep_scans {
        None => (Arc::new(MemoryJobStore::new()), None),
        Some(d) => {
            let out_err = |source| RunError::Output { path: d.clone(), source };
            std::fs::create_dir_all(d).map_err(out_err)?;
            let db = d.join("jobs.redb");
            let jobs = DbJobStore::open(&db).map_err(|e| RunError::Input {
                path: db.clone(),
                message: format!("the kept scans' job database: {e} (is another run using it?)"),
            })?;
            (Arc::new(jobs), Some(Arc::new(DirStore::new(d).map_err(out_err)?)))
        }
    };
    run_in(input, bucket, &out_dir, chunk, opts, (jobs, kept), progress, |p| {
        p.submit_dataset("", spec, |name| pattern.is_none_or(|p| p.matches(name)))
    })
}

/// Runs the job `submit` records on a pipeline over `input`, writing into
/// `out_dir`, and waits for it.
#[allow(clippy::too_many_arguments)]
fn run_in(
    input: Arc<DirStore>,
    bucket: String,
    out_dir: &Path,
    chunk_size: u64,
    opts: &RunOptions,
    (jobs, kept): (Arc<dyn JobStore>, Option<Arc<dyn ObjectStore>>),
    mut progress: impl FnMut(&Job),
    submit: impl FnOnce(&Pipeline) -> Result<fanfold_pipeline::Submitted, PipelineError>,
) -> Result<RunOutcome, RunError> {
    let output =
        Arc::new(DirStore::new(out_dir).map_err(|source| RunError::Output { path: out_dir.to_path_buf(), source })?);
    let dispatcher = PoolDispatcher::new();
    let mut pipeline = Pipeline::new(
        input,
        output.clone(),
        jobs,
        Arc::new(dispatcher.clone()),
        Layout { results: ResultsAt::Root, ..Layout::default() },
        Config {
            chunk_size,
            bucket,
            range_bytes: opts.range_bytes.max(1),
            scan_threads: opts.scan_threads.max(1),
            // With kept scans the job store outlives the run: this run's
            // version is its own (its results are in this run's directory).
            version_salt: if kept.is_some() { fanfold_pipeline::now_ms().to_string() } else { String::new() },
            // Beside the output, on its disk (a system temp dir may be RAM).
            spill_dir: out_dir.join("_fanfold"),
            ..Config::default()
        },
    );
    if let Some(k) = kept {
        pipeline.kept = k;
    }
    let pipeline = Arc::new(pipeline);
    let pool = dispatcher.start(&pipeline, opts.workers);
    let submitted = match submit(&pipeline) {
        Ok(s) => s,
        Err(e) => {
            pool.shutdown();
            return Err(e.into());
        }
    };
    let job = loop {
        let job = pipeline.jobs.get_job(&submitted.id).map_err(PipelineError::from)?.expect("submitted jobs exist");
        progress(&job);
        if job.status.is_final() {
            break job;
        }
        if pool.stopped() {
            return Err(PipelineError::Invalid(format!(
                "job {}: the worker threads stopped before it ended (the job is left {:?})",
                job.id, job.status
            ))
            .into());
        }
        std::thread::sleep(Duration::from_millis(40));
    };
    pool.shutdown();
    let summary = match job.status {
        Status::Done => {
            let key = &job.outputs.as_ref().expect("done jobs have outputs").summary;
            let bytes = std::fs::read(output.root().join(key))
                .map_err(|source| RunError::Output { path: out_dir.to_path_buf(), source })?;
            serde_json::from_slice(&bytes).ok()
        }
        _ => None,
    };
    // A dataset's file scans, unless kept elsewhere, go with the run.
    if matches!(job.source.kind, fanfold_pipeline::InputKind::Dataset { .. }) && opts.keep_scans.is_none() {
        let _ = std::fs::remove_dir_all(output.root().join("_fanfold"));
    }
    Ok(RunOutcome { job, out_dir: output.root().to_path_buf(), summary })
}

#[cfg(test)]
mod chunk_tests {
    use super::*;

    #[test]
    fn even_waves_give_every_worker_the_same_number_of_chunks() {
        let opts = |chunk_size, workers, even_waves| RunOptions {
            chunk_size,
            workers,
            even_waves,
            out_dir: None,
            range_bytes: 1 << 20,
            scan_threads: 1,
            keep_scans: None,
        };
        for (size, workers, want) in [(1_000_000_000u64, 2usize, 16u64), (1_000_000_000, 3, 15), (1_000_000_000, 4, 16)]
        {
            let c = chunk_size(size, &opts(64 << 20, workers, true));
            assert!(c <= 64 << 20);
            assert_eq!(size.div_ceil(c), want, "{size} bytes, {workers} workers: chunks of {c}");
        }
        // Never larger than asked; off when asked for a chunk size.
        for (size, chunk, workers) in [(999u64, 10u64, 3usize), (10_000, 7, 4), (5, 1, 2), (u64::MAX, u64::MAX / 2, 7)]
        {
            let c = chunk_size(size, &opts(chunk, workers, true));
            assert!((1..=chunk).contains(&c), "{size} {chunk} {workers}: {c}");
            assert_eq!(chunk_size(size, &opts(chunk, workers, false)), chunk);
        }
        // One chunk's worth stays one chunk.
        assert_eq!(chunk_size(100, &opts(1000, 2, true)), 1000);
    }
}
