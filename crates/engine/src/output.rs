//! Merging partials and writing capped result files.
//!
//! [`Merger`] is a streaming k-way merge of key-sorted runs: it holds one
//! entry per run, so its memory does not grow with the number of rows.
//! [`PartWriter`] cuts the sorted rows into files of at most
//! `max_file_bytes` each, the header row included in every file.

use std::io::{self, Read};

use serde::{Deserialize, Serialize};

use crate::agg::{combine, write_value, Acc};
use crate::key::{cmp_after_prefix, eq_keys, for_each_field, prefix, Prefix};
use crate::partial::RunReader;
use crate::Error;

/// A merged group: its encoded key, its accumulators, their text arena.
pub type Group<'a> = (&'a [u8], &'a [Acc], &'a [u8]);

/// Streams the merged groups of several runs in key order.
pub struct Merger<R> {
    runs: Vec<RunReader<R>>,
    /// The first 32 bytes of each run's current key: most comparisons end
    /// here without touching the keys.
    prefixes: Vec<Prefix>,
    /// Min-heap of run indices ordered by (current key, run index).
    heap: Vec<usize>,
    /// A run whose current entry was handed out as is; it advances first.
    pending: bool,
    key: Vec<u8>,
    accs: Vec<Acc>,
    texts: Vec<u8>,
    names: Vec<String>,
}

impl<R: Read> Merger<R> {
    /// `names`: the aggregates' output names, for error messages.
    pub fn new(sources: Vec<R>, names: Vec<String>) -> io::Result<Self> {
        Self::bounded(sources, names, None, None)
    }

    /// Merges only the keys in `[lo, hi)` of each source (see
    /// [`RunReader::set_bounds`]): sources may be slices that begin before
    /// `lo` and end after `hi`.
    pub fn bounded(sources: Vec<R>, names: Vec<String>, lo: Option<&[u8]>, hi: Option<&[u8]>) -> io::Result<Self> {
        let mut runs = Vec::with_capacity(sources.len());
        for s in sources {
            let mut r = RunReader::new(s)?;
            if lo.is_some() || hi.is_some() {
                r.set_bounds(lo.map(<[u8]>::to_vec), hi.map(<[u8]>::to_vec));
            }
            runs.push(r);
        }
        if let Some(first) = runs.first() {
            if runs.iter().any(|r| r.ops() != first.ops()) {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "partials of different specs"));
            }
        }
        let n = runs.len();
        let mut m = Merger {
            runs,
            prefixes: vec![[0; 4]; n],
            heap: Vec::new(),
            pending: false,
            key: Vec::new(),
            accs: Vec::new(),
            texts: Vec::new(),
            names,
        };
        for i in 0..n {
            if m.runs[i].advance()? {
                m.prefixes[i] = prefix(&m.runs[i].key);
                m.heap.push(i);
                let last = m.heap.len() - 1;
                m.sift_up(last);
            }
        }
        Ok(m)
    }

    /// The aggregates of the runs (none without runs).
    pub fn ops(&self) -> &[crate::spec::AggOp] {
        self.runs.first().map(|r| r.ops()).unwrap_or(&[])
    }

    #[inline]
    fn less(&self, a: usize, b: usize) -> bool {
        let (pa, pb) = (&self.prefixes[a], &self.prefixes[b]);
        if pa != pb {
            return pa < pb;
        }
        cmp_after_prefix(&self.runs[a].key, &self.runs[b].key).then(a.cmp(&b)) == std::cmp::Ordering::Less
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let p = (i - 1) / 2;
            if self.less(self.heap[i], self.heap[p]) {
                self.heap.swap(i, p);
                i = p;
            } else {
                break;
            }
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        let n = self.heap.len();
        loop {
            let l = 2 * i + 1;
            if l >= n {
                break;
            }
            let r = l + 1;
            let c = if r < n && self.less(self.heap[r], self.heap[l]) { r } else { l };
            if self.less(self.heap[c], self.heap[i]) {
                self.heap.swap(c, i);
                i = c;
            } else {
                break;
            }
        }
    }

    /// Advances the run at the top of the heap.
    fn pop_top(&mut self) -> io::Result<()> {
        let top = self.heap[0];
        if self.runs[top].advance()? {
            self.prefixes[top] = prefix(&self.runs[top].key);
            self.sift_down(0);
        } else {
            let last = self.heap.pop().expect("non-empty");
            if !self.heap.is_empty() {
                self.heap[0] = last;
                self.sift_down(0);
            }
        }
        Ok(())
    }

    fn top_key_repeats(&self) -> bool {
        // Heap order means an equal key, if any, sits at a child of the root.
        let top = self.heap[0];
        self.heap[1..self.heap.len().min(3)]
            .iter()
            .any(|&c| self.prefixes[c] == self.prefixes[top] && eq_keys(&self.runs[c].key, &self.runs[top].key))
    }

    /// The next merged group, or `None` when all runs are exhausted.
    pub fn next_group(&mut self) -> Result<Option<Group<'_>>, Error> {
        if self.pending {
            self.pending = false;
            self.pop_top().map_err(Error::Partial)?;
        }
        let Some(&top) = self.heap.first() else { return Ok(None) };
        if !self.top_key_repeats() {
            // The common case: the group is in one run only; hand it out as is.
            self.pending = true;
            let r = &self.runs[top];
            return Ok(Some((&r.key, &r.accs, &r.texts)));
        }
        self.key.clear();
        self.key.extend_from_slice(&self.runs[top].key);
        self.accs.clear();
        self.texts.clear();
        {
            let r = &self.runs[top];
            for b in &r.accs {
                let mut a = Acc::empty(op_of(b));
                combine(&mut a, &mut self.texts, b, &r.texts).expect("combining into an empty acc cannot overflow");
                self.accs.push(a);
            }
        }
        self.pop_top().map_err(Error::Partial)?;
        while let Some(&t) = self.heap.first() {
            if !eq_keys(&self.runs[t].key, &self.key) {
                break;
            }
            let r = &self.runs[t];
            for (i, (a, b)) in self.accs.iter_mut().zip(&r.accs).enumerate() {
                if combine(a, &mut self.texts, b, &r.texts).is_err() {
                    return Err(Error::SumOverflow { aggregate: self.names.get(i).cloned().unwrap_or_default() });
                }
            }
            self.pop_top().map_err(Error::Partial)?;
        }
        Ok(Some((&self.key, &self.accs, &self.texts)))
    }
}

fn op_of(a: &Acc) -> crate::spec::AggOp {
    use crate::spec::AggOp;
    match a {
        Acc::Count(_) => AggOp::Count,
        Acc::Sum(_) => AggOp::Sum,
        Acc::Mean { .. } => AggOp::Mean,
        Acc::Min(_) => AggOp::Min,
        Acc::Max(_) => AggOp::Max,
        Acc::First(_) => AggOp::First,
        Acc::Last(_) => AggOp::Last,
    }
}

/// Appends one CSV field, quoted when it holds a delimiter, quote or line break.
pub fn push_csv_field(out: &mut Vec<u8>, v: &[u8], delimiter: u8) {
    let needs = v.iter().any(|&b| b == delimiter || b == b'"' || b == b'\n' || b == b'\r');
    if !needs {
        out.extend_from_slice(v);
        return;
    }
    out.push(b'"');
    for &b in v {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
}

/// Formats result rows: decoded key fields, then aggregate values.
pub struct RowFormatter {
    delimiter: u8,
    scratch: Vec<u8>,
    value: Vec<u8>,
}

impl RowFormatter {
    pub fn new(delimiter: u8) -> Self {
        RowFormatter { delimiter, scratch: Vec::new(), value: Vec::new() }
    }

    pub fn header(&self, names: &[String]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, n) in names.iter().enumerate() {
            if i > 0 {
                out.push(self.delimiter);
            }
            push_csv_field(&mut out, n.as_bytes(), self.delimiter);
        }
        out.push(b'\n');
        out
    }

    /// Appends one row (with its newline) to `out`.
    pub fn row(&mut self, key: &[u8], accs: &[Acc], texts: &[u8], out: &mut Vec<u8>) {
        let d = self.delimiter;
        let mut first = true;
        let plain = !key.iter().any(|&b| b == 1 || b == d || b == b'"' || b == b'\n' || b == b'\r');
        if plain {
            // No escapes and nothing to quote: the key's field terminators become delimiters.
            let start = out.len();
            out.extend_from_slice(&key[..key.len().saturating_sub(1)]);
            for b in &mut out[start..] {
                if *b == 0 {
                    *b = d;
                }
            }
            first = key.is_empty();
        } else {
            for_each_field(key, &mut self.scratch, |f| {
                if !first {
                    out.push(d);
                }
                first = false;
                push_csv_field(out, f, d);
            });
        }
        for a in accs {
            if !first {
                out.push(d);
            }
            first = false;
            self.value.clear();
            write_value(a, texts, &mut self.value);
            push_csv_field(out, &self.value, d);
        }
        out.push(b'\n');
    }
}

/// Where the parts go.
pub trait PartSink {
    /// Starts part `index` (0-based).
    fn begin(&mut self, index: usize) -> io::Result<()>;
    fn write(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Ends the current part.
    fn end(&mut self, info: &PartInfo) -> io::Result<()>;
}

/// One written part.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartInfo {
    pub index: usize,
    pub name: String,
    pub bytes: u64,
    pub rows: u64,
}

/// The name of part `index` of key range `range`: name order is key order.
pub fn part_name(range: usize, index: usize) -> String {
    format!("part-{range:05}-{index:05}.csv")
}

/// Cuts rows into parts of at most `max_bytes`, each starting with the header.
pub struct PartWriter<S> {
    sink: S,
    range: usize,
    max: u64,
    header: Vec<u8>,
    current: Option<PartInfo>,
    parts: Vec<PartInfo>,
    buf: Vec<u8>,
}

const FLUSH_AT: usize = 1 << 20;

impl<S: PartSink> PartWriter<S> {
    /// Parts of key range 0 (see [`Self::for_range`]).
    pub fn new(sink: S, max_bytes: u64, header: Vec<u8>) -> Result<Self, Error> {
        Self::for_range(sink, max_bytes, header, 0)
    }

    /// Writes the parts of key range `range` (their names carry it).
    pub fn for_range(sink: S, max_bytes: u64, header: Vec<u8>, range: usize) -> Result<Self, Error> {
        if header.len() as u64 > max_bytes {
            return Err(Error::RowTooLarge { bytes: header.len() as u64, max: max_bytes, what: "the header row" });
        }
        Ok(PartWriter {
            sink,
            range,
            max: max_bytes,
            header,
            current: None,
            parts: Vec::new(),
            buf: Vec::with_capacity(FLUSH_AT * 2),
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.sink.write(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    fn close_current(&mut self) -> io::Result<()> {
        if let Some(p) = self.current.take() {
            self.flush()?;
            self.sink.end(&p)?;
            self.parts.push(p);
        }
        Ok(())
    }

    fn open_next(&mut self) -> io::Result<()> {
        let index = self.parts.len();
        self.sink.begin(index)?;
        self.buf.extend_from_slice(&self.header);
        self.current =
            Some(PartInfo { index, name: part_name(self.range, index), bytes: self.header.len() as u64, rows: 0 });
        Ok(())
    }

    /// Appends one formatted row (ending in a newline).
    pub fn push_row(&mut self, row: &[u8]) -> Result<(), Error> {
        let len = row.len() as u64;
        if self.header.len() as u64 + len > self.max {
            return Err(Error::RowTooLarge {
                bytes: self.header.len() as u64 + len,
                max: self.max,
                what: "a result row with the header",
            });
        }
        let fits = self.current.as_ref().is_some_and(|p| p.bytes + len <= self.max);
        if !fits {
            self.close_current().map_err(Error::Output)?;
            self.open_next().map_err(Error::Output)?;
        }
        let p = self.current.as_mut().expect("opened");
        p.bytes += len;
        p.rows += 1;
        self.buf.extend_from_slice(row);
        if self.buf.len() >= FLUSH_AT {
            self.flush().map_err(Error::Output)?;
        }
        Ok(())
    }

    /// Closes the last part (a header-only part when there were no rows).
    pub fn finish(mut self) -> Result<(Vec<PartInfo>, S), Error> {
        if self.current.is_none() && self.parts.is_empty() {
            self.open_next().map_err(Error::Output)?;
        }
        self.finish_parts()
    }

    /// Closes the last part; no part at all when there were no rows (a key
    /// range that holds no groups writes nothing).
    pub fn finish_parts(mut self) -> Result<(Vec<PartInfo>, S), Error> {
        self.close_current().map_err(Error::Output)?;
        Ok((self.parts, self.sink))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Mem {
        parts: Vec<Vec<u8>>,
    }
    impl PartSink for Mem {
        fn begin(&mut self, index: usize) -> io::Result<()> {
            assert_eq!(index, self.parts.len());
            self.parts.push(Vec::new());
            Ok(())
        }
        fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
            self.parts.last_mut().unwrap().extend_from_slice(bytes);
            Ok(())
        }
        fn end(&mut self, info: &PartInfo) -> io::Result<()> {
            assert_eq!(info.bytes as usize, self.parts[info.index].len());
            Ok(())
        }
    }

    #[test]
    fn parts_respect_the_cap_including_header() {
        let mut w = PartWriter::new(Mem::default(), 10, b"h,v\n".to_vec()).unwrap();
        for r in ["a,1\n", "b,2\n", "c,3\n"] {
            w.push_row(r.as_bytes()).unwrap();
        }
        let (parts, sink) = w.finish().unwrap();
        assert_eq!(parts.len(), 3);
        assert_eq!(sink.parts[0], b"h,v\na,1\n");
        assert!(sink.parts.iter().all(|p| p.len() <= 10));
        let mut w = PartWriter::new(Mem::default(), 10, b"h,v\n".to_vec()).unwrap();
        assert!(matches!(w.push_row(b"toolong,1\n"), Err(Error::RowTooLarge { .. })));
        let (parts, sink) = PartWriter::new(Mem::default(), 10, b"h,v\n".to_vec()).unwrap().finish().unwrap();
        assert_eq!((parts.len(), &sink.parts[0][..]), (1, &b"h,v\n"[..]));
    }

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        let mut o = Vec::new();
        push_csv_field(&mut o, b"a\"b,c", b',');
        assert_eq!(o, b"\"a\"\"b,c\"");
    }
}

/// One of the largest groups by the first aggregate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopGroup {
    pub key: Vec<String>,
    /// The first aggregate's output text (exact).
    pub value: String,
}

/// Keeps the `n` groups with the largest numeric first aggregate (a
/// dashboard's bar chart). Ranking uses an `f64` view of the value, ties go
/// to the group that comes first in key order; the value kept is exact.
/// O(1) per group unless the group enters the top.
pub struct TopGroups {
    n: usize,
    /// (rank, key, value), unordered; `floor` is the smallest rank when full.
    items: Vec<(f64, Vec<u8>, Vec<u8>)>,
    floor: f64,
}

impl TopGroups {
    pub fn new(n: usize) -> Self {
        TopGroups { n, items: Vec::with_capacity(n + 1), floor: f64::NEG_INFINITY }
    }

    /// Considers one merged group (groups arrive in key order).
    pub fn offer(&mut self, key: &[u8], accs: &[Acc], texts: &[u8]) {
        let Some(rank) = accs.first().and_then(rank_of) else { return };
        if self.n == 0 || (self.items.len() == self.n && rank <= self.floor) {
            return;
        }
        let mut value = Vec::new();
        write_value(&accs[0], texts, &mut value);
        if self.items.len() == self.n {
            // Evict the smallest; among equals the latest in key order.
            let (i, _) = self.items.iter().enumerate().rev().min_by(|a, b| a.1 .0.total_cmp(&b.1 .0)).expect("full");
            self.items.remove(i);
        }
        self.items.push((rank, key.to_vec(), value));
        if self.items.len() == self.n {
            self.floor = self.items.iter().map(|x| x.0).fold(f64::INFINITY, f64::min);
        }
    }

    /// The `n` largest of several key ranges' top groups: `groups` are the
    /// ranges' lists (each largest first, equal values in key order)
    /// concatenated in key order of the ranges. Gives what one [`TopGroups`]
    /// over all the groups would.
    pub fn merge(mut groups: Vec<TopGroup>, n: usize) -> Vec<TopGroup> {
        let rank = |g: &TopGroup| g.value.trim().parse::<f64>().unwrap_or(f64::NEG_INFINITY);
        // Stable: equal values keep their key order.
        groups.sort_by(|a, b| rank(b).total_cmp(&rank(a)));
        groups.truncate(n);
        groups
    }

    /// Largest first; equal values in key order.
    pub fn finish(mut self) -> Vec<TopGroup> {
        self.items.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let mut scratch = Vec::new();
        self.items
            .into_iter()
            .map(|(_, k, v)| {
                let mut key = Vec::new();
                for_each_field(&k, &mut scratch, |f| key.push(String::from_utf8_lossy(f).into_owned()));
                TopGroup { key, value: String::from_utf8_lossy(&v).into_owned() }
            })
            .collect()
    }
}

fn rank_of(acc: &Acc) -> Option<f64> {
    use crate::agg::Val;
    let dec = |d: &crate::number::Decimal| d.mantissa as f64 / 10f64.powi(d.scale as i32);
    match acc {
        Acc::Count(c) => Some(*c as f64),
        Acc::Sum(Some(d)) | Acc::Min(Some(Val::Num(d))) | Acc::Max(Some(Val::Num(d))) => Some(dec(d)),
        Acc::Mean { sum, n } if *n > 0 => Some(dec(sum) / *n as f64),
        _ => None,
    }
}

#[cfg(test)]
mod top_tests {
    use super::*;
    use crate::key::push_field;

    #[test]
    fn keeps_the_largest_with_ties_in_key_order() {
        let mut t = TopGroups::new(3);
        for (k, c) in [("a", 5u64), ("b", 9), ("c", 5), ("d", 1), ("e", 9), ("f", 5), ("g", 7)] {
            let mut key = Vec::new();
            push_field(&mut key, k.as_bytes());
            t.offer(&key, &[Acc::Count(c)], &[]);
        }
        let got: Vec<(String, String)> = t.finish().into_iter().map(|g| (g.key.join("|"), g.value)).collect();
        let want = [("b", "9"), ("e", "9"), ("g", "7")];
        assert_eq!(got, want.map(|(a, b)| (a.to_string(), b.to_string())));
        // n smaller than the number of equal values: the first ones in key order stay
        let mut t = TopGroups::new(2);
        for k in ["x", "y", "z"] {
            let mut key = Vec::new();
            push_field(&mut key, k.as_bytes());
            t.offer(&key, &[Acc::Count(4)], &[]);
        }
        let got: Vec<String> = t.finish().into_iter().map(|g| g.key.join("|")).collect();
        assert_eq!(got, ["x", "y"]);
    }
}
