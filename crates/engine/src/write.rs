//! Writing results: [`RowFormatter`] turns merged groups into CSV rows and
//! [`PartWriter`] cuts them into files of at most `max_file_bytes` each, the
//! header row included in every file.

use std::io;

use serde::{Deserialize, Serialize};

use crate::acc::{write_value, Acc};
use crate::key::for_each_field;
use crate::swar::{splat, zero_bytes};
use crate::Error;

/// Appends one CSV field, quoted when it holds a delimiter, quote or line break.
pub fn push_csv_field(out: &mut Vec<u8>, v: &[u8], delimiter: u8) {
    let needs = v.iter().any(|&b| b == delimiter || b == b'"' || b == b'\n' || b == b'\r');
    if !needs {
        out.extend_from_slice(v);
        return;
    }
    out.push(b'"');
    for &b in v {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
}

/// Appends `key` with its zero bytes (field terminators) made `d`, eight
/// bytes per step: a branch per byte was 44% of [`RowFormatter::row`].
fn push_terminated(out: &mut Vec<u8>, key: &[u8], d: u8) {
    let words = key.chunks_exact(8);
    let tail = words.remainder();
    for w in words {
        let w = u64::from_le_bytes(w.try_into().expect("8 bytes"));
        // 0xff in exactly the zero bytes of `w`.
        let fill = (zero_bytes(w) >> 7) * 0xff;
        out.extend_from_slice(&(w | (fill & splat(d))).to_le_bytes());
    }
    out.extend(tail.iter().map(|&b| if b == 0 { d } else { b }));
}

/// Formats result rows: decoded key fields, then aggregate values.
pub struct RowFormatter {
    delimiter: u8,
    /// 1 for the bytes that keep a key from being copied as is: the escape
    /// byte 0x01, the delimiter, quotes and line ends. A table read per byte
    /// without a branch; five comparisons per byte with an early exit were
    /// an eighth of a large merge's time.
    special: [u8; 256],
    scratch: Vec<u8>,
    value: Vec<u8>,
    kinds: Vec<crate::kinds::ValueKind>,
    /// Whether the delimiter can never appear in a number's text.
    numbers_plain: bool,
}

/// Whether `a`'s value is written as a number (or not at all).
fn is_number(a: &Acc) -> bool {
    use crate::acc::Val;
    matches!(
        a,
        Acc::Count(_)
            | Acc::Sum(_)
            | Acc::Mean { .. }
            | Acc::Min(Some(Val::Num(_)) | None)
            | Acc::Max(Some(Val::Num(_)) | None)
    )
}

impl RowFormatter {
    /// Rows with fields separated by `delimiter`.
    pub fn new(delimiter: u8) -> Self {
        let mut special = [0u8; 256];
        for b in [1, delimiter, b'"', b'\n', b'\r'] {
            special[b as usize] = 1;
        }
        RowFormatter {
            delimiter,
            special,
            scratch: Vec::new(),
            value: Vec::new(),
            kinds: Vec::new(),
            numbers_plain: !b"0123456789+-.eE".contains(&delimiter),
        }
    }

    /// What each aggregate column's values were, over the rows so far.
    pub fn kinds(&self) -> &[crate::kinds::ValueKind] {
        &self.kinds
    }

    /// The header row of `names`.
    pub fn header(&self, names: &[String]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, n) in names.iter().enumerate() {
            if i > 0 {
                out.push(self.delimiter);
            }
            push_csv_field(&mut out, n.as_bytes(), self.delimiter);
        }
        out.push(b'\n');
        out
    }

    /// Appends one row (with its newline) to `out`.
    pub fn row(&mut self, key: &[u8], accs: &[Acc], texts: &[u8], out: &mut Vec<u8>) {
        let d = self.delimiter;
        let mut first = true;
        let plain = key.iter().fold(0, |any, &b| any | self.special[b as usize]) == 0;
        if plain {
            // No escapes and nothing to quote: the key's field terminators become delimiters.
            push_terminated(out, &key[..key.len().saturating_sub(1)], d);
            first = key.is_empty();
        } else {
            for_each_field(key, &mut self.scratch, |f| {
                if !first {
                    out.push(d);
                }
                first = false;
                push_csv_field(out, f, d);
            });
        }
        if self.kinds.len() < accs.len() {
            self.kinds.resize(accs.len(), Default::default());
        }
        for (i, a) in accs.iter().enumerate() {
            self.kinds[i].note(a);
            if !first {
                out.push(d);
            }
            first = false;
            if self.numbers_plain && is_number(a) {
                // Digits, sign and point: nothing to quote, no copy to check.
                write_value(a, texts, out);
            } else {
                self.value.clear();
                write_value(a, texts, &mut self.value);
                push_csv_field(out, &self.value, d);
            }
        }
        out.push(b'\n');
    }
}

/// Where the parts go.
pub trait PartSink {
    /// Starts part `index` (0-based).
    fn begin(&mut self, index: usize) -> io::Result<()>;
    /// Appends bytes to the current part.
    fn write(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Ends the current part.
    fn end(&mut self, info: &PartInfo) -> io::Result<()>;
}

/// One written part.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartInfo {
    /// The part's position in its range.
    pub index: usize,
    /// Its file name.
    pub name: String,
    /// Its size, header included.
    pub bytes: u64,
    /// Its data rows.
    pub rows: u64,
}

/// The name of part `index` of key range `range`: name order is key order.
pub fn part_name(range: usize, index: usize) -> String {
    format!("part-{range:05}-{index:05}.csv")
}

/// Cuts rows into parts of at most `max_bytes`, each starting with the header.
pub struct PartWriter<S> {
    sink: S,
    range: usize,
    max: u64,
    header: Vec<u8>,
    current: Option<PartInfo>,
    parts: Vec<PartInfo>,
    buf: Vec<u8>,
}

const FLUSH_AT: usize = 1 << 20;

impl<S: PartSink> PartWriter<S> {
    /// Parts of key range 0 (see [`Self::for_range`]).
    pub fn new(sink: S, max_bytes: u64, header: Vec<u8>) -> Result<Self, Error> {
        Self::for_range(sink, max_bytes, header, 0)
    }

    /// Writes the parts of key range `range` (their names carry it).
    pub fn for_range(sink: S, max_bytes: u64, header: Vec<u8>, range: usize) -> Result<Self, Error> {
        if header.len() as u64 > max_bytes {
            return Err(Error::RowTooLarge { bytes: header.len() as u64, max: max_bytes, what: "the header row" });
        }
        Ok(PartWriter {
            sink,
            range,
            max: max_bytes,
            header,
            current: None,
            parts: Vec::new(),
            buf: Vec::with_capacity(FLUSH_AT * 2),
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.sink.write(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    fn close_current(&mut self) -> io::Result<()> {
        if let Some(p) = self.current.take() {
            self.flush()?;
            self.sink.end(&p)?;
            self.parts.push(p);
        }
        Ok(())
    }

    fn open_next(&mut self) -> io::Result<()> {
        let index = self.parts.len();
        self.sink.begin(index)?;
        self.buf.extend_from_slice(&self.header);
        self.current =
            Some(PartInfo { index, name: part_name(self.range, index), bytes: self.header.len() as u64, rows: 0 });
        Ok(())
    }

    /// Appends one formatted row (ending in a newline).
    pub fn push_row(&mut self, row: &[u8]) -> Result<(), Error> {
        let len = row.len() as u64;
        if self.header.len() as u64 + len > self.max {
            return Err(Error::RowTooLarge {
                bytes: self.header.len() as u64 + len,
                max: self.max,
                what: "a result row with the header",
            });
        }
        let fits = self.current.as_ref().is_some_and(|p| p.bytes + len <= self.max);
        if !fits {
            self.close_current().map_err(Error::Output)?;
            self.open_next().map_err(Error::Output)?;
        }
        let p = self.current.as_mut().expect("opened");
        p.bytes += len;
        p.rows += 1;
        self.buf.extend_from_slice(row);
        if self.buf.len() >= FLUSH_AT {
            self.flush().map_err(Error::Output)?;
        }
        Ok(())
    }

    /// Appends formatted rows: `bytes` holds them back to back, `ends` where
    /// each ends. A block that fits in the current part is copied at once;
    /// otherwise row by row, with the same parts as [`Self::push_row`].
    pub fn push_rows(&mut self, bytes: &[u8], ends: &[usize]) -> Result<(), Error> {
        let len = bytes.len() as u64;
        if let Some(p) = self.current.as_mut().filter(|p| p.bytes + len <= self.max) {
            p.bytes += len;
            p.rows += ends.len() as u64;
            self.buf.extend_from_slice(bytes);
            if self.buf.len() >= FLUSH_AT {
                self.flush().map_err(Error::Output)?;
            }
            return Ok(());
        }
        let mut start = 0;
        for &end in ends {
            self.push_row(&bytes[start..end])?;
            start = end;
        }
        Ok(())
    }

    /// Closes the last part (a header-only part when there were no rows).
    pub fn finish(mut self) -> Result<(Vec<PartInfo>, S), Error> {
        if self.current.is_none() && self.parts.is_empty() {
            self.open_next().map_err(Error::Output)?;
        }
        self.finish_parts()
    }

    /// Closes the last part; no part at all when there were no rows (a key
    /// range that holds no groups writes nothing).
    pub fn finish_parts(mut self) -> Result<(Vec<PartInfo>, S), Error> {
        self.close_current().map_err(Error::Output)?;
        Ok((self.parts, self.sink))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::push_field;
    use proptest::prelude::*;

    proptest! {
        /// A key is written as its fields, each quoted where it must be,
        /// whether it takes the copy path (most keys here: plain bytes are
        /// the likelier) or the field by field one.
        #[test]
        fn rows_are_their_fields_quoted(
            fields in prop::collection::vec(prop::collection::vec(prop::sample::select(b"abababababababab\x02,;\"\n\r\x00\x01".to_vec()), 0..12), 1..4),
            semicolon in any::<bool>(),
        ) {
            let d = if semicolon { b';' } else { b',' };
            let mut key = Vec::new();
            for f in &fields {
                push_field(&mut key, f);
            }
            let mut got = Vec::new();
            RowFormatter::new(d).row(&key, &[Acc::Count(3)], &[], &mut got);
            let mut want = Vec::new();
            for f in &fields {
                push_csv_field(&mut want, f, d);
                want.push(d);
            }
            want.extend_from_slice(b"3\n");
            prop_assert_eq!(got, want);
        }

        /// Values are their text, quoted where the delimiter (a digit, a
        /// sign or a point included) appears in it, whether written straight
        /// to the row (numbers) or checked first.
        #[test]
        fn values_are_their_text_quoted(
            values in prop::collection::vec((0u8..6, any::<i64>(), 0u8..5, 1u64..9), 1..6),
            d in prop::sample::select(b",;.-5e\t".to_vec()),
        ) {
            use crate::acc::{TextRef, Val};
            use crate::number::Decimal;
            let texts = b"1.5,x".to_vec();
            let accs: Vec<Acc> = values.iter().map(|&(kind, m, scale, n)| {
                let dec = Decimal { mantissa: m as i128 * 1000, scale };
                match kind {
                    0 => Acc::Count(m.unsigned_abs()),
                    1 => Acc::Sum(Some(dec)),
                    2 => Acc::Mean { sum: dec, n },
                    3 => Acc::Min(Some(Val::Num(dec))),
                    4 => Acc::Max(Some(Val::Text(TextRef { off: 0, len: 5 }))),
                    _ => Acc::Sum(None),
                }
            }).collect();
            let mut key = Vec::new();
            push_field(&mut key, b"k");
            let mut got = Vec::new();
            RowFormatter::new(d).row(&key, &accs, &texts, &mut got);
            let mut want = b"k".to_vec();
            for a in &accs {
                want.push(d);
                let mut v = Vec::new();
                write_value(a, &texts, &mut v);
                push_csv_field(&mut want, &v, d);
            }
            want.push(b'\n');
            prop_assert_eq!(got, want);
        }
    }

    #[derive(Default)]
    struct Mem {
        parts: Vec<Vec<u8>>,
    }
    impl PartSink for Mem {
        fn begin(&mut self, index: usize) -> io::Result<()> {
            assert_eq!(index, self.parts.len());
            self.parts.push(Vec::new());
            Ok(())
        }
        fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
            self.parts.last_mut().unwrap().extend_from_slice(bytes);
            Ok(())
        }
        fn end(&mut self, info: &PartInfo) -> io::Result<()> {
            assert_eq!(info.bytes as usize, self.parts[info.index].len());
            Ok(())
        }
    }

    proptest! {
        /// Blocks of rows make the same parts as the rows one by one.
        #[test]
        fn blocks_of_rows_make_the_same_parts(
            blocks in prop::collection::vec(prop::collection::vec(1usize..12, 0..10), 0..10),
            max in 16u64..80,
        ) {
            let mut one = PartWriter::new(Mem::default(), max, b"h,v\n".to_vec()).unwrap();
            let mut many = PartWriter::new(Mem::default(), max, b"h,v\n".to_vec()).unwrap();
            for (b, rows) in blocks.iter().enumerate() {
                let (mut bytes, mut ends) = (Vec::new(), Vec::new());
                for (r, &n) in rows.iter().enumerate() {
                    bytes.extend(std::iter::repeat_n(b'a' + (b + r) as u8 % 26, n));
                    bytes.push(b'\n');
                    ends.push(bytes.len());
                }
                let mut start = 0;
                for &end in &ends {
                    one.push_row(&bytes[start..end]).unwrap();
                    start = end;
                }
                many.push_rows(&bytes, &ends).unwrap();
            }
            let (a, sa) = one.finish().unwrap();
            let (b, sb) = many.finish().unwrap();
            prop_assert_eq!(a, b);
            prop_assert_eq!(sa.parts, sb.parts);
        }
    }

    #[test]
    fn parts_respect_the_cap_including_header() {
        let mut w = PartWriter::new(Mem::default(), 10, b"h,v\n".to_vec()).unwrap();
        for r in ["a,1\n", "b,2\n", "c,3\n"] {
            w.push_row(r.as_bytes()).unwrap();
        }
        let (parts, sink) = w.finish().unwrap();
        assert_eq!(parts.len(), 3);
        assert_eq!(sink.parts[0], b"h,v\na,1\n");
        assert!(sink.parts.iter().all(|p| p.len() <= 10));
        let mut w = PartWriter::new(Mem::default(), 10, b"h,v\n".to_vec()).unwrap();
        assert!(matches!(w.push_row(b"toolong,1\n"), Err(Error::RowTooLarge { .. })));
        let (parts, sink) = PartWriter::new(Mem::default(), 10, b"h,v\n".to_vec()).unwrap().finish().unwrap();
        assert_eq!((parts.len(), &sink.parts[0][..]), (1, &b"h,v\n"[..]));
    }

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        let mut o = Vec::new();
        push_csv_field(&mut o, b"a\"b,c", b',');
        assert_eq!(o, b"\"a\"\"b,c\"");
    }
}
