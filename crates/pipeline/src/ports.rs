//! The narrow ports the steps are written against. They are synchronous:
//! the engine is CPU-bound and synchronous, and an async adapter (the AWS
//! SDK) bridges with its runtime handle inside a blocking thread. Every
//! adapter runs the same contract suite ([`crate::contract`]): the local
//! ones in `fanfold-local`, the AWS ones against S3/DynamoDB-compatible
//! servers in `fanfold-aws`.

use std::io::{Read, Write};

use fanfold_engine::{ChunkRange, QuoteState, StartState};
use serde::{Deserialize, Serialize};

use crate::job::{ChunkRecord, Job, JobError, Outputs, Stage, Status, WorkRecord};

/// A stored object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// The object's key.
    pub key: String,
    /// Its size.
    pub size: u64,
    /// Changes whenever the content changes.
    pub etag: String,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
/// A failure of an object or job store.
pub enum StoreError {
    #[error("no object or item {0:?}")]
    /// No such object or item.
    NotFound(String),
    #[error("invalid key {key:?}: {reason}")]
    /// A key the store refuses (it would leave the store's root, say).
    InvalidKey {
        /// The key.
        key: String,
        /// Why it is refused.
        reason: &'static str,
    },
    #[error("{0}")]
    /// A local I/O error.
    Io(#[from] std::io::Error),
    /// The object is no longer the version a read asked for.
    #[error(
        "{key} changed after the job started (it was planned on ETag {etag}): a job never mixes two versions \
         of its input; submit the new version as a new job"
    )]
    /// The object is no longer the version a read asked for.
    Changed {
        /// The object's key.
        key: String,
        /// The version the job was planned on.
        etag: String,
    },
    #[error("{message}")]
    /// Anything else, and whether a retry may help.
    Other {
        /// What happened.
        message: String,
        /// Whether a retry may help.
        retryable: bool,
    },
}

impl StoreError {
    /// Whether trying again may help.
    pub fn retryable(&self) -> bool {
        match self {
            StoreError::NotFound(_) | StoreError::InvalidKey { .. } | StoreError::Changed { .. } => false,
            // What a retry cannot change: the same request fails the same way.
            // (Not NotFound: a local file can be missing for a moment while a
            // concurrent step renames or cleans up around it.)
            StoreError::Io(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::NotADirectory
                    | std::io::ErrorKind::IsADirectory
                    | std::io::ErrorKind::PermissionDenied
                    | std::io::ErrorKind::InvalidInput
                    | std::io::ErrorKind::InvalidFilename
                    | std::io::ErrorKind::Unsupported
            ),
            StoreError::Other { retryable, .. } => *retryable,
        }
    }
}

/// A streaming upload; nothing is visible under the key until `finish`.
pub trait ObjectWriter: Write + Send {
    /// Makes the object visible, whole.
    fn finish(self: Box<Self>) -> Result<(), StoreError>;
}

/// S3 or a directory.
pub trait ObjectStore: Send + Sync {
    /// The object's size and version.
    fn head(&self, key: &str) -> Result<ObjectMeta, StoreError>;
    /// Bytes `[start, end)` (`end = None`: to the end), streamed.
    fn get_range(&self, key: &str, start: u64, end: Option<u64>) -> Result<Box<dyn Read + Send>, StoreError>;
    /// [`Self::get_range`] of the version `etag` only (S3: `If-Match`):
    /// [`StoreError::Changed`] when the object is now another version. Every
    /// read of a job's input goes through this.
    fn get_range_of(
        &self,
        key: &str,
        etag: &str,
        start: u64,
        end: Option<u64>,
    ) -> Result<Box<dyn Read + Send>, StoreError>;
    /// Writes a whole object (replacing any).
    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StoreError>;
    /// A streaming upload to `key`.
    fn put_stream(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StoreError>;
    /// Objects whose key starts with `prefix`, in key order.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError>;
    /// Deleting a missing key is not an error.
    fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// Deletes every object whose key starts with `prefix`; returns how
    /// many. Bounded memory whatever their number (S3: a page of 1,000 keys
    /// at a time, one DeleteObjects request per page).
    fn delete_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        let objs = self.list(prefix)?;
        for o in &objs {
            self.delete(&o.key)?;
        }
        Ok(objs.len() as u64)
    }
    /// How a user (or a QuickSight manifest) addresses the object.
    fn uri(&self, key: &str) -> String;
}

/// The result of a conditional create.
#[derive(Debug)]
pub enum Created {
    /// The job was created.
    New,
    /// It existed already: here it is.
    Exists(Box<Job>),
}

/// Job, chunk and range state with the conditions that make every step
/// idempotent. Every call costs O(1) item size and writes, whatever the
/// number of chunks: chunk and range records are items of their own, and
/// the job record holds counters, never sets.
pub trait JobStore: Send + Sync {
    /// Creates the job unless a job with its id exists.
    fn create_job(&self, job: &Job) -> Result<Created, StoreError>;
    /// The job, if there is one.
    fn get_job(&self, id: &str) -> Result<Option<Job>, StoreError>;
    /// SPLITTING → RUNNING with the plan: `chunk_count` chunks, sent by
    /// `slice_count` dispatchers. `false` if the job was not SPLITTING.
    fn start_running(
        &self,
        id: &str,
        head: &fanfold_engine::Head,
        chunk_size: u64,
        chunk_count: u32,
        slice_count: u32,
        now_ms: u64,
    ) -> Result<bool, StoreError>;
    /// Stores (or replaces) a chunk's result, unless the chunk is done or
    /// waits for a scan with another start state ([`ChunkRecord::accepts`]).
    /// `false`: not stored.
    fn put_chunk(&self, id: &str, record: &ChunkRecord) -> Result<bool, StoreError>;
    /// Marks the chunk done and adds its rows and bytes to the job's
    /// counters, if its stored record is of a scan with `state` and it is not
    /// done yet. `Some(chunks done)` when this call marked it, `None` for a
    /// duplicate (or a stale scan).
    fn mark_done(
        &self,
        id: &str,
        chunk: u32,
        state: StartState,
        rows: u64,
        bytes: u64,
        now_ms: u64,
    ) -> Result<Option<u32>, StoreError>;
    /// Up to `limit` chunk records with index > `after`, in index order.
    fn chunk_page(&self, id: &str, after: Option<u32>, limit: usize) -> Result<Vec<ChunkRecord>, StoreError>;
    /// Takes the job's lease (held by the planner and the committer) if
    /// nobody holds an unexpired one and the job is RUNNING or MERGING.
    /// Moves it to MERGING.
    fn take_lease(&self, id: &str, owner: &str, now_ms: u64, until_ms: u64) -> Result<bool, StoreError>;
    /// Holding the lease: the chunk must be scanned again with `state`
    /// (its guess was wrong): it is no longer done, its counters are taken
    /// back and only a scan with that state is accepted.
    fn reopen_chunk(&self, id: &str, owner: &str, chunk: u32, state: QuoteState) -> Result<bool, StoreError>;
    /// Holding the lease: releases it and goes back to RUNNING (chunks are
    /// to be scanned again).
    fn release_lease(&self, id: &str, owner: &str) -> Result<bool, StoreError>;
    /// Holding the lease: records the range plan (`ranges` key ranges, none
    /// done) and releases the lease; the job stays MERGING.
    fn start_merging(&self, id: &str, owner: &str, ranges: u32, now_ms: u64) -> Result<bool, StoreError>;
    /// Takes the lease of `stage`'s record `index` (a dispatch slice or a
    /// key range) if it is not done and nobody else holds an unexpired one
    /// (the holder may take it again). The job must be RUNNING for a
    /// dispatch and MERGING for a reduce, and `index` below the stage's count.
    fn take_work(
        &self,
        id: &str,
        stage: Stage,
        index: u32,
        owner: &str,
        now_ms: u64,
        until_ms: u64,
    ) -> Result<bool, StoreError>;
    /// Holding the lease: records how far the holder got and extends the
    /// lease to `until_ms`; writes the record alone, never the job (many
    /// dispatchers do this at once). `false` if the lease was lost or the
    /// record is done (the holder then stops).
    #[allow(clippy::too_many_arguments)]
    fn work_progress(
        &self,
        id: &str,
        stage: Stage,
        index: u32,
        owner: &str,
        next: u32,
        now_ms: u64,
        until_ms: u64,
    ) -> Result<bool, StoreError>;
    /// Holding the lease: marks the record done and counts it.
    /// `Some(done count)` when this call did, `None` otherwise.
    fn work_done(
        &self,
        id: &str,
        stage: Stage,
        index: u32,
        owner: &str,
        now_ms: u64,
    ) -> Result<Option<u32>, StoreError>;
    /// Up to `limit` records of `stage` with index > `after`, in index
    /// order (slices and ranges whose task never started have none).
    fn work_page(
        &self,
        id: &str,
        stage: Stage,
        after: Option<u32>,
        limit: usize,
    ) -> Result<Vec<WorkRecord>, StoreError>;
    /// Holding the lease: MERGING → DONE.
    fn complete(&self, id: &str, owner: &str, outputs: &Outputs, now_ms: u64) -> Result<bool, StoreError>;
    /// Any state but DONE/FAILED/CANCELLED → FAILED. `false` if already final.
    fn fail(&self, id: &str, error: &JobError, now_ms: u64) -> Result<bool, StoreError>;
    /// Any state but DONE/FAILED/CANCELLED → CANCELLED. `false` if already final.
    fn cancel(&self, id: &str, now_ms: u64) -> Result<bool, StoreError>;
    /// FAILED or CANCELLED → SPLITTING, as new: every chunk, slice and range
    /// record is dropped and every counter, lease, error and output cleared;
    /// the id, source, spec and creation time stay (and the job is active
    /// again for the sweeper). `false` if the job was not FAILED or
    /// CANCELLED.
    fn retry(&self, id: &str, now_ms: u64) -> Result<bool, StoreError>;
    /// Just the status (a cheap read: workers poll it to stop early).
    fn status(&self, id: &str) -> Result<Option<Status>, StoreError>;
    /// Up to `limit` jobs, newest first, after the page cursor `after`
    /// (a [`Job::list_key`] from an earlier page's `next`).
    fn list_jobs(&self, limit: usize, after: Option<&str>) -> Result<JobPage, StoreError>;
    /// Jobs that are not DONE, FAILED or CANCELLED (for the sweeper).
    fn active_jobs(&self) -> Result<Vec<Job>, StoreError>;
    /// Clears job `id`'s [`Job::announce_pending`] (its end event went
    /// out); `true` if this call cleared it.
    fn announced(&self, id: &str) -> Result<bool, StoreError>;
    /// Ended jobs whose [`Job::announce_pending`] is set (for the sweeper).
    fn unannounced(&self) -> Result<Vec<Job>, StoreError>;
    /// Counts one sweep of the job, if nobody else did since it saw
    /// `sweeps`, and records `stuck` (sweeps in a row without progress) and
    /// the job's `progress` when it was seen.
    fn record_sweep(&self, id: &str, sweeps: u32, stuck: u32, progress: u64, now_ms: u64) -> Result<bool, StoreError>;
}

/// One page of [`JobStore::list_jobs`].
#[derive(Clone, Debug, Default)]
pub struct JobPage {
    /// The jobs, newest first.
    pub jobs: Vec<Job>,
    /// The cursor of the next page; `None` on the last one.
    pub next: Option<String>,
}

/// A unit of work for a worker (chunks) or the finalizer function (the rest).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum Task {
    /// Scan one chunk into a partial.
    Chunk {
        /// The job.
        job: String,
        /// The chunk's bytes.
        range: ChunkRange,
        /// The quote state to scan from (a guess, or the chain's).
        state: StartState,
        /// A compressed input's chunk scanned again from the member the
        /// plan's chain names (past the range: no member starts in it),
        /// instead of the one it found (`crate::members`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        member: Option<u64>,
    },
    /// Every chunk is done: check them, choose the key ranges, start the reducers.
    Plan {
        /// The job.
        job: String,
    },
    /// Send the chunk tasks of one slice of [`crate::SLICE`] chunks.
    Dispatch {
        /// The job.
        job: String,
        /// Which slice of its chunk tasks.
        slice: u32,
    },
    /// Merge one key range of every partial into result parts.
    Reduce {
        /// The job.
        job: String,
        /// Which key range.
        range: u32,
    },
    /// Every range is done: write the manifest and summary, DONE.
    Commit {
        /// The job.
        job: String,
    },
}

impl Task {
    /// The job the task is for.
    pub fn job(&self) -> &str {
        match self {
            Task::Chunk { job, .. }
            | Task::Dispatch { job, .. }
            | Task::Plan { job }
            | Task::Reduce { job, .. }
            | Task::Commit { job } => job,
        }
    }
}

/// Lambda async invoke, or a local worker pool.
pub trait Dispatcher: Send + Sync {
    /// Sends the tasks (each at least once).
    fn dispatch(&self, tasks: Vec<Task>) -> Result<(), StoreError>;
}
