//! The records the job store keeps.

use fanfold_engine::{BadRow, ChunkRange, ChunkReport, Head, PartInfo, QuoteState, StartState, TopGroup};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
/// Where a job stands: SPLITTING → RUNNING → MERGING → DONE, FAILED or CANCELLED.
pub enum Status {
    /// Reading the head and cutting the chunks.
    Splitting,
    /// Chunk tasks run.
    Running,
    /// The plan, the reducers, the commit.
    Merging,
    /// The results are written.
    Done,
    /// Failed, with the reason.
    Failed,
    /// Cancelled by a user.
    Cancelled,
}

impl Status {
    /// Whether nothing can change the job any more.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Done | Status::Failed | Status::Cancelled)
    }
}

/// Where the input is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// The bucket (or `local`).
    pub bucket: String,
    /// The object's key.
    pub key: String,
    /// The version the job reads (every read checks it).
    pub etag: String,
    /// The object's size.
    pub size: u64,
    /// What the job makes of it: a file's result (the default), a file's
    /// kept scan for a dataset, or a dataset's result over its files' scans.
    #[serde(default, skip_serializing_if = "InputKind::is_file")]
    pub kind: InputKind,
}

/// What a job makes of its input (see `crate::dataset`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "is")]
pub enum InputKind {
    /// One file's result.
    #[default]
    File,
    /// One file of a dataset, scanned and kept: DONE once its chunks are
    /// checked and its totals and key sample are stored; never merged on
    /// its own. The dataset version that started it is told.
    Scan {
        /// The dataset version that started the scan.
        dataset: String,
        /// The file's place in that version's file list.
        index: u32,
    },
    /// A dataset version: `key` is the folder, `etag` a hash of its file
    /// list, `size` the files' bytes. Its "chunks" are its files.
    Dataset {
        /// How many files.
        files: u32,
    },
}

impl InputKind {
    /// A plain file's job.
    pub fn is_file(&self) -> bool {
        matches!(self, InputKind::File)
    }
}

/// Why a job failed. `rejected` is the input's fault (HTTP 406); a retry of
/// the same input cannot help.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobError {
    /// What went wrong, for people.
    pub message: String,
    /// The input's fault (a retry cannot help).
    pub rejected: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The bad row's line, when a row is at fault.
    pub line: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// Its byte offset.
    pub byte: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// Its column.
    pub column: Option<String>,
}

/// A job's error message is stored with the job and sent with every status
/// answer: at most this many bytes.
pub const MAX_ERROR_BYTES: usize = 1000;

impl JobError {
    /// A failure of the system, not of the input.
    pub fn internal(message: impl Into<String>) -> Self {
        JobError { message: clipped(message.into()), rejected: false, line: None, byte: None, column: None }
    }
    /// The input's fault.
    pub fn rejected(message: impl Into<String>) -> Self {
        JobError { message: clipped(message.into()), rejected: true, line: None, byte: None, column: None }
    }
    /// The input's fault, at a bad row.
    pub fn from_bad_row(b: &BadRow) -> Self {
        JobError {
            message: clipped(b.to_string()),
            rejected: true,
            line: Some(b.line),
            byte: Some(b.byte),
            column: b.column.as_deref().map(|c| fanfold_engine::clip(c, 200).into_owned()),
        }
    }
}

fn clipped(m: String) -> String {
    fanfold_engine::clip(&m, MAX_ERROR_BYTES).into_owned()
}

/// What a finished job produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outputs {
    /// Keys of the first [`Outputs::MAX_LISTED`] parts with their sizes and
    /// row counts (the job item stays small; `summary.json` lists them all).
    pub parts: Vec<OutputPart>,
    /// How many parts there are.
    #[serde(default)]
    pub part_count: u64,
    /// The QuickSight manifest's key.
    pub manifest: String,
    /// `summary.json`'s key.
    pub summary: String,
}

impl Outputs {
    /// Parts listed in the job record at most.
    pub const MAX_LISTED: usize = 100;

    /// Whether `parts` lists every part.
    pub fn complete_list(&self) -> bool {
        self.parts.len() as u64 >= self.part_count
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
/// One result file.
pub struct OutputPart {
    /// Its key.
    pub key: String,
    /// Its size, header included.
    pub bytes: u64,
    /// Its data rows.
    pub rows: u64,
}

impl OutputPart {
    /// The part `p` written under `key`.
    pub fn new(key: String, p: &PartInfo) -> Self {
        OutputPart { key, bytes: p.bytes, rows: p.rows }
    }
}

/// A job, as the job store keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Hash of source and spec (see `fanfold_engine::job_id`).
    pub id: String,
    /// Where it stands.
    pub status: Status,
    /// The input.
    pub source: Source,
    /// The canonical spec JSON.
    pub spec: String,
    /// The input's head, once split.
    pub head: Option<Head>,
    /// The chunk plan: `chunk_count` ranges of `chunk_size` bytes from the
    /// head's data start (kept compact: a 1 TB job has ~15k chunks).
    pub chunk_size: u64,
    /// How many chunk tasks.
    pub chunk_count: u32,
    /// Chunks marked done (an O(1) counter; each chunk's record has its flag).
    pub chunks_done: u32,
    /// Rows read by the chunks done.
    pub rows: u64,
    /// Input bytes of the chunks done.
    pub bytes_done: u64,
    /// Chunks scanned again after a wrong quote-state guess.
    pub chunks_rerun: u32,
    /// Times the sweeper re-dispatched this job's work.
    pub sweeps: u32,
    /// When it last did.
    #[serde(default)]
    pub swept_ms: Option<u64>,
    /// The job ended and its end event may not have gone out yet: set by
    /// the transition that ended it, cleared once the notifier took the
    /// event; the sweeper sends it again for a job whose ender died first
    /// (so end events are at least once).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub announce_pending: bool,
    /// Sweeps in a row with no [`Job::progress`] between them (what
    /// `SweepPolicy::max_sweeps` bounds: a slow job that moves is not failed).
    #[serde(default)]
    pub stuck_sweeps: u32,
    /// [`Job::progress`] at the last sweep.
    #[serde(default)]
    pub swept_progress: u64,
    /// Dispatch slices of [`crate::SLICE`] chunk tasks, each sent by one
    /// dispatcher; 0 until the job runs.
    #[serde(default)]
    pub slice_count: u32,
    /// Slices whose every chunk task was sent.
    #[serde(default)]
    pub slices_done: u32,
    /// When a slice was last marked done (once every slice is, the time
    /// the last chunk task was sent).
    #[serde(default)]
    pub dispatched_ms: Option<u64>,
    /// Key ranges, each merged by one reducer; 0 until the plan is made.
    pub range_count: u32,
    /// Ranges whose reducer finished.
    pub ranges_done: u32,
    /// When the merge started (the range plan was made).
    pub merging_ms: Option<u64>,
    /// Why it failed.
    pub error: Option<JobError>,
    /// Where the results are, once DONE.
    pub outputs: Option<Outputs>,
    /// Who holds the job (splitter, planner, committer) and until when.
    pub lease: Option<Lease>,
    /// Creation time (ms).
    pub created_ms: u64,
    /// When the chunk tasks started (ms).
    pub running_ms: Option<u64>,
    /// The last change (ms).
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

    /// MERGING without a range plan: a planner holds (or held) the lease
    /// and walks the chunks; rescans of chunks it reopened run meanwhile.
    pub fn planning(&self) -> bool {
        self.status == Status::Merging && self.range_count == 0
    }

    /// A count that grows with every step a job takes and never falls:
    /// the split, each chunk done (or rerun), each slice sent, the range
    /// plan, each range merged. Bounded, so a job repaired only while it
    /// moves still ends.
    pub fn progress(&self) -> u64 {
        [self.slice_count, self.slices_done, self.chunks_done, self.chunks_rerun, self.range_count, self.ranges_done]
            .iter()
            .map(|&n| u64::from(n))
            .sum()
    }

    /// How many slices or key ranges the stage has.
    pub fn work_count(&self, stage: Stage) -> u32 {
        match stage {
            Stage::Dispatch => self.slice_count,
            Stage::Reduce => self.range_count,
        }
    }

    /// The chunks slice `slice` dispatches.
    pub fn slice_chunks(&self, slice: u32) -> std::ops::Range<u32> {
        let start = slice.saturating_mul(crate::SLICE).min(self.chunk_count);
        start..start.saturating_add(crate::SLICE).min(self.chunk_count)
    }

    /// One chunk's byte range.
    /// A compressed input's chunks are ranges of its compressed bytes
    /// (`crate::members`), the first one reaching past the head.
    pub fn chunk(&self, index: u32) -> Option<ChunkRange> {
        let h = self.head.as_ref()?;
        let size = self.source.size;
        if index >= self.chunk_count {
            return None;
        }
        if let InputKind::Dataset { .. } = self.source.kind {
            return Some(ChunkRange { index, start: 0, end: 0 }); // the file `index`
        }
        if h.compression.is_none() {
            let start = h.data_start.checked_add(index as u64 * self.chunk_size)?;
            return Some(ChunkRange { index, start, end: start.saturating_add(self.chunk_size).min(size) });
        }
        let first_end = compressed_first_end(h, size, self.chunk_size);
        let start = if index == 0 { 0 } else { first_end.checked_add((index as u64 - 1) * self.chunk_size)? };
        let end = if index == 0 { first_end } else { start.saturating_add(self.chunk_size).min(size) };
        Some(ChunkRange { index, start, end })
    }
}

/// Where a compressed input's first chunk ends.
fn compressed_first_end(h: &Head, size: u64, chunk_size: u64) -> u64 {
    chunk_size.max(h.compressed_head).min(size)
}

/// How many chunks of `chunk_size` compressed bytes a compressed input of
/// `size` bytes is cut into (the first one reaching past the head).
pub fn compressed_chunk_count(h: &Head, size: u64, chunk_size: u64) -> u64 {
    1 + (size - compressed_first_end(h, size, chunk_size)).div_ceil(chunk_size)
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
/// A time-limited claim on a job, slice or range.
pub struct Lease {
    /// Who holds it (a request id).
    pub owner: String,
    /// Until when (ms); after that anyone may take it.
    pub until_ms: u64,
}

impl Job {
    /// The job started again: SPLITTING as [`Job::new`] makes it, with its
    /// id, source, spec and creation time.
    pub fn retried(&self, now_ms: u64) -> Job {
        let mut j = Job::new(self.id.clone(), self.source.clone(), self.spec.clone(), now_ms);
        j.created_ms = self.created_ms;
        j
    }

    /// A new job in SPLITTING.
    pub fn new(id: String, source: Source, spec: String, now_ms: u64) -> Self {
        Job {
            id,
            status: Status::Splitting,
            source,
            spec,
            head: None,
            chunk_size: 0,
            chunk_count: 0,
            chunks_done: 0,
            rows: 0,
            bytes_done: 0,
            chunks_rerun: 0,
            sweeps: 0,
            swept_ms: None,
            announce_pending: false,
            stuck_sweeps: 0,
            swept_progress: 0,
            slice_count: 0,
            slices_done: 0,
            dispatched_ms: None,
            range_count: 0,
            ranges_done: 0,
            merging_ms: None,
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
    /// What the scan reported.
    pub report: ChunkReport,
    /// Where its partial is.
    pub partial: PartialRef,
    /// The quote state the scan started with (a scan with a known state
    /// replaces a wrong guess).
    pub state: StartState,
    /// Set by the job store when the chunk is marked done.
    #[serde(default)]
    pub done: bool,
    /// Set by the job store when the chunk must be scanned again with this
    /// known start state (its guess was wrong).
    #[serde(default)]
    pub rerun: Option<QuoteState>,
}

impl ChunkRecord {
    /// A record not yet done, of a scan from `state`.
    pub fn new(report: ChunkReport, partial: PartialRef, state: StartState) -> Self {
        ChunkRecord { report, partial, state, done: false, rerun: None }
    }

    /// Whether a record of a scan with `state` may replace this one: not
    /// once the chunk is done, and only with the known state when one is
    /// required.
    pub fn accepts(&self, state: StartState) -> bool {
        !self.done && self.rerun.is_none_or(|s| state == StartState::Known(s))
    }
}

/// The two fanned-out stages whose tasks the job store tracks one record
/// each, under a lease: the dispatch of chunk tasks, a slice of
/// [`crate::SLICE`] chunks per dispatcher, and the reduce, a key range per
/// reducer. Each has its count and its done counter on the job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// Slices of chunk tasks (`Job::slice_count`, `Job::slices_done`); the
    /// job is RUNNING.
    Dispatch,
    /// Key ranges (`Job::range_count`, `Job::ranges_done`); the job is MERGING.
    Reduce,
}

/// The state of one slice's dispatcher or one key range's reducer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkRecord {
    /// The slice's or range's index.
    pub index: u32,
    /// Whether its work is done.
    pub done: bool,
    /// Who is doing it, until when.
    pub lease: Option<Lease>,
    /// How far the holder got (dispatch: chunk tasks of the slice sent, so
    /// that a retry resumes there); 0 for a reducer.
    #[serde(default)]
    pub next: u32,
}

impl WorkRecord {
    /// A record of work not started.
    pub fn new(index: u32) -> Self {
        WorkRecord { index, done: false, lease: None, next: 0 }
    }
}

/// What a reducer wrote for its key range (stored as an object beside the
/// partials; the committer reads one per range).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeResult {
    /// Its result files, in key order.
    pub parts: Vec<OutputPart>,
    /// Its groups.
    pub groups: u64,
    /// The range's largest groups by the first aggregate.
    pub top_groups: Vec<TopGroup>,
    /// What each aggregate column's values were (the table's types).
    #[serde(default)]
    pub kinds: Vec<fanfold_engine::kinds::ValueKind>,
}

/// Compact JSON for inline partials (hex would double them; this is base64).
mod bytes_b64 {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s.as_bytes()).map_err(serde::de::Error::custom)
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
