//! Aggregation state and the per-chunk group table.
//!
//! Every aggregate keeps a small fixed-size [`Acc`]; text values (min/max of
//! text, first/last) live in a byte arena beside the table and are referred
//! to by [`TextRef`]. Combining two accumulators is associative and
//! commutative, so partials can be merged in any order: `first`/`last` carry
//! the global byte offset of their row, min/max use a total order.

use std::cmp::Ordering;
use std::hash::BuildHasher;

use hashbrown::HashTable;

use crate::number::{write_decimal, write_u64, Decimal};
use crate::spec::AggOp;

/// A text value in an arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TextRef {
    pub off: u64,
    pub len: u32,
}

impl TextRef {
    pub fn get<'a>(&self, arena: &'a [u8]) -> &'a [u8] {
        &arena[self.off as usize..self.off as usize + self.len as usize]
    }
}

/// A value for min/max: numbers order before texts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Val {
    Num(Decimal),
    Text(TextRef),
}

/// One aggregate's state for one group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acc {
    Count(u64),
    Sum(Option<Decimal>),
    Mean { sum: Decimal, n: u64 },
    Min(Option<Val>),
    Max(Option<Val>),
    /// (global byte offset of the row, value)
    First(Option<(u64, TextRef)>),
    Last(Option<(u64, TextRef)>),
}

impl Acc {
    pub fn empty(op: AggOp) -> Acc {
        match op {
            AggOp::Count => Acc::Count(0),
            AggOp::Sum => Acc::Sum(None),
            AggOp::Mean => Acc::Mean { sum: Decimal::ZERO, n: 0 },
            AggOp::Min => Acc::Min(None),
            AggOp::Max => Acc::Max(None),
            AggOp::First => Acc::First(None),
            AggOp::Last => Acc::Last(None),
        }
    }
}

/// One parsed input value of a row for one aggregate.
#[derive(Clone, Copy, Debug)]
pub enum Input {
    /// Empty field: ignored by count(col), sum, mean, min, max.
    Null,
    /// A non-empty value for count(col), or any row for count.
    Present,
    Num(Decimal),
    /// A text: byte range in the row's field storage.
    Text(usize, usize),
}

/// An i128 overflow while adding to a sum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow {
    pub agg: usize,
}

fn cmp_val(a: &Val, at: &[u8], b: &Val, bt: &[u8]) -> Ordering {
    match (a, b) {
        (Val::Num(x), Val::Num(y)) => x.cmp_total(y),
        (Val::Num(_), Val::Text(_)) => Ordering::Less,
        (Val::Text(_), Val::Num(_)) => Ordering::Greater,
        (Val::Text(x), Val::Text(y)) => x.get(at).cmp(y.get(bt)),
    }
}

fn copy_text(t: TextRef, from: &[u8], to: &mut Vec<u8>) -> TextRef {
    let bytes = t.get(from);
    let r = TextRef { off: to.len() as u64, len: bytes.len() as u32 };
    to.extend_from_slice(bytes);
    r
}

fn copy_val(v: Val, from: &[u8], to: &mut Vec<u8>) -> Val {
    match v {
        Val::Num(_) => v,
        Val::Text(t) => Val::Text(copy_text(t, from, to)),
    }
}

/// Folds `b` (texts in `bt`) into `a` (texts in `arena`). Errors on overflow.
pub fn combine(a: &mut Acc, arena: &mut Vec<u8>, b: &Acc, bt: &[u8]) -> Result<(), ()> {
    match (a, b) {
        (Acc::Count(x), Acc::Count(y)) => *x += y,
        (Acc::Sum(x), Acc::Sum(y)) => {
            if let Some(y) = y {
                *x = Some(match x {
                    Some(x) => x.checked_add(*y).ok_or(())?,
                    None => *y,
                });
            }
        }
        (Acc::Mean { sum, n }, Acc::Mean { sum: s2, n: n2 }) => {
            *sum = sum.checked_add(*s2).ok_or(())?;
            *n += n2;
        }
        (Acc::Min(x), Acc::Min(Some(y))) => {
            if x.is_none_or(|xv| cmp_val(y, bt, &xv, arena) == Ordering::Less) {
                *x = Some(copy_val(*y, bt, arena));
            }
        }
        (Acc::Max(x), Acc::Max(Some(y))) => {
            if x.is_none_or(|xv| cmp_val(y, bt, &xv, arena) == Ordering::Greater) {
                *x = Some(copy_val(*y, bt, arena));
            }
        }
        (Acc::First(x), Acc::First(Some((p, t)))) => {
            if x.is_none_or(|(xp, _)| *p < xp) {
                *x = Some((*p, copy_text(*t, bt, arena)));
            }
        }
        (Acc::Last(x), Acc::Last(Some((p, t)))) => {
            if x.is_none_or(|(xp, _)| *p > xp) {
                *x = Some((*p, copy_text(*t, bt, arena)));
            }
        }
        (Acc::Min(_), Acc::Min(None))
        | (Acc::Max(_), Acc::Max(None))
        | (Acc::First(_), Acc::First(None))
        | (Acc::Last(_), Acc::Last(None)) => {}
        _ => unreachable!("accumulators of different ops are never combined"),
    }
    Ok(())
}

/// Applies one row's input to an accumulator.
#[inline]
fn update(acc: &mut Acc, input: Input, row: &[u8], pos: u64, arena: &mut Vec<u8>) -> Result<(), ()> {
    let text = |s: usize, e: usize, arena: &mut Vec<u8>| {
        let r = TextRef { off: arena.len() as u64, len: (e - s) as u32 };
        arena.extend_from_slice(&row[s..e]);
        r
    };
    match (acc, input) {
        (_, Input::Null) => {}
        (Acc::Count(c), _) => *c += 1,
        (Acc::Sum(x), Input::Num(v)) => {
            *x = Some(match x {
                Some(x) => x.checked_add(v).ok_or(())?,
                None => v,
            })
        }
        (Acc::Mean { sum, n }, Input::Num(v)) => {
            *sum = sum.checked_add(v).ok_or(())?;
            *n += 1;
        }
        (Acc::Min(x), Input::Num(v)) => {
            if x.is_none_or(|xv| cmp_val(&Val::Num(v), &[], &xv, arena) == Ordering::Less) {
                *x = Some(Val::Num(v));
            }
        }
        (Acc::Max(x), Input::Num(v)) => {
            if x.is_none_or(|xv| cmp_val(&Val::Num(v), &[], &xv, arena) == Ordering::Greater) {
                *x = Some(Val::Num(v));
            }
        }
        (Acc::Min(x), Input::Text(s, e)) => {
            let better = match x {
                None => true,
                Some(Val::Num(_)) => false,
                Some(Val::Text(t)) => &row[s..e] < t.get(arena),
            };
            if better {
                *x = Some(Val::Text(text(s, e, arena)));
            }
        }
        (Acc::Max(x), Input::Text(s, e)) => {
            let better = match x {
                None | Some(Val::Num(_)) => true,
                Some(Val::Text(t)) => &row[s..e] > t.get(arena),
            };
            if better {
                *x = Some(Val::Text(text(s, e, arena)));
            }
        }
        (Acc::First(x), Input::Text(s, e)) => {
            if x.is_none_or(|(p, _)| pos < p) {
                *x = Some((pos, text(s, e, arena)));
            }
        }
        (Acc::Last(x), Input::Text(s, e)) => {
            if x.is_none_or(|(p, _)| pos > p) {
                *x = Some((pos, text(s, e, arena)));
            }
        }
        _ => unreachable!("the scanner parses inputs by op"),
    }
    Ok(())
}

/// Appends the output text of an accumulator (empty when it saw no value).
pub fn write_value(acc: &Acc, arena: &[u8], out: &mut Vec<u8>) {
    match acc {
        Acc::Count(c) => write_u64(*c, out),
        Acc::Sum(Some(d)) => write_decimal(d, out),
        Acc::Mean { sum, n } if *n > 0 => sum.write_mean(*n, out),
        Acc::Min(Some(Val::Num(d))) | Acc::Max(Some(Val::Num(d))) => write_decimal(d, out),
        Acc::Min(Some(Val::Text(t))) | Acc::Max(Some(Val::Text(t))) => out.extend_from_slice(t.get(arena)),
        Acc::First(Some((_, t))) | Acc::Last(Some((_, t))) => out.extend_from_slice(t.get(arena)),
        _ => {}
    }
}

/// The groups of one chunk: encoded keys, accumulators and a text arena.
pub struct GroupTable {
    table: HashTable<u32>,
    hasher: hashbrown::DefaultHashBuilder,
    /// End offset of each group's key in `keys`; group i's key is `keys[ends[i-1]..ends[i]]`.
    key_ends: Vec<usize>,
    keys: Vec<u8>,
    accs: Vec<Acc>,
    texts: Vec<u8>,
    template: Vec<Acc>,
    scratch: Vec<Acc>,
}

impl GroupTable {
    pub fn new(ops: &[AggOp]) -> Self {
        GroupTable {
            table: HashTable::new(),
            hasher: hashbrown::DefaultHashBuilder::default(),
            key_ends: Vec::new(),
            keys: Vec::new(),
            accs: Vec::new(),
            texts: Vec::new(),
            template: ops.iter().map(|o| Acc::empty(*o)).collect(),
            scratch: Vec::with_capacity(ops.len()),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.key_ends.len()
    }

    fn key(&self, id: usize) -> &[u8] {
        let start = if id == 0 { 0 } else { self.key_ends[id - 1] };
        &self.keys[start..self.key_ends[id]]
    }

    /// Adds one row to its group. On overflow nothing of the row is applied.
    pub fn add_row(&mut self, key: &[u8], inputs: &[Input], row: &[u8], pos: u64) -> Result<(), Overflow> {
        let hash = self.hasher.hash_one(key);
        let n = self.template.len();
        let found = {
            let (keys, ends) = (&self.keys, &self.key_ends);
            self.table
                .find(hash, |&id| {
                    let id = id as usize;
                    let start = if id == 0 { 0 } else { ends[id - 1] };
                    &keys[start..ends[id]] == key
                })
                .copied()
        };
        let id = match found {
            Some(id) => id as usize,
            None => {
                let id = self.key_ends.len();
                self.keys.extend_from_slice(key);
                self.key_ends.push(self.keys.len());
                self.accs.extend_from_slice(&self.template);
                let (keys, ends, hasher) = (&self.keys, &self.key_ends, &self.hasher);
                self.table.insert_unique(hash, id as u32, |&g| {
                    let g = g as usize;
                    let start = if g == 0 { 0 } else { ends[g - 1] };
                    hasher.hash_one(&keys[start..ends[g]])
                });
                id
            }
        };
        let accs = &mut self.accs[id * n..(id + 1) * n];
        if n == 1 {
            // The common case needs no staging: a failed update leaves the acc untouched.
            return update(&mut accs[0], inputs[0], row, pos, &mut self.texts).map_err(|_| Overflow { agg: 0 });
        }
        self.scratch.clear();
        self.scratch.extend_from_slice(accs);
        let arena_len = self.texts.len();
        for (i, input) in inputs.iter().enumerate() {
            if update(&mut self.scratch[i], *input, row, pos, &mut self.texts).is_err() {
                self.texts.truncate(arena_len);
                return Err(Overflow { agg: i });
            }
        }
        accs.copy_from_slice(&self.scratch);
        Ok(())
    }

    /// Group ids in key order.
    pub fn sorted_ids(&self) -> Vec<u32> {
        // Sort on a 16-byte big-endian key prefix, falling back to the whole key on ties.
        let mut order: Vec<(u128, u32)> = (0..self.len())
            .map(|id| {
                let k = self.key(id);
                let mut p = [0u8; 16];
                let n = k.len().min(16);
                p[..n].copy_from_slice(&k[..n]);
                (u128::from_be_bytes(p), id as u32)
            })
            .collect();
        order.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0).then_with(|| self.key(a.1 as usize).cmp(self.key(b.1 as usize)))
        });
        order.into_iter().map(|(_, id)| id).collect()
    }

    /// Visits groups in key order: (key, accumulators, text arena).
    pub fn for_each_sorted(&self, mut f: impl FnMut(&[u8], &[Acc], &[u8])) {
        let n = self.template.len();
        for id in self.sorted_ids() {
            let id = id as usize;
            f(self.key(id), &self.accs[id * n..(id + 1) * n], &self.texts);
        }
    }
}
