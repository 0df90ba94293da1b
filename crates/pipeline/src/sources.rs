//! A reducer's view of one partial: only the bytes of its key range.
//!
//! An inline partial is sliced in memory. A spilled one small enough is
//! read whole; of a larger one only the slice is read: one ranged read when
//! the plan's slice table says where it is (`steps::slices`), else two, its
//! index (the tail of the object, from `index_at`) and then the slice that
//! the index names.
//! Opening is lazy (on the first read, or in [`open_all`], which opens a
//! batch with several requests in flight), so a reducer that lines up many
//! sources holds no idle connection or file open until it merges them.

use std::io::{self, Chain, Cursor, Read};
use std::sync::Arc;

use fanfold_engine::partial::{ops_of, slice_header_at};
use fanfold_engine::{AggOp, RunIndex};

use crate::job::{ChunkRecord, PartialRef};
use crate::ports::ObjectStore;
pub use crate::steps::SliceAt;

pub type Source = Box<dyn Read + Send>;

/// The key range `[lo, hi)` of a reducer.
#[derive(Clone, Debug, Default)]
pub struct Bounds {
    pub lo: Option<Vec<u8>>,
    pub hi: Option<Vec<u8>>,
}

/// Reads the slice of `record`'s partial that may hold keys in `bounds`,
/// as a run (a header, then the slice's entries). The merger's bounds drop
/// the few entries outside the range. `base` is added to the slice's
/// `first`/`last` positions (a dataset's file after others; else 0). A
/// spilled partial up to `read_whole` bytes is read whole; of a larger one
/// the slice `at`, when known, else the one its index names.
pub struct SliceOf<'a> {
    /// The partial's chunk record.
    pub record: &'a ChunkRecord,
    /// The job's aggregates.
    pub ops: Vec<AggOp>,
    /// The reducer's key range.
    pub bounds: Bounds,
    /// Added to `first`/`last` positions.
    pub base: u64,
    /// Spilled partials up to this size are read whole.
    pub read_whole: u64,
    /// Where the slice is, from the plan's slice table.
    pub at: Option<SliceAt>,
}

/// See [`SliceOf`].
pub fn slice_source(store: Arc<dyn ObjectStore>, s: SliceOf) -> Slice {
    let SliceOf { record, ops, bounds, base, read_whole, at } = s;
    let index_at = record.report.index_at;
    let len = record.report.run_bytes;
    match &record.partial {
        PartialRef::Inline(run) => match slice_in_memory(run, index_at, &bounds, base) {
            Ok(bytes) => Slice { open: None, src: Some(Box::new(Cursor::new(bytes))) },
            Err(e) => Slice { open: None, src: Some(Box::new(Failed(Some(e)))) },
        },
        PartialRef::Object(key) => {
            let opener = Opener { store, key: key.clone(), index_at, len, ops, bounds, base, read_whole, at };
            Slice { open: Some(Box::new(opener)), src: None }
        }
    }
}

/// Opens `slices` with up to `in_flight` requests at a time (on Lambda each
/// open is one or two GETs of tens of milliseconds). An open that fails
/// fails the slice's first read.
pub fn open_all(slices: &mut [Slice], in_flight: usize) {
    let per = slices.len().div_ceil(in_flight.max(1)).max(1);
    std::thread::scope(|s| {
        for group in slices.chunks_mut(per) {
            s.spawn(move || group.iter_mut().for_each(Slice::open));
        }
    });
}

fn slice_in_memory(run: &[u8], index_at: u64, b: &Bounds, base: u64) -> io::Result<Vec<u8>> {
    let tail = run.get(index_at as usize..).ok_or_else(|| corrupt("index past the end"))?;
    let idx = RunIndex::parse(tail, index_at)?;
    let (s, e) = idx.slice_of(b.lo.as_deref(), b.hi.as_deref());
    let mut out = slice_header_at(&ops_of(run)?, base);
    out.extend_from_slice(run.get(s as usize..e as usize).ok_or_else(|| corrupt("slice past the end"))?);
    Ok(out)
}

fn corrupt(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("corrupt partial: {what}"))
}

struct Opener {
    store: Arc<dyn ObjectStore>,
    key: String,
    index_at: u64,
    len: u64,
    ops: Vec<AggOp>,
    bounds: Bounds,
    base: u64,
    read_whole: u64,
    at: Option<SliceAt>,
}

impl Opener {
    fn open(self) -> io::Result<Source> {
        let err = |e: crate::ports::StoreError| io::Error::other(format!("{}: {e}", self.key));
        if self.len <= self.read_whole {
            let mut run = Vec::with_capacity(self.len as usize);
            self.store.get_range(&self.key, 0, None).map_err(err)?.read_to_end(&mut run)?;
            return Ok(Box::new(Cursor::new(slice_in_memory(&run, self.index_at, &self.bounds, self.base)?)));
        }
        let (s, e) = match self.at {
            Some(at) => (at.start, at.end),
            None => {
                let mut tail = Vec::new();
                self.store.get_range(&self.key, self.index_at, Some(self.len)).map_err(err)?.read_to_end(&mut tail)?;
                let idx = RunIndex::parse(&tail, self.index_at)?;
                idx.slice_of(self.bounds.lo.as_deref(), self.bounds.hi.as_deref())
            }
        };
        let header = Cursor::new(slice_header_at(&self.ops, self.base));
        if s == e {
            return Ok(Box::new(header));
        }
        let body = self.store.get_range(&self.key, s, Some(e)).map_err(err)?;
        let chained: Chain<Cursor<Vec<u8>>, Source> = header.chain(body);
        Ok(Box::new(chained))
    }
}

/// One partial's slice, opened on its first read (or by [`open_all`]).
pub struct Slice {
    open: Option<Box<Opener>>,
    src: Option<Source>,
}

impl Slice {
    fn open(&mut self) {
        if self.src.is_none() {
            self.src = Some(match self.open.take() {
                Some(o) => o.open().unwrap_or_else(|e| Box::new(Failed(Some(e)))),
                None => Box::new(Failed(None)),
            });
        }
    }
}

impl Read for Slice {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.open();
        self.src.as_mut().expect("opened").read(buf)
    }
}

struct Failed(Option<io::Error>);

impl Read for Failed {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(self.0.take().unwrap_or_else(|| io::Error::other("a partial that failed to open")))
    }
}
