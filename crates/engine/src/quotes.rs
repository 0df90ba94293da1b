//! The quote state at a chunk's edge, and how a chunk's bytes carry it.
//!
//! A chunk starts at an arbitrary byte, so it does not know whether that
//! byte lies inside a quoted field. What it needs to know is where its
//! first record begins: at the first newline that is not inside quotes.
//!
//! Two rules decide what a quote is:
//!
//! - **RFC 4180 (strict, `fail` mode's default).** Every quote opens or
//!   closes quoting, so the state at a byte is the parity of the quotes
//!   before it. A quote that does not stand where RFC 4180 allows one makes
//!   its record bad (the scanner reports it); the record's extent still
//!   follows the parity. A chunk's effect on the state is its quote parity.
//! - **Lenient (Python's `csv` module, rust-csv; `skip` mode's default, or
//!   `csv.lenient_quotes`).** A quote opens quoting only at the start of a
//!   field; inside an unquoted field it is a literal character, and a
//!   character after a closing quote other than a delimiter, a quote or a
//!   line end continues the field unquoted. The state is one of four
//!   ([`QuoteState`]) and no parity tells it: a chunk computes the state at
//!   its end for *each* state it could start in (a state-transfer function,
//!   as in Ge et al., "Speculative Distributed CSV Data Parsing", SIGMOD
//!   2019), and the plan composes these [`Transfer`]s along the file.
//!
//! Either way the plan learns the true state at every chunk's start from
//! the reports alone, and a chunk that assumed another one is scanned again
//! from the known state (once: a transfer is a property of the bytes).

use memchr::{memchr, memchr2};
use serde::{Deserialize, Serialize};

/// Where a byte position stands with respect to quoting. With RFC 4180
/// quoting only [`QuoteState::FieldStart`] (outside quotes) and
/// [`QuoteState::InQuotes`] occur.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum QuoteState {
    /// At the start of a field (or of a record): a quote here opens quoting.
    FieldStart,
    /// Inside an unquoted field: a quote here is a literal (lenient rule).
    InField,
    /// Inside a quoted field.
    InQuotes,
    /// Right after a quote inside a quoted field: it closed the field, or,
    /// if a quote follows, the two are one literal quote.
    AfterQuote,
}

impl QuoteState {
    /// Every state, in [`Self::index`] order.
    pub const ALL: [QuoteState; 4] =
        [QuoteState::FieldStart, QuoteState::InField, QuoteState::InQuotes, QuoteState::AfterQuote];

    /// The position of `self` in [`Self::ALL`].
    pub const fn index(self) -> usize {
        match self {
            QuoteState::FieldStart => 0,
            QuoteState::InField => 1,
            QuoteState::InQuotes => 2,
            QuoteState::AfterQuote => 3,
        }
    }

    /// Whether a newline here is inside a quoted field (so not a record end).
    pub const fn in_quotes(self) -> bool {
        matches!(self, QuoteState::InQuotes)
    }

    /// The short name stored with chunk records and partial keys.
    pub const fn code(self) -> &'static str {
        match self {
            QuoteState::FieldStart => "k0",
            QuoteState::InQuotes => "k1",
            QuoteState::InField => "k2",
            QuoteState::AfterQuote => "k3",
        }
    }

    /// The state of a [`Self::code`].
    pub fn of_code(code: &str) -> Option<QuoteState> {
        QuoteState::ALL.into_iter().find(|s| s.code() == code)
    }

    /// The RFC 4180 state: outside or inside quotes.
    const fn strict(self) -> QuoteState {
        match self {
            QuoteState::FieldStart | QuoteState::InField => QuoteState::FieldStart,
            QuoteState::InQuotes | QuoteState::AfterQuote => QuoteState::InQuotes,
        }
    }
}

/// The state at a range's end for each state at its start, indexed by
/// [`QuoteState::index`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer(pub [QuoteState; 4]);

impl Transfer {
    /// A range that changes nothing (no bytes).
    pub const IDENTITY: Transfer = Transfer(QuoteState::ALL);

    /// An RFC 4180 range holding an odd (`true`) or even number of quotes.
    pub fn parity(odd: bool) -> Transfer {
        Transfer(QuoteState::ALL.map(|s| match (s.strict(), odd) {
            (QuoteState::FieldStart, true) => QuoteState::InQuotes,
            (QuoteState::FieldStart, false) => QuoteState::FieldStart,
            (_, true) => QuoteState::FieldStart,
            (_, false) => QuoteState::InQuotes,
        }))
    }

    /// The state at the end for `start` at the start.
    pub fn apply(&self, start: QuoteState) -> QuoteState {
        self.0[start.index()]
    }

    /// This range followed by `next`.
    pub fn then(&self, next: &Transfer) -> Transfer {
        Transfer(self.0.map(|s| next.apply(s)))
    }
}

/// The quote rule of a dialect, applied to runs of bytes.
#[derive(Clone, Copy, Debug)]
pub struct Quoting {
    delimiter: u8,
    quote: u8,
    lenient: bool,
}

impl Quoting {
    /// `None` for a dialect without quoting (no state to carry).
    pub fn new(delimiter: u8, quote: Option<u8>, lenient: bool) -> Option<Quoting> {
        quote.map(|quote| Quoting { delimiter, quote, lenient })
    }

    /// Whether quotes follow the lenient rule.
    pub fn lenient(&self) -> bool {
        self.lenient
    }

    /// The state after `b` in state `s`.
    #[inline]
    fn step(&self, s: QuoteState, b: u8) -> QuoteState {
        use QuoteState::*;
        let (d, q) = (self.delimiter, self.quote);
        if !self.lenient {
            return match (s.strict(), b == q) {
                (FieldStart, true) => InQuotes,
                (FieldStart, false) => FieldStart,
                (_, true) => FieldStart,
                (_, false) => InQuotes,
            };
        }
        match s {
            FieldStart if b == q => InQuotes,
            FieldStart | InField | AfterQuote if b == d || b == b'\n' => FieldStart,
            FieldStart | InField => InField,
            AfterQuote if b == q => InQuotes,
            AfterQuote => InField,
            InQuotes if b == q => AfterQuote,
            InQuotes => InQuotes,
        }
    }

    /// Runs `bytes` from state `s` up to the first record boundary (a
    /// newline outside quotes): `Ok(offset just past it)`, or `Err(the
    /// state at the end)` when `bytes` holds none.
    pub fn seek(&self, mut s: QuoteState, bytes: &[u8]) -> Result<usize, QuoteState> {
        if !self.lenient {
            s = s.strict();
        }
        let mut i = 0;
        while i < bytes.len() {
            let hit = match s {
                QuoteState::InQuotes => memchr(self.quote, &bytes[i..]),
                QuoteState::InField if self.lenient => memchr2(self.delimiter, b'\n', &bytes[i..]),
                _ if !self.lenient => memchr2(self.quote, b'\n', &bytes[i..]),
                _ => Some(0),
            };
            let Some(h) = hit else { return Err(s) };
            let b = bytes[i + h];
            if b == b'\n' && !s.in_quotes() {
                return Ok(i + h + 1);
            }
            s = self.step(s, b);
            i += h + 1;
        }
        Err(s)
    }

    /// The state after `bytes` from state `s`.
    pub fn run(&self, mut s: QuoteState, bytes: &[u8]) -> QuoteState {
        if !self.lenient {
            let odd = bytecount::count(bytes, self.quote) % 2 == 1;
            return Transfer::parity(odd).apply(s);
        }
        let mut i = 0;
        while i < bytes.len() {
            let hit = match s {
                QuoteState::InQuotes => memchr(self.quote, &bytes[i..]),
                QuoteState::InField => memchr2(self.delimiter, b'\n', &bytes[i..]),
                _ => Some(0),
            };
            let Some(h) = hit else { return s };
            s = self.step(s, bytes[i + h]);
            i += h + 1;
        }
        s
    }
}

/// Follows a chunk's bytes from every start state at once, so that its
/// report carries its [`Transfer`] (lenient quoting). It does little work:
/// a start state is followed only until it reaches one of the scanner's
/// own record starts in [`QuoteState::FieldStart`] (from there on it *is*
/// the scanner's state), and in most files every start state gets there
/// within a record or two. What is left to follow is usually a state
/// inside quotes in a stretch without quotes: one `memchr` over it.
#[derive(Debug)]
pub(crate) struct Follower {
    quoting: Quoting,
    end: u64,
    /// (start states as a bit set, their state, at which global offset).
    sims: Vec<(u8, QuoteState, u64)>,
    /// The start states whose state is the scanner's own.
    main: u8,
    /// The scanner's state at `end`, once it has read that far.
    main_end: Option<QuoteState>,
}

impl Follower {
    pub(crate) fn new(quoting: Quoting, start: u64, end: u64) -> Follower {
        let sims = QuoteState::ALL.iter().map(|&s| (1u8 << s.index(), s, start)).collect();
        Follower { quoting, end, sims, main: 0, main_end: None }
    }

    /// The range turned out to end at `end` (the input ended early).
    pub(crate) fn end_at(&mut self, end: u64) {
        self.end = self.end.min(end);
    }

    /// Whether every start state is followed by the scanner itself.
    pub(crate) fn idle(&self) -> bool {
        self.sims.is_empty()
    }

    /// Follows `bytes`, which start at global offset `at`, up to the end.
    pub(crate) fn advance(&mut self, bytes: &[u8], at: u64) {
        let upto = (at + bytes.len() as u64).min(self.end);
        for (_, state, pos) in &mut self.sims {
            if *pos < upto && *pos >= at {
                *state = self.quoting.run(*state, &bytes[(*pos - at) as usize..(upto - at) as usize]);
                *pos = upto;
            }
        }
        // Two start states in one state at one offset stay together.
        let mut i = 0;
        while i < self.sims.len() {
            let (bits, state, pos) = self.sims[i];
            if let Some(j) = self.sims[..i].iter().position(|&(_, s, p)| s == state && p == pos) {
                self.sims[j].0 |= bits;
                self.sims.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }

    /// The scanner is at a record start `at` (having fed [`Self::advance`]
    /// the bytes up to it): start states there in `FieldStart` join it.
    pub(crate) fn record_start(&mut self, at: u64) {
        if at >= self.end {
            return;
        }
        let main = &mut self.main;
        self.sims.retain(|&(bits, state, pos)| {
            let joins = pos == at && state == QuoteState::FieldStart;
            if joins {
                *main |= bits;
            }
            !joins
        });
    }

    /// The scanner's state at the end of the range.
    pub(crate) fn main_ends(&mut self, state: QuoteState) {
        self.main_end.get_or_insert(state);
    }

    /// The scanner stops reading records at the record start `at` (a `fail`
    /// mode error): its start states are followed from there.
    pub(crate) fn leave_main(&mut self, at: u64) {
        if self.main != 0 && self.main_end.is_none() {
            self.sims.push((self.main, QuoteState::FieldStart, at));
            self.main = 0;
        }
    }

    /// The transfer, once every byte up to the end was followed.
    pub(crate) fn transfer(&self) -> Transfer {
        let mut t = Transfer::IDENTITY;
        for s in QuoteState::ALL {
            let bit = 1u8 << s.index();
            t.0[s.index()] = match self.sims.iter().find(|&&(bits, _, _)| bits & bit != 0) {
                Some(&(_, state, pos)) => {
                    debug_assert_eq!(pos, self.end, "followed to the end");
                    state
                }
                None => self.main_end.expect("the scanner read past the end"),
            };
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn q(lenient: bool) -> Quoting {
        Quoting::new(b',', Some(b'"'), lenient).unwrap()
    }

    /// One byte at a time: the machine `seek` and `run` skip through.
    fn slow(qt: &Quoting, mut s: QuoteState, bytes: &[u8]) -> (QuoteState, Option<usize>) {
        if !qt.lenient {
            s = s.strict();
        }
        let mut first = None;
        for (i, &b) in bytes.iter().enumerate() {
            if b == b'\n' && !s.in_quotes() && first.is_none() {
                first = Some(i + 1);
            }
            s = qt.step(s, b);
        }
        (s, first)
    }

    proptest! {
        #[test]
        fn seek_and_run_agree_with_the_byte_machine(
            bytes in proptest::collection::vec(prop::sample::select(b"ab,\"\n\r".to_vec()), 0..60),
            start in 0usize..4,
            lenient: bool,
            cut in 0usize..60,
        ) {
            let qt = q(lenient);
            let s = QuoteState::ALL[start];
            let (end, first) = slow(&qt, s, &bytes);
            prop_assert_eq!(qt.run(s, &bytes), end);
            match qt.seek(s, &bytes) {
                Ok(at) => prop_assert_eq!(Some(at), first),
                Err(e) => { prop_assert_eq!(first, None); prop_assert_eq!(e, end); }
            }
            // A transfer of two ranges is the two composed.
            let cut = cut.min(bytes.len());
            let t = |b: &[u8]| Transfer(QuoteState::ALL.map(|s| qt.run(s, b)));
            prop_assert_eq!(t(&bytes[..cut]).then(&t(&bytes[cut..])), t(&bytes));
        }
    }

    #[test]
    fn the_lenient_rule_reads_quotes_as_python_does() {
        let qt = q(true);
        // `ab"c` is a literal quote: the newline ends the record.
        assert_eq!(qt.seek(QuoteState::FieldStart, b"ab\"c,1\nx"), Ok(7));
        // `"a"b` closes and continues unquoted; `"a""b"` is one quoted field.
        assert_eq!(qt.run(QuoteState::FieldStart, b"\"a\"b"), QuoteState::InField);
        assert_eq!(qt.run(QuoteState::FieldStart, b"\"a\"\"b"), QuoteState::InQuotes);
        // Strict: the same bytes open quoting.
        assert_eq!(q(false).seek(QuoteState::FieldStart, b"ab\"c,1\nx"), Err(QuoteState::InQuotes));
        assert_eq!(Transfer::parity(true).apply(QuoteState::InField), QuoteState::InQuotes);
        for s in QuoteState::ALL {
            assert_eq!(QuoteState::of_code(s.code()), Some(s));
        }
    }
}
