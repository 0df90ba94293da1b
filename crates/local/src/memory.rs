//! An in-memory job store with the same conditions as the DynamoDB one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use fanfold_engine::{Head, QuoteState, StartState};
use fanfold_pipeline::{
    ChunkRecord, Created, Job, JobError, JobPage, JobStore, Lease, Outputs, Stage, Status, StoreError, WorkRecord,
};

#[derive(Clone, Default)]
pub(crate) struct Entry {
    pub(crate) job: Option<Job>,
    pub(crate) chunks: BTreeMap<u32, ChunkRecord>,
    pub(crate) slices: BTreeMap<u32, WorkRecord>,
    pub(crate) ranges: BTreeMap<u32, WorkRecord>,
}

impl Entry {
    pub(crate) fn work(&mut self, stage: Stage) -> &mut BTreeMap<u32, WorkRecord> {
        match stage {
            Stage::Dispatch => &mut self.slices,
            Stage::Reduce => &mut self.ranges,
        }
    }
}

/// Whether the job is where `stage`'s work happens: RUNNING for a
/// dispatch (taking a slice), and for marking one done also MERGING (the
/// chunks of a slice may all finish before its dispatcher records it).
fn in_stage(job: &Job, stage: Stage, taking: bool) -> bool {
    match stage {
        Stage::Dispatch => job.status == Status::Running || (!taking && job.status == Status::Merging),
        Stage::Reduce => job.status == Status::Merging,
    }
}

#[derive(Default)]
pub struct MemoryJobStore {
    jobs: Mutex<HashMap<String, Entry>>,
}

/// Up to `limit` records with index > `after`, in index order.
fn page<T: Clone>(records: &BTreeMap<u32, T>, after: Option<u32>, limit: usize) -> Vec<T> {
    match after {
        Some(u32::MAX) => Vec::new(),
        Some(a) => records.range(a + 1..).take(limit).map(|(_, r)| r.clone()).collect(),
        None => records.values().take(limit).cloned().collect(),
    }
}

fn lease_ok(job: &Job, owner: &str) -> bool {
    job.lease.as_ref().is_some_and(|l| l.owner == owner)
}

fn lease_free(lease: &Option<Lease>, owner: &str, now_ms: u64) -> bool {
    lease.as_ref().is_none_or(|l| l.until_ms <= now_ms || l.owner == owner)
}

impl MemoryJobStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts back a job with its records as they were saved (a durable
    /// store reloading after a restart). The process that held its leases
    /// is gone, so they are dropped.
    pub(crate) fn restore(&self, mut entry: Entry) {
        let mut g = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        let Some(job) = entry.job.as_mut() else { return };
        job.lease = None;
        for r in entry.ranges.values_mut().chain(entry.slices.values_mut()) {
            r.lease = None;
        }
        g.insert(job.id.clone(), entry);
    }

    /// One chunk record (for a durable store to write through).
    pub(crate) fn chunk(&self, id: &str, index: u32) -> Option<ChunkRecord> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).get(id)?.chunks.get(&index).cloned()
    }

    /// One slice or range record (for a durable store to write through).
    pub(crate) fn work(&self, id: &str, stage: Stage, index: u32) -> Option<WorkRecord> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).get_mut(id)?.work(stage).get(&index).cloned()
    }

    /// Forgets the chunk and range records of a job (kept until it is final).
    pub(crate) fn drop_records(&self, id: &str) {
        let mut g = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = g.get_mut(id) {
            e.chunks.clear();
            e.slices.clear();
            e.ranges.clear();
        }
    }

    fn with<T>(&self, id: &str, f: impl FnOnce(&mut Job, &mut Entry) -> T) -> Result<T, StoreError> {
        let mut g = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        let e = g.get_mut(id).ok_or_else(|| StoreError::NotFound(format!("job {id}")))?;
        let mut job = e.job.take().expect("entries always hold a job");
        let out = f(&mut job, e);
        e.job = Some(job);
        Ok(out)
    }
}

impl JobStore for MemoryJobStore {
    fn create_job(&self, job: &Job) -> Result<Created, StoreError> {
        let mut g = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = g.get(&job.id) {
            return Ok(Created::Exists(Box::new(e.job.clone().expect("entries always hold a job"))));
        }
        g.insert(job.id.clone(), Entry { job: Some(job.clone()), ..Entry::default() });
        Ok(Created::New)
    }

    fn get_job(&self, id: &str) -> Result<Option<Job>, StoreError> {
        let g = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        Ok(g.get(id).and_then(|e| e.job.clone()))
    }

    fn start_running(
        &self,
        id: &str,
        head: &Head,
        chunk_size: u64,
        chunk_count: u32,
        slice_count: u32,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        self.with(id, |job, _| {
            if job.status != Status::Splitting {
                return false;
            }
            job.status = Status::Running;
            job.head = Some(head.clone());
            job.chunk_size = chunk_size;
            job.chunk_count = chunk_count;
            job.slice_count = slice_count;
            job.running_ms = Some(now_ms);
            job.updated_ms = now_ms;
            true
        })
    }

    fn put_chunk(&self, id: &str, record: &ChunkRecord) -> Result<bool, StoreError> {
        self.with(id, |_, e| {
            let i = record.report.index;
            let rerun = match e.chunks.get(&i) {
                Some(old) if !old.accepts(record.state) => return false,
                Some(old) => old.rerun,
                None => None,
            };
            let mut r = record.clone();
            r.done = false;
            r.rerun = rerun;
            e.chunks.insert(i, r);
            true
        })
    }

    fn mark_done(
        &self,
        id: &str,
        chunk: u32,
        state: StartState,
        rows: u64,
        bytes: u64,
        now_ms: u64,
    ) -> Result<Option<u32>, StoreError> {
        self.with(id, |job, e| {
            let r = e.chunks.get_mut(&chunk)?;
            if r.done || r.state != state {
                return None;
            }
            r.done = true;
            job.chunks_done += 1;
            job.updated_ms = now_ms;
            job.rows += rows;
            job.bytes_done += bytes;
            Some(job.chunks_done)
        })
    }

    fn chunk_page(&self, id: &str, after: Option<u32>, limit: usize) -> Result<Vec<ChunkRecord>, StoreError> {
        self.with(id, |_, e| page(&e.chunks, after, limit))
    }

    fn take_lease(&self, id: &str, owner: &str, now_ms: u64, until_ms: u64) -> Result<bool, StoreError> {
        self.with(id, |job, _| {
            if !matches!(job.status, Status::Running | Status::Merging) || !lease_free(&job.lease, owner, now_ms) {
                return false;
            }
            job.lease = Some(Lease { owner: owner.to_string(), until_ms });
            job.status = Status::Merging;
            job.updated_ms = now_ms;
            true
        })
    }

    fn reopen_chunk(&self, id: &str, owner: &str, chunk: u32, state: QuoteState) -> Result<bool, StoreError> {
        self.with(id, |job, e| {
            if job.status != Status::Merging || !lease_ok(job, owner) {
                return false;
            }
            let Some(r) = e.chunks.get_mut(&chunk).filter(|r| r.done) else { return false };
            r.done = false;
            r.rerun = Some(state);
            job.chunks_done -= 1;
            job.rows = job.rows.saturating_sub(r.report.rows);
            job.bytes_done = job.bytes_done.saturating_sub(r.report.end - r.report.start);
            job.chunks_rerun += 1;
            true
        })
    }

    fn release_lease(&self, id: &str, owner: &str) -> Result<bool, StoreError> {
        self.with(id, |job, _| {
            if job.status != Status::Merging || !lease_ok(job, owner) {
                return false;
            }
            job.lease = None;
            if job.range_count == 0 {
                job.status = Status::Running;
            }
            true
        })
    }

    fn start_merging(&self, id: &str, owner: &str, ranges: u32, now_ms: u64) -> Result<bool, StoreError> {
        self.with(id, |job, e| {
            if job.status != Status::Merging || !lease_ok(job, owner) || job.range_count != 0 {
                return false;
            }
            job.range_count = ranges;
            job.ranges_done = 0;
            job.lease = None;
            job.merging_ms = Some(now_ms);
            job.updated_ms = now_ms;
            e.ranges.clear();
            true
        })
    }

    fn take_work(
        &self,
        id: &str,
        stage: Stage,
        index: u32,
        owner: &str,
        now_ms: u64,
        until_ms: u64,
    ) -> Result<bool, StoreError> {
        self.with(id, |job, e| {
            if !in_stage(job, stage, true) || index >= job.work_count(stage) {
                return false;
            }
            let r = e.work(stage).entry(index).or_insert_with(|| WorkRecord::new(index));
            if r.done || !lease_free(&r.lease, owner, now_ms) {
                return false;
            }
            r.lease = Some(Lease { owner: owner.to_string(), until_ms });
            job.updated_ms = now_ms;
            true
        })
    }

    fn work_progress(
        &self,
        id: &str,
        stage: Stage,
        index: u32,
        owner: &str,
        next: u32,
        now_ms: u64,
        until_ms: u64,
    ) -> Result<bool, StoreError> {
        // (the record alone, as in DynamoDB: not the job)
        let _ = now_ms;
        self.with(id, |_, e| {
            let Some(r) = e.work(stage).get_mut(&index) else { return false };
            if r.done || r.lease.as_ref().is_none_or(|l| l.owner != owner) {
                return false;
            }
            r.next = next;
            r.lease = Some(Lease { owner: owner.to_string(), until_ms });
            true
        })
    }

    fn work_done(
        &self,
        id: &str,
        stage: Stage,
        index: u32,
        owner: &str,
        now_ms: u64,
    ) -> Result<Option<u32>, StoreError> {
        self.with(id, |job, e| {
            if !in_stage(job, stage, false) {
                return None;
            }
            let r = e.work(stage).get_mut(&index)?;
            if r.done || r.lease.as_ref().is_none_or(|l| l.owner != owner) {
                return None;
            }
            r.done = true;
            r.lease = None;
            job.updated_ms = now_ms;
            Some(match stage {
                Stage::Dispatch => {
                    job.dispatched_ms = Some(now_ms);
                    job.slices_done += 1;
                    job.slices_done
                }
                Stage::Reduce => {
                    job.ranges_done += 1;
                    job.ranges_done
                }
            })
        })
    }

    fn work_page(
        &self,
        id: &str,
        stage: Stage,
        after: Option<u32>,
        limit: usize,
    ) -> Result<Vec<WorkRecord>, StoreError> {
        self.with(id, |_, e| page(e.work(stage), after, limit))
    }

    fn complete(&self, id: &str, owner: &str, outputs: &Outputs, now_ms: u64) -> Result<bool, StoreError> {
        self.with(id, |job, _| {
            if job.status != Status::Merging || !lease_ok(job, owner) {
                return false;
            }
            job.status = Status::Done;
            job.outputs = Some(outputs.clone());
            job.announce_pending = true;
            job.lease = None;
            job.updated_ms = now_ms;
            true
        })
    }

    fn active_jobs(&self) -> Result<Vec<Job>, StoreError> {
        let g = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        Ok(g.values().filter_map(|e| e.job.clone()).filter(|j| !j.status.is_final()).collect())
    }

    fn announced(&self, id: &str) -> Result<bool, StoreError> {
        self.with(id, |job, _| std::mem::take(&mut job.announce_pending))
    }

    fn unannounced(&self) -> Result<Vec<Job>, StoreError> {
        let g = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        Ok(g.values().filter_map(|e| e.job.clone()).filter(|j| j.status.is_final() && j.announce_pending).collect())
    }

    fn record_sweep(&self, id: &str, sweeps: u32, stuck: u32, progress: u64, now_ms: u64) -> Result<bool, StoreError> {
        self.with(id, |job, _| {
            if job.sweeps != sweeps || job.status.is_final() {
                return false;
            }
            job.sweeps += 1;
            job.stuck_sweeps = stuck;
            job.swept_progress = progress;
            job.updated_ms = now_ms;
            job.swept_ms = Some(now_ms);
            true
        })
    }

    fn cancel(&self, id: &str, now_ms: u64) -> Result<bool, StoreError> {
        self.with(id, |job, _| {
            if job.status.is_final() {
                return false;
            }
            job.status = Status::Cancelled;
            job.announce_pending = true;
            job.lease = None;
            job.updated_ms = now_ms;
            true
        })
    }

    fn retry(&self, id: &str, now_ms: u64) -> Result<bool, StoreError> {
        self.with(id, |job, e| {
            if !matches!(job.status, Status::Failed | Status::Cancelled) {
                return false;
            }
            *job = job.retried(now_ms);
            e.chunks.clear();
            e.slices.clear();
            e.ranges.clear();
            true
        })
    }

    fn status(&self, id: &str) -> Result<Option<Status>, StoreError> {
        let g = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        Ok(g.get(id).and_then(|e| e.job.as_ref()).map(|j| j.status))
    }

    fn list_jobs(&self, limit: usize, after: Option<&str>) -> Result<JobPage, StoreError> {
        let g = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<(String, &Job)> =
            g.values().filter_map(|e| e.job.as_ref()).map(|j| (j.list_key(), j)).collect();
        all.sort_by(|a, b| b.0.cmp(&a.0));
        let mut jobs: Vec<Job> = all
            .iter()
            .filter(|(k, _)| after.is_none_or(|a| k.as_str() < a))
            .take(limit.saturating_add(1))
            .map(|(_, j)| (*j).clone())
            .collect();
        let next = (jobs.len() > limit).then(|| {
            jobs.truncate(limit);
            jobs.last().map(Job::list_key)
        });
        Ok(JobPage { jobs, next: next.flatten() })
    }

    fn fail(&self, id: &str, error: &JobError, now_ms: u64) -> Result<bool, StoreError> {
        self.with(id, |job, _| {
            if job.status.is_final() {
                return false;
            }
            job.status = Status::Failed;
            job.error = Some(error.clone());
            job.announce_pending = true;
            job.lease = None;
            job.updated_ms = now_ms;
            true
        })
    }
}
