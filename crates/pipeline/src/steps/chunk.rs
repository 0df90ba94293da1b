//! Scan one chunk into its partial.

use std::io::Read;

use fanfold_engine::{ChunkRange, ChunkScanner, ScanBuffers, StartState};

use super::{CancelCheck, Pipeline};
use crate::config::{now_ms, PipelineError};
use crate::job::{ChunkRecord, PartialRef, Status};
use crate::ports::{StoreError, Task};

thread_local! {
    /// A worker's scan and read buffers, reused from chunk to chunk.
    static BUFFERS: std::cell::RefCell<(ScanBuffers, Vec<u8>)> = std::cell::RefCell::default();
}

/// Bytes a chunk reads at a time. Small enough to stay in L2, so that the
/// copy out of the page cache (or socket) and the scan both hit the cache:
/// 8 MiB reads cost ~9% more CPU on the zipf benchmark.
const READ_BUF: usize = 256 * 1024;

/// What a chunk's first read asks for beyond the chunk's end: most records
/// that straddle it end within this, and a tiny chunk reads a little more
/// than itself instead of a whole [`READ_BUF`] (which made a file cut into
/// a million 1-byte chunks read 250 GB).
const FIRST_READ_SLACK: usize = 4096;

impl Pipeline {
    /// Scans one chunk, stores its partial, marks it done, and dispatches
    /// the plan if it completed the chunk count.
    pub fn run_chunk(&self, id: &str, range: ChunkRange, state: StartState) -> Result<(), PipelineError> {
        let job = self.job(id)?;
        // While the plan walks the chunks it sends rescans of the ones that
        // guessed wrong (a rescan dropped here was never sent again, and the
        // job hung).
        if job.status != Status::Running && !job.planning() {
            return Ok(()); // finished, failed or cancelled meanwhile: nothing to do
        }
        let head = job.head.as_ref().ok_or_else(|| PipelineError::Invalid("running job without a head".into()))?;
        let spec = Self::spec_of(&job)?;
        let compiled = head.compile(&spec)?;
        let size = job.source.size;
        let (scan_buffers, mut buf) = BUFFERS.with(|b| b.take());
        let mut scanner =
            ChunkScanner::with_buffers(&compiled, range, size, range.start == head.data_start, state, scan_buffers);
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
                return Ok(());
            }
            if next < size {
                if filled == buf.len() {
                    // A record longer than the buffer: grow (doubling keeps it O(record)).
                    let n = buf.len() * 2;
                    buf.resize(n, 0);
                }
                if reader.is_none() {
                    window_end = (range.end.max(next) + self.config.read_window).min(size);
                    reader =
                        Some(self.input.get_range_of(&job.source.key, &job.source.etag, next, Some(window_end))?);
                }
                let to = buf.len().min(filled + want);
                want = (want * 2).min(READ_BUF);
                let got = reader.as_mut().expect("opened").read(&mut buf[filled..to]).map_err(StoreError::Io)?;
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
        let (report, run, mut scan_buffers) = scanner.finish_with_buffers();
        let key = self.layout.partial(id, range.index, state);
        let partial = if run.len() <= self.config.inline_limit {
            PartialRef::Inline(run)
        } else {
            self.output.put(&key, &run)?;
            scan_buffers.run = run;
            PartialRef::Object(key.clone())
        };
        BUFFERS.with(|b| *b.borrow_mut() = (scan_buffers, buf));
        let spilled = matches!(partial, PartialRef::Object(_));
        let rows = report.rows;
        if !self.jobs.put_chunk(id, &ChunkRecord::new(report, partial, state))? {
            // Done already (a duplicate), or waiting for a scan from another state.
            return Ok(());
        }
        if let Some(f) = &self.faults {
            f.chunk_stored(id, range.index)?;
        }
        if let Some(n) = self.jobs.mark_done(id, range.index, state, rows, range.end - range.start, now_ms())? {
            if n == job.chunk_count {
                self.dispatcher.dispatch(vec![Task::Plan { job: id.to_string() }])?;
            }
        }
        if spilled && self.stopped(id)? {
            // Cancelled while we scanned: the cleanup may have run before our put.
            self.output.delete(&key)?;
        }
        Ok(())
    }
}
