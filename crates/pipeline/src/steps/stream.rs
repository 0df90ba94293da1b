//! Scan one chunk of a compressed input: find its first member, decode its
//! members on a thread of their own ahead of the scan, and stop where its
//! last row ends (`crate::members` has the chunk-edge rules).

use std::io::Read;
use std::sync::mpsc::{sync_channel, SyncSender};

use fanfold_engine::{ChunkRange, ChunkScanner, Compiled, Compression, MemberSpan, ScanBuffers, StartState};

use super::chunk::{Scanned, READ_BUF};
use super::{CancelCheck, Pipeline};
use crate::config::PipelineError;
use crate::decode::{decode_error, walk_members, Piece};
use crate::job::{Job, JobError};
use crate::members::{first_member, Object};
use crate::read_ahead::{store_error, ReadAhead};

/// Decoded blocks a chunk's decoder keeps ready for its scanner.
const DECODED_AHEAD: usize = 4;

impl Pipeline {
    /// Scans chunk `range` (compressed bytes) of a compressed input from
    /// `state`: its members' rows, from the member `given` (or the first it
    /// finds). A stream that does not decode from chunk 0 fails the job with
    /// the compressed byte where it stopped (`None` then, or when the job
    /// stopped); from another chunk, the report says so and the plan decides.
    pub(super) fn scan_stream(
        &self,
        job: &Job,
        compiled: &Compiled,
        (range, state, given): (ChunkRange, StartState, Option<u64>),
        compression: Compression,
        (scan_buffers, mut buf): (ScanBuffers, Vec<u8>),
    ) -> Result<Option<Scanned>, PipelineError> {
        let (id, size) = (&job.id, job.source.size);
        let (key, etag) = (&job.source.key, &job.source.etag);
        let object = Object { store: &self.input, key, etag, size };
        let first = range.index == 0;
        let data_start = job.head.as_ref().map_or(0, |h| h.data_start);
        // Decoded coordinates from the first member's start: chunk 0's rows
        // start after the head, another chunk's one byte in.
        let local = ChunkRange { index: range.index, start: if first { data_start } else { 1 }, end: u64::MAX };
        let member = match given {
            _ if first => Some(0),
            Some(m) => Some(m).filter(|&m| m < range.end),
            None => first_member(&object, compression, range.start, range.end)?,
        };
        let Some(member) = member else {
            return Ok(Some(empty(compiled, range.index, None, scan_buffers, buf)));
        };
        let raw: Box<dyn Read + Send> = if self.config.read_streams > 1 && range.end - member > self.config.read_block {
            // The chunk's own members with several GETs in flight; what lies
            // past its range (the end of its last member and row) with one.
            let (streams, block) = (self.config.read_streams, self.config.read_block);
            let ahead = ReadAhead::new(self.input.clone(), key, etag, (member, range.end), streams, block);
            if range.end < size {
                Box::new(ahead.chain(self.input.get_range_of(key, etag, range.end, None)?))
            } else {
                Box::new(ahead)
            }
        } else {
            self.input.get_range_of(key, etag, member, None)?
        };
        let mut scanner = ChunkScanner::with_buffers(compiled, local, u64::MAX, first, state, scan_buffers);
        // Chunk 0 knows where its member starts, so its decoding errors are
        // real; another chunk's go to the plan, which knows whether its
        // start was (`crate::members::MemberChain`).
        let mut undecodable_at: Option<String> = None;
        let mut undecodable = |e: std::io::Error| -> Result<Outcome, PipelineError> {
            match decode_error(&e) {
                Some(d) if first => {
                    self.fail(id, JobError::rejected(d.to_string()))?;
                    Ok(Outcome::Stopped)
                }
                Some(d) => {
                    undecodable_at = Some(d.to_string());
                    Ok(Outcome::Undecodable)
                }
                None => Err(store_error(e).into()),
            }
        };
        let (pieces, decoded) = sync_channel::<std::io::Result<Option<Piece>>>(DECODED_AHEAD);
        let mut next: Option<u64> = None; // the first member past the range
        let outcome = std::thread::scope(|threads| {
            threads.spawn(move || decode_ahead(raw, member, compression, &pieces));
            let skip = scanner.position(); // the head, which the split read
            let (mut filled, mut at, mut ended) = (0usize, 0u64, false); // `buf[..filled]` ends at decoded `at`
            let mut cancel = CancelCheck::new();
            while !scanner.is_done() {
                if cancel.due() && self.stopped(id)? {
                    tracing::info!(job = id, chunk = range.index, "job stopped; abandoning the chunk");
                    return Ok(Outcome::Stopped);
                }
                if !ended {
                    match decoded.recv() {
                        Ok(Ok(Some(Piece::Member { at: m, decoded: d }))) => {
                            if m >= range.end && next.is_none() {
                                next = Some(m);
                                scanner.end_at(d + 1);
                            }
                        }
                        Ok(Ok(Some(Piece::Bytes(block)))) => {
                            let from = skip.saturating_sub(at).min(block.len() as u64) as usize;
                            at += block.len() as u64;
                            let block = &block[from..];
                            if buf.len() < filled + block.len() {
                                buf.resize(filled + block.len(), 0);
                            }
                            buf[filled..filled + block.len()].copy_from_slice(block);
                            filled += block.len();
                        }
                        Ok(Ok(None)) => {
                            ended = true;
                            next.get_or_insert(size);
                            if at == 0 && !first {
                                // Not a byte from the member on (the rest are empty members).
                                return Ok(Outcome::Empty);
                            }
                            scanner.end_of_input(at.max(skip));
                        }
                        Ok(Err(e)) => return undecodable(e),
                        Err(_) => return Err(PipelineError::Invalid("the decoder stopped before the end".into())),
                    }
                }
                let consumed = scanner.feed(&buf[..filled]);
                buf.copy_within(consumed..filled, 0);
                filled -= consumed;
                if ended && !scanner.is_done() && consumed == 0 {
                    return Err(PipelineError::Invalid("stream scan stalled at the end of the input".into()));
                }
            }
            // (Dropping the receiver stops the decoder if it is still ahead.)
            drop(decoded);
            Ok(Outcome::Scanned)
        })?;
        match outcome {
            Outcome::Stopped => return Ok(None),
            Outcome::Empty | Outcome::Undecodable => {
                let undecodable = undecodable_at.take();
                let members = Some(MemberSpan { first: member, next: size, undecodable });
                return Ok(Some(empty(compiled, range.index, members, ScanBuffers::default(), buf)));
            }
            Outcome::Scanned => {}
        }
        let (mut report, run, scan_buffers) = scanner.finish_with_buffers();
        let next = next.ok_or_else(|| PipelineError::Invalid("a chunk ended before its range".into()))?;
        report.members = Some(MemberSpan { first: member, next, undecodable: None });
        Ok(Some((report, run, scan_buffers, buf)))
    }
}

/// How a chunk's stream scan ended.
enum Outcome {
    /// Every row read.
    Scanned,
    /// No decoded byte from the chunk's first member on.
    Empty,
    /// The job stopped (or failed on an undecodable stream).
    Stopped,
    /// The stream did not decode from the chunk's first member on.
    Undecodable,
}

/// The scan of a chunk without rows: no member starts in its range, or
/// none from its first one on holds a byte.
fn empty(compiled: &Compiled, index: u32, members: Option<MemberSpan>, buffers: ScanBuffers, buf: Vec<u8>) -> Scanned {
    let range = ChunkRange { index, start: 0, end: 0 };
    let mut scanner = ChunkScanner::with_buffers(compiled, range, 0, true, StartState::Guess, buffers);
    scanner.feed(&[]);
    let (mut report, run, buffers) = scanner.finish_with_buffers();
    report.members = members;
    (report, run, buffers, buf)
}

/// Walks the members from compressed byte `base` into `pieces` until the
/// input ends (`None`), decoding fails, or the scanner hangs up.
fn decode_ahead(
    raw: Box<dyn Read + Send>,
    base: u64,
    compression: Compression,
    pieces: &SyncSender<std::io::Result<Option<Piece>>>,
) {
    match walk_members(raw, base, compression, READ_BUF, |p| pieces.send(Ok(Some(p))).is_ok()) {
        Ok(()) => {
            let _ = pieces.send(Ok(None));
        }
        Err(e) => {
            let _ = pieces.send(Err(e));
        }
    }
}
