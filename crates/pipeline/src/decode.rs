//! A compressed input read as the bytes it holds: gzip (every member, as
//! `cat a.gz b.gz`, `pigz` and `bgzip` write them) and Zstandard (every
//! frame, skippable frames skipped). A stream that is corrupt or ends too
//! early fails the read with a [`DecodeError`] naming the compressed byte
//! where decoding stopped, never with fewer rows.

use std::io::{self, BufRead, Read};

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
    let counted = Counted { inner: io::BufReader::with_capacity(COMPRESSED_BUF, raw), consumed: 0, eof: false };
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
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.consumed += n as u64;
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
        self.consumed += amt as u64;
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
            Err(e) => {
                let counted = self.inner.counted();
                let truncated = e.kind() == io::ErrorKind::UnexpectedEof || counted.eof;
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    DecodeError {
                        compression: self.compression,
                        what: if truncated { "truncated" } else { "corrupt" },
                        at: counted.consumed,
                        detail: format!("{e} (after {} decoded bytes)", self.produced),
                    },
                ))
            }
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
