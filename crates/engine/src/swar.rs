//! Byte tests eight at a time in a `u64` (SIMD within a register), for the
//! tokenizer's masks and the result rows' field terminators.

/// `0x01` in every byte.
pub const ONES: u64 = 0x0101_0101_0101_0101;
const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;

/// `b` in every byte.
#[inline]
pub fn splat(b: u8) -> u64 {
    ONES * b as u64
}

/// `0x80` in exactly the zero bytes of `w` (no false positives: no borrow
/// crosses bytes), `0` elsewhere.
#[inline]
pub fn zero_bytes(w: u64) -> u64 {
    !(((w & LOW7) + LOW7) | w | LOW7)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn zero_bytes_are_exactly_the_zero_bytes(bytes in any::<[u8; 8]>(), zeros in any::<u8>()) {
            let mut b = bytes;
            for (i, x) in b.iter_mut().enumerate() {
                if zeros & (1 << i) != 0 {
                    *x = 0;
                }
            }
            let want = b.iter().enumerate().fold(0u64, |m, (i, &x)| m | (u64::from(x == 0) << (8 * i + 7)));
            prop_assert_eq!(zero_bytes(u64::from_le_bytes(b)), want);
        }
    }
}
