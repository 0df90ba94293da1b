//! Order-preserving encoding of a group key (a tuple of fields) into one
//! byte string, so that `memcmp` order equals tuple order field by field.
//!
//! Each field is written as its bytes with `0x00 → 01 01` and `0x01 → 01 02`,
//! followed by a `0x00` terminator. Real CSV text almost never holds bytes
//! 0 or 1, so a key costs one byte per field more than its text.

use std::cmp::Ordering;

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

/// Byte order of two keys, eight bytes per step and inline: keys are short,
/// and a call into `memcmp` per comparison was a tenth of the whole run.
#[inline]
pub fn cmp_keys(a: &[u8], b: &[u8]) -> Ordering {
    let n = a.len().min(b.len());
    let (wa, wb) = (a[..n].chunks_exact(8), b[..n].chunks_exact(8));
    let (ta, tb) = (wa.remainder(), wb.remainder());
    for (x, y) in wa.zip(wb) {
        let (x, y) = (word(x), word(y));
        if x != y {
            return x.cmp(&y);
        }
    }
    for (x, y) in ta.iter().zip(tb) {
        if x != y {
            return x.cmp(y);
        }
    }
    a.len().cmp(&b.len())
}

/// The length of the longest common prefix of two keys.
#[inline]
pub fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + 8 <= n {
        let x = word(&a[i..i + 8]) ^ word(&b[i..i + 8]);
        if x != 0 {
            return i + x.leading_zeros() as usize / 8;
        }
        i += 8;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

/// Whether two keys are equal (see [`cmp_keys`]).
#[inline]
pub fn eq_keys(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (wa, wb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ta, tb) = (wa.remainder(), wb.remainder());
    wa.zip(wb).all(|(x, y)| word(x) == word(y)) && ta == tb
}

/// The first 32 bytes of a key, zero-padded, as big-endian words: sorting
/// and merging compare these and look at the keys only on a tie. (Keys such
/// as `song\02025-01-21\0` differ late; 8 or 16 bytes tied too often.)
pub type Prefix = [u64; 4];

#[inline]
pub fn prefix(k: &[u8]) -> Prefix {
    prefix_words(k)
}

/// The first `8 * N` bytes of a key (1 ≤ `N` ≤ 4), zero-padded, as big-endian
/// words: [`prefix`] for `N` = 4; a sort of short keys compares fewer words.
#[inline]
pub fn prefix_words<const N: usize>(k: &[u8]) -> [u64; N] {
    let len = k.len();
    if len < 8 {
        let mut p = [0u8; 8];
        p[..len].copy_from_slice(k);
        let mut out = [0u64; N];
        out[0] = u64::from_be_bytes(p);
        return out;
    }
    // Whole words are loaded as they are; the word the key ends in is the
    // key's last eight bytes shifted up (an overlapping load, no copy into
    // a padded buffer: that was a library call per key).
    let last = word(&k[len - 8..]);
    std::array::from_fn(|i| {
        let start = 8 * i;
        if start + 8 <= len {
            word(&k[start..start + 8])
        } else if start < len {
            last << (8 * (start + 8 - len))
        } else {
            0
        }
    })
}

/// After keys agree in their first `n` bytes zero-padded (equal
/// [`prefix`]es: `n` = 32; in the merge also equal second prefixes: 64):
/// the order of the rest.
#[inline]
pub fn cmp_after(a: &[u8], b: &[u8], n: usize) -> Ordering {
    let s = a.len().min(b.len()).min(n);
    cmp_keys(&a[s..], &b[s..])
}

#[inline]
fn word(b: &[u8]) -> u64 {
    u64::from_be_bytes(b.try_into().expect("8 bytes"))
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
        /// A prefix is the first 32 bytes zero-padded, as big-endian words
        /// (and one of fewer words its first words), for keys of every length.
        #[test]
        fn prefix_is_the_padded_head(k in prop::collection::vec(any::<u8>(), 0..40)) {
            let mut p = [0u8; 32];
            let n = k.len().min(32);
            p[..n].copy_from_slice(&k[..n]);
            let want: Prefix = std::array::from_fn(|i| u64::from_be_bytes(p[8 * i..8 * i + 8].try_into().unwrap()));
            prop_assert_eq!(prefix(&k), want);
            prop_assert_eq!(&prefix_words::<1>(&k)[..], &want[..1]);
            prop_assert_eq!(&prefix_words::<2>(&k)[..], &want[..2]);
            prop_assert_eq!(&prefix_words::<3>(&k)[..], &want[..3]);
        }

        /// Two keys that differ first at any byte (inside either prefix, at
        /// their bounds, past them) or where one ends: the merge's
        /// comparison chain orders them as their bytes.
        #[test]
        fn the_merge_comparison_is_byte_order_at_every_position(
            k in proptest::collection::vec(2u8..=255, 0..100),
            at in 0usize..100,
            y in 2u8..=255,
            cut in proptest::bool::ANY,
        ) {
            let mut j = k.clone();
            if cut {
                j.truncate(at);
            } else if at < j.len() {
                j[at] = y;
            }
            let second = |k: &[u8]| if k.len() > 32 { prefix(&k[32..]) } else { [0; 4] };
            let chain = prefix(&k).cmp(&prefix(&j)).then(second(&k).cmp(&second(&j))).then_with(|| cmp_after(&k, &j, 64));
            prop_assert_eq!(chain, k.cmp(&j));
            prop_assert_eq!(prefix(&k).cmp(&prefix(&j)).then_with(|| cmp_after(&k, &j, 32)), k.cmp(&j));
        }

        #[test]
        fn order_and_roundtrip(a in proptest::collection::vec(proptest::collection::vec(0u8..4, 0..40), 2),
                               b in proptest::collection::vec(proptest::collection::vec(0u8..4, 0..40), 2)) {
            prop_assert_eq!(enc(&a).cmp(&enc(&b)), a.cmp(&b));
            prop_assert_eq!(cmp_keys(&enc(&a), &enc(&b)), a.cmp(&b));
            prop_assert_eq!(eq_keys(&enc(&a), &enc(&b)), a == b);
            let (x, y) = (enc(&a), enc(&b));
            prop_assert_eq!(common_prefix(&x, &y), x.iter().zip(&y).take_while(|(p, q)| p == q).count());
            let (ka, kb) = (enc(&a), enc(&b));
            // What the merge compares: the zero-padded prefix, the next 32
            // bytes (zero for a short key), then the rest.
            prop_assert_eq!(prefix(&ka).cmp(&prefix(&kb)).then_with(|| cmp_after(&ka, &kb, 32)), a.cmp(&b));
            let second = |k: &[u8]| if k.len() > 32 { prefix(&k[32..]) } else { [0; 4] };
            prop_assert_eq!(
                prefix(&ka).cmp(&prefix(&kb)).then(second(&ka).cmp(&second(&kb))).then_with(|| cmp_after(&ka, &kb, 64)),
                a.cmp(&b)
            );
            let mut out = Vec::new();
            let mut s = Vec::new();
            for_each_field(&enc(&a), &mut s, |f| out.push(f.to_vec()));
            prop_assert_eq!(out, a);
        }
    }
}
