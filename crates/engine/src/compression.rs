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
}
