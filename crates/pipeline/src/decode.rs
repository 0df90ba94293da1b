//! A compressed input read as the bytes it holds: gzip (every member, as
//! `cat a.gz b.gz`, `pigz` and `bgzip` write them) and Zstandard (every
//! frame, skippable frames skipped). A stream that is corrupt or ends too
//! early fails the read with a [`DecodeError`] naming the compressed byte
//! where decoding stopped, never with fewer rows.

use std::io::{self, BufRead, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use fanfold_engine::Compression;

/// The decoder's buffer over the compressed bytes.
const COMPRESSED_BUF: usize = 256 * 1024;

/// A compressed stream that cannot be decoded.
#[derive(Debug, thiserror::Error)]
#[error("the {compression} stream is {what} at compressed byte {at}: {detail}")]
pub struct DecodeError {
    /// gzip or zstd.
    pub compression: &'static str,
    /// "corrupt" or "truncated".
    pub what: &'static str,
    /// Compressed bytes the decoder had consumed when it failed.
    pub at: u64,
    /// What the decoder said.
    pub detail: String,
}

/// `raw` (the compressed object from its first byte) decoded. Errors of
/// `raw` itself pass through unchanged; decoding errors are
/// `io::Error`s of kind `InvalidData` holding a [`DecodeError`].
pub fn decoded(raw: Box<dyn Read + Send>, compression: Compression) -> io::Result<Box<dyn Read + Send>> {
    decoded_counting(raw, compression, None)
}

/// Like [`decoded`], keeping `consumed` at the count of compressed bytes
/// the decoder has taken (every decoded byte so far came from before it).
pub fn decoded_counting(
    raw: Box<dyn Read + Send>,
    compression: Compression,
    consumed: Option<Arc<AtomicU64>>,
) -> io::Result<Box<dyn Read + Send>> {
    let counted =
        Counted { inner: io::BufReader::with_capacity(COMPRESSED_BUF, raw), consumed: 0, eof: false, shared: consumed };
    Ok(match compression {
        Compression::None => Box::new(counted),
        Compression::Gzip => {
            Box::new(Decoder { inner: flate2::bufread::MultiGzDecoder::new(counted), compression: "gzip", produced: 0 })
        }
        Compression::Zstd => Box::new(Decoder {
            inner: zstd::stream::read::Decoder::with_buffer(counted)?,
            compression: "zstd",
            produced: 0,
        }),
    })
}

/// If `e` is a decoding error, it.
pub fn decode_error(e: &io::Error) -> Option<&DecodeError> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<DecodeError>())
}

/// Counts the compressed bytes the decoder consumes.
struct Counted<R> {
    inner: io::BufReader<R>,
    consumed: u64,
    /// The compressed input has ended.
    eof: bool,
    /// `consumed`, for a reader outside.
    shared: Option<Arc<AtomicU64>>,
}

impl<R> Counted<R> {
    fn add(&mut self, n: usize) {
        self.consumed += n as u64;
        if let Some(s) = &self.shared {
            s.store(self.consumed, Ordering::Relaxed);
        }
    }
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.add(n);
        self.eof |= n == 0 && !buf.is_empty();
        Ok(n)
    }
}

impl<R: Read> BufRead for Counted<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        let b = self.inner.fill_buf()?;
        self.eof |= b.is_empty();
        Ok(b)
    }
    fn consume(&mut self, amt: usize) {
        self.add(amt);
        self.inner.consume(amt);
    }
}

/// What the decoders read from.
trait Source {
    fn counted(&self) -> &Counted<Box<dyn Read + Send>>;
}

impl Source for flate2::bufread::MultiGzDecoder<Counted<Box<dyn Read + Send>>> {
    fn counted(&self) -> &Counted<Box<dyn Read + Send>> {
        self.get_ref()
    }
}

impl Source for zstd::stream::read::Decoder<'static, Counted<Box<dyn Read + Send>>> {
    fn counted(&self) -> &Counted<Box<dyn Read + Send>> {
        self.get_ref()
    }
}

struct Decoder<D> {
    inner: D,
    compression: &'static str,
    produced: u64,
}

impl<D: Read + Source> Read for Decoder<D> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.produced += n as u64;
                Ok(n)
            }
            // The compressed object's own read failed (a store error): as is.
            Err(e) if e.get_ref().is_some_and(|i| i.is::<crate::ports::StoreError>()) => Err(e),
            Err(e) => Err(undecodable(e, self.inner.counted(), 0, self.compression, self.produced)),
        }
    }
}

/// `e`, which a decoder reading `counted` (from compressed byte `base`
/// on) returned after `produced` decoded bytes, as a [`DecodeError`].
fn undecodable<R>(
    e: io::Error,
    counted: &Counted<R>,
    base: u64,
    compression: &'static str,
    produced: u64,
) -> io::Error {
    let truncated = e.kind() == io::ErrorKind::UnexpectedEof || counted.eof;
    io::Error::new(
        io::ErrorKind::InvalidData,
        DecodeError {
            compression,
            what: if truncated { "truncated" } else { "corrupt" },
            at: base + counted.consumed,
            detail: format!("{e} (after {produced} decoded bytes)"),
        },
    )
}

/// What [`walk_members`] hands out, in stream order.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    /// A member (frame) starts at compressed byte `at`, after `decoded`
    /// bytes decoded by the walk.
    Member {
        /// Its first compressed byte.
        at: u64,
        /// Decoded bytes of the walk before it.
        decoded: u64,
    },
    /// Decoded bytes of the current member (at most the block size).
    Bytes(Vec<u8>),
}

/// Decodes `raw` (the compressed object from byte `base`, where a member
/// starts) member by member, handing each start and each block of at most
/// `block` decoded bytes to `each`, until the input ends, `each` returns
/// `false`, or decoding fails (an `InvalidData` [`DecodeError`]; errors of
/// `raw` itself pass through).
pub fn walk_members(
    raw: Box<dyn Read + Send>,
    base: u64,
    compression: Compression,
    block: usize,
    mut each: impl FnMut(Piece) -> bool,
) -> io::Result<()> {
    let mut counted =
        Counted { inner: io::BufReader::with_capacity(COMPRESSED_BUF, raw), consumed: 0, eof: false, shared: None };
    let mut produced = 0u64;
    let name = compression.name();
    loop {
        if counted.fill_buf()?.is_empty() {
            return Ok(());
        }
        if !each(Piece::Member { at: base + counted.consumed, decoded: produced }) {
            return Ok(());
        }
        let pumped = {
            let mut member: Box<dyn Read + '_> = match compression {
                Compression::Gzip => Box::new(flate2::bufread::GzDecoder::new(&mut counted)),
                Compression::Zstd => match zstd::stream::read::Decoder::with_buffer(&mut counted) {
                    Ok(d) => Box::new(d.single_frame()),
                    Err(e) => return Err(e),
                },
                Compression::None => Box::new(&mut counted),
            };
            pump(&mut *member, block, &mut produced, &mut each)
        };
        match pumped {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            Err(e) if e.get_ref().is_some_and(|i| i.is::<crate::ports::StoreError>()) => return Err(e),
            Err(e) => return Err(undecodable(e, &counted, base, name, produced)),
        }
    }
}

/// Reads one member to its end in blocks; `false` when `each` said stop.
fn pump(
    member: &mut dyn Read,
    block: usize,
    produced: &mut u64,
    each: &mut impl FnMut(Piece) -> bool,
) -> io::Result<bool> {
    loop {
        let mut buf = vec![0u8; block];
        let mut n = 0;
        while n < buf.len() {
            match member.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if n == 0 {
            return Ok(true);
        }
        buf.truncate(n);
        *produced += n as u64;
        if !each(Piece::Bytes(buf)) {
            return Ok(false);
        }
    }
}

/// The byte ranges `reads` (sorted by start; they may overlap) of a stream,
/// read in one pass: what a compressed input's key sample needs.
pub fn read_ranges(stream: &mut dyn Read, reads: &[(u64, u64)]) -> io::Result<Vec<Vec<u8>>> {
    let mut out: Vec<Vec<u8>> = Vec::with_capacity(reads.len());
    let mut pos = 0u64; // bytes of the stream read so far
    for &(from, to) in reads {
        let mut bytes = Vec::with_capacity(to.saturating_sub(from) as usize);
        if from < pos {
            // Overlaps what the previous range read: take it from there.
            let (prev_from, prev) = out.last().map(|b| (pos - b.len() as u64, b)).expect("a range before");
            let at = from.saturating_sub(prev_from) as usize;
            let upto = (to.min(pos) - prev_from) as usize;
            bytes.extend_from_slice(&prev[at.min(prev.len())..upto.min(prev.len())]);
        } else {
            pos += io::copy(&mut stream.take(from - pos), &mut io::sink())?;
        }
        if to > pos && pos >= from {
            let before = bytes.len();
            stream.take(to - pos).read_to_end(&mut bytes)?;
            pos += (bytes.len() - before) as u64;
        }
        out.push(bytes);
    }
    Ok(out)
}
