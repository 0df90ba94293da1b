//! An in-memory job store with the same conditions as the DynamoDB one.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use fanfold_engine::Head;
use fanfold_pipeline::{ChunkRecord, Created, Job, JobError, JobPage, JobStore, Lease, Outputs, Status, StoreError};

#[derive(Default)]
struct Entry {
    job: Option<Job>,
    done: BTreeSet<u32>,
    chunks: BTreeMap<u32, ChunkRecord>,
}

#[derive(Default)]
pub struct MemoryJobStore {
    jobs: Mutex<HashMap<String, Entry>>,
}

impl MemoryJobStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts back a job and its chunk records as they were saved (a
    /// durable store reloading after a restart).
    pub(crate) fn restore(&self, job: Job, chunks: Vec<ChunkRecord>) {
        let mut g = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        let done = job.done.iter().copied().collect();
        let chunks = chunks.into_iter().map(|c| (c.report.index, c)).collect();
        g.insert(job.id.clone(), Entry { job: Some(job), done, chunks });
    }

    /// Forgets the chunk records of a job (kept until it is final).
    pub(crate) fn drop_chunks(&self, id: &str) {
        let mut g = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = g.get_mut(id) {
            e.chunks.clear();
        }
    }

    fn with<T>(&self, id: &str, f: impl FnOnce(&mut Job, &mut Entry2) -> T) -> Result<T, StoreError> {
        let mut g = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        let e = g.get_mut(id).ok_or_else(|| StoreError::NotFound(format!("job {id}")))?;
        let mut job = e.job.take().expect("entries always hold a job");
        let mut rest = Entry2 { done: std::mem::take(&mut e.done), chunks: std::mem::take(&mut e.chunks) };
        let out = f(&mut job, &mut rest);
        job.done = rest.done.iter().copied().collect();
        e.job = Some(job);
        e.done = rest.done;
        e.chunks = rest.chunks;
        Ok(out)
    }
}

struct Entry2 {
    done: BTreeSet<u32>,
    chunks: BTreeMap<u32, ChunkRecord>,
}

fn lease_ok(job: &Job, owner: &str) -> bool {
    job.lease.as_ref().is_some_and(|l| l.owner == owner)
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
            job.running_ms = Some(now_ms);
            job.updated_ms = now_ms;
            true
        })
    }

    fn put_chunk(&self, id: &str, record: &ChunkRecord) -> Result<(), StoreError> {
        self.with(id, |_, e| {
            e.chunks.insert(record.report.index, record.clone());
        })
    }

    fn mark_done(&self, id: &str, chunk: u32, rows: u64, bytes: u64, now_ms: u64) -> Result<Option<usize>, StoreError> {
        self.with(id, |job, e| {
            if !e.done.insert(chunk) {
                return None;
            }
            job.updated_ms = now_ms;
            job.rows += rows;
            job.bytes_done += bytes;
            Some(e.done.len())
        })
    }

    fn chunks(&self, id: &str) -> Result<Vec<ChunkRecord>, StoreError> {
        self.with(id, |_, e| e.chunks.values().cloned().collect())
    }

    fn take_lease(&self, id: &str, owner: &str, now_ms: u64, until_ms: u64) -> Result<bool, StoreError> {
        self.with(id, |job, _| {
            if !matches!(job.status, Status::Running | Status::Merging) {
                return false;
            }
            if job.lease.as_ref().is_some_and(|l| l.until_ms > now_ms && l.owner != owner) {
                return false;
            }
            job.lease = Some(Lease { owner: owner.to_string(), until_ms });
            job.status = Status::Merging;
            job.updated_ms = now_ms;
            true
        })
    }

    fn reopen_chunks(&self, id: &str, owner: &str, chunks: &[u32]) -> Result<bool, StoreError> {
        self.with(id, |job, e| {
            if job.status != Status::Merging || !lease_ok(job, owner) {
                return false;
            }
            for c in chunks {
                if e.done.remove(c) {
                    // Undo what mark_done added for this chunk.
                    if let Some(r) = e.chunks.get(c) {
                        job.bytes_done = job.bytes_done.saturating_sub(r.report.end - r.report.start);
                        job.rows = job.rows.saturating_sub(r.report.rows);
                    }
                }
            }
            job.chunks_rerun += chunks.len() as u32;
            job.lease = None;
            job.status = Status::Running;
            true
        })
    }

    fn complete(&self, id: &str, owner: &str, outputs: &Outputs, now_ms: u64) -> Result<bool, StoreError> {
        self.with(id, |job, _| {
            if job.status != Status::Merging || !lease_ok(job, owner) {
                return false;
            }
            job.status = Status::Done;
            job.outputs = Some(outputs.clone());
            job.lease = None;
            job.updated_ms = now_ms;
            true
        })
    }

    fn active_jobs(&self) -> Result<Vec<Job>, StoreError> {
        let g = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        Ok(g.values().filter_map(|e| e.job.clone()).filter(|j| !j.status.is_final()).collect())
    }

    fn record_sweep(&self, id: &str, sweeps: u32, now_ms: u64) -> Result<bool, StoreError> {
        self.with(id, |job, _| {
            if job.sweeps != sweeps || job.status.is_final() {
                return false;
            }
            job.sweeps += 1;
            job.updated_ms = now_ms;
            true
        })
    }

    fn cancel(&self, id: &str, now_ms: u64) -> Result<bool, StoreError> {
        self.with(id, |job, _| {
            if job.status.is_final() {
                return false;
            }
            job.status = Status::Cancelled;
            job.lease = None;
            job.updated_ms = now_ms;
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
            job.lease = None;
            job.updated_ms = now_ms;
            true
        })
    }
}
