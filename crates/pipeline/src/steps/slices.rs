//! Slice tables: where each key range's slice of each partial is, worked
//! out once by the plan, so that a reducer reads a slice with one GET
//! instead of two (its partial's index, then the slice).
//!
//! After the plan has chosen the ranges, it reads the index of every
//! partial a reducer would otherwise read an index of (spilled, larger than
//! `Config::read_whole`), with [`INDEX_READS_IN_FLIGHT`] GETs at a time, and
//! writes a table per [`TABLE_ROWS`] chunks, `plan/slices/TTTTT`, column by
//! column: range r's column is the (start, end, run bytes) of each of the
//! table's chunks, one ranged GET for its reducer. Memory: one table,
//! `TABLE_ROWS × R × 24` bytes (24 MB at R = 1,000), whatever the chunk
//! count. The run bytes are a check: a reducer uses an entry only for the
//! partial it was computed from, and reads the index itself otherwise
//! (an entry of 0 bytes: an inline or small partial; or a table that is
//! not there). The offsets are the ones the reducer would compute from the
//! same index with the same bounds (`RunIndex::slice_of`), so the slices,
//! and the result, are the same either way.

use std::io::Read;

use fanfold_engine::{RangePlan, RunIndex};

use super::{Pipeline, PAGE};
use crate::config::PipelineError;
use crate::job::{ChunkRecord, PartialRef};
use crate::ports::StoreError;

/// Chunks per slice table.
pub const TABLE_ROWS: u32 = 1000;
/// Index GETs the plan has in flight.
pub const INDEX_READS_IN_FLIGHT: usize = 16;
/// Bytes of one entry: start, end, the partial's run bytes.
const ENTRY: usize = 24;

/// Where a slice is: `[start, end)` of the partial's object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SliceAt {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

impl Pipeline {
    /// Whether a reducer reads `rec`'s index to find its slice (and so the
    /// plan reads it instead).
    fn needs_index(&self, rec: &ChunkRecord) -> bool {
        matches!(rec.partial, PartialRef::Object(_)) && rec.report.run_bytes > self.config.read_whole
    }

    /// Writes job `id`'s slice tables for `plan` (see the module docs).
    /// Returns how many partials' indexes it read.
    pub(super) fn write_slice_tables(&self, id: &str, chunks: u32, plan: &RangePlan) -> Result<u64, PipelineError> {
        let ranges = plan.ranges();
        let mut read = 0u64;
        for t in 0..chunks.div_ceil(TABLE_ROWS) {
            let first = t * TABLE_ROWS;
            let rows = TABLE_ROWS.min(chunks - first) as usize;
            let mut recs: Vec<ChunkRecord> = Vec::with_capacity(rows);
            let mut after = first.checked_sub(1);
            while recs.len() < rows {
                let page = self.jobs.chunk_page(id, after, PAGE.min(rows - recs.len()))?;
                let Some(last) = page.last() else { break };
                after = Some(last.report.index);
                recs.extend(page.into_iter().filter(|r| r.report.index < first + rows as u32));
            }
            if recs.len() != rows || recs.iter().enumerate().any(|(i, r)| r.report.index != first + i as u32) {
                return Err(PipelineError::Invalid(format!("slice table {t}: the chunk records are not complete")));
            }
            let needed = recs.iter().filter(|r| self.needs_index(r)).count() as u64;
            if needed == 0 {
                continue; // its reducers read these partials whole (or from memory)
            }
            // Row by row (each partial's R slices), written column by column.
            let per = rows.div_ceil(INDEX_READS_IN_FLIGHT).max(1);
            let results: Vec<Result<Vec<u8>, PipelineError>> = std::thread::scope(|s| {
                let handles: Vec<_> =
                    recs.chunks(per).map(|group| s.spawn(move || self.slice_rows(group, plan))).collect();
                handles.into_iter().map(|h| h.join().expect("a slice-table thread panicked")).collect()
            });
            let mut by_row = Vec::with_capacity(rows * ranges * ENTRY);
            for r in results {
                by_row.extend(r?);
            }
            read += needed;
            let mut table = Vec::with_capacity(by_row.len());
            for range in 0..ranges {
                for row in 0..rows {
                    let at = (row * ranges + range) * ENTRY;
                    table.extend_from_slice(&by_row[at..at + ENTRY]);
                }
            }
            self.output.put(&self.layout.slice_table(id, t), &table)?;
        }
        Ok(read)
    }

    /// Each record's entry for every range, in row order.
    fn slice_rows(&self, recs: &[ChunkRecord], plan: &RangePlan) -> Result<Vec<u8>, PipelineError> {
        let ranges = plan.ranges();
        let mut out = Vec::with_capacity(recs.len() * ranges * ENTRY);
        for rec in recs {
            let key = match &rec.partial {
                PartialRef::Object(key) if self.needs_index(rec) => key,
                _ => {
                    out.resize(out.len() + ranges * ENTRY, 0); // read whole or from memory: no entry
                    continue;
                }
            };
            let (index_at, len) = (rec.report.index_at, rec.report.run_bytes);
            let mut tail = Vec::new();
            self.output.get_range(key, index_at, Some(len))?.read_to_end(&mut tail).map_err(StoreError::Io)?;
            let idx = RunIndex::parse(&tail, index_at)
                .map_err(|e| PipelineError::Invalid(format!("chunk {}: {e}", rec.report.index)))?;
            for r in 0..ranges {
                let (lo, hi) = plan.bounds(r);
                let (s, e) = idx.slice_of(lo, hi);
                out.extend_from_slice(&s.to_le_bytes());
                out.extend_from_slice(&e.to_le_bytes());
                out.extend_from_slice(&len.to_le_bytes());
            }
        }
        Ok(out)
    }
}

/// A reducer's column of the slice tables, one table at a time.
pub(super) struct SliceColumn {
    range: u32,
    chunks: u32,
    table: Option<(u32, Option<Vec<u8>>)>,
}

impl SliceColumn {
    /// Range `range`'s column, in a job of `chunks` chunks.
    pub(super) fn new(range: u32, chunks: u32) -> Self {
        SliceColumn { range, chunks, table: None }
    }

    /// Where `rec`'s slice is, if its table says so for this very partial.
    pub(super) fn at(&mut self, p: &Pipeline, id: &str, rec: &ChunkRecord) -> Result<Option<SliceAt>, PipelineError> {
        let index = rec.report.index;
        if !p.needs_index(rec) || index >= self.chunks {
            return Ok(None);
        }
        let t = index / TABLE_ROWS;
        if self.table.as_ref().map(|(have, _)| *have) != Some(t) {
            let rows = TABLE_ROWS.min(self.chunks - t * TABLE_ROWS) as u64;
            let column = rows * ENTRY as u64;
            let from = u64::from(self.range) * column;
            let bytes = match p.output.get_range(&p.layout.slice_table(id, t), from, Some(from + column)) {
                Ok(mut r) => {
                    let mut v = Vec::with_capacity(column as usize);
                    r.read_to_end(&mut v).map_err(StoreError::Io)?;
                    // A table of another range count is not this plan's.
                    (v.len() as u64 == column).then_some(v)
                }
                Err(StoreError::NotFound(_)) => None, // planned without tables: read the indexes
                Err(e) => return Err(e.into()),
            };
            self.table = Some((t, bytes));
        }
        let Some((_, Some(column))) = &self.table else { return Ok(None) };
        let at = ((index - t * TABLE_ROWS) as usize) * ENTRY;
        let word = |i: usize| u64::from_le_bytes(column[at + i * 8..at + i * 8 + 8].try_into().expect("8 bytes"));
        let (start, end, len) = (word(0), word(1), word(2));
        Ok((len == rec.report.run_bytes && start <= end && end <= rec.report.index_at)
            .then_some(SliceAt { start, end }))
    }
}
