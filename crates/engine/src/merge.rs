//! Merging partials: [`Merger`] is a streaming k-way merge of key-sorted
//! runs. It holds one entry per run, so its memory does not grow with the
//! number of rows.

use std::io::{self, Read};

use crate::acc::{combine, Acc};
use crate::key::{cmp_after_prefix, eq_keys, prefix, Prefix};
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
