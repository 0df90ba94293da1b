//! What the steps are told: where things go, how big things are, when the
//! sweeper steps in, and the errors and records they share.

use std::time::{SystemTime, UNIX_EPOCH};

use fanfold_engine::{BadRow, Error as EngineError, TopGroup};
use serde::{Deserialize, Serialize};

use crate::job::OutputPart;
use crate::ports::StoreError;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A lease owner no other call takes: `what`, the process, a counter and the time.
pub fn unique_owner(what: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{what}-{}-{n}-{}", std::process::id(), now_ms())
}

/// Why `key` does not start a job when it appears in the bucket, if it
/// does not: only data files under `incoming/` do.
pub fn incoming_skip_reason(key: &str) -> Option<&'static str> {
    if !key.starts_with("incoming/") {
        Some("outside incoming/")
    } else if key.ends_with('/') || key.rsplit('/').next() == Some("_spec.json") {
        Some("not a data file")
    } else {
        None
    }
}

/// Where results and the job's working objects go. `{job}` is replaced by
/// the job id.
#[derive(Clone, Debug)]
pub struct Layout {
    /// Where a job's results go.
    pub results: ResultsAt,
    /// The prefix of the job's working objects.
    pub partials: String,
    /// The prefix of a dataset file's kept scan (its partials, totals, key
    /// sample and sketch): apart from the working objects, which the
    /// bucket's lifecycle rule removes after a week.
    pub scans: String,
}

/// Where a job's results go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResultsAt {
    /// Under a prefix of their own: `{job}` in the template becomes the
    /// job id (`results/{job}/`), so one store holds many jobs' results.
    PerJob(String),
    /// At the store's root: the store is one run's output directory
    /// (`fanfold run --out DIR`).
    Root,
}

impl Default for Layout {
    /// The bucket layout of `docs/architecture.md`.
    fn default() -> Self {
        Layout {
            results: ResultsAt::PerJob("results/{job}/".into()),
            partials: "_fanfold/partials/{job}/".into(),
            scans: "_fanfold/scans/{job}/".into(),
        }
    }
}

impl Layout {
    /// Where job `job`'s results go.
    pub fn results(&self, job: &str) -> String {
        match &self.results {
            ResultsAt::PerJob(template) => template.replace("{job}", job),
            ResultsAt::Root => String::new(),
        }
    }
    /// Where job `job`'s result files (the parts) go: `results/<job>/data/`,
    /// so that a table over the prefix (Athena reads every object under its
    /// location) holds the parts and nothing else; the manifest and the
    /// summary are one level up. At the root of a run's output directory,
    /// the parts are beside them (a directory is not a table).
    pub fn data(&self, job: &str) -> String {
        match &self.results {
            ResultsAt::PerJob(_) => format!("{}data/", self.results(job)),
            ResultsAt::Root => String::new(),
        }
    }
    /// The prefix every job's results share (`results/`), if they have one.
    pub fn results_root(&self) -> Option<&str> {
        match &self.results {
            ResultsAt::PerJob(template) => template.split("{job}").next().filter(|r| !r.is_empty()),
            ResultsAt::Root => None,
        }
    }
    /// Everything a job keeps while it runs: deleted when it ends.
    pub fn partials(&self, job: &str) -> String {
        self.partials.replace("{job}", job)
    }
    /// Everything job `job` keeps: its working prefix, or for a dataset
    /// file's scan its kept prefix.
    pub fn work(&self, job: &crate::job::Job) -> String {
        match job.source.kind {
            crate::job::InputKind::Scan { .. } => self.kept(&job.id),
            _ => self.partials(&job.id),
        }
    }
    /// Where the kept scan `scan` is.
    pub fn kept(&self, scan: &str) -> String {
        self.scans.replace("{job}", scan)
    }
    /// The partial of `chunk` of the job whose objects are under `work`,
    /// scanned from `state` (a scan with a known state never overwrites the
    /// validated partial of another).
    pub fn partial(&self, work: &str, chunk: u32, state: fanfold_engine::StartState) -> String {
        format!("{work}{chunk:07}-{}", state.code())
    }
    /// The range plan (splitter keys).
    pub fn ranges(&self, job: &str) -> String {
        format!("{}plan/ranges", self.partials(job))
    }
    /// The totals of the scan, for the summary.
    pub fn scan_totals(&self, job: &str) -> String {
        format!("{}plan/totals.json", self.partials(job))
    }
    /// A file scan's sampled keys (a dataset's plan merges them).
    pub fn scan_sample(&self, scan: &str) -> String {
        format!("{}plan/sample", self.kept(scan))
    }
    /// A file scan's key sketch.
    pub fn scan_sketch(&self, scan: &str) -> String {
        format!("{}plan/sketch", self.kept(scan))
    }
    /// A file scan's totals.
    pub fn kept_totals(&self, scan: &str) -> String {
        format!("{}plan/totals.json", self.kept(scan))
    }
    /// Page `page` of a dataset version's file list.
    pub fn dataset_files(&self, job: &str, page: u32) -> String {
        format!("{}files/{page:05}.json", self.partials(job))
    }
    /// Slice table `t` (chunks `t × 1000` on): where each range's slice of
    /// each partial is (`steps::slices`).
    pub fn slice_table(&self, job: &str, t: u32) -> String {
        format!("{}plan/slices/{t:05}", self.partials(job))
    }
    /// What range `r`'s reducer wrote.
    pub fn range_result(&self, job: &str, r: u32) -> String {
        format!("{}ranges/{r:05}.json", self.partials(job))
    }
}

#[derive(Clone, Debug)]
/// How a pipeline cuts, reads and leases; the same on every adapter.
pub struct Config {
    /// Bytes per chunk task.
    pub chunk_size: u64,
    /// Partials up to this size stay in the chunk record; larger ones are
    /// spilled to the object store. 8 KiB: a DynamoDB write unit is 1 KB at
    /// $0.625 per million, an S3 PUT $0.005 per thousand, so from 8 KB on
    /// the PUT is cheaper.
    pub inline_limit: usize,
    /// How long the planner's, committer's and a reducer's lease lasts.
    pub lease_ms: u64,
    /// How long a dispatcher's lease on its slice lasts; it is extended at
    /// every progress record (every 100 tasks, or a third of the lease if
    /// that comes first). A dispatcher that died is replaced once it runs out.
    pub dispatch_lease_ms: u64,
    /// How long one dispatcher sends before it hands the rest of its slice
    /// to a new dispatch task and returns: well inside the shortest timeout
    /// of a function that dispatches (the splitter's 120 s). On AWS a slice
    /// takes a second or two; an overloaded emulator is a hundred times slower.
    pub dispatch_budget_ms: u64,
    /// Bytes read per request beyond a chunk's end before asking for more.
    pub read_window: u64,
    /// Threads that scan one chunk, each a piece of it (a worker with several
    /// vCPUs: on Lambda, one per 1,769 MB of memory). 1 locally, where the
    /// worker pool already scans a chunk per core.
    pub scan_threads: usize,
    /// A chunk is cut into pieces of at least this many bytes.
    pub min_piece: u64,
    /// Ranged GETs in flight per scanned range (chunk or piece), each of
    /// `read_block` bytes: one S3 stream seldom fills a function's network.
    /// 1: one GET per window (a local file).
    pub read_streams: usize,
    /// Bytes per ranged GET of a read-ahead.
    pub read_block: u64,
    /// Bucket name recorded in the source (and hashed into job ids).
    pub bucket: String,
    /// Threads that merge groups of partials before a reducer's final merge
    /// (see `fan_in`); 1 merges on one thread. Default: the cores available.
    pub merge_threads: usize,
    /// Estimated result bytes per key range (see [`Config::range_count`]).
    pub range_bytes: u64,
    /// Input bytes per key range at most: big inputs get ranges even when
    /// their result is small, so no reducer reads too many partial bytes.
    pub range_input_bytes: u64,
    /// Key ranges at most.
    pub max_ranges: u32,
    /// The Glue database of the results' tables (`summary.json`'s `athena`).
    pub glue_database: String,
    /// Partials a reducer merges at once (K); with more chunks the merge has
    /// more levels. At most 2K streams are open in one reducer.
    pub merge_fan_in: usize,
    /// Spilled partials up to this size are read whole by a reducer (one
    /// GET); of larger ones it reads only its slice, found in the plan's
    /// slice tables (one GET) or else from the partial's index (two).
    pub read_whole: u64,
    /// Where reducers write their spills (the intermediate runs of a merge
    /// of more than K chunks): a local disk, Lambda's `/tmp` (its
    /// `EphemeralStorage`), never the object store.
    pub spill_dir: std::path::PathBuf,
    /// How long a dataset folder must be quiet (no file added, replaced or
    /// removed) before its new version starts (`steps::trigger`).
    pub dataset_quiet_ms: u64,
    /// A kept scan older than this is not used again (its file is scanned
    /// anew): on AWS a day less than the lifecycle rule that removes kept
    /// scans; `None` keeps them for as long as a version uses them.
    pub scan_keep_ms: Option<u64>,
    /// Mixed into dataset version ids when not empty: `fanfold run DIR
    /// --keep-scans` makes each run its own version (its results go to that
    /// run's directory) while the scans are shared.
    pub version_salt: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            chunk_size: 64 << 20,
            inline_limit: 8 * 1024,
            lease_ms: 15 * 60 * 1000,
            dispatch_lease_ms: 60 * 1000,
            dispatch_budget_ms: 30 * 1000,
            read_window: 8 << 20,
            scan_threads: 1,
            min_piece: 16 << 20,
            read_streams: 1,
            read_block: 8 << 20,
            bucket: "local".into(),
            merge_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            range_bytes: 128 << 20,
            range_input_bytes: 16 << 30,
            max_ranges: 1000,
            glue_database: "fanfold".into(),
            merge_fan_in: 256,
            read_whole: 256 * 1024,
            spill_dir: std::env::temp_dir(),
            dataset_quiet_ms: 30_000,
            scan_keep_ms: None,
            version_salt: String::new(),
        }
    }
}

impl Config {
    /// The number of key ranges for a job whose result is estimated at
    /// `result_bytes` from an input of `input_bytes`. Both come from the
    /// object and spec alone, so the ranges (and so the result files) are
    /// the same for every chunking and worker count.
    pub fn range_count(&self, result_bytes: f64, input_bytes: u64) -> usize {
        let by_result = (result_bytes / self.range_bytes.max(1) as f64).ceil();
        let by_input = (input_bytes as f64 / self.range_input_bytes.max(1) as f64).ceil();
        by_result.max(by_input).clamp(1.0, self.max_ranges.max(1) as f64) as usize
    }
}

/// A step failed for a reason that is not the input's fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    #[error(transparent)]
    /// An object or job store failed.
    Store(#[from] StoreError),
    #[error("job {0} not found")]
    /// No job has this id.
    UnknownJob(String),
    #[error("{0}")]
    /// The engine refused the input or a partial.
    Engine(#[from] EngineError),
    #[error("{0}")]
    /// Stored state that cannot be (a bug, or a store edited by hand).
    Invalid(String),
}

impl PipelineError {
    /// Whether running the step again may help.
    pub fn retryable(&self) -> bool {
        match self {
            PipelineError::Store(e) => e.retryable(),
            PipelineError::Engine(EngineError::Partial(_) | EngineError::Output(_)) => true,
            _ => false,
        }
    }
}

/// When the sweeper steps in.
#[derive(Clone, Debug)]
pub struct SweepPolicy {
    /// A job with no progress for this long is stuck (make it longer than
    /// the worker's timeout).
    pub stale_ms: u64,
    /// A job still SPLITTING this long after it was created, or still
    /// RUNNING with slices not dispatched this long after it started, or
    /// MERGING with reducers that never started this long after the plan,
    /// is repaired then, not after `stale_ms`: these steps take seconds.
    pub dispatch_ms: u64,
    /// Repairs of one job in a row with no progress between them before it fails.
    pub max_sweeps: u32,
    /// Every active job is orphaned: the process that ran it is gone (a
    /// local server starting again), so nothing is waited for.
    pub orphaned: bool,
}

impl Default for SweepPolicy {
    fn default() -> Self {
        SweepPolicy { stale_ms: 20 * 60 * 1000, dispatch_ms: 60 * 1000, max_sweeps: 3, orphaned: false }
    }
}

/// `submit`'s answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submitted {
    /// The job id.
    pub id: String,
    /// `false`: the same source and spec were already known.
    pub new: bool,
}

/// `summary.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Summary {
    /// The job id.
    pub job_id: String,
    /// The input, as `bucket/key` or a path.
    pub source: String,
    /// The input's size.
    pub input_bytes: u64,
    /// How the input was compressed (`gzip`, `zstd`); absent when it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
    /// A compressed input's decoded size; absent when it was not compressed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoded_bytes: Option<u64>,
    /// Non-empty records read.
    pub rows_read: u64,
    /// Rows dropped by `where`.
    pub rows_filtered: u64,
    /// Bad rows left out (`skip` mode).
    pub rows_skipped: u64,
    /// Up to ten of them, with line, byte and column.
    pub bad_row_samples: Vec<BadRow>,
    /// Groups in the result.
    pub groups: u64,
    /// Chunk tasks the input was cut into.
    pub chunks: u64,
    /// Chunks scanned again from the known quote state.
    pub chunks_rerun: u32,
    /// Bytes of the chunks' partial aggregates (what the reducers read).
    #[serde(default)]
    pub partial_bytes: u64,
    /// Times the sweeper sent work again (a step that crashed or stalled).
    #[serde(default)]
    pub repairs: u32,
    /// The Athena table over the parts: its name and its statement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub athena: Option<AthenaTable>,
    /// Key ranges, each merged by its own reducer.
    #[serde(default)]
    pub ranges: u32,
    /// The result files, in key order.
    pub output_files: Vec<OutputPart>,
    /// The largest groups by the first aggregate (when it is numeric).
    #[serde(default)]
    pub top_groups: Vec<TopGroup>,
    /// A dataset's files, scanned and reused (absent for one file's job).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<DatasetFigures>,
    /// Where the time went.
    pub timings_ms: Timings,
}

/// The Athena table of a result (`summary.json`'s `athena`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AthenaTable {
    /// The Glue database.
    pub database: String,
    /// The table.
    pub table: String,
    /// `CREATE EXTERNAL TABLE …` (also `athena.sql` beside a local run's summary).
    pub ddl: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
/// A job's phases, in milliseconds.
pub struct Timings {
    /// From the job's creation to reading the header and cutting the chunks.
    pub split: u64,
    /// From the job's creation to the last chunk task sent.
    #[serde(default)]
    pub dispatch: u64,
    /// From the chunks' start to the last chunk done (the scan).
    pub chunks: u64,
    /// From the last chunk done to DONE (plan, reducers, commit).
    pub merge: u64,
    /// From creation to DONE.
    pub total: u64,
}

/// What the planner learned from the chunk records, kept for the summary.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ScanTotals {
    /// Non-empty records read.
    pub rows_read: u64,
    /// Rows dropped by `where`.
    pub rows_filtered: u64,
    /// Bad rows left out (`skip` mode).
    pub rows_skipped: u64,
    /// Up to ten of them.
    pub bad_row_samples: Vec<BadRow>,
    /// Chunk tasks.
    pub chunks: u64,
    /// Bytes of all partials (what the reducers read together).
    pub partial_bytes: u64,
    /// The key sketch's estimate of the number of groups.
    pub groups_estimate: u64,
    /// Bytes of the data (a compressed input's decoded bytes).
    #[serde(default)]
    pub data_bytes: u64,
    /// A dataset's files: how many were scanned for it and how many reused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<DatasetFigures>,
}

/// What a dataset version read (`summary.json`'s `dataset`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DatasetFigures {
    /// The folder.
    pub folder: String,
    /// Files in the version.
    pub files: u64,
    /// Files this version scanned (new or changed).
    pub files_scanned: u64,
    /// Their bytes.
    pub bytes_scanned: u64,
    /// Files whose kept scan it merged without reading them.
    pub files_reused: u64,
    /// Their bytes.
    pub bytes_reused: u64,
}

/// Places where the end-to-end tests inject failures. Production pipelines
/// have none.
pub trait FaultPoints: Send + Sync {
    /// After a chunk's partial is stored and before the chunk is marked done.
    fn chunk_stored(&self, _job: &str, _chunk: u32) -> Result<(), PipelineError> {
        Ok(())
    }
    /// After a dispatcher sent the first `sent` chunk tasks of slice `slice`.
    fn chunks_dispatched(&self, _job: &str, _slice: u32, _sent: u32) {}
    /// After a reducer finished writing part `part` of key range `range`.
    fn part_written(&self, _job: &str, _range: usize, _part: usize) {}
}
