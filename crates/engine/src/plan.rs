//! Planning a job over one input: the header, the chunk ranges, and after
//! the scan the quote-state chain and global line numbers.

use serde::{Deserialize, Serialize};

use crate::compression::Compression;
use crate::quotes::QuoteState;
use crate::scan::{BadRow, BadRowKind, ChunkRange, ChunkReport};
use crate::spec::{Compiled, Dialect, Spec};
use crate::Error;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// What the start of the file says: where data begins, the header, the width.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// Offset of the first data record (after BOM, leading empty lines and header).
    pub data_start: u64,
    /// Newlines before `data_start`.
    pub newlines_before_data: u64,
    /// The header's names, if the dialect has a header.
    pub header: Option<Vec<String>>,
    /// Fields of the first record (the header, or the first data row).
    pub width: usize,
    /// How the file is encoded; offsets count its decoded bytes.
    #[serde(default, skip_serializing_if = "Compression::is_none")]
    pub compression: Compression,
    /// A compressed input: compressed bytes that decode to at least the
    /// head, so no member starting at or past them holds a byte of it (the
    /// first chunk's range reaches at least this far).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub compressed_head: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Reads the head of a file from its first bytes. Returns `Ok(None)` when
/// `prefix` (which is the whole file if `prefix.len() == file_size`) ends
/// before the first record does: call again with more.
pub fn read_head(prefix: &[u8], file_size: u64, dialect: &Dialect) -> Result<Option<Head>, Error> {
    if file_size == 0 {
        return Err(Error::EmptyInput);
    }
    let eof = prefix.len() as u64 >= file_size;
    let mut i = if prefix.starts_with(BOM) { BOM.len() } else { 0 };
    let mut newlines = 0u64;
    // Skip empty lines.
    while i < prefix.len() && (prefix[i] == b'\n' || (prefix[i] == b'\r' && prefix.get(i + 1) == Some(&b'\n'))) {
        if prefix[i] == b'\n' {
            newlines += 1;
        }
        i += 1;
    }
    if i >= prefix.len() {
        return if eof { Err(Error::EmptyInput) } else { Ok(None) };
    }
    let start = i;
    let mut fields: Vec<Vec<u8>> = vec![Vec::new()];
    let mut inq = false;
    // Lenient quoting (see `quotes`): a quote opens quoting only here.
    let mut field_start = true;
    while i < prefix.len() {
        let b = prefix[i];
        let at_start = std::mem::replace(&mut field_start, false);
        if inq {
            if Some(b) == dialect.quote {
                if prefix.get(i + 1) == dialect.quote.as_ref() {
                    fields.last_mut().unwrap().push(b);
                    i += 2;
                    continue;
                }
                if i + 1 == prefix.len() && !eof {
                    return Ok(None);
                }
                inq = false;
            } else {
                fields.last_mut().unwrap().push(b);
            }
        } else if Some(b) == dialect.quote && (at_start || !dialect.lenient_quotes) {
            inq = true;
        } else if b == dialect.delimiter {
            fields.push(Vec::new());
            field_start = true;
        } else if b == b'\n' {
            break;
        } else {
            fields.last_mut().unwrap().push(b);
        }
        i += 1;
    }
    if i >= prefix.len() && !eof {
        return Ok(None);
    }
    if inq {
        return Err(Error::Rejected(BadRow {
            line: 1 + newlines,
            byte: start as u64,
            record: 0,
            kind: BadRowKind::BadHeader,
            column: None,
            value: None,
            reason: "quoted field is never closed before the end of the file".into(),
        }));
    }
    let record_end = if i < prefix.len() { i + 1 } else { i };
    if let Some(last) = fields.last_mut() {
        if last.last() == Some(&b'\r') {
            last.pop();
        }
    }
    let width = fields.len();
    if !dialect.header {
        return Ok(Some(Head {
            data_start: if prefix.starts_with(BOM) { 3 } else { 0 },
            newlines_before_data: 0,
            header: None,
            width,
            compression: Compression::None,
            compressed_head: 0,
        }));
    }
    let mut names = Vec::with_capacity(width);
    for (c, f) in fields.into_iter().enumerate() {
        match String::from_utf8(f) {
            Ok(s) => names.push(s),
            Err(e) => {
                return Err(Error::Rejected(BadRow {
                    line: 1 + newlines,
                    byte: start as u64,
                    record: 0,
                    kind: BadRowKind::BadHeader,
                    column: Some(format!("column {}", c + 1)),
                    value: Some(crate::clip(&String::from_utf8_lossy(e.as_bytes()), 200).into_owned()),
                    reason: "header name is not valid UTF-8".into(),
                }))
            }
        }
    }
    Ok(Some(Head {
        data_start: record_end as u64,
        newlines_before_data: newlines + (record_end > i) as u64,
        header: Some(names),
        width,
        compression: Compression::None,
        compressed_head: 0,
    }))
}

impl Head {
    /// Resolves `spec`'s columns against this head.
    pub fn compile(&self, spec: &Spec) -> Result<Compiled, Error> {
        spec.compile(self.header.as_deref(), self.width).map_err(Error::Spec)
    }
}

/// Cuts `[data_start, file_size)` into ranges of `chunk_size` bytes.
pub fn plan_chunks(data_start: u64, file_size: u64, chunk_size: u64) -> Vec<ChunkRange> {
    debug_assert!(chunk_count(data_start, file_size, chunk_size) < u32::MAX as u64);
    assert!(chunk_size > 0, "chunk size must be positive");
    let mut out = Vec::new();
    let mut s = data_start;
    while s < file_size {
        let e = s.saturating_add(chunk_size).min(file_size);
        out.push(ChunkRange { index: out.len() as u32, start: s, end: e });
        s = e;
    }
    out
}

/// How many ranges [`plan_chunks`] cuts (without building them).
pub fn chunk_count(data_start: u64, file_size: u64, chunk_size: u64) -> u64 {
    assert!(chunk_size > 0, "chunk size must be positive");
    file_size.saturating_sub(data_start).div_ceil(chunk_size)
}

/// The true quote state at each chunk's start, from the reported transfers
/// (see [`crate::quotes`]). Returns the indices of chunks that assumed
/// another state, with the state they must be scanned with.
pub fn resolve_chain(reports: &[ChunkReport]) -> Vec<(u32, QuoteState)> {
    let mut state = QuoteState::FieldStart;
    let mut wrong = Vec::new();
    for r in reports {
        if r.assumed != state {
            wrong.push((r.index, state));
        }
        state = r.transfer.apply(state);
    }
    wrong
}

/// Global line and record numbers from per-chunk newline and row counts.
pub struct LineIndex {
    /// (newlines, records) before each chunk.
    before: Vec<(u64, u64)>,
}

impl LineIndex {
    /// The index of the chunks of `reports`, in chunk order.
    pub fn new(head: &Head, reports: &[ChunkReport]) -> Self {
        let mut acc = (head.newlines_before_data, 0);
        let before = reports
            .iter()
            .map(|r| {
                let b = acc;
                acc = (acc.0 + r.newlines, acc.1 + r.rows);
                b
            })
            .collect();
        LineIndex { before }
    }

    /// Makes a chunk-local bad row global (1-based line and record).
    pub fn globalize(&self, chunk: u32, mut bad: BadRow) -> BadRow {
        let (lines, records) = self.before[chunk as usize];
        bad.line += 1 + lines;
        bad.record += records;
        bad
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_handles_bom_crlf_and_quotes() {
        let d = Dialect::default();
        let h = read_head(b"\xEF\xBB\xBF\r\n\"a,\"\"b\",c\r\n1,2\n", 20, &d).unwrap().unwrap();
        assert_eq!(h.header, Some(vec!["a,\"b".to_string(), "c".to_string()]));
        assert_eq!(h.data_start, 16);
        assert_eq!(h.newlines_before_data, 2);
        assert_eq!(read_head(b"a,b", 10, &d).unwrap(), None);
        assert!(matches!(read_head(b"", 0, &d), Err(Error::EmptyInput)));
        assert!(matches!(read_head(b"\n\n", 2, &d), Err(Error::EmptyInput)));
        let h = read_head(b"a,b", 3, &d).unwrap().unwrap();
        assert_eq!(h.data_start, 3);
    }

    #[test]
    fn chunks_cover_the_data() {
        let c = plan_chunks(5, 17, 5);
        assert_eq!(c.iter().map(|c| (c.start, c.end)).collect::<Vec<_>>(), vec![(5, 10), (10, 15), (15, 17)]);
        assert!(plan_chunks(5, 5, 1).is_empty());
        for (start, size, chunk) in [(5, 17, 5), (0, 0, 3), (0, 1, 1), (3, 100, 7), (0, 100, 100), (9, 8, 2)] {
            assert_eq!(chunk_count(start, size, chunk), plan_chunks(start, size, chunk).len() as u64);
        }
    }
}
