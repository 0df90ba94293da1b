//! Merging many partials on several cores.
//!
//! A reducer's k-way merge is one thread; with a dozen or more partials it
//! is the longest part of its work. [`fan_in`] splits the
//! partials into groups, merges each group on its own thread into a
//! *streamed run* (the partial encoding, handed over in blocks through a
//! bounded channel) and gives back one source per group for the final
//! merge. Merging is exact and associative, so the result is the same
//! whatever the grouping; groups only change where the work happens.

use std::io::{self, Read};
use std::sync::mpsc::{sync_channel, Receiver};
use std::thread::{Scope, ScopedJoinHandle};

use fanfold_engine::partial::RunWriter;
use fanfold_engine::{Error as EngineError, Merger};

use crate::sources::Bounds;

/// Bytes a group merger buffers before handing them over.
const PIPE_BLOCK: usize = 256 * 1024;

/// Partials per group below which fanning in does not pay.
const MIN_GROUP: usize = 2;

enum Msg {
    Bytes(Vec<u8>),
    End,
    Failed,
}

/// The reading end of a group merger's output.
struct Pipe {
    rx: Receiver<Msg>,
    cur: Vec<u8>,
    pos: usize,
    ended: bool,
}

impl Read for Pipe {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Msg::Bytes(b)) => {
                    self.cur = b;
                    self.pos = 0;
                }
                Ok(Msg::End) => self.ended = true,
                // A merger that stopped without `End` failed or panicked:
                // never let its output look complete.
                Ok(Msg::Failed) | Err(_) => return Err(io::Error::other("a parallel merge of partials failed")),
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

pub use crate::sources::Source;
pub type GroupHandle<'scope> = ScopedJoinHandle<'scope, Result<(), EngineError>>;

/// Splits `sources` into up to `ways` groups merged on threads of `scope`.
/// Returns the sources for the final merge and the group mergers, whose
/// errors take precedence over the final merge's (which only sees "failed").
/// With fewer than two groups' worth of sources, returns them unchanged.
pub fn fan_in<'scope>(
    scope: &'scope Scope<'scope, '_>,
    sources: Vec<Source>,
    names: &[String],
    bounds: &Bounds,
    ways: usize,
) -> (Vec<Source>, Vec<GroupHandle<'scope>>) {
    let ways = ways.min(sources.len() / MIN_GROUP);
    if ways < 2 {
        return (sources, Vec::new());
    }
    let per = sources.len().div_ceil(ways);
    let mut groups: Vec<Vec<Source>> = Vec::new();
    for s in sources {
        match groups.last_mut() {
            Some(g) if g.len() < per => g.push(s),
            _ => groups.push(vec![s]),
        }
    }
    let mut out: Vec<Source> = Vec::with_capacity(groups.len());
    let mut handles = Vec::with_capacity(groups.len());
    for group in groups {
        let (tx, rx) = sync_channel::<Msg>(2);
        let names = names.to_vec();
        let bounds = bounds.clone();
        handles.push(scope.spawn(move || {
            let result = merge_group(group, names, &bounds, |bytes| tx.send(Msg::Bytes(bytes)).is_ok());
            let _ = tx.send(if result.is_ok() { Msg::End } else { Msg::Failed });
            result
        }));
        out.push(Box::new(Pipe { rx, cur: Vec::new(), pos: 0, ended: false }));
    }
    (out, handles)
}

/// Merges `group` into a streamed run handed to `send` in blocks; stops
/// quietly when `send` reports that the reader is gone.
pub fn merge_group(
    group: Vec<Source>,
    names: Vec<String>,
    bounds: &Bounds,
    mut send: impl FnMut(Vec<u8>) -> bool,
) -> Result<(), EngineError> {
    let mut merger =
        Merger::bounded(group, names, bounds.lo.as_deref(), bounds.hi.as_deref()).map_err(EngineError::Partial)?;
    let mut writer = RunWriter::streamed(merger.ops());
    while let Some((key, accs, texts)) = merger.next_group()? {
        writer.push(key, accs, texts);
        if writer.pending() >= PIPE_BLOCK && !send(writer.take()) {
            return Ok(());
        }
    }
    send(writer.finish());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fanfold_engine::{plan_chunks, read_head, scan_slice, RowFormatter, Spec, StartState};

    /// Partials of `csv` cut into `chunk`-byte ranges (default spec).
    fn partials(csv: &[u8], chunk: u64) -> Vec<Vec<u8>> {
        let spec = Spec::default();
        let head = read_head(csv, csv.len() as u64, &spec.csv).unwrap().unwrap();
        let compiled = head.compile(&spec).unwrap();
        plan_chunks(head.data_start, csv.len() as u64, chunk)
            .into_iter()
            .map(|r| scan_slice(&compiled, &head, r, csv, StartState::Guess).1)
            .collect()
    }

    fn merged(runs: &[Vec<u8>], ways: usize) -> Result<String, EngineError> {
        std::thread::scope(|scope| {
            let sources: Vec<Source> = runs.iter().map(|r| Box::new(io::Cursor::new(r.clone())) as Source).collect();
            let names = vec!["total".to_string()];
            let (sources, groups) = fan_in(scope, sources, &names, &Bounds::default(), ways);
            assert_eq!(groups.len(), if ways < 2 { 0 } else { ways.min(runs.len() / MIN_GROUP) });
            let out = (|| {
                let mut m = Merger::new(sources, names.clone()).map_err(EngineError::Partial)?;
                let mut fmt = RowFormatter::new(b',');
                let mut out = Vec::new();
                while let Some((k, a, t)) = m.next_group()? {
                    fmt.row(k, a, t, &mut out);
                }
                Ok(String::from_utf8(out).unwrap())
            })();
            for g in groups {
                g.join().unwrap()?;
            }
            out
        })
    }

    #[test]
    fn any_grouping_gives_the_single_merge() {
        let mut csv = String::from("Song,Date,Number of Plays\n");
        for i in 0..3000u64 {
            csv += &format!("s{},d{},{}\n", (i * 7919) % 101, i % 3, i);
        }
        let runs = partials(csv.as_bytes(), 300);
        assert!(runs.len() > 50);
        let want = merged(&runs, 1).unwrap();
        assert_eq!(want.lines().count(), 303);
        for ways in [2, 3, 5, 64] {
            assert_eq!(merged(&runs, ways).unwrap(), want, "{ways} ways");
        }
    }

    #[test]
    fn a_failed_group_fails_the_merge_with_its_own_error() {
        let big = "99999999999999999999999999999999999999";
        let csv = format!("Song,Date,Number of Plays\na,b,{big}\na,b,{big}\nc,d,1\nc,d,2\n");
        let runs = partials(csv.as_bytes(), 10);
        for ways in [1, 2, 3] {
            let e = merged(&runs, ways).unwrap_err();
            assert!(matches!(e, EngineError::SumOverflow { .. }), "{ways} ways: {e}");
        }
        // A partial cut short is an error, never a shorter result.
        let mut runs = partials(csv.as_bytes(), 10);
        let last = runs.iter().rposition(|r| r.len() > 30).unwrap();
        let n = runs[last].len();
        runs[last].truncate(n - 1);
        for ways in [1, 2, 3] {
            assert!(merged(&runs, ways).is_err(), "{ways} ways");
        }
    }
}
