//! A byte range of an object read with several ranged GETs in flight.
//!
//! One S3 GET stream seldom fills a Lambda function's network on its own;
//! a few concurrent ranged GETs of consecutive blocks do. [`ReadAhead`]
//! cuts `[from, to)` into blocks, fetches them on `streams` threads (block
//! `i` on thread `i % streams`, so each thread's blocks come in order) and
//! hands them out in order. Memory is bounded whatever the range:
//! at most `2 × streams + 1` blocks are held (one being fetched and one
//! waiting per thread, one being read). Every GET names the version the job
//! was planned on, so a replaced object fails the read with
//! [`StoreError::Changed`], which [`store_error`] recovers from the
//! `io::Error`.

use std::io::{self, Read};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

use crate::ports::{ObjectStore, StoreError};

pub struct ReadAhead {
    slots: Vec<Receiver<Result<Vec<u8>, StoreError>>>,
    next: usize,
    blocks: usize,
    cur: Vec<u8>,
    pos: usize,
}

impl ReadAhead {
    /// Starts fetching `[from, to)` of `key` at version `etag`.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        key: &str,
        etag: &str,
        (from, to): (u64, u64),
        streams: usize,
        block: u64,
    ) -> ReadAhead {
        let block = block.max(1);
        let blocks = (to.saturating_sub(from)).div_ceil(block) as usize;
        let streams = streams.clamp(1, blocks.max(1));
        let mut slots = Vec::with_capacity(streams);
        for t in 0..streams {
            let (tx, rx) = sync_channel(1);
            let (store, key, etag) = (store.clone(), key.to_string(), etag.to_string());
            // Detached: when the reader is dropped early (the scan ended
            // before the range did), each thread stops after its current GET.
            std::thread::spawn(move || {
                for i in (t..blocks).step_by(streams) {
                    let lo = from + i as u64 * block;
                    let hi = (lo + block).min(to);
                    let got = store.get_range_of(&key, &etag, lo, Some(hi)).and_then(|mut r| {
                        let mut buf = Vec::with_capacity((hi - lo) as usize);
                        r.read_to_end(&mut buf)?;
                        if buf.len() as u64 != hi - lo {
                            let why = format!("{key}: bytes {lo}..{hi} read {} bytes", buf.len());
                            return Err(StoreError::Io(io::Error::new(io::ErrorKind::UnexpectedEof, why)));
                        }
                        Ok(buf)
                    });
                    let failed = got.is_err();
                    if tx.send(got).is_err() || failed {
                        return;
                    }
                }
            });
            slots.push(rx);
        }
        ReadAhead { slots, next: 0, blocks, cur: Vec::new(), pos: 0 }
    }
}

impl Read for ReadAhead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if self.next == self.blocks {
                return Ok(0);
            }
            let slot = &self.slots[self.next % self.slots.len()];
            match slot.recv() {
                Ok(Ok(bytes)) => {
                    self.cur = bytes;
                    self.pos = 0;
                    self.next += 1;
                }
                Ok(Err(e)) => return Err(io::Error::other(e)),
                Err(_) => return Err(io::Error::other("a read-ahead thread stopped without its block")),
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The store's own error when a read failed with one (a replaced object
/// stays [`StoreError::Changed`], which is not retried), else `Io`.
pub fn store_error(e: io::Error) -> StoreError {
    e.downcast::<StoreError>().unwrap_or_else(StoreError::Io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::{ObjectMeta, ObjectWriter};
    use std::sync::Mutex;

    /// An in-memory object that counts GETs and can change version.
    struct Obj {
        bytes: Vec<u8>,
        etag: Mutex<String>,
        gets: Mutex<Vec<(u64, u64)>>,
    }

    impl ObjectStore for Obj {
        fn head(&self, _: &str) -> Result<ObjectMeta, StoreError> {
            unimplemented!("not read ahead")
        }
        fn get_range(&self, _: &str, start: u64, end: Option<u64>) -> Result<Box<dyn Read + Send>, StoreError> {
            let end = end.unwrap_or(self.bytes.len() as u64).min(self.bytes.len() as u64);
            self.gets.lock().unwrap().push((start, end));
            Ok(Box::new(io::Cursor::new(self.bytes[start as usize..end as usize].to_vec())))
        }
        fn get_range_of(
            &self,
            key: &str,
            etag: &str,
            start: u64,
            end: Option<u64>,
        ) -> Result<Box<dyn Read + Send>, StoreError> {
            if *self.etag.lock().unwrap() != etag {
                return Err(StoreError::Changed { key: key.into(), etag: etag.into() });
            }
            self.get_range(key, start, end)
        }
        fn put(&self, _: &str, _: &[u8]) -> Result<(), StoreError> {
            unimplemented!("not read ahead")
        }
        fn put_stream(&self, _: &str) -> Result<Box<dyn ObjectWriter>, StoreError> {
            unimplemented!("not read ahead")
        }
        fn list(&self, _: &str) -> Result<Vec<ObjectMeta>, StoreError> {
            unimplemented!("not read ahead")
        }
        fn delete(&self, _: &str) -> Result<(), StoreError> {
            unimplemented!("not read ahead")
        }
        fn uri(&self, key: &str) -> String {
            key.into()
        }
    }

    fn obj(n: usize) -> Arc<Obj> {
        let bytes = (0..n).map(|i| (i * 7 % 251) as u8).collect();
        Arc::new(Obj { bytes, etag: Mutex::new("v1".into()), gets: Mutex::default() })
    }

    #[test]
    fn blocks_come_back_in_order_with_every_stream_count() {
        let o = obj(100_003);
        for streams in [1, 2, 3, 8, 64] {
            for (from, to, block) in [(0, 100_003, 4096), (17, 99_000, 1000), (5, 6, 1000), (9, 9, 10)] {
                o.gets.lock().unwrap().clear();
                let mut got = Vec::new();
                ReadAhead::new(o.clone(), "k", "v1", (from, to), streams, block).read_to_end(&mut got).unwrap();
                assert!(got == o.bytes[from as usize..to as usize], "{streams} streams {from}..{to}");
                let mut gets = o.gets.lock().unwrap().clone();
                gets.sort();
                let want: Vec<(u64, u64)> =
                    (from..to).step_by(block as usize).map(|lo| (lo, (lo + block).min(to))).collect();
                assert_eq!(gets, want, "one GET per block, none past the range");
            }
        }
    }

    #[test]
    fn a_replaced_object_is_changed_not_io() {
        let o = obj(50_000);
        let mut r = ReadAhead::new(o.clone(), "k", "v1", (0, 50_000), 2, 1000);
        let mut buf = [0u8; 1000];
        r.read_exact(&mut buf).unwrap();
        *o.etag.lock().unwrap() = "v2".into();
        let e = loop {
            match r.read(&mut buf) {
                Ok(0) => panic!("a changed object must not read to its end"),
                Ok(_) => continue,
                Err(e) => break store_error(e),
            }
        };
        assert!(matches!(e, StoreError::Changed { .. }), "{e}");
        assert!(!e.retryable());
        let plain = store_error(io::Error::new(io::ErrorKind::ConnectionReset, "reset"));
        assert!(matches!(plain, StoreError::Io(_)) && plain.retryable());
    }

    #[test]
    fn a_short_block_is_an_error_not_a_shorter_range() {
        let o = obj(1000);
        let mut got = Vec::new();
        let e = ReadAhead::new(o, "k", "v1", (0, 5000), 3, 700).read_to_end(&mut got).unwrap_err();
        assert!(e.to_string().contains("read"), "{e}");
    }
}
