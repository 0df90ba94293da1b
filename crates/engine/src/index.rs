//! A run's sparse key index, and the byte range of the keys in `[lo, hi)`.
//!
//! A reducer that merges one key range of many partials reads each
//! partial's index (the run's tail, `[index_at, len)`), asks [`slice_of`]
//! for the bytes that hold its keys, and reads only those. The slice may
//! start a little before `lo` and end a little after `hi` (at the restart
//! entries around them); the reader's bounds ([`crate::partial::RunReader::set_bounds`])
//! drop the extra entries.

use std::io;

use crate::partial::{get_varint, FOOTER, INDEX_MAGIC};

/// The restart entries of a run: `(byte offset, whole key)`, in key order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunIndex {
    /// (offset in the run, first key there) every so many groups.
    pub restarts: Vec<(u64, Vec<u8>)>,
    /// Where the entries end (and the index starts).
    pub index_at: u64,
}

impl RunIndex {
    /// Parses `tail`, the bytes `[index_at, len)` of a run (index and footer).
    pub fn parse(tail: &[u8], index_at: u64) -> io::Result<Self> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("corrupt partial index: {what}"));
        if tail.len() < FOOTER || &tail[tail.len() - 4..] != INDEX_MAGIC {
            return Err(bad("no footer"));
        }
        let at = u64::from_le_bytes(tail[tail.len() - FOOTER..tail.len() - 4].try_into().expect("8 bytes"));
        if at != index_at {
            return Err(bad("the footer disagrees with the chunk record"));
        }
        let body = &tail[..tail.len() - FOOTER];
        let mut pos = 0;
        let n = get_varint(body, &mut pos)? as usize;
        let mut restarts = Vec::with_capacity(n.min(1 << 16));
        let mut off = 0u64;
        for _ in 0..n {
            off = off.checked_add(get_varint(body, &mut pos)?).ok_or_else(|| bad("offset"))?;
            let len = get_varint(body, &mut pos)? as usize;
            let key = body.get(pos..pos.saturating_add(len)).ok_or_else(|| bad("truncated key"))?;
            pos += len;
            if off >= index_at
                || restarts.last().is_some_and(|(o, k): &(u64, Vec<u8>)| *o >= off || k.as_slice() >= key)
            {
                return Err(bad("restarts out of order"));
            }
            restarts.push((off, key.to_vec()));
        }
        Ok(RunIndex { restarts, index_at })
    }

    /// The bytes `[start, end)` of the run that hold every entry with
    /// `lo <= key < hi` (`None`: unbounded). They begin at a restart entry,
    /// so they can be read as a slice. Empty when no entry can be in range.
    pub fn slice_of(&self, lo: Option<&[u8]>, hi: Option<&[u8]>) -> (u64, u64) {
        slice_of(&self.restarts, self.index_at, lo, hi)
    }
}

/// See [`RunIndex::slice_of`].
pub fn slice_of(restarts: &[(u64, Vec<u8>)], index_at: u64, lo: Option<&[u8]>, hi: Option<&[u8]>) -> (u64, u64) {
    let Some(first) = restarts.first() else { return (index_at, index_at) };
    // The last restart whose key is <= lo: everything before it is < lo.
    let start = match lo {
        None => first.0,
        Some(lo) => {
            let i = restarts.partition_point(|(_, k)| k.as_slice() <= lo);
            restarts[i.saturating_sub(1)].0
        }
    };
    // The first restart whose key is >= hi: it and everything after it are >= hi.
    let end = match hi {
        None => index_at,
        Some(hi) => {
            let i = restarts.partition_point(|(_, k)| k.as_slice() < hi);
            restarts.get(i).map_or(index_at, |r| r.0)
        }
    };
    (start, end.max(start))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acc::Acc;
    use crate::partial::{index_at, ops_of, slice_header, RunReader, RunWriter};
    use crate::spec::AggOp;

    fn run(n: u64) -> Vec<u8> {
        let mut w = RunWriter::new(&[AggOp::Count]);
        for i in 0..n {
            w.push(format!("k{i:07}\0").as_bytes(), &[Acc::Count(i)], &[]);
        }
        w.finish()
    }

    fn keys_in(run: &[u8], lo: Option<&[u8]>, hi: Option<&[u8]>) -> Vec<Vec<u8>> {
        let at = index_at(run).unwrap();
        let idx = RunIndex::parse(&run[at as usize..], at).unwrap();
        let (s, e) = idx.slice_of(lo, hi);
        let mut bytes = slice_header(&ops_of(run).unwrap());
        bytes.extend_from_slice(&run[s as usize..e as usize]);
        let mut r = RunReader::new(&bytes[..]).unwrap();
        r.set_bounds(lo.map(<[u8]>::to_vec), hi.map(<[u8]>::to_vec));
        let mut out = Vec::new();
        while r.advance().unwrap() {
            out.push(r.key.clone());
        }
        out
    }

    #[test]
    fn slices_hold_exactly_the_keys_in_range() {
        for n in [0u64, 1, 5, 3000, 200_000] {
            let r = run(n);
            let all: Vec<Vec<u8>> = (0..n).map(|i| format!("k{i:07}\0").into_bytes()).collect();
            assert_eq!(keys_in(&r, None, None), all, "{n}");
            let at = index_at(&r).unwrap();
            let idx = RunIndex::parse(&r[at as usize..], at).unwrap();
            assert!(idx.restarts.len() <= crate::partial::MAX_INDEX);
            for (lo, hi) in [(0u64, 1u64), (3, 17), (n / 3, n / 2), (n / 2, n + 5), (7, 7)] {
                let lk = format!("k{lo:07}\0").into_bytes();
                let hk = format!("k{hi:07}\0").into_bytes();
                let want: Vec<Vec<u8>> = all
                    .iter()
                    .filter(|k| k.as_slice() >= lk.as_slice() && k.as_slice() < hk.as_slice())
                    .cloned()
                    .collect();
                assert_eq!(keys_in(&r, Some(&lk), Some(&hk)), want, "{n}: [{lo}, {hi})");
                let below: Vec<Vec<u8>> = all.iter().filter(|k| k.as_slice() < lk.as_slice()).cloned().collect();
                assert_eq!(keys_in(&r, None, Some(&lk)), below);
            }
        }
        // A big run reads a small part of itself for a narrow range.
        let r = run(200_000);
        let at = index_at(&r).unwrap();
        let idx = RunIndex::parse(&r[at as usize..], at).unwrap();
        let (s, e) = idx.slice_of(Some(b"k0100000\0"), Some(b"k0100010\0"));
        assert!(e - s <= 2 * crate::partial::INDEX_STRIDE as u64, "{} of {}", e - s, r.len());
        assert!(r.len() as u64 > 10 * (e - s));
    }

    #[test]
    fn a_damaged_index_is_an_error() {
        let r = run(100);
        let at = index_at(&r).unwrap();
        assert!(RunIndex::parse(&r[at as usize..], at + 1).is_err());
        let mut bad = r.clone();
        let n = bad.len();
        bad[n - 1] = b'?';
        assert!(index_at(&bad).is_err());
    }
}
