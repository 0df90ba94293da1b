//! Aggregation state: the accumulator algebra.
//!
//! Every aggregate keeps a small fixed-size [`Acc`]; text values (min/max of
//! text, first/last) live in a byte arena beside the table and are referred
//! to by [`TextRef`]. Combining two accumulators is associative and
//! commutative, so partials can be merged in any order: `first`/`last` carry
//! the global byte offset of their row, min/max use a total order.

use std::cmp::Ordering;

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
    /// Rows counted (with a column: its non-empty values).
    Count(u64),
    /// The sum so far; `None` before the first value.
    Sum(Option<Decimal>),
    /// A mean, as its sum and count.
    Mean {
        /// The sum of the values.
        sum: Decimal,
        /// How many values.
        n: u64,
    },
    /// The smallest value so far.
    Min(Option<Val>),
    /// The largest value so far.
    Max(Option<Val>),
    /// (global byte offset of the row, value)
    First(Option<(u64, TextRef)>),
    /// The last value in file order, with its row's global byte offset.
    Last(Option<(u64, TextRef)>),
}

impl Acc {
    /// The state of `op` before any row.
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

/// A sum (or a mean's sum) left the 128-bit range; the accumulator is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SumOverflow;

/// Folds `b` (texts in `bt`) into `a` (texts in `arena`). Errors on overflow.
pub fn combine(a: &mut Acc, arena: &mut Vec<u8>, b: &Acc, bt: &[u8]) -> Result<(), SumOverflow> {
    match (a, b) {
        (Acc::Count(x), Acc::Count(y)) => *x += y,
        (Acc::Sum(x), Acc::Sum(y)) => {
            if let Some(y) = y {
                *x = Some(match x {
                    Some(x) => x.checked_add(*y).ok_or(SumOverflow)?,
                    None => *y,
                });
            }
        }
        (Acc::Mean { sum, n }, Acc::Mean { sum: s2, n: n2 }) => {
            *sum = sum.checked_add(*s2).ok_or(SumOverflow)?;
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
pub(crate) fn update(
    acc: &mut Acc,
    input: Input,
    row: &[u8],
    pos: u64,
    arena: &mut Vec<u8>,
) -> Result<(), SumOverflow> {
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
                Some(x) => x.checked_add(v).ok_or(SumOverflow)?,
                None => v,
            })
        }
        (Acc::Mean { sum, n }, Input::Num(v)) => {
            *sum = sum.checked_add(v).ok_or(SumOverflow)?;
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
