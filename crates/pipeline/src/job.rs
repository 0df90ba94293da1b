//! The records the job store keeps.

use fanfold_engine::{plan_chunks, BadRow, ChunkRange, ChunkReport, Head, PartInfo};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Splitting,
    Running,
    Merging,
    Done,
    Failed,
    Cancelled,
}

impl Status {
    pub fn is_final(self) -> bool {
        matches!(self, Status::Done | Status::Failed | Status::Cancelled)
    }
}

/// Where the input is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub bucket: String,
    pub key: String,
    pub etag: String,
    pub size: u64,
}

/// Why a job failed. `rejected` is the input's fault (HTTP 406); a retry of
/// the same input cannot help.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobError {
    pub message: String,
    pub rejected: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub byte: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
}

impl JobError {
    pub fn internal(message: impl Into<String>) -> Self {
        JobError { message: message.into(), rejected: false, line: None, byte: None, column: None }
    }
    pub fn rejected(message: impl Into<String>) -> Self {
        JobError { message: message.into(), rejected: true, line: None, byte: None, column: None }
    }
    pub fn from_bad_row(b: &BadRow) -> Self {
        JobError {
            message: b.to_string(),
            rejected: true,
            line: Some(b.line),
            byte: Some(b.byte),
            column: b.column.clone(),
        }
    }
}

/// What a finished job produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outputs {
    /// Keys of the parts with their sizes and row counts.
    pub parts: Vec<OutputPart>,
    pub manifest: String,
    pub summary: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputPart {
    pub key: String,
    pub bytes: u64,
    pub rows: u64,
}

impl OutputPart {
    pub fn new(key: String, p: &PartInfo) -> Self {
        OutputPart { key, bytes: p.bytes, rows: p.rows }
    }
}

/// A job, as the job store keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub status: Status,
    pub source: Source,
    /// The canonical spec JSON.
    pub spec: String,
    pub head: Option<Head>,
    /// The chunk plan: `chunk_count` ranges of `chunk_size` bytes from the
    /// head's data start (kept compact: a 1 TB job has ~15k chunks).
    pub chunk_size: u64,
    pub chunk_count: u32,
    pub done: Vec<u32>,
    pub rows: u64,
    pub bytes_done: u64,
    /// Chunks scanned again after a wrong quote-state guess.
    pub chunks_rerun: u32,
    /// Times the sweeper re-dispatched this job's work.
    pub sweeps: u32,
    pub error: Option<JobError>,
    pub outputs: Option<Outputs>,
    pub lease: Option<Lease>,
    pub created_ms: u64,
    pub running_ms: Option<u64>,
    pub updated_ms: u64,
}

impl Job {
    /// The job's place in listings: sorts by creation time, then id (and is
    /// safe in a URL query as it is).
    pub fn list_key(&self) -> String {
        format!("{:013}.{}", self.created_ms, self.id)
    }

    /// Whether `cursor` has the shape of a [`Job::list_key`].
    pub fn is_list_key(cursor: &str) -> bool {
        cursor.split_once('.').is_some_and(|(t, id)| {
            t.len() == 13
                && t.bytes().all(|b| b.is_ascii_digit())
                && !id.is_empty()
                && id.len() <= 64
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
    }

    /// The chunk ranges (empty before the split).
    pub fn ranges(&self) -> Vec<ChunkRange> {
        match &self.head {
            Some(h) if self.chunk_size > 0 => plan_chunks(h.data_start, self.source.size, self.chunk_size),
            _ => Vec::new(),
        }
    }

    /// One chunk's range.
    pub fn range(&self, index: u32) -> Option<ChunkRange> {
        let h = self.head.as_ref()?;
        let start = h.data_start.checked_add(index as u64 * self.chunk_size)?;
        (index < self.chunk_count).then(|| ChunkRange {
            index,
            start,
            end: start.saturating_add(self.chunk_size).min(self.source.size),
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub owner: String,
    pub until_ms: u64,
}

impl Job {
    pub fn new(id: String, source: Source, spec: String, now_ms: u64) -> Self {
        Job {
            id,
            status: Status::Splitting,
            source,
            spec,
            head: None,
            chunk_size: 0,
            chunk_count: 0,
            done: Vec::new(),
            rows: 0,
            bytes_done: 0,
            chunks_rerun: 0,
            sweeps: 0,
            error: None,
            outputs: None,
            lease: None,
            created_ms: now_ms,
            running_ms: None,
            updated_ms: now_ms,
        }
    }
}

/// Where a chunk's partial is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartialRef {
    /// Small partials live in the chunk item itself.
    Inline(#[serde(with = "bytes_b64")] Vec<u8>),
    /// Large ones are spilled to the object store.
    Object(String),
}

/// A chunk's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRecord {
    pub report: ChunkReport,
    pub partial: PartialRef,
    pub attempt: u32,
}

/// Compact JSON for inline partials (hex would double them; this is base64).
mod bytes_b64 {
    use serde::{Deserialize, Deserializer, Serializer};
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        let mut out = String::with_capacity(v.len().div_ceil(3) * 4);
        for c in v.chunks(3) {
            let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
            for i in 0..4 {
                if i <= c.len() {
                    out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        s.serialize_str(&out)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        let mut out = Vec::with_capacity(s.len() / 4 * 3);
        let mut acc = 0u32;
        let mut bits = 0;
        for b in s.bytes().filter(|&b| b != b'=') {
            let v = A.iter().position(|&x| x == b).ok_or_else(|| serde::de::Error::custom("bad base64"))? as u32;
            acc = acc << 6 | v;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
                acc &= (1 << bits) - 1;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_partials_roundtrip_through_json() {
        for n in 0..10 {
            let p = PartialRef::Inline((0..n).map(|i| (i * 37) as u8).collect());
            let j = serde_json::to_string(&p).unwrap();
            assert_eq!(serde_json::from_str::<PartialRef>(&j).unwrap(), p);
        }
    }
}
