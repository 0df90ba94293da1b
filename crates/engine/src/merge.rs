//! Merging partials: [`Merger`] is a streaming k-way merge of key-sorted
//! runs. It holds one entry per run, so its memory does not grow with the
//! number of rows.

use std::io::{self, Read};

use crate::acc::{combine, Acc};
use crate::key::{cmp_after, eq_keys, prefix, Prefix};
use crate::partial::RunReader;
use crate::Error;

/// A merged group: its encoded key, its accumulators, their text arena.
pub type Group<'a> = (&'a [u8], &'a [Acc], &'a [u8]);

/// Streams the merged groups of several runs in key order.
///
/// The runs meet in a tournament tree of losers: advancing the winning run
/// replays one leaf-to-root path, one comparison per level (log2 k), where
/// a binary heap's sift-down costs up to two per level. Ties between equal
/// keys go to the lower run index, so groups combine in run order.
pub struct Merger<R> {
    runs: Vec<RunReader<R>>,
    /// The first 32 bytes of each leaf's current key (all ones for a spent
    /// leaf): most comparisons end here without touching the keys.
    prefixes: Vec<Prefix>,
    /// The next 32 bytes (zero for a key of 32 or fewer): keys that share
    /// their first 32 bytes (a long song title, and a date) are told apart
    /// here, without loading the keys.
    seconds: Vec<Prefix>,
    /// Each run's current key length: equal prefixes of keys no longer than
    /// them are equal keys (or one key a zero-padded prefix of the other),
    /// so ties — a key in every run — are settled without loading keys.
    lens: Vec<usize>,
    /// Whether each leaf (run, or padding up to a power of two) is spent.
    spent: Vec<bool>,
    /// `tree[0]` is the winning run; `tree[n]` for `1 <= n < leaves` the
    /// loser of the match at internal node `n` (leaf `i` is node `leaves + i`).
    tree: Vec<usize>,
    leaves: usize,
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
        let leaves = n.next_power_of_two();
        let mut m = Merger {
            runs,
            prefixes: vec![[u64::MAX; 4]; leaves],
            seconds: vec![[0; 4]; n],
            lens: vec![0; n],
            spent: vec![true; leaves],
            tree: vec![0; leaves],
            leaves,
            pending: false,
            key: Vec::new(),
            accs: Vec::new(),
            texts: Vec::new(),
            names,
        };
        for i in 0..n {
            if m.runs[i].advance()? {
                m.set_prefixes(i);
                m.spent[i] = false;
            }
        }
        // Play every match bottom-up: winners[node] won at `node`.
        let mut winners = vec![0usize; 2 * leaves];
        for (i, w) in winners[leaves..].iter_mut().enumerate() {
            *w = i;
        }
        for node in (1..leaves).rev() {
            let (a, b) = (winners[2 * node], winners[2 * node + 1]);
            let (win, lose) = if m.before(b, a) { (b, a) } else { (a, b) };
            winners[node] = win;
            m.tree[node] = lose;
        }
        m.tree[0] = winners[1];
        Ok(m)
    }

    /// The aggregates of the runs (none without runs).
    pub fn ops(&self) -> &[crate::spec::AggOp] {
        self.runs.first().map(|r| r.ops()).unwrap_or(&[])
    }

    /// Whether leaf `a`'s entry comes before leaf `b`'s: (key, run index),
    /// a spent leaf after every live one.
    #[inline(always)]
    fn before(&self, a: usize, b: usize) -> bool {
        // Most matches end at the first two words, compared as one number
        // without a branch (a spent leaf's are all ones, so it loses to any
        // live key unless the key's first 16 bytes are all ones too).
        let two = |p: &Prefix| ((p[0] as u128) << 64) | p[1] as u128;
        let (wa, wb) = (two(&self.prefixes[a]), two(&self.prefixes[b]));
        if wa != wb {
            return wa < wb;
        }
        self.before_slow(a, b)
    }

    /// [`Self::before`] once the first 16 bytes tie.
    #[inline]
    fn before_slow(&self, a: usize, b: usize) -> bool {
        match (self.spent[a], self.spent[b]) {
            (true, _) => false,
            (false, true) => true,
            (false, false) => {
                let (la, lb) = (self.lens[a], self.lens[b]);
                if la <= 16 && lb <= 16 {
                    return (la, a) < (lb, b);
                }
                let rest = |p: &Prefix| ((p[2] as u128) << 64) | p[3] as u128;
                let (ra, rb) = (rest(&self.prefixes[a]), rest(&self.prefixes[b]));
                if ra != rb {
                    return ra < rb;
                }
                if la <= 32 && lb <= 32 {
                    return (la, a) < (lb, b);
                }
                let (sa, sb) = (&self.seconds[a], &self.seconds[b]);
                if sa != sb {
                    return sa < sb;
                }
                if la <= 64 && lb <= 64 {
                    return (la, a) < (lb, b);
                }
                cmp_after(&self.runs[a].key, &self.runs[b].key, 64).then(a.cmp(&b)) == std::cmp::Ordering::Less
            }
        }
    }

    #[inline]
    fn set_prefixes(&mut self, i: usize) {
        let key = &self.runs[i].key;
        self.prefixes[i] = prefix(key);
        self.seconds[i] = if key.len() > 32 { prefix(&key[32..]) } else { [0; 4] };
        self.lens[i] = key.len();
    }

    /// Advances the winning run and replays its path to the root.
    fn pop_top(&mut self) -> io::Result<()> {
        let top = self.tree[0];
        if self.runs[top].advance()? {
            self.set_prefixes(top);
        } else {
            self.spent[top] = true;
            self.prefixes[top] = [u64::MAX; 4];
        }
        let mut cand = top;
        let mut node = (self.leaves + top) / 2;
        while node >= 1 {
            let other = self.tree[node];
            // Selects, not a branch: which entry wins is unpredictable.
            let swap = self.before(other, cand);
            self.tree[node] = if swap { cand } else { other };
            cand = if swap { other } else { cand };
            node /= 2;
        }
        self.tree[0] = cand;
        Ok(())
    }

    fn live_top(&self) -> Option<usize> {
        let top = self.tree[0];
        (!self.spent[top]).then_some(top)
    }

    fn top_key_repeats(&self, top: usize) -> bool {
        // The runner-up lost to the winner on the winner's path: an equal
        // key, if any, is the runner-up's.
        let mut node = (self.leaves + top) / 2;
        while node >= 1 {
            let c = self.tree[node];
            if !self.spent[c]
                && self.prefixes[c] == self.prefixes[top]
                && self.lens[c] == self.lens[top]
                && (self.lens[c] <= 32 || eq_keys(&self.runs[c].key, &self.runs[top].key))
            {
                return true;
            }
            node /= 2;
        }
        false
    }

    /// The next merged group, or `None` when all runs are exhausted.
    pub fn next_group(&mut self) -> Result<Option<Group<'_>>, Error> {
        if self.pending {
            self.pending = false;
            self.pop_top().map_err(Error::Partial)?;
        }
        let Some(top) = self.live_top() else { return Ok(None) };
        if !self.top_key_repeats(top) {
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
        while let Some(t) = self.live_top() {
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::number::Decimal;
    use crate::partial::RunWriter;
    use crate::spec::AggOp;

    /// (key, sum) in key order.
    type Sums = Vec<(Vec<u8>, i128)>;

    /// The merge of runs of sums, and each key's sum over the runs.
    fn merged_and_summed(runs: &[BTreeMap<Vec<u8>, i64>]) -> (Sums, Sums) {
        let mut want: BTreeMap<Vec<u8>, i128> = BTreeMap::new();
        let mut encoded = Vec::new();
        for run in runs {
            let mut w = RunWriter::new(&[AggOp::Sum]);
            for (k, v) in run {
                w.push(k, &[Acc::Sum(Some(Decimal::from_int(*v as i128)))], &[]);
                *want.entry(k.clone()).or_default() += *v as i128;
            }
            encoded.push(w.finish());
        }
        let mut m = Merger::new(encoded.iter().map(|r| &r[..]).collect(), vec!["sum".into()]).unwrap();
        let mut got = Vec::new();
        while let Some((key, accs, _)) = m.next_group().unwrap() {
            let Acc::Sum(Some(d)) = accs[0] else { panic!("a sum") };
            got.push((key.to_vec(), d.mantissa));
        }
        (got, want.into_iter().collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Any number of runs (none, one, empty ones, not a power of two),
        /// keys shared between runs and longer than the inline prefix, keys
        /// that end in zero bytes (equal to another's zero padding): the
        /// merge gives each key once, in byte order, with its values summed.
        #[test]
        fn merging_runs_gives_every_key_once_in_order(
            runs in prop::collection::vec(
                prop::collection::btree_map("(a{0,80}|a{30,70}[b-c]{1,2}|[a-c]{1,3}|z[a-z]{0,5}|a{0,70}\u{0}{1,3})", -1000i64..1000, 0..60),
                0..20,
            ),
        ) {
            let runs: Vec<BTreeMap<Vec<u8>, i64>> =
                runs.into_iter().map(|r| r.into_iter().map(|(k, v)| (k.into_bytes(), v)).collect()).collect();
            let (got, want) = merged_and_summed(&runs);
            prop_assert_eq!(got, want);
        }

        /// Keys of all-ones bytes (like a spent run's sentinel prefix), zero
        /// bytes, lengths around 16, 32 and 64: the same.
        #[test]
        fn keys_of_any_bytes_merge_in_order(
            runs in prop::collection::vec(
                prop::collection::btree_map(
                    (0usize..70, prop::collection::vec(prop::sample::select(vec![0u8, b'a', 255]), 0..4))
                        .prop_map(|(n, tail)| [vec![255u8; n], tail].concat()),
                    -1000i64..1000,
                    0..40,
                ),
                0..12,
            ),
        ) {
            let (got, want) = merged_and_summed(&runs);
            prop_assert_eq!(got, want);
        }
    }
}
