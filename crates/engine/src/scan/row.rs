//! Row evaluation: a tokenized record through the spec's filters, group
//! key and aggregate inputs into the chunk's group table.

use super::{Issue, Problem};
use crate::acc::Input;
use crate::agg::GroupTable;
use crate::key::push_field;
use crate::number::{Decimal, NumberError};
use crate::spec::{AggOp, Compiled, FilterOp, Transform, MISSING};

/// Per-row work: filters, key, inputs, group update.
pub(super) struct RowWork<'c> {
    pub(super) spec: &'c Compiled,
    pub(super) table: GroupTable,
    pub(super) key: Vec<u8>,
    pub(super) lower: Vec<u8>,
    pub(super) inputs: Vec<Input>,
}

impl RowWork<'_> {
    /// `fields[i]` is a byte range of `row`. Field `i` starts at global
    /// offset `fpos[i]`, or at `rec + fields[i].0` when `fpos` is empty
    /// (the row is the raw record).
    pub(super) fn process(
        &mut self,
        row: &[u8],
        fields: &[(usize, usize)],
        fpos: &[u64],
        rec: u64,
        plain: bool,
    ) -> Result<bool, Issue> {
        let spec = self.spec;
        let fpos = |c: usize| fpos.get(c).copied().unwrap_or(rec + fields[c].0 as u64);
        if fields.len() != spec.width {
            return Err(Issue { problem: Problem::Ragged { found: fields.len() }, col: None, byte: rec });
        }
        // A column the file lacks (`union`) is empty in every row.
        let field = |c: usize| if c == MISSING { &row[..0] } else { &row[fields[c].0..fields[c].1] };
        for f in &spec.filters {
            if !filter_keeps(f.op, &f.values, field(f.col)) {
                return Ok(false);
            }
        }
        self.key.clear();
        for &(c, t) in &spec.keys {
            let v = field(c);
            if plain && t.is_none() {
                self.key.extend_from_slice(v);
                self.key.push(0);
                continue;
            }
            if !v.is_ascii() && std::str::from_utf8(v).is_err() {
                return Err(Issue { problem: Problem::Utf8, col: Some(c), byte: fpos(c) });
            }
            match t {
                None => push_field(&mut self.key, v),
                Some(Transform::Lower) => {
                    self.lower.clear();
                    if v.is_ascii() {
                        self.lower.extend(v.iter().map(u8::to_ascii_lowercase));
                    } else {
                        let s = std::str::from_utf8(v).unwrap_or_default().to_lowercase();
                        self.lower.extend_from_slice(s.as_bytes());
                    }
                    push_field(&mut self.key, &self.lower);
                }
            }
        }
        self.inputs.clear();
        // Aggregates of one column (mean, min and max of a price) parse it once.
        let mut parsed: (usize, Result<Decimal, NumberError>) = (usize::MAX, Err(NumberError::NotANumber));
        let mut number = |c: usize, v: &[u8]| {
            if parsed.0 != c {
                parsed = (c, Decimal::parse(v));
            }
            parsed.1
        };
        for a in &spec.aggs {
            let input = match a.col {
                None => Input::Present,
                Some(MISSING) => match a.op {
                    AggOp::First | AggOp::Last => Input::Text(0, 0),
                    _ => Input::Null,
                },
                Some(c) => {
                    let (s, e) = fields[c];
                    let v = &row[s..e];
                    let issue = |p| Issue { problem: p, col: Some(c), byte: fpos(c) };
                    match a.op {
                        AggOp::Count if v.is_empty() => Input::Null,
                        AggOp::Count => Input::Present,
                        _ if v.is_empty() && a.op != AggOp::First && a.op != AggOp::Last => Input::Null,
                        AggOp::Sum | AggOp::Mean => Input::Num(number(c, v).map_err(|e| issue(Problem::Number(e)))?),
                        AggOp::Min | AggOp::Max => match number(c, v) {
                            Ok(d) => Input::Num(d),
                            Err(_) if std::str::from_utf8(v).is_ok() => Input::Text(s, e),
                            Err(_) => return Err(issue(Problem::Utf8)),
                        },
                        AggOp::First | AggOp::Last => {
                            if !plain && !v.is_ascii() && std::str::from_utf8(v).is_err() {
                                return Err(issue(Problem::Utf8));
                            }
                            Input::Text(s, e)
                        }
                    }
                }
            };
            self.inputs.push(input);
        }
        self.table.add_row(&self.key, &self.inputs, row, rec);
        Ok(true)
    }
}

fn filter_keeps(op: FilterOp, values: &[(Vec<u8>, Option<Decimal>)], v: &[u8]) -> bool {
    let cmp = |(text, num): &(Vec<u8>, Option<Decimal>)| match num.and_then(|n| Decimal::parse(v).ok().map(|x| (x, n)))
    {
        Some((x, n)) => x.cmp_value(&n),
        None => v.cmp(text.as_slice()),
    };
    use std::cmp::Ordering::*;
    match op {
        FilterOp::Empty => v.is_empty(),
        FilterOp::NotEmpty => !v.is_empty(),
        FilterOp::Eq => cmp(&values[0]) == Equal,
        FilterOp::Ne => cmp(&values[0]) != Equal,
        FilterOp::Lt => cmp(&values[0]) == Less,
        FilterOp::Le => cmp(&values[0]) != Greater,
        FilterOp::Gt => cmp(&values[0]) == Greater,
        FilterOp::Ge => cmp(&values[0]) != Less,
        FilterOp::In => values.iter().any(|x| cmp(x) == Equal),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(v: &[&str]) -> Vec<(Vec<u8>, Option<Decimal>)> {
        v.iter().map(|s| (s.as_bytes().to_vec(), Decimal::parse(s.as_bytes()).ok())).collect()
    }

    #[test]
    fn filters_compare_numbers_as_numbers_and_text_as_bytes() {
        use FilterOp::*;
        let cases: [(FilterOp, &[&str], &str, bool); 16] = [
            (Eq, &["10"], "10.0", true),
            (Eq, &["abc"], "abc", true),
            (Ne, &["abc"], "abd", true),
            (Lt, &["9"], "10", false), // 10 < 9 numerically: no (as text it would be yes)
            (Lt, &["b"], "a", true),
            (Le, &["2020-01-01"], "2020-01-01", true),
            (Gt, &["-1"], "-0.5", true),
            (Gt, &["10"], "9", false),
            (Ge, &["2020-01-01"], "2019-12-31", false),
            (Ge, &["5"], "x", true), // "x" is not a number: byte order, "x" > "5"
            (In, &["a", "b"], "b", true),
            (In, &["1", "2"], "2.00", true),
            (In, &["a", "b"], "c", false),
            (Empty, &[], "", true),
            (Empty, &[], " ", false),
            (NotEmpty, &[], "x", true),
        ];
        for (op, v, field, want) in cases {
            assert_eq!(filter_keeps(op, &vals(v), field.as_bytes()), want, "{op:?} {v:?} {field:?}");
        }
    }
}
