//! Submit a job for an object and split it into chunk tasks.

use std::io::Read;

use fanfold_engine::{chunk_count, job_id, read_head, Compression, Error as EngineError, Spec};

use super::{Pipeline, SLICE};
use crate::config::{now_ms, unique_owner, PipelineError, Submitted};
use crate::decode::{decode_error, decoded_counting};
use crate::job::{compressed_chunk_count, InputKind, Job, JobError, Source, Status};
use crate::ports::{Created, StoreError, Task};

/// The longest first record (header) a job reads.
pub const MAX_HEAD: u64 = 128 * 1024;

impl Pipeline {
    /// Records a job for `key` with `spec` and splits it. The same object
    /// (same ETag) with the same spec finds the existing job instead.
    pub fn submit(&self, key: &str, spec: &Spec) -> Result<Submitted, PipelineError> {
        self.create(
            key,
            &spec.canonical_json(),
            |etag| job_id(&self.config.bucket, key, etag, spec),
            |id| self.split(id),
        )
    }

    /// Records a job for `key` that is rejected before it starts (its spec
    /// does not parse), so that it can be looked up with the reason.
    pub fn submit_rejected(&self, key: &str, spec_text: &str, error: JobError) -> Result<Submitted, PipelineError> {
        self.create(
            key,
            spec_text,
            |etag| fanfold_engine::job_id_for_text(&self.config.bucket, key, etag, spec_text),
            |id| {
                if self.jobs.fail(id, &error, now_ms())? {
                    self.ended(id, None);
                }
                Ok(())
            },
        )
    }

    fn create(
        &self,
        key: &str,
        spec_text: &str,
        id_of: impl FnOnce(&str) -> String,
        then: impl FnOnce(&str) -> Result<(), PipelineError>,
    ) -> Result<Submitted, PipelineError> {
        let meta = self.input.head(key)?;
        let id = id_of(&meta.etag);
        let source = Source {
            bucket: self.config.bucket.clone(),
            key: key.to_string(),
            etag: meta.etag,
            size: meta.size,
            kind: Default::default(),
        };
        let job = Job::new(id.clone(), source, spec_text.to_string(), now_ms());
        match self.jobs.create_job(&job)? {
            Created::Exists(old) => {
                // A retried or repeated event: finish what the first one may not have.
                self.resume(&old)?;
                Ok(Submitted { id, new: false })
            }
            Created::New => {
                then(&id)?;
                Ok(Submitted { id, new: true })
            }
        }
    }

    /// Submits an object dropped under `incoming/` (the S3 trigger, the
    /// local watcher, and `POST /jobs` without a spec): the spec is the
    /// `_spec.json` beside the object, or `default` when there is none; a
    /// `_spec.json` that does not parse gives a job rejected with the reason.
    pub fn submit_object(&self, key: &str, default: &Spec) -> Result<Submitted, PipelineError> {
        let dir = key.rsplit_once('/').map(|(d, _)| d).unwrap_or("incoming");
        let spec_key = format!("{dir}/_spec.json");
        match self.folder_spec_text(dir)? {
            None => self.submit(key, default),
            Some(t) => match Spec::from_json(&t) {
                // A dataset's file: the folder's version as it is now.
                Ok(spec) if spec.dataset => self.submit_dataset(dir, &spec, |_| true),
                Ok(spec) => self.submit(key, &spec),
                Err(e) => self.submit_rejected(key, &t, JobError::rejected(format!("{spec_key}: {e}"))),
            },
        }
    }

    /// The text of folder `dir`'s `_spec.json`, if it has one.
    pub(super) fn folder_spec_text(&self, dir: &str) -> Result<Option<String>, PipelineError> {
        match self.input.get_range(&format!("{dir}/_spec.json"), 0, None) {
            Ok(mut r) => {
                let mut t = String::new();
                r.read_to_string(&mut t).map_err(StoreError::Io)?;
                Ok(Some(t))
            }
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The job's spec, parsed (it was valid when the job was created).
    pub(super) fn spec_of(job: &Job) -> Result<Spec, PipelineError> {
        Spec::from_json(&job.spec).map_err(|e| PipelineError::Invalid(e.to_string()))
    }

    /// Picks up a job's split or dispatch where it stopped (both are
    /// idempotent); nothing for a job past them.
    fn resume(&self, job: &Job) -> Result<(), PipelineError> {
        match job.status {
            Status::Splitting => self.split(&job.id),
            Status::Running if job.slices_done < job.slice_count => self.fan_out(job, &unique_owner("split")),
            _ => Ok(()),
        }
    }

    /// SPLITTING → RUNNING: reads the header, plans chunks, dispatches them.
    /// The header is stored in the job item (DynamoDB: 400 KB at most), so
    /// it may be at most [`MAX_HEAD`] bytes.
    pub fn split(&self, id: &str) -> Result<(), PipelineError> {
        let job = self.job(id)?;
        if job.status != Status::Splitting {
            return self.resume(&job);
        }
        let spec = Self::spec_of(&job)?;
        if let InputKind::Dataset { files } = job.source.kind {
            return self.resplit_dataset(&job, &spec, files);
        }
        let size = job.source.size;
        let compression = {
            let mut magic = Vec::with_capacity(Compression::MAGIC_LEN);
            self.input
                .get_range_of(&job.source.key, &job.source.etag, 0, Some((Compression::MAGIC_LEN as u64).min(size)))?
                .read_to_end(&mut magic)
                .map_err(StoreError::Io)?;
            Compression::detect(&magic)
        };
        let mut want = 64 * 1024u64;
        let head = loop {
            let (buf, whole, consumed) = match self.read_start(&job, compression, want) {
                Ok(read) => read,
                Err(StartError::Undecodable(e)) => return self.fail(id, JobError::rejected(e.to_string())),
                Err(StartError::Store(e)) => return Err(e.into()),
            };
            let n = buf.len() as u64;
            // A compressed file's decoded size is not known until it is read.
            let known_size = if whole {
                n
            } else if compression.is_none() {
                size
            } else {
                u64::MAX
            };
            match read_head(&buf, known_size, &spec.csv) {
                Ok(Some(mut h)) => {
                    h.compression = compression;
                    h.compressed_head = consumed;
                    break h;
                }
                Ok(None) if !whole && n < MAX_HEAD => want = (want * 4).min(MAX_HEAD),
                Ok(None) if !whole => {
                    let what = if spec.csv.header { "header" } else { "first record" };
                    return self.fail(
                        id,
                        JobError::rejected(format!(
                            "line 1: the {what} is longer than {} KiB (it is stored with the job): are the line \
                             endings lone CRs, or is csv.quote or csv.delimiter wrong?",
                            MAX_HEAD / 1024
                        )),
                    );
                }
                Ok(None) => return Err(PipelineError::Invalid("the object is shorter than its size".into())),
                Err(EngineError::Rejected(b)) => return self.fail(id, JobError::from_bad_row(&b)),
                Err(e) => return self.fail(id, JobError::rejected(e.to_string())),
            }
        };
        if let Err(e) = head.compile(&spec) {
            return self.fail(id, JobError::rejected(e.to_string()));
        }
        // A compressed file is cut in compressed bytes, at member boundaries
        // its chunks find (`crate::members`); a chunk holds about as many
        // decoded bytes as a plain one.
        let (chunk_size, count) = if compression.is_none() {
            (self.config.chunk_size, chunk_count(head.data_start, size, self.config.chunk_size))
        } else {
            let chunk_size = (self.config.chunk_size / COMPRESSION_RATIO).max(1);
            (chunk_size, compressed_chunk_count(&head, size, chunk_size))
        };
        let Ok(count) = u32::try_from(count) else {
            return self.fail(id, JobError::rejected(format!("{count} chunks: use a larger chunk size")));
        };
        let slices = count.div_ceil(SLICE);
        if !self.jobs.start_running(id, &head, chunk_size, count, slices, now_ms())? {
            return Ok(());
        }
        if count == 0 {
            return Ok(self.dispatcher.dispatch(vec![Task::Plan { job: id.to_string() }])?);
        }
        self.fan_out(&self.job(id)?, &unique_owner("split"))
    }
}

/// Why the start of an input could not be read.
enum StartError {
    /// The store failed.
    Store(StoreError),
    /// A compressed input that does not decode.
    Undecodable(std::io::Error),
}

impl Pipeline {
    /// The first `want` bytes of the job's input, decoded, whether they are
    /// all of it, and (compressed) how many compressed bytes gave them.
    fn read_start(&self, job: &Job, compression: Compression, want: u64) -> Result<(Vec<u8>, bool, u64), StartError> {
        let (key, etag, size) = (&job.source.key, &job.source.etag, job.source.size);
        if compression.is_none() {
            let n = want.min(size);
            let mut buf = Vec::with_capacity(n as usize);
            let raw = self.input.get_range_of(key, etag, 0, Some(n)).map_err(StartError::Store)?;
            raw.take(n).read_to_end(&mut buf).map_err(|e| StartError::Store(StoreError::Io(e)))?;
            return Ok((buf, n == size, 0));
        }
        let raw = self.input.get_range_of(key, etag, 0, None).map_err(StartError::Store)?;
        let consumed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut buf = Vec::with_capacity(want as usize);
        let reader = decoded_counting(raw, compression, Some(consumed.clone()))
            .map_err(|e| StartError::Store(StoreError::Io(e)))?;
        match reader.take(want + 1).read_to_end(&mut buf) {
            Ok(_) => {}
            Err(e) if decode_error(&e).is_some() => return Err(StartError::Undecodable(e)),
            Err(e) => return Err(StartError::Store(crate::read_ahead::store_error(e))),
        }
        let whole = buf.len() as u64 <= want;
        buf.truncate(want as usize);
        // Everything decoded so far came from compressed bytes before this
        // (what the decoder holds included): members starting here or later
        // hold none of it.
        Ok((buf, whole, consumed.load(std::sync::atomic::Ordering::Relaxed)))
    }
}

/// About how many decoded bytes a compressed byte holds (gzip on CSV: 3–5):
/// a compressed input's chunks are this much smaller than plain ones.
const COMPRESSION_RATIO: u64 = 4;
