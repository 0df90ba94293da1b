//! The largest groups of a result, for a dashboard's bar chart.

use serde::{Deserialize, Serialize};

use crate::acc::{write_value, Acc};
use crate::key::for_each_field;

/// One of the largest groups by the first aggregate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopGroup {
    /// The group's key fields.
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
    /// Keeps the `n` largest.
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

/// Not inlined: inlined, LLVM sees that both arms of `rank_of`'s
/// conversion give the same value and keeps only the i128 one (a library
/// call per merged group, 1.5% of a run of unique keys).
#[inline(never)]
fn i64_to_f64(m: i64) -> f64 {
    m as f64
}

fn rank_of(acc: &Acc) -> Option<f64> {
    use crate::acc::Val;
    // Per merged group: i64 and scale 0 skip the i128 conversion (a
    // library call) and the division, and give the same f64.
    let dec = |d: &crate::number::Decimal| {
        let m = match i64::try_from(d.mantissa) {
            Ok(m) => i64_to_f64(m),
            Err(_) => d.mantissa as f64,
        };
        if d.scale == 0 {
            m
        } else {
            m / 10f64.powi(d.scale as i32)
        }
    };
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
    use crate::number::Decimal;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn the_fast_rank_is_the_general_one(m in any::<i128>(), small in any::<i64>(), scale in 0u8..40) {
            for mantissa in [m, small as i128] {
                let d = Decimal { mantissa, scale };
                let want = mantissa as f64 / 10f64.powi(scale as i32);
                prop_assert_eq!(rank_of(&Acc::Sum(Some(d))).map(f64::to_bits), Some(want.to_bits()));
            }
        }
    }

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
