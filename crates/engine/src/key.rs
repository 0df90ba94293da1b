//! Order-preserving encoding of a group key (a tuple of fields) into one
//! byte string, so that `memcmp` order equals tuple order field by field.
//!
//! Each field is written as its bytes with `0x00 → 01 01` and `0x01 → 01 02`,
//! followed by a `0x00` terminator. Real CSV text almost never holds bytes
//! 0 or 1, so a key costs one byte per field more than its text.

use memchr::memchr2;

/// Appends one field to an encoded key.
#[inline]
pub fn push_field(key: &mut Vec<u8>, field: &[u8]) {
    if memchr2(0, 1, field).is_none() {
        key.extend_from_slice(field);
    } else {
        for &b in field {
            if b <= 1 {
                key.push(1);
                key.push(b + 1);
            } else {
                key.push(b);
            }
        }
    }
    key.push(0);
}

/// Calls `f` with each decoded field of an encoded key; `scratch` is reused.
pub fn for_each_field(key: &[u8], scratch: &mut Vec<u8>, mut f: impl FnMut(&[u8])) {
    let mut i = 0;
    while i < key.len() {
        let end = i + memchr::memchr(0, &key[i..]).unwrap_or(key.len() - i);
        let enc = &key[i..end];
        if memchr::memchr(1, enc).is_none() {
            f(enc);
        } else {
            scratch.clear();
            let mut j = 0;
            while j < enc.len() {
                if enc[j] == 1 && j + 1 < enc.len() {
                    scratch.push(enc[j + 1] - 1);
                    j += 2;
                } else {
                    scratch.push(enc[j]);
                    j += 1;
                }
            }
            f(scratch);
        }
        i = end + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn enc(fields: &[Vec<u8>]) -> Vec<u8> {
        let mut k = Vec::new();
        for f in fields {
            push_field(&mut k, f);
        }
        k
    }

    proptest! {
        #[test]
        fn order_and_roundtrip(a in proptest::collection::vec(proptest::collection::vec(0u8..4, 0..4), 2),
                               b in proptest::collection::vec(proptest::collection::vec(0u8..4, 0..4), 2)) {
            prop_assert_eq!(enc(&a).cmp(&enc(&b)), a.cmp(&b));
            let mut out = Vec::new();
            let mut s = Vec::new();
            for_each_field(&enc(&a), &mut s, |f| out.push(f.to_vec()));
            prop_assert_eq!(out, a);
        }
    }
}
