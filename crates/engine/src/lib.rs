#![warn(missing_docs)]
//! fanfold's engine: exact group-by aggregation of CSV byte ranges.
//!
//! Pure and synchronous: no threads, no I/O beyond `Read`, no paths. The
//! pipeline crate drives it through these steps:
//!
//! 1. [`read_head`] reads the header from the first bytes; [`Spec::compile`]
//!    resolves the spec's columns; [`plan_chunks`] cuts the data into ranges.
//! 2. A [`ChunkScanner`] per range parses the records that *start* in it and
//!    aggregates them into a key-sorted partial (a run, see [`partial`]),
//!    reporting its quote-state transfer ([`quotes`]) and newline counts.
//! 3. [`resolve_chain`] checks every chunk's quote-state guess; wrong ones
//!    are scanned again with [`StartState::Known`].
//! 4. [`Merger`] merges the runs (streaming k-way) and [`PartWriter`] cuts
//!    the formatted rows into capped parts.
//!
//! ```
//! use fanfold_engine::*;
//! let csv = b"Song,Date,Number of Plays\nUmbrella,2020-01-01,100\nUmbrella,2020-01-01,50\n";
//! let head = read_head(csv, csv.len() as u64, &Spec::default().csv).unwrap().unwrap();
//! let compiled = head.compile(&Spec::default()).unwrap();
//! let mut runs = Vec::new();
//! for range in plan_chunks(head.data_start, csv.len() as u64, 7) {
//!     let (_report, run) = scan_slice(&compiled, &head, range, csv, StartState::Guess);
//!     runs.push(run);
//! }
//! let mut merger = Merger::new(runs.iter().map(|r| &r[..]).collect(), vec![]).unwrap();
//! let mut fmt = RowFormatter::new(b',');
//! let mut out = Vec::new();
//! while let Some((key, accs, texts)) = merger.next_group().unwrap() {
//!     fmt.row(key, accs, texts, &mut out);
//! }
//! assert_eq!(out, b"Umbrella,2020-01-01,150\n");
//! ```

mod acc;
mod agg;
mod compression;
pub mod index;
mod key;
pub mod kinds;
mod merge;
pub mod number;
pub mod partial;
pub mod pieces;
mod plan;
pub mod quotes;
pub mod sample;
mod scan;
pub mod sketch;
mod spec;
mod swar;
mod top;
mod write;

use sha2::{Digest, Sha256};

pub use acc::Acc;
pub use agg::ScanBuffers;
pub use compression::Compression;
pub use index::RunIndex;
pub use merge::{Group, Merger};
pub use plan::{chunk_count, plan_chunks, read_head, resolve_chain, Head, LineIndex};
pub use quotes::{QuoteState, Transfer};
pub use sample::RangePlan;
pub use scan::{BadRow, BadRowKind, ChunkRange, ChunkReport, ChunkScanner, MemberSpan, StartState, MAX_SAMPLES};
pub use sketch::{Sketch, SketchBytes};
pub use spec::{
    AggOp, Aggregate, ColumnRef, Compiled, Dialect, Filter, FilterOp, GroupColumn, OnBadRow, Spec, SpecError,
    Transform, DEFAULT_MAX_FILE_BYTES,
};
pub use top::{TopGroup, TopGroups};
pub use write::{part_name, push_csv_field, PartInfo, PartSink, PartWriter, RowFormatter};

/// Engine errors. Data errors carry a position.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    /// The spec does not fit the file.
    Spec(#[from] SpecError),
    #[error("the input is empty: no header or records")]
    /// The input holds no record.
    EmptyInput,
    #[error("{0}")]
    /// A bad row in `fail` mode, or a bad header.
    Rejected(BadRow),
    #[error("{what} is {bytes} bytes, more than output.max_file_bytes = {max}")]
    /// A result row (or header) bigger than a part may be.
    RowTooLarge {
        /// The row's size.
        bytes: u64,
        /// `output.max_file_bytes`.
        max: u64,
        /// Which row: the header, or a result row.
        what: &'static str,
    },
    #[error("{aggregate:?}: a sum overflows the 128-bit integer range (beyond ±1.7e38)")]
    /// A sum left the 128-bit range.
    SumOverflow {
        /// The aggregate's output name.
        aggregate: String,
    },
    #[error("reading a partial aggregate: {0}")]
    /// A partial could not be read (corrupt or truncated).
    Partial(std::io::Error),
    #[error("writing output: {0}")]
    /// A result file could not be written.
    Output(std::io::Error),
}

/// `s` cut to at most `max` bytes (at a character boundary) with "…" when
/// cut: every value echoed back in a message is capped, so a message about a
/// 1 GB header is not 1 GB.
pub fn clip(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return s.into();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end]).into()
}

/// A job's identity: 32 hex chars of SHA-256 over the source and the
/// canonical spec. The same object (same ETag) with the same spec is the
/// same job.
pub fn job_id(bucket: &str, key: &str, etag: &str, spec: &Spec) -> String {
    job_id_for_text(bucket, key, etag, &spec.canonical_json())
}

/// [`job_id`] for a spec given as text (used for a spec that does not parse).
pub fn job_id_for_text(bucket: &str, key: &str, etag: &str, spec: &str) -> String {
    let mut h = Sha256::new();
    for part in [bucket, key, etag, spec] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    let d = h.finalize();
    hex::encode(&d[..16])
}

/// Scans one range of an in-memory file, feeding it in one piece.
pub fn scan_slice(
    spec: &Compiled,
    head: &Head,
    range: ChunkRange,
    file: &[u8],
    state: StartState,
) -> (ChunkReport, Vec<u8>) {
    let mut s = ChunkScanner::new(spec, range, file.len() as u64, range.start == head.data_start, state);
    while !s.is_done() {
        let p = s.position() as usize;
        let n = s.feed(&file[p..]);
        assert!(n > 0 || s.is_done(), "a whole-file feed always progresses");
    }
    s.finish()
}

#[cfg(test)]
mod clip_tests {
    #[test]
    fn clip_cuts_at_a_char_boundary() {
        assert_eq!(super::clip("abc", 3), "abc");
        assert_eq!(super::clip("abcd", 3), "abc…");
        assert_eq!(super::clip("aé", 2), "a…");
    }
}
