//! Exact decimal numbers: an `i128` mantissa and a decimal scale.
//!
//! `0.1 + 0.2` is `0.3` here, and integer sums stay exact up to ±1.7e38.
//! Arithmetic is checked: an overflow is an error, never a wrapped value.

use std::cmp::Ordering;

/// Largest number of digits after the decimal point we keep.
pub const MAX_SCALE: u8 = 30;

/// An exact decimal number `mantissa / 10^scale`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Decimal {
    /// The digits, as an integer.
    pub mantissa: i128,
    /// Digits after the decimal point.
    pub scale: u8,
}

const POW10: [i128; 39] = {
    let mut t = [1i128; 39];
    let mut i = 1;
    while i < 39 {
        t[i] = t[i - 1] * 10;
        i += 1;
    }
    t
};

/// `10^n` for `n <= 38`.
pub fn pow10(n: u8) -> i128 {
    POW10[n as usize]
}

/// Why a text is not a number we accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberError {
    /// Not of the form `[+-]digits[.digits][e[+-]digits]`.
    NotANumber,
    /// More than 38 significant digits, or an exponent out of range.
    TooLarge,
    /// More than 30 decimal places.
    TooPrecise,
}

impl Decimal {
    /// Zero, with no decimals.
    pub const ZERO: Decimal = Decimal { mantissa: 0, scale: 0 };

    /// An integer, with no decimals.
    pub fn from_int(v: i128) -> Self {
        Decimal { mantissa: v, scale: 0 }
    }

    /// Parses `[+-]digits[.digits][e[+-]digits]` (surrounding ASCII spaces allowed).
    pub fn parse(text: &[u8]) -> Result<Decimal, NumberError> {
        let t = trim_spaces(text);
        Self::parse_short(t).map_or_else(|| Self::parse_slow(t), Ok)
    }

    /// The common case without the general parser: an optional sign, then at
    /// most 18 digits with at most one point among them (`12`, `-3.50`,
    /// `.5`, `7.`), no exponent. The same value and scale as
    /// [`Self::parse_slow`] gives; `None` for anything else.
    #[inline]
    fn parse_short(t: &[u8]) -> Option<Decimal> {
        let (neg, body) = match t.first() {
            Some(b'-') => (true, &t[1..]),
            Some(b'+') => (false, &t[1..]),
            _ => (false, t),
        };
        if body.is_empty() || body.len() > 18 {
            return None;
        }
        let mut v: i64 = 0;
        let mut point = None;
        for (i, &b) in body.iter().enumerate() {
            if b.is_ascii_digit() {
                v = v * 10 + (b - b'0') as i64;
            } else if b == b'.' && point.is_none() {
                point = Some(i);
            } else {
                return None;
            }
        }
        let scale = match point {
            None => 0,
            Some(_) if body.len() == 1 => return None, // "." alone
            Some(p) => body.len() - 1 - p,
        };
        let m = v as i128;
        Some(Decimal { mantissa: if neg { -m } else { m }, scale: scale as u8 })
    }

    fn parse_slow(t: &[u8]) -> Result<Decimal, NumberError> {
        let mut i = 0;
        let neg = match t.first() {
            Some(b'-') => {
                i = 1;
                true
            }
            Some(b'+') => {
                i = 1;
                false
            }
            _ => false,
        };
        let mut mantissa: i128 = 0;
        let mut digits = 0usize;
        // i64: a scale of up to 38 digits less an exponent of up to i32::MAX
        // never wraps (a wrapped scale turned 0.5e-99999999999 into 5).
        let mut scale: i64 = 0;
        let mut seen_point = false;
        let mut significant = 0usize;
        let mut too_many = false;
        while i < t.len() {
            let b = t[i];
            if b.is_ascii_digit() {
                digits += 1;
                if mantissa != 0 || b != b'0' {
                    significant += 1;
                }
                if significant > 38 {
                    // Too many digits; still read the rest, so that a malformed
                    // text is "not a number" rather than "too large".
                    too_many = true;
                } else {
                    mantissa = mantissa * 10 + (b - b'0') as i128;
                }
                if seen_point {
                    scale += 1;
                }
            } else if b == b'.' && !seen_point {
                seen_point = true;
            } else {
                break;
            }
            i += 1;
        }
        if digits == 0 {
            return Err(NumberError::NotANumber);
        }
        if i < t.len() {
            if t[i] != b'e' && t[i] != b'E' {
                return Err(NumberError::NotANumber);
            }
            i += 1;
            let mut eneg = false;
            if i < t.len() && (t[i] == b'-' || t[i] == b'+') {
                eneg = t[i] == b'-';
                i += 1;
            }
            if i == t.len() {
                return Err(NumberError::NotANumber);
            }
            let mut e: i32 = 0;
            while i < t.len() {
                let b = t[i];
                if !b.is_ascii_digit() {
                    return Err(NumberError::NotANumber);
                }
                e = e.saturating_mul(10).saturating_add((b - b'0') as i32);
                i += 1;
            }
            scale -= if eneg { -(e as i64) } else { e as i64 };
        }
        if too_many {
            return Err(NumberError::TooLarge);
        }
        if scale < 0 {
            if mantissa != 0 {
                let up = -scale;
                if up > 38 {
                    return Err(NumberError::TooLarge);
                }
                mantissa = mantissa.checked_mul(pow10(up as u8)).ok_or(NumberError::TooLarge)?;
            }
            scale = 0;
        }
        if scale > MAX_SCALE as i64 {
            return Err(NumberError::TooPrecise);
        }
        Ok(Decimal { mantissa: if neg { -mantissa } else { mantissa }, scale: scale as u8 })
    }

    /// This number expressed with `scale` digits after the point (`scale >= self.scale`).
    pub fn rescaled(self, scale: u8) -> Option<Decimal> {
        debug_assert!(scale >= self.scale);
        let m = self.mantissa.checked_mul(pow10(scale - self.scale))?;
        Some(Decimal { mantissa: m, scale })
    }

    /// Exact sum, or `None` on i128 overflow.
    pub fn checked_add(self, other: Decimal) -> Option<Decimal> {
        if self.scale == other.scale {
            return Some(Decimal { mantissa: self.mantissa.checked_add(other.mantissa)?, scale: self.scale });
        }
        let s = self.scale.max(other.scale);
        let a = self.rescaled(s)?;
        let b = other.rescaled(s)?;
        Some(Decimal { mantissa: a.mantissa.checked_add(b.mantissa)?, scale: s })
    }

    /// Numeric comparison that never overflows.
    pub fn cmp_value(&self, other: &Decimal) -> Ordering {
        if self.scale == other.scale {
            return self.mantissa.cmp(&other.mantissa);
        }
        let (ai, af) = split(self);
        let (bi, bf) = split(other);
        ai.cmp(&bi).then_with(|| {
            let s = self.scale.max(other.scale);
            let af = af * pow10(s - self.scale);
            let bf = bf * pow10(s - other.scale);
            af.cmp(&bf)
        })
    }

    /// A total order: by value, then by scale (so `1` < `1.0`), which makes
    /// min/max deterministic whatever order the values arrive in.
    pub fn cmp_total(&self, other: &Decimal) -> Ordering {
        self.cmp_value(other).then(self.scale.cmp(&other.scale))
    }

    /// Appends the canonical text (`-12.50` keeps its scale).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        write_scaled(self.mantissa, self.scale, out);
    }

    /// Appends `self / n`, rounded half away from zero to `max(10, scale)`
    /// fractional digits, trailing zeros removed.
    pub fn write_mean(&self, n: u64, out: &mut Vec<u8>) {
        debug_assert!(n > 0);
        let frac_digits = self.scale.max(10);
        let extra = (frac_digits - self.scale) as usize; // digits of m/n after its point
        let neg = self.mantissa < 0;
        let m = self.mantissa.unsigned_abs();
        let n = n as u128;
        let q = m / n;
        let mut r = m % n;
        let mut frac: Vec<u8> = Vec::with_capacity(extra + 1);
        for _ in 0..=extra {
            r *= 10;
            frac.push((r / n) as u8);
            r %= n;
        }
        let round_digit = frac.pop().unwrap_or(0);
        // digits = q followed by `extra` fractional digits, as a big decimal string
        let mut digits: Vec<u8> = q.to_string().into_bytes().iter().map(|d| d - b'0').collect();
        digits.extend_from_slice(&frac);
        if round_digit >= 5 {
            let mut i = digits.len();
            loop {
                if i == 0 {
                    digits.insert(0, 1);
                    break;
                }
                i -= 1;
                if digits[i] == 9 {
                    digits[i] = 0;
                } else {
                    digits[i] += 1;
                    break;
                }
            }
        }
        // Now the value is digits with `frac_digits` digits after the point.
        let fd = frac_digits as usize;
        while digits.len() <= fd {
            digits.insert(0, 0);
        }
        let int_len = digits.len() - fd;
        let mut end = digits.len();
        while end > int_len && digits[end - 1] == 0 {
            end -= 1;
        }
        let is_zero = digits[..end].iter().all(|&d| d == 0);
        if neg && !is_zero {
            out.push(b'-');
        }
        out.extend(digits[..int_len].iter().map(|d| d + b'0'));
        if end > int_len {
            out.push(b'.');
            out.extend(digits[int_len..end].iter().map(|d| d + b'0'));
        }
    }
}

fn split(d: &Decimal) -> (i128, i128) {
    let p = pow10(d.scale);
    (d.mantissa / p, d.mantissa % p)
}

fn trim_spaces(mut t: &[u8]) -> &[u8] {
    while let [b' ', rest @ ..] = t {
        t = rest;
    }
    while let [rest @ .., b' '] = t {
        t = rest;
    }
    t
}

fn write_scaled(m: i128, scale: u8, out: &mut Vec<u8>) {
    let mut buf = itoa::Buffer::new();
    // Formatting a u128 divides as u128 (slow): most values fit a u64.
    let digits = match u64::try_from(m.unsigned_abs()) {
        Ok(v) => buf.format(v),
        Err(_) => buf.format(m.unsigned_abs()),
    }
    .as_bytes();
    if m < 0 {
        out.push(b'-');
    }
    if scale == 0 {
        out.extend_from_slice(digits);
        return;
    }
    let s = scale as usize;
    if digits.len() <= s {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', s - digits.len()));
        out.extend_from_slice(digits);
    } else {
        let int_len = digits.len() - s;
        out.extend_from_slice(&digits[..int_len]);
        out.push(b'.');
        out.extend_from_slice(&digits[int_len..]);
    }
}

/// Appends an unsigned integer in decimal without allocating.
pub fn write_u64(v: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// Appends a decimal (without allocating).
pub fn write_decimal(d: &Decimal, out: &mut Vec<u8>) {
    d.write_to(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Decimal {
        Decimal::parse(s.as_bytes()).unwrap()
    }
    fn show(d: Decimal) -> String {
        let mut v = Vec::new();
        write_decimal(&d, &mut v);
        String::from_utf8(v).unwrap()
    }
    fn mean(s: &str, n: u64) -> String {
        let mut v = Vec::new();
        p(s).write_mean(n, &mut v);
        String::from_utf8(v).unwrap()
    }

    /// A reference reading of `[ ]*[+-]?(D+(.D*)?|.D+)([eE][+-]?D+)?[ ]*`,
    /// written independently of the parser: `None` when the grammar does not
    /// match; `Some(None)` when the value is outside the accepted range
    /// (over 38 significant digits, over 30 decimals, beyond i128).
    fn reference(text: &str) -> Option<Option<(i128, u8)>> {
        let t = text.trim_matches(' ');
        let (neg, t) = match t.as_bytes().first() {
            Some(b'-') => (true, &t[1..]),
            Some(b'+') => (false, &t[1..]),
            _ => (false, t),
        };
        let (num, exp) = match t.find(['e', 'E']) {
            Some(i) => (&t[..i], Some(&t[i + 1..])),
            None => (t, None),
        };
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(int) || !all_digits(frac) || int.len() + frac.len() == 0 {
            return None;
        }
        let exp: i128 = match exp {
            None => 0,
            Some(e) => {
                let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
                if digits.is_empty() || !all_digits(digits) {
                    return None;
                }
                let v: i128 = digits.parse().ok()?;
                if e.starts_with('-') {
                    -v
                } else {
                    v
                }
            }
        };
        let ds = format!("{int}{frac}");
        let sig = ds.trim_start_matches('0');
        if sig.len() > 38 {
            return Some(None);
        }
        let m: u128 = if sig.is_empty() { 0 } else { sig.parse().unwrap() };
        let scale = frac.len() as i128 - exp;
        let (m, scale) = if scale < 0 {
            if m == 0 {
                (0, 0)
            } else if -scale > 38 {
                return Some(None);
            } else {
                match m.checked_mul(10u128.pow((-scale) as u32)) {
                    Some(v) => (v, 0),
                    None => return Some(None),
                }
            }
        } else {
            (m, scale)
        };
        if scale > MAX_SCALE as i128 || m > i128::MAX as u128 {
            return Some(None);
        }
        let m = m as i128;
        Some(Some((if neg { -m } else { m }, scale as u8)))
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        #[test]
        fn random_number_text_parses_exactly_as_the_reference_or_is_rejected(
            text in "[ ]{0,1}[+-]{0,1}[0-9]{0,45}[.]{0,1}[0-9]{0,45}([eE][+-]{0,1}[0-9]{0,25}){0,1}[ ]{0,1}|[0-9.eE+-]{0,12}"
        ) {
            let got = Decimal::parse(text.as_bytes());
            match reference(&text) {
                None => proptest::prop_assert_eq!(got, Err(NumberError::NotANumber), "{:?}", text),
                Some(None) => proptest::prop_assert!(
                    matches!(got, Err(NumberError::TooLarge | NumberError::TooPrecise)),
                    "{:?}: {:?}", text, got
                ),
                Some(Some((mantissa, scale))) => {
                    proptest::prop_assert_eq!(got, Ok(Decimal { mantissa, scale }), "{:?}", text)
                }
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]
        /// The short path gives what the general parser gives, scale included.
        #[test]
        fn short_numbers_parse_as_the_general_parser_does(
            text in "[+-]{0,1}[0-9]{0,10}[.]{0,1}[0-9]{0,10}|[0-9.+-]{0,6}"
        ) {
            if let Some(d) = Decimal::parse_short(text.as_bytes()) {
                proptest::prop_assert_eq!(Ok(d), Decimal::parse_slow(text.as_bytes()), "{:?}", text);
            }
            proptest::prop_assert_eq!(
                Decimal::parse(text.as_bytes()),
                Decimal::parse_slow(text.as_bytes()),
                "{:?}", text
            );
        }
    }

    proptest::proptest! {
        /// A written decimal is its value: it parses back to the same
        /// mantissa and scale, for mantissas past u64 too (up to the 38
        /// digits the parser takes).
        #[test]
        fn written_decimals_read_back_as_themselves(
            m in proptest::prop_oneof![-(10i128.pow(38) - 1)..10i128.pow(38), -1_000_000i128..1_000_000, -(1i128 << 80)..(1 << 80)],
            scale in 0u8..=MAX_SCALE,
        ) {
            let d = Decimal { mantissa: m, scale };
            let text = show(d);
            let back = Decimal::parse(text.as_bytes());
            proptest::prop_assert!(back.is_ok(), "{}: {:?}", text, back);
            let back = back.unwrap();
            // Nothing is lost or rescaled: the same mantissa and the same scale.
            proptest::prop_assert_eq!(back, d, "{}", text);
        }
    }

    #[test]
    fn huge_exponents_never_wrap_into_a_wrong_value() {
        // Regression: the scale wrapped, and 0.5e-99999999999 summed to 5.
        for t in ["0.5e-99999999999", "1.5e-2147483647", "0.25e-4294967296", "1e-39"] {
            assert_eq!(Decimal::parse(t.as_bytes()), Err(NumberError::TooPrecise), "{t}");
        }
        for t in ["1e99999999999", "1.5e2147483647", "1e39"] {
            assert_eq!(Decimal::parse(t.as_bytes()), Err(NumberError::TooLarge), "{t}");
        }
        assert_eq!(show(p("0e99999999999")), "0");
        assert_eq!(show(p("0.0e-3")), "0.0000");
        assert_eq!(show(p("5e-30")), "0.000000000000000000000000000005");
        assert_eq!(show(p("1e38")), "100000000000000000000000000000000000000");
    }

    #[test]
    fn parses_and_formats() {
        assert_eq!(show(p("0.1").checked_add(p("0.2")).unwrap()), "0.3");
        assert_eq!(show(p("-12.50")), "-12.50");
        assert_eq!(show(p("+7")), "7");
        assert_eq!(show(p(".5")), "0.5");
        assert_eq!(show(p("1.5e3")), "1500");
        assert_eq!(show(p("25e-3")), "0.025");
        assert_eq!(show(p(" 42 ")), "42");
        assert_eq!(show(p("-0.05")), "-0.05");
        for bad in ["", "patata", "1.2.3", "1e", "--1", "1,5", "e5", "."] {
            assert!(Decimal::parse(bad.as_bytes()).is_err(), "{bad}");
        }
        assert_eq!(Decimal::parse(b"1234567890123456789012345678901234567890"), Err(NumberError::TooLarge));
    }

    #[test]
    fn sums_past_64_bits_and_detects_overflow() {
        let big = Decimal::from_int(i64::MAX as i128);
        let s = big.checked_add(big).unwrap();
        assert_eq!(show(s), "18446744073709551614");
        assert!(Decimal::from_int(i128::MAX).checked_add(p("1")).is_none());
    }

    #[test]
    fn compares_across_scales_without_overflow() {
        let a = Decimal { mantissa: i128::MAX / 10, scale: 0 };
        let b = p("0.000000000000000000000000000001");
        assert_eq!(a.cmp_value(&b), Ordering::Greater);
        assert_eq!(p("1").cmp_value(&p("1.00")), Ordering::Equal);
        assert_eq!(p("1").cmp_total(&p("1.00")), Ordering::Less);
        assert_eq!(p("-1.5").cmp_value(&p("-1.25")), Ordering::Less);
    }

    #[test]
    fn means_round_half_away_from_zero() {
        assert_eq!(mean("3", 2), "1.5");
        assert_eq!(mean("4", 2), "2");
        assert_eq!(mean("4", 3), "1.3333333333");
        assert_eq!(mean("5", 3), "1.6666666667");
        assert_eq!(mean("-5", 3), "-1.6666666667");
        assert_eq!(mean("0.3", 3), "0.1");
        assert_eq!(mean("1", 3000000000000), "0");
        assert_eq!(mean("0.000000000005", 1), "0.000000000005");
    }
}
