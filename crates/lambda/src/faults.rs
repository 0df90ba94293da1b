//! Fault injection for the end-to-end tests, through configuration.
//!
//! `FANFOLD_FAULTS` is a comma-separated list of `fault@substring`: the
//! fault applies to jobs whose source key contains `substring` (so one
//! deployed stack runs healthy and faulty jobs side by side):
//!
//! - `worker-fail@S`: a worker fails after storing its partial and before
//!   marking the chunk done, once per chunk (Lambda's retry then succeeds);
//! - `finalizer-crash@S`: a reducer's process dies after writing the first
//!   result part of its key range, once per job (the range's lease keeps
//!   retries out; the sweeper finishes the job once the lease expires);
//! - `dispatch-crash@S`: a dispatcher's process (the splitter's, for the
//!   first slice) dies after sending the first 100 chunk tasks of its slice
//!   and before recording it, once per job (the slice's lease keeps
//!   retries out until it runs out; the sweeper then has it resumed);
//! - `slow-chunks@S`: every worker takes a second longer (it sleeps after
//!   storing its partial), so a test can watch a job while it runs;
//! - `duplicate-tasks`: every task is dispatched twice.
//!
//! "Once" is remembered in marker objects under `_fanfold/faults/`, so it
//! holds across processes and retries.

use std::sync::Arc;

use fanfold_pipeline::{Dispatcher, FaultPoints, JobStore, ObjectStore, PipelineError, StoreError, Task};

#[derive(Default, Clone)]
pub struct Faults {
    worker_fail: Option<String>,
    finalizer_crash: Option<String>,
    dispatch_crash: Option<String>,
    slow_chunks: Option<String>,
    pub duplicate_tasks: bool,
    store: Option<Arc<dyn ObjectStore>>,
    jobs: Option<Arc<dyn JobStore>>,
}

impl Faults {
    pub fn parse(spec: &str, store: Option<Arc<dyn ObjectStore>>, jobs: Option<Arc<dyn JobStore>>) -> Faults {
        let mut f = Faults { store, jobs, ..Faults::default() };
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, pattern) = item.split_once('@').unwrap_or((item, ""));
            match name {
                "worker-fail" => f.worker_fail = Some(pattern.to_string()),
                "finalizer-crash" => f.finalizer_crash = Some(pattern.to_string()),
                "dispatch-crash" => f.dispatch_crash = Some(pattern.to_string()),
                "slow-chunks" => f.slow_chunks = Some(pattern.to_string()),
                "duplicate-tasks" => f.duplicate_tasks = true,
                other => tracing::warn!(fault = other, "unknown fault ignored"),
            }
        }
        f
    }

    pub fn from_env(store: Arc<dyn ObjectStore>, jobs: Arc<dyn JobStore>) -> Faults {
        Faults::parse(&std::env::var("FANFOLD_FAULTS").unwrap_or_default(), Some(store), Some(jobs))
    }

    pub fn any(&self) -> bool {
        self.worker_fail.is_some()
            || self.finalizer_crash.is_some()
            || self.dispatch_crash.is_some()
            || self.slow_chunks.is_some()
    }

    fn source_matches(&self, pattern: &str, job: &str) -> bool {
        let Some(jobs) = &self.jobs else { return false };
        jobs.get_job(job).ok().flatten().is_some_and(|j| j.source.key.contains(pattern))
    }

    /// Whether `pattern` matches the job's source key and the marker is new.
    fn first_time(&self, pattern: &Option<String>, job: &str, marker: &str) -> bool {
        let (Some(pattern), Some(store)) = (pattern, &self.store) else { return false };
        if !self.source_matches(pattern, job) {
            return false;
        }
        let marker = format!("_fanfold/faults/{job}/{marker}");
        if store.head(&marker).is_ok() {
            return false;
        }
        store.put(&marker, b"1").is_ok()
    }
}

impl FaultPoints for Faults {
    fn chunk_stored(&self, job: &str, chunk: u32) -> Result<(), PipelineError> {
        if self.slow_chunks.as_deref().is_some_and(|p| self.source_matches(p, job)) {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
        if self.first_time(&self.worker_fail, job, &format!("worker-{chunk}")) {
            tracing::warn!(job, chunk, "injected fault: worker fails mid-chunk");
            return Err(PipelineError::Store(StoreError::Other {
                message: format!("injected fault: worker failed mid-chunk {chunk}"),
                retryable: true,
            }));
        }
        Ok(())
    }

    fn chunks_dispatched(&self, job: &str, slice: u32, sent: u32) {
        if sent <= fanfold_pipeline::PROGRESS_EVERY && self.first_time(&self.dispatch_crash, job, "dispatch") {
            tracing::warn!(job, slice, sent, "injected fault: a dispatcher dies mid-slice");
            std::process::exit(137);
        }
    }

    fn part_written(&self, job: &str, range: usize, part: usize) {
        if part == 0 && self.first_time(&self.finalizer_crash, job, "finalizer") {
            tracing::warn!(job, range, "injected fault: a reducer dies after writing its first part");
            std::process::exit(137);
        }
    }
}

/// Dispatches every task twice (at-least-once delivery, exaggerated).
pub struct Twice<D>(pub D);

impl<D: Dispatcher> Dispatcher for Twice<D> {
    fn dispatch(&self, tasks: Vec<Task>) -> Result<(), StoreError> {
        let doubled: Vec<Task> = tasks.iter().flat_map(|t| [t.clone(), t.clone()]).collect();
        self.0.dispatch(doubled)
    }
}
