//! The per-chunk group table: rows staged into key-range partitions, each
//! aggregated with the accumulators of [`crate::acc`] in a table that fits
//! in cache.

use std::cmp::Ordering;
use std::hash::BuildHasher;

use hashbrown::HashTable;

use crate::acc::{update, Acc, Input};
use crate::key::{cmp_keys, eq_keys, prefix, prefix_words, Prefix};
use crate::number::Decimal;
use crate::spec::AggOp;

/// Rows staged before routing is decided, and the sample size.
const SAMPLE_ROWS: usize = 4096;
/// Key-range partitions a chunk's rows are staged into.
const PARTITIONS: usize = 256;
/// Staging block size: rows are appended to a partition's current block;
/// a full block is followed by a fresh one from the pool. Blocks never grow
/// or move, and go back to the pool when their partition is aggregated.
const BLOCK: usize = 64 * 1024;
/// Write-combining buffer per partition. Rows land in a small buffer that
/// stays in cache and reach the partition's block in bursts of several
/// cache lines: writing each row straight into one of 256 cold blocks cost
/// a cache miss (read for ownership) every other row, which the hardware
/// prefetcher cannot hide across that many streams.
const COMBINE: usize = 1024;
/// Staged bytes after which a chunk's staged rows are folded into tables
/// of their partitions that live until the chunk ends: a chunk's
/// memory is then its groups plus this much, not all of its rows. A chunk
/// of up to ~100 MiB (the local default is 64 MiB) never folds and keeps
/// the one reused table: folding it costs fresh tables and more memory
/// than its staging (docs/architecture.md, "A large piece folds").
const FOLD_BYTES: usize = 128 << 20;
/// Partitions the first fold tries before it decides whether folding pays.
const TRIAL_PARTITIONS: usize = 16;
/// Groups per folded row above which a chunk stops folding (measured on
/// the `fanfold gen` files: zipf's first 64 MiB of a chunk 0.39, bmat's 1.00).
const MAX_FOLD_RATIO: f64 = 0.7;

/// Routes keys to partitions so that partition order is key order: keys
/// below the sample's common prefix go first, keys above it last, and the
/// rest by the two bytes after the prefix through a table built from the
/// sample's quantiles. Monotone, O(1) per row, no comparisons with splitters.
struct Router {
    prefix: Vec<u8>,
    table: Vec<u16>,
    last: usize,
}

impl Router {
    fn from_sample(keys: &[&[u8]]) -> Router {
        let first = keys[0];
        let mut l = first.len();
        for k in &keys[1..] {
            l = l.min(k.iter().zip(first).take_while(|(a, b)| a == b).count());
        }
        let prefix = first[..l].to_vec();
        let mut hist = vec![0u32; 65536];
        for k in keys {
            hist[two_bytes(k, l)] += 1;
        }
        let inner = PARTITIONS - 2;
        let n = keys.len() as u64;
        let mut table = vec![0u16; 65536];
        let mut below = 0u64;
        for (v, slot) in table.iter_mut().enumerate() {
            *slot = (1 + (below * inner as u64 / n) as usize).min(inner) as u16;
            below += hist[v] as u64;
        }
        Router { prefix, table, last: PARTITIONS - 1 }
    }

    #[inline]
    fn route(&self, key: &[u8]) -> usize {
        let l = self.prefix.len();
        if l > 0 {
            let head = &key[..l.min(key.len())];
            match head.cmp(&self.prefix[..head.len()]) {
                Ordering::Less => return 0,
                Ordering::Greater => return self.last,
                Ordering::Equal if key.len() < l => return 0,
                Ordering::Equal => {}
            }
        }
        self.table[two_bytes(key, l)] as usize
    }
}

#[inline]
fn two_bytes(k: &[u8], at: usize) -> usize {
    ((*k.get(at).unwrap_or(&0) as usize) << 8) | *k.get(at + 1).unwrap_or(&0) as usize
}

fn put_len(out: &mut Vec<u8>, mut v: usize) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[inline]
fn get_len(b: &[u8], i: &mut usize) -> usize {
    let mut v = 0usize;
    let mut shift = 0;
    loop {
        let x = b[*i];
        *i += 1;
        v |= ((x & 0x7f) as usize) << shift;
        if x < 0x80 {
            return v;
        }
        shift += 7;
    }
}

/// Buffers a worker reuses from chunk to chunk, so that memory is not
/// returned to the OS and faulted in again for every chunk.
#[derive(Default)]
pub struct ScanBuffers {
    /// Empty staging blocks (capacity `BLOCK`).
    pool: Vec<Vec<u8>>,
    pending: Vec<u8>,
    combine: Vec<Vec<u8>>,
    table: Option<PartTable>,
    /// The run's output buffer.
    pub run: Vec<u8>,
}

/// The groups of one chunk.
///
/// Rows are not aggregated as they arrive: they are staged (key, parsed
/// inputs, row offset) into key-range partitions; [`GroupTable::finish`]
/// then aggregates one partition at a time with a table small enough to
/// stay in cache, sorts its groups and appends them to the run. A chunk
/// with millions of distinct keys thus never probes a table larger than a
/// few hundred kilobytes, and only one partition's groups are in memory.
///
/// A large chunk (a piece of a Lambda worker's 512 MiB chunk) does not keep
/// all of its rows staged: every [`FOLD_BYTES`] staged, each partition's
/// staged rows are folded into that partition's own table, in the order
/// they were staged, so every group sees the same updates in the same order
/// and the result is the same bytes.
pub struct GroupTable {
    ops: Vec<AggOp>,
    needs_pos: bool,
    router: Option<Router>,
    /// Rows before the router exists (the sample).
    pending: Vec<u8>,
    pending_rows: usize,
    /// Staged rows per partition, in blocks.
    parts: Vec<Vec<Vec<u8>>>,
    /// Each partition's write-combining buffer (capacity `COMBINE`).
    combine: Vec<Vec<u8>>,
    pool: Vec<Vec<u8>>,
    rows: u64,
    /// Bytes staged since the last fold, and how many make a fold.
    staged_bytes: usize,
    fold_bytes: usize,
    /// Whether the trial fold found repeated keys.
    folds_pay: bool,
    /// Each partition's folded groups, once the chunk has folded.
    folded: Vec<Option<PartTable>>,
}

/// Groups of a partition from which its keys of up to 24 bytes are radix
/// sorted (fewer: compared; zipf's ~800 per partition sorted no faster by
/// radix, bmat's ~11,000 5% faster). Tests radix sort from 4 on, so that
/// their small partitions take both paths.
const RADIX_MIN: usize = if cfg!(test) { 4 } else { 4096 };

/// A sort order of groups: (the first `N` words of the key, group id).
type Order<const N: usize> = Vec<([u64; N], u32)>;

/// A partition's aggregation state, reused across partitions.
struct PartTable {
    table: HashTable<u32>,
    hasher: hashbrown::DefaultHashBuilder,
    key_ends: Vec<usize>,
    keys: Vec<u8>,
    accs: Vec<Acc>,
    texts: Vec<u8>,
    template: Vec<Acc>,
    scratch: Vec<Acc>,
    order: Vec<(Prefix, u32)>,
    /// The sort orders of partitions whose keys are all at most 8, 16 or
    /// 24 bytes long: fewer words per entry and per comparison.
    short: (Order<1>, Order<2>, Order<3>),
    /// The longest key of the partition's groups.
    max_key: usize,
    overflow: Option<usize>,
    /// Rows aggregated since the last reset.
    rows: u64,
}

impl GroupTable {
    pub fn new(ops: &[AggOp], buffers: &mut ScanBuffers) -> Self {
        let mut pending = std::mem::take(&mut buffers.pending);
        pending.clear();
        GroupTable {
            ops: ops.to_vec(),
            needs_pos: ops.iter().any(|o| matches!(o, AggOp::First | AggOp::Last)),
            router: None,
            pending,
            pending_rows: 0,
            parts: Vec::new(),
            combine: std::mem::take(&mut buffers.combine),
            pool: std::mem::take(&mut buffers.pool),
            rows: 0,
            staged_bytes: 0,
            fold_bytes: FOLD_BYTES,
            folds_pay: false,
            folded: Vec::new(),
        }
    }

    /// Stages one row: its encoded key, its inputs (text inputs are ranges of `row`), its offset.
    #[inline]
    pub fn add_row(&mut self, key: &[u8], inputs: &[Input], row: &[u8], pos: u64) {
        self.rows += 1;
        let Some(r) = &self.router else {
            encode_row(&mut self.pending, key, inputs, row, pos, self.needs_pos);
            self.pending_rows += 1;
            if self.pending_rows == SAMPLE_ROWS {
                self.build_router();
            }
            return;
        };
        let p = r.route(key);
        let mut need = key.len() + 16 + 8;
        for i in inputs {
            need += match i {
                Input::Text(s, e) => e - s + 10,
                _ => 18,
            };
        }
        if self.combine[p].len() + need > COMBINE {
            self.flush(p);
        }
        if need <= COMBINE {
            encode_row(&mut self.combine[p], key, inputs, row, pos, self.needs_pos);
        } else {
            let mut block = Vec::with_capacity(need);
            encode_row(&mut block, key, inputs, row, pos, self.needs_pos);
            self.parts[p].push(block);
            self.staged_bytes += need;
            if self.staged_bytes >= self.fold_bytes {
                self.fold();
            }
        }
    }

    /// Moves partition `p`'s write-combining buffer into its blocks.
    fn flush(&mut self, p: usize) {
        let staged = &mut self.combine[p];
        if staged.is_empty() {
            return;
        }
        let blocks = &mut self.parts[p];
        if blocks.last().is_none_or(|b| b.len() + staged.len() > b.capacity()) {
            blocks.push(self.pool.pop().unwrap_or_else(|| Vec::with_capacity(BLOCK)));
        }
        blocks.last_mut().expect("just ensured").extend_from_slice(staged);
        self.staged_bytes += staged.len();
        staged.clear();
        if self.staged_bytes >= self.fold_bytes {
            self.fold();
        }
    }

    /// Folds every partition's staged rows into its own table and returns
    /// the blocks to the pool.
    ///
    /// Only where keys repeat: a partition table costs about three times a
    /// staged row per group, so a chunk whose keys are nearly all distinct
    /// (a bmat-like file) would grow, not shrink. The first fold is a trial
    /// over [`TRIAL_PARTITIONS`] partitions: if they hold more than
    /// [`MAX_FOLD_RATIO`] groups per row, the chunk stops folding and stages
    /// the rest as a chunk that never folds does.
    fn fold(&mut self) {
        self.staged_bytes = 0;
        self.folded.resize_with(PARTITIONS, || None);
        let mut tried = 0;
        for p in 0..self.parts.len() {
            if !self.folds_pay && !self.parts[p].is_empty() {
                tried += 1;
            }
            self.fold_partition(p);
            if !self.folds_pay && tried == TRIAL_PARTITIONS {
                let (rows, groups) =
                    self.folded.iter().flatten().fold((0, 0), |(r, g), t| (r + t.rows, g + t.groups()));
                if groups as f64 > MAX_FOLD_RATIO * rows as f64 {
                    self.fold_bytes = usize::MAX;
                    return;
                }
                self.folds_pay = true;
            }
        }
    }

    /// Folds partition `p`'s blocks (its write-combining buffer left
    /// alone) into its table.
    fn fold_partition(&mut self, p: usize) {
        let blocks = &mut self.parts[p];
        if blocks.is_empty() {
            return;
        }
        let t = self.folded[p].get_or_insert_with(|| PartTable::new(&self.ops));
        for b in blocks.iter() {
            t.aggregate(b, self.needs_pos);
        }
        for mut b in blocks.drain(..) {
            if b.capacity() == BLOCK {
                b.clear();
                self.pool.push(b);
            }
        }
    }

    fn build_router(&mut self) {
        let mut pending = std::mem::take(&mut self.pending);
        let rows = split_rows(&pending, self.ops.len(), self.needs_pos);
        let keys: Vec<&[u8]> = rows.iter().map(|&(ks, ke, _)| &pending[ks..ke]).collect();
        let router = Router::from_sample(&keys);
        self.parts.resize_with(PARTITIONS, Vec::new);
        self.combine.resize_with(PARTITIONS, || Vec::with_capacity(COMBINE));
        for &(ks, ke, end) in &rows {
            let p = router.route(&pending[ks..ke]);
            // Re-stage the row's whole encoding (length prefix included).
            let start = ks - len_width(ke - ks);
            let blocks = &mut self.parts[p];
            if blocks.last().is_none_or(|b| b.len() + (end - start) > b.capacity()) {
                let cap = BLOCK.max(end - start);
                blocks.push(if cap == BLOCK {
                    self.pool.pop().unwrap_or_else(|| Vec::with_capacity(BLOCK))
                } else {
                    Vec::with_capacity(cap)
                });
            }
            blocks.last_mut().expect("just ensured").extend_from_slice(&pending[start..end]);
        }
        pending.clear();
        self.pending = pending;
        self.router = Some(router);
    }

    /// Aggregates and sorts every partition, visiting groups in key order:
    /// (key, accumulators, text arena). Returns the index of an aggregate
    /// whose sum overflowed, if any (its overflowing rows are left out).
    pub fn finish(mut self, buffers: &mut ScanBuffers, mut f: impl FnMut(&[u8], &[Acc], &[u8])) -> Option<usize> {
        let mut t = buffers.table.take().unwrap_or_else(|| PartTable::new(&self.ops));
        t.template = self.ops.iter().map(|o| Acc::empty(*o)).collect();
        t.overflow = None;
        if self.router.is_none() {
            t.reset();
            t.aggregate(&self.pending, self.needs_pos);
            t.emit(&mut f);
        } else {
            for p in 0..self.parts.len() {
                self.flush(p);
                if self.folded.get(p).is_some_and(Option::is_some) {
                    // Its last rows, then its groups.
                    self.fold_partition(p);
                    let mut folded = self.folded[p].take().expect("just checked");
                    if let Some(a) = folded.overflow {
                        t.overflow.get_or_insert(a);
                    }
                    folded.emit(&mut f);
                    continue;
                }
                let blocks = &mut self.parts[p];
                if blocks.is_empty() {
                    continue;
                }
                t.reset();
                for b in blocks.iter() {
                    t.aggregate(b, self.needs_pos);
                }
                t.emit(&mut f);
                for mut b in blocks.drain(..) {
                    if b.capacity() == BLOCK {
                        b.clear();
                        self.pool.push(b);
                    }
                }
            }
        }
        let overflow = t.overflow;
        buffers.pending = self.pending;
        buffers.combine = self.combine;
        buffers.pool = self.pool;
        buffers.table = Some(t);
        overflow
    }
}

/// Appends one staged row: length-prefixed key, offset (if needed), tagged inputs.
///
/// Tags: 0 empty, 1 present, 2 i64 mantissa, 3 i128, 4 text, 5 i32 (most
/// numbers: a price, a count of plays), 6 the previous input again (mean,
/// min and max of one column). Staged bytes are a chunk's memory traffic
/// and, in its first chunk, a worker's fresh pages: the catalogue's rows
/// staged 41 bytes of inputs with tags 2 and 4 alone, 15 with 5 and 6.
#[inline]
fn encode_row(buf: &mut Vec<u8>, key: &[u8], inputs: &[Input], row: &[u8], pos: u64, needs_pos: bool) {
    put_len(buf, key.len());
    buf.extend_from_slice(key);
    if needs_pos {
        buf.extend_from_slice(&pos.to_le_bytes());
    }
    let mut prev = Input::Null;
    for &input in inputs {
        match input {
            Input::Null => buf.push(0),
            Input::Present => buf.push(1),
            Input::Num(d) if matches!(prev, Input::Num(p) if p == d) => buf.push(6),
            Input::Text(s, e) if matches!(prev, Input::Text(ps, pe) if (ps, pe) == (s, e)) => buf.push(6),
            Input::Num(d) => {
                if let Ok(m) = i32::try_from(d.mantissa) {
                    buf.push(5);
                    buf.push(d.scale);
                    buf.extend_from_slice(&m.to_le_bytes());
                } else if let Ok(m) = i64::try_from(d.mantissa) {
                    buf.push(2);
                    buf.push(d.scale);
                    buf.extend_from_slice(&m.to_le_bytes());
                } else {
                    buf.push(3);
                    buf.push(d.scale);
                    buf.extend_from_slice(&d.mantissa.to_le_bytes());
                }
            }
            Input::Text(s, e) => {
                buf.push(4);
                put_len(buf, e - s);
                buf.extend_from_slice(&row[s..e]);
            }
        }
        prev = input;
    }
}

fn len_width(mut v: usize) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// Skips one staged input; returns it (`prev`: the row's input before it).
#[inline]
fn read_input(b: &[u8], i: &mut usize, prev: Input) -> Input {
    let tag = b[*i];
    *i += 1;
    match tag {
        0 => Input::Null,
        1 => Input::Present,
        5 => {
            let scale = b[*i];
            let m = i32::from_le_bytes(b[*i + 1..*i + 5].try_into().expect("4 bytes"));
            *i += 5;
            Input::Num(Decimal { mantissa: m as i128, scale })
        }
        2 => {
            let scale = b[*i];
            let m = i64::from_le_bytes(b[*i + 1..*i + 9].try_into().expect("8 bytes"));
            *i += 9;
            Input::Num(Decimal { mantissa: m as i128, scale })
        }
        3 => {
            let scale = b[*i];
            let m = i128::from_le_bytes(b[*i + 1..*i + 17].try_into().expect("16 bytes"));
            *i += 17;
            Input::Num(Decimal { mantissa: m, scale })
        }
        6 => prev,
        _ => {
            let n = get_len(b, i);
            let s = *i;
            *i += n;
            Input::Text(s, s + n)
        }
    }
}

/// (key start, key end, row end) of each staged row.
fn split_rows(b: &[u8], n_inputs: usize, needs_pos: bool) -> Vec<(usize, usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let kl = get_len(b, &mut i);
        let ks = i;
        i += kl;
        if needs_pos {
            i += 8;
        }
        let mut prev = Input::Null;
        for _ in 0..n_inputs {
            prev = read_input(b, &mut i, prev);
        }
        out.push((ks, ks + kl, i));
    }
    out
}

impl PartTable {
    fn new(ops: &[AggOp]) -> PartTable {
        PartTable {
            table: HashTable::new(),
            hasher: hashbrown::DefaultHashBuilder::default(),
            key_ends: Vec::new(),
            keys: Vec::new(),
            accs: Vec::new(),
            texts: Vec::new(),
            template: ops.iter().map(|o| Acc::empty(*o)).collect(),
            scratch: Vec::new(),
            order: Vec::new(),
            short: Default::default(),
            max_key: 0,
            overflow: None,
            rows: 0,
        }
    }

    fn groups(&self) -> u64 {
        self.key_ends.len() as u64
    }

    fn key(&self, id: usize) -> &[u8] {
        let start = if id == 0 { 0 } else { self.key_ends[id - 1] };
        &self.keys[start..self.key_ends[id]]
    }

    fn reset(&mut self) {
        self.table.clear();
        self.key_ends.clear();
        self.keys.clear();
        self.accs.clear();
        self.texts.clear();
        self.max_key = 0;
        self.rows = 0;
    }

    /// Folds staged rows into the current partition's groups. Each input
    /// is applied as it is read (collecting a row's inputs first cost a
    /// store-forwarding stall per input: a third of this loop).
    fn aggregate(&mut self, b: &[u8], needs_pos: bool) {
        let n = self.template.len();
        let mut i = 0;
        while i < b.len() {
            let kl = get_len(b, &mut i);
            let key = &b[i..i + kl];
            i += kl;
            let pos = if needs_pos {
                let p = u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
                i += 8;
                p
            } else {
                0
            };
            self.rows += 1;
            let id = self.group(key);
            let accs = &mut self.accs[id * n..(id + 1) * n];
            if n == 1 {
                let input = read_input(b, &mut i, Input::Null);
                if update(&mut accs[0], input, b, pos, &mut self.texts).is_err() {
                    self.overflow.get_or_insert(0);
                }
                continue;
            }
            // All of a row's updates or none: they go to a copy first.
            self.scratch.clear();
            self.scratch.extend_from_slice(accs);
            let arena_len = self.texts.len();
            let mut failed = None;
            let mut prev = Input::Null;
            for a in 0..n {
                prev = read_input(b, &mut i, prev);
                if failed.is_none() && update(&mut self.scratch[a], prev, b, pos, &mut self.texts).is_err() {
                    failed = Some(a);
                }
            }
            match failed {
                None => accs.copy_from_slice(&self.scratch),
                Some(a) => {
                    self.texts.truncate(arena_len);
                    self.overflow.get_or_insert(a);
                }
            }
        }
    }

    #[inline]
    fn group(&mut self, key: &[u8]) -> usize {
        let hash = self.hasher.hash_one(key);
        let (keys, ends) = (&self.keys, &self.key_ends);
        let found = self
            .table
            .find(hash, |&id| {
                let id = id as usize;
                let start = if id == 0 { 0 } else { ends[id - 1] };
                eq_keys(&keys[start..ends[id]], key)
            })
            .copied();
        match found {
            Some(id) => id as usize,
            None => {
                let id = self.key_ends.len();
                self.keys.extend_from_slice(key);
                self.key_ends.push(self.keys.len());
                self.max_key = self.max_key.max(key.len());
                self.accs.extend_from_slice(&self.template);
                let (keys, ends, hasher) = (&self.keys, &self.key_ends, &self.hasher);
                self.table.insert_unique(hash, id as u32, |&g| {
                    let g = g as usize;
                    let start = if g == 0 { 0 } else { ends[g - 1] };
                    hasher.hash_one(&keys[start..ends[g]])
                });
                id
            }
        }
    }

    /// Sorts each run of `sorted` (sorted by the zero-padded key bytes
    /// `[depth, depth + 32)`) whose prefixes tie, by the next 32 bytes, again
    /// as inline tuples: keys such as a long song title and a date share
    /// their first 32 bytes by the hundred, and a comparison that loads both
    /// keys was a sixth of such a chunk's scan. Keys that end inside the
    /// next 32 bytes, and ties past 128, are compared whole.
    fn sort_ties(&self, sorted: &mut [(Prefix, u32)], depth: usize) {
        let mut i = 0;
        while i < sorted.len() {
            let mut j = i + 1;
            while j < sorted.len() && sorted[j].0 == sorted[i].0 {
                j += 1;
            }
            if j - i > 1 {
                let tie = &mut sorted[i..j];
                let next = depth + 32;
                if next >= 128 || tie.iter().any(|e| self.key(e.1 as usize).len() <= next) {
                    tie.sort_unstable_by(|a, b| cmp_keys(self.key(a.1 as usize), self.key(b.1 as usize)));
                } else {
                    for e in tie.iter_mut() {
                        e.0 = prefix(&self.key(e.1 as usize)[next..]);
                    }
                    tie.sort_unstable();
                    self.sort_ties(tie, next);
                }
            }
            i = j;
        }
    }

    /// Visits this partition's groups in key order.
    fn emit(&mut self, f: &mut impl FnMut(&[u8], &[Acc], &[u8])) {
        match self.max_key {
            0..=8 => self.emit_short(|t| &mut t.short.0, |o| radsort::sort_by_key(o, |e| e.0[0]), f),
            9..=16 => self.emit_short(|t| &mut t.short.1, |o| radsort::sort_by_key(o, |e| (e.0[0], e.0[1])), f),
            17..=24 => {
                self.emit_short(|t| &mut t.short.2, |o| radsort::sort_by_key(o, |e| (e.0[0], e.0[1], e.0[2])), f)
            }
            _ => {
                let mut order = std::mem::take(&mut self.order);
                order.clear();
                order.extend((0..self.key_ends.len()).map(|id| (prefix(self.key(id)), id as u32)));
                // Plain tuple order (an inlined comparison) sorts by prefix; only
                // runs of equal prefixes (keys longer than the prefix) need more.
                order.sort_unstable();
                self.sort_ties(&mut order, 0);
                self.visit(order.iter().map(|e| e.1), f);
                self.order = order;
            }
        }
    }

    /// [`Self::emit`] for keys of at most `8 * N` bytes: their zero-padded
    /// prefixes are whole keys, sorted by `sort` when there are many (a
    /// radix sort by the prefix words: it skips the bytes every key shares,
    /// such as a date's dashes), and equal ones (keys that
    /// differ only by trailing zero bytes) are settled by the keys' lengths.
    fn emit_short<const N: usize>(
        &mut self,
        buffer: fn(&mut Self) -> &mut Order<N>,
        sort: fn(&mut [([u64; N], u32)]),
        f: &mut impl FnMut(&[u8], &[Acc], &[u8]),
    ) {
        let mut order = std::mem::take(buffer(self));
        order.clear();
        order.extend((0..self.key_ends.len()).map(|id| (prefix_words::<N>(self.key(id)), id as u32)));
        if order.len() >= RADIX_MIN {
            sort(&mut order);
        } else {
            order.sort_unstable();
        }
        let mut i = 0;
        while i < order.len() {
            let j = i + order[i..].iter().take_while(|e| e.0 == order[i].0).count();
            if j - i > 1 {
                order[i..j].sort_unstable_by_key(|e| self.key(e.1 as usize).len());
            }
            i = j;
        }
        self.visit(order.iter().map(|e| e.1), f);
        *buffer(self) = order;
    }

    fn visit(&self, ids: impl Iterator<Item = u32>, f: &mut impl FnMut(&[u8], &[Acc], &[u8])) {
        let n = self.template.len();
        for id in ids {
            let id = id as usize;
            f(self.key(id), &self.accs[id * n..(id + 1) * n], &self.texts);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acc::write_value;
    use proptest::prelude::*;

    /// (key, its values formatted).
    type Group = (Vec<u8>, Vec<u8>);

    /// Every group of a chunk, and whether it folded.
    fn groups(rows: &[(u32, i64, String)], fold_bytes: usize) -> (Vec<Group>, bool) {
        use AggOp::*;
        let ops = [Count, Sum, Min, Max, Mean, First, Last, Min];
        let mut buffers = ScanBuffers::default();
        let mut t = GroupTable::new(&ops, &mut buffers);
        t.fold_bytes = fold_bytes;
        for (pos, (k, n, text)) in rows.iter().enumerate() {
            let key = format!("song {k:06} with a longer name");
            let num = Input::Num(Decimal { mantissa: *n as i128, scale: 2 });
            let txt = if text.is_empty() { Input::Null } else { Input::Text(0, text.len()) };
            let inputs = [Input::Present, num, num, num, num, txt, txt, txt];
            t.add_row(key.as_bytes(), &inputs, text.as_bytes(), pos as u64 * 10);
        }
        let folded = t.folded.iter().any(Option::is_some);
        let mut out = Vec::new();
        t.finish(&mut buffers, |key, accs, arena| {
            let mut v = Vec::new();
            for a in accs {
                write_value(a, arena, &mut v);
                v.push(b',');
            }
            out.push((key.to_vec(), v));
        });
        (out, folded)
    }

    /// The keys a chunk's table gives out, and the distinct keys sorted.
    fn emitted_and_sorted(keys: &[Vec<u8>]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let mut buffers = ScanBuffers::default();
        let mut t = GroupTable::new(&[AggOp::Count], &mut buffers);
        for k in keys {
            t.add_row(k, &[Input::Present], b"", 0);
        }
        let mut got = Vec::new();
        t.finish(&mut buffers, |key, _, _| got.push(key.to_vec()));
        let want = keys.iter().cloned().collect::<std::collections::BTreeSet<_>>().into_iter().collect();
        (got, want)
    }

    /// Folds stop where keys do not repeat (they would only add memory).
    #[test]
    fn folding_stops_when_keys_do_not_repeat() {
        for (keys, pays) in [(40_000u32, false), (300, true)] {
            let mut buffers = ScanBuffers::default();
            let mut t = GroupTable::new(&[AggOp::Count], &mut buffers);
            t.fold_bytes = 256 << 10;
            for i in 0..40_000u32 {
                let key = format!("song {:06} with a longer name", i.wrapping_mul(2_654_435_761) % keys);
                t.add_row(key.as_bytes(), &[Input::Present], b"", 0);
            }
            assert_eq!(t.folds_pay, pays, "{keys} keys");
            assert_eq!(t.fold_bytes == usize::MAX, !pays, "{keys} keys");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Short keys (sorted by one, two or three words) come out in byte
        /// order too, those that differ only by trailing zero bytes included.
        #[test]
        fn short_keys_come_out_in_key_order(
            keys in prop::collection::vec(prop::collection::vec(prop::sample::select(vec![0u8, 1, b'a', 255]), 0..=25), 1..3000),
            width in 1usize..=25,
        ) {
            let keys: Vec<Vec<u8>> = keys.into_iter().map(|mut k| { k.truncate(width); k }).collect();
            let (got, want) = emitted_and_sorted(&keys);
            prop_assert_eq!(got, want);
        }

        /// Groups come out in byte order of their keys, each once, whatever
        /// the keys share: prefixes of 32, 64 or more bytes, keys that end
        /// at or inside those bounds, a sample too small to route by.
        #[test]
        fn groups_come_out_in_key_order(
            keys in prop::collection::vec(
                (0usize..4, 0usize..130, "[a-c]{0,3}"),
                1..9000,
            ),
        ) {
            let stem = "s".repeat(130);
            let keys: Vec<Vec<u8>> = keys
                .into_iter()
                .map(|(kind, n, tail)| match kind {
                    0 => tail.into_bytes(),
                    1 => format!("{}{tail}", &stem[..n]).into_bytes(),
                    2 => format!("{}{n:03}", &stem[..64]).into_bytes(),
                    _ => format!("{}{tail}\u{1}x", &stem[..n.min(40)]).into_bytes(),
                })
                .collect();
            let (got, want) = emitted_and_sorted(&keys);
            prop_assert_eq!(got, want);
        }

        /// A staged row reads back as the inputs it was staged from: every
        /// width of number, texts, repeats of the input before.
        #[test]
        fn staged_inputs_read_back(
            picks in prop::collection::vec((0u8..6, any::<i128>(), 0u8..30, 0usize..20, 0usize..20), 0..12),
            pos in any::<u64>(),
        ) {
            let row: Vec<u8> = (0..40u8).map(|c| b'a' + c % 26).collect();
            let mut inputs: Vec<Input> = Vec::new();
            for (kind, m, scale, s, len) in picks {
                let num = |m: i128| Input::Num(Decimal { mantissa: m, scale });
                inputs.push(match kind {
                    0 => Input::Null,
                    1 => Input::Present,
                    2 => num(m),
                    3 => num(m as i64 as i128),
                    4 => num(m as i32 as i128),
                    _ => Input::Text(s, s + len),
                });
                if m % 3 == 0 {
                    inputs.push(*inputs.last().expect("just pushed"));
                }
            }
            let mut buf = vec![7u8; 3];
            encode_row(&mut buf, b"key", &inputs, &row, pos, true);
            let mut i = 3;
            prop_assert_eq!(get_len(&buf, &mut i), 3);
            prop_assert_eq!(&buf[i..i + 3], b"key");
            prop_assert_eq!(&buf[i + 3..i + 11], &pos.to_le_bytes()[..]);
            i += 11;
            let mut prev = Input::Null;
            for want in &inputs {
                prev = read_input(&buf, &mut i, prev);
                let same = match (want, prev) {
                    (Input::Null, Input::Null) | (Input::Present, Input::Present) => true,
                    (Input::Num(a), Input::Num(b)) => *a == b,
                    (Input::Text(s, e), Input::Text(bs, be)) => row[*s..*e] == buf[bs..be],
                    _ => false,
                };
                prop_assert!(same, "{:?} read back as {:?}", want, prev);
            }
            prop_assert_eq!(i, buf.len());
        }

        /// Folding staged rows into partition tables mid-chunk changes nothing.
        #[test]
        fn a_chunk_that_folds_gives_the_same_groups(
            keys in 1u32..5000,
            rows in prop::collection::vec((0u32..1_000_000, -1_000_000i64..1_000_000, "[a-z]{0,12}"), 8000..20000),
            fold_kib in 16usize..128,
        ) {
            let rows: Vec<_> = rows.into_iter().map(|(k, n, t)| (k % keys, n, t)).collect();
            let (want, never) = groups(&rows, usize::MAX);
            let (got, folded) = groups(&rows, fold_kib << 10);
            prop_assert!(!never && folded, "the test must fold");
            prop_assert_eq!(got, want);
        }
    }
}
