//! The steps of a job, each in its own file:
//!
//! - [`submit`](Pipeline::submit) and [`split`](Pipeline::split): record the
//!   job, read the header, cut the data into chunks;
//! - [`dispatch_slice`](Pipeline::dispatch_slice): send a slice of chunk
//!   tasks, a tree of dispatchers, resumable;
//! - [`run_chunk`](Pipeline::run_chunk): scan one range into a key-sorted,
//!   indexed partial; the call that completes the chunk count dispatches the plan;
//! - [`plan`](Pipeline::plan): check the quote chain and errors, sample the
//!   keys, choose the key ranges, dispatch one reducer per range;
//! - [`reduce`](Pipeline::reduce): merge one key range of every partial
//!   into that range's capped parts; the call that completes the range count commits;
//! - [`commit`](Pipeline::commit): manifest, summary, DONE;
//! - [`sweep`](Pipeline::sweep) and [`cancel`](Pipeline::cancel).

mod chunk;
mod commit;
mod dataset;
mod dispatch;
mod plan;
mod reduce;
mod slices;
mod stream;
mod submit;
mod sweep;
mod trigger;

use std::sync::Arc;
use std::time::Instant;

pub use dataset::{is_dataset_file, DatasetFile, Latest, FILES_PAGE, MAX_FILES};
pub use dispatch::{PROGRESS_EVERY, SLICE};
pub use reduce::clear_stale_spills;
pub use slices::{SliceAt, INDEX_READS_IN_FLIGHT, TABLE_ROWS};

use crate::config::{now_ms, Config, FaultPoints, Layout, PipelineError};
use crate::job::{Job, JobError, Status};
use crate::notify::{JobEvent, Notifier};
use crate::ports::{Dispatcher, JobStore, ObjectStore, StoreError, Task};

/// Tasks dispatched per call (a job of 100,000 chunks never builds one list of them).
const DISPATCH_BATCH: usize = 1000;
/// Records read per page from the job store.
const PAGE: usize = 1000;

/// The steps, bound to their ports.
pub struct Pipeline {
    /// Where inputs are read.
    pub input: Arc<dyn ObjectStore>,
    /// Where results and working objects go.
    pub output: Arc<dyn ObjectStore>,
    /// Job state.
    pub jobs: Arc<dyn JobStore>,
    /// Sends tasks.
    pub dispatcher: Arc<dyn Dispatcher>,
    /// Where results go.
    pub layout: Layout,
    /// Chunk size, leases, read-ahead.
    pub config: Config,
    /// Fault injection for tests; `None` in production.
    pub faults: Option<Arc<dyn FaultPoints>>,
    /// Told when a job ends; `None`: nobody.
    pub notifier: Option<Arc<dyn Notifier>>,
    /// Where a DONE job's table is made; `None`: nowhere.
    pub catalog: Option<Arc<dyn crate::athena::TableCatalog>>,
    /// Where dataset files' kept scans are (`Layout::scans`): the output
    /// store, unless a run keeps them elsewhere (`fanfold run DIR
    /// --keep-scans`, whose results go to a fresh directory every time).
    pub kept: Arc<dyn ObjectStore>,
}

impl Pipeline {
    /// A pipeline without fault points.
    pub fn new(
        input: Arc<dyn ObjectStore>,
        output: Arc<dyn ObjectStore>,
        jobs: Arc<dyn JobStore>,
        dispatcher: Arc<dyn Dispatcher>,
        layout: Layout,
        config: Config,
    ) -> Self {
        let kept = output.clone();
        Pipeline { input, output, jobs, dispatcher, layout, config, faults: None, notifier: None, catalog: None, kept }
    }

    fn job(&self, id: &str) -> Result<Job, PipelineError> {
        self.jobs.get_job(id)?.ok_or_else(|| PipelineError::UnknownJob(id.to_string()))
    }

    fn fail(&self, id: &str, error: JobError) -> Result<(), PipelineError> {
        tracing::warn!(job = id, error = %error.message, "job failed");
        if self.jobs.fail(id, &error, now_ms())? {
            failed_metric(id, &error);
            self.ended(id, None);
            self.tell_dataset(id)?;
        }
        self.cleanup_partials(id);
        Ok(())
    }

    /// Dispatches `tasks` in batches.
    fn dispatch_all(&self, tasks: impl IntoIterator<Item = Task>) -> Result<(), PipelineError> {
        let mut batch = Vec::with_capacity(DISPATCH_BATCH);
        for t in tasks {
            batch.push(t);
            if batch.len() == DISPATCH_BATCH {
                self.dispatcher.dispatch(std::mem::take(&mut batch))?;
            }
        }
        if !batch.is_empty() {
            self.dispatcher.dispatch(batch)?;
        }
        Ok(())
    }

    /// The task that scans chunk `index` of `job`, from `state`.
    fn chunk_task(job: &Job, index: u32, state: fanfold_engine::StartState) -> Option<Task> {
        Some(Task::Chunk { job: job.id.clone(), range: job.chunk(index)?, state, member: None })
    }

    /// Whether the job was cancelled or failed (long steps check this now
    /// and then, and stop).
    fn stopped(&self, id: &str) -> Result<bool, PipelineError> {
        Ok(matches!(self.jobs.status(id)?, Some(Status::Cancelled | Status::Failed) | None))
    }

    /// Deletes a job's result files; best effort.
    fn discard_results(&self, id: &str) {
        let prefix = self.layout.results(id);
        if !prefix.is_empty() {
            // (a local run writes into the user's directory: nothing to discard by prefix)
            self.delete_prefix(id, &prefix, "result file");
        }
    }

    /// Cancels a job that has not finished: its status becomes CANCELLED,
    /// workers stop at their next check, partial and result files are
    /// deleted. `false` if the job had already finished.
    pub fn cancel(&self, id: &str) -> Result<bool, PipelineError> {
        if !self.jobs.cancel(id, now_ms())? {
            return Ok(false);
        }
        self.ended(id, None);
        self.cleanup_partials(id);
        self.discard_results(id);
        Ok(true)
    }

    /// Tells the notifier that job `id` ended (this call ended it), then
    /// clears the job's `announce_pending`. An event that could not be sent
    /// is logged and sent again by the sweeper ([`Pipeline::announce`]).
    pub(crate) fn ended(&self, id: &str, groups: Option<u64>) {
        match self.job(id) {
            Ok(job) => {
                self.announce(&job, groups);
            }
            Err(e) => tracing::error!(job = id, error = %e, "could not send the job's end event"),
        }
    }

    /// Sends ended `job`'s end event (none for a dataset file's scan: its
    /// dataset tells) and clears its `announce_pending`; `true` if it did.
    pub(crate) fn announce(&self, job: &Job, groups: Option<u64>) -> bool {
        let sent = match &self.notifier {
            Some(n) if !matches!(job.source.kind, crate::job::InputKind::Scan { .. }) => {
                n.job_ended(&JobEvent::of(job, |k| self.output.uri(k), groups, now_ms()))
            }
            _ => Ok(()),
        };
        if let Err(e) = sent {
            tracing::error!(job = %job.id, error = %e, "could not send the job's end event (the sweeper sends it again)");
            return false;
        }
        match self.jobs.announced(&job.id) {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(job = %job.id, error = %e, "could not record that the job's end event went out");
                false
            }
        }
    }

    /// Starts a FAILED or CANCELLED job again, with the same object and
    /// spec: its last run's partials and results are deleted, the job store
    /// resets it ([`crate::JobStore::retry`]) and it is split again. Not for
    /// a job whose input was rejected (the same bytes fail the same way; a
    /// changed object is a new job, its id hashes the ETag), nor one whose
    /// object changed or is gone since.
    pub fn retry(&self, id: &str) -> Result<Retried, PipelineError> {
        let job = self.job(id)?;
        if !matches!(job.status, Status::Failed | Status::Cancelled) {
            return Ok(Retried::NotEnded(job.status));
        }
        if let Some(e) = job.error.as_ref().filter(|e| e.rejected) {
            return Ok(Retried::Rejected(e.clone()));
        }
        let dataset = matches!(job.source.kind, crate::job::InputKind::Dataset { .. });
        if dataset {
            // A dataset version: its folder must still hold exactly its files.
            if self.version_files(&job)?.is_none() {
                return Ok(Retried::ObjectChanged);
            }
        } else {
            match self.input.head(&job.source.key) {
                Ok(m) if m.etag == job.source.etag => {}
                Ok(_) | Err(StoreError::NotFound(_)) => return Ok(Retried::ObjectChanged),
                Err(e) => return Err(e.into()),
            }
        }
        // The job store's retry first: of two at once (a double click) only
        // the winner goes on, and the loser deletes nothing of its new run,
        // which sends no task before `split` below.
        if !self.jobs.retry(id, now_ms())? {
            return Ok(Retried::NotEnded(self.job(id)?.status)); // another retry won
        }
        self.cleanup_partials(id);
        self.discard_results(id);
        tracing::info!(job = id, "job started again");
        if dataset {
            self.restart_version(&self.job(id)?)?;
        } else {
            self.split(id)?;
        }
        Ok(Retried::Started)
    }

    /// Deletes the job's working objects (partials, plan); best
    /// effort (the sweeper retries).
    fn cleanup_partials(&self, id: &str) {
        match self.jobs.get_job(id) {
            Ok(Some(job)) if matches!(job.source.kind, crate::job::InputKind::Scan { .. }) => {
                if let Err(e) = self.kept.delete_prefix(&self.layout.kept(id)) {
                    tracing::warn!(job = id, error = %e, "could not delete every kept partial");
                }
            }
            _ => self.delete_prefix(id, &self.layout.partials(id), "partial"),
        }
    }

    /// The store of `job`'s partials: the kept one for a dataset file's scan.
    fn store_for(&self, job: &Job) -> &Arc<dyn ObjectStore> {
        match job.source.kind {
            crate::job::InputKind::Scan { .. } => &self.kept,
            _ => &self.output,
        }
    }

    /// Reads a small object of the kept store whole.
    fn read_kept(&self, key: &str) -> Result<Vec<u8>, PipelineError> {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut self.kept.get_range(key, 0, None)?, &mut v).map_err(StoreError::Io)?;
        Ok(v)
    }

    /// Deletes every object under `prefix`; best effort, failures are
    /// logged (the bucket's lifecycle rule expires what is left).
    fn delete_prefix(&self, id: &str, prefix: &str, what: &str) {
        if let Err(e) = self.output.delete_prefix(prefix) {
            tracing::warn!(job = id, prefix, error = %e, "could not delete every {what}");
        }
    }

    /// Reads a small object whole.
    fn read_object(&self, key: &str) -> Result<Vec<u8>, PipelineError> {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut self.output.get_range(key, 0, None)?, &mut v).map_err(StoreError::Io)?;
        Ok(v)
    }

    /// Fails `job` with a task's error that no retry will cure, or that
    /// the last of `attempts` attempts still gave: the one place where a
    /// failing task becomes its job's error (the local pool and the Lambda
    /// handlers both end here).
    pub fn fail_task(&self, job: &str, e: &PipelineError, attempts: u32) -> Result<(), StoreError> {
        let message = if attempts > 1 { format!("{e} (after {attempts} attempts)") } else { e.to_string() };
        let error = JobError::internal(message);
        if self.jobs.fail(job, &error, now_ms())? {
            failed_metric(job, &error);
            self.ended(job, None);
            // A dataset file's scan: its versions learn it now, not at the next sweep.
            if let Err(e) = self.tell_dataset(job) {
                tracing::warn!(job, error = %e, "telling the scan's dataset versions");
            }
        }
        Ok(())
    }

    /// Runs one task (what a worker or the finalizer function does).
    pub fn run_task(&self, task: &Task, owner: &str) -> Result<(), PipelineError> {
        match task {
            Task::Chunk { job, range, state, member } => self.run_chunk(job, *range, *state, *member),
            Task::Dispatch { job, slice } => self.dispatch_slice(job, *slice, owner),
            Task::Plan { job } => self.plan(job, owner),
            Task::Reduce { job, range } => self.reduce(job, *range, owner),
            Task::Commit { job } => self.commit(job, owner),
        }
    }
}

/// Rate-limits a long step's checks for cancellation (a job-store read).
struct CancelCheck {
    last: Instant,
}

impl CancelCheck {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(1);

    fn new() -> Self {
        CancelCheck { last: Instant::now() }
    }

    fn due(&mut self) -> bool {
        let due = self.last.elapsed() >= Self::EVERY;
        if due {
            self.last = Instant::now();
        }
        due
    }
}

/// The figures of a job this call failed.
fn failed_metric(job: &str, error: &JobError) {
    tracing::info!(
        target: crate::metrics::TARGET,
        step = "fail",
        job,
        failed = 1u64,
        rejected = u64::from(error.rejected),
    );
}

/// What [`Pipeline::retry`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Retried {
    /// The job runs again.
    Started,
    /// The job has not ended (or ended DONE): nothing to retry.
    NotEnded(Status),
    /// The input was rejected; the same bytes would be again.
    Rejected(JobError),
    /// The object is not the version the job read (or is gone).
    ObjectChanged,
}
