//! A reducer: one key range of every partial, merged into that range's parts.
//!
//! It reads its slice of each chunk's partial ([`crate::sources`]), a page
//! of chunk records at a time. With at most K = `merge_fan_in` chunks it
//! merges them at once; with more, every K sources are merged into an
//! intermediate run (a *spill*), K spills of one level into one of the
//! next, and the final merge reads what is left (at most K). So at most 2K
//! streams are open and the memory is O(K) whatever the chunk count.
//! Spills are files on the reducer's local disk (`Config::spill_dir`:
//! Lambda's `/tmp`), in a directory of this invocation's own that is
//! removed when it returns: an extra merge level costs disk and CPU, never
//! the function's network, which the slices and the parts already fill. The final merge runs on several
//! threads (`fan_in`) and formats rows while this thread cuts and writes
//! the capped parts `part-RRRRR-SSSSS.csv`. Names are deterministic, so a
//! reducer run again (it died, or its task came twice) writes the same
//! parts over the same keys.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use fanfold_engine::{Error as EngineError, Merger, PartInfo, PartSink, PartWriter, RowFormatter, TopGroups};

use super::slices::SliceColumn;
use super::{CancelCheck, Pipeline, PAGE};
use crate::config::{now_ms, FaultPoints, PipelineError};
use crate::fan_in::{fan_in, merge_group};
use crate::job::{InputKind, JobError, OutputPart, RangeResult, Stage, Status};
use crate::ports::{ObjectStore, ObjectWriter, StoreError};
use crate::sources::{open_all, slice_source, Bounds, Slice, SliceOf, Source};

/// Groups kept for the summary's `top_groups`.
pub(super) const TOP_GROUPS: usize = 10;
/// Bytes of formatted rows handed from the merging thread to the writer at a time.
const ROW_BLOCK: usize = 1 << 20;

/// Partial slices a reducer opens at once.
const OPENS_IN_FLIGHT: usize = 16;

/// Opens a batch of slices in parallel and hands them to a merge.
fn opened(mut slices: Vec<Slice>) -> Vec<Source> {
    open_all(&mut slices, OPENS_IN_FLIGHT);
    slices.into_iter().map(|s| Box::new(s) as Source).collect()
}

/// Formatted result rows in merge order: `ends[i]` is where row `i` ends.
#[derive(Default)]
struct RowBlock {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Pipeline {
    /// Merges key range `range` (see the module docs). The call that
    /// completes the job's last range commits it.
    pub fn reduce(&self, id: &str, range: u32, owner: &str) -> Result<(), PipelineError> {
        let started = std::time::Instant::now();
        let job = self.job(id)?;
        if job.status != Status::Merging || range >= job.range_count {
            return Ok(());
        }
        let now = now_ms();
        if !self.jobs.take_work(id, Stage::Reduce, range, owner, now, now + self.config.lease_ms)? {
            return Ok(()); // done, or another reducer holds it
        }
        let head = job.head.clone().ok_or_else(|| PipelineError::Invalid("merging a job without a head".into()))?;
        let compiled = head.compile(&Self::spec_of(&job)?)?;
        let names: Vec<String> = compiled.aggs.iter().map(|a| a.name.clone()).collect();
        let ops: Vec<_> = compiled.aggs.iter().map(|a| a.op).collect();
        let plan = self.range_plan(&job)?;
        let (lo, hi) = plan.bounds(range as usize);
        let bounds = Bounds { lo: lo.map(<[u8]>::to_vec), hi: hi.map(<[u8]>::to_vec) };

        // The sources, merged K at a time when there are more than K. Up to
        // K² chunks, only as many groups of K are merged ahead as leave at
        // most K sources for the final merge; beyond that, every source is.
        let k = self.config.merge_fan_in.max(2);
        let dataset = matches!(job.source.kind, InputKind::Dataset { .. });
        let n = if dataset {
            let totals: crate::config::ScanTotals =
                serde_json::from_slice(&self.read_object(&self.layout.scan_totals(id))?)
                    .map_err(|e| PipelineError::Invalid(format!("scan totals: {e}")))?;
            totals.chunks as usize
        } else {
            job.chunk_count as usize
        };
        let ahead = match n {
            n if n <= k => 0,
            n if n <= k * k => (n - k).div_ceil(k - 1) * k,
            n => n,
        };
        let mut seen = 0usize;
        let mut spills = Spills::new(&self.config.spill_dir)?;
        let mut pending: Vec<Slice> = Vec::new();
        // A dataset's partials are its files' scans', file by file.
        // File i's `first`/`last` positions count from the end of file i-1.
        // (A dataset's kept scans may be in a store of their own.)
        let store = if dataset { self.kept.clone() } else { self.output.clone() };
        // A file's job has slice tables (a dataset's kept scans do not: they
        // were planned without this version's ranges).
        let mut column = (!dataset).then(|| SliceColumn::new(range, job.chunk_count));
        let mut each_chunk_job = |chunks_of: &str, base: u64| -> Result<u32, PipelineError> {
            let mut after = None;
            let mut records = 0u32;
            loop {
                let page = self.jobs.chunk_page(chunks_of, after, PAGE)?;
                let Some(last) = page.last() else { break };
                after = Some(last.report.index);
                records += page.len() as u32;
                for rec in &page {
                    let at = match column.as_mut() {
                        Some(c) => c.at(self, id, rec)?,
                        None => None,
                    };
                    let read_whole = self.config.read_whole;
                    let of = SliceOf { record: rec, ops: ops.clone(), bounds: bounds.clone(), base, read_whole, at };
                    pending.push(slice_source(store.clone(), of));
                    seen += 1;
                    if pending.len() == k && seen <= ahead {
                        let group = opened(std::mem::take(&mut pending));
                        self.spill(&mut spills, 0, group, &names, &bounds, k)?;
                    }
                }
            }
            Ok(records)
        };
        if dataset {
            let mut base = 0u64;
            self.each_file(&job, |f| {
                // A scan whose records are gone would merge as an empty file.
                let want = self.job(&f.scan)?.chunk_count;
                let got = each_chunk_job(&f.scan, base)?;
                if got != want {
                    return Err(PipelineError::Invalid(format!(
                        "{}: its kept scan has {got} of its {want} chunk records",
                        f.key
                    )));
                }
                let data = self.scan_totals(&f.scan)?.data_bytes;
                base = base.saturating_add(data.max(f.size)).saturating_add(1);
                Ok(())
            })?;
        } else {
            each_chunk_job(id, 0)?;
        }
        let sources: Vec<Source> = if spills.made == 0 {
            opened(pending)
        } else {
            let mut keys: Vec<PathBuf> = spills.levels.iter().flatten().cloned().collect();
            if keys.len() + pending.len() > k {
                if !pending.is_empty() {
                    let key = spills.next_key(0);
                    write_spill(&key, opened(std::mem::take(&mut pending)), &names, &bounds)?;
                    keys.push(key);
                }
                while keys.len() > k {
                    let merged: Vec<PathBuf> = keys.drain(..k).collect();
                    let key = spills.next_key(usize::MAX);
                    write_spill(&key, merged.iter().map(|p| whole(p)).collect(), &names, &bounds)?;
                    remove(&merged)?;
                    keys.push(key);
                }
            }
            let mut sources: Vec<Source> = keys.iter().map(|key| whole(key)).collect();
            sources.extend(opened(pending));
            sources
        };

        let written = self.write_range(&job, range as usize, sources, &names, &bounds, &compiled);
        drop(spills); // its directory, and every spill left in it
        let result = match written {
            Ok(r) => r,
            Err(_) if self.stopped(id)? => {
                self.discard_results(id);
                return Ok(());
            }
            Err(e @ (EngineError::SumOverflow { .. } | EngineError::RowTooLarge { .. })) => {
                return self.fail(id, JobError::rejected(e.to_string()))
            }
            Err(e) => return Err(e.into()),
        };
        let bytes = serde_json::to_vec(&result).expect("range results serialize");
        self.output.put(&self.layout.range_result(id, range), &bytes)?;
        let done = self.jobs.work_done(id, Stage::Reduce, range, owner, now_ms())?;
        if done.is_some() {
            tracing::info!(
                target: crate::metrics::TARGET,
                step = "reduce",
                job = id,
                ranges = 1u64,
                groups = result.groups,
                rows = result.parts.iter().map(|p| p.rows).sum::<u64>(),
                output_bytes = result.parts.iter().map(|p| p.bytes).sum::<u64>(),
                seconds = crate::metrics::seconds(started),
            );
        }
        match done {
            Some(n) if n == job.range_count => self.commit(id, owner),
            Some(_) => Ok(()),
            None if self.stopped(id)? => {
                self.discard_results(id);
                Ok(())
            }
            None => Ok(()), // another reducer took the range over (our lease ran out); it writes the same parts
        }
    }

    /// Merges `group` into a spill of `level`, cascading up when a level fills.
    fn spill(
        &self,
        spills: &mut Spills,
        level: usize,
        group: Vec<Source>,
        names: &[String],
        bounds: &Bounds,
        k: usize,
    ) -> Result<(), PipelineError> {
        let key = spills.next_key(level);
        write_spill(&key, group, names, bounds)?;
        if spills.levels.len() <= level {
            spills.levels.resize(level + 1, Vec::new());
        }
        spills.levels[level].push(key);
        if spills.levels[level].len() == k {
            let keys = std::mem::take(&mut spills.levels[level]);
            let group: Vec<Source> = keys.iter().map(|key| whole(key)).collect();
            self.spill(spills, level + 1, group, names, bounds, k)?;
            remove(&keys)?;
        }
        Ok(())
    }

    /// The final merge of a range into its parts.
    fn write_range(
        &self,
        job: &crate::job::Job,
        range: usize,
        sources: Vec<Source>,
        names: &[String],
        bounds: &Bounds,
        compiled: &fanfold_engine::Compiled,
    ) -> Result<RangeResult, EngineError> {
        let id = job.id.as_str();
        // The job's ranges share the cores: with as many ranges as cores, each
        // reducer merges on one thread (a fan-in would only add the work of
        // re-encoding runs); with fewer, each fans in on its share of them.
        let threads = self.config.merge_threads.max(1);
        let ways = (threads / (job.range_count as usize).clamp(1, threads)).max(1);
        let mut fmt = RowFormatter::new(compiled.dialect.delimiter);
        let prefix = self.layout.data(id);
        let sink = StoreSink {
            store: self.output.as_ref(),
            prefix: &prefix,
            current: None,
            job: id,
            range,
            faults: self.faults.as_deref(),
        };
        let mut writer =
            PartWriter::for_range(sink, compiled.max_file_bytes, fmt.header(&compiled.output_header), range)?;
        let mut groups = 0u64;
        let mut cancel = CancelCheck::new();
        let top = std::thread::scope(|scope| {
            // Groups of sources merge on their own threads (when there are
            // enough); a third thread does the final merge and formats rows
            // into blocks; this one cuts parts and writes them.
            let (sources, group_mergers) = fan_in(scope, sources, names, bounds, ways);
            let (tx, rx) = std::sync::mpsc::sync_channel::<Result<RowBlock, EngineError>>(4);
            let names = names.to_vec();
            let merging = scope.spawn(move || {
                let mut top = TopGroups::new(TOP_GROUPS);
                let mut merger = match Merger::bounded(sources, names, bounds.lo.as_deref(), bounds.hi.as_deref()) {
                    Ok(m) => m,
                    Err(e) => {
                        let _ = tx.send(Err(EngineError::Partial(e)));
                        return (top, Vec::new());
                    }
                };
                let mut block = RowBlock::default();
                loop {
                    match merger.next_group() {
                        Ok(Some((key, accs, texts))) => {
                            top.offer(key, accs, texts);
                            fmt.row(key, accs, texts, &mut block.bytes);
                            block.ends.push(block.bytes.len());
                            if block.bytes.len() >= ROW_BLOCK && tx.send(Ok(std::mem::take(&mut block))).is_err() {
                                return (top, Vec::new()); // the writer stopped
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return (top, Vec::new());
                        }
                    }
                }
                let _ = tx.send(Ok(block));
                (top, fmt.kinds().to_vec())
            });
            let written = (|| {
                for msg in rx {
                    let block = msg?;
                    if cancel.due() && self.stopped(id).unwrap_or(false) {
                        return Err(EngineError::Output(std::io::Error::other("the job was cancelled")));
                    }
                    writer.push_rows(&block.bytes, &block.ends)?;
                    groups += block.ends.len() as u64;
                }
                Ok(())
            })();
            // Once the final merge is done (or gone), the group mergers end too.
            let (top, kinds) = merging.join().expect("the merging thread does not panic");
            for g in group_mergers {
                // A group merger's own error says more than the final merge's "failed".
                g.join().expect("a group merger does not panic")?;
            }
            written.map(|()| (top.finish(), kinds))
        })?;
        let (top, kinds) = top;
        let (parts, _) = writer.finish_parts()?;
        let parts = parts.iter().map(|p: &PartInfo| OutputPart::new(format!("{prefix}{}", p.name), p)).collect();
        Ok(RangeResult { parts, groups, top_groups: top, kinds })
    }
}

/// A reducer's spills, by level, in a directory of its own.
/// The directory is locked (an exclusive `flock` of its `lock` file, held
/// while the reducer runs and released by the kernel if it dies), so that
/// [`clear_stale_spills`] never removes a live reducer's spills: processes
/// may share a `/tmp` (the emulator runs functions as local processes).
struct Spills {
    _lock: File,
    dir: tempfile::TempDir,
    levels: Vec<Vec<PathBuf>>,
    made: usize,
}

/// What a reducer's spill directory is called, in `Config::spill_dir`.
pub const SPILL_DIR_PREFIX: &str = "fanfold-spill-";
/// The file in a spill directory whose lock says it is in use.
const SPILL_LOCK: &str = "lock";

impl Spills {
    fn new(root: &Path) -> Result<Self, PipelineError> {
        std::fs::create_dir_all(root).map_err(|e| spill_error(root, e))?;
        let dir =
            tempfile::Builder::new().prefix(SPILL_DIR_PREFIX).tempdir_in(root).map_err(|e| spill_error(root, e))?;
        let path = dir.path().join(SPILL_LOCK);
        let lock = File::create(&path).map_err(|e| spill_error(&path, e))?;
        lock.lock().map_err(|e| spill_error(&path, e))?;
        Ok(Spills { _lock: lock, dir, levels: Vec::new(), made: 0 })
    }

    fn next_key(&mut self, level: usize) -> PathBuf {
        self.made += 1;
        let level = if level == usize::MAX { "f".to_string() } else { level.to_string() };
        self.dir.path().join(format!("{level}-{:07}", self.made))
    }
}

fn spill_error(path: &Path, e: std::io::Error) -> PipelineError {
    StoreError::Io(std::io::Error::new(e.kind(), format!("spill {}: {e}", path.display()))).into()
}

/// Merges `group` into the spill file `path`.
fn write_spill(path: &Path, group: Vec<Source>, names: &[String], bounds: &Bounds) -> Result<(), PipelineError> {
    let mut w = BufWriter::new(File::create(path).map_err(|e| spill_error(path, e))?);
    let mut io_error = None;
    merge_group(group, names.to_vec(), bounds, |bytes| match w.write_all(&bytes) {
        Ok(()) => true,
        Err(e) => {
            io_error = Some(e);
            false
        }
    })?;
    if let Some(e) = io_error {
        return Err(spill_error(path, e));
    }
    w.into_inner().map_err(|e| spill_error(path, e.into_error()))?;
    Ok(())
}

/// Deletes spills merged into the next level.
fn remove(paths: &[PathBuf]) -> Result<(), PipelineError> {
    for p in paths {
        std::fs::remove_file(p).map_err(|e| spill_error(p, e))?;
    }
    Ok(())
}

/// A spill file as a source, opened on its first read (so that no more
/// than the merge's own sources hold a descriptor).
fn whole(path: &Path) -> Source {
    Box::new(LazyFile { path: path.to_path_buf(), file: None })
}

struct LazyFile {
    path: PathBuf,
    file: Option<File>, // (the merger's run reader buffers)
}

impl std::io::Read for LazyFile {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.file.is_none() {
            let f = File::open(&self.path)
                .map_err(|e| std::io::Error::new(e.kind(), format!("spill {}: {e}", self.path.display())))?;
            self.file = Some(f);
        }
        self.file.as_mut().expect("opened").read(buf)
    }
}

/// Removes the spill directories a killed reducer left in `root` (Lambda
/// keeps `/tmp` across invocations, a timed-out one too): those whose lock
/// nobody holds. A directory without its lock file (being made) stays.
pub fn clear_stale_spills(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else { return };
    for e in entries.flatten() {
        if !e.file_name().to_string_lossy().starts_with(SPILL_DIR_PREFIX) {
            continue;
        }
        let Ok(lock) = File::open(e.path().join(SPILL_LOCK)) else { continue };
        if lock.try_lock().is_err() {
            continue; // a live reducer's
        }
        drop(lock);
        if let Err(err) = std::fs::remove_dir_all(e.path()) {
            tracing::warn!(path = %e.path().display(), error = %err, "could not remove a stale spill directory");
        }
    }
}

/// Streams parts into the object store.
pub(super) struct StoreSink<'a> {
    pub(super) store: &'a dyn ObjectStore,
    pub(super) prefix: &'a str,
    pub(super) current: Option<Box<dyn ObjectWriter>>,
    pub(super) job: &'a str,
    pub(super) range: usize,
    pub(super) faults: Option<&'a dyn FaultPoints>,
}

impl PartSink for StoreSink<'_> {
    fn begin(&mut self, index: usize) -> std::io::Result<()> {
        let key = format!("{}{}", self.prefix, fanfold_engine::part_name(self.range, index));
        self.current = Some(self.store.put_stream(&key).map_err(std::io::Error::other)?);
        Ok(())
    }
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.current.as_mut().expect("begun").write_all(bytes)
    }
    fn end(&mut self, info: &PartInfo) -> std::io::Result<()> {
        self.current.take().expect("begun").finish().map_err(std::io::Error::other)?;
        if let Some(f) = self.faults {
            f.part_written(self.job, self.range, info.index);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_spill_directories_go_and_nothing_else_does() {
        let root = tempfile::tempdir().unwrap();
        let stale = root.path().join(format!("{SPILL_DIR_PREFIX}killed"));
        std::fs::create_dir_all(stale.join("deep")).unwrap();
        std::fs::write(stale.join("deep/0-0000001"), b"run").unwrap();
        std::fs::write(stale.join(SPILL_LOCK), b"").unwrap(); // nobody holds it
                                                              // A live reducer's (its lock held) and one being made (no lock yet) stay.
        let live = Spills::new(root.path()).unwrap();
        std::fs::write(live.dir.path().join("0-0000001"), b"run").unwrap();
        let making = root.path().join(format!("{SPILL_DIR_PREFIX}making"));
        std::fs::create_dir_all(&making).unwrap();
        let other = root.path().join("user-data");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(root.path().join("fanfold-spill-but-a-file.txt"), b"x").unwrap();
        clear_stale_spills(root.path());
        assert!(!stale.exists(), "a killed reducer's spills are removed");
        assert!(live.dir.path().join("0-0000001").exists(), "a live reducer's spills stay");
        assert!(making.exists(), "a directory without its lock yet stays");
        assert!(other.exists(), "anything else stays");
        let live_path = live.dir.path().to_path_buf();
        drop(live);
        assert!(!live_path.exists(), "a reducer's directory goes with it");
        // A file with the prefix is not a spill directory: it stays (remove_dir_all refuses it).
        assert!(root.path().join("fanfold-spill-but-a-file.txt").exists());
        // A root that is not there is no error.
        clear_stale_spills(&root.path().join("missing"));
    }

    #[test]
    fn a_spill_directory_is_removed_with_its_spills() {
        let root = tempfile::tempdir().unwrap();
        let mut spills = Spills::new(&root.path().join("made")).unwrap();
        let key = spills.next_key(0);
        std::fs::write(&key, b"run").unwrap();
        assert_eq!(std::fs::read_dir(root.path().join("made")).unwrap().count(), 1);
        assert!(spills.dir.path().join(SPILL_LOCK).exists());
        drop(spills);
        assert_eq!(std::fs::read_dir(root.path().join("made")).unwrap().count(), 0);
    }
}
