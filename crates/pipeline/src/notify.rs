//! Telling someone that a job ended: the [`Notifier`] port. The call that
//! moved a job to DONE, FAILED or CANCELLED (the job store's conditional
//! transition lets exactly one through) sends one [`JobEvent`]; a step that
//! runs twice finds the job ended and sends nothing. Adapters: EventBridge
//! on AWS (`fanfold-aws`), a signed webhook in `fanfold serve`.

use serde::{Deserialize, Serialize};

use crate::job::{Job, JobError, Status};
use crate::ports::StoreError;

/// A job's state change to DONE, FAILED or CANCELLED: the detail of the
/// EventBridge event (`source: fanfold`, `detail-type: Job State Change`)
/// and the body of the webhook.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobEvent {
    /// The job id.
    pub job_id: String,
    /// DONE, FAILED or CANCELLED.
    pub status: Status,
    /// The input (`s3://bucket/key` or a path).
    pub source: String,
    /// Where the result files are (`…/results/<job>/`), once DONE.
    pub result_prefix: Option<String>,
    /// The QuickSight manifest, once DONE.
    pub manifest: Option<String>,
    /// Rows read.
    pub rows: u64,
    /// Groups in the result, once DONE.
    pub groups: Option<u64>,
    /// Why it failed.
    pub error: Option<JobError>,
    /// When (ms since the epoch).
    pub time_ms: u64,
}

/// The EventBridge `detail-type` of a [`JobEvent`].
pub const DETAIL_TYPE: &str = "Job State Change";
/// The EventBridge `source` of a [`JobEvent`].
pub const SOURCE: &str = "fanfold";

/// Sends job events. Must not block a step for long: a slow receiver is
/// the adapter's to queue or retry.
pub trait Notifier: Send + Sync {
    /// One job ended.
    fn job_ended(&self, event: &JobEvent) -> Result<(), StoreError>;
}

impl JobEvent {
    /// The event of `job` (as it is now, ended), with its uris.
    pub fn of(job: &Job, uri: impl Fn(&str) -> String, groups: Option<u64>, now_ms: u64) -> JobEvent {
        let outputs = job.outputs.as_ref();
        JobEvent {
            job_id: job.id.clone(),
            status: job.status,
            source: uri(&job.source.key),
            result_prefix: outputs.map(|o| {
                let m = uri(&o.manifest);
                m.strip_suffix("manifest.json").map(str::to_string).unwrap_or(m)
            }),
            manifest: outputs.map(|o| uri(&o.manifest)),
            rows: job.rows,
            groups,
            error: job.error.clone(),
            time_ms: now_ms,
        }
    }
}
