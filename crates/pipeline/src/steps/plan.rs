//! The plan: once every chunk is done, check the chunks, choose the key
//! ranges, and start one reducer per range.
//!
//! One pass over the chunk records, a page at a time, in chunk order (so
//! nothing held grows with the chunk count): the quote-state chain (a
//! chunk that guessed wrong is reopened and scanned again with the known
//! state), the first bad row in file order (line numbers from the running
//! newline count), the totals, and the union of the chunks' key sketches.
//! Then the key sample (fixed windows of the object) and the sketch's
//! estimate give the range plan: `R` from the estimated result size, the
//! splitter keys at quantiles of the sample. Both depend on the object and
//! spec alone, so the result files are the same for every chunking.

use std::io::Read;

use fanfold_engine::sample::{merge_sample, read_window, sample_windows, window_keys};
use fanfold_engine::{BadRow, Error as EngineError, QuoteState, RangePlan, Sketch, StartState, MAX_SAMPLES};

use super::{Pipeline, DISPATCH_BATCH, PAGE};
use crate::config::{now_ms, PipelineError, ScanTotals};
use crate::job::{InputKind, Job, JobError, Status};
use crate::members::{read_decoded, MemberChain, Milestones, Object};
use crate::ports::{StoreError, Task};

impl Pipeline {
    /// Checks the chunks and starts the reducers (see the module docs).
    pub fn plan(&self, id: &str, owner: &str) -> Result<(), PipelineError> {
        let started = std::time::Instant::now();
        let job = self.job(id)?;
        let ready = match job.status {
            Status::Running => job.chunks_done == job.chunk_count,
            Status::Merging => job.planning(), // a planner that died
            _ => false,
        };
        if !ready {
            return Ok(());
        }
        let now = now_ms();
        if !self.jobs.take_lease(id, owner, now, now + self.config.lease_ms)? {
            return Ok(());
        }
        // The job read above may be stale: another plan (a duplicate task)
        // may have planned it and released the lease in between. Holding
        // the lease then would keep the commit from taking it until the
        // lease ran out.
        let job = self.job(id)?;
        if !job.planning() {
            self.jobs.release_lease(id, owner)?;
            return Ok(());
        }
        if let InputKind::Dataset { .. } = job.source.kind {
            return self.plan_dataset(&job, owner);
        }
        let head = job.head.clone().ok_or_else(|| PipelineError::Invalid("planning a job without a head".into()))?;
        let compiled = head.compile(&Self::spec_of(&job)?)?;

        let mut totals = ScanTotals::default();
        let mut sketch = Sketch::default();
        let mut state = QuoteState::FieldStart; // the true state at the next chunk's start
        let mut newlines = head.newlines_before_data;
        let mut expected = 0u32;
        let mut again: Vec<Task> = Vec::new(); // chunks to scan (again)
        let mut rescans = 0u64;
        let mut overflow: Option<usize> = None;
        // Where the next chunk's rows start in the data's bytes (a compressed
        // input's chunks count theirs from their first member).
        let mut data_at = head.data_start;
        let compressed = !head.compression.is_none();
        let mut chain = MemberChain::default();
        let mut milestones = Milestones::default();
        let mut after = None;
        loop {
            let page = self.jobs.chunk_page(id, after, PAGE)?;
            let Some(last) = page.last() else { break };
            after = Some(last.report.index);
            for rec in page {
                let r = &rec.report;
                // Never stored (or lost): scan it.
                while expected < r.index {
                    again.extend(Self::chunk_task(&job, expected, StartState::Guess));
                    expected += 1;
                }
                expected = r.index + 1;
                // A compressed chunk that took a false member start: the
                // member the chain names, and the range to scan again from it.
                let mut relink = None;
                if compressed && rec.done {
                    let range =
                        job.chunk(r.index).ok_or_else(|| PipelineError::Invalid("chunk out of range".into()))?;
                    if let Some(m) = &r.members {
                        milestones.push(data_at - r.start, m.first);
                    }
                    relink = chain.check(range, r.members.as_ref()).map(|from| (range, from));
                }
                if let Some((range, from)) = relink {
                    if self.jobs.reopen_chunk(id, owner, r.index, state)? {
                        let (job, state, member) = (id.to_string(), StartState::Known(state), Some(from));
                        again.push(Task::Chunk { job, range, state, member });
                    }
                } else if !rec.done {
                    again.extend(Self::chunk_task(
                        &job,
                        r.index,
                        rec.rerun.map_or(StartState::Guess, StartState::Known),
                    ));
                } else if r.assumed != state && r.end > r.start {
                    if self.jobs.reopen_chunk(id, owner, r.index, state)? {
                        again.extend(Self::chunk_task(&job, r.index, StartState::Known(state)));
                    }
                } else if again.is_empty() && rescans == 0 && !chain.broken() {
                    // Every chunk before this one is right: its error is real, and the first.
                    let shift = data_at - r.start; // chunk bytes → data bytes
                    if let Some(e) = &r.error {
                        let mut e: BadRow = e.clone();
                        e.line += 1 + newlines;
                        e.byte += shift;
                        e.record += totals.rows_read; // the rows of the chunks before
                        return self.fail(id, JobError::from_bad_row(&e));
                    }
                    overflow = overflow.or(r.overflow);
                    for s in &r.samples {
                        if totals.bad_row_samples.len() < MAX_SAMPLES {
                            let mut s = s.clone();
                            s.line += 1 + newlines;
                            s.byte += shift;
                            s.record += totals.rows_read;
                            totals.bad_row_samples.push(s);
                        }
                    }
                    totals.rows_read += r.rows;
                    totals.rows_filtered += r.filtered;
                    totals.rows_skipped += r.bad_rows;
                    totals.partial_bytes += r.run_bytes;
                    let chunk_sketch = r
                        .sketch
                        .sketch()
                        .ok_or_else(|| PipelineError::Invalid(format!("chunk {}: malformed key sketch", r.index)))?;
                    sketch.merge(&chunk_sketch);
                }

                state = r.transfer.apply(state);
                newlines += r.newlines;
                data_at += r.end - r.start;
                if again.len() >= DISPATCH_BATCH {
                    rescans += again.len() as u64;
                    self.dispatch_all(again.drain(..))?;
                }
            }
        }
        while expected < job.chunk_count {
            again.extend(Self::chunk_task(&job, expected, StartState::Guess));
            expected += 1;
        }
        if rescans > 0 || !again.is_empty() {
            tracing::info!(job = id, chunks = rescans + again.len() as u64, "chunks to scan again before the merge");
            self.jobs.release_lease(id, owner)?;
            self.dispatch_all(again)?;
            // Rescans sent mid-walk may all have finished while we held the
            // lease: the plan each last one sent found the lease taken and
            // stopped. Without this the job waited for the sweeper (locally:
            // forever). A second plan besides one a rescan sends after the
            // release is harmless: the lease lets one of them through.
            let now = self.job(id)?;
            if now.status == Status::Running && now.chunks_done == now.chunk_count {
                self.dispatcher.dispatch(vec![Task::Plan { job: id.to_string() }])?;
            }
            return Ok(());
        }
        if compressed {
            if let Some(e) = chain.finish(job.source.size) {
                return self.fail(id, JobError::rejected(e));
            }
        }
        if let Some(a) = overflow {
            let e = EngineError::SumOverflow { aggregate: compiled.aggs[a].name.clone() };
            return self.fail(id, JobError::rejected(e.to_string()));
        }
        totals.chunks = job.chunk_count as u64;
        totals.groups_estimate = sketch.estimate().round() as u64;

        // The key sample and the ranges, over the data's bytes (a compressed
        // input's decoded ones, so that its result files are those of the
        // same file uncompressed).
        let size = if head.compression.is_none() { job.source.size } else { data_at };
        totals.data_bytes = size;
        let windows = sample_windows(head.data_start, size);
        let mut runs = Vec::new();
        if head.compression.is_none() {
            for &w in &windows {
                let (from, to) = read_window(w, head.data_start, size);
                let mut bytes = Vec::with_capacity((to - from) as usize);
                self.input
                    .get_range_of(&job.source.key, &job.source.etag, from, Some(to))?
                    .read_to_end(&mut bytes)
                    .map_err(StoreError::Io)?;
                runs.push(window_keys(&compiled, w, head.data_start, size, &bytes));
            }
        } else {
            // Each window decoded from the nearest chunk's first member before it.
            let reads: Vec<(u64, u64)> = windows.iter().map(|&w| read_window(w, head.data_start, size)).collect();
            let (key, etag) = (&job.source.key, &job.source.etag);
            let object = Object { store: &self.input, key, etag, size: job.source.size };
            let mut bytes = read_decoded(&object, head.compression, &milestones, &reads)?;
            for (&w, b) in windows.iter().zip(bytes.iter_mut()) {
                runs.push(window_keys(&compiled, w, head.data_start, size, b));
            }
        }
        let keys = merge_sample(&runs).map_err(|e| PipelineError::Invalid(format!("the key sample: {e}")))?;
        drop(runs);
        let key_bytes: u64 = keys.iter().map(|k| k.len() as u64).sum();
        let row_bytes = if keys.is_empty() { 0.0 } else { key_bytes as f64 / keys.len() as f64 }
            + 12.0 * compiled.aggs.len() as f64;
        let want = self.config.range_count(totals.groups_estimate as f64 * row_bytes, size);
        if let InputKind::Scan { .. } = job.source.kind {
            // A dataset's file: kept for its dataset's plan and reducers.
            self.kept.put(&self.layout.scan_sample(id), &RangePlan { splitters: keys }.encode())?;
            self.kept.put(&self.layout.scan_sketch(id), &sketch.to_bytes())?;
            self.kept.put(&self.layout.kept_totals(id), &serde_json::to_vec(&totals).expect("totals serialize"))?;
            return self.scanned(&job, owner);
        }
        let plan = RangePlan::choose(&keys, want);
        tracing::info!(
            job = id,
            groups_estimate = totals.groups_estimate,
            sampled_keys = keys.len(),
            ranges = plan.ranges(),
            "range plan"
        );
        let indexes_read = if plan.ranges() > 1 { self.write_slice_tables(id, job.chunk_count, &plan)? } else { 0 };
        self.output.put(&self.layout.ranges(id), &plan.encode())?;
        self.output.put(&self.layout.scan_totals(id), &serde_json::to_vec(&totals).expect("totals serialize"))?;
        let ranges = plan.ranges() as u32;
        if !self.jobs.start_merging(id, owner, ranges, now_ms())? {
            return Ok(()); // lost the lease (or the job ended) meanwhile
        }
        tracing::info!(
            target: crate::metrics::TARGET,
            step = "plan",
            job = id,
            chunks = totals.chunks,
            rescans = u64::from(job.chunks_rerun),
            ranges = u64::from(ranges),
            partial_bytes = totals.partial_bytes,
            indexes_read,
            seconds = crate::metrics::seconds(started),
        );
        self.dispatch_all((0..ranges).map(|range| Task::Reduce { job: id.to_string(), range }))
    }

    /// The range plan of a job that is merging.
    pub(super) fn range_plan(&self, job: &Job) -> Result<RangePlan, PipelineError> {
        let bytes = self.read_object(&self.layout.ranges(&job.id))?;
        RangePlan::decode(&bytes).map_err(|e| PipelineError::Invalid(e.to_string()))
    }
}
