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
//! Quotes: with RFC 4180 quoting every quote character flips the in-quotes
//! state, so the state at a chunk's start is the parity of all quotes before
//! it. The scanner cannot know it; unless told ([`StartState::Known`]) it
//! guesses from the first quote it sees, and reports its guess and the
//! parity of the quotes in its range. [`crate::plan::resolve_chain`] checks
//! the guesses; a chunk that guessed wrong is scanned again with the known
//! state. Newline counts per chunk give global line numbers for errors.

use memchr::{memchr, memchr2, memchr3};
use serde::{Deserialize, Serialize};

use crate::agg::{GroupTable, Input, ScanBuffers};
use crate::key::push_field;
use crate::number::{Decimal, NumberError};
use crate::partial::RunWriter;
use crate::sketch::{Sketch, SketchBytes};
use crate::spec::{AggOp, Compiled, FilterOp, OnBadRow, Transform};

/// How many bad-row samples a chunk (and a job) keeps.
pub const MAX_SAMPLES: usize = 10;

/// Whether the scanner knows the quote state at its start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StartState {
    /// Guess from the first bytes; the guess is validated later.
    Guess,
    /// `true`: the chunk starts inside a quoted field.
    Known(bool),
}

/// A byte range of the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRange {
    pub index: u32,
    pub start: u64,
    pub end: u64,
}

/// A rejected row. `line` is chunk-local (newlines between the chunk's
/// start and `byte`) until [`crate::plan::LineIndex`] makes it global.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadRow {
    pub line: u64,
    pub byte: u64,
    pub column: Option<String>,
    pub value: Option<String>,
    pub reason: String,
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
    pub index: u32,
    pub start: u64,
    pub end: u64,
    /// The quote state the scan assumed at `start`.
    pub assumed_in_quotes: bool,
    /// Whether the range holds an odd number of quote characters.
    pub quote_parity: bool,
    /// Newline bytes in the range.
    pub newlines: u64,
    /// Non-empty records that start in the range.
    pub rows: u64,
    /// Rows dropped by `where`.
    pub filtered: u64,
    /// Rows rejected (skip mode) — in fail mode see `error`.
    pub bad_rows: u64,
    pub samples: Vec<BadRow>,
    /// The first rejected row in fail mode.
    pub error: Option<BadRow>,
    pub groups: u64,
    /// Index of an aggregate whose sum overflowed the 128-bit range.
    pub overflow: Option<usize>,
    /// The partial's length and where its key index starts.
    #[serde(default)]
    pub run_bytes: u64,
    #[serde(default)]
    pub index_at: u64,
    /// The chunk's group keys, for sizing the job's key ranges.
    #[serde(default)]
    pub sketch: SketchBytes,
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
    Seek { inq: bool },
    Records,
    Drain,
    Done,
}

enum Parsed {
    /// A complete record of `len` bytes including its terminator; `empty` if it holds nothing.
    Record {
        len: usize,
        empty: bool,
        scratch: bool,
        /// The record holds only ASCII bytes above 0x01: its fields are
        /// valid UTF-8 and need no escaping in a key.
        plain: bool,
        /// The first misplaced quote: the record is rejected. (Its extent
        /// still follows the quote parity, so that the chunk-edge state
        /// stays the parity of the quotes before it.)
        bad_quote: Option<Issue>,
    },
    NeedMore,
    /// Quoted field still open at end of input: the record runs to the end.
    Unterminated {
        quote_at: u64,
        field: usize,
    },
}

/// Per-row work: filters, key, inputs, group update.
struct RowWork<'c> {
    spec: &'c Compiled,
    table: GroupTable,
    key: Vec<u8>,
    lower: Vec<u8>,
    inputs: Vec<Input>,
}

impl RowWork<'_> {
    /// `fields[i]` is a byte range of `row`. Field `i` starts at global
    /// offset `fpos[i]`, or at `rec + fields[i].0` when `fpos` is empty
    /// (the row is the raw record).
    fn process(
        &mut self,
        row: &[u8],
        fields: &[(usize, usize)],
        fpos: &[u64],
        rec: u64,
        plain: bool,
    ) -> Result<bool, Issue> {
        let spec = self.spec;
        let fpos = |c: usize| fpos.get(c).copied().unwrap_or(rec + fields[c].0 as u64);
        if fields.len() != spec.width {
            return Err(Issue { problem: Problem::Ragged { found: fields.len() }, col: None, byte: rec });
        }
        let field = |c: usize| &row[fields[c].0..fields[c].1];
        for f in &spec.filters {
            if !filter_keeps(f.op, &f.values, field(f.col)) {
                return Ok(false);
            }
        }
        self.key.clear();
        for &(c, t) in &spec.keys {
            let v = field(c);
            if plain && t.is_none() {
                self.key.extend_from_slice(v);
                self.key.push(0);
                continue;
            }
            if !v.is_ascii() && std::str::from_utf8(v).is_err() {
                return Err(Issue { problem: Problem::Utf8, col: Some(c), byte: fpos(c) });
            }
            match t {
                None => push_field(&mut self.key, v),
                Some(Transform::Lower) => {
                    self.lower.clear();
                    if v.is_ascii() {
                        self.lower.extend(v.iter().map(u8::to_ascii_lowercase));
                    } else {
                        let s = std::str::from_utf8(v).unwrap_or_default().to_lowercase();
                        self.lower.extend_from_slice(s.as_bytes());
                    }
                    push_field(&mut self.key, &self.lower);
                }
            }
        }
        self.inputs.clear();
        for a in &spec.aggs {
            let input = match a.col {
                None => Input::Present,
                Some(c) => {
                    let (s, e) = fields[c];
                    let v = &row[s..e];
                    let issue = |p| Issue { problem: p, col: Some(c), byte: fpos(c) };
                    match a.op {
                        AggOp::Count if v.is_empty() => Input::Null,
                        AggOp::Count => Input::Present,
                        _ if v.is_empty() && a.op != AggOp::First && a.op != AggOp::Last => Input::Null,
                        AggOp::Sum | AggOp::Mean => {
                            Input::Num(Decimal::parse(v).map_err(|e| issue(Problem::Number(e)))?)
                        }
                        AggOp::Min | AggOp::Max => match Decimal::parse(v) {
                            Ok(d) => Input::Num(d),
                            Err(_) if std::str::from_utf8(v).is_ok() => Input::Text(s, e),
                            Err(_) => return Err(issue(Problem::Utf8)),
                        },
                        AggOp::First | AggOp::Last => {
                            if !plain && !v.is_ascii() && std::str::from_utf8(v).is_err() {
                                return Err(issue(Problem::Utf8));
                            }
                            Input::Text(s, e)
                        }
                    }
                }
            };
            self.inputs.push(input);
        }
        self.table.add_row(&self.key, &self.inputs, row, rec);
        Ok(true)
    }
}

fn filter_keeps(op: FilterOp, values: &[(Vec<u8>, Option<Decimal>)], v: &[u8]) -> bool {
    let cmp = |(text, num): &(Vec<u8>, Option<Decimal>)| match num.and_then(|n| Decimal::parse(v).ok().map(|x| (x, n)))
    {
        Some((x, n)) => x.cmp_value(&n),
        None => v.cmp(text.as_slice()),
    };
    use std::cmp::Ordering::*;
    match op {
        FilterOp::Empty => v.is_empty(),
        FilterOp::NotEmpty => !v.is_empty(),
        FilterOp::Eq => cmp(&values[0]) == Equal,
        FilterOp::Ne => cmp(&values[0]) != Equal,
        FilterOp::Lt => cmp(&values[0]) == Less,
        FilterOp::Le => cmp(&values[0]) != Greater,
        FilterOp::Gt => cmp(&values[0]) == Greater,
        FilterOp::Ge => cmp(&values[0]) != Less,
        FilterOp::In => values.iter().any(|x| cmp(x) == Equal),
    }
}

/// Scans one chunk. See the module docs for the protocol.
pub struct ChunkScanner<'c> {
    work: RowWork<'c>,
    range: ChunkRange,
    file_size: u64,
    /// The chunk starts at a known record boundary (the first data chunk).
    at_record_start: bool,
    start_state: StartState,
    assumed_in_quotes: bool,
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
    fields: Vec<(usize, usize)>,
    fpos: Vec<u64>,
    scratch: Vec<u8>,
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
        let (phase, pos, assumed) = if at_record_start {
            (Phase::Records, range.start, false)
        } else {
            let inq = matches!(start_state, StartState::Known(true));
            (Phase::Lookback, range.start - 1, inq)
        };
        ChunkScanner {
            work: RowWork {
                spec,
                table: GroupTable::new(&ops, &mut buffers),
                key: Vec::new(),
                lower: Vec::new(),
                inputs: Vec::new(),
            },
            range,
            file_size,
            at_record_start,
            start_state,
            assumed_in_quotes: assumed,
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
            fields: Vec::new(),
            fpos: Vec::new(),
            scratch: Vec::new(),
            buffers,
        }
    }

    /// Where the next fed byte must come from (global offset).
    pub fn position(&self) -> u64 {
        self.pos
    }

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
                self.assumed_in_quotes = self.guess(&data[1.min(data.len())..]);
            }
            let inq = self.assumed_in_quotes;
            self.phase = if data[0] == b'\n' && !inq { Phase::Records } else { Phase::Seek { inq } };
            self.pos += 1;
            return 1 + self.feed(&data[1..]);
        }
        let mut i = 0usize;
        let mut nl_cursor = (0usize, self.nl_before_pos);
        let end_local = (self.range.end.saturating_sub(self.pos)).min(data.len() as u64) as usize;
        let dialect = self.work.spec.dialect;
        // Without quoting, '\n' stands in for the quote: it never matches first.
        let mut cur = Structurals::new(dialect.delimiter, dialect.quote.unwrap_or(b'\n'));
        loop {
            match self.phase {
                Phase::Lookback | Phase::Done => break,
                Phase::Seek { mut inq } => {
                    let window = &data[i..end_local];
                    let mut found = None;
                    let mut j = 0;
                    while j < window.len() {
                        let hit = match self.work.spec.dialect.quote {
                            Some(q) => memchr2(q, b'\n', &window[j..]),
                            None => memchr(b'\n', &window[j..]),
                        };
                        let Some(h) = hit else { break };
                        let at = j + h;
                        if window[at] == b'\n' {
                            if !inq {
                                found = Some(i + at + 1);
                                break;
                            }
                        } else {
                            inq = !inq;
                        }
                        j = at + 1;
                    }
                    match found {
                        Some(rec) => {
                            i = rec;
                            self.phase = Phase::Records;
                        }
                        None => {
                            i = end_local;
                            self.phase =
                                if self.pos + i as u64 >= self.range.end { Phase::Done } else { Phase::Seek { inq } };
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
                    match self.parse_record(data, i, &mut cur, eof, g) {
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
                                let row: &[u8] = if scratch { &self.scratch } else { &data[i..i + len] };
                                match self.work.process(row, &self.fields, &self.fpos, g, plain) {
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

    /// Counts quotes and newlines of consumed bytes inside the range.
    fn account(&mut self, consumed: &[u8]) {
        let lo = self.range.start.saturating_sub(self.pos).min(consumed.len() as u64) as usize;
        let hi = self.range.end.saturating_sub(self.pos).min(consumed.len() as u64).max(lo as u64) as usize;
        let inside = count(&consumed[lo..hi], b'\n');
        self.newlines += inside;
        self.nl_before_pos += inside + count(&consumed[..lo], b'\n') + count(&consumed[hi..], b'\n');
        if let Some(q) = self.work.spec.dialect.quote {
            self.quotes += count(&consumed[lo..hi], q);
        }
        self.pos += consumed.len() as u64;
    }

    /// Guesses the quote state at the chunk start from its first quote: a
    /// closing quote is followed by a delimiter or line end and not preceded
    /// by one; an opening quote the other way round.
    fn guess(&self, data: &[u8]) -> bool {
        let Some(q) = self.work.spec.dialect.quote else { return false };
        let window = &data[..data.len().min(64 * 1024)];
        let Some(at) = memchr(q, window) else { return false };
        let d = self.work.spec.dialect.delimiter;
        let next_is_end = match window.get(at + 1) {
            None => self.range.start + at as u64 + 1 >= self.file_size,
            Some(&b) => b == d || b == b'\n' || b == b'\r',
        };
        let prev_is_start = at > 0 && (window[at - 1] == d || window[at - 1] == b'\n');
        next_is_end && !prev_is_start
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
            let row = std::mem::take(&mut self.scratch);
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
        let spec = self.work.spec;
        let column = issue.col.map(|c| {
            spec.column_names
                .get(c)
                .map(|n| crate::clip(n, 200).into_owned())
                .unwrap_or_else(|| format!("column {}", c + 1))
        });
        let value = issue.col.and_then(|c| self.fields.get(c)).filter(|_| !row.is_empty()).map(|&(s, e)| {
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
        BadRow { line, byte: issue.byte, column, value, reason }
    }

    /// Parses the record that starts at `data[at]` (global offset `g`).
    /// `cur` carries the structural bits of the current 64-byte block from
    /// one record to the next, so each byte is classified once.
    fn parse_record(&mut self, data: &[u8], at: usize, cur: &mut Structurals, eof: bool, g: u64) -> Parsed {
        let d = self.work.spec.dialect.delimiter;
        self.fields.clear();
        self.fpos.clear();
        cur.seek(data, at);
        let mut s = at;
        let line_end = loop {
            let Some(j) = cur.next(data) else {
                if !eof {
                    return Parsed::NeedMore;
                }
                break data.len();
            };
            let b = data[j];
            if b == b'\n' {
                break j;
            }
            if b == d {
                self.fields.push((s - at, j - at));
                s = j + 1;
            } else {
                return self.parse_quoted(&data[at..], eof, g);
            }
        };
        let len = (line_end + 1).min(data.len()) - at;
        let mut content = line_end;
        if content > s && data[content - 1] == b'\r' && d != b'\r' {
            content -= 1;
        }
        if content == at && self.fields.is_empty() {
            return Parsed::Record { len, empty: true, scratch: false, plain: true, bad_quote: None };
        }
        self.fields.push((s - at, content - at));
        Parsed::Record { len, empty: false, scratch: false, plain: is_plain(&data[at..content]), bad_quote: None }
    }

    /// The general path: fields are unquoted into `scratch`.
    fn parse_quoted(&mut self, rest: &[u8], eof: bool, g: u64) -> Parsed {
        let dialect = self.work.spec.dialect;
        let q = dialect.quote.expect("only called with quoting");
        let d = dialect.delimiter;
        self.scratch.clear();
        self.fields.clear();
        self.fpos.clear();
        let mut field_start = 0usize; // in scratch
        let mut raw_start = 0usize; // in rest
        let mut i = 0usize;
        let mut inq = false;
        let mut quote_at = 0usize;
        let mut bad_quote = None;
        let mut misplaced = |at: usize, field: usize| {
            bad_quote.get_or_insert(Issue {
                problem: Problem::StrayQuote { lines: 0 },
                col: Some(field),
                byte: g + at as u64,
            });
        };
        // Whether the last byte in scratch is an unquoted '\r' (stripped before '\n').
        let mut cr_unquoted = false;
        loop {
            if inq {
                let Some(h) = memchr(q, &rest[i..]) else {
                    if eof {
                        if bad_quote.is_some() {
                            // A stray quote opened this: that is the error to name.
                            self.scratch.extend_from_slice(&rest[i..]);
                            self.fields.push((field_start, self.scratch.len()));
                            self.fpos.push(g + raw_start as u64);
                            return Parsed::Record {
                                len: rest.len(),
                                empty: false,
                                scratch: true,
                                plain: false,
                                bad_quote,
                            };
                        }
                        return Parsed::Unterminated { quote_at: g + quote_at as u64, field: self.fields.len() };
                    }
                    return Parsed::NeedMore;
                };
                self.scratch.extend_from_slice(&rest[i..i + h]);
                let at = i + h;
                match rest.get(at + 1) {
                    Some(&b) if b == q => {
                        self.scratch.push(q);
                        i = at + 2;
                    }
                    None if !eof => return Parsed::NeedMore,
                    next => {
                        if next.is_some_and(|&b| b != d && b != b'\n' && b != b'\r') {
                            misplaced(at, self.fields.len());
                        }
                        inq = false;
                        i = at + 1;
                    }
                }
                cr_unquoted = false;
            } else {
                let hit = memchr3(d, q, b'\n', &rest[i..]);
                let Some(h) = hit else {
                    if !eof {
                        return Parsed::NeedMore;
                    }
                    self.scratch.extend_from_slice(&rest[i..]);
                    let mut end = self.scratch.len();
                    if rest.len() > i && rest[rest.len() - 1] == b'\r' {
                        end -= 1;
                    }
                    self.fields.push((field_start, end));
                    self.fpos.push(g + raw_start as u64);
                    return Parsed::Record { len: rest.len(), empty: false, scratch: true, plain: false, bad_quote };
                };
                let at = i + h;
                self.scratch.extend_from_slice(&rest[i..at]);
                if at > i {
                    cr_unquoted = rest[at - 1] == b'\r';
                }
                let b = rest[at];
                if b == q {
                    if at != raw_start {
                        misplaced(at, self.fields.len());
                    }
                    inq = true;
                    quote_at = at;
                    i = at + 1;
                } else if b == d {
                    self.fields.push((field_start, self.scratch.len()));
                    self.fpos.push(g + raw_start as u64);
                    field_start = self.scratch.len();
                    raw_start = at + 1;
                    cr_unquoted = false;
                    i = at + 1;
                } else {
                    let mut end = self.scratch.len();
                    if cr_unquoted {
                        end -= 1;
                    }
                    self.fields.push((field_start, end));
                    self.fpos.push(g + raw_start as u64);
                    return Parsed::Record { len: at + 1, empty: false, scratch: true, plain: false, bad_quote };
                }
            }
        }
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
            assumed_in_quotes: self.assumed_in_quotes && !self.at_record_start,
            quote_parity: self.quotes % 2 == 1,
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
        };
        (report, run, self.buffers)
    }
}

/// Finds the delimiters, quotes and newlines of a buffer 64 bytes at a
/// time: each block becomes a bit mask (SWAR, eight bytes per step, no
/// branch per byte), and positions are read off it with `trailing_zeros`.
/// Short CSV fields made per-byte branches (and their mispredictions at
/// every field end) the parser's largest cost.
struct Structurals {
    splats: [u64; 3],
    bytes: [u8; 3],
    /// Start of the current block; `usize::MAX` before the first.
    base: usize,
    /// Bits of the block's structural bytes not yet returned.
    mask: u64,
}

const ONES: u64 = 0x0101_0101_0101_0101;
const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;

impl Structurals {
    fn new(d: u8, q: u8) -> Self {
        let bytes = [d, q, b'\n'];
        Structurals { splats: bytes.map(|b| ONES * b as u64), bytes, base: usize::MAX, mask: 0 }
    }

    /// Positions the cursor so that [`Self::next`] returns positions `>= at`.
    #[inline]
    fn seek(&mut self, data: &[u8], at: usize) {
        if self.base == usize::MAX || at < self.base || at - self.base >= 64 {
            self.base = at;
            self.mask = self.block(data, at);
        } else {
            let off = at - self.base;
            self.mask &= !0u64 << off;
        }
    }

    /// The next structural byte's position, or `None` at the end of `data`.
    #[inline]
    fn next(&mut self, data: &[u8]) -> Option<usize> {
        while self.mask == 0 {
            if self.base + 64 >= data.len() {
                return None;
            }
            self.base += 64;
            self.mask = self.block(data, self.base);
        }
        let j = self.base + self.mask.trailing_zeros() as usize;
        self.mask &= self.mask - 1;
        Some(j)
    }

    /// The mask of the (up to) 64 bytes at `at`.
    #[inline]
    fn block(&self, data: &[u8], at: usize) -> u64 {
        let block = &data[at.min(data.len())..data.len().min(at + 64)];
        let mut mask = 0u64;
        let words = block.chunks_exact(8);
        let tail = words.remainder();
        for (k, w) in words.enumerate() {
            let w = u64::from_le_bytes(w.try_into().expect("8 bytes"));
            let mut hits = 0u64;
            for splat in self.splats {
                // 0x80 in each byte of `w` equal to the splatted byte, exactly.
                let x = w ^ splat;
                hits |= !(((x & LOW7) + LOW7) | x | LOW7);
            }
            // Gather the eight 0x80 bits into one byte.
            mask |= ((hits >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56) << (8 * k);
        }
        let done = block.len() - tail.len();
        for (k, b) in tail.iter().enumerate() {
            if self.bytes.contains(b) {
                mask |= 1 << (done + k);
            }
        }
        mask
    }
}

/// Whether `b` holds only ASCII bytes above 0x01 (eight bytes per step).
#[inline]
fn is_plain(b: &[u8]) -> bool {
    let words = b.chunks_exact(8);
    let tail = words.remainder();
    let (mut high, mut low) = (0u64, 0u64);
    for w in words {
        let w = u64::from_le_bytes(w.try_into().expect("8 bytes"));
        high |= w;
        // A zero byte of `w & !0x01…` is a byte 0x00 or 0x01 of `w`.
        let v = w & !ONES;
        low |= v.wrapping_sub(ONES) & !v;
    }
    (high | low) & (ONES << 7) == 0 && tail.iter().all(|&x| (0x02..0x80).contains(&x))
}

/// Counts a byte (SIMD).
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

fn count(hay: &[u8], b: u8) -> u64 {
    bytecount::count(hay, b) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(v: &[&str]) -> Vec<(Vec<u8>, Option<Decimal>)> {
        v.iter().map(|s| (s.as_bytes().to_vec(), Decimal::parse(s.as_bytes()).ok())).collect()
    }

    #[test]
    fn structurals_and_plain_match_a_byte_loop() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let alphabet = b",\"\nab\x00\x01\x7f\x80\xffz";
        for len in [0usize, 1, 7, 8, 9, 63, 64, 65, 127, 128, 200, 1000] {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    alphabet[(x % alphabet.len() as u64) as usize]
                })
                .collect();
            let want: Vec<usize> = (0..len).filter(|&i| b",\"\n".contains(&data[i])).collect();
            for start in [0, 1, len / 2, len.saturating_sub(1)] {
                let mut cur = Structurals::new(b',', b'"');
                cur.seek(&data, start);
                let got: Vec<usize> = std::iter::from_fn(|| cur.next(&data)).collect();
                let want: Vec<usize> = want.iter().copied().filter(|&i| i >= start).collect();
                assert_eq!(got, want, "len {len} start {start}");
            }
            for end in 0..len.min(80) {
                let b = &data[..end];
                assert_eq!(is_plain(b), b.iter().all(|&c| (2..0x80).contains(&c)), "{b:?}");
            }
        }
    }

    #[test]
    fn filters_compare_numbers_as_numbers_and_text_as_bytes() {
        use FilterOp::*;
        let cases: [(FilterOp, &[&str], &str, bool); 16] = [
            (Eq, &["10"], "10.0", true),
            (Eq, &["abc"], "abc", true),
            (Ne, &["abc"], "abd", true),
            (Lt, &["9"], "10", false), // 10 < 9 numerically: no (as text it would be yes)
            (Lt, &["b"], "a", true),
            (Le, &["2020-01-01"], "2020-01-01", true),
            (Gt, &["-1"], "-0.5", true),
            (Gt, &["10"], "9", false),
            (Ge, &["2020-01-01"], "2019-12-31", false),
            (Ge, &["5"], "x", true), // "x" is not a number: byte order, "x" > "5"
            (In, &["a", "b"], "b", true),
            (In, &["1", "2"], "2.00", true),
            (In, &["a", "b"], "c", false),
            (Empty, &[], "", true),
            (Empty, &[], " ", false),
            (NotEmpty, &[], "x", true),
        ];
        for (op, v, field, want) in cases {
            assert_eq!(filter_keeps(op, &vals(v), field.as_bytes()), want, "{op:?} {v:?} {field:?}");
        }
    }
}
