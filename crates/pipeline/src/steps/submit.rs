//! Submit a job for an object and split it into chunk tasks.

use std::io::Read;

use fanfold_engine::{chunk_count, job_id, read_head, Error as EngineError, Spec};

use super::{Pipeline, SLICE};
use crate::config::{now_ms, unique_owner, PipelineError, Submitted};
use crate::job::{Job, JobError, Source, Status};
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
            |id| Ok(self.jobs.fail(id, &error, now_ms()).map(|_| ())?),
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
        let source =
            Source { bucket: self.config.bucket.clone(), key: key.to_string(), etag: meta.etag, size: meta.size };
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
        let size = job.source.size;
        let mut want = 64 * 1024u64;
        let head = loop {
            let n = want.min(size);
            let mut buf = Vec::with_capacity(n as usize);
            self.input
                .get_range_of(&job.source.key, &job.source.etag, 0, Some(n))?
                .read_to_end(&mut buf)
                .map_err(StoreError::Io)?;
            match read_head(&buf, size, &spec.csv) {
                Ok(Some(h)) => break h,
                Ok(None) if n < size && n < MAX_HEAD => want = (want * 4).min(MAX_HEAD),
                Ok(None) if n < size => {
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
        let count = chunk_count(head.data_start, size, self.config.chunk_size);
        let Ok(count) = u32::try_from(count) else {
            return self.fail(id, JobError::rejected(format!("{count} chunks: use a larger chunk size")));
        };
        let slices = count.div_ceil(SLICE);
        if !self.jobs.start_running(id, &head, self.config.chunk_size, count, slices, now_ms())? {
            return Ok(());
        }
        if count == 0 {
            return Ok(self.dispatcher.dispatch(vec![Task::Plan { job: id.to_string() }])?);
        }
        self.fan_out(&self.job(id)?, &unique_owner("split"))
    }
}
