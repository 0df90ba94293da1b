//! Scan one chunk into its partial: on one thread, or in pieces on every
//! core the worker has (`Config::scan_threads`), with a few ranged GETs in
//! flight per piece (`Config::read_streams`).

use std::io::Read;

use fanfold_engine::{pieces, ChunkRange, ChunkReport, ChunkScanner, Compiled, ScanBuffers, StartState};

use super::{CancelCheck, Pipeline};
use crate::config::{now_ms, PipelineError};
use crate::job::{ChunkRecord, Job, PartialRef, Status};
use crate::ports::Task;
use crate::read_ahead::{store_error, ReadAhead};

thread_local! {
    /// A worker's scan and read buffers, reused from chunk to chunk.
    static BUFFERS: std::cell::RefCell<(ScanBuffers, Vec<u8>)> = std::cell::RefCell::default();
}

/// Bytes a chunk reads at a time. Small enough to stay in L2, so that the
/// copy out of the page cache (or socket) and the scan both hit the cache:
/// 8 MiB reads cost ~9% more CPU on the zipf benchmark.
pub(super) const READ_BUF: usize = 256 * 1024;

/// What a chunk's first read asks for beyond the chunk's end: most records
/// that straddle it end within this, and a tiny chunk reads a little more
/// than itself instead of a whole [`READ_BUF`] (which made a file cut into
/// a million 1-byte chunks read 250 GB).
const FIRST_READ_SLACK: usize = 4096;

/// A scanned range: its report, its run, and the buffers to reuse.
pub(super) type Scanned = (ChunkReport, Vec<u8>, ScanBuffers, Vec<u8>);

impl Pipeline {
    /// Scans one chunk, stores its partial, marks it done, and dispatches
    /// the plan if it completed the chunk count. `member`: a compressed
    /// input's chunk starts at that member (the plan's chain says so)
    /// instead of the first one it finds.
    pub fn run_chunk(
        &self,
        id: &str,
        range: ChunkRange,
        state: StartState,
        member: Option<u64>,
    ) -> Result<(), PipelineError> {
        let started = std::time::Instant::now();
        let job = self.job(id)?;
        // While the plan walks the chunks it sends rescans of the ones that
        // guessed wrong (a rescan dropped here was never sent again, and the
        // job hung).
        if job.status != Status::Running && !job.planning() {
            return Ok(()); // finished, failed or cancelled meanwhile: nothing to do
        }
        if job.chunk(range.index) != Some(range) {
            // A task of an earlier run of the job (before a retry), cut
            // another way: this run sends its own.
            return Ok(());
        }
        if let crate::job::InputKind::Dataset { .. } = job.source.kind {
            return self.await_scan(&job, range.index); // a dataset's "chunk" is a file
        }
        let head = job.head.as_ref().ok_or_else(|| PipelineError::Invalid("running job without a head".into()))?;
        let spec = Self::spec_of(&job)?;
        let compiled = head.compile(&spec)?;
        let first = if head.compression.is_none() { range.start == head.data_start } else { range.index == 0 };
        // A compressed stream is read from its start by one thread.
        let cut = if head.compression.is_none() {
            pieces::cut(range, self.config.scan_threads, self.config.min_piece)
        } else {
            vec![range]
        };
        let (report, run, buffers) = if cut.len() == 1 {
            let buffers = BUFFERS.with(|b| b.take());
            let scanned = if head.compression.is_none() {
                self.scan_range(&job, &compiled, range, first, state, buffers)?
            } else {
                self.scan_stream(&job, &compiled, (range, state, member), head.compression, buffers)?
            };
            let Some((report, run, scan_buffers, buf)) = scanned else {
                return Ok(()); // the job stopped
            };
            (report, run, Some((scan_buffers, buf)))
        } else {
            let Some((report, run)) = self.scan_pieces(&job, &compiled, range, &cut, first, state)? else {
                return Ok(());
            };
            (report, run, None)
        };
        let key = self.layout.partial(&self.layout.work(&job), range.index, state);
        let (mut reuse, mut reuse_len) = (None, 0u64);
        let partial = if run.len() <= self.config.inline_limit {
            PartialRef::Inline(run)
        } else {
            self.store_for(&job).put(&key, &run)?;
            reuse_len = run.len() as u64;
            reuse = Some(run);
            PartialRef::Object(key.clone())
        };
        if let Some((mut scan_buffers, buf)) = buffers {
            if let Some(run) = reuse {
                scan_buffers.run = run;
            }
            BUFFERS.with(|b| *b.borrow_mut() = (scan_buffers, buf));
        }
        let spilled = matches!(partial, PartialRef::Object(_));
        let partial_bytes = match &partial {
            PartialRef::Inline(run) => run.len() as u64,
            PartialRef::Object(_) => reuse_len,
        };
        // (A compressed input's report counts decoded bytes.)
        let (rows, bytes) = (report.rows, report.end - report.start);
        if !self.jobs.put_chunk(id, &ChunkRecord::new(report, partial, state))? {
            // Done already (a duplicate), or waiting for a scan from another state.
            return Ok(());
        }
        if let Some(f) = &self.faults {
            f.chunk_stored(id, range.index)?;
        }
        if let Some(n) = self.jobs.mark_done(id, range.index, state, rows, bytes, now_ms())? {
            tracing::info!(
                target: crate::metrics::TARGET,
                step = "chunk",
                job = id,
                rows,
                bytes,
                partial_bytes,
                rescans = u64::from(matches!(state, StartState::Known(_))),
                seconds = crate::metrics::seconds(started),
            );
            if n == job.chunk_count {
                self.dispatcher.dispatch(vec![Task::Plan { job: id.to_string() }])?;
            }
        }
        if spilled && self.stopped(id)? {
            // Cancelled while we scanned: the cleanup may have run before our put.
            self.store_for(&job).delete(&key)?;
        }
        Ok(())
    }

    /// Scans `range` in `cut`'s pieces, one thread each (a piece is read and
    /// scanned exactly as a chunk is), rescans the pieces whose guessed start
    /// state the chain contradicts, and joins them into the chunk's report
    /// and partial (`fanfold_engine::pieces`: the same bytes as one scan).
    /// Memory: each piece's scan buffers and run, then the joined run.
    fn scan_pieces(
        &self,
        job: &Job,
        compiled: &Compiled,
        range: ChunkRange,
        cut: &[ChunkRange],
        first: bool,
        state: StartState,
    ) -> Result<Option<(ChunkReport, Vec<u8>)>, PipelineError> {
        let scan = |i: usize, from: StartState| {
            let scanned = self.scan_range(job, compiled, cut[i], first && i == 0, from, Default::default())?;
            Ok::<_, PipelineError>(scanned.map(|(report, run, ..)| (report, run)))
        };
        let starts: Vec<(usize, StartState)> =
            (0..cut.len()).map(|i| (i, if i == 0 { state } else { StartState::Guess })).collect();
        let Some(mut scanned) = on_threads(&starts, scan)? else { return Ok(None) };
        let reports: Vec<ChunkReport> = scanned.iter().map(|s| s.0.clone()).collect();
        let wrong: Vec<(usize, StartState)> =
            pieces::wrong_guesses(&reports).into_iter().map(|(i, s)| (i, StartState::Known(s))).collect();
        if !wrong.is_empty() {
            tracing::info!(
                job = job.id,
                chunk = range.index,
                pieces = wrong.len(),
                "rescanning pieces that guessed wrong"
            );
            let Some(again) = on_threads(&wrong, scan)? else { return Ok(None) };
            for ((i, _), s) in wrong.iter().zip(again) {
                scanned[*i] = s;
            }
        }
        Ok(Some(pieces::join(compiled, range, scanned, Vec::new())?))
    }

    /// Reads and scans one range (a chunk or a piece of one) from the input,
    /// at the version the job was planned on; `None` when the job stopped.
    fn scan_range(
        &self,
        job: &Job,
        compiled: &Compiled,
        range: ChunkRange,
        first: bool,
        state: StartState,
        (scan_buffers, mut buf): (ScanBuffers, Vec<u8>),
    ) -> Result<Option<Scanned>, PipelineError> {
        let (id, size) = (&job.id, job.source.size);
        let (key, etag) = (&job.source.key, &job.source.etag);
        let mut scanner = ChunkScanner::with_buffers(compiled, range, size, first, state, scan_buffers);
        if buf.len() < READ_BUF {
            buf.resize(READ_BUF, 0);
        }
        let mut filled = 0usize;
        let mut next = scanner.position(); // next byte to request
        let mut window_end = 0u64;
        let mut reader: Option<Box<dyn Read + Send>> = None;
        let mut want = (range.end.saturating_sub(next) as usize).saturating_add(FIRST_READ_SLACK).min(READ_BUF);
        let mut cancel = CancelCheck::new();
        while !scanner.is_done() {
            if cancel.due() && self.stopped(id)? {
                tracing::info!(job = id, chunk = range.index, "job stopped; abandoning the chunk");
                return Ok(None);
            }
            if next < size {
                if filled == buf.len() {
                    // A record longer than the buffer: grow (doubling keeps it O(record)).
                    let n = buf.len() * 2;
                    buf.resize(n, 0);
                }
                if reader.is_none() {
                    let streams = self.config.read_streams;
                    if streams > 1 && range.end.saturating_sub(next) > self.config.read_block {
                        // The range itself with several GETs in flight; what
                        // lies past its end (the end of its last record) with one.
                        window_end = range.end;
                        let input = self.input.clone();
                        let block = self.config.read_block;
                        reader = Some(Box::new(ReadAhead::new(input, key, etag, (next, window_end), streams, block)));
                    } else {
                        window_end = (range.end.max(next) + self.config.read_window).min(size);
                        reader = Some(self.input.get_range_of(key, etag, next, Some(window_end))?);
                    }
                }
                let to = buf.len().min(filled + want);
                want = (want * 2).min(READ_BUF);
                let got = reader.as_mut().expect("opened").read(&mut buf[filled..to]).map_err(store_error)?;
                if got == 0 {
                    return Err(PipelineError::Invalid(format!("object ended at byte {next}, expected {size} bytes")));
                }
                next += got as u64;
                filled += got;
                if next >= window_end {
                    reader = None;
                }
            }
            let consumed = scanner.feed(&buf[..filled]);
            buf.copy_within(consumed..filled, 0);
            filled -= consumed;
            if next >= size && !scanner.is_done() && consumed == 0 {
                return Err(PipelineError::Invalid("chunk scan stalled at the end of the object".into()));
            }
        }
        drop(reader);
        let (report, run, scan_buffers) = scanner.finish_with_buffers();
        Ok(Some((report, run, scan_buffers, buf)))
    }
}

/// Runs `f` on each item on its own thread; the first error wins, and
/// `None` from any (the job stopped) makes the whole `None`.
fn on_threads<T: Send>(
    items: &[(usize, StartState)],
    f: impl Fn(usize, StartState) -> Result<Option<T>, PipelineError> + Sync,
) -> Result<Option<Vec<T>>, PipelineError> {
    let results: Vec<Result<Option<T>, PipelineError>> = std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = items.iter().map(|&(i, st)| s.spawn(move || f(i, st))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    });
    let mut out = Vec::with_capacity(results.len());
    for r in results {
        match r? {
            Some(t) => out.push(t),
            None => return Ok(None),
        }
    }
    Ok(Some(out))
}
