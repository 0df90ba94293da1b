//! The record tokenizer (csv-core's layer): splits the bytes of one record
//! into fields, unquoting into a scratch buffer only when the record holds
//! a quote. Knows nothing of chunks or aggregates.

use memchr::{memchr, memchr3};

use super::{Issue, Problem};
use crate::spec::Dialect;
use crate::swar::{splat, zero_bytes, ONES};

/// What [`Tokenizer::parse_record`] found at a record start.
pub(super) enum Parsed {
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
        /// stays the parity of the quotes before it. Never set with
        /// lenient quotes: such a quote is a literal.)
        bad_quote: Option<Issue>,
    },
    NeedMore,
    /// Quoted field still open at end of input: the record runs to the end.
    Unterminated {
        quote_at: u64,
        field: usize,
    },
}

/// The fields of the record last parsed, and the buffers it reuses.
pub(super) struct Tokenizer {
    dialect: Dialect,
    /// Byte ranges of the fields, in the record or in `scratch`.
    pub(super) fields: Vec<(usize, usize)>,
    /// Global offsets of the fields (only for unquoted records).
    pub(super) fpos: Vec<u64>,
    /// The unquoted record, when it held a quote.
    pub(super) scratch: Vec<u8>,
}

impl Tokenizer {
    pub(super) fn new(dialect: Dialect) -> Self {
        Tokenizer { dialect, fields: Vec::new(), fpos: Vec::new(), scratch: Vec::new() }
    }

    /// Parses the record that starts at `data[at]` (global offset `g`).
    /// `cur` carries the structural bits of the current 64-byte block from
    /// one record to the next, so each byte is classified once.
    pub(super) fn parse_record(&mut self, data: &[u8], at: usize, cur: &mut Structurals, eof: bool, g: u64) -> Parsed {
        let d = self.dialect.delimiter;
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
        let dialect = self.dialect;
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
                        // Leniently, a character after the closing quote continues the field.
                        if !dialect.lenient_quotes && next.is_some_and(|&b| b != d && b != b'\n' && b != b'\r') {
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
                if b == q && at != raw_start && dialect.lenient_quotes {
                    // Leniently, a quote inside an unquoted field is a literal.
                    self.scratch.push(q);
                    cr_unquoted = false;
                    i = at + 1;
                } else if b == q {
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
}

/// Finds the delimiters, quotes and newlines of a buffer 64 bytes at a
/// time: each block becomes a bit mask (SSE2 on x86_64, 16 bytes per step;
/// elsewhere SWAR, eight bytes per step; no branch per byte), and positions
/// are read off it with `trailing_zeros`. SSE2 made a chunk's scan 8%
/// (zipf) to 13% (the 12-column catalogue) faster; it is the project's one
/// `unsafe` (unaligned loads). arm64 (the functions' default) takes the
/// SWAR path: a NEON one could not be built or run on this x86 machine.
/// Short CSV fields made per-byte branches (and their mispredictions at
/// every field end) the parser's largest cost.
pub(super) struct Structurals {
    splats: [u64; 3],
    bytes: [u8; 3],
    /// Start of the current block; `usize::MAX` before the first.
    base: usize,
    /// Bits of the block's structural bytes not yet returned.
    mask: u64,
}

impl Structurals {
    pub(super) fn new(d: u8, q: u8) -> Self {
        let bytes = [d, q, b'\n'];
        Structurals { splats: bytes.map(splat), bytes, base: usize::MAX, mask: 0 }
    }

    /// Positions the cursor so that [`Self::next`] returns positions `>= at`.
    #[inline]
    pub(super) fn seek(&mut self, data: &[u8], at: usize) {
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
    pub(super) fn next(&mut self, data: &[u8]) -> Option<usize> {
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
        #[cfg(target_arch = "x86_64")]
        if let Some(b) = data.get(at..at + 64) {
            return sse2_mask(b.try_into().expect("64 bytes"), self.bytes);
        }
        let block = &data[at.min(data.len())..data.len().min(at + 64)];
        let mut mask = 0u64;
        let words = block.chunks_exact(8);
        let tail = words.remainder();
        for (k, w) in words.enumerate() {
            let w = u64::from_le_bytes(w.try_into().expect("8 bytes"));
            let mut hits = 0u64;
            for s in self.splats {
                // 0x80 in each byte of `w` equal to the splatted byte, exactly.
                let x = w ^ s;
                hits |= zero_bytes(x);
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

/// The bits of the bytes of `b` equal to one of `bytes`: 16 bytes per
/// step (SSE2, which every x86_64 CPU has), four comparisons and a
/// movemask where the portable path takes some 150 word operations.
#[cfg(target_arch = "x86_64")]
#[inline]
#[allow(unsafe_code)]
fn sse2_mask(b: &[u8; 64], bytes: [u8; 3]) -> u64 {
    use std::arch::x86_64::*;
    // SAFETY: SSE2 is part of the x86_64 baseline, so its intrinsics are
    // available on every CPU this code runs on; each unaligned load reads
    // 16 bytes of `b`, which holds 64.
    unsafe {
        let [d, q, n] = bytes.map(|x| _mm_set1_epi8(x as i8));
        let mut mask = 0u64;
        for k in 0..4 {
            let v = _mm_loadu_si128(b.as_ptr().add(16 * k).cast());
            let hit = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, d), _mm_cmpeq_epi8(v, q)), _mm_cmpeq_epi8(v, n));
            mask |= (_mm_movemask_epi8(hit) as u16 as u64) << (16 * k);
        }
        mask
    }
}

/// Whether `b` holds only ASCII bytes above 0x01: eight bytes per step,
/// the last step overlapping the one before instead of a byte loop (which
/// was a quarter of the tokenizer's time on 28-byte records).
#[inline]
fn is_plain(b: &[u8]) -> bool {
    let n = b.len();
    if n < 8 {
        return b.iter().all(|&x| (0x02..0x80).contains(&x));
    }
    let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    let mut bad = 0u64;
    let mut i = 0;
    while i + 8 <= n {
        bad |= not_plain(word(i));
        i += 8;
    }
    if i < n {
        bad |= not_plain(word(n - 8));
    }
    bad == 0
}

/// Nonzero if a byte of `w` is 0x00, 0x01 or above 0x7f.
#[inline]
fn not_plain(w: u64) -> u64 {
    // A zero byte of `w & !0x01…` is a byte 0x00 or 0x01 of `w`.
    (w | zero_bytes(w & !ONES)) & (ONES << 7)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A record of plain bytes with at most one other byte anywhere
        /// (the overlapping last word must see it wherever it is).
        #[test]
        fn plain_is_a_byte_loop(len in 0usize..70, at in 0usize..70, bad in any::<u8>(), fill in 2u8..0x80) {
            let mut b = vec![fill; len];
            if at < len {
                b[at] = bad;
            }
            prop_assert_eq!(is_plain(&b), b.iter().all(|&c| (2..0x80).contains(&c)));
        }

        /// Any delimiter and quote (bytes of 0x80 and above included: the
        /// SIMD comparison must not be a signed one), any start.
        #[test]
        fn structurals_of_any_bytes(
            d in any::<u8>(),
            q in any::<u8>(),
            picks in proptest::collection::vec((0u8..4, any::<u8>()), 0..300),
            start in 0usize..300,
        ) {
            let data: Vec<u8> = picks.iter().map(|&(k, x)| [d, q, b'\n', x][k as usize]).collect();
            let start = start.min(data.len());
            let mut cur = Structurals::new(d, q);
            cur.seek(&data, start);
            let got: Vec<usize> = std::iter::from_fn(|| cur.next(&data)).collect();
            let want: Vec<usize> = (start..data.len()).filter(|&i| [d, q, b'\n'].contains(&data[i])).collect();
            prop_assert_eq!(got, want);
        }
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
}
