//! The sweeper: finishes what crashed.

use fanfold_engine::StartState;

use super::{Pipeline, DISPATCH_BATCH, PAGE};
use crate::config::{PipelineError, SweepPolicy};
use crate::job::{InputKind, Job, JobError, Stage, Status};
use crate::ports::Task;

/// What a sweep does for one job.
enum Repair {
    Split,
    Tasks(Vec<Task>),
    /// The chunks not done, sent a page at a time.
    Chunks,
}

impl Pipeline {
    /// Re-splits jobs stuck in SPLITTING; re-dispatches the dispatch slices
    /// of a RUNNING job that are not done and have no live dispatcher
    /// `dispatch_ms` after it started; the chunks of a
    /// RUNNING job that made no progress for `stale_ms` (or its plan, if
    /// every chunk is done); the plan of a MERGING job whose planner's lease
    /// ran out; the reducers whose lease ran out (or that never started);
    /// the commit when every range is done. A job still stuck after
    /// `max_sweeps` sweeps in a row with no progress (see [`Job::progress`])
    /// fails with the reason. Returns what it did, a
    /// line per job. (With `orphaned`, leases are not waited for: a store
    /// reopened after its process died holds none, see `fanfold-local`.)
    pub fn sweep(&self, now: u64, policy: &SweepPolicy) -> Result<Vec<String>, PipelineError> {
        // Dataset folders quiet long enough: their new versions.
        let mut report = self.start_due_datasets(now)?;
        let (mut active, mut repairs) = (0u64, 0u64);
        // Ended jobs whose end event did not go out (the call that ended
        // them died first, or the notifier failed), a while after the end.
        for job in self.jobs.unannounced()? {
            if now.saturating_sub(job.updated_ms) <= policy.dispatch_ms {
                continue;
            }
            if self.announce(&job, self.summary_groups(&job)) {
                repairs += 1;
                report.push(format!("{}: {:?} (its end event sent again)", job.id, job.status));
            }
        }
        for job in self.jobs.active_jobs()? {
            active += 1;
            let stale = now.saturating_sub(job.updated_ms) > policy.stale_ms;
            // A step that takes seconds, started over `dispatch_ms` ago, and
            // not repaired in the last `dispatch_ms` (a repair takes a moment
            // to start: its task is an async invoke).
            let since = |t: Option<u64>| {
                let waited = |t: u64| now.saturating_sub(t) > policy.dispatch_ms;
                waited(t.unwrap_or(job.created_ms)) && job.swept_ms.is_none_or(waited)
            };
            let lease_gone = job.lease.as_ref().is_none_or(|l| l.until_ms <= now);
            let (what, tasks) = match job.status {
                Status::Splitting if stale || since(None) || policy.orphaned => {
                    ("the split did not finish".to_string(), Repair::Split)
                }
                Status::Running if job.slices_done < job.slice_count && (since(job.running_ms) || policy.orphaned) => {
                    let tasks = self.unfinished_work(&job, Stage::Dispatch, now, true)?;
                    if tasks.is_empty() {
                        continue; // every slice not done has a live dispatcher
                    }
                    (Self::naming("dispatch slices", &tasks, job.slice_count), Repair::Tasks(tasks))
                }
                Status::Running if stale || policy.orphaned => {
                    let mut shown = Vec::new();
                    let missing = self.each_unfinished_chunk(&job, |t| {
                        if let (Task::Chunk { range, .. }, true) = (t, shown.len() < 10) {
                            shown.push(range.index.to_string());
                        }
                        Ok(())
                    })?;
                    if missing == 0 {
                        ("the plan did not start".to_string(), Repair::Tasks(vec![Task::Plan { job: job.id.clone() }]))
                    } else {
                        let more = if missing > 10 { ", …" } else { "" };
                        let what = format!("chunks {}{more} of {} did not finish", shown.join(", "), job.chunk_count);
                        (what, Repair::Chunks)
                    }
                }
                Status::Merging if job.range_count == 0 && (lease_gone || policy.orphaned) => {
                    ("the plan did not finish".to_string(), Repair::Tasks(vec![Task::Plan { job: job.id.clone() }]))
                }
                Status::Merging if job.range_count > 0 && job.ranges_done == job.range_count => {
                    if !(lease_gone || policy.orphaned) {
                        continue;
                    }
                    ("the commit did not finish".to_string(), Repair::Tasks(vec![Task::Commit { job: job.id.clone() }]))
                }
                Status::Merging if job.range_count > 0 => {
                    let unstarted = stale || since(job.merging_ms) || policy.orphaned;
                    let tasks = self.unfinished_work(&job, Stage::Reduce, now, unstarted)?;
                    if tasks.is_empty() {
                        continue;
                    }
                    (Self::naming("key ranges", &tasks, job.range_count), Repair::Tasks(tasks))
                }
                _ => continue,
            };
            // Only repairs with no progress between them count towards
            // failing the job: on a slow or overloaded system a dispatcher
            // or reducer may lose its lease while it works, and a job that
            // keeps moving must not fail for it.
            let progress = job.progress();
            // A dataset waiting for its files' scans: they are swept (and
            // fail when stuck) on their own, and a failed scan fails it.
            let waits_on_scans = matches!(job.source.kind, InputKind::Dataset { .. }) && job.status == Status::Running;
            let stuck = if progress > job.swept_progress || waits_on_scans { 0 } else { job.stuck_sweeps };
            if stuck >= policy.max_sweeps {
                let msg = format!("{what} after {} attempts; see the function logs", stuck + 1);
                self.fail(&job.id, JobError::internal(msg.clone()))?;
                report.push(format!("{}: failed: {msg}", job.id));
                continue;
            }
            if !self.jobs.record_sweep(&job.id, job.sweeps, stuck + 1, progress, now)? {
                continue; // another sweeper got there first
            }
            match tasks {
                Repair::Split => self.split(&job.id)?,
                Repair::Tasks(t) => self.dispatch_all(t)?,
                Repair::Chunks => {
                    // A page at a time: nothing here grows with the chunk count.
                    let mut batch = Vec::with_capacity(DISPATCH_BATCH);
                    self.each_unfinished_chunk(&job, |t| {
                        batch.push(t);
                        if batch.len() == DISPATCH_BATCH {
                            self.dispatcher.dispatch(std::mem::take(&mut batch))?;
                        }
                        Ok(())
                    })?;
                    self.dispatch_all(batch)?;
                }
            }
            report.push(format!("{}: {what}; dispatched again (sweep {})", job.id, job.sweeps + 1));
            repairs += 1;
            tracing::info!(target: crate::metrics::TARGET, step = "repair", job = job.id, repairs = 1u64);
        }
        tracing::info!(target: crate::metrics::TARGET, step = "sweep", job = "", active, repairs);
        Ok(report)
    }

    /// "`what` 3, 7, … of 12 did not finish" for dispatch or reduce tasks.
    fn naming(what: &str, tasks: &[Task], of: u32) -> String {
        let shown: Vec<String> = tasks
            .iter()
            .take(10)
            .filter_map(|t| match t {
                Task::Reduce { range: i, .. } | Task::Dispatch { slice: i, .. } => Some(i.to_string()),
                _ => None,
            })
            .collect();
        let more = if tasks.len() > 10 { ", …" } else { "" };
        format!("{what} {}{more} of {of} did not finish", shown.join(", "))
    }

    /// Calls `f` with the task of each chunk of `job` not done, reading
    /// the chunk records a page at a time; returns how many there were.
    fn each_unfinished_chunk(
        &self,
        job: &Job,
        mut f: impl FnMut(Task) -> Result<(), PipelineError>,
    ) -> Result<u32, PipelineError> {
        let mut missing = 0u32;
        let mut each = |index: u32, state: StartState| -> Result<(), PipelineError> {
            missing += 1;
            Self::chunk_task(job, index, state).map_or(Ok(()), &mut f)
        };
        let mut expected = 0u32;
        let mut after = None;
        loop {
            let page = self.jobs.chunk_page(&job.id, after, PAGE)?;
            let Some(last) = page.last() else { break };
            after = Some(last.report.index);
            for rec in page {
                for i in expected..rec.report.index.min(job.chunk_count) {
                    each(i, StartState::Guess)?;
                }
                expected = rec.report.index + 1;
                if !rec.done {
                    each(rec.report.index, rec.rerun.map_or(StartState::Guess, StartState::Known))?;
                }
            }
        }
        for i in expected..job.chunk_count {
            each(i, StartState::Guess)?;
        }
        Ok(missing)
    }

    /// The tasks of `stage`'s slices or ranges not done whose lease ran
    /// out, and (with `unstarted`) of those whose task never started.
    fn unfinished_work(&self, job: &Job, stage: Stage, now: u64, unstarted: bool) -> Result<Vec<Task>, PipelineError> {
        let mut tasks = Vec::new();
        let mut expected = 0u32;
        let mut after = None;
        let task = |i| match stage {
            Stage::Dispatch => Task::Dispatch { job: job.id.clone(), slice: i },
            Stage::Reduce => Task::Reduce { job: job.id.clone(), range: i },
        };
        let count = job.work_count(stage);
        loop {
            let page = self.jobs.work_page(&job.id, stage, after, PAGE)?;
            let Some(last) = page.last() else { break };
            after = Some(last.index);
            for rec in page {
                if unstarted {
                    tasks.extend((expected..rec.index.min(count)).map(task));
                }
                expected = rec.index + 1;
                if !rec.done && rec.lease.as_ref().is_none_or(|l| l.until_ms <= now) {
                    tasks.push(task(rec.index));
                }
            }
        }
        if unstarted {
            tasks.extend((expected..count).map(task));
        }
        Ok(tasks)
    }
}

impl Pipeline {
    /// A DONE job's group count, from its summary (for an end event sent again).
    fn summary_groups(&self, job: &crate::job::Job) -> Option<u64> {
        let bytes = self.read_object(&job.outputs.as_ref()?.summary).ok()?;
        serde_json::from_slice::<serde_json::Value>(&bytes).ok()?["groups"].as_u64()
    }
}
