//! fanfold's pipeline: the steps of a job, written once against narrow ports.
//!
//! ```text
//! submit ─▶ split ─▶ Task::Chunk × N ─▶ run_chunk ─(last one)─▶ Task::Finalize ─▶ finalize
//!                                           ▲                                       │
//!                                           └──── chunks that guessed the quote ────┘
//!                                                 state wrong, with the known state
//! ```
//!
//! Every step is idempotent on at-least-once delivery: the job is created
//! with a condition, a chunk is ADDed to a *set* of done chunks (the caller
//! that completes the set dispatches finalize), the finalizer works under a
//! lease and writes deterministic keys, DONE is conditional on the lease.
//! Data errors are not step errors: they fail the job with a message that
//! names line, byte and column, and the step returns `Ok`.
//!
//! Ports: [`ObjectStore`], [`JobStore`], [`Dispatcher`]. Adapters live in
//! `fanfold-local` (directory, memory, thread pool) and the AWS crates.

mod fan_in;
mod job;
mod ports;
mod steps;

#[cfg(feature = "contract")]
pub mod contract;

pub use job::{ChunkRecord, Job, JobError, Lease, OutputPart, Outputs, PartialRef, Source, Status};
pub use ports::{Created, Dispatcher, JobPage, JobStore, ObjectMeta, ObjectStore, ObjectWriter, StoreError, Task};
pub use steps::{
    incoming_skip_reason, now_ms, Config, FaultPoints, Layout, Pipeline, PipelineError, Submitted, Summary, SweepPolicy,
};
