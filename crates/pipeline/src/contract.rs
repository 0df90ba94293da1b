//! Contract suites for the ports. Every adapter runs the same suite: the
//! local ones in `fanfold-local`'s tests, the AWS ones against a real
//! S3/DynamoDB-compatible server. A behaviour that matters is asserted here
//! once. Each function panics with a message on the first violation.

use std::io::{Read, Write};

use fanfold_engine::{ChunkRange, ChunkReport, Head, QuoteState, StartState};

use crate::job::{ChunkRecord, Job, JobError, Outputs, PartialRef, Source, Stage, Status};
use crate::ports::{Created, Dispatcher, JobStore, ObjectStore, StoreError, Task};

/// A dispatcher that only queues tasks, for tests that run them by hand
/// (in any order, any number of times).
#[derive(Default)]
pub struct QueueDispatcher(pub std::sync::Mutex<std::collections::VecDeque<Task>>);

impl QueueDispatcher {
    /// Takes the next task (the lock is not held while the caller runs it).
    pub fn pop(&self) -> Option<Task> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).pop_front()
    }
}

impl Dispatcher for QueueDispatcher {
    fn dispatch(&self, tasks: Vec<Task>) -> Result<(), StoreError> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend(tasks);
        Ok(())
    }
}

fn read_all(store: &dyn ObjectStore, key: &str, start: u64, end: Option<u64>) -> Vec<u8> {
    let mut v = Vec::new();
    store.get_range(key, start, end).unwrap_or_else(|e| panic!("get {key}: {e}")).read_to_end(&mut v).unwrap();
    v
}

/// `prefix` isolates this run's keys (e.g. a fresh bucket prefix).
pub fn object_store(store: &dyn ObjectStore, prefix: &str) {
    let k = |s: &str| format!("{prefix}{s}");
    // put / head / get
    store.put(&k("a/one.csv"), b"hello world").unwrap();
    let m = store.head(&k("a/one.csv")).unwrap();
    assert_eq!(m.size, 11);
    assert!(!m.etag.is_empty());
    assert_eq!(read_all(store, &k("a/one.csv"), 0, None), b"hello world");
    // ranges, including past the end
    assert_eq!(read_all(store, &k("a/one.csv"), 6, Some(11)), b"world");
    assert_eq!(read_all(store, &k("a/one.csv"), 3, Some(5)), b"lo");
    assert_eq!(read_all(store, &k("a/one.csv"), 6, Some(1000)), b"world", "a range past the end stops at the end");
    assert_eq!(read_all(store, &k("a/one.csv"), 6, None), b"world");
    // overwrite changes the etag
    store.put(&k("a/one.csv"), b"hello there!").unwrap();
    let m2 = store.head(&k("a/one.csv")).unwrap();
    assert_eq!(m2.size, 12);
    assert_ne!(m.etag, m2.etag, "new content, new etag");
    // reads of one version: the current one reads, an earlier one is "changed"
    let mut v = Vec::new();
    store.get_range_of(&k("a/one.csv"), &m2.etag, 6, Some(11)).unwrap().read_to_end(&mut v).unwrap();
    assert_eq!(v, b"there");
    for (start, end) in [(0, None), (6, Some(11)), (5, Some(5))] {
        let r = store.get_range_of(&k("a/one.csv"), &m.etag, start, end).map(|_| ());
        assert!(matches!(r, Err(StoreError::Changed { .. })), "{start}..{end:?}: an earlier version: {r:?}");
    }
    assert!(matches!(store.get_range_of(&k("missing"), &m.etag, 0, None).map(|_| ()), Err(StoreError::NotFound(_))));
    // missing objects
    assert!(matches!(store.head(&k("missing")), Err(StoreError::NotFound(_))));
    assert!(matches!(store.get_range(&k("missing"), 0, None).map(|_| ()), Err(StoreError::NotFound(_))));
    // streaming put: invisible until finished, gone if dropped
    let mut w = store.put_stream(&k("b/big.bin")).unwrap();
    // 20 MiB: several multipart parts on S3, the last one short.
    for i in 0..20u8 {
        w.write_all(&vec![i; 1 << 20]).unwrap();
    }
    assert!(store.head(&k("b/big.bin")).is_err(), "a streaming put is not visible before finish");
    w.finish().unwrap();
    assert_eq!(store.head(&k("b/big.bin")).unwrap().size, 20 << 20);
    let tail = read_all(store, &k("b/big.bin"), (20 << 20) - 3, None);
    assert_eq!(tail, vec![19u8; 3], "parts are in order");
    assert_eq!(read_all(store, &k("b/big.bin"), (8 << 20) - 1, Some((8 << 20) + 1)), vec![7u8, 8]);
    let mut w = store.put_stream(&k("b/abandoned.bin")).unwrap();
    w.write_all(b"partial").unwrap();
    drop(w);
    assert!(store.head(&k("b/abandoned.bin")).is_err(), "an abandoned upload leaves nothing");
    // list is prefix-filtered and ordered
    store.put(&k("a/two.csv"), b"2").unwrap();
    let keys: Vec<String> = store.list(&k("a/")).unwrap().into_iter().map(|m| m.key).collect();
    assert_eq!(keys, vec![k("a/one.csv"), k("a/two.csv")]);
    assert!(store.list(&k("zzz/")).unwrap().is_empty());
    // delete is idempotent
    store.delete(&k("a/two.csv")).unwrap();
    store.delete(&k("a/two.csv")).unwrap();
    assert!(store.head(&k("a/two.csv")).is_err());
    store.delete(&k("a/one.csv")).unwrap();
    // delete_prefix: every key under it, past a page of 1,000, and nothing beside it
    for i in 0..1_005 {
        store.put(&k(&format!("many/{i:04}")), b"").unwrap();
    }
    store.put(&k("many-not/x"), b"x").unwrap();
    assert_eq!(store.delete_prefix(&k("many/")).unwrap(), 1_005);
    assert!(store.list(&k("many/")).unwrap().is_empty());
    assert_eq!(store.delete_prefix(&k("many/")).unwrap(), 0, "deleting nothing is not an error");
    assert_eq!(store.list(&k("many-not/")).unwrap().len(), 1);
    store.delete(&k("many-not/x")).unwrap();
    store.delete(&k("b/big.bin")).unwrap();
    assert!(store.list(prefix).unwrap().is_empty(), "everything deleted");
    assert!(store.uri(&k("x")).contains("x"));
}

fn job(id: &str) -> Job {
    Job::new(
        id.to_string(),
        Source {
            bucket: "b".into(),
            key: "incoming/x.csv".into(),
            etag: "e".into(),
            size: 100,
            kind: Default::default(),
        },
        "{}".into(),
        1,
    )
}

/// A chunk record for tests (a scan that guessed the start state).
pub fn record(index: u32, partial: PartialRef) -> ChunkRecord {
    ChunkRecord::new(
        ChunkReport {
            index,
            start: 10 * index as u64,
            end: 10 * index as u64 + 10,
            assumed: QuoteState::FieldStart,
            transfer: fanfold_engine::Transfer::IDENTITY,
            newlines: 1,
            rows: 3,
            filtered: 0,
            bad_rows: 0,
            samples: vec![],
            error: None,
            groups: 2,
            overflow: None,
            run_bytes: 0,
            index_at: 0,
            sketch: Default::default(),
            members: None,
        },
        partial,
        StartState::Guess,
    )
}

fn head() -> Head {
    Head {
        data_start: 5,
        newlines_before_data: 1,
        header: Some(vec!["a".into()]),
        width: 1,
        compression: Default::default(),
        compressed_head: 0,
    }
}

/// A job created and RUNNING with `chunks` chunks of 40 bytes in one slice.
fn running(store: &dyn JobStore, id: &str, chunks: u32) {
    assert!(matches!(store.create_job(&job(id)).unwrap(), Created::New));
    assert!(store.start_running(id, &head(), 40, chunks, 1, 2).unwrap());
}

/// Every job-store case; `id` must be unused in the store (the cases use ids that start with it).
pub fn job_store(store: &dyn JobStore, id: &str) {
    create_is_conditional(store, &format!("{id}-c"));
    chunks_are_counted_once(store, &format!("{id}-d"));
    reopened_chunks_take_only_the_known_state(store, &format!("{id}-r"));
    leases_and_completion(store, &format!("{id}-l"));
    ranges_are_leased_and_counted_once(store, &format!("{id}-g"));
    dispatch_slices_resume_and_count_once(store, &format!("{id}-s"));
    final_states_stay_final(store, &format!("{id}-f"));
    retry_starts_an_ended_job_again(store, &format!("{id}-t"));
    listing_is_newest_first_in_pages(store, &format!("{id}-p"));
    end_events_are_owed_until_announced(store, &format!("{id}-a"));
}

/// The transition that ends a job (DONE, FAILED, CANCELLED) marks its end
/// event owed; `announced` clears the mark once, and an ended job is among
/// the `unannounced` ones until then (the sweeper sends their events again).
pub fn end_events_are_owed_until_announced(store: &dyn JobStore, id: &str) {
    let owed = |id: &str| store.unannounced().unwrap().iter().any(|j| j.id == id);
    let (done, failed, cancelled) = (format!("{id}-done"), format!("{id}-failed"), format!("{id}-cancelled"));
    running(store, &done, 0);
    assert!(!store.get_job(&done).unwrap().unwrap().announce_pending, "a running job owes nothing");
    assert!(!owed(&done));
    assert!(!store.announced(&done).unwrap(), "nothing to clear");
    assert!(store.take_lease(&done, "f", 1, 100).unwrap());
    assert!(store.start_merging(&done, "f", 0, 1).unwrap());
    assert!(store.take_lease(&done, "f", 2, 100).unwrap());
    let outputs = Outputs { parts: vec![], part_count: 0, manifest: "m".into(), summary: "s".into() };
    assert!(store.complete(&done, "f", &outputs, 3).unwrap());
    running(store, &failed, 0);
    assert!(store.fail(&failed, &JobError::internal("a worker died"), 4).unwrap());
    running(store, &cancelled, 0);
    assert!(store.cancel(&cancelled, 5).unwrap());
    for id in [&done, &failed, &cancelled] {
        assert!(store.get_job(id).unwrap().unwrap().announce_pending, "{id}: its end event is owed");
        assert!(owed(id), "{id}: the sweeper sees it");
        assert!(!store.active_jobs().unwrap().iter().any(|j| &j.id == id), "{id}: ended jobs are not active");
    }
    // Cleared once, however many clear it at the same time.
    let won: Vec<bool> = std::thread::scope(|s| {
        let tries: Vec<_> = (0..4).map(|_| s.spawn(|| store.announced(&done).unwrap())).collect();
        tries.into_iter().map(|t| t.join().unwrap()).collect()
    });
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
    assert!(!owed(&done) && owed(&failed));
    assert!(store.announced(&failed).unwrap() && store.announced(&cancelled).unwrap());
    assert!(!owed(&failed) && !owed(&cancelled));
    let j = store.get_job(&done).unwrap().unwrap();
    assert_eq!((j.status, j.announce_pending), (Status::Done, false), "announcing changes nothing else");
    // A retried job owes nothing until it ends again.
    running(store, &format!("{id}-again"), 0);
    assert!(store.fail(&format!("{id}-again"), &JobError::internal("x"), 6).unwrap());
    assert!(store.retry(&format!("{id}-again"), 7).unwrap());
    assert!(!owed(&format!("{id}-again")));
}

/// A FAILED or CANCELLED job starts again from SPLITTING with nothing of
/// its last run left; any other job is not retried.
pub fn retry_starts_an_ended_job_again(store: &dyn JobStore, id: &str) {
    running(store, id, 3);
    assert!(!store.retry(id, 3).unwrap(), "a running job is not retried");
    assert!(store.put_chunk(id, &record(0, PartialRef::Inline(vec![1, 2]))).unwrap());
    assert_eq!(store.mark_done(id, 0, StartState::Guess, 3, 10, 4).unwrap(), Some(1));
    assert!(store.take_work(id, Stage::Dispatch, 0, "d", 4, 100).unwrap());
    assert!(store.record_sweep(id, 0, 1, 9, 5).unwrap());
    assert!(store.fail(id, &JobError::internal("a worker died"), 6).unwrap());
    assert!(store.retry(id, 7).unwrap());
    assert!(!store.retry(id, 8).unwrap(), "a retry is once per end");
    let j = store.get_job(id).unwrap().unwrap();
    assert_eq!(j.status, Status::Splitting);
    assert_eq!((j.error, j.head, j.lease, j.outputs), (None, None, None, None));
    assert_eq!((j.chunk_count, j.chunks_done, j.rows, j.bytes_done, j.sweeps, j.stuck_sweeps), (0, 0, 0, 0, 0, 0));
    assert_eq!((j.slice_count, j.slices_done, j.range_count, j.ranges_done), (0, 0, 0, 0));
    assert_eq!((j.created_ms, j.updated_ms, j.running_ms), (1, 7, None), "created when it was first");
    assert!(store.chunk_page(id, None, 10).unwrap().is_empty(), "the last run's chunks are gone");
    assert!(store.work_page(id, Stage::Dispatch, None, 10).unwrap().is_empty(), "and its slices");
    assert!(store.active_jobs().unwrap().iter().any(|j| j.id == id), "the sweeper sees it again");
    // It runs as new: the same chunk counts from zero.
    assert!(store.start_running(id, &head(), 40, 3, 1, 9).unwrap());
    assert!(store.put_chunk(id, &record(0, PartialRef::Inline(vec![1, 2]))).unwrap());
    assert_eq!(store.mark_done(id, 0, StartState::Guess, 3, 10, 10).unwrap(), Some(1));
    // Cancelled jobs too, once however many ask at the same time (a
    // double click); DONE ones never.
    assert!(store.put_chunk(id, &record(1, PartialRef::Inline(vec![3]))).unwrap());
    assert!(store.cancel(id, 11).unwrap());
    let won: Vec<bool> = std::thread::scope(|s| {
        let tries: Vec<_> = (0..4).map(|_| s.spawn(|| store.retry(id, 12).unwrap())).collect();
        tries.into_iter().map(|t| t.join().unwrap()).collect()
    });
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
    assert!(store.chunk_page(id, None, 10).unwrap().is_empty());
    assert_eq!(store.get_job(id).unwrap().unwrap().status, Status::Splitting);
    let done = format!("{id}-done");
    running(store, &done, 0);
    assert!(store.take_lease(&done, "f", 13, 100).unwrap());
    assert!(store.start_merging(&done, "f", 0, 13).unwrap());
    assert!(store.take_lease(&done, "f", 14, 100).unwrap());
    let outputs = Outputs { parts: vec![], part_count: 0, manifest: "m".into(), summary: "s".into() };
    assert!(store.complete(&done, "f", &outputs, 15).unwrap());
    assert!(!store.retry(&done, 16).unwrap(), "a DONE job is not retried");
    assert_eq!(store.get_job(&done).unwrap().unwrap().status, Status::Done);
}

/// Creating a job twice creates it once; the second call finds it.
pub fn create_is_conditional(store: &dyn JobStore, id: &str) {
    assert!(store.get_job(id).unwrap().is_none());
    // conditional create: the second one loses and sees the first
    assert!(matches!(store.create_job(&job(id)).unwrap(), Created::New));
    match store.create_job(&job(id)).unwrap() {
        Created::Exists(j) => assert_eq!(j.id, id),
        Created::New => panic!("a second create of the same job must lose"),
    }
    assert_eq!(store.get_job(id).unwrap().unwrap().status, Status::Splitting);
    // SPLITTING → RUNNING once
    assert!(store.start_running(id, &head(), 40, 3, 1, 2).unwrap());
    assert!(!store.start_running(id, &head(), 40, 3, 1, 3).unwrap(), "start_running is conditional on SPLITTING");
    let j = store.get_job(id).unwrap().unwrap();
    assert_eq!((j.status, j.chunk_count, j.head.as_ref()), (Status::Running, 3, Some(&head())));
    assert_eq!((j.slice_count, j.slices_done, j.dispatched_ms), (1, 0, None));
    assert_eq!(j.chunk(2), Some(ChunkRange { index: 2, start: 85, end: 100 }));
    assert_eq!(j.chunk(3), None);
    assert!(store.active_jobs().unwrap().iter().any(|j| j.id == id));
}

/// A chunk marked done twice counts once; only the call that completes the count says so.
pub fn chunks_are_counted_once(store: &dyn JobStore, id: &str) {
    running(store, id, 3);
    // chunk records, inline and spilled; an inline partial at the limit survives
    let big = vec![0xAB; 8 * 1024];
    assert!(store.put_chunk(id, &record(0, PartialRef::Inline(big.clone()))).unwrap());
    assert!(store.put_chunk(id, &record(1, PartialRef::Object("_fanfold/partials/x/0000001-g".into()))).unwrap());
    assert!(store.put_chunk(id, &record(1, PartialRef::Object("_fanfold/partials/x/0000001-g".into()))).unwrap());
    // marking done counts a chunk once
    assert_eq!(store.mark_done(id, 0, StartState::Guess, 3, 10, 3).unwrap(), Some(1));
    assert_eq!(store.mark_done(id, 0, StartState::Guess, 3, 10, 3).unwrap(), None, "a duplicate adds nothing");
    assert_eq!(store.mark_done(id, 2, StartState::Guess, 3, 10, 3).unwrap(), None, "no record, nothing to mark");
    assert_eq!(
        store.mark_done(id, 1, StartState::Known(QuoteState::InQuotes), 3, 10, 3).unwrap(),
        None,
        "the record is of a guess"
    );
    assert_eq!(store.mark_done(id, 1, StartState::Guess, 3, 10, 4).unwrap(), Some(2));
    assert!(!store.put_chunk(id, &record(1, PartialRef::Inline(vec![1]))).unwrap(), "a done chunk is not replaced");
    let j = store.get_job(id).unwrap().unwrap();
    assert_eq!((j.chunks_done, j.rows, j.bytes_done), (2, 6, 20), "counters count each chunk once");
    assert_eq!(j.updated_ms, 4, "marking a chunk done touches the job");
    // pages in index order, with the done flags
    let recs = store.chunk_page(id, None, 10).unwrap();
    assert_eq!(recs.iter().map(|r| (r.report.index, r.done)).collect::<Vec<_>>(), [(0, true), (1, true)]);
    assert_eq!(recs[0].partial, PartialRef::Inline(big), "an inline partial survives intact");
    assert_eq!(recs[1].partial, PartialRef::Object("_fanfold/partials/x/0000001-g".into()));
    assert_eq!(store.chunk_page(id, Some(0), 10).unwrap().len(), 1);
    assert_eq!(store.chunk_page(id, None, 1).unwrap().len(), 1);
    assert!(store.chunk_page(id, Some(1), 10).unwrap().is_empty());
    // a sweep is counted once per observed value
    assert!(store.record_sweep(id, 0, 1, 9, 6).unwrap());
    assert!(!store.record_sweep(id, 0, 1, 9, 6).unwrap(), "a second sweeper that saw the same count loses");
    let j = store.get_job(id).unwrap().unwrap();
    assert_eq!((j.sweeps, j.swept_ms, j.stuck_sweeps, j.swept_progress), (1, Some(6), 1, 9));
    assert!(store.record_sweep(id, 1, 0, 12, 7).unwrap());
    let j = store.get_job(id).unwrap().unwrap();
    assert_eq!((j.sweeps, j.stuck_sweeps, j.swept_progress), (2, 0, 12), "the stuck count is set, not added");
}

/// A reopened chunk accepts only a scan from the state it was reopened with.
pub fn reopened_chunks_take_only_the_known_state(store: &dyn JobStore, id: &str) {
    running(store, id, 2);
    for c in 0..2 {
        assert!(store.put_chunk(id, &record(c, PartialRef::Inline(vec![c as u8]))).unwrap());
        assert_eq!(store.mark_done(id, c, StartState::Guess, 3, 10, 3).unwrap(), Some(c + 1));
    }
    assert!(!store.reopen_chunk(id, "p", 1, QuoteState::InQuotes).unwrap(), "reopen needs the lease");
    assert!(store.take_lease(id, "p", 10, 100).unwrap());
    assert_eq!(store.get_job(id).unwrap().unwrap().status, Status::Merging);
    assert!(!store.reopen_chunk(id, "q", 1, QuoteState::InQuotes).unwrap(), "someone else's lease");
    assert!(store.reopen_chunk(id, "p", 1, QuoteState::InQuotes).unwrap());
    assert!(!store.reopen_chunk(id, "p", 1, QuoteState::InQuotes).unwrap(), "a chunk not done is not reopened");
    let j = store.get_job(id).unwrap().unwrap();
    assert_eq!((j.chunks_done, j.rows, j.bytes_done, j.chunks_rerun), (1, 3, 10, 1), "its counters are taken back");
    assert!(store.release_lease(id, "p").unwrap());
    let j = store.get_job(id).unwrap().unwrap();
    assert_eq!((j.status, j.lease.clone()), (Status::Running, None));
    let recs = store.chunk_page(id, Some(0), 10).unwrap();
    assert_eq!((recs[0].done, recs[0].rerun), (false, Some(QuoteState::InQuotes)));
    // a late scan from the guess is refused; the known state is taken, once
    assert!(!store.put_chunk(id, &record(1, PartialRef::Inline(vec![9]))).unwrap());
    let mut known = record(1, PartialRef::Inline(vec![7]));
    known.state = StartState::Known(QuoteState::InQuotes);
    known.report.assumed = QuoteState::InQuotes;
    assert!(store.put_chunk(id, &known).unwrap());
    assert_eq!(store.mark_done(id, 1, StartState::Guess, 3, 10, 5).unwrap(), None);
    assert_eq!(store.mark_done(id, 1, StartState::Known(QuoteState::InQuotes), 3, 10, 5).unwrap(), Some(2));
    let rec = &store.chunk_page(id, Some(0), 10).unwrap()[0];
    assert_eq!(
        (rec.done, rec.state, &rec.partial),
        (true, StartState::Known(QuoteState::InQuotes), &PartialRef::Inline(vec![7]))
    );
}

/// The job's lease: one holder until it runs out; the range plan is made
/// once; completion needs the lease; a done job is neither active nor swept.
pub fn leases_and_completion(store: &dyn JobStore, id: &str) {
    running(store, id, 0);
    // the job's lease: one holder at a time, until it expires
    assert!(store.take_lease(id, "f1", 100, 200).unwrap());
    assert!(!store.take_lease(id, "f2", 150, 250).unwrap(), "a held lease cannot be taken");
    assert!(store.take_lease(id, "f1", 150, 260).unwrap(), "the holder may renew it");
    assert!(store.take_lease(id, "f2", 261, 300).unwrap(), "an expired lease can be taken");
    assert!(!store.start_merging(id, "f1", 3, 262).unwrap(), "start_merging needs the lease");
    assert!(store.start_merging(id, "f2", 3, 262).unwrap());
    let j = store.get_job(id).unwrap().unwrap();
    assert_eq!((j.status, j.range_count, j.ranges_done, j.lease.clone()), (Status::Merging, 3, 0, None));
    assert_eq!(j.merging_ms, Some(262));
    assert!(store.take_lease(id, "f3", 263, 400).unwrap());
    assert!(!store.start_merging(id, "f3", 5, 264).unwrap(), "the range plan is made once");
    assert!(store.release_lease(id, "f3").unwrap());
    assert_eq!(store.get_job(id).unwrap().unwrap().status, Status::Merging, "a planned job stays MERGING");
    // completion is conditional on the lease
    let outputs = Outputs { parts: vec![], part_count: 0, manifest: "m".into(), summary: "s".into() };
    assert!(!store.complete(id, "f3", &outputs, 400).unwrap(), "complete without a lease fails");
    assert!(store.take_lease(id, "f4", 400, 500).unwrap());
    assert!(!store.complete(id, "f2", &outputs, 401).unwrap(), "complete with someone else's lease fails");
    assert!(store.complete(id, "f4", &outputs, 402).unwrap());
    let j = store.get_job(id).unwrap().unwrap();
    assert_eq!((j.status, j.outputs.clone()), (Status::Done, Some(outputs)));
    assert!(!store.take_lease(id, "f5", 10_000, 20_000).unwrap());
    assert!(!store.active_jobs().unwrap().iter().any(|j| j.id == id), "done jobs are not active");
    assert!(!store.record_sweep(id, 0, 1, 0, 7).unwrap(), "final jobs are not swept");
}

/// Each key range is leased by one reducer and counted done once.
pub fn ranges_are_leased_and_counted_once(store: &dyn JobStore, id: &str) {
    let r = Stage::Reduce;
    running(store, id, 0);
    assert!(!store.take_work(id, r, 0, "r", 1, 100).unwrap(), "no ranges before the plan");
    assert!(store.take_lease(id, "p", 1, 100).unwrap());
    assert!(store.start_merging(id, "p", 3, 2).unwrap());
    assert!(!store.take_work(id, r, 3, "r", 3, 100).unwrap(), "past the last range");
    assert!(!store.take_work(id, Stage::Dispatch, 0, "d", 3, 100).unwrap(), "a merging job dispatches nothing");
    assert!(store.take_work(id, r, 0, "r0", 3, 100).unwrap());
    assert!(!store.take_work(id, r, 0, "r9", 50, 150).unwrap(), "a held range cannot be taken");
    assert!(store.take_work(id, r, 2, "r2", 3, 100).unwrap());
    assert!(store.take_work(id, r, 2, "r9", 101, 200).unwrap(), "an expired range lease can be taken");
    assert_eq!(store.work_done(id, r, 2, "r2", 102).unwrap(), None, "the old holder cannot finish it");
    assert_eq!(store.work_done(id, r, 0, "r0", 103).unwrap(), Some(1));
    assert_eq!(store.work_done(id, r, 0, "r0", 104).unwrap(), None, "a range is counted once");
    assert!(!store.take_work(id, r, 0, "r0", 105, 200).unwrap(), "a done range is not taken again");
    let recs = store.work_page(id, r, None, 10).unwrap();
    let seen: Vec<(u32, bool, Option<String>)> =
        recs.iter().map(|r| (r.index, r.done, r.lease.as_ref().map(|l| l.owner.clone()))).collect();
    assert_eq!(seen, [(0, true, None), (2, false, Some("r9".into()))], "range 1 never started");
    assert_eq!(store.work_page(id, r, Some(0), 10).unwrap().len(), 1);
    assert!(store.work_page(id, Stage::Dispatch, None, 10).unwrap().is_empty(), "the stages keep apart");
    assert_eq!(store.work_done(id, r, 2, "r9", 106).unwrap(), Some(2));
    assert!(store.take_work(id, r, 1, "r1", 107, 200).unwrap());
    assert_eq!(store.work_done(id, r, 1, "r1", 108).unwrap(), Some(3));
    let j = store.get_job(id).unwrap().unwrap();
    assert_eq!((j.ranges_done, j.range_count, j.updated_ms, j.slices_done), (3, 3, 108, 0));
    assert!(store.cancel(id, 109).unwrap());
    assert!(!store.take_work(id, r, 1, "r1", 110, 200).unwrap(), "a cancelled job's ranges are not taken");
}

/// A dispatch slice resumes where it stopped and counts done once.
pub fn dispatch_slices_resume_and_count_once(store: &dyn JobStore, id: &str) {
    let d = Stage::Dispatch;
    assert!(matches!(store.create_job(&job(id)).unwrap(), Created::New));
    assert!(!store.take_work(id, d, 0, "d0", 1, 100).unwrap(), "a splitting job dispatches nothing");
    assert!(store.start_running(id, &head(), 40, 2500, 3, 2).unwrap());
    assert!(!store.take_work(id, d, 3, "d", 3, 100).unwrap(), "past the last slice");
    assert!(store.take_work(id, d, 0, "d0", 3, 100).unwrap());
    assert!(!store.take_work(id, d, 0, "d9", 4, 100).unwrap(), "a held slice cannot be taken");
    assert!(store.take_work(id, d, 0, "d0", 5, 100).unwrap(), "its holder may take it again");
    assert!(store.work_progress(id, d, 0, "d0", 100, 6, 150).unwrap());
    assert!(!store.work_progress(id, d, 0, "d9", 200, 7, 150).unwrap(), "only the holder records progress");
    assert!(!store.work_progress(id, d, 1, "d0", 100, 7, 150).unwrap(), "nor on a slice it does not hold");
    // the progress extended the lease to 150: a repair waits for it, then resumes where it stopped
    assert!(!store.take_work(id, d, 0, "d9", 120, 300).unwrap(), "the lease was extended");
    assert!(store.take_work(id, d, 0, "d9", 151, 300).unwrap());
    let rec = &store.work_page(id, d, None, 10).unwrap()[0];
    assert_eq!((rec.index, rec.next, rec.done), (0, 100, false), "the progress survives a new holder");
    assert!(!store.work_progress(id, d, 0, "d0", 300, 152, 400).unwrap(), "the old holder lost it");
    assert_eq!(store.work_done(id, d, 0, "d0", 153).unwrap(), None, "and cannot finish it");
    assert!(store.work_progress(id, d, 0, "d9", 1000, 154, 400).unwrap());
    assert_eq!(store.work_done(id, d, 0, "d9", 155).unwrap(), Some(1));
    assert_eq!(store.work_done(id, d, 0, "d9", 156).unwrap(), None, "a slice is counted once");
    assert!(!store.take_work(id, d, 0, "d9", 157, 400).unwrap(), "a done slice is not taken again");
    assert!(!store.work_progress(id, d, 0, "d9", 1000, 157, 400).unwrap(), "nor moved on");
    assert!(store.take_work(id, d, 2, "d2", 158, 400).unwrap());
    let j = store.get_job(id).unwrap().unwrap();
    assert_eq!((j.slice_count, j.slices_done, j.dispatched_ms, j.ranges_done), (3, 1, Some(155), 0));
    // a slice finishing after the job moved on to the merge is still counted
    assert!(store.take_lease(id, "p", 159, 500).unwrap());
    assert_eq!(store.work_done(id, d, 2, "d2", 160).unwrap(), Some(2));
    assert!(!store.take_work(id, d, 1, "d1", 161, 500).unwrap(), "but nothing more is taken then");
    let recs = store.work_page(id, d, None, 10).unwrap();
    assert_eq!(recs.iter().map(|r| (r.index, r.done)).collect::<Vec<_>>(), [(0, true), (2, true)]);
    assert_eq!(store.get_job(id).unwrap().unwrap().dispatched_ms, Some(160));
    assert!(store.cancel(id, 162).unwrap());
    assert!(!store.work_progress(id, d, 1, "d1", 5, 163, 600).unwrap(), "a slice never taken has no progress");
}

/// DONE, FAILED and CANCELLED never change again.
pub fn final_states_stay_final(store: &dyn JobStore, id: &str) {
    // fail works from a running state
    assert!(matches!(store.create_job(&job(id)).unwrap(), Created::New));
    assert!(store.fail(id, &JobError::rejected("line 1 (byte 0): bad"), 5).unwrap());
    let j = store.get_job(id).unwrap().unwrap();
    assert_eq!(j.status, Status::Failed);
    assert!(j.error.unwrap().rejected);
    assert!(!store.cancel(id, 6).unwrap(), "a failed job cannot be cancelled");
    assert!(!store.fail(id, &JobError::internal("late"), 500).unwrap());
    // cancel: any active state, once; the cheap status read sees it
    let id3 = format!("{id}-3");
    running(store, &id3, 3);
    assert_eq!(store.status(&id3).unwrap(), Some(Status::Running));
    assert!(store.cancel(&id3, 7).unwrap());
    assert!(!store.cancel(&id3, 8).unwrap(), "cancel is once");
    assert_eq!(store.status(&id3).unwrap(), Some(Status::Cancelled));
    assert!(!store.take_lease(&id3, "f", 10, 20).unwrap(), "a cancelled job is not finalized");
    assert!(!store.fail(&id3, &JobError::internal("late"), 9).unwrap(), "cancelled is final");
    assert!(!store.active_jobs().unwrap().iter().any(|j| j.id == id3));
    assert_eq!(store.status(&format!("{id}-missing")).unwrap(), None);
}

/// Jobs list newest first, a page at a time.
pub fn listing_is_newest_first_in_pages(store: &dyn JobStore, id: &str) {
    let base = 9_000_000_000_000u64;
    let ids: Vec<String> = (0..5).map(|i| format!("{id}-l{i}")).collect();
    for (i, lid) in ids.iter().enumerate() {
        let mut j = job(lid);
        j.created_ms = base + [3, 1, 4, 0, 2][i];
        assert!(matches!(store.create_job(&j).unwrap(), Created::New));
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = store.list_jobs(2, cursor.as_deref()).unwrap();
        assert!(page.jobs.len() <= 2);
        seen.extend(page.jobs.iter().filter(|j| j.id.starts_with(&format!("{id}-l"))).map(|j| j.id.clone()));
        for j in &page.jobs {
            assert!(Job::is_list_key(&j.list_key()), "{}", j.list_key());
        }
        match page.next {
            Some(n) if seen.len() < 5 => cursor = Some(n),
            _ => break,
        }
    }
    let want: Vec<String> = [2, 0, 4, 1, 3].iter().map(|&i| ids[i].clone()).collect();
    assert_eq!(seen, want, "newest first, every job once");
    let all = store.list_jobs(1000, None).unwrap();
    assert!(all.jobs.windows(2).all(|w| w[0].list_key() > w[1].list_key()), "sorted newest first");
}

/// The far side of a dispatcher under test: every task delivered so far, a
/// task delivered twice listed twice.
pub type Delivered<'a> = &'a (dyn Fn() -> Vec<Task> + Sync);

/// The [`Dispatcher`] contract: every task sent arrives intact at least
/// once, whether it is sent alone, in a batch of `batch` tasks (a dispatch
/// slice is [`crate::SLICE`]), or by several callers at once; an empty batch
/// is no error. `delivered` reports what arrived; each check waits up to
/// `wait` for it. `job` prefixes the tasks' job ids, so runs do not mix.
pub fn dispatcher(d: &dyn Dispatcher, delivered: Delivered, job: &str, batch: u32, wait: std::time::Duration) {
    empty_batches_send_nothing(d, delivered, wait);
    every_kind_of_task_arrives_intact(d, delivered, &format!("{job}-kinds"), wait);
    a_batch_arrives_whole(d, delivered, &format!("{job}-batch"), batch, wait);
    concurrent_callers_all_arrive(d, delivered, &format!("{job}-callers"), wait);
}

/// One task of every kind, with every field set to something that would
/// show a field lost or swapped on the way.
pub fn every_kind_of_task(job: &str) -> Vec<Task> {
    vec![
        Task::Chunk {
            job: job.to_string(),
            range: ChunkRange { index: 7, start: 1 << 40, end: (1 << 40) + 67_108_864 },
            state: StartState::Guess,
            member: None,
        },
        Task::Chunk {
            job: job.to_string(),
            range: ChunkRange { index: 8, start: 0, end: 1 },
            state: StartState::Known(QuoteState::InQuotes),
            member: Some(1 << 41),
        },
        Task::Dispatch { job: job.to_string(), slice: 3 },
        Task::Plan { job: job.to_string() },
        Task::Reduce { job: job.to_string(), range: 999 },
        Task::Commit { job: job.to_string() },
    ]
}

/// Waits until every task in `want` has arrived (as many times as it is in
/// `want`, at least), or panics with what is missing.
fn await_delivery(delivered: Delivered, want: &[Task], wait: std::time::Duration, what: &str) {
    let deadline = std::time::Instant::now() + wait;
    loop {
        let mut have: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for t in delivered() {
            *have.entry(format!("{t:?}")).or_default() += 1;
        }
        let mut missing = Vec::new();
        for t in want {
            match have.get_mut(&format!("{t:?}")) {
                Some(n) if *n > 0 => *n -= 1,
                _ => missing.push(t),
            }
        }
        if missing.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: {} of {} tasks did not arrive within {wait:?}, e.g. {:?}",
            missing.len(),
            want.len(),
            missing[0]
        );
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
}

/// An empty batch is accepted and delivers nothing new.
pub fn empty_batches_send_nothing(d: &dyn Dispatcher, delivered: Delivered, wait: std::time::Duration) {
    let before = delivered().len();
    d.dispatch(Vec::new()).expect("an empty batch is no error");
    std::thread::sleep(wait.min(std::time::Duration::from_millis(200)));
    assert_eq!(delivered().len(), before, "an empty batch delivered something");
}

/// Each kind of task arrives as it was sent, every field intact.
pub fn every_kind_of_task_arrives_intact(
    d: &dyn Dispatcher,
    delivered: Delivered,
    job: &str,
    wait: std::time::Duration,
) {
    let tasks = every_kind_of_task(job);
    d.dispatch(tasks.clone()).expect("dispatch");
    await_delivery(delivered, &tasks, wait, "every kind of task");
}

/// `batch` tasks in one call all arrive (a sender that drops what is past a
/// limit, or stops at the first slow send, fails this).
pub fn a_batch_arrives_whole(
    d: &dyn Dispatcher,
    delivered: Delivered,
    job: &str,
    batch: u32,
    wait: std::time::Duration,
) {
    let tasks: Vec<Task> = (0..batch)
        .map(|i| Task::Chunk {
            job: job.to_string(),
            range: ChunkRange { index: i, start: u64::from(i) * 10, end: u64::from(i) * 10 + 10 },
            state: StartState::Guess,
            member: None,
        })
        .collect();
    d.dispatch(tasks.clone()).expect("dispatch a batch");
    await_delivery(delivered, &tasks, wait, "a batch");
}

/// Four callers dispatching at once (steps run on many threads and
/// functions) lose nothing.
pub fn concurrent_callers_all_arrive(d: &dyn Dispatcher, delivered: Delivered, job: &str, wait: std::time::Duration) {
    let per_caller: Vec<Vec<Task>> =
        (0..4u32).map(|c| (0..25).map(|i| Task::Reduce { job: format!("{job}-{c}"), range: i }).collect()).collect();
    std::thread::scope(|s| {
        for tasks in &per_caller {
            s.spawn(move || {
                for t in tasks {
                    d.dispatch(vec![t.clone()]).expect("dispatch from one of several callers");
                }
            });
        }
    });
    let all: Vec<Task> = per_caller.into_iter().flatten().collect();
    await_delivery(delivered, &all, wait, "concurrent callers");
}
