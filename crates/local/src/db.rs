//! A durable job store for `fanfold serve`: the [`MemoryJobStore`]'s rules
//! (so the same conditions as DynamoDB), with every change written through
//! to an embedded database file (redb, one fsync per change) before the
//! call returns. Opening the file loads the jobs back, so jobs survive a
//! restart; what a restart cut off is finished by the sweep (see
//! `fanfold serve`).
//!
//! Writes are serialised by one lock (the in-memory change and its write to
//! the file happen together, so the file never lags behind in a different
//! order); reads are served from memory. Chunk records are dropped once a
//! job is final: only the finalizer needs them.

use std::path::Path;
use std::sync::Mutex;

use fanfold_engine::{Head, QuoteState, StartState};
use fanfold_pipeline::{
    ChunkRecord, Created, Job, JobError, JobPage, JobStore, Outputs, Stage, Status, StoreError, WorkRecord,
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::memory::{Entry, MemoryJobStore};

const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
const CHUNKS: TableDefinition<(&str, u32), &[u8]> = TableDefinition::new("chunks");
const RANGES: TableDefinition<(&str, u32), &[u8]> = TableDefinition::new("ranges");
const SLICES: TableDefinition<(&str, u32), &[u8]> = TableDefinition::new("slices");

fn table(stage: Stage) -> TableDefinition<'static, (&'static str, u32), &'static [u8]> {
    match stage {
        Stage::Dispatch => SLICES,
        Stage::Reduce => RANGES,
    }
}

pub struct DbJobStore {
    mem: MemoryJobStore,
    db: Database,
    write: Mutex<()>,
}

fn db_err(e: impl Into<redb::Error>) -> StoreError {
    let e: redb::Error = e.into();
    StoreError::Other { message: format!("job database: {e}"), retryable: false }
}

fn corrupt(what: &str, e: serde_json::Error) -> StoreError {
    StoreError::Other { message: format!("job database: malformed {what}: {e}"), retryable: false }
}

/// Which record besides the job a change wrote.
#[derive(Clone, Copy)]
enum Touched {
    Job,
    Chunk(u32),
    Work(Stage, u32),
}

impl DbJobStore {
    /// Opens (or creates) the database file and loads its jobs.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(db_err)?;
        let mem = MemoryJobStore::new();
        {
            let w = db.begin_write().map_err(db_err)?;
            w.open_table(JOBS).map_err(db_err)?;
            w.open_table(CHUNKS).map_err(db_err)?;
            w.open_table(RANGES).map_err(db_err)?;
            w.open_table(SLICES).map_err(db_err)?;
            w.commit().map_err(db_err)?;
        }
        let r = db.begin_read().map_err(db_err)?;
        let jobs = r.open_table(JOBS).map_err(db_err)?;
        let chunks = r.open_table(CHUNKS).map_err(db_err)?;
        let slices = r.open_table(SLICES).map_err(db_err)?;
        let ranges = r.open_table(RANGES).map_err(db_err)?;
        for entry in jobs.iter().map_err(db_err)? {
            let (k, v) = entry.map_err(db_err)?;
            let job: Job = serde_json::from_slice(v.value()).map_err(|e| corrupt("job", e))?;
            let id = k.value();
            let mut e = Entry { job: Some(job), ..Entry::default() };
            for c in chunks.range((id, 0)..=(id, u32::MAX)).map_err(db_err)? {
                let (k, v) = c.map_err(db_err)?;
                let rec: ChunkRecord = serde_json::from_slice(v.value()).map_err(|e| corrupt("chunk record", e))?;
                e.chunks.insert(k.value().1, rec);
            }
            for (stage, t) in [(Stage::Dispatch, &slices), (Stage::Reduce, &ranges)] {
                for c in t.range((id, 0)..=(id, u32::MAX)).map_err(db_err)? {
                    let (k, v) = c.map_err(db_err)?;
                    let rec: WorkRecord = serde_json::from_slice(v.value()).map_err(|e| corrupt("work record", e))?;
                    e.work(stage).insert(k.value().1, rec);
                }
            }
            mem.restore(e);
        }
        Ok(DbJobStore { mem, db, write: Mutex::new(()) })
    }

    /// Runs a change on the in-memory store and writes the job (and the
    /// record it touched) through to the file. `changed` tells from the
    /// answer whether anything changed (a lost condition writes nothing).
    fn change<T>(
        &self,
        id: &str,
        touched: Touched,
        f: impl FnOnce(&MemoryJobStore) -> Result<T, StoreError>,
        changed: impl FnOnce(&T) -> bool,
    ) -> Result<T, StoreError> {
        let _g = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let out = f(&self.mem)?;
        if !changed(&out) {
            return Ok(out);
        }
        let Some(job) = self.mem.get_job(id)? else { return Ok(out) };
        let w = self.db.begin_write().map_err(db_err)?;
        {
            let mut jobs = w.open_table(JOBS).map_err(db_err)?;
            let bytes = serde_json::to_vec(&job).expect("jobs serialize");
            jobs.insert(id, bytes.as_slice()).map_err(db_err)?;
            let mut chunks = w.open_table(CHUNKS).map_err(db_err)?;
            if job.status.is_final() && !keeps_records(&job) {
                chunks.retain_in((id, 0)..=(id, u32::MAX), |_, _| false).map_err(db_err)?;
                for stage in [Stage::Dispatch, Stage::Reduce] {
                    let mut t = w.open_table(table(stage)).map_err(db_err)?;
                    t.retain_in((id, 0)..=(id, u32::MAX), |_, _| false).map_err(db_err)?;
                }
            } else {
                match touched {
                    Touched::Job => {}
                    Touched::Chunk(i) => {
                        if let Some(c) = self.mem.chunk(id, i) {
                            let bytes = serde_json::to_vec(&c).expect("chunk records serialize");
                            chunks.insert((id, i), bytes.as_slice()).map_err(db_err)?;
                        }
                    }
                    Touched::Work(stage, i) => {
                        if let Some(r) = self.mem.work(id, stage, i) {
                            let bytes = serde_json::to_vec(&r).expect("work records serialize");
                            w.open_table(table(stage))
                                .map_err(db_err)?
                                .insert((id, i), bytes.as_slice())
                                .map_err(db_err)?;
                        }
                    }
                }
            }
        }
        w.commit().map_err(db_err)?;
        if job.status.is_final() && !keeps_records(&job) {
            self.mem.drop_records(id);
        }
        Ok(out)
    }
}

/// A dataset file's scan keeps its chunk records once DONE: its dataset's
/// versions merge them. Every other job's go when it ends.
fn keeps_records(job: &Job) -> bool {
    job.status == fanfold_pipeline::Status::Done && matches!(job.source.kind, fanfold_pipeline::InputKind::Scan { .. })
}

impl JobStore for DbJobStore {
    fn create_job(&self, job: &Job) -> Result<Created, StoreError> {
        self.change(&job.id, Touched::Job, |m| m.create_job(job), |c| matches!(c, Created::New))
    }
    fn get_job(&self, id: &str) -> Result<Option<Job>, StoreError> {
        self.mem.get_job(id)
    }
    fn start_running(
        &self,
        id: &str,
        head: &Head,
        size: u64,
        count: u32,
        slices: u32,
        now: u64,
    ) -> Result<bool, StoreError> {
        self.change(id, Touched::Job, |m| m.start_running(id, head, size, count, slices, now), |b| *b)
    }
    fn put_chunk(&self, id: &str, record: &ChunkRecord) -> Result<bool, StoreError> {
        self.change(id, Touched::Chunk(record.report.index), |m| m.put_chunk(id, record), |b| *b)
    }
    fn mark_done(
        &self,
        id: &str,
        chunk: u32,
        state: StartState,
        rows: u64,
        bytes: u64,
        now: u64,
    ) -> Result<Option<u32>, StoreError> {
        self.change(id, Touched::Chunk(chunk), |m| m.mark_done(id, chunk, state, rows, bytes, now), Option::is_some)
    }
    fn chunk_page(&self, id: &str, after: Option<u32>, limit: usize) -> Result<Vec<ChunkRecord>, StoreError> {
        self.mem.chunk_page(id, after, limit)
    }
    fn take_lease(&self, id: &str, owner: &str, now: u64, until: u64) -> Result<bool, StoreError> {
        self.change(id, Touched::Job, |m| m.take_lease(id, owner, now, until), |b| *b)
    }
    fn reopen_chunk(&self, id: &str, owner: &str, chunk: u32, state: QuoteState) -> Result<bool, StoreError> {
        self.change(id, Touched::Chunk(chunk), |m| m.reopen_chunk(id, owner, chunk, state), |b| *b)
    }
    fn release_lease(&self, id: &str, owner: &str) -> Result<bool, StoreError> {
        self.change(id, Touched::Job, |m| m.release_lease(id, owner), |b| *b)
    }
    fn start_merging(&self, id: &str, owner: &str, ranges: u32, now: u64) -> Result<bool, StoreError> {
        self.change(id, Touched::Job, |m| m.start_merging(id, owner, ranges, now), |b| *b)
    }
    fn take_work(&self, id: &str, st: Stage, i: u32, owner: &str, now: u64, until: u64) -> Result<bool, StoreError> {
        self.change(id, Touched::Work(st, i), |m| m.take_work(id, st, i, owner, now, until), |b| *b)
    }
    fn work_progress(
        &self,
        id: &str,
        st: Stage,
        i: u32,
        owner: &str,
        next: u32,
        now: u64,
        until: u64,
    ) -> Result<bool, StoreError> {
        self.change(id, Touched::Work(st, i), |m| m.work_progress(id, st, i, owner, next, now, until), |b| *b)
    }
    fn work_done(&self, id: &str, st: Stage, i: u32, owner: &str, now: u64) -> Result<Option<u32>, StoreError> {
        self.change(id, Touched::Work(st, i), |m| m.work_done(id, st, i, owner, now), Option::is_some)
    }
    fn work_page(&self, id: &str, st: Stage, after: Option<u32>, limit: usize) -> Result<Vec<WorkRecord>, StoreError> {
        self.mem.work_page(id, st, after, limit)
    }
    fn complete(&self, id: &str, owner: &str, outputs: &Outputs, now: u64) -> Result<bool, StoreError> {
        self.change(id, Touched::Job, |m| m.complete(id, owner, outputs, now), |b| *b)
    }
    fn fail(&self, id: &str, error: &JobError, now: u64) -> Result<bool, StoreError> {
        self.change(id, Touched::Job, |m| m.fail(id, error, now), |b| *b)
    }
    fn cancel(&self, id: &str, now: u64) -> Result<bool, StoreError> {
        self.change(id, Touched::Job, |m| m.cancel(id, now), |b| *b)
    }
    fn retry(&self, id: &str, now: u64) -> Result<bool, StoreError> {
        // A final job's records were dropped from the file when it ended.
        self.change(id, Touched::Job, |m| m.retry(id, now), |b| *b)
    }
    fn status(&self, id: &str) -> Result<Option<Status>, StoreError> {
        self.mem.status(id)
    }
    fn list_jobs(&self, limit: usize, after: Option<&str>) -> Result<JobPage, StoreError> {
        self.mem.list_jobs(limit, after)
    }
    fn active_jobs(&self) -> Result<Vec<Job>, StoreError> {
        self.mem.active_jobs()
    }
    fn announced(&self, id: &str) -> Result<bool, StoreError> {
        self.change(id, Touched::Job, |m| m.announced(id), |b| *b)
    }
    fn unannounced(&self) -> Result<Vec<Job>, StoreError> {
        self.mem.unannounced()
    }
    fn record_sweep(&self, id: &str, sweeps: u32, stuck: u32, progress: u64, now: u64) -> Result<bool, StoreError> {
        self.change(id, Touched::Job, |m| m.record_sweep(id, sweeps, stuck, progress, now), |b| *b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fanfold_pipeline::{PartialRef, Source};

    #[test]
    fn runs_the_job_store_contract() {
        let dir = tempfile::tempdir().unwrap();
        let store = DbJobStore::open(&dir.path().join("jobs.redb")).unwrap();
        fanfold_pipeline::contract::job_store(&store, "db-contract");
    }

    #[test]
    fn jobs_chunks_and_ranges_survive_reopening_without_their_leases() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.redb");
        let source = Source {
            bucket: "b".into(),
            key: "incoming/x.csv".into(),
            etag: "e".into(),
            size: 100,
            kind: Default::default(),
        };
        let head = Head {
            data_start: 0,
            newlines_before_data: 0,
            header: None,
            width: 1,
            compression: Default::default(),
            compressed_head: 0,
        };
        {
            let s = DbJobStore::open(&path).unwrap();
            s.create_job(&Job::new("j1".into(), source.clone(), "{}".into(), 5)).unwrap();
            s.start_running("j1", &head, 50, 2, 1, 6).unwrap();
            let rec = fanfold_pipeline::contract::record(1, PartialRef::Inline(vec![1, 2, 3]));
            assert!(s.put_chunk("j1", &rec).unwrap());
            assert_eq!(s.mark_done("j1", 1, StartState::Guess, 3, 50, 7).unwrap(), Some(1));
            s.create_job(&Job::new("j2".into(), source.clone(), "{}".into(), 8)).unwrap();
            s.cancel("j2", 9).unwrap();
            s.create_job(&Job::new("j3".into(), source, "{}".into(), 10)).unwrap();
            s.start_running("j3", &head, 50, 0, 0, 11).unwrap();
            assert!(s.take_lease("j3", "p", 12, 1_000_000).unwrap());
            assert!(s.start_merging("j3", "p", 2, 13).unwrap());
            assert!(s.take_work("j1", Stage::Dispatch, 0, "d0", 7, 1_000_000).unwrap());
            assert!(s.work_progress("j1", Stage::Dispatch, 0, "d0", 1, 8, 1_000_000).unwrap());
            assert!(s.take_work("j3", Stage::Reduce, 0, "r0", 14, 1_000_000).unwrap());
            assert!(s.take_work("j3", Stage::Reduce, 1, "r1", 14, 1_000_000).unwrap());
            assert_eq!(s.work_done("j3", Stage::Reduce, 0, "r0", 15).unwrap(), Some(1));
        }
        let s = DbJobStore::open(&path).unwrap();
        let j = s.get_job("j1").unwrap().unwrap();
        assert_eq!((j.status, j.chunks_done, j.rows, j.chunk_count), (Status::Running, 1, 3, 2));
        assert_eq!(j.head, Some(head));
        let recs = s.chunk_page("j1", None, 10).unwrap();
        assert_eq!(recs.len(), 1);
        assert!(recs[0].done);
        assert_eq!(recs[0].partial, PartialRef::Inline(vec![1, 2, 3]));
        assert_eq!(s.mark_done("j1", 1, StartState::Guess, 3, 50, 10).unwrap(), None, "the done flag survived");
        assert_eq!(s.status("j2").unwrap(), Some(Status::Cancelled));
        let ids: Vec<String> = s.list_jobs(10, None).unwrap().jobs.into_iter().map(|j| j.id).collect();
        assert_eq!(ids, ["j3", "j2", "j1"]);
        // The holders of range 1's lease died with the process: another reducer can take it.
        let ranges = s.work_page("j3", Stage::Reduce, None, 10).unwrap();
        assert_eq!(
            ranges.iter().map(|r| (r.index, r.done, r.lease.is_some())).collect::<Vec<_>>(),
            [(0, true, false), (1, false, false)]
        );
        assert!(s.take_work("j3", Stage::Reduce, 1, "r9", 16, 1_000_000).unwrap());
        // So did the dispatcher of j1's slice; its progress is kept.
        let slices = s.work_page("j1", Stage::Dispatch, None, 10).unwrap();
        assert_eq!(slices.iter().map(|r| (r.index, r.next, r.lease.is_some())).collect::<Vec<_>>(), [(0, 1, false)]);
        assert_eq!(s.get_job("j3").unwrap().unwrap().ranges_done, 1);
    }
}
