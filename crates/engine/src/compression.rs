//! How an input's bytes are encoded, told by its first bytes (magic
//! numbers), never by its name: a `.gz` that holds plain CSV is plain CSV.

use serde::{Deserialize, Serialize};

/// The encoding of an input file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Plain bytes.
    #[default]
    None,
    /// gzip (RFC 1952): one member or many (`cat a.gz b.gz`, `pigz`, `bgzip`).
    Gzip,
    /// Zstandard (RFC 8878): one frame or many (`zstd -T0`, `pzstd`),
    /// skippable frames included.
    Zstd,
}

const GZIP: [u8; 2] = [0x1f, 0x8b];
const ZSTD: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

impl Compression {
    /// The bytes needed to tell: [`Compression::detect`] looks at no more.
    pub const MAGIC_LEN: usize = 4;

    /// The encoding the first bytes of a file show. A file shorter than a
    /// magic number is plain.
    pub fn detect(first: &[u8]) -> Compression {
        if first.starts_with(&GZIP) {
            Compression::Gzip
        } else if first.starts_with(&ZSTD) || is_skippable_zstd_frame(first) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// Plain bytes.
    pub fn is_none(&self) -> bool {
        *self == Compression::None
    }

    /// Its name in messages and summaries.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

impl Compression {
    /// Bytes a member (gzip) or frame (zstd) start is told by:
    /// [`Compression::member_starts`] reports a position only when this
    /// many bytes follow it in the slice.
    pub const MEMBER_MAGIC_LEN: usize = 4;

    /// The positions in `bytes` where a gzip member or a zstd frame (data
    /// or skippable) could begin: its magic number, and for gzip the
    /// deflate method and no reserved flag. Compressed data holds such
    /// bytes by chance too (a gzip candidate about once in 128 MiB of
    /// random bytes), so a candidate is only a place to try decoding from.
    pub fn member_starts(self, bytes: &[u8]) -> impl Iterator<Item = usize> + '_ {
        let first = match self {
            Compression::Gzip => GZIP[0],
            _ => 0, // zstd: any first byte (the skippable magics differ in it)
        };
        let n = bytes.len().saturating_sub(Self::MEMBER_MAGIC_LEN - 1);
        let candidates: Box<dyn Iterator<Item = usize>> = match self {
            Compression::None => Box::new(std::iter::empty()),
            Compression::Gzip => Box::new(memchr::memchr_iter(first, &bytes[..n])),
            Compression::Zstd => Box::new(0..n),
        };
        candidates.filter(move |&i| {
            let m = &bytes[i..i + Self::MEMBER_MAGIC_LEN];
            match self {
                Compression::None => false,
                // ID1 ID2, CM = 8 (deflate), FLG's reserved bits clear.
                Compression::Gzip => m[1] == GZIP[1] && m[2] == 8 && m[3] & 0xe0 == 0,
                Compression::Zstd => m == ZSTD || is_skippable_zstd_frame(m),
            }
        })
    }
}

/// A skippable frame (magic 0x184D2A50–0x184D2A5F, little-endian), which
/// `pzstd` and seekable-format writers put before the data frames.
fn is_skippable_zstd_frame(first: &[u8]) -> bool {
    first.len() >= 4 && first[1..4] == [0x2a, 0x4d, 0x18] && first[0] & 0xf0 == 0x50
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_bytes_tell_the_encoding() {
        assert_eq!(Compression::detect(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd, 0]), Compression::Zstd);
        assert_eq!(Compression::detect(&[0x50, 0x2a, 0x4d, 0x18]), Compression::Zstd);
        assert_eq!(Compression::detect(&[0x5f, 0x2a, 0x4d, 0x18]), Compression::Zstd);
        assert_eq!(Compression::detect(&[0x60, 0x2a, 0x4d, 0x18]), Compression::None);
        assert_eq!(Compression::detect(b"Song,Date\n"), Compression::None);
        assert_eq!(Compression::detect(&[0x1f]), Compression::None, "too short to be gzip");
        assert_eq!(Compression::detect(b""), Compression::None);
        assert_eq!(Compression::detect(&[0x28, 0xb5, 0x2f]), Compression::None);
    }

    #[test]
    fn member_starts_are_the_magic_numbers_with_their_bytes_after_them() {
        let gz = [0, 0x1f, 0x8b, 8, 0, 0x1f, 0x8b, 8, 0x20, 0x1f, 0x8b, 7, 0, 0x1f, 0x8b, 8];
        let found: Vec<usize> = Compression::Gzip.member_starts(&gz).collect();
        assert_eq!(found, vec![1], "a reserved flag, another method and a cut-off magic are not starts");
        let zs = [9, 0x28, 0xb5, 0x2f, 0xfd, 0x5a, 0x2a, 0x4d, 0x18, 0x28, 0xb5, 0x2f];
        let found: Vec<usize> = Compression::Zstd.member_starts(&zs).collect();
        assert_eq!(found, vec![1, 5]);
        assert_eq!(Compression::None.member_starts(&gz).count(), 0);
        assert_eq!(Compression::Gzip.member_starts(&[0x1f, 0x8b]).count(), 0);
    }
}
