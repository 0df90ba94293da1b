//! The sweeper: finishes what crashed.

use fanfold_engine::StartState;

use super::{Pipeline, PAGE};
use crate::config::{PipelineError, SweepPolicy};
use crate::job::{Job, JobError, Status};
use crate::ports::Task;

impl Pipeline {
    /// Re-splits jobs stuck in SPLITTING; re-dispatches the chunks of a
    /// RUNNING job that made no progress for `stale_ms` (or its plan, if
    /// every chunk is done); the plan of a MERGING job whose planner's lease
    /// ran out; the reducers whose lease ran out (or that never started);
    /// the commit when every range is done. A job still stuck after
    /// `max_sweeps` sweeps fails with the reason. Returns what it did, a
    /// line per job. (With `orphaned`, leases are not waited for: a store
    /// reopened after its process died holds none, see `fanfold-local`.)
    pub fn sweep(&self, now: u64, policy: &SweepPolicy) -> Result<Vec<String>, PipelineError> {
        let mut report = Vec::new();
        for job in self.jobs.active_jobs()? {
            let stale = now.saturating_sub(job.updated_ms) > policy.stale_ms;
            let lease_gone = job.lease.as_ref().is_none_or(|l| l.until_ms <= now);
            let (what, tasks) = match job.status {
                Status::Splitting if stale || policy.orphaned => ("the split did not finish".to_string(), None),
                Status::Running if stale || policy.orphaned => {
                    let (missing, tasks) = self.unfinished_chunks(&job)?;
                    if tasks.is_empty() {
                        ("the plan did not start".to_string(), Some(vec![Task::Plan { job: job.id.clone() }]))
                    } else {
                        (missing, Some(tasks))
                    }
                }
                Status::Merging if job.range_count == 0 && (lease_gone || policy.orphaned) => {
                    ("the plan did not finish".to_string(), Some(vec![Task::Plan { job: job.id.clone() }]))
                }
                Status::Merging if job.range_count > 0 && job.ranges_done == job.range_count => {
                    if !(lease_gone || policy.orphaned) {
                        continue;
                    }
                    ("the commit did not finish".to_string(), Some(vec![Task::Commit { job: job.id.clone() }]))
                }
                Status::Merging if job.range_count > 0 => {
                    let tasks = self.unfinished_ranges(&job, now, stale || policy.orphaned)?;
                    if tasks.is_empty() {
                        continue;
                    }
                    let shown: Vec<String> = tasks
                        .iter()
                        .take(10)
                        .filter_map(|t| match t {
                            Task::Reduce { range, .. } => Some(range.to_string()),
                            _ => None,
                        })
                        .collect();
                    let more = if tasks.len() > 10 { ", …" } else { "" };
                    (
                        format!("key ranges {}{more} of {} did not finish", shown.join(", "), job.range_count),
                        Some(tasks),
                    )
                }
                _ => continue,
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
            match tasks {
                None => self.split(&job.id)?,
                Some(t) => self.dispatch_all(t)?,
            }
            report.push(format!("{}: {what}; dispatched again (sweep {})", job.id, job.sweeps + 1));
        }
        Ok(report)
    }

    /// The chunks of `job` not done, as tasks, and a line that names them.
    fn unfinished_chunks(&self, job: &Job) -> Result<(String, Vec<Task>), PipelineError> {
        let mut tasks = Vec::new();
        let mut expected = 0u32;
        let mut after = None;
        loop {
            let page = self.jobs.chunk_page(&job.id, after, PAGE)?;
            let Some(last) = page.last() else { break };
            after = Some(last.report.index);
            for rec in page {
                while expected < rec.report.index {
                    tasks.extend(Self::chunk_task(job, expected, StartState::Guess));
                    expected += 1;
                }
                expected = rec.report.index + 1;
                if !rec.done {
                    tasks.extend(Self::chunk_task(
                        job,
                        rec.report.index,
                        rec.rerun.map_or(StartState::Guess, StartState::Known),
                    ));
                }
            }
        }
        while expected < job.chunk_count {
            tasks.extend(Self::chunk_task(job, expected, StartState::Guess));
            expected += 1;
        }
        let shown: Vec<String> = tasks
            .iter()
            .take(10)
            .filter_map(|t| match t {
                Task::Chunk { range, .. } => Some(range.index.to_string()),
                _ => None,
            })
            .collect();
        let more = if tasks.len() > 10 { ", …" } else { "" };
        Ok((format!("chunks {}{more} of {} did not finish", shown.join(", "), job.chunk_count), tasks))
    }

    /// The reduce tasks of ranges not done whose lease ran out, and (when
    /// the job is stale) of ranges whose reducer never started.
    fn unfinished_ranges(&self, job: &Job, now: u64, stale: bool) -> Result<Vec<Task>, PipelineError> {
        let mut tasks = Vec::new();
        let mut expected = 0u32;
        let mut after = None;
        let task = |range| Task::Reduce { job: job.id.clone(), range };
        loop {
            let page = self.jobs.range_page(&job.id, after, PAGE)?;
            let Some(last) = page.last() else { break };
            after = Some(last.index);
            for rec in page {
                while expected < rec.index {
                    if stale {
                        tasks.push(task(expected));
                    }
                    expected += 1;
                }
                expected = rec.index + 1;
                if !rec.done && rec.lease.as_ref().is_none_or(|l| l.until_ms <= now) {
                    tasks.push(task(rec.index));
                }
            }
        }
        while expected < job.range_count && stale {
            tasks.push(task(expected));
            expected += 1;
        }
        Ok(tasks)
    }
}
