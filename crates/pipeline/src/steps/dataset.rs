//! Datasets: one job over every file of a folder, merged from the files'
//! kept scans, so that a new version of the folder reads only the files
//! that are new or changed.
//!
//! - A **file scan** is a job of its own ([`InputKind::Scan`]): its id
//!   hashes the file's key and ETag and the *scan part* of the spec
//!   ([`Spec::scan_part`]: no output, no names), so every version of a
//!   dataset, and every dataset spec that reads the same columns the same
//!   way, finds the same scan. It runs the usual split, chunks and plan
//!   checks (quote chain, first bad row, totals), stores its key sample
//!   and sketch, and ends DONE without a merge. Its chunk records and
//!   partials stay: they are what the dataset's reducers read.
//! - A **dataset version** ([`InputKind::Dataset`]) is a job whose id
//!   hashes the folder, its sorted (key, ETag) list and the spec: the same
//!   folder contents are the same job. Its file list is stored in pages
//!   of [`FILES_PAGE`] entries (never in the job item); its "chunks" are
//!   its files, each marked done (the usual O(1) counter) once the file's
//!   scan is DONE. The scan that a version started tells it; a version that
//!   found the scan running under another version learns it from the
//!   sweeper, which re-sends the version's undone "chunks".
//! - Its plan merges the scans' totals, sketches and key samples (thinned
//!   to a bound) into a range plan without reading any input; its reducers
//!   walk the files in name order and each file's chunks in order, so
//!   `first` and `last` follow (file name, position).
//!
//! Headers are checked at submit: every file has the first file's columns
//! (by name, in any order), or the version fails naming the file.

use fanfold_engine::{
    job_id_for_text, ChunkRange, ChunkReport, Head, QuoteState, RangePlan, Sketch, SketchBytes, Spec, StartState,
    Transfer,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Pipeline, SLICE};
use crate::config::{now_ms, unique_owner, DatasetFigures, PipelineError, ScanTotals, Submitted};
use crate::job::{ChunkRecord, InputKind, Job, JobError, Outputs, PartialRef, Source, Status};
use crate::ports::{Created, StoreError, Task};

/// Files per page of a version's file list.
pub const FILES_PAGE: u32 = 1000;
/// Files a dataset may hold.
pub const MAX_FILES: usize = 100_000;
/// Sampled keys a dataset's plan keeps at most (each file's sample is
/// thinned evenly to its share, at least [`MIN_FILE_SAMPLE`]).
const SAMPLE_BUDGET: usize = 1 << 18;
const MIN_FILE_SAMPLE: usize = 64;

/// One file of a dataset version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetFile {
    /// Its key.
    pub key: String,
    /// The version read.
    pub etag: String,
    /// Its size.
    pub size: u64,
    /// Its scan's job id.
    pub scan: String,
}

/// Whether `name` (a file name, no folder) is one of a dataset's files:
/// a CSV, maybe compressed, not hidden and not `_`-prefixed (`_spec.json`).
pub fn is_dataset_file(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    !name.starts_with('_')
        && !name.starts_with('.')
        && [".csv", ".csv.gz", ".csv.zst", ".csv.zstd", ".tsv", ".tsv.gz", ".tsv.zst"]
            .iter()
            .any(|e| lower.ends_with(e))
}

impl Pipeline {
    /// The id of the scan of `key` at `etag` for `spec`'s scan part.
    pub fn scan_id(&self, key: &str, etag: &str, spec: &Spec) -> String {
        self.scan_id_of(key, etag, spec, 0)
    }

    /// Generation `generation` of a scan's id: the next one is used once a
    /// scan is expired (see [`Self::live_scan`]).
    fn scan_id_of(&self, key: &str, etag: &str, spec: &Spec, generation: u32) -> String {
        let mut text = format!("scan {}", spec.scan_part().canonical_json());
        if generation > 0 {
            text.push_str(&format!(" #{generation}"));
        }
        job_id_for_text(&self.config.bucket, key, etag, &text)
    }

    /// The scan a new version uses for file `key` at `etag`: the first
    /// generation of its id that is new, still running, or DONE with its
    /// kept objects in place and younger than `Config::scan_keep_ms` (the
    /// bucket's lifecycle rule removes older ones; retention removes those
    /// no version uses any more).
    fn live_scan(&self, key: &str, etag: &str, spec: &Spec) -> Result<String, PipelineError> {
        let now = now_ms();
        for generation in 0..1000 {
            let id = self.scan_id_of(key, etag, spec, generation);
            let Some(scan) = self.jobs.get_job(&id)? else { return Ok(id) };
            if scan.status != Status::Done {
                return Ok(id);
            }
            let old = self.config.scan_keep_ms.is_some_and(|keep| now.saturating_sub(scan.created_ms) > keep);
            if !old {
                match self.kept.head(&self.layout.kept_totals(&id)) {
                    Ok(_) => return Ok(id),
                    Err(StoreError::NotFound(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Err(PipelineError::Invalid(format!("{key}: a thousand expired scans")))
    }

    /// Submits the version of dataset `dir` (a folder of the input store:
    /// `""` for its root, else without a trailing `/`) made of its current
    /// files, those whose name `select` accepts among [`is_dataset_file`]s.
    /// The same files (same ETags) with the same spec find the existing job.
    pub fn submit_dataset(
        &self,
        dir: &str,
        spec: &Spec,
        select: impl Fn(&str) -> bool,
    ) -> Result<Submitted, PipelineError> {
        let prefix = if dir.is_empty() { String::new() } else { format!("{dir}/") };
        let (files, list_hash) = self.folder_files(&prefix, select)?;
        let mut spec = spec.clone();
        spec.dataset = true;
        let spec_text = spec.canonical_json();
        let salted = format!("{list_hash}{}", self.config.version_salt);
        let id = job_id_for_text(&self.config.bucket, &prefix, &salted, &spec_text);
        let source = Source {
            bucket: self.config.bucket.clone(),
            key: prefix.clone(),
            etag: list_hash,
            size: files.iter().map(|f| f.size).sum(),
            kind: InputKind::Dataset { files: files.len() as u32 },
        };
        let job = Job::new(id.clone(), source, spec_text, now_ms());
        let new = match self.jobs.create_job(&job)? {
            Created::Exists(old) if old.status != Status::Splitting => {
                if old.status == Status::Running && old.slices_done < old.slice_count {
                    self.fan_out(&old, &unique_owner("split"))?;
                }
                // Failed for a reason other than its files (or cancelled):
                // the same contents submitted again start it again.
                if matches!(old.status, Status::Failed | Status::Cancelled) {
                    self.retry(&id)?;
                }
                return Ok(Submitted { id, new: false });
            }
            Created::Exists(_) => false, // a submit that stopped half way: finish it
            Created::New => true,
        };
        if files.is_empty() {
            self.fail(&id, JobError::rejected(format!("{}: no CSV files in the folder", self.input.uri(&prefix))))?;
            return Ok(Submitted { id, new });
        }
        if files.len() > MAX_FILES {
            let msg = format!("{} files: a dataset holds at most {MAX_FILES}", files.len());
            self.fail(&id, JobError::rejected(msg))?;
            return Ok(Submitted { id, new });
        }
        self.start_version(&id, &spec, files)?;
        Ok(Submitted { id, new })
    }

    /// The dataset files under `prefix` (not in subfolders) that `select`
    /// accepts, in name order, and the hash of their (key, ETag) list.
    fn folder_files(
        &self,
        prefix: &str,
        select: impl Fn(&str) -> bool,
    ) -> Result<(Vec<DatasetFile>, String), PipelineError> {
        let mut files: Vec<DatasetFile> = self
            .input
            .list(prefix)?
            .into_iter()
            .filter(|m| {
                let name = &m.key[prefix.len()..];
                !name.contains('/') && is_dataset_file(name) && select(name)
            })
            .map(|m| DatasetFile { scan: String::new(), key: m.key, etag: m.etag, size: m.size })
            .collect();
        files.sort_by(|a, b| a.key.cmp(&b.key));
        let mut h = Sha256::new();
        for f in &files {
            for part in [&f.key, &f.etag] {
                h.update((part.len() as u64).to_le_bytes());
                h.update(part.as_bytes());
            }
        }
        Ok((files, hex::encode(&h.finalize()[..16])))
    }

    /// A version's file list (each file's live scan) written, its scans
    /// started and its "chunks" dispatched.
    fn start_version(&self, id: &str, spec: &Spec, mut files: Vec<DatasetFile>) -> Result<(), PipelineError> {
        for f in &mut files {
            f.scan = self.live_scan(&f.key, &f.etag, spec)?;
        }
        for (page, entries) in files.chunks(FILES_PAGE as usize).enumerate() {
            let bytes = serde_json::to_vec(entries).expect("file lists serialize");
            self.output.put(&self.layout.dataset_files(id, page as u32), &bytes)?;
        }
        self.split_dataset(id, spec, &files)
    }

    /// Whether version `job`'s folder still holds exactly its files (a retry
    /// may start it again); `None` when its files changed.
    pub(super) fn version_files(&self, job: &Job) -> Result<Option<Vec<DatasetFile>>, PipelineError> {
        let (files, hash) = self.folder_files(&job.source.key, |_| true)?;
        Ok((hash == job.source.etag).then_some(files))
    }

    /// A retried version's split: its files listed again (its file list went
    /// with its working objects).
    pub(super) fn restart_version(&self, job: &Job) -> Result<(), PipelineError> {
        let spec = Self::spec_of(job)?;
        match self.version_files(job)? {
            Some(files) if !files.is_empty() => self.start_version(&job.id, &spec, files),
            _ => self.fail(&job.id, JobError::rejected("its folder's files changed since it ran")),
        }
    }

    /// The split of a version whose submit stopped half way (the sweeper):
    /// from its stored file list.
    pub(super) fn resplit_dataset(&self, job: &Job, spec: &Spec, files: u32) -> Result<(), PipelineError> {
        let mut list = Vec::with_capacity(files as usize);
        for page in 0..files.div_ceil(FILES_PAGE) {
            match self.dataset_page(&job.id, page) {
                Ok(p) => list.extend(p),
                // Not written yet (a retry that stopped half way): from the folder.
                Err(_) => return self.restart_version(job),
            }
        }
        if list.is_empty() {
            return self.fail(&job.id, JobError::rejected("no CSV files in the folder"));
        }
        self.split_dataset(&job.id, spec, &list)
    }

    /// Starts (or finds) every file's scan, checks the headers, and starts
    /// the version's "chunks" (one per file).
    fn split_dataset(&self, id: &str, spec: &Spec, files: &[DatasetFile]) -> Result<(), PipelineError> {
        let scan_spec = spec.scan_part().canonical_json();
        let mut first: Option<(String, Head)> = None;
        for (i, f) in files.iter().enumerate() {
            let scan = self.scan_job(id, i as u32, f, &scan_spec);
            match self.jobs.create_job(&scan)? {
                Created::New => self.split(&f.scan)?,
                Created::Exists(old) => {
                    if old.source.kind != scan.source.kind && !old.status.is_final() {
                        // Another version's scan, still running: when it
                        // ends it tells us too (this version's own check of
                        // file i runs after this mark is written).
                        self.kept.put(&self.waiter_key(&f.scan, id, i as u32), b"")?;
                    }
                    if old.status == Status::Splitting {
                        self.split(&f.scan)?;
                    }
                    // A scan that failed for a reason other than the file's
                    // (or was cancelled) runs again for this version.
                    let retry = match (&old.status, &old.error) {
                        (Status::Cancelled, _) => true,
                        (Status::Failed, Some(e)) => !e.rejected,
                        _ => false,
                    };
                    if retry {
                        self.retry(&f.scan)?;
                    }
                }
            }
            let scan = self.job(&f.scan)?;
            if let (Status::Failed | Status::Cancelled, Some(e)) = (scan.status, &scan.error) {
                return self.fail(id, file_error(&f.key, e));
            }
            let Some(head) = scan.head else {
                return self.fail(id, JobError::internal(format!("{}: its scan has no header", f.key)));
            };
            match &first {
                None => first = Some((f.key.clone(), head)),
                // With `union`, a column a file lacks is empty in its rows.
                Some((first_key, h)) if !spec.union => {
                    if let Some(msg) = header_difference(h, &head) {
                        let e = JobError::rejected(format!("{}: its header differs from {first_key}'s: {msg}", f.key));
                        return self.fail(id, e);
                    }
                }
                Some(_) => {}
            }
        }
        let (_, head) = first.expect("a dataset has files");
        let count = files.len() as u32;
        if !self.jobs.start_running(id, &head, 0, count, count.div_ceil(SLICE), now_ms())? {
            return Ok(());
        }
        self.fan_out(&self.job(id)?, &unique_owner("split"))
    }

    /// A version's "chunk" `index`: marks file `index` done once its scan is
    /// DONE; fails the version if the scan failed.
    pub(super) fn await_scan(&self, job: &Job, index: u32) -> Result<(), PipelineError> {
        let Some(file) = self.dataset_file(&job.id, index)? else {
            return Err(PipelineError::Invalid(format!("dataset {}: no file {index}", job.id)));
        };
        let Some(scan) = self.jobs.get_job(&file.scan)? else {
            // Its scan is gone (expired): start it again.
            return self.restart_scan(job, index, &file);
        };
        match scan.status {
            Status::Done => {}
            Status::Failed | Status::Cancelled => {
                let e = scan.error.clone().unwrap_or_else(|| JobError::internal("its scan was cancelled"));
                return self.fail(&job.id, file_error(&file.key, &e));
            }
            _ => return Ok(()), // it tells us, or the sweeper asks again
        }
        let totals = self.scan_totals(&file.scan)?;
        let report = ChunkReport {
            index,
            start: 0,
            end: file.size,
            assumed: QuoteState::FieldStart,
            transfer: Transfer::IDENTITY,
            newlines: 0,
            rows: totals.rows_read,
            filtered: totals.rows_filtered,
            bad_rows: totals.rows_skipped,
            samples: Vec::new(),
            error: None,
            groups: totals.groups_estimate,
            overflow: None,
            run_bytes: totals.partial_bytes,
            index_at: 0,
            sketch: SketchBytes::default(),
            members: None,
        };
        let state = StartState::Guess;
        let (rows, bytes) = (report.rows, file.size);
        if !self.jobs.put_chunk(&job.id, &ChunkRecord::new(report, PartialRef::Inline(Vec::new()), state))? {
            return Ok(()); // done already
        }
        if let Some(n) = self.jobs.mark_done(&job.id, index, state, rows, bytes, now_ms())? {
            if n == job.chunk_count {
                self.dispatcher.dispatch(vec![Task::Plan { job: job.id.clone() }])?;
            }
        }
        Ok(())
    }

    fn restart_scan(&self, job: &Job, index: u32, file: &DatasetFile) -> Result<(), PipelineError> {
        let scan_spec = Self::spec_of(job)?.scan_part().canonical_json();
        if let Created::New = self.jobs.create_job(&self.scan_job(&job.id, index, file, &scan_spec))? {
            self.split(&file.scan)?;
        }
        Ok(())
    }

    /// The job of `file`'s scan, started for version `dataset` as its file `index`.
    fn scan_job(&self, dataset: &str, index: u32, file: &DatasetFile, scan_spec: &str) -> Job {
        let source = Source {
            bucket: self.config.bucket.clone(),
            key: file.key.clone(),
            etag: file.etag.clone(),
            size: file.size,
            kind: InputKind::Scan { dataset: dataset.to_string(), index },
        };
        Job::new(file.scan.clone(), source, scan_spec.to_string(), now_ms())
    }

    /// A file scan's plan is done: its totals, sample and sketch are
    /// stored; DONE, and the version that started it is told.
    pub(super) fn scanned(&self, job: &Job, owner: &str) -> Result<(), PipelineError> {
        let outputs = Outputs {
            parts: Vec::new(),
            part_count: 0,
            manifest: String::new(),
            summary: self.layout.kept_totals(&job.id),
        };
        if self.jobs.complete(&job.id, owner, &outputs, now_ms())? {
            self.ended(&job.id, None); // (no event for a scan: its mark is cleared)
            self.tell_dataset(&job.id)?;
        }
        Ok(())
    }

    /// Job `id` ended: if it is a file's scan, the version that started it
    /// looks at it (the file's "chunk" task).
    /// (Other versions that found the scan running left a waiter mark.)
    pub(super) fn tell_dataset(&self, id: &str) -> Result<(), PipelineError> {
        let InputKind::Scan { dataset, index } = self.job(id)?.source.kind else { return Ok(()) };
        let task = |job: String, index: u32| Task::Chunk {
            job,
            range: ChunkRange { index, start: 0, end: 0 },
            state: StartState::Guess,
            member: None,
        };
        let mut tasks = vec![task(dataset, index)];
        let prefix = self.waiter_key(id, "", 0);
        let prefix = &prefix[..prefix.len() - "-0".len()];
        for m in self.kept.list(prefix)? {
            if let Some((version, i)) = m.key[prefix.len()..].rsplit_once('-') {
                if let Ok(i) = i.parse() {
                    tasks.push(task(version.to_string(), i));
                }
            }
        }
        self.dispatch_all(tasks)
    }

    /// The mark of version `dataset` waiting for `scan` as its file `index`.
    fn waiter_key(&self, scan: &str, dataset: &str, index: u32) -> String {
        format!("{}waiters/{dataset}-{index}", self.layout.kept(scan))
    }

    /// File `index` of version `id`.
    fn dataset_file(&self, id: &str, index: u32) -> Result<Option<DatasetFile>, PipelineError> {
        let page = self.dataset_page(id, index / FILES_PAGE)?;
        Ok(page.into_iter().nth((index % FILES_PAGE) as usize))
    }

    /// Page `page` of version `id`'s file list.
    pub(super) fn dataset_page(&self, id: &str, page: u32) -> Result<Vec<DatasetFile>, PipelineError> {
        let bytes = self.read_object(&self.layout.dataset_files(id, page))?;
        serde_json::from_slice(&bytes).map_err(|e| PipelineError::Invalid(format!("dataset {id}'s file list: {e}")))
    }

    /// Calls `each` with every file of version `job`, in name order, a page at a time.
    pub(super) fn each_file(
        &self,
        job: &Job,
        mut each: impl FnMut(DatasetFile) -> Result<(), PipelineError>,
    ) -> Result<(), PipelineError> {
        for page in 0..job.chunk_count.div_ceil(FILES_PAGE) {
            for f in self.dataset_page(&job.id, page)? {
                each(f)?;
            }
        }
        Ok(())
    }

    pub(super) fn scan_totals(&self, scan: &str) -> Result<ScanTotals, PipelineError> {
        serde_json::from_slice(&self.read_kept(&self.layout.kept_totals(scan))?)
            .map_err(|e| PipelineError::Invalid(format!("scan {scan}'s totals: {e}")))
    }

    /// A version's plan: the files' totals, sketches and key samples
    /// merged into its totals and range plan; no input is read.
    pub(super) fn plan_dataset(&self, job: &Job, owner: &str) -> Result<(), PipelineError> {
        let id = &job.id;
        let files = job.chunk_count as usize;
        let mut totals = ScanTotals {
            dataset: Some(DatasetFigures {
                folder: self.input.uri(job.source.key.trim_end_matches('/')),
                ..DatasetFigures::default()
            }),
            ..ScanTotals::default()
        };
        let mut sketch = Sketch::default();
        let mut keys: Vec<Vec<u8>> = Vec::new();
        let share = (SAMPLE_BUDGET / files.max(1)).max(MIN_FILE_SAMPLE);
        self.each_file(job, |f| {
            let scan = self.job(&f.scan)?;
            if scan.status != Status::Done {
                return Err(PipelineError::Invalid(format!("{}: its scan is {:?}", f.key, scan.status)));
            }
            let t = self.scan_totals(&f.scan)?;
            let figures = totals.dataset.as_mut().expect("set above");
            figures.files += 1;
            if matches!(&scan.source.kind, InputKind::Scan { dataset, .. } if dataset == id) {
                figures.files_scanned += 1;
                figures.bytes_scanned += f.size;
            } else {
                figures.files_reused += 1;
                figures.bytes_reused += f.size;
            }
            totals.rows_read += t.rows_read;
            totals.rows_filtered += t.rows_filtered;
            totals.rows_skipped += t.rows_skipped;
            totals.chunks += t.chunks;
            totals.partial_bytes += t.partial_bytes;
            totals.data_bytes += t.data_bytes;
            for mut s in t.bad_row_samples {
                if totals.bad_row_samples.len() < fanfold_engine::MAX_SAMPLES {
                    s.reason = format!("{}: {}", f.key, s.reason);
                    totals.bad_row_samples.push(s);
                }
            }
            let bytes = self.read_kept(&self.layout.scan_sketch(&f.scan))?;
            let s = Sketch::from_bytes(&bytes)
                .ok_or_else(|| PipelineError::Invalid(format!("{}: malformed key sketch", f.key)))?;
            sketch.merge(&s);
            let sample = RangePlan::decode(&self.read_kept(&self.layout.scan_sample(&f.scan))?)
                .map_err(|e| PipelineError::Invalid(format!("{}: key sample: {e}", f.key)))?
                .splitters;
            let step = sample.len().div_ceil(share).max(1);
            keys.extend(sample.into_iter().step_by(step));
            Ok(())
        })?;
        keys.sort_unstable();
        keys.dedup();
        totals.groups_estimate = sketch.estimate().round() as u64;
        let compiled = job
            .head
            .as_ref()
            .ok_or_else(|| PipelineError::Invalid("a dataset without a head".into()))?
            .compile(&Self::spec_of(job)?)?;
        let key_bytes: u64 = keys.iter().map(|k| k.len() as u64).sum();
        let row_bytes = if keys.is_empty() { 0.0 } else { key_bytes as f64 / keys.len() as f64 }
            + 12.0 * compiled.aggs.len() as f64;
        let want = self.config.range_count(totals.groups_estimate as f64 * row_bytes, totals.data_bytes);
        let plan = RangePlan::choose(&keys, want);
        self.output.put(&self.layout.ranges(id), &plan.encode())?;
        self.output.put(&self.layout.scan_totals(id), &serde_json::to_vec(&totals).expect("totals serialize"))?;
        let ranges = plan.ranges() as u32;
        if !self.jobs.start_merging(id, owner, ranges, now_ms())? {
            return Ok(());
        }
        tracing::info!(job = id.as_str(), files, chunks = totals.chunks, ranges, "dataset plan");
        self.dispatch_all((0..ranges).map(|range| Task::Reduce { job: id.to_string(), range }))
    }
}

/// A file's error, for its dataset: the file named first.
fn file_error(key: &str, e: &JobError) -> JobError {
    let mut e = e.clone();
    e.message = fanfold_engine::clip(&format!("{key}: {}", e.message), crate::job::MAX_ERROR_BYTES).into_owned();
    e
}

/// What differs between two files' headers (by name, in any order; files
/// without a header by their width).
fn header_difference(a: &Head, b: &Head) -> Option<String> {
    let (Some(a), Some(b)) = (&a.header, &b.header) else {
        return (a.width != b.width).then(|| format!("{} columns instead of {}", b.width, a.width));
    };
    let (mut x, mut y) = (a.clone(), b.clone());
    x.sort();
    y.sort();
    if x == y {
        return None;
    }
    let missing: Vec<&String> = a.iter().filter(|c| !b.contains(c)).collect();
    let extra: Vec<&String> = b.iter().filter(|c| !a.contains(c)).collect();
    let msg = format!("missing {missing:?}, extra {extra:?}");
    Some(fanfold_engine::clip(&msg, 500).into_owned())
}

/// `results/<folder>/latest.json`: the newest DONE version of a dataset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latest {
    /// The folder (`incoming/<dir>`).
    pub folder: String,
    /// The version's job id.
    pub job: String,
    /// When the version was created (versions are ordered by it, then id).
    pub created_ms: u64,
    /// The version's own manifest.
    pub manifest: String,
    /// The version's summary.
    pub summary: String,
}

impl Pipeline {
    /// Where dataset folder `dir`'s latest version is published, if the
    /// layout has a results prefix: `results/<dir without incoming/>/`.
    pub fn latest_prefix(&self, dir: &str) -> Option<String> {
        let root = self.layout.results_root()?;
        let name = dir.trim_end_matches('/');
        let name = name.strip_prefix("incoming/").unwrap_or(name);
        (!name.is_empty()).then(|| format!("{root}{name}/"))
    }

    /// After a version's DONE: `latest.json` and the stable `manifest.json`
    /// beside it, unless a newer version is already there. (Read, compare,
    /// write: two versions committing in the same instant may leave the
    /// older one; the next version corrects it.)
    pub(super) fn publish_latest(&self, job: &Job, outputs: &Outputs) -> Result<(), PipelineError> {
        let Some(prefix) = self.latest_prefix(&job.source.key) else { return Ok(()) };
        let key = format!("{prefix}latest.json");
        if let Ok(bytes) = self.read_object(&key) {
            if let Ok(old) = serde_json::from_slice::<Latest>(&bytes) {
                if (old.created_ms, old.job.as_str()) > (job.created_ms, job.id.as_str()) {
                    return Ok(());
                }
            }
        }
        // The scans this version uses, for the next one's retention.
        let mut scans = Vec::with_capacity(job.chunk_count as usize);
        self.each_file(job, |f| {
            scans.push(f.scan);
            Ok(())
        })?;
        let scans_key = format!("{prefix}scans.json");
        let before: Vec<String> =
            self.read_object(&scans_key).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        let manifest = self.read_object(&outputs.manifest)?;
        self.output.put(&format!("{prefix}manifest.json"), &manifest)?;
        let latest = Latest {
            folder: job.source.key.trim_end_matches('/').to_string(),
            job: job.id.clone(),
            created_ms: job.created_ms,
            manifest: outputs.manifest.clone(),
            summary: outputs.summary.clone(),
        };
        self.output.put(&key, &serde_json::to_vec_pretty(&latest).expect("json"))?;
        self.output.put(&scans_key, &serde_json::to_vec(&scans).expect("json"))?;
        self.drop_unused_scans(before, &scans);
        Ok(())
    }

    /// Retention: the kept scans the previous latest version used and this
    /// one does not (a file removed or replaced), unless a version still
    /// running uses them, are deleted. Their job records stay; a later
    /// version that meets the same file again scans it under the next
    /// generation of the id ([`Self::live_scan`]). Best effort: a scan left
    /// behind is removed by the bucket's lifecycle rule.
    fn drop_unused_scans(&self, before: Vec<String>, now: &[String]) {
        let now: std::collections::HashSet<&str> = now.iter().map(String::as_str).collect();
        let mut unused: Vec<String> = before.into_iter().filter(|s| !now.contains(s.as_str())).collect();
        if unused.is_empty() {
            return;
        }
        let in_use = || -> Result<std::collections::HashSet<String>, PipelineError> {
            let mut used = std::collections::HashSet::new();
            for v in self.jobs.active_jobs()? {
                if matches!(v.source.kind, InputKind::Dataset { .. }) && !v.status.is_final() {
                    self.each_file(&v, |f| {
                        used.insert(f.scan);
                        Ok(())
                    })?;
                }
            }
            Ok(used)
        };
        match in_use() {
            Ok(used) => unused.retain(|s| !used.contains(s)),
            Err(e) => {
                tracing::warn!(error = %e, "retention: cannot tell which scans running versions use; keeping them");
                return;
            }
        }
        for scan in unused {
            match self.kept.delete_prefix(&self.layout.kept(&scan)) {
                Ok(n) => {
                    tracing::info!(scan = scan.as_str(), objects = n, "retention: a scan no version uses, deleted")
                }
                Err(e) => tracing::warn!(scan = scan.as_str(), error = %e, "retention: deleting a scan"),
            }
        }
    }
}
