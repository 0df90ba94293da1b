#![warn(missing_docs)]
//! fanfold's pipeline: the steps of a job, written once against narrow ports.
//!
//! ```text
//! submit ─▶ split ─▶ Task::Chunk × N ─▶ run_chunk ─(last one)─▶ Task::Plan ─▶ plan
//!                        ▲                                                   │
//!                        └── chunks that guessed the quote state wrong ──────┤
//!                                                                            ▼
//!             commit ◀─(last one)── reduce ◀── Task::Reduce × R (one per key range)
//! ```
//!
//! Every step is idempotent on at-least-once delivery: the job is created
//! with a condition; a chunk is marked done once (a flag on its own record
//! and a counter on the job: O(1) whatever the chunk count), and only the
//! call that completes the count dispatches the plan; the planner and the
//! committer hold the job's lease, each reducer its range's; every object
//! is written under a deterministic key; DONE is conditional on the lease.
//! Data errors are not step errors: they fail the job with a message that
//! names line, byte and column, and the step returns `Ok`. The design, and
//! why, is in `docs/architecture.md`.
//!
//! Ports: [`ObjectStore`], [`JobStore`], [`Dispatcher`]. Adapters live in
//! `fanfold-local` (directory, memory, thread pool) and `fanfold-aws`.

pub mod athena;
mod config;
mod decode;
mod fan_in;
mod job;
mod members;
pub mod metrics;
pub mod notify;
mod ports;
mod read_ahead;
mod sources;
mod steps;

#[cfg(feature = "contract")]
pub mod contract;

pub use config::{
    incoming_skip_reason, now_ms, Config, DatasetFigures, FaultPoints, Layout, PipelineError, ResultsAt, ScanTotals,
    Submitted, Summary, SweepPolicy, Timings,
};
pub use job::{
    ChunkRecord, InputKind, Job, JobError, Lease, OutputPart, Outputs, PartialRef, RangeResult, Source, Stage, Status,
    WorkRecord,
};
pub use ports::{Created, Dispatcher, JobPage, JobStore, ObjectMeta, ObjectStore, ObjectWriter, StoreError, Task};
pub use steps::{
    clear_stale_spills, is_dataset_file, DatasetFile, Latest, Pipeline, Retried, SliceAt, FILES_PAGE,
    INDEX_READS_IN_FLIGHT, MAX_FILES, PROGRESS_EVERY, SLICE, TABLE_ROWS,
};
