//! Dispatch: sending a job's chunk tasks, a tree of slices, resumable.
//!
//! A job's chunks are cut into slices of [`SLICE`] chunk tasks. The step
//! that starts the job (the splitter) sends one dispatch task per slice
//! but the first and sends the first slice itself, so a job of up to
//! [`SLICE`] chunks needs no extra hop, and one of 100,000 chunks is 100
//! dispatchers sending 1,000 tasks each, side by side. Each dispatcher
//! holds its slice's lease and records how far it got every
//! [`PROGRESS_EVERY`] tasks; a retried or repeated dispatcher resumes
//! there. A task may be sent twice only within the [`PROGRESS_EVERY`]
//! tasks of a dispatcher that died: chunk tasks are idempotent, so that
//! costs a duplicate scan, never a duplicate row. The sweeper sends the
//! dispatch task of any slice not done whose lease ran out (see
//! `SweepPolicy::dispatch_ms`).
//!
//! No dispatcher runs into its function's timeout: after
//! `Config::dispatch_budget_ms` it records its progress, frees the lease
//! and sends its own slice's dispatch task again, which resumes there. On
//! AWS a slice is sent in a second or two and this never happens; on a
//! slow or overloaded system (the emulator) it keeps each invocation short.

use std::time::Instant;

use fanfold_engine::StartState;

use super::{CancelCheck, Pipeline, PAGE};
use crate::config::{now_ms, PipelineError};
use crate::job::{Job, Stage, Status};
use crate::ports::Task;

/// Chunk tasks per dispatch slice.
pub const SLICE: u32 = 1000;
/// Chunk tasks sent between two progress records of a dispatcher, at most.
pub const PROGRESS_EVERY: u32 = 100;
/// Chunk tasks sent at once (between two looks at the clock).
const SEND_STEP: u32 = 50;

impl Pipeline {
    /// Dispatches the job's slices that are not done and whose lease is
    /// free, sending the first of them itself (`owner` holds its lease) and
    /// a dispatch task for each of the others. What a splitter does after
    /// creating the job, and again when it finds the job already running
    /// (a retried or repeated event).
    pub(super) fn fan_out(&self, job: &Job, owner: &str) -> Result<(), PipelineError> {
        let now = now_ms();
        let mut open = Vec::new();
        let mut expected = 0u32;
        let mut after = None;
        loop {
            let page = self.jobs.work_page(&job.id, Stage::Dispatch, after, PAGE)?;
            let Some(last) = page.last() else { break };
            after = Some(last.index);
            for rec in page {
                open.extend(expected..rec.index);
                expected = rec.index + 1;
                if !rec.done && rec.lease.as_ref().is_none_or(|l| l.until_ms <= now || l.owner == owner) {
                    open.push(rec.index);
                }
            }
        }
        open.extend(expected..job.slice_count);
        let Some((&first, rest)) = open.split_first() else { return Ok(()) };
        self.dispatch_all(rest.iter().map(|&slice| Task::Dispatch { job: job.id.clone(), slice }))?;
        self.dispatch_slice(&job.id, first, owner)
    }

    /// Sends the chunk tasks of slice `slice` from where its last holder
    /// stopped, holding the slice's lease; marks it done. After
    /// `dispatch_budget_ms` it hands the rest to a new dispatch task.
    pub fn dispatch_slice(&self, id: &str, slice: u32, owner: &str) -> Result<(), PipelineError> {
        let job = self.job(id)?;
        if job.status != Status::Running || slice >= job.slice_count {
            return Ok(());
        }
        let lease = self.config.dispatch_lease_ms;
        let now = now_ms();
        if !self.jobs.take_work(id, Stage::Dispatch, slice, owner, now, now + lease)? {
            return Ok(()); // done, or another dispatcher holds it
        }
        let started = Instant::now();
        let rec = self.jobs.work_page(id, Stage::Dispatch, slice.checked_sub(1), 1)?;
        let chunks = job.slice_chunks(slice);
        let resume = rec.first().filter(|r| r.index == slice).map_or(0, |r| r.next);
        let mut next = chunks.start.saturating_add(resume).min(chunks.end);
        let (mut recorded, mut recorded_at) = (next, Instant::now());
        let mut check = CancelCheck::new();
        while next < chunks.end {
            if check.due() && self.stopped(id)? {
                return Ok(());
            }
            let to = next.saturating_add(SEND_STEP).min(chunks.end);
            self.dispatch_all((next..to).filter_map(|i| Self::chunk_task(&job, i, StartState::Guess)))?;
            if let Some(f) = &self.faults {
                f.chunks_dispatched(id, slice, to - chunks.start);
            }
            next = to;
            let due = next - recorded >= PROGRESS_EVERY || recorded_at.elapsed().as_millis() as u64 >= lease / 3;
            if next == chunks.end || !due {
                continue;
            }
            let now = now_ms();
            let hand_off = started.elapsed().as_millis() as u64 >= self.config.dispatch_budget_ms;
            // Handing off frees the lease at once, so that the new task can take it.
            let until = if hand_off { now } else { now + lease };
            if !self.jobs.work_progress(id, Stage::Dispatch, slice, owner, next - chunks.start, now, until)? {
                return Ok(()); // the job stopped, or the lease went to a repair
            }
            if hand_off {
                tracing::info!(
                    job = id,
                    slice,
                    sent = next - chunks.start,
                    "dispatch budget spent; handing the rest on"
                );
                self.dispatcher.dispatch(vec![Task::Dispatch { job: id.to_string(), slice }])?;
                return Ok(());
            }
            (recorded, recorded_at) = (next, Instant::now());
        }
        self.jobs.work_done(id, Stage::Dispatch, slice, owner, now_ms())?;
        Ok(())
    }
}
