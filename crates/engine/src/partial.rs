//! The partial aggregate of a chunk: a key-sorted run in a compact,
//! versioned binary encoding.
//!
//! ```text
//! "FFP" version(=2) n_aggs op[n_aggs] groups:u64le
//! entry*: shared:varint suffix_len:varint suffix acc[n_aggs]
//! index:  count:varint (offset_delta:varint key_len:varint key)*
//! footer: index_at:u64le "FFIX"
//! ```
//! Keys are front-coded against the previous key; integers are LEB128
//! varints, signed ones zigzagged. [`RunReader`] streams a run from any
//! `Read` with a buffer that grows only to the longest entry.
//!
//! The *sparse key index* (like an SSTable's) lists restart entries: at
//! least every [`INDEX_STRIDE`] bytes an entry is written with its whole key
//! (`shared = 0`), and its offset and key go into the index. At most
//! [`MAX_INDEX`] restarts are indexed (when the index fills, every other one
//! is dropped and the stride doubles), so the index of any run is a few tens
//! of KB. A reader that wants the keys in `[lo, hi)` reads the index (it
//! ends the object: one ranged read of `[index_at, len)`), finds the byte
//! range with [`crate::index::slice_of`] and reads only that, as a *slice*:
//! [`slice_header`] followed by the bytes, with the bounds set on the reader.
//!
//! A *streamed* run ([`RunWriter::streamed`]) is handed out in pieces while
//! it is written, so its group count is not known up front: the count field
//! holds [`STREAMED`] and the run ends where its source ends. Parallel
//! merges pass their output to the final merge this way.

use std::io::{self, Read};

use crate::acc::{Acc, TextRef, Val};
use crate::key::{cmp_keys, common_prefix};
use crate::number::Decimal;
use crate::spec::AggOp;

const MAGIC: &[u8; 3] = b"FFP";
/// The format version a run's footer carries.
pub const VERSION: u8 = 2;
/// Bytes of entries between indexed restarts, at first.
pub const INDEX_STRIDE: usize = 32 * 1024;
/// Restarts kept in a run's index at most.
pub const MAX_INDEX: usize = 1024;
/// The footer's magic (after `index_at`).
pub const INDEX_MAGIC: &[u8; 4] = b"FFIX";
/// Bytes of the footer.
pub const FOOTER: usize = 12;
const FAST_WINDOW: usize = 16 * 1024;
/// Set in a slice header's version byte: a u64 (little endian) follows the
/// group count, added to every `first`/`last` position of the slice (see
/// [`slice_header_at`]). Stored runs never carry it.
const POSITION_BASE: u8 = 0x80;
/// The group count of a streamed run.
pub const STREAMED: u64 = u64::MAX;

#[inline]
fn put_varint(out: &mut Vec<u8>, v: u128) {
    match u64::try_from(v) {
        Ok(v) => put_varint64(out, v),
        Err(_) => put_varint128(out, v),
    }
}

#[inline]
fn put_varint64(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_varint128(out: &mut Vec<u8>, mut v: u128) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_signed(out: &mut Vec<u8>, v: i128) {
    put_varint(out, ((v << 1) ^ (v >> 127)) as u128);
}

fn put_text(out: &mut Vec<u8>, t: &[u8]) {
    put_varint(out, t.len() as u128);
    out.extend_from_slice(t);
}

fn put_dec(out: &mut Vec<u8>, d: &Decimal) {
    out.push(d.scale);
    put_signed(out, d.mantissa);
}

fn put_val(out: &mut Vec<u8>, v: &Option<Val>, arena: &[u8]) {
    match v {
        None => out.push(0),
        Some(Val::Num(d)) => {
            out.push(1);
            put_dec(out, d);
        }
        Some(Val::Text(t)) => {
            out.push(2);
            put_text(out, t.get(arena));
        }
    }
}

fn put_pos(out: &mut Vec<u8>, v: &Option<(u64, TextRef)>, arena: &[u8]) {
    match v {
        None => out.push(0),
        Some((p, t)) => {
            out.push(1);
            put_varint(out, *p as u128);
            put_text(out, t.get(arena));
        }
    }
}

/// Writes a run: call [`RunWriter::push`] in strictly increasing key order.
pub struct RunWriter {
    out: Vec<u8>,
    prev: Vec<u8>,
    count_at: usize,
    groups: u64,
    /// Restart entries: (offset, key). Empty and unused for streamed runs.
    index: Vec<(u64, Vec<u8>)>,
    stride: usize,
    last_restart: usize,
    indexed: bool,
}

impl RunWriter {
    /// A writer of runs of the aggregates `ops`.
    pub fn new(ops: &[AggOp]) -> Self {
        Self::with_buffer(ops, Vec::new())
    }

    /// Writes into `out` (cleared first), reusing its capacity.
    pub fn with_buffer(ops: &[AggOp], mut out: Vec<u8>) -> Self {
        out.clear();
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(ops.len() as u8);
        out.extend(ops.iter().map(|o| o.code()));
        let count_at = out.len();
        out.extend_from_slice(&[0; 8]); // group count, fixed width so it can be patched
        RunWriter {
            out,
            prev: Vec::new(),
            count_at,
            groups: 0,
            index: Vec::new(),
            stride: INDEX_STRIDE,
            last_restart: 0,
            indexed: true,
        }
    }

    /// Appends a group (keys in ascending order).
    pub fn push(&mut self, key: &[u8], accs: &[Acc], arena: &[u8]) {
        let restart = self.indexed && (self.groups == 0 || self.out.len() - self.last_restart >= self.stride);
        let shared = if restart {
            if self.index.len() == MAX_INDEX {
                // Keep every other restart; the ones dropped stay valid restarts in the data.
                let mut i = 0;
                self.index.retain(|_| {
                    i += 1;
                    i % 2 == 1
                });
                self.stride *= 2;
            }
            self.last_restart = self.out.len();
            self.index.push((self.out.len() as u64, key.to_vec()));
            0
        } else {
            common_prefix(key, &self.prev)
        };
        put_varint64(&mut self.out, shared as u64);
        put_varint64(&mut self.out, (key.len() - shared) as u64);
        self.out.extend_from_slice(&key[shared..]);
        self.prev.truncate(shared);
        self.prev.extend_from_slice(&key[shared..]);
        let out = &mut self.out;
        for a in accs {
            match a {
                Acc::Count(c) => put_varint(out, *c as u128),
                Acc::Sum(None) => out.push(0),
                Acc::Sum(Some(d)) => {
                    out.push(1);
                    put_dec(out, d);
                }
                Acc::Mean { sum, n } => {
                    put_dec(out, sum);
                    put_varint(out, *n as u128);
                }
                Acc::Min(v) | Acc::Max(v) => put_val(out, v, arena),
                Acc::First(v) | Acc::Last(v) => put_pos(out, v, arena),
            }
        }
        self.groups += 1;
    }

    /// A run whose bytes are taken out piece by piece with [`Self::take`].
    pub fn streamed(ops: &[AggOp]) -> Self {
        let mut w = Self::new(ops);
        let at = w.count_at;
        w.out[at..at + 8].copy_from_slice(&STREAMED.to_le_bytes());
        w.count_at = usize::MAX;
        w.indexed = false;
        w
    }

    /// Bytes written so far (for a streamed run): the header first, then entries.
    pub fn pending(&self) -> usize {
        self.out.len()
    }

    /// Hands out the bytes written since the last call (streamed runs only).
    pub fn take(&mut self) -> Vec<u8> {
        debug_assert_eq!(self.count_at, usize::MAX, "only a streamed run is taken in pieces");
        std::mem::take(&mut self.out)
    }

    /// Groups written so far.
    pub fn groups(&self) -> u64 {
        self.groups
    }

    /// The whole run with its index and footer; for a streamed run, the
    /// bytes not yet taken.
    pub fn finish(mut self) -> Vec<u8> {
        let at = self.count_at;
        if at != usize::MAX {
            self.out[at..at + 8].copy_from_slice(&self.groups.to_le_bytes());
            let index_at = self.out.len() as u64;
            put_varint64(&mut self.out, self.index.len() as u64);
            let mut prev = 0u64;
            for (off, key) in &self.index {
                put_varint64(&mut self.out, off - prev);
                prev = *off;
                put_varint64(&mut self.out, key.len() as u64);
                self.out.extend_from_slice(key);
            }
            self.out.extend_from_slice(&index_at.to_le_bytes());
            self.out.extend_from_slice(INDEX_MAGIC);
        }
        self.out
    }
}

/// The header of a run of `ops` whose entries follow without a count: put
/// it before the bytes of a slice to read the slice as a run.
pub fn slice_header(ops: &[AggOp]) -> Vec<u8> {
    RunWriter::streamed(ops).out
}

/// [`slice_header`] for a slice whose `first`/`last` positions count from
/// `base`: a dataset's file `i` is read as if it followed files `0..i` in
/// one stream, so that `first` and `last` follow (file, position).
pub fn slice_header_at(ops: &[AggOp], base: u64) -> Vec<u8> {
    let mut out = slice_header(ops);
    if base != 0 {
        out[3] |= POSITION_BASE;
        out.extend_from_slice(&base.to_le_bytes());
    }
    out
}

/// Reads the first bytes of a run (its header) for its ops.
pub fn ops_of(run: &[u8]) -> io::Result<Vec<AggOp>> {
    if run.len() < 5 || &run[..3] != MAGIC {
        return Err(corrupt("bad magic"));
    }
    if run[3] & !POSITION_BASE != VERSION {
        return Err(corrupt(&format!("unsupported version {}", run[3])));
    }
    let n = run[4] as usize;
    run.get(5..5 + n)
        .ok_or_else(|| corrupt("truncated header"))?
        .iter()
        .map(|&c| AggOp::from_code(c).ok_or_else(|| corrupt("bad op")))
        .collect()
}

/// Where the index of a whole run starts (from its footer).
pub fn index_at(run: &[u8]) -> io::Result<u64> {
    let n = run.len();
    if n < FOOTER || &run[n - 4..] != INDEX_MAGIC {
        return Err(corrupt("no index footer"));
    }
    Ok(u64::from_le_bytes(run[n - FOOTER..n - 4].try_into().expect("8 bytes")))
}

/// Reads a varint from `b` at `*pos`.
pub(crate) fn get_varint(b: &[u8], pos: &mut usize) -> io::Result<u64> {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let byte = *b.get(*pos).ok_or_else(|| corrupt("truncated index"))?;
        *pos += 1;
        if shift >= 64 {
            return Err(corrupt("varint too long"));
        }
        v |= ((byte & 0x7f) as u64) << shift;
        if byte < 0x80 {
            return Ok(v);
        }
        shift += 7;
    }
}

/// A malformed run: a bug or a corrupted object, never user data.
fn corrupt(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("corrupt partial aggregate: {what}"))
}

/// Streams the entries of a run.
pub struct RunReader<R> {
    src: R,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    eof: bool,
    ops: Vec<AggOp>,
    remaining: u64,
    /// Added to every `first`/`last` position (see [`slice_header_at`]).
    position_base: u64,
    /// Only entries with `lo <= key < hi` are returned (a slice's bounds).
    lo: Option<Vec<u8>>,
    hi: Option<Vec<u8>>,
    /// Current entry.
    pub key: Vec<u8>,
    /// The current group's accumulators.
    pub accs: Vec<Acc>,
    /// The current group's text arena.
    pub texts: Vec<u8>,
}

impl<R: Read> RunReader<R> {
    /// Reads the run's header from `src`.
    pub fn new(src: R) -> io::Result<Self> {
        let mut r = RunReader {
            src,
            buf: vec![0; 4 * FAST_WINDOW],
            pos: 0,
            len: 0,
            eof: false,
            ops: Vec::new(),
            remaining: 0,
            position_base: 0,
            lo: None,
            hi: None,
            key: Vec::new(),
            accs: Vec::new(),
            texts: Vec::new(),
        };
        r.ensure(5)?;
        if &r.buf[..3] != MAGIC {
            return Err(corrupt("bad magic"));
        }
        if r.buf[3] & !POSITION_BASE != VERSION {
            return Err(corrupt(&format!("unsupported version {}", r.buf[3])));
        }
        let based = r.buf[3] & POSITION_BASE != 0;
        let n = r.buf[4] as usize;
        r.pos = 5;
        r.ensure(n + 8 + if based { 8 } else { 0 })?;
        for i in 0..n {
            r.ops.push(AggOp::from_code(r.buf[r.pos + i]).ok_or_else(|| corrupt("bad op"))?);
        }
        r.pos += n;
        r.remaining = u64::from_le_bytes(r.buf[r.pos..r.pos + 8].try_into().unwrap());
        r.pos += 8;
        if based {
            r.position_base = u64::from_le_bytes(r.buf[r.pos..r.pos + 8].try_into().unwrap());
            r.pos += 8;
        }
        Ok(r)
    }

    /// The aggregates of the run.
    pub fn ops(&self) -> &[AggOp] {
        &self.ops
    }

    /// Returns only the entries with `lo <= key < hi` from now on (a
    /// bound of `None` is open). Entries below `lo` are skipped; the first
    /// one at or above `hi` ends the run.
    pub fn set_bounds(&mut self, lo: Option<Vec<u8>>, hi: Option<Vec<u8>>) {
        self.lo = lo;
        self.hi = hi;
    }

    /// Entries not yet read; [`STREAMED`] for a streamed run.
    pub fn groups_left(&self) -> u64 {
        self.remaining
    }

    /// Buffers up to `n` bytes from `pos` if the source has them.
    fn fill_at_least(&mut self, n: usize) -> io::Result<()> {
        self.buf.copy_within(self.pos..self.len, 0);
        self.len -= self.pos;
        self.pos = 0;
        if self.buf.len() < n * 4 {
            self.buf.resize(n * 4, 0);
        }
        while self.len < self.buf.len() && !self.eof {
            let got = self.src.read(&mut self.buf[self.len..])?;
            if got == 0 {
                self.eof = true;
            }
            self.len += got;
        }
        Ok(())
    }

    /// Makes at least `n` bytes available from `pos`, or fails at end of input.
    fn ensure(&mut self, n: usize) -> io::Result<()> {
        if self.len - self.pos >= n {
            return Ok(());
        }
        self.buf.copy_within(self.pos..self.len, 0);
        self.len -= self.pos;
        self.pos = 0;
        if self.buf.len() < n {
            self.buf.resize(n.max(self.buf.len() * 2), 0);
        }
        while self.len < n {
            if self.eof {
                return Err(corrupt("truncated"));
            }
            let got = self.src.read(&mut self.buf[self.len..])?;
            if got == 0 {
                self.eof = true;
            }
            self.len += got;
        }
        Ok(())
    }

    #[inline]
    fn byte(&mut self) -> io::Result<u8> {
        if self.pos == self.len {
            self.ensure(1)?;
        }
        self.pos += 1;
        Ok(self.buf[self.pos - 1])
    }

    #[inline]
    fn varint(&mut self) -> io::Result<u128> {
        if self.pos < self.len && self.buf[self.pos] < 0x80 {
            self.pos += 1;
            return Ok(self.buf[self.pos - 1] as u128);
        }
        let mut v: u128 = 0;
        let mut shift = 0;
        loop {
            let b = self.byte()?;
            if shift >= 128 {
                return Err(corrupt("varint too long"));
            }
            v |= ((b & 0x7f) as u128) << shift;
            if b < 0x80 {
                return Ok(v);
            }
            shift += 7;
        }
    }

    fn signed(&mut self) -> io::Result<i128> {
        let u = self.varint()?;
        Ok(((u >> 1) as i128) ^ -((u & 1) as i128))
    }

    fn dec(&mut self) -> io::Result<Decimal> {
        let scale = self.byte()?;
        Ok(Decimal { mantissa: self.signed()?, scale })
    }

    fn text(&mut self) -> io::Result<TextRef> {
        let n = self.varint()? as usize;
        if self.len - self.pos < n {
            self.ensure(n)?;
        }
        let r = TextRef { off: self.texts.len() as u64, len: n as u32 };
        self.texts.extend_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(r)
    }

    fn val(&mut self) -> io::Result<Option<Val>> {
        Ok(match self.byte()? {
            0 => None,
            1 => Some(Val::Num(self.dec()?)),
            2 => Some(Val::Text(self.text()?)),
            _ => return Err(corrupt("bad value tag")),
        })
    }

    fn pos_text(&mut self) -> io::Result<Option<(u64, TextRef)>> {
        Ok(match self.byte()? {
            0 => None,
            1 => {
                let p = (self.varint()? as u64)
                    .checked_add(self.position_base)
                    .ok_or_else(|| corrupt("position past the end of the stream"))?;
                Some((p, self.text()?))
            }
            _ => return Err(corrupt("bad first/last tag")),
        })
    }

    /// Moves to the next entry; `false` at the end of the run.
    pub fn advance(&mut self) -> io::Result<bool> {
        loop {
            if !self.advance_any()? {
                return Ok(false);
            }
            // Word by word, inline: a slice comparison is a memcmp call per entry.
            if self.hi.as_deref().is_some_and(|hi| cmp_keys(&self.key, hi).is_ge()) {
                self.remaining = 0;
                return Ok(false);
            }
            if self.lo.as_deref().is_none_or(|lo| cmp_keys(&self.key, lo).is_ge()) {
                // Keys only grow: the rest of the run is past `lo` too.
                self.lo = None;
                return Ok(true);
            }
        }
    }

    fn advance_any(&mut self) -> io::Result<bool> {
        if self.remaining == 0 {
            return Ok(false);
        }
        if self.remaining == STREAMED && self.pos == self.len {
            self.fill_at_least(FAST_WINDOW)?;
            if self.pos == self.len {
                return Ok(false);
            }
        }
        // Most entries are a few dozen bytes: with this much buffered, the
        // checked byte reads below never need to refill.
        if self.len - self.pos < FAST_WINDOW && !self.eof {
            let _ = self.fill_at_least(FAST_WINDOW);
        }
        if self.remaining != STREAMED {
            self.remaining -= 1;
        }
        let shared = self.varint()? as usize;
        let n = self.varint()? as usize;
        if shared > self.key.len() {
            return Err(corrupt("bad key prefix"));
        }
        if self.len - self.pos < n {
            self.ensure(n)?;
        }
        self.key.truncate(shared);
        self.key.extend_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        self.accs.clear();
        self.texts.clear();
        for i in 0..self.ops.len() {
            let a = match self.ops[i] {
                AggOp::Count => Acc::Count(self.varint()? as u64),
                AggOp::Sum => match self.byte()? {
                    0 => Acc::Sum(None),
                    1 => Acc::Sum(Some(self.dec()?)),
                    _ => return Err(corrupt("bad sum tag")),
                },
                AggOp::Mean => {
                    let sum = self.dec()?;
                    Acc::Mean { sum, n: self.varint()? as u64 }
                }
                AggOp::Min => Acc::Min(self.val()?),
                AggOp::Max => Acc::Max(self.val()?),
                AggOp::First => Acc::First(self.pos_text()?),
                AggOp::Last => Acc::Last(self.pos_text()?),
            };
            self.accs.push(a);
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let ops = [AggOp::Count, AggOp::Sum, AggOp::Mean, AggOp::Min, AggOp::Max, AggOp::First, AggOp::Last];
        let arena = b"helloworld".to_vec();
        let t = TextRef { off: 0, len: 5 };
        let accs = vec![
            Acc::Count(7),
            Acc::Sum(Some(Decimal { mantissa: -i128::MAX, scale: 3 })),
            Acc::Mean { sum: Decimal::from_int(10), n: 4 },
            Acc::Min(Some(Val::Num(Decimal::from_int(-1)))),
            Acc::Max(Some(Val::Text(TextRef { off: 5, len: 5 }))),
            Acc::First(Some((12, t))),
            Acc::Last(None),
        ];
        let mut w = RunWriter::new(&ops);
        w.push(b"abc\0", &accs, &arena);
        w.push(b"abd\0", &accs, &arena);
        let bytes = w.finish();
        let mut r = RunReader::new(&bytes[..]).unwrap();
        assert_eq!(r.groups_left(), 2);
        assert!(r.advance().unwrap());
        assert_eq!(r.key, b"abc\0");
        assert_eq!(r.accs[0], Acc::Count(7));
        assert_eq!(r.accs[1], accs[1]);
        assert!(matches!(r.accs[4], Acc::Max(Some(Val::Text(t))) if t.get(&r.texts) == b"world"));
        assert!(r.advance().unwrap());
        assert_eq!(r.key, b"abd\0");
        assert!(!r.advance().unwrap());
        assert!(RunReader::new(&bytes[..10]).and_then(|mut r| r.advance()).is_err());
    }

    #[test]
    fn streamed_runs_end_with_their_source() {
        let ops = [AggOp::Count];
        let mut w = RunWriter::streamed(&ops);
        let mut bytes = Vec::new();
        for i in 0..1000u64 {
            w.push(format!("k{i:05}\0").as_bytes(), &[Acc::Count(i)], &[]);
            if w.pending() > 100 {
                bytes.extend(w.take());
            }
        }
        bytes.extend(w.finish());
        let mut r = RunReader::new(&bytes[..]).unwrap();
        assert_eq!(r.groups_left(), STREAMED);
        for i in 0..1000u64 {
            assert!(r.advance().unwrap());
            assert_eq!(r.key, format!("k{i:05}\0").as_bytes());
            assert_eq!(r.accs[0], Acc::Count(i));
        }
        assert!(!r.advance().unwrap());
        // Cut inside an entry: an error, not a silent end.
        let mut r = RunReader::new(&bytes[..bytes.len() - 1]).unwrap();
        let mut err = false;
        for _ in 0..1000 {
            match r.advance() {
                Ok(true) => {}
                Ok(false) => break,
                Err(_) => {
                    err = true;
                    break;
                }
            }
        }
        assert!(err, "a truncated streamed run is an error");
    }
}
