//! A compressed input cut into parallel chunks at its member (frame)
//! boundaries, without an index.
//!
//! A chunk is a range of *compressed* bytes and owns the members that start
//! in it. Where they start is found, not stored: the chunk looks for the
//! magic numbers in its range ([`Compression::member_starts`]) and takes
//! the first place a member decodes from ([`first_member`]). A chunk then
//! decodes its members, and past its range only until its last row ends,
//! and reports where the member after its range starts (`MemberSpan`): the
//! plan checks that each chunk's first member is the one the chunk before
//! it walked into, so a false start (magic bytes inside compressed data
//! that happen to decode for a while) fails the job instead of changing
//! its rows. A file of one member is read whole by its first chunk; the
//! other chunks find nothing and are empty.
//!
//! In decoded bytes, a chunk's rows are those that begin in `[D(first) + 1,
//! D(next) + 1)` (chunk 0: from the data start), where `D(m)` is where
//! member `m`'s decoded bytes start. The one byte of shift gives each chunk
//! the byte before its range, which the chunk scanner looks at to tell
//! whether its range starts a record, from its own members.

use std::io::Read;
use std::sync::Arc;

use fanfold_engine::{ChunkRange, Compression, MemberSpan};

use crate::decode::{decode_error, walk_members, Piece};
use crate::ports::{ObjectStore, StoreError};
use crate::read_ahead::store_error;

/// Decoded bytes a candidate start must give (or its member end) to count.
const TRIAL_OUT: u64 = 256 * 1024;
/// Compressed bytes a trial reads at most.
const TRIAL_IN: u64 = 1024 * 1024;
/// Compressed bytes the search reads at a time.
const SEARCH_BUF: usize = 256 * 1024;

/// The object a search reads.
pub struct Object<'a> {
    /// Where it is.
    pub store: &'a Arc<dyn ObjectStore>,
    /// Its key.
    pub key: &'a str,
    /// The version the job was planned on.
    pub etag: &'a str,
    /// Its size in compressed bytes.
    pub size: u64,
}

/// The first position in `[from, to)` where a member starts and decodes,
/// if any.
pub fn first_member(o: &Object, compression: Compression, from: u64, to: u64) -> Result<Option<u64>, StoreError> {
    let lookahead = Compression::MEMBER_MAGIC_LEN as u64 - 1;
    let end = (to + lookahead).min(o.size);
    if from >= end {
        return Ok(None);
    }
    let mut raw = o.store.get_range_of(o.key, o.etag, from, Some(end))?;
    let mut buf = vec![0u8; SEARCH_BUF];
    let (mut filled, mut at) = (0usize, from); // `buf[..filled]` holds bytes from `at`
    loop {
        let n = raw.read(&mut buf[filled..]).map_err(store_error)?;
        filled += n;
        let ended = n == 0 || at + filled as u64 >= end;
        for i in compression.member_starts(&buf[..filled]) {
            let p = at + i as u64;
            if p >= to {
                return Ok(None);
            }
            if decodes_from(o, compression, p)? {
                return Ok(Some(p));
            }
        }
        if ended {
            return Ok(None);
        }
        // Keep the bytes a magic number could begin in.
        let keep = (lookahead as usize).min(filled);
        buf.copy_within(filled - keep..filled, 0);
        at += (filled - keep) as u64;
        filled = keep;
    }
}

/// Whether a member decodes from compressed byte `p`: [`TRIAL_OUT`] bytes
/// of it, or all of it to a valid trailer.
fn decodes_from(o: &Object, compression: Compression, p: u64) -> Result<bool, StoreError> {
    let upto = (p + TRIAL_IN).min(o.size);
    let raw = o.store.get_range_of(o.key, o.etag, p, Some(upto))?;
    let (mut members, mut out) = (0u32, 0u64);
    let walked = walk_members(raw, p, compression, 64 * 1024, |piece| match piece {
        Piece::Member { .. } => {
            members += 1;
            members == 1 // a second one: the first ended well
        }
        Piece::Bytes(b) => {
            out += b.len() as u64;
            out < TRIAL_OUT
        }
    });
    match walked {
        Ok(()) => Ok(true),
        Err(e) => match decode_error(&e) {
            // Cut off by the trial's own window, not by the object's end.
            Some(d) => Ok(d.what == "truncated" && upto < o.size),
            None => Err(store_error(e)),
        },
    }
}

/// The plan's check that the chunks' members join up: each chunk's first
/// member is the one the chunk before it walked into, a chunk that found
/// none has none walked into it, and the last walk ends at the object's end.
/// Chunk 0 starts at a member for certain, so by induction every walk the
/// chain accepted is true, and a chunk that disagrees with it took a false
/// start (magic bytes inside the data that decode): it is scanned again
/// from the member the chain names. A chunk that failed to decode from
/// where the chain says a member starts holds a real decoding error.
#[derive(Debug, Default)]
pub struct MemberChain {
    /// Where the next member starts, as the last chunk with members walked.
    expect: u64,
    /// A chunk is being scanned again: the chunks after it say nothing yet.
    relinking: bool,
    error: Option<String>,
}

impl MemberChain {
    /// The next chunk (in order): its compressed range and what it read.
    /// `Some(m)`: scan it again from member `m` (at or past its end: from
    /// none).
    pub fn check(&mut self, range: ChunkRange, members: Option<&MemberSpan>) -> Option<u64> {
        if self.broken() {
            return None;
        }
        match members {
            Some(m) if m.first == self.expect => {
                self.expect = m.next;
                self.error = m.undecodable.clone();
                None
            }
            None if self.expect >= range.end => None,
            _ => {
                self.relinking = true;
                Some(self.expect)
            }
        }
    }

    /// Whether a chunk so far broke the chain (the rows of the chunks
    /// after it say nothing).
    pub fn broken(&self) -> bool {
        self.relinking || self.error.is_some()
    }

    /// After the last chunk of an object of `size` bytes, when no chunk is
    /// scanned again: the decoding error, if any.
    pub fn finish(self, size: u64) -> Option<String> {
        self.error.or_else(|| {
            (self.expect != size).then(|| format!("the members end at compressed byte {} of {size}", self.expect))
        })
    }
}

/// Where decoding can start for a decoded offset: (decoded offset, member
/// start) pairs of the chunks' first members, every `stride`-th one kept so
/// that at most [`Milestones::MAX`] are (the plan's memory stays bounded
/// whatever the chunk count).
#[derive(Debug)]
pub struct Milestones {
    kept: Vec<(u64, u64)>,
    stride: u64,
    seen: u64,
}

impl Default for Milestones {
    fn default() -> Self {
        Milestones { kept: Vec::new(), stride: 1, seen: 0 }
    }
}

impl Milestones {
    /// At most this many are kept.
    pub const MAX: usize = 4096;

    /// The next chunk's first member: decoded bytes before it, and where it
    /// starts. In stream order.
    pub fn push(&mut self, decoded: u64, member: u64) {
        if self.seen.is_multiple_of(self.stride) {
            self.kept.push((decoded, member));
        }
        self.seen += 1;
        if self.kept.len() > Self::MAX {
            let mut i = 0;
            self.kept.retain(|_| {
                i += 1;
                i % 2 == 1
            });
            self.stride *= 2;
        }
    }

    /// The last kept member whose decoded bytes start at or before `decoded`.
    pub fn before(&self, decoded: u64) -> (u64, u64) {
        let i = self.kept.partition_point(|&(d, _)| d <= decoded);
        self.kept[..i].last().copied().unwrap_or((0, 0))
    }
}

/// The decoded byte ranges `reads` (sorted by start), each decoded from
/// the nearest milestone before it: what a compressed input's key sample
/// reads without decoding the whole object again.
pub fn read_decoded(
    o: &Object,
    compression: Compression,
    milestones: &Milestones,
    reads: &[(u64, u64)],
) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut out = Vec::with_capacity(reads.len());
    let mut i = 0;
    while i < reads.len() {
        let (d, member) = milestones.before(reads[i].0);
        // The reads that start before the next milestone share one stream.
        let mut j = i + 1;
        while j < reads.len() && milestones.before(reads[j].0) == (d, member) {
            j += 1;
        }
        let shifted: Vec<(u64, u64)> = reads[i..j].iter().map(|&(a, b)| (a - d, b - d)).collect();
        let raw = o.store.get_range_of(o.key, o.etag, member, None)?;
        let mut stream = crate::decode::decoded(raw, compression).map_err(store_error)?;
        out.extend(crate::decode::read_ranges(&mut stream, &shifted).map_err(store_error)?);
        i = j;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(index: u32, start: u64, end: u64) -> ChunkRange {
        ChunkRange { index, start, end }
    }

    fn m(first: u64, next: u64) -> Option<MemberSpan> {
        Some(MemberSpan { first, next, undecodable: None })
    }

    #[test]
    fn the_member_chain_holds_only_when_every_walk_meets_the_next_chunk() {
        // Members at 0, 150, 420 of 500 bytes; chunks of 100.
        let good = [(r(0, 0, 100), m(0, 150)), (r(1, 100, 200), m(150, 420)), (r(2, 200, 300), None)];
        let tail = [(r(3, 300, 400), None), (r(4, 400, 500), m(420, 500))];
        let mut c = MemberChain::default();
        for (range, members) in good.iter().chain(&tail) {
            assert_eq!(c.check(*range, members.as_ref()), None);
        }
        assert_eq!(c.finish(500), None);
        // Chunk 2 took a false start at 250 (chunk 1's walk says 420): it is
        // scanned again from 420, past its end, so from none; the chunks
        // after it say nothing until then.
        let mut c = MemberChain::default();
        c.check(r(0, 0, 100), m(0, 150).as_ref());
        c.check(r(1, 100, 200), m(150, 420).as_ref());
        assert_eq!(c.check(r(2, 200, 300), m(250, 420).as_ref()), Some(420));
        assert!(c.broken());
        assert_eq!(c.check(r(3, 300, 400), m(333, 500).as_ref()), None);
        // Chunk 1 missed the member at 150.
        let mut c = MemberChain::default();
        c.check(r(0, 0, 100), m(0, 150).as_ref());
        assert_eq!(c.check(r(1, 100, 200), None), Some(150));
        // The walks stop short of the end.
        let mut c = MemberChain::default();
        c.check(r(0, 0, 100), m(0, 420).as_ref());
        assert!(c.finish(500).unwrap().contains("end at compressed byte 420 of 500"));
        // A decoding error where the chain says a member starts is real; one
        // after a false start is not.
        let bad = |first| Some(MemberSpan { first, next: 500, undecodable: Some("corrupt at 170".into()) });
        let mut c = MemberChain::default();
        c.check(r(0, 0, 100), m(0, 150).as_ref());
        assert_eq!(c.check(r(1, 100, 200), bad(150).as_ref()), None);
        assert!(c.broken());
        c.check(r(2, 200, 300), m(999, 1000).as_ref());
        assert_eq!(c.finish(500).as_deref(), Some("corrupt at 170"));
        let mut c = MemberChain::default();
        c.check(r(0, 0, 100), m(0, 150).as_ref());
        assert_eq!(c.check(r(1, 100, 200), bad(120).as_ref()), Some(150));
    }

    #[test]
    fn milestones_stay_bounded_and_find_the_one_before() {
        let mut m = Milestones::default();
        for i in 0..20_000u64 {
            m.push(i * 10, i * 3);
        }
        assert!(m.kept.len() <= Milestones::MAX);
        assert_eq!(m.before(0), (0, 0));
        let (d, member) = m.before(123_456);
        assert!(d <= 123_456 && 123_456 - d < 10 * m.stride, "{d} with stride {}", m.stride);
        assert_eq!(member, d / 10 * 3);
        assert_eq!(m.before(10 * 19_999 + 5).0 % (10 * m.stride), 0);
    }
}
