//! Key ranges: a sample of the input's keys, and the splitter keys that cut
//! the key space into ranges of about equal result size.
//!
//! The sample is read from fixed positions of the object ([`sample_windows`]:
//! they depend only on its size), so the ranges are the same for every chunk
//! size, worker count and machine. Each window is parsed like a chunk (the
//! records that start in it, with the spec's filters; bad rows skipped) and
//! gives its distinct group keys. [`RangePlan::choose`] puts splitters at
//! equal quantiles of the sampled keys weighted by their size: a range's
//! result bytes are its groups' rows, so groups — not input rows — are what
//! is balanced. A hot key is one group: after the chunks pre-aggregate it,
//! it costs a reducer one entry per partial, so it needs no range of its own.
//! A key range where the sample is dense is cut finer, and a file sorted by
//! key spreads over every range because the windows cover the whole file.

use std::io;

use crate::partial::RunReader;
use crate::scan::{ChunkRange, ChunkScanner, StartState};
use crate::spec::{AggOp, Compiled, CompiledAgg, OnBadRow};
use crate::Merger;

/// Bytes per sample window.
pub const WINDOW: u64 = 64 * 1024;
/// Windows per object at most (so at most 4 MiB are sampled).
pub const WINDOWS: u64 = 64;
/// Bytes read past a window's end to finish its last record.
const TAIL: u64 = 16 * 1024;

/// The byte ranges `[start, end)` to sample: spread evenly over the data,
/// the whole data when it is small. Each is read as `[start - 1, end + tail)`
/// (see [`read_window`]).
pub fn sample_windows(data_start: u64, size: u64) -> Vec<(u64, u64)> {
    let len = size.saturating_sub(data_start);
    if len == 0 {
        return Vec::new();
    }
    if len <= WINDOW * WINDOWS {
        return vec![(data_start, size)];
    }
    let step = (len - WINDOW) / (WINDOWS - 1);
    (0..WINDOWS).map(|i| (data_start + i * step, data_start + i * step + WINDOW)).collect()
}

/// The bytes of the object to read for window `w`: one before its start
/// (the scanner's lookback) to a little past its end.
pub fn read_window(w: (u64, u64), data_start: u64, size: u64) -> (u64, u64) {
    (if w.0 == data_start { w.0 } else { w.0 - 1 }, (w.1 + TAIL).min(size))
}

/// The sampled keys of one window: `bytes` are the object's bytes
/// [`read_window`] named. Returns a key-sorted run of the distinct keys
/// with their row counts.
pub fn window_keys(spec: &Compiled, w: (u64, u64), data_start: u64, size: u64, bytes: &[u8]) -> Vec<u8> {
    let mut sampling = spec.clone();
    sampling.aggs = vec![CompiledAgg { op: AggOp::Count, col: None, name: "rows".into() }];
    sampling.on_bad_row = OnBadRow::Skip;
    let (from, to) = read_window(w, data_start, size);
    // The window's end stands in for the end of the file: a record cut there
    // is parsed short (or skipped); only the ranges' balance depends on it.
    let range = ChunkRange { index: 0, start: w.0, end: w.1.min(to) };
    let mut s = ChunkScanner::new(
        &sampling,
        range,
        to,
        w.0 == data_start,
        StartState::Known(crate::quotes::QuoteState::FieldStart),
    );
    let bytes = &bytes[..bytes.len().min((to - from) as usize)];
    let mut fed = 0usize;
    while !s.is_done() && fed <= bytes.len() {
        let n = s.feed(&bytes[fed..]);
        if n == 0 {
            break;
        }
        fed += n;
    }
    if !s.is_done() {
        return crate::partial::RunWriter::new(&[AggOp::Count]).finish();
    }
    s.finish().1
}

/// The distinct keys of a sample, merged from its windows' runs, in key order.
pub fn merge_sample(runs: &[Vec<u8>]) -> io::Result<Vec<Vec<u8>>> {
    let mut m = Merger::new(runs.iter().map(|r| &r[..]).collect(), vec!["rows".into()])?;
    let mut keys = Vec::new();
    while let Some((k, _, _)) = m.next_group().map_err(|e| io::Error::other(e.to_string()))? {
        keys.push(k.to_vec());
    }
    Ok(keys)
}

/// The splitter keys of a job: range `r` holds the keys in
/// `[splitters[r - 1], splitters[r])` (open at both ends of the key space).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangePlan {
    /// The first key of every range after the first, ascending.
    pub splitters: Vec<Vec<u8>>,
}

impl RangePlan {
    /// Cuts the sampled `keys` (sorted, distinct) into up to `want` ranges
    /// of equal weight. Fewer when the sample has fewer distinct keys.
    pub fn choose(keys: &[Vec<u8>], want: usize) -> RangePlan {
        let want = want.clamp(1, keys.len().max(1));
        let weight = |k: &Vec<u8>| k.len() as u64 + 8;
        let total: u64 = keys.iter().map(weight).sum();
        let mut splitters: Vec<Vec<u8>> = Vec::with_capacity(want.saturating_sub(1));
        let mut acc = 0u64;
        let mut j = 1u64;
        for k in keys {
            // The splitter of quantile j is the first key past j/want of the weight.
            while j < want as u64 && acc >= total * j / want as u64 {
                if splitters.last() != Some(k) && keys.first() != Some(k) {
                    splitters.push(k.clone());
                }
                j += 1;
            }
            acc += weight(k);
        }
        RangePlan { splitters }
    }

    /// How many key ranges.
    pub fn ranges(&self) -> usize {
        self.splitters.len() + 1
    }

    /// Range `r`'s bounds `[lo, hi)`.
    pub fn bounds(&self, r: usize) -> (Option<&[u8]>, Option<&[u8]>) {
        let lo = r.checked_sub(1).and_then(|i| self.splitters.get(i)).map(Vec::as_slice);
        (lo, self.splitters.get(r).map(Vec::as_slice))
    }

    /// `"FFR" 1 count:u32le (len:u32le key)*`
    pub fn encode(&self) -> Vec<u8> {
        let mut out = b"FFR\x01".to_vec();
        out.extend_from_slice(&(self.splitters.len() as u32).to_le_bytes());
        for s in &self.splitters {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s);
        }
        out
    }

    /// The plan [`Self::encode`] wrote.
    pub fn decode(b: &[u8]) -> io::Result<RangePlan> {
        let bad = || io::Error::new(io::ErrorKind::InvalidData, "corrupt range plan");
        if b.get(..4) != Some(b"FFR\x01") {
            return Err(bad());
        }
        let u32_at = |p: usize| b.get(p..p + 4).map(|x| u32::from_le_bytes(x.try_into().expect("4 bytes")) as usize);
        let n = u32_at(4).ok_or_else(bad)?;
        let mut pos = 8;
        let mut splitters = Vec::with_capacity(n.min(1 << 16));
        for _ in 0..n {
            let len = u32_at(pos).ok_or_else(bad)?;
            pos += 4;
            splitters.push(b.get(pos..pos + len).ok_or_else(bad)?.to_vec());
            pos += len;
        }
        if pos != b.len() || splitters.windows(2).any(|w| w[0] >= w[1]) {
            return Err(bad());
        }
        Ok(RangePlan { splitters })
    }
}

/// Reads a run's keys (tests and tools).
pub fn run_keys(run: &[u8]) -> io::Result<Vec<Vec<u8>>> {
    let mut r = RunReader::new(run)?;
    let mut out = Vec::new();
    while r.advance()? {
        out.push(r.key.clone());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_depend_on_the_size_only_and_cover_the_data() {
        assert!(sample_windows(10, 10).is_empty());
        assert_eq!(sample_windows(10, 1000), vec![(10, 1000)]);
        let w = sample_windows(100, 1 << 30);
        assert_eq!(w.len() as u64, WINDOWS);
        assert_eq!(w[0].0, 100);
        assert!(w.last().unwrap().1 <= 1 << 30);
        assert!(w.windows(2).all(|p| p[0].1 <= p[1].0));
    }

    #[test]
    fn splitters_are_increasing_quantiles() {
        let keys: Vec<Vec<u8>> = (0..1000).map(|i| format!("{i:04}").into_bytes()).collect();
        let p = RangePlan::choose(&keys, 4);
        assert_eq!(p.ranges(), 4);
        assert_eq!(p.splitters, vec![b"0250".to_vec(), b"0500".to_vec(), b"0750".to_vec()]);
        assert_eq!(RangePlan::decode(&p.encode()).unwrap(), p);
        assert_eq!(p.bounds(0), (None, Some(&b"0250"[..])));
        assert_eq!(p.bounds(3), (Some(&b"0750"[..]), None));
        // Fewer keys than ranges wanted; one key; none.
        assert_eq!(RangePlan::choose(&keys[..3], 10).ranges(), 3);
        assert_eq!(RangePlan::choose(&keys[..1], 10).ranges(), 1);
        assert_eq!(RangePlan::choose(&[], 10).ranges(), 1);
        assert!(RangePlan::decode(b"FFR\x01\x01\0\0\0").is_err());
    }
}
