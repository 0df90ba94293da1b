//! What an aggregate column's values turned out to be, across every row
//! written: the SQL type a table over the result needs (an integer sum that
//! fits 64 bits is `bigint`; one with fractions is `decimal(38, s)` with its
//! largest scale; text is `string`).

use serde::{Deserialize, Serialize};

use crate::acc::{Acc, Val};
use crate::number::Decimal;
use crate::spec::AggOp;

/// The values one aggregate column held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueKind {
    /// Some value was text (min, max of a text column).
    #[serde(default)]
    pub text: bool,
    /// The most digits after the decimal point of any number.
    #[serde(default)]
    pub scale: u8,
    /// Some number does not fit a 64-bit integer.
    #[serde(default)]
    pub wide: bool,
}

impl ValueKind {
    /// Notes the value of `acc`.
    pub fn note(&mut self, acc: &Acc) {
        match acc {
            Acc::Sum(Some(d)) | Acc::Min(Some(Val::Num(d))) | Acc::Max(Some(Val::Num(d))) => self.note_number(d),
            Acc::Min(Some(Val::Text(_))) | Acc::Max(Some(Val::Text(_))) => self.text = true,
            _ => {}
        }
    }

    fn note_number(&mut self, d: &Decimal) {
        self.scale = self.scale.max(d.scale);
        // (The division only for a mantissa past 64 bits: this runs per row.)
        if !self.wide && d.mantissa.unsigned_abs() > i64::MAX as u128 {
            let whole = d.mantissa / crate::number::pow10(d.scale);
            self.wide = whole > i64::MAX as i128 || whole < i64::MIN as i128;
        }
    }

    /// Both columns' values together (two key ranges of one result).
    pub fn merge(self, other: ValueKind) -> ValueKind {
        ValueKind { text: self.text || other.text, scale: self.scale.max(other.scale), wide: self.wide || other.wide }
    }

    /// The Athena (Hive) type of an aggregate of `op` with these values.
    pub fn sql_type(self, op: AggOp) -> String {
        let number = || match (self.scale, self.wide) {
            (0, false) => "bigint".to_string(),
            (s, _) => format!("decimal(38,{s})"),
        };
        match op {
            AggOp::Count => "bigint".into(),
            AggOp::Sum => number(),
            AggOp::Mean => "double".into(),
            AggOp::Min | AggOp::Max if self.text => "string".into(),
            AggOp::Min | AggOp::Max => number(),
            AggOp::First | AggOp::Last => "string".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(mantissa: i128, scale: u8) -> Decimal {
        Decimal { mantissa, scale }
    }

    #[test]
    fn types_follow_the_values() {
        let mut k = ValueKind::default();
        k.note(&Acc::Sum(Some(d(5, 0))));
        assert_eq!(k.sql_type(AggOp::Sum), "bigint");
        k.note(&Acc::Sum(Some(d(i64::MAX as i128 + 1, 0))));
        assert_eq!(k.sql_type(AggOp::Sum), "decimal(38,0)", "past 64 bits");
        let mut f = ValueKind::default();
        f.note(&Acc::Sum(Some(d(1050, 2))));
        f.note(&Acc::Sum(Some(d(3, 1))));
        assert_eq!(f.sql_type(AggOp::Sum), "decimal(38,2)", "the largest scale");
        assert_eq!(f.merge(k).sql_type(AggOp::Sum), "decimal(38,2)");
        assert_eq!(ValueKind::default().sql_type(AggOp::Count), "bigint");
        assert_eq!(ValueKind::default().sql_type(AggOp::Mean), "double");
        assert_eq!(ValueKind::default().sql_type(AggOp::First), "string");
        let text = ValueKind { text: true, ..ValueKind::default() };
        assert_eq!(text.sql_type(AggOp::Max), "string");
        assert_eq!(ValueKind::default().sql_type(AggOp::Min), "bigint", "no values: an empty column");
    }
}
