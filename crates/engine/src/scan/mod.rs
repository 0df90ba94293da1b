//! The chunk scanner: turns the bytes of one chunk into a partial aggregate.
//!
//! A record belongs to the chunk in which its first byte lies. A scanner is
//! fed the chunk's bytes starting one byte *before* the chunk (the lookback
//! byte tells whether the chunk starts right after a newline) and keeps
//! being fed past the chunk's end until the record that straddles it is
//! complete. It is push-based ([`ChunkScanner::feed`] returns how many bytes
//! it consumed; the caller keeps the rest and appends more), so the same
//! code runs on a local file and on a streamed S3 body.
//!
//! Quotes: the scanner cannot know whether its first byte lies inside a
//! quoted field. Unless told ([`StartState::Known`]) it guesses, and
//! reports its guess and its range's [`Transfer`] (the quote state at its
//! end for each state at its start, see [`crate::quotes`]).
//! [`crate::plan::resolve_chain`] checks the guesses; a chunk that guessed
//! wrong is scanned again with the known state. Newline counts per chunk
//! give global line numbers for errors.
//!
//! The scanner drives two parts: the record tokenizer ([`record`]) and
//! row evaluation ([`row`]).

mod record;
mod row;

use memchr::memchr;
use serde::{Deserialize, Serialize};

use crate::agg::{GroupTable, ScanBuffers};
use crate::number::NumberError;
use crate::partial::RunWriter;
use crate::quotes::{Follower, QuoteState, Quoting, Transfer};
use crate::sketch::{Sketch, SketchBytes};
use crate::spec::{AggOp, Compiled, OnBadRow};
use record::{Parsed, Structurals, Tokenizer};
use row::RowWork;

/// How far the scanner reads between checks of which start states it
/// already follows itself (lenient quoting, see [`Follower`]).
const FOLLOW_CHECK: usize = 64 * 1024;

/// How many bad-row samples a chunk (and a job) keeps.
pub const MAX_SAMPLES: usize = 10;

/// Whether the scanner knows the quote state at its start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StartState {
    /// Guess from the first bytes; the guess is validated later.
    Guess,
    /// The state the chunk starts in (from the plan's chain).
    Known(QuoteState),
}

impl StartState {
    /// The short name stored with chunk records and in partial keys:
    /// `g`, or the state's [`QuoteState::code`].
    pub const fn code(self) -> &'static str {
        match self {
            StartState::Guess => "g",
            StartState::Known(s) => s.code(),
        }
    }

    /// The start state of a [`Self::code`].
    pub fn of_code(code: &str) -> Option<StartState> {
        match code {
            "g" => Some(StartState::Guess),
            _ => QuoteState::of_code(code).map(StartState::Known),
        }
    }
}

/// A byte range of the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRange {
    /// The chunk's position in the job.
    pub index: u32,
    /// First byte (global offset).
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

/// A rejected row, with its position (as rust-csv's `Position`: line,
/// byte, record) and column. `line` and `record` are chunk-local (counted
/// from the chunk's start) until [`crate::plan::LineIndex`] makes them
/// global.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadRow {
    /// Line (chunk-local until made global).
    pub line: u64,
    /// Global byte offset of the field, or of the quote for a quoting error.
    pub byte: u64,
    /// The data record's number, 1-based (chunk-local until made global);
    /// 0 for the header.
    #[serde(default)]
    pub record: u64,
    /// What is wrong, for programs (`reason` says it for people).
    #[serde(default)]
    pub kind: BadRowKind,
    /// The column's name, when one column is at fault.
    pub column: Option<String>,
    /// The value, clipped to 200 bytes.
    pub value: Option<String>,
    /// What is wrong.
    pub reason: String,
}

/// What is wrong with a rejected row. In JSON a snake_case name, or an
/// object `{"name": {fields}}` for the kinds with fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BadRowKind {
    /// Not as many fields as the first record.
    WrongFieldCount {
        /// The first record's fields.
        expected: usize,
        /// This record's.
        found: usize,
    },
    /// A value that must be a number is not one.
    NotANumber,
    /// A number of more than 38 digits, or beyond the exponent range.
    TooLarge,
    /// A number of more than 30 decimal places.
    TooPrecise,
    /// A key or text value that is not valid UTF-8.
    InvalidUtf8,
    /// A quoted field never closed before the end of the file.
    UnclosedQuote {
        /// Newlines from the quote to the end.
        lines: u64,
        /// Bytes from the quote to the end.
        bytes: u64,
    },
    /// A quote inside an unquoted field or after a closing quote (RFC 4180).
    MisplacedQuote {
        /// Newlines inside the record the quotes delimit.
        lines: u64,
    },
    /// A header that cannot be read.
    BadHeader,
    /// Recorded by a version that did not say.
    #[default]
    Other,
}

impl std::fmt::Display for BadRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {} (byte {})", self.line, self.byte)?;
        if let Some(c) = &self.column {
            write!(f, ": column {c:?}")?;
        }
        match &self.value {
            Some(v) => write!(f, ": {v:?} {}", self.reason),
            None => write!(f, ": {}", self.reason),
        }
    }
}

/// What a chunk reports besides its partial.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkReport {
    /// The chunk's position in the job.
    pub index: u32,
    /// First byte of the range.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// The quote state the scan assumed at `start`.
    pub assumed: QuoteState,
    /// The quote state at `end` for each state at `start`.
    pub transfer: Transfer,
    /// Newline bytes in the range.
    pub newlines: u64,
    /// Non-empty records that start in the range.
    pub rows: u64,
    /// Rows dropped by `where`.
    pub filtered: u64,
    /// Rows rejected (skip mode) — in fail mode see `error`.
    pub bad_rows: u64,
    /// Up to [`MAX_SAMPLES`] rejected rows (skip mode).
    pub samples: Vec<BadRow>,
    /// The first rejected row in fail mode.
    pub error: Option<BadRow>,
    /// Groups in the partial.
    pub groups: u64,
    /// Index of an aggregate whose sum overflowed the 128-bit range.
    pub overflow: Option<usize>,
    /// The partial's length and where its key index starts.
    #[serde(default)]
    pub run_bytes: u64,
    #[serde(default)]
    /// Where the partial's key index starts.
    pub index_at: u64,
    /// The chunk's group keys, for sizing the job's key ranges.
    #[serde(default)]
    pub sketch: SketchBytes,
    /// A compressed input's chunk: the members it read (`None`: none
    /// starts in its compressed range). `start` and `end` then count
    /// decoded bytes from the start of the member `members.first`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<MemberSpan>,
}

/// The gzip members (zstd frames) a compressed input's chunk read, in
/// compressed bytes: the chunk owns the members that start in its range.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberSpan {
    /// Where its first member starts.
    pub first: u64,
    /// Where the first member past its range starts (the object's size if none does).
    pub next: u64,
    /// Decoding failed (the message, naming the compressed byte): the
    /// stream is corrupt, or `first` was not a member start after all,
    /// which the plan tells apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undecodable: Option<String>,
}

#[derive(Clone, Copy, Debug)]
enum Problem {
    Ragged {
        found: usize,
    },
    Number(NumberError),
    Utf8,
    /// `lines`: the newlines from the quote to the end of the file.
    Unterminated {
        lines: u64,
        bytes: u64,
    },
    /// A quote inside an unquoted field, or a closing quote not followed by
    /// a delimiter or the line's end (RFC 4180 calls the field malformed).
    /// `lines`: the newlines inside the record the quotes delimit.
    StrayQuote {
        lines: u64,
    },
}

#[derive(Clone, Copy, Debug)]
struct Issue {
    problem: Problem,
    /// (column index, field index in the parsed record)
    col: Option<usize>,
    /// Global byte offset the issue points at.
    byte: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Lookback,
    Seek { state: QuoteState },
    Records,
    Drain,
    Done,
}

/// Scans one chunk. See the module docs for the protocol.
pub struct ChunkScanner<'c> {
    work: RowWork<'c>,
    tok: Tokenizer,
    quoting: Option<Quoting>,
    /// Lenient quoting: follows the range from every start state.
    follower: Option<Follower>,
    range: ChunkRange,
    file_size: u64,
    start_state: StartState,
    assumed: QuoteState,
    phase: Phase,
    pos: u64,
    quotes: u64,
    newlines: u64,
    /// Newlines in `[range.start, pos)`, not clipped at the end.
    nl_before_pos: u64,
    rows: u64,
    filtered: u64,
    bad: u64,
    samples: Vec<BadRow>,
    error: Option<BadRow>,
    buffers: ScanBuffers,
}

impl<'c> ChunkScanner<'c> {
    /// `at_record_start`: `range.start` is known to begin a record (the
    /// first data chunk); otherwise feeding starts one byte earlier.
    pub fn new(
        spec: &'c Compiled,
        range: ChunkRange,
        file_size: u64,
        at_record_start: bool,
        start_state: StartState,
    ) -> Self {
        Self::with_buffers(spec, range, file_size, at_record_start, start_state, ScanBuffers::default())
    }

    /// Like [`Self::new`], reusing the buffers of an earlier scan.
    pub fn with_buffers(
        spec: &'c Compiled,
        range: ChunkRange,
        file_size: u64,
        at_record_start: bool,
        start_state: StartState,
        mut buffers: ScanBuffers,
    ) -> Self {
        let ops: Vec<AggOp> = spec.aggs.iter().map(|a| a.op).collect();
        let dialect = spec.dialect;
        let quoting = Quoting::new(dialect.delimiter, dialect.quote, dialect.lenient_quotes);
        let (phase, pos, assumed) = match (at_record_start, start_state) {
            (true, _) => (Phase::Records, range.start, QuoteState::FieldStart),
            (false, StartState::Known(s)) => (Phase::Lookback, range.start - 1, s),
            (false, StartState::Guess) => (Phase::Lookback, range.start - 1, QuoteState::FieldStart),
        };
        let follower = quoting.filter(Quoting::lenient).map(|q| Follower::new(q, range.start, range.end));
        ChunkScanner {
            work: RowWork {
                spec,
                table: GroupTable::new(&ops, &mut buffers),
                key: Vec::new(),
                lower: Vec::new(),
                inputs: Vec::new(),
            },
            tok: Tokenizer::new(dialect),
            quoting,
            follower,
            range,
            file_size,
            start_state,
            assumed,
            phase,
            pos,
            quotes: 0,
            newlines: 0,
            nl_before_pos: 0,
            rows: 0,
            filtered: 0,
            bad: 0,
            samples: Vec::new(),
            error: None,
            buffers,
        }
    }

    /// The input ends at `size` bytes, which was not known when the scanner
    /// was made (a decompressed stream, scanned with `u64::MAX` for its
    /// size): the range ends there too. Call it before feeding the last
    /// bytes, which must then be fed whole.
    pub fn end_of_input(&mut self, size: u64) {
        self.file_size = size;
        self.end_at(size);
    }

    /// The range turned out to end at `end` (no later than it was made
    /// with), learned while reading: call it before feeding the byte at
    /// `end`.
    pub fn end_at(&mut self, end: u64) {
        self.range.end = self.range.end.min(end).max(self.range.start);
        if let Some(f) = &mut self.follower {
            f.end_at(self.range.end);
            if self.phase == Phase::Records && self.pos >= self.range.end {
                // The last record read ended right at the new end (no record
                // was seen to cross it): the scanner is at a record start there.
                f.main_ends(QuoteState::FieldStart);
            }
        }
    }

    /// Where the next fed byte must come from (global offset).
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Whether the chunk's last record has been read.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Feeds bytes starting at [`Self::position`]. Returns how many were
    /// consumed; feed the rest again with more appended. Input that reaches
    /// the end of the file must be fed whole (the scanner knows the size).
    pub fn feed(&mut self, data: &[u8]) -> usize {
        if data.is_empty() && self.pos < self.file_size {
            return 0;
        }
        let eof = self.pos + data.len() as u64 >= self.file_size;
        if self.phase == Phase::Lookback {
            if matches!(self.start_state, StartState::Guess) {
                self.assumed = self.guess(data[0], &data[1.min(data.len())..]);
            }
            // A newline before a record start is one outside quotes.
            let at_record = data[0] == b'\n' && self.assumed == QuoteState::FieldStart;
            self.phase = if at_record { Phase::Records } else { Phase::Seek { state: self.assumed } };
            self.pos += 1;
            return 1 + self.feed(&data[1..]);
        }
        let mut i = 0usize;
        let mut nl_cursor = (0usize, self.nl_before_pos);
        let end_local = (self.range.end.saturating_sub(self.pos)).min(data.len() as u64) as usize;
        let dialect = self.work.spec.dialect;
        // Without quoting, '\n' stands in for the quote: it never matches first.
        let mut cur = Structurals::new(dialect.delimiter, dialect.quote.unwrap_or(b'\n'));
        // Where the follower (lenient quoting) is next told of a record start.
        let mut follow_at = 0usize;
        loop {
            match self.phase {
                Phase::Lookback | Phase::Done => break,
                Phase::Seek { state } => {
                    let window = &data[i..end_local];
                    let found = match self.quoting {
                        Some(q) => q.seek(state, window),
                        None => memchr(b'\n', window).map(|h| h + 1).ok_or(state),
                    };
                    match found {
                        Ok(at) => {
                            i += at;
                            self.phase = Phase::Records;
                        }
                        Err(state) => {
                            i = end_local;
                            self.phase =
                                if self.pos + i as u64 >= self.range.end { Phase::Done } else { Phase::Seek { state } };
                            if self.phase != Phase::Done {
                                break;
                            }
                        }
                    }
                }
                Phase::Records => {
                    let g = self.pos + i as u64;
                    if g >= self.range.end || g >= self.file_size {
                        self.phase = Phase::Done;
                        break;
                    }
                    if i >= follow_at {
                        if let Some(f) = self.follower.as_mut().filter(|f| !f.idle()) {
                            f.advance(&data[..i], self.pos);
                            f.record_start(g);
                        }
                        follow_at = i + FOLLOW_CHECK;
                    }
                    let parsed = self.tok.parse_record(data, i, &mut cur, eof, g);
                    if let (Some(f), Some(q)) = (self.follower.as_mut(), self.quoting) {
                        // The record that holds the range's end gives the scanner's state there.
                        let len = match parsed {
                            Parsed::Record { len, .. } => len,
                            Parsed::Unterminated { .. } => data.len() - i,
                            Parsed::NeedMore => 0,
                        } as u64;
                        if len > 0 && g + len >= self.range.end {
                            let upto = (self.range.end - self.pos) as usize;
                            f.main_ends(q.run(QuoteState::FieldStart, &data[i..upto]));
                        }
                    }
                    match parsed {
                        Parsed::NeedMore => break,
                        Parsed::Record { len, bad_quote: Some(issue), scratch, .. } => {
                            self.rows += 1;
                            let raw = &data[i..(i + len).min(data.len())];
                            let lines = count(raw, b'\n') - u64::from(raw.last() == Some(&b'\n'));
                            let issue = Issue { problem: Problem::StrayQuote { lines }, ..issue };
                            self.reject_record(issue, scratch, data, i..i + len, &mut nl_cursor);
                            i += len;
                        }
                        Parsed::Record { len, empty, scratch, plain, bad_quote: None } => {
                            if !empty {
                                self.rows += 1;
                                let row: &[u8] = if scratch { &self.tok.scratch } else { &data[i..i + len] };
                                match self.work.process(row, &self.tok.fields, &self.tok.fpos, g, plain) {
                                    Ok(true) => {}
                                    Ok(false) => self.filtered += 1,
                                    Err(issue) => self.reject_record(issue, scratch, data, i..i + len, &mut nl_cursor),
                                }
                            }
                            i += len;
                        }
                        Parsed::Unterminated { quote_at, field } => {
                            self.rows += 1;
                            let tail = &data[(quote_at.saturating_sub(self.pos) as usize).min(data.len())..];
                            let problem = Problem::Unterminated { lines: lines_of(tail), bytes: tail.len() as u64 };
                            let issue = Issue { problem, col: Some(field), byte: quote_at };
                            self.reject(issue, &[], data, &mut nl_cursor);
                            i = data.len();
                        }
                    }
                    if self.phase == Phase::Drain {
                        // Fail mode stops reading rows at the record start
                        // `g`: from there the follower follows its states.
                        if let Some(f) = self.follower.as_mut() {
                            f.advance(&data[..(g - self.pos) as usize], self.pos);
                            f.leave_main(g);
                        }
                    }
                }
                Phase::Drain => {
                    i = i.max(end_local);
                    if self.pos + i as u64 >= self.range.end {
                        self.phase = Phase::Done;
                    }
                    break;
                }
            }
        }
        self.account(&data[..i]);
        i
    }

    /// Counts quotes and newlines of consumed bytes inside the range, and
    /// follows them from every start state (lenient quoting).
    fn account(&mut self, consumed: &[u8]) {
        let lo = self.range.start.saturating_sub(self.pos).min(consumed.len() as u64) as usize;
        let hi = self.range.end.saturating_sub(self.pos).min(consumed.len() as u64).max(lo as u64) as usize;
        let inside = count(&consumed[lo..hi], b'\n');
        self.newlines += inside;
        self.nl_before_pos += inside + count(&consumed[..lo], b'\n') + count(&consumed[hi..], b'\n');
        match (self.follower.as_mut(), self.work.spec.dialect.quote) {
            (Some(f), _) => {
                f.advance(consumed, self.pos);
                if self.phase == Phase::Records {
                    f.record_start(self.pos + consumed.len() as u64);
                }
            }
            (None, Some(q)) => self.quotes += count(&consumed[lo..hi], q),
            (None, None) => {}
        }
        self.pos += consumed.len() as u64;
    }

    /// Guesses the quote state at the chunk start, where `lookback` is the
    /// byte before it, from its first quote: a closing quote is followed by
    /// a delimiter or line end and not preceded by one; an opening quote the
    /// other way round. Leniently, outside quotes the lookback byte tells a
    /// field's start from its inside.
    fn guess(&self, lookback: u8, data: &[u8]) -> QuoteState {
        let Some(q) = self.work.spec.dialect.quote else { return QuoteState::FieldStart };
        let d = self.work.spec.dialect.delimiter;
        let is_end = |b: u8| b == d || b == b'\n' || b == b'\r';
        let lenient = self.work.spec.dialect.lenient_quotes;
        if lenient && lookback == q {
            // Most likely a closing quote before a delimiter, else an opening one.
            return match data.first() {
                Some(&b) if is_end(b) => QuoteState::AfterQuote,
                _ => QuoteState::InQuotes,
            };
        }
        let window = &data[..data.len().min(64 * 1024)];
        let closing = memchr(q, window).is_some_and(|at| {
            let next_is_end = match window.get(at + 1) {
                None => self.range.start + at as u64 + 1 >= self.file_size,
                Some(&b) => is_end(b),
            };
            let prev_is_start = at > 0 && (window[at - 1] == d || window[at - 1] == b'\n');
            next_is_end && !prev_is_start
        });
        match (closing, lenient) {
            (true, _) => QuoteState::InQuotes,
            (false, true) if lookback != d && lookback != b'\n' => QuoteState::InField,
            (false, _) => QuoteState::FieldStart,
        }
    }

    /// [`Self::reject`] for the record at `data[at]`, whose fields are in
    /// `scratch` (unquoted) or in `data` itself.
    fn reject_record(
        &mut self,
        issue: Issue,
        scratch: bool,
        data: &[u8],
        at: std::ops::Range<usize>,
        nl_cursor: &mut (usize, u64),
    ) {
        if scratch {
            let row = std::mem::take(&mut self.tok.scratch);
            self.reject(issue, &row, data, nl_cursor);
        } else {
            self.reject(issue, &data[at], data, nl_cursor);
        }
    }

    fn reject(&mut self, issue: Issue, row: &[u8], data: &[u8], nl_cursor: &mut (usize, u64)) {
        self.bad += 1;
        let sample_needed = match self.work.spec.on_bad_row {
            OnBadRow::Fail => self.error.is_none(),
            OnBadRow::Skip => self.samples.len() < MAX_SAMPLES,
        };
        if sample_needed {
            // Line: newlines between the chunk start and the issue's byte.
            let local = (issue.byte.saturating_sub(self.pos) as usize).min(data.len());
            if local >= nl_cursor.0 {
                nl_cursor.1 += count(&data[nl_cursor.0..local], b'\n');
                nl_cursor.0 = local;
            }
            let bad = self.describe(issue, row, nl_cursor.1);
            match self.work.spec.on_bad_row {
                OnBadRow::Fail => self.error = Some(bad),
                OnBadRow::Skip => self.samples.push(bad),
            }
        }
        if self.work.spec.on_bad_row == OnBadRow::Fail {
            self.phase = Phase::Drain;
        }
    }

    fn describe(&self, issue: Issue, row: &[u8], line: u64) -> BadRow {
        let kind = match issue.problem {
            Problem::Ragged { found } => BadRowKind::WrongFieldCount { expected: self.work.spec.width, found },
            Problem::Number(NumberError::NotANumber) => BadRowKind::NotANumber,
            Problem::Number(NumberError::TooLarge) => BadRowKind::TooLarge,
            Problem::Number(NumberError::TooPrecise) => BadRowKind::TooPrecise,
            Problem::Utf8 => BadRowKind::InvalidUtf8,
            Problem::Unterminated { lines, bytes } => BadRowKind::UnclosedQuote { lines, bytes },
            Problem::StrayQuote { lines } => BadRowKind::MisplacedQuote { lines },
        };
        let spec = self.work.spec;
        let column = issue.col.map(|c| {
            spec.column_names
                .get(c)
                .map(|n| crate::clip(n, 200).into_owned())
                .unwrap_or_else(|| format!("column {}", c.saturating_add(1)))
        });
        let value = issue.col.and_then(|c| self.tok.fields.get(c)).filter(|_| !row.is_empty()).map(|&(s, e)| {
            let v = &row[s.min(row.len())..e.min(row.len())];
            let mut t = String::from_utf8_lossy(&v[..v.len().min(200)]).into_owned();
            if v.len() > 200 {
                t.push('…');
            }
            t
        });
        let (value, reason) = match issue.problem {
            Problem::Ragged { found } => (None, format!("expected {} fields, found {found}", spec.width)),
            Problem::Number(NumberError::NotANumber) => (value, "is not a number".to_string()),
            Problem::Number(NumberError::TooLarge) => (value, "is too large (more than 38 digits)".to_string()),
            Problem::Number(NumberError::TooPrecise) => {
                (value, "has too many decimal places (more than 30)".to_string())
            }
            Problem::Utf8 => (value, "is not valid UTF-8".to_string()),
            Problem::Unterminated { lines, bytes } => (
                None,
                format!(
                    "quoted field is never closed before the end of the file (from its quote to the end: {}, \
                     {bytes} bytes)",
                    plural(lines, "line")
                ),
            ),
            Problem::StrayQuote { lines } => {
                let mut reason = "has a quote inside an unquoted field or after a closing quote: quote the whole \
                                  field and double the quotes inside it (\"\")"
                    .to_string();
                if lines > 0 {
                    reason +=
                        &format!("; read by its quotes, the record runs over the next {} too", plural(lines, "line"));
                }
                (None, reason)
            }
        };
        // `rows` already counts this record.
        BadRow { line, byte: issue.byte, record: self.rows, kind, column, value, reason }
    }

    /// Ends the scan: the report and the key-sorted partial.
    pub fn finish(self) -> (ChunkReport, Vec<u8>) {
        let (report, run, _) = self.finish_with_buffers();
        (report, run)
    }

    /// Like [`Self::finish`], also handing back the buffers for the next scan.
    pub fn finish_with_buffers(mut self) -> (ChunkReport, Vec<u8>, ScanBuffers) {
        debug_assert!(self.is_done(), "finish before the scan is done");
        let ops: Vec<AggOp> = self.work.spec.aggs.iter().map(|a| a.op).collect();
        let mut w = RunWriter::with_buffer(&ops, std::mem::take(&mut self.buffers.run));
        // An overflow is not a row problem: the job fails with the same
        // message whether it happens here or when partials are merged.
        let mut sketch = Sketch::default();
        let overflow = if self.error.is_none() {
            self.work.table.finish(&mut self.buffers, |k, accs, texts| {
                sketch.add(k);
                w.push(k, accs, texts)
            })
        } else {
            None
        };
        let groups = w.groups();
        let run = w.finish();
        let index_at = crate::partial::index_at(&run).expect("a run just written has its footer");
        let report = ChunkReport {
            index: self.range.index,
            start: self.range.start,
            end: self.range.end,
            assumed: self.assumed,
            transfer: match &self.follower {
                Some(f) => f.transfer(),
                None => Transfer::parity(self.quotes % 2 == 1),
            },
            newlines: self.newlines,
            rows: self.rows,
            filtered: self.filtered,
            bad_rows: self.bad,
            samples: self.samples,
            error: self.error,
            groups,
            overflow,
            run_bytes: run.len() as u64,
            index_at,
            sketch: SketchBytes::of(&sketch),
            members: None,
        };
        (report, run, self.buffers)
    }
}

/// How many lines `b` spans (a last line without its newline counts).
fn lines_of(b: &[u8]) -> u64 {
    count(b, b'\n') + u64::from(b.last().is_some_and(|&c| c != b'\n'))
}

fn plural(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// How often `b` is in `hay` (SIMD).
fn count(hay: &[u8], b: u8) -> u64 {
    bytecount::count(hay, b) as u64
}
