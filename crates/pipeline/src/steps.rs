//! The steps: submit/split, run a chunk, finalize.

use std::io::{Cursor, Read};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use fanfold_engine::{
    job_id, plan_chunks, read_head, resolve_chain, BadRow, ChunkRange, ChunkReport, ChunkScanner, Error as EngineError,
    LineIndex, Merger, PartInfo, PartSink, PartWriter, RowFormatter, ScanBuffers, Spec, StartState, TopGroup,
    TopGroups, MAX_SAMPLES,
};

thread_local! {
    /// A worker's scan and read buffers, reused from chunk to chunk.
    static BUFFERS: std::cell::RefCell<(ScanBuffers, Vec<u8>)> = std::cell::RefCell::default();
}
use serde::Serialize;

use crate::fan_in::fan_in;
use crate::job::{ChunkRecord, Job, JobError, OutputPart, Outputs, PartialRef, Source, Status};
use crate::ports::{Created, Dispatcher, JobStore, ObjectStore, ObjectWriter, StoreError, Task};

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
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

/// Where results and spilled partials go. `{job}` is replaced by the job id.
#[derive(Clone, Debug)]
pub struct Layout {
    pub results: String,
    pub partials: String,
}

impl Default for Layout {
    /// The bucket layout of ARCHITECTURE.md.
    fn default() -> Self {
        Layout { results: "results/{job}/".into(), partials: "_fanfold/partials/{job}/".into() }
    }
}

impl Layout {
    pub fn results(&self, job: &str) -> String {
        self.results.replace("{job}", job)
    }
    pub fn partials(&self, job: &str) -> String {
        self.partials.replace("{job}", job)
    }
    pub fn partial(&self, job: &str, chunk: u32) -> String {
        format!("{}{chunk:06}", self.partials(job))
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    /// Bytes per chunk task.
    pub chunk_size: u64,
    /// Partials up to this size stay in the chunk record; larger ones are spilled.
    pub inline_limit: usize,
    /// How long a finalizer's lease lasts.
    pub lease_ms: u64,
    /// Bytes read per request beyond a chunk's end before asking for more.
    pub read_window: u64,
    /// Bucket name recorded in the source (and hashed into job ids).
    pub bucket: String,
    /// Threads that merge groups of partials before the final merge (see
    /// `fan_in`); 1 merges on one thread. Default: the cores available.
    pub merge_threads: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            chunk_size: 64 << 20,
            inline_limit: 300_000,
            lease_ms: 15 * 60 * 1000,
            read_window: 8 << 20,
            bucket: "local".into(),
            merge_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// A step failed for a reason that is not the input's fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("job {0} not found")]
    UnknownJob(String),
    #[error("{0}")]
    Engine(#[from] EngineError),
    #[error("{0}")]
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
    /// A SPLITTING or RUNNING job with no progress for this long is stuck
    /// (make it longer than the worker's timeout).
    pub stale_ms: u64,
    /// Sweeps of one job before it fails.
    pub max_sweeps: u32,
    /// Every active job is orphaned: the process that ran it is gone (a
    /// local server starting again), so nothing is waited for.
    pub orphaned: bool,
}

impl Default for SweepPolicy {
    fn default() -> Self {
        SweepPolicy { stale_ms: 20 * 60 * 1000, max_sweeps: 3, orphaned: false }
    }
}

/// `submit`'s answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submitted {
    pub id: String,
    /// `false`: the same source and spec were already known.
    pub new: bool,
}

/// `summary.json`.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Summary {
    pub job_id: String,
    pub source: String,
    pub input_bytes: u64,
    pub rows_read: u64,
    pub rows_filtered: u64,
    pub rows_skipped: u64,
    pub bad_row_samples: Vec<BadRow>,
    pub groups: u64,
    pub chunks: u64,
    pub chunks_rerun: u32,
    pub output_files: Vec<OutputPart>,
    /// The largest groups by the first aggregate (when it is numeric).
    #[serde(default)]
    pub top_groups: Vec<TopGroup>,
    pub timings_ms: Timings,
}

#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Timings {
    pub split: u64,
    pub chunks: u64,
    pub merge: u64,
    pub total: u64,
}

/// Places where the end-to-end tests inject failures. Production pipelines
/// have none.
pub trait FaultPoints: Send + Sync {
    /// After a chunk's partial is stored and before the chunk is marked done.
    fn chunk_stored(&self, _job: &str, _chunk: u32) -> Result<(), PipelineError> {
        Ok(())
    }
    /// After the finalizer finished writing result part `part`.
    fn part_written(&self, _job: &str, _part: usize) {}
}

/// The steps, bound to their ports.
pub struct Pipeline {
    pub input: Arc<dyn ObjectStore>,
    pub output: Arc<dyn ObjectStore>,
    pub jobs: Arc<dyn JobStore>,
    pub dispatcher: Arc<dyn Dispatcher>,
    pub layout: Layout,
    pub config: Config,
    pub faults: Option<Arc<dyn FaultPoints>>,
}

impl Pipeline {
    fn job(&self, id: &str) -> Result<Job, PipelineError> {
        self.jobs.get_job(id)?.ok_or_else(|| PipelineError::UnknownJob(id.to_string()))
    }

    fn fail(&self, id: &str, error: JobError) -> Result<(), PipelineError> {
        tracing::warn!(job = id, error = %error.message, "job failed");
        self.jobs.fail(id, &error, now_ms())?;
        self.cleanup_partials(id);
        Ok(())
    }

    /// Records a job for `key` with `spec` and splits it. The same object
    /// (same ETag) with the same spec finds the existing job instead.
    pub fn submit(&self, key: &str, spec: &Spec) -> Result<Submitted, PipelineError> {
        let meta = self.input.head(key)?;
        let id = job_id(&self.config.bucket, key, &meta.etag, spec);
        let source =
            Source { bucket: self.config.bucket.clone(), key: key.to_string(), etag: meta.etag, size: meta.size };
        let job = Job::new(id.clone(), source, spec.canonical_json(), now_ms());
        match self.jobs.create_job(&job)? {
            Created::Exists(_) => Ok(Submitted { id, new: false }),
            Created::New => {
                self.split(&id)?;
                Ok(Submitted { id, new: true })
            }
        }
    }

    /// Records a job for `key` that is rejected before it starts (its spec
    /// does not parse), so that it can be looked up with the reason.
    pub fn submit_rejected(&self, key: &str, spec_text: &str, error: JobError) -> Result<Submitted, PipelineError> {
        let meta = self.input.head(key)?;
        let id = fanfold_engine::job_id_for_text(&self.config.bucket, key, &meta.etag, spec_text);
        let source =
            Source { bucket: self.config.bucket.clone(), key: key.to_string(), etag: meta.etag, size: meta.size };
        let job = Job::new(id.clone(), source, spec_text.to_string(), now_ms());
        match self.jobs.create_job(&job)? {
            Created::Exists(_) => Ok(Submitted { id, new: false }),
            Created::New => {
                self.jobs.fail(&id, &error, now_ms())?;
                Ok(Submitted { id, new: true })
            }
        }
    }

    /// Submits an object dropped under `incoming/` (the S3 trigger, the
    /// local watcher, and `POST /jobs` without a spec): the spec is the
    /// `_spec.json` beside the object, or `default` when there is none; a
    /// `_spec.json` that does not parse gives a job rejected with the reason.
    pub fn submit_object(&self, key: &str, default: &Spec) -> Result<Submitted, PipelineError> {
        let spec_key = format!("{}/_spec.json", key.rsplit_once('/').map(|(d, _)| d).unwrap_or("incoming"));
        let spec_text = match self.input.get_range(&spec_key, 0, None) {
            Ok(mut r) => {
                let mut t = String::new();
                r.read_to_string(&mut t).map_err(StoreError::Io)?;
                Some(t)
            }
            Err(StoreError::NotFound(_)) => None,
            Err(e) => return Err(e.into()),
        };
        match spec_text {
            None => self.submit(key, default),
            Some(t) => match Spec::from_json(&t) {
                Ok(spec) => self.submit(key, &spec),
                Err(e) => self.submit_rejected(key, &t, JobError::rejected(format!("{spec_key}: {e}"))),
            },
        }
    }

    /// SPLITTING → RUNNING: reads the header, plans chunks, dispatches them.
    pub fn split(&self, id: &str) -> Result<(), PipelineError> {
        let job = self.job(id)?;
        if job.status != Status::Splitting {
            return Ok(());
        }
        let spec = Spec::from_json(&job.spec).map_err(|e| PipelineError::Invalid(e.to_string()))?;
        let size = job.source.size;
        let mut want = 64 * 1024u64;
        let head = loop {
            let n = want.min(size);
            let mut buf = Vec::with_capacity(n as usize);
            self.input.get_range(&job.source.key, 0, Some(n))?.read_to_end(&mut buf).map_err(StoreError::Io)?;
            match read_head(&buf, size, &spec.csv) {
                Ok(Some(h)) => break h,
                Ok(None) if n < size => want *= 4,
                Ok(None) => return Err(PipelineError::Invalid("the object is shorter than its size".into())),
                Err(EngineError::Rejected(b)) => return self.fail(id, JobError::from_bad_row(&b)),
                Err(e) => return self.fail(id, JobError::rejected(e.to_string())),
            }
        };
        if let Err(e) = head.compile(&spec) {
            return self.fail(id, JobError::rejected(e.to_string()));
        }
        let chunks = plan_chunks(head.data_start, size, self.config.chunk_size);
        if !self.jobs.start_running(id, &head, self.config.chunk_size, chunks.len() as u32, now_ms())? {
            return Ok(());
        }
        let tasks: Vec<Task> = if chunks.is_empty() {
            vec![Task::Finalize { job: id.to_string() }]
        } else {
            chunks.iter().map(|r| Task::Chunk { job: id.to_string(), range: *r, state: StartState::Guess }).collect()
        };
        self.dispatcher.dispatch(tasks)?;
        Ok(())
    }

    /// Scans one chunk, stores its partial, adds it to the done set, and
    /// dispatches finalize if it completed the set.
    pub fn run_chunk(&self, id: &str, range: ChunkRange, state: StartState) -> Result<(), PipelineError> {
        let job = self.job(id)?;
        if job.status != Status::Running {
            return Ok(()); // finished, failed or cancelled meanwhile: nothing to do
        }
        let head = job.head.as_ref().ok_or_else(|| PipelineError::Invalid("running job without a head".into()))?;
        let spec = Spec::from_json(&job.spec).map_err(|e| PipelineError::Invalid(e.to_string()))?;
        let compiled = head.compile(&spec)?;
        let size = job.source.size;
        let (scan_buffers, mut buf) = BUFFERS.with(|b| b.take());
        let mut scanner =
            ChunkScanner::with_buffers(&compiled, range, size, range.start == head.data_start, state, scan_buffers);
        if buf.len() < READ_BUF {
            buf.resize(READ_BUF, 0);
        }
        let mut filled = 0usize;
        let mut next = scanner.position(); // next byte to request
        let mut window_end = 0u64;
        let mut reader: Option<Box<dyn Read + Send>> = None;
        let mut cancel = CancelCheck::new();
        while !scanner.is_done() {
            if cancel.due() && self.stopped(id)? {
                tracing::info!(job = id, chunk = range.index, "job stopped; abandoning the chunk");
                return Ok(());
            }
            if next < size {
                if filled == buf.len() {
                    // A record longer than the buffer: grow (doubling keeps it O(record)).
                    let n = buf.len() * 2;
                    buf.resize(n, 0);
                }
                if reader.is_none() {
                    window_end = (range.end.max(next) + self.config.read_window).min(size);
                    reader = Some(self.input.get_range(&job.source.key, next, Some(window_end))?);
                }
                let to = buf.len().min(filled + READ_BUF);
                let got = reader.as_mut().expect("opened").read(&mut buf[filled..to]).map_err(StoreError::Io)?;
                if got == 0 {
                    return Err(PipelineError::Invalid(format!("object ended at byte {next}, expected {size} bytes")));
                }
                next += got as u64;
                filled += got;
                if next >= window_end {
                    reader = None;
                }
            }
            let consumed = scanner.feed(&buf[..filled]);
            buf.copy_within(consumed..filled, 0);
            filled -= consumed;
            if next >= size && !scanner.is_done() && consumed == 0 {
                return Err(PipelineError::Invalid("chunk scan stalled at the end of the object".into()));
            }
        }
        drop(reader);
        let (report, run, mut scan_buffers) = scanner.finish_with_buffers();
        let partial = if run.len() <= self.config.inline_limit {
            PartialRef::Inline(run)
        } else {
            let key = self.layout.partial(id, range.index);
            self.output.put(&key, &run)?;
            scan_buffers.run = run;
            PartialRef::Object(key)
        };
        BUFFERS.with(|b| *b.borrow_mut() = (scan_buffers, buf));
        let spilled = matches!(partial, PartialRef::Object(_));
        let rows = report.rows;
        self.jobs.put_chunk(id, &ChunkRecord { report, partial, attempt: 1 })?;
        if let Some(f) = &self.faults {
            f.chunk_stored(id, range.index)?;
        }
        if let Some(n) = self.jobs.mark_done(id, range.index, rows, range.end - range.start, now_ms())? {
            if n == job.chunk_count as usize {
                self.dispatcher.dispatch(vec![Task::Finalize { job: id.to_string() }])?;
            }
        }
        if spilled && self.stopped(id)? {
            // Cancelled while we scanned: the cleanup may have run before our put.
            self.output.delete(&self.layout.partial(id, range.index))?;
        }
        Ok(())
    }

    /// Merges the partials into capped result files, a manifest and a summary.
    pub fn finalize(&self, id: &str, owner: &str) -> Result<(), PipelineError> {
        let started = now_ms();
        let t0 = Instant::now();
        let job = self.job(id)?;
        if job.status.is_final() {
            return Ok(());
        }
        if !self.jobs.take_lease(id, owner, started, started + self.config.lease_ms)? {
            return Ok(());
        }
        let head = job.head.clone().ok_or_else(|| PipelineError::Invalid("finalizing a job without a head".into()))?;
        let spec = Spec::from_json(&job.spec).map_err(|e| PipelineError::Invalid(e.to_string()))?;
        let compiled = head.compile(&spec)?;
        let mut records = self.jobs.chunks(id)?;
        records.sort_by_key(|r| r.report.index);
        let ranges = job.ranges();
        let missing: Vec<u32> = ranges
            .iter()
            .map(|c| c.index)
            .filter(|i| records.binary_search_by_key(i, |r| r.report.index).is_err())
            .collect();
        if !missing.is_empty() {
            // Done set full but a record missing cannot happen with a
            // conforming store; scan them again rather than guess.
            self.jobs.reopen_chunks(id, owner, &missing)?;
            let tasks = missing
                .iter()
                .map(|&i| Task::Chunk { job: id.into(), range: ranges[i as usize], state: StartState::Guess })
                .collect();
            self.dispatcher.dispatch(tasks)?;
            return Ok(());
        }
        let reports: Vec<ChunkReport> = records.iter().map(|r| r.report.clone()).collect();
        let wrong = resolve_chain(&reports);
        if !wrong.is_empty() {
            tracing::info!(
                job = id,
                chunks = wrong.len(),
                "quote-state guesses were wrong; scanning those chunks again"
            );
            let idx: Vec<u32> = wrong.iter().map(|w| w.0).collect();
            if self.jobs.reopen_chunks(id, owner, &idx)? {
                let tasks = wrong
                    .iter()
                    .map(|&(i, s)| Task::Chunk {
                        job: id.into(),
                        range: ranges[i as usize],
                        state: StartState::Known(s),
                    })
                    .collect();
                self.dispatcher.dispatch(tasks)?;
            }
            return Ok(());
        }
        let lines = LineIndex::new(&head, &reports);
        let first_error =
            reports.iter().filter_map(|r| r.error.clone().map(|e| lines.globalize(r.index, e))).min_by_key(|e| e.byte);
        if let Some(e) = first_error {
            return self.fail(id, JobError::from_bad_row(&e));
        }
        if let Some(a) = reports.iter().find_map(|r| r.overflow) {
            let e = EngineError::SumOverflow { aggregate: compiled.aggs[a].name.clone() };
            return self.fail(id, JobError::rejected(e.to_string()));
        }

        // Merge.
        let mut sources: Vec<Box<dyn Read + Send>> = Vec::with_capacity(records.len());
        for r in &records {
            sources.push(match &r.partial {
                PartialRef::Inline(b) => Box::new(Cursor::new(b.clone())),
                PartialRef::Object(k) => {
                    Box::new(std::io::BufReader::with_capacity(1 << 20, self.output.get_range(k, 0, None)?))
                }
            });
        }
        let names: Vec<String> = compiled.aggs.iter().map(|a| a.name.clone()).collect();
        let mut fmt = RowFormatter::new(compiled.dialect.delimiter);
        let prefix = self.layout.results(id);
        let sink = StoreSink {
            store: self.output.as_ref(),
            prefix: &prefix,
            current: None,
            job: id,
            faults: self.faults.as_deref(),
        };
        let mut writer = PartWriter::new(sink, compiled.max_file_bytes, fmt.header(&compiled.output_header))?;
        let mut groups = 0u64;
        let mut cancel = CancelCheck::new();
        let outcome: Result<Vec<TopGroup>, EngineError> = std::thread::scope(|scope| {
            // Groups of partials merge on their own threads (when there are
            // enough); a third thread does the final merge and formats rows
            // into blocks; this one cuts parts and writes them. Rows stay in
            // merge order.
            let (sources, group_mergers) = fan_in(scope, sources, &names, self.config.merge_threads);
            let (tx, rx) = std::sync::mpsc::sync_channel::<Result<RowBlock, EngineError>>(4);
            let merging = scope.spawn(move || {
                let mut top = TopGroups::new(TOP_GROUPS);
                let mut merger = match Merger::new(sources, names) {
                    Ok(m) => m,
                    Err(e) => {
                        let _ = tx.send(Err(EngineError::Partial(e)));
                        return top;
                    }
                };
                let mut block = RowBlock::default();
                loop {
                    match merger.next_group() {
                        Ok(Some((key, accs, texts))) => {
                            top.offer(key, accs, texts);
                            fmt.row(key, accs, texts, &mut block.bytes);
                            block.ends.push(block.bytes.len());
                            if block.bytes.len() >= ROW_BLOCK && tx.send(Ok(std::mem::take(&mut block))).is_err() {
                                return top; // the writer stopped
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return top;
                        }
                    }
                }
                let _ = tx.send(Ok(block));
                top
            });
            let written = (|| {
                for msg in rx {
                    let block = msg?;
                    if cancel.due() && self.stopped(id).unwrap_or(false) {
                        return Err(EngineError::Output(std::io::Error::other("the job was cancelled")));
                    }
                    let mut start = 0;
                    for &end in &block.ends {
                        writer.push_row(&block.bytes[start..end])?;
                        start = end;
                    }
                    groups += block.ends.len() as u64;
                }
                Ok(())
            })();
            // Once the final merge is done (or gone), the group mergers end too.
            let top = merging.join().expect("the merging thread does not panic");
            for g in group_mergers {
                // A group merger's own error says more than the final merge's "failed".
                g.join().expect("a group merger does not panic")?;
            }
            written.map(|()| top.finish())
        });
        let top_groups = match outcome {
            Ok(top) => top,
            Err(_) if self.stopped(id)? => {
                self.discard_results(id);
                return Ok(());
            }
            Err(e @ (EngineError::SumOverflow { .. } | EngineError::RowTooLarge { .. })) => {
                return self.fail(id, JobError::rejected(e.to_string()))
            }
            Err(e) => return Err(e.into()),
        };
        let (parts, _) = writer.finish()?;
        let parts: Vec<OutputPart> =
            parts.iter().map(|p: &PartInfo| OutputPart::new(format!("{prefix}{}", p.name), p)).collect();

        let manifest_key = format!("{prefix}manifest.json");
        let manifest = serde_json::json!({
            "fileLocations": [{"URIs": parts.iter().map(|p| self.output.uri(&p.key)).collect::<Vec<_>>()}],
            "globalUploadSettings": {
                "format": "CSV",
                "delimiter": (compiled.dialect.delimiter as char).to_string(),
                "textqualifier": "\"",
                "containsHeader": "true"
            }
        });
        self.output.put(&manifest_key, &serde_json::to_vec_pretty(&manifest).expect("json"))?;

        let mut samples: Vec<BadRow> = reports
            .iter()
            .flat_map(|r| r.samples.iter().map(move |s| (r.index, s.clone())))
            .map(|(i, s)| lines.globalize(i, s))
            .collect();
        samples.sort_by_key(|s| s.byte);
        samples.truncate(MAX_SAMPLES);
        let running = job.running_ms.unwrap_or(job.created_ms);
        let summary = Summary {
            job_id: id.to_string(),
            source: self.input.uri(&job.source.key),
            input_bytes: job.source.size,
            rows_read: reports.iter().map(|r| r.rows).sum(),
            rows_filtered: reports.iter().map(|r| r.filtered).sum(),
            rows_skipped: reports.iter().map(|r| r.bad_rows).sum(),
            bad_row_samples: samples,
            groups,
            chunks: reports.len() as u64,
            chunks_rerun: job.chunks_rerun,
            output_files: parts.clone(),
            top_groups,
            timings_ms: Timings {
                split: running.saturating_sub(job.created_ms),
                chunks: started.saturating_sub(running),
                merge: t0.elapsed().as_millis() as u64,
                total: now_ms().saturating_sub(job.created_ms),
            },
        };
        let summary_key = format!("{prefix}summary.json");
        self.output.put(&summary_key, &serde_json::to_vec_pretty(&summary).expect("json"))?;
        let outputs = Outputs { parts, manifest: manifest_key, summary: summary_key };
        if self.jobs.complete(id, owner, &outputs, now_ms())? {
            self.cleanup_partials(id);
        } else if self.stopped(id)? {
            // Cancelled (or failed) while we merged: what we wrote must go.
            self.discard_results(id);
        }
        Ok(())
    }

    /// Whether the job was cancelled or failed (workers check this now and
    /// then, and stop).
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
        self.cleanup_partials(id);
        self.discard_results(id);
        Ok(true)
    }

    /// Deletes spilled partials; best effort (the sweeper retries).
    fn cleanup_partials(&self, id: &str) {
        self.delete_prefix(id, &self.layout.partials(id), "partial");
    }

    /// Deletes every object under `prefix`; best effort, failures are logged.
    fn delete_prefix(&self, id: &str, prefix: &str, what: &str) {
        match self.output.list(prefix) {
            Ok(objs) => {
                for o in objs {
                    if let Err(e) = self.output.delete(&o.key) {
                        tracing::warn!(key = o.key, error = %e, "could not delete a {what}");
                    }
                }
            }
            Err(e) => tracing::warn!(job = id, prefix, error = %e, "could not list objects to delete"),
        }
    }

    /// Finishes what crashed: re-splits jobs stuck in SPLITTING, re-dispatches
    /// the missing chunks of a RUNNING job that made no progress for
    /// `stale_ms` (or its finalizer, if every chunk is done), and the
    /// finalizer of a MERGING job whose lease ran out. A job still stuck after
    /// `max_sweeps` sweeps fails with the reason. Returns what it did, a line
    /// per job.
    pub fn sweep(&self, now: u64, policy: &SweepPolicy) -> Result<Vec<String>, PipelineError> {
        let mut report = Vec::new();
        for job in self.jobs.active_jobs()? {
            let stale = policy.orphaned
                || match job.status {
                    Status::Splitting | Status::Running => now.saturating_sub(job.updated_ms) > policy.stale_ms,
                    Status::Merging => job.lease.as_ref().is_none_or(|l| l.until_ms <= now),
                    _ => false,
                };
            if !stale {
                continue;
            }
            let missing: Vec<u32> = (0..job.chunk_count).filter(|c| job.done.binary_search(c).is_err()).collect();
            let what = match job.status {
                Status::Splitting => "the split did not finish".to_string(),
                Status::Running if !missing.is_empty() => {
                    let shown: Vec<String> = missing.iter().take(10).map(u32::to_string).collect();
                    let more = if missing.len() > 10 { ", …" } else { "" };
                    format!("chunks {}{more} of {} did not finish", shown.join(", "), job.chunk_count)
                }
                _ => "the merge did not finish".to_string(),
            };
            if job.sweeps >= policy.max_sweeps {
                let msg = format!("{what} after {} attempts; see the function logs", job.sweeps + 1);
                self.fail(&job.id, JobError::internal(msg.clone()))?;
                report.push(format!("{}: failed: {msg}", job.id));
                continue;
            }
            if !self.jobs.record_sweep(&job.id, job.sweeps, now)? {
                continue; // another sweeper got there first
            }
            match job.status {
                Status::Splitting => self.split(&job.id)?,
                Status::Running if !missing.is_empty() => {
                    let ranges = job.ranges();
                    let tasks = missing
                        .iter()
                        .map(|&i| Task::Chunk {
                            job: job.id.clone(),
                            range: ranges[i as usize],
                            state: StartState::Guess,
                        })
                        .collect();
                    self.dispatcher.dispatch(tasks)?;
                }
                _ => {
                    if let (true, Some(lease)) = (policy.orphaned, &job.lease) {
                        // Its holder is gone: hand the lease back for it.
                        self.jobs.reopen_chunks(&job.id, &lease.owner, &[])?;
                    }
                    self.dispatcher.dispatch(vec![Task::Finalize { job: job.id.clone() }])?
                }
            }
            report.push(format!("{}: {what}; dispatched again (sweep {})", job.id, job.sweeps + 1));
        }
        Ok(report)
    }

    /// Runs one task (what a worker or the finalizer function does).
    pub fn run_task(&self, task: &Task, owner: &str) -> Result<(), PipelineError> {
        match task {
            Task::Chunk { job, range, state } => self.run_chunk(job, *range, *state),
            Task::Finalize { job } => self.finalize(job, owner),
        }
    }
}

/// Formatted result rows in merge order: `ends[i]` is where row `i` ends.
#[derive(Default)]
struct RowBlock {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

/// Groups kept for `summary.json`'s `top_groups`.
const TOP_GROUPS: usize = 10;

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

/// Bytes of formatted rows handed from the merging thread to the writer at a time.
const ROW_BLOCK: usize = 1 << 20;
/// Bytes a chunk reads at a time. Small enough to stay in L2, so that the
/// copy out of the page cache (or socket) and the scan both hit the cache:
/// 8 MiB reads cost ~9% more CPU on the zipf benchmark.
const READ_BUF: usize = 256 * 1024;

/// Streams parts into the object store.
struct StoreSink<'a> {
    store: &'a dyn ObjectStore,
    prefix: &'a str,
    current: Option<Box<dyn ObjectWriter>>,
    job: &'a str,
    faults: Option<&'a dyn FaultPoints>,
}

impl PartSink for StoreSink<'_> {
    fn begin(&mut self, index: usize) -> std::io::Result<()> {
        let key = format!("{}{}", self.prefix, fanfold_engine::part_name(index));
        self.current = Some(self.store.put_stream(&key).map_err(std::io::Error::other)?);
        Ok(())
    }
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.current.as_mut().expect("begun").write_all(bytes)
    }
    fn end(&mut self, info: &PartInfo) -> std::io::Result<()> {
        self.current.take().expect("begun").finish().map_err(std::io::Error::other)?;
        if let Some(f) = self.faults {
            f.part_written(self.job, info.index);
        }
        Ok(())
    }
}
