//! One chunk scanned as several pieces, each on its own core.
//!
//! A worker with several vCPUs cuts its chunk into pieces, scans each with
//! its own [`crate::ChunkScanner`] (a piece is scanned exactly as a chunk
//! is: it skips the record it starts inside and finishes the one that
//! straddles its end), checks the pieces' quote chain as the plan checks the
//! chunks' ([`wrong_guesses`]; the caller rescans those from the known
//! state), and [`join`]s them into the one report and the one partial the
//! chunk would have had: the same groups, counts, bad rows and line numbers
//! whatever the number of pieces. The job sees one chunk either way.

use std::io::Cursor;

use crate::partial::RunWriter;
use crate::quotes::{QuoteState, Transfer};
use crate::scan::{ChunkRange, ChunkReport, MAX_SAMPLES};
use crate::sketch::{Sketch, SketchBytes};
use crate::spec::{AggOp, Compiled};
use crate::{Error, Merger};

/// Cuts `range` into at most `n` pieces of at least `min` bytes each (one
/// piece when the range is too small to share). Every piece keeps the
/// chunk's index.
pub fn cut(range: ChunkRange, n: usize, min: u64) -> Vec<ChunkRange> {
    let len = range.end - range.start;
    let n = (n.max(1) as u64).min(len / min.max(1)).max(1);
    (0..n)
        .map(|i| ChunkRange {
            index: range.index,
            start: range.start + len * i / n,
            end: range.start + len * (i + 1) / n,
        })
        .collect()
}

/// The pieces whose assumed start state the chain contradicts, each with
/// the state it really starts in. The first piece starts where the chunk
/// does (the chunk's own state is checked by the plan). A transfer is a
/// property of the bytes, not of the assumed state, so one rescan of each
/// piece named here is enough.
pub fn wrong_guesses(pieces: &[ChunkReport]) -> Vec<(usize, QuoteState)> {
    let Some(first) = pieces.first() else { return Vec::new() };
    let mut state = first.assumed;
    let mut wrong = Vec::new();
    for (i, r) in pieces.iter().enumerate() {
        if r.assumed != state {
            wrong.push((i, state));
        }
        state = r.transfer.apply(state);
    }
    wrong
}

/// Joins pieces (in order, their guesses checked) into the chunk's report
/// and partial, written into `out` (its capacity reused). A bad row's line
/// is chunk-local, so each piece's lines move down by the newlines of the
/// pieces before it.
pub fn join(
    spec: &Compiled,
    range: ChunkRange,
    pieces: Vec<(ChunkReport, Vec<u8>)>,
    out: Vec<u8>,
) -> Result<(ChunkReport, Vec<u8>), Error> {
    let ops: Vec<AggOp> = spec.aggs.iter().map(|a| a.op).collect();
    let first = &pieces[0].0;
    let mut report = ChunkReport {
        index: range.index,
        start: range.start,
        end: range.end,
        assumed: first.assumed,
        transfer: Transfer::IDENTITY,
        newlines: 0,
        rows: 0,
        filtered: 0,
        bad_rows: 0,
        samples: Vec::new(),
        error: None,
        groups: 0,
        overflow: None,
        run_bytes: 0,
        index_at: 0,
        sketch: SketchBytes::default(),
        members: None,
    };
    for (r, _) in &pieces {
        let (before, records) = (report.newlines, report.rows);
        let moved = |mut b: crate::BadRow| {
            b.line += before;
            b.record += records;
            b
        };
        report.transfer = report.transfer.then(&r.transfer);
        report.newlines += r.newlines;
        if report.error.is_some() {
            // Fail mode: the chunk's scan stops reading rows at its first
            // error and only follows quotes and counts newlines from there on.
            continue;
        }
        report.error = r.error.clone().map(moved);
        let room = MAX_SAMPLES - report.samples.len();
        report.samples.extend(r.samples.iter().take(room).cloned().map(moved));
        report.rows += r.rows;
        report.filtered += r.filtered;
        report.bad_rows += r.bad_rows;
        report.overflow = report.overflow.or(r.overflow);
    }
    let mut w = RunWriter::with_buffer(&ops, out);
    let mut sketch = Sketch::default();
    if report.error.is_none() {
        // The chunk scanner leaves a chunk's overflowing rows out and
        // reports the aggregate; merging the pieces does the same.
        let names: Vec<String> = spec.aggs.iter().map(|a| a.name.clone()).collect();
        let sources: Vec<Cursor<Vec<u8>>> = pieces.into_iter().map(|(_, run)| Cursor::new(run)).collect();
        let mut merger = Merger::new(sources, names.clone()).map_err(Error::Partial)?;
        loop {
            match merger.next_group() {
                Ok(Some((key, accs, texts))) => {
                    sketch.add(key);
                    w.push(key, accs, texts);
                }
                Ok(None) => break,
                Err(Error::SumOverflow { aggregate }) => {
                    report.overflow = report.overflow.or(names.iter().position(|n| *n == aggregate));
                    break;
                }
                Err(e) => return Err(e),
            }
        }
    }
    report.groups = w.groups();
    let run = w.finish();
    report.run_bytes = run.len() as u64;
    report.index_at = crate::partial::index_at(&run).map_err(Error::Partial)?;
    report.sketch = SketchBytes::of(&sketch);
    Ok((report, run))
}
