//! The pipeline with the local adapters (directory store, memory job store,
//! thread pool, `run_file`): contracts, ordering, duplicates, chunking.

mod support;

use std::sync::Arc;

use fanfold_engine::Spec;
use fanfold_local::{run_file, DirStore, MemoryJobStore, RunOptions};
use fanfold_pipeline::{contract, Config, Dispatcher, Layout, ObjectStore, Pipeline, Stage, Status, StoreError, Task};
use proptest::prelude::*;

#[test]
fn dir_store_passes_the_object_store_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = DirStore::new(dir.path()).unwrap();
    contract::object_store(&store, "contract/");
}

#[test]
fn memory_job_store_passes_the_job_store_contract() {
    contract::job_store(&MemoryJobStore::new(), "job-1");
}

/// The pool's far side in its contract test: records every task it runs.
#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<Task>>);

impl fanfold_local::RunTask for Recorder {
    fn run_task(&self, task: &Task, _owner: &str) -> Result<(), fanfold_pipeline::PipelineError> {
        self.0.lock().unwrap().push(task.clone());
        Ok(())
    }
    fn failed(&self, task: &Task, error: &fanfold_pipeline::PipelineError, _attempts: u32) {
        panic!("{task:?} failed: {error}");
    }
}

#[test]
fn pool_dispatcher_passes_the_dispatcher_contract() {
    let dispatcher = fanfold_local::PoolDispatcher::new();
    let recorder = Arc::new(Recorder::default());
    let _pool = dispatcher.start(&recorder, 3);
    let delivered = || recorder.0.lock().unwrap().clone();
    // 20,000 tasks in one call: a job of 20,000 chunks.
    contract::dispatcher(&dispatcher, &delivered, "pool", 20_000, std::time::Duration::from_secs(60));
}

#[test]
fn queue_dispatcher_passes_the_dispatcher_contract() {
    let queue = Queue::default();
    let delivered = || queue.0.lock().unwrap().iter().cloned().collect();
    contract::dispatcher(&queue, &delivered, "queue", 20_000, std::time::Duration::from_secs(5));
}

/// The contract can fail: a dispatcher that sends at most 999 tasks per
/// call, or alters a field, does not pass it.
#[test]
fn a_lossy_or_garbling_dispatcher_fails_the_dispatcher_contract() {
    struct Lossy(Queue, bool);
    impl Dispatcher for Lossy {
        fn dispatch(&self, mut tasks: Vec<Task>) -> Result<(), StoreError> {
            tasks.truncate(999);
            if self.1 {
                for t in &mut tasks {
                    if let Task::Reduce { range, .. } = t {
                        *range += 1;
                    }
                }
            }
            self.0.dispatch(tasks)
        }
    }
    for garble in [false, true] {
        let lossy = Lossy(Queue::default(), garble);
        let delivered = || lossy.0 .0.lock().unwrap().iter().cloned().collect();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            contract::dispatcher(&lossy, &delivered, "lossy", 1_000, std::time::Duration::from_millis(300))
        }));
        assert!(r.is_err(), "garble {garble}: a dispatcher that loses or changes tasks passed");
    }
}

/// A retryable failure is tried again (three attempts in all, as Lambda
/// retries an async invoke); then the task is reported failed, once. A
/// panic (a bug) fails its task at once instead of killing the thread and
/// leaving the job waiting for ever.
#[test]
fn the_pool_retries_a_retryable_failure_three_times_then_reports_it() {
    #[derive(Default)]
    struct Flaky {
        runs: std::sync::Mutex<Vec<Task>>,
        failed: std::sync::Mutex<Vec<(Task, u32)>>,
    }
    impl fanfold_local::RunTask for Flaky {
        fn run_task(&self, task: &Task, _owner: &str) -> Result<(), fanfold_pipeline::PipelineError> {
            self.runs.lock().unwrap().push(task.clone());
            match task {
                Task::Plan { .. } => Err(StoreError::Other { message: "throttled".into(), retryable: true }.into()),
                Task::Commit { .. } => Err(StoreError::Other { message: "refused".into(), retryable: false }.into()),
                Task::Dispatch { .. } => panic!("a bug"),
                _ => Ok(()),
            }
        }
        fn failed(&self, task: &Task, _error: &fanfold_pipeline::PipelineError, attempts: u32) {
            self.failed.lock().unwrap().push((task.clone(), attempts));
        }
    }
    let dispatcher = fanfold_local::PoolDispatcher::new();
    let flaky = Arc::new(Flaky::default());
    let pool = dispatcher.start(&flaky, 2);
    let (plan, commit, reduce) =
        (Task::Plan { job: "j".into() }, Task::Commit { job: "j".into() }, Task::Reduce { job: "j".into(), range: 0 });
    let panics = Task::Dispatch { job: "j".into(), slice: 0 };
    // More panics than threads: each thread survives its own.
    dispatcher.dispatch(vec![panics.clone(), panics.clone(), panics.clone()]).unwrap();
    dispatcher.dispatch(vec![plan.clone(), commit.clone(), reduce.clone()]).unwrap();
    pool.shutdown();
    let runs = flaky.runs.lock().unwrap();
    assert_eq!(runs.iter().filter(|t| **t == plan).count(), 3, "a retryable failure: three attempts");
    assert_eq!(runs.iter().filter(|t| **t == commit).count(), 1, "a permanent failure: one attempt");
    assert_eq!(runs.iter().filter(|t| **t == reduce).count(), 1);
    let mut failed = flaky.failed.lock().unwrap().clone();
    failed.sort_by_key(|(t, _)| format!("{t:?}"));
    assert_eq!(failed, vec![(commit, 1), (panics.clone(), 1), (panics.clone(), 1), (panics, 1), (plan, 3)]);
    // A shut-down pool refuses new work instead of dropping it silently.
    assert!(dispatcher.dispatch(vec![Task::Plan { job: "late".into() }]).is_err());
}

#[test]
fn no_key_escapes_the_dir_store_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let store = DirStore::new(&root).unwrap();
    std::fs::write(dir.path().join("secret"), b"s").unwrap();
    std::os::unix::fs::symlink(dir.path(), root.join("link")).unwrap();
    for key in
        ["../secret", "a/../../secret", "/etc/passwd", "a\0b", "a//b", "./a", "a\\..\\b", "", "link/secret", "a/."]
    {
        assert!(
            matches!(store.head(key), Err(StoreError::InvalidKey { .. }) | Err(StoreError::NotFound(_))),
            "head {key:?}"
        );
        assert!(store.put(key, b"x").is_err(), "put {key:?}");
        assert!(store.get_range(key, 0, None).is_err(), "get {key:?}");
    }
    assert_eq!(std::fs::read(dir.path().join("secret")).unwrap(), b"s", "nothing outside was touched");
    assert!(!dir.path().join("etc").exists());
}

type Queue = contract::QueueDispatcher;

/// A pipeline on `dir` holding `csv` as `incoming/in.csv`, with a queue the test drains by hand.
fn queued_pipeline(dir: &std::path::Path, csv: &[u8], config: Config) -> (Pipeline, Arc<Queue>, Arc<DirStore>) {
    let store = Arc::new(DirStore::new(dir).unwrap());
    store.put("incoming/in.csv", csv).unwrap();
    let queue = Arc::new(Queue::default());
    let p = Pipeline::new(
        store.clone(),
        store.clone(),
        Arc::new(MemoryJobStore::new()),
        queue.clone(),
        Layout::default(),
        config,
    );
    (p, queue, store)
}

fn run_shuffled(csv: &[u8], spec: &Spec, chunk: u64, seed: u64, copies: usize) -> (Status, Option<String>, u32) {
    run_shuffled_with(
        csv,
        spec,
        Config { chunk_size: chunk, inline_limit: 64, read_whole: 0, ..Config::default() },
        seed,
        copies,
    )
}

fn run_shuffled_with(
    csv: &[u8],
    spec: &Spec,
    config: Config,
    seed: u64,
    copies: usize,
) -> (Status, Option<String>, u32) {
    let dir = tempfile::tempdir().unwrap();
    let (p, queue, store) = queued_pipeline(dir.path(), csv, config);
    let id = p.submit("incoming/in.csv", spec).unwrap().id;
    // The same submission again finds the job.
    assert!(!p.submit("incoming/in.csv", spec).unwrap().new);
    support::drain_shuffled(&p, &queue, seed, copies, support::OnTaskError::Panic);
    let job = p.jobs.get_job(&id).unwrap().unwrap();
    let out = (job.status == Status::Done).then(|| {
        let keys: Vec<String> = job.outputs.as_ref().unwrap().parts.iter().map(|p| p.key.clone()).collect();
        keys.iter().map(|k| support::read(dir.path().join(k))).collect::<String>()
    });
    assert!(store.list("_fanfold/").unwrap().is_empty(), "no partials left behind");
    (job.status, out, job.chunks_rerun)
}

#[test]
fn any_task_order_and_duplicate_deliveries_give_the_same_result() {
    let csv = std::fs::read(support::fixture("catalogue.csv")).unwrap();
    let spec = Spec::from_json(&support::read(support::fixture("catalogue.spec.json"))).unwrap();
    let want = support::read(support::fixture("catalogue.expected.csv"));
    for seed in 1..20 {
        for chunk in [1, 3, 10, 1000] {
            let copies = 1 + (seed as usize % 3);
            let (status, out, _) = run_shuffled(&csv, &spec, chunk, seed, copies);
            assert_eq!(status, Status::Done);
            assert_eq!(out.unwrap(), want, "seed {seed} chunk {chunk} copies {copies}");
        }
    }
}

#[test]
fn reducers_merge_in_levels_when_there_are_more_chunks_than_their_fan_in() {
    let csv = std::fs::read(support::fixture("catalogue.csv")).unwrap();
    let spec = Spec::from_json(&support::read(support::fixture("catalogue.spec.json"))).unwrap();
    let want = support::read(support::fixture("catalogue.expected.csv"));
    // K = 2 and 3 with hundreds of chunks: more than K² (every level); 16 and 40: fewer (only what is needed).
    for (k, chunk, range_bytes) in [(2usize, 13u64, 1u64 << 30), (3, 7, 64), (16, 5, 1 << 30), (40, 3, 100)] {
        let spill_dir = tempfile::tempdir().unwrap();
        let config = Config {
            chunk_size: chunk,
            inline_limit: 64,
            merge_fan_in: k,
            range_bytes,
            spill_dir: spill_dir.path().to_path_buf(),
            ..Config::default()
        };
        let (status, out, _) = run_shuffled_with(&csv, &spec, config, k as u64, 2);
        assert_eq!(status, Status::Done);
        // Spills are local files, in a directory each reducer removes (the
        // store held none: `run_shuffled_with` checks `_fanfold/` is empty).
        assert_eq!(std::fs::read_dir(spill_dir.path()).unwrap().count(), 0, "K = {k}: spills left behind");
        let out = out.unwrap();
        // Several ranges: their parts joined, one header.
        let header = want.lines().next().unwrap();
        let rows: String = out.split_inclusive('\n').filter(|l| l.trim_end() != header).collect();
        assert_eq!(format!("{header}\n{rows}"), want, "K = {k}, chunks of {chunk}");
    }
}

/// Reducers read each large partial's slice with one GET where the plan's
/// slice tables say it is; without the tables (a job planned before them)
/// they read its index first; with one range there are none. The same rows
/// every way.
#[test]
fn reducers_read_slices_from_the_plans_tables_or_from_the_index_without_them() {
    let csv = std::fs::read(support::fixture("catalogue.csv")).unwrap();
    let spec = Spec::from_json(&support::read(support::fixture("catalogue.spec.json"))).unwrap();
    let want = support::read(support::fixture("catalogue.expected.csv"));
    let header = want.lines().next().unwrap().to_string();
    // (chunk size, range bytes, merge fan-in, drop the tables before the reducers run)
    for (chunk, range_bytes, k, drop) in [
        (13u64, 64u64, 256usize, false),
        (13, 64, 256, true),
        (7, 1 << 30, 256, false),
        (5, 100, 3, false),
        (1100, 32, 256, false),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            chunk_size: chunk,
            inline_limit: 0,
            read_whole: 0,
            range_bytes,
            merge_fan_in: k,
            ..Config::default()
        };
        let (p, queue, store) = queued_pipeline(dir.path(), &csv, config);
        let id = p.submit("incoming/in.csv", &spec).unwrap().id;
        let mut first_reduce = true;
        loop {
            let task = {
                let mut q = queue.0.lock().unwrap();
                match q.pop_front() {
                    Some(t) => t,
                    None => break,
                }
            };
            if matches!(task, Task::Reduce { .. }) && first_reduce {
                first_reduce = false;
                let job = p.jobs.get_job(&id).unwrap().unwrap();
                let table = Layout::default().slice_table(&id, 0);
                let has = store.head(&table).is_ok();
                assert_eq!(has, job.range_count > 1, "chunks of {chunk}: tables iff several ranges");
                if drop {
                    store.delete_prefix(&table[..table.len() - 5]).unwrap();
                }
            }
            p.run_task(&task, "owner").unwrap();
        }
        let job = p.jobs.get_job(&id).unwrap().unwrap();
        assert_eq!(job.status, Status::Done, "chunks of {chunk}");
        let keys: Vec<String> = job.outputs.as_ref().unwrap().parts.iter().map(|p| p.key.clone()).collect();
        let out: String = keys.iter().map(|k| support::read(dir.path().join(k))).collect();
        let rows: String = out.split_inclusive('\n').filter(|l| l.trim_end() != header).collect();
        assert_eq!(
            format!("{header}\n{rows}"),
            want,
            "chunks of {chunk}, ranges {}, tables dropped: {drop}",
            job.range_count
        );
        assert!(store.list("_fanfold/").unwrap().is_empty(), "the tables go with the job's working objects");
    }
}

/// A notifier that fails its first `fail` calls and records the rest.
struct Flaky {
    fail: std::sync::atomic::AtomicU32,
    got: std::sync::Mutex<Vec<fanfold_pipeline::notify::JobEvent>>,
}

impl fanfold_pipeline::notify::Notifier for Flaky {
    fn job_ended(&self, event: &fanfold_pipeline::notify::JobEvent) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering;
        if self.fail.load(Ordering::SeqCst) > 0 {
            self.fail.fetch_sub(1, Ordering::SeqCst);
            return Err(StoreError::Io(std::io::Error::other("the bus is down")));
        }
        self.got.lock().unwrap().push(event.clone());
        Ok(())
    }
}

/// End events are at least once: one the notifier could not take when the
/// job ended is sent by a later sweep, once, with the job's figures.
#[test]
fn an_end_event_the_notifier_lost_is_sent_again_by_the_sweeper() {
    let csv = std::fs::read(support::fixture("catalogue.csv")).unwrap();
    let spec = Spec::from_json(&support::read(support::fixture("catalogue.spec.json"))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut p, queue, _) = queued_pipeline(dir.path(), &csv, Config { chunk_size: 100, ..Config::default() });
    let flaky = Arc::new(Flaky { fail: 1.into(), got: Default::default() });
    p.notifier = Some(flaky.clone());
    let id = p.submit("incoming/in.csv", &spec).unwrap().id;
    support::drain_shuffled(&p, &queue, 3, 2, support::OnTaskError::Panic);
    let job = p.jobs.get_job(&id).unwrap().unwrap();
    assert_eq!(job.status, Status::Done);
    assert!(job.announce_pending, "the event did not go out");
    assert!(flaky.got.lock().unwrap().is_empty());
    let policy = fanfold_pipeline::SweepPolicy { dispatch_ms: 1000, ..Default::default() };
    assert!(p.sweep(job.updated_ms + 10, &policy).unwrap().is_empty(), "not while the ender may still send it");
    let did = p.sweep(job.updated_ms + 5000, &policy).unwrap();
    assert_eq!(did.len(), 1, "{did:?}");
    assert!(did[0].contains("end event sent again"), "{did:?}");
    {
        let got = flaky.got.lock().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].job_id.as_str(), got[0].status, got[0].rows), (id.as_str(), Status::Done, job.rows));
        assert!(got[0].groups.is_some_and(|g| g > 0), "the groups come from the summary: {:?}", got[0].groups);
    }
    assert!(!p.jobs.get_job(&id).unwrap().unwrap().announce_pending);
    assert!(p.sweep(job.updated_ms + 9000, &policy).unwrap().is_empty(), "sent once");
    assert_eq!(flaky.got.lock().unwrap().len(), 1);
    // A failed job's event too; and the events of jobs whose notifier took them are never sent twice.
    flaky.fail.store(1, std::sync::atomic::Ordering::SeqCst);
    let bad = "incoming/bad.csv";
    p.input.put(bad, b"sku,name\n\"open").unwrap();
    let bad_id = p.submit(bad, &spec).unwrap().id;
    support::drain_shuffled(&p, &queue, 4, 1, support::OnTaskError::FailJob);
    let failed = p.jobs.get_job(&bad_id).unwrap().unwrap();
    assert_eq!(failed.status, Status::Failed);
    let did = p.sweep(failed.updated_ms + 5000, &policy).unwrap();
    assert!(did.iter().any(|d| d.starts_with(&bad_id)), "{did:?}");
    let got = flaky.got.lock().unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!((got[1].status, got[1].error.is_some()), (Status::Failed, true));
}

#[test]
fn a_reducer_that_cannot_spill_fails_the_job_naming_where() {
    let csv = std::fs::read(support::fixture("catalogue.csv")).unwrap();
    let spec = Spec::from_json(&support::read(support::fixture("catalogue.spec.json"))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("a-file");
    std::fs::write(&not_a_dir, b"x").unwrap();
    let config = Config { chunk_size: 13, merge_fan_in: 2, spill_dir: not_a_dir.clone(), ..Config::default() };
    let data = tempfile::tempdir().unwrap();
    let (p, queue, _) = queued_pipeline(data.path(), &csv, config);
    let id = p.submit("incoming/in.csv", &spec).unwrap().id;
    support::drain_shuffled(&p, &queue, 1, 1, support::OnTaskError::FailJob);
    let job = p.jobs.get_job(&id).unwrap().unwrap();
    assert_eq!(job.status, Status::Failed);
    let error = job.error.unwrap().message;
    assert!(error.contains("spill") && error.contains("a-file"), "{error}");
}

#[test]
fn a_quoted_newline_across_chunk_edges_is_rescanned_not_misread() {
    // A long quoted field full of delimiters and newlines: most chunk starts
    // inside it guess wrong and must be scanned again.
    let mut csv = String::from("k,v\n");
    for i in 0..20 {
        csv += &format!("\"key{i}\",1\n\"x\n{}\",2\n", "a,b\n\"\"c\"\",\n".repeat(i));
    }
    let spec = Spec::from_json(r#"{"group_by":["k"],"aggregates":[{"op":"sum","column":"v","as":"s"}]}"#).unwrap();
    let (_, whole, reruns) = run_shuffled(csv.as_bytes(), &spec, 1 << 20, 1, 1);
    assert_eq!(reruns, 0);
    assert!(whole.as_ref().unwrap().contains("key9,1\n\"x\n\",2\n"), "the quoted group follows the keys");
    for chunk in [1, 2, 5, 13] {
        let (status, out, reruns) = run_shuffled(csv.as_bytes(), &spec, chunk, 7, 1);
        assert_eq!(status, Status::Done);
        assert_eq!(out, whole, "chunk {chunk}");
        assert!(reruns > 0, "chunk {chunk}: some guesses must have been wrong and re-scanned");
    }
}

fn csv_strategy() -> impl Strategy<Value = String> {
    let field = prop_oneof!["[a-c]{0,3}", Just("q\"q".to_string()), Just("n\nl".to_string()), Just("c,m".to_string())];
    let row = (field.clone(), -50i64..50, field);
    proptest::collection::vec(row, 0..40).prop_map(|rows| {
        let q = |s: &str| {
            if s.contains(['"', '\n', ',']) {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s.to_string()
            }
        };
        let mut s = String::from("k,v,t\n");
        for (k, v, t) in rows {
            s += &format!("{},{v},{}\n", q(&k), q(&t));
        }
        s
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn run_file_is_identical_for_any_chunk_size_worker_count_and_range_count(
        csv in csv_strategy(), chunk in 1u64..40, workers in 1usize..5, range_bytes in 1u64..300,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.csv");
        std::fs::write(&input, &csv).unwrap();
        let spec = Spec::from_json(
            r#"{"group_by":["k"],"aggregates":[{"op":"sum","column":"v","as":"s"},{"op":"last","column":"t","as":"l"},{"op":"min","column":"t","as":"m"}]}"#,
        ).unwrap();
        let run = |chunk: u64, workers: usize, range_bytes: u64, out: &str| {
            let opts = RunOptions { chunk_size: chunk, workers, even_waves: false, out_dir: Some(dir.path().join(out)), range_bytes, scan_threads: 1, keep_scans: None };
            let o = run_file(&input, &spec, &opts, |_| {}).unwrap();
            assert_eq!(o.job.status, Status::Done, "{:?}", o.job.error);
            support::parts(&o.out_dir)
        };
        // The same ranges: the same files, byte for byte, for any chunking.
        let whole = run(1 << 30, 1, range_bytes, "whole");
        prop_assert_eq!(run(chunk, workers, range_bytes, "chunked"), whole.clone());
        // Any number of ranges: the same rows in the same order as one range.
        let one = run(chunk, workers, 1 << 40, "one");
        prop_assert_eq!(one.len(), 1);
        prop_assert_eq!(support::rows_of(&whole), support::rows_of(&one));
    }
}

fn manual_pipeline(dir: &std::path::Path, lease_ms: u64) -> (Pipeline, Arc<Queue>, Arc<DirStore>) {
    let csv = std::fs::read(support::fixture("bmat-example.csv")).unwrap();
    queued_pipeline(dir, &csv, Config { chunk_size: 40, inline_limit: 0, lease_ms, ..Config::default() })
}

fn drain(p: &Pipeline, q: &Queue, mut keep: impl FnMut(&Task) -> bool) {
    while let Some(t) = q.pop() {
        if keep(&t) {
            p.run_task(&t, "w").unwrap();
        }
    }
}

#[test]
fn the_sweeper_redispatches_lost_chunks_and_finishes_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let (p, q, _) = manual_pipeline(dir.path(), 60_000);
    let id = p.submit("incoming/in.csv", &Spec::default()).unwrap().id;
    // Chunk 2's task is lost (a crashed worker).
    drain(&p, &q, |t| !matches!(t, Task::Chunk { range, .. } if range.index == 2));
    assert_eq!(p.jobs.get_job(&id).unwrap().unwrap().status, Status::Running);
    let policy = fanfold_pipeline::SweepPolicy { stale_ms: 1000, max_sweeps: 3, ..Default::default() };
    let now = fanfold_pipeline::now_ms();
    assert!(p.sweep(now, &policy).unwrap().is_empty(), "a fresh job is left alone");
    let did = p.sweep(now + 5000, &policy).unwrap();
    assert_eq!(did.len(), 1);
    assert!(did[0].contains("chunks 2 of 5 did not finish"), "{did:?}");
    drain(&p, &q, |_| true);
    let job = p.jobs.get_job(&id).unwrap().unwrap();
    assert_eq!(job.status, Status::Done);
    assert_eq!(
        support::read(dir.path().join(format!("results/{id}/data/part-00000-00000.csv"))),
        support::read(support::fixture("bmat-example.expected.csv"))
    );
}

#[test]
fn a_planner_or_reducer_that_died_is_replaced_by_the_sweeper() {
    let dir = tempfile::tempdir().unwrap();
    let (p, q, store) = manual_pipeline(dir.path(), 50);
    let id = p.submit("incoming/in.csv", &Spec::default()).unwrap().id;
    drain(&p, &q, |t| matches!(t, Task::Chunk { .. }));
    // The planner took the lease and died.
    let now = fanfold_pipeline::now_ms();
    assert!(p.jobs.take_lease(&id, "dead", now, now + 50).unwrap());
    let policy = fanfold_pipeline::SweepPolicy { stale_ms: 1000, max_sweeps: 5, ..Default::default() };
    assert!(p.sweep(now, &policy).unwrap().is_empty(), "the lease still holds");
    let did = p.sweep(now + 100, &policy).unwrap();
    assert!(did[0].contains("the plan did not finish"), "{did:?}");
    std::thread::sleep(std::time::Duration::from_millis(60)); // the new planner runs on the real clock
    drain(&p, &q, |t| matches!(t, Task::Plan { .. }));
    // A reducer took its range, wrote a bogus part and died; the other reduce tasks were lost.
    let now = fanfold_pipeline::now_ms();
    assert!(p.jobs.take_work(&id, Stage::Reduce, 0, "dead", now, now + 50).unwrap());
    store.put(&format!("results/{id}/data/part-00000-00000.csv"), b"half a file").unwrap();
    assert!(p.sweep(now, &policy).unwrap().is_empty(), "the range lease still holds");
    let did = p.sweep(now + 100, &policy).unwrap();
    assert!(did[0].contains("key ranges 0 of 1 did not finish"), "{did:?}");
    std::thread::sleep(std::time::Duration::from_millis(60));
    drain(&p, &q, |_| true);
    assert_eq!(p.jobs.get_job(&id).unwrap().unwrap().status, Status::Done);
    assert_eq!(
        support::read(dir.path().join(format!("results/{id}/data/part-00000-00000.csv"))),
        support::read(support::fixture("bmat-example.expected.csv"))
    );
    assert!(store.list("_fanfold/").unwrap().is_empty(), "partials cleaned up");
}

/// A pipeline on a CSV of 2,500 chunks of 32 bytes (three dispatch slices),
/// with a queue drained by hand, and the rows a healthy run must give.
fn three_slices(dir: &std::path::Path) -> (Pipeline, Arc<Queue>, Arc<DirStore>) {
    three_slices_with(dir, Config::default().dispatch_budget_ms)
}

/// [`three_slices`] with a dispatcher's time budget.
fn three_slices_with(dir: &std::path::Path, dispatch_budget_ms: u64) -> (Pipeline, Arc<Queue>, Arc<DirStore>) {
    let mut csv = String::from("Song,Date,Number of Plays\n");
    for i in 0..2_500u32 {
        // 32 bytes a line: a chunk each
        csv.push_str(&format!("s{:08},2020-01-{:02},{:010}\n", i % 1_777, 1 + i % 28, i % 100));
    }
    queued_pipeline(
        dir,
        csv.as_bytes(),
        Config { chunk_size: 32, inline_limit: 0, dispatch_budget_ms, ..Config::default() },
    )
}

/// Runs every queued task, counting the chunk tasks run per chunk index.
fn drain_counting(p: &Pipeline, q: &Queue, counts: &mut std::collections::BTreeMap<u32, u32>) {
    while let Some(t) = q.pop() {
        if let Task::Chunk { range, .. } = &t {
            *counts.entry(range.index).or_default() += 1;
        }
        p.run_task(&t, "w").unwrap();
    }
}

fn result_rows(store: &DirStore, id: &str) -> String {
    let mut out = String::new();
    for o in store.list(&format!("results/{id}/data/part-")).unwrap() {
        let mut v = String::new();
        std::io::Read::read_to_string(&mut store.get_range(&o.key, 0, None).unwrap(), &mut v).unwrap();
        out.push_str(v.split_once('\n').map_or("", |(_, rows)| rows));
    }
    out
}

#[test]
fn chunk_tasks_fan_out_through_dispatch_slices_each_sent_once() {
    let dir = tempfile::tempdir().unwrap();
    let (p, q, store) = three_slices(dir.path());
    let id = p.submit("incoming/in.csv", &Spec::default()).unwrap().id;
    let job = p.jobs.get_job(&id).unwrap().unwrap();
    assert_eq!((job.chunk_count, job.slice_count, job.slices_done), (2_500, 3, 1), "the splitter sent slice 0");
    let queued: Vec<Task> = q.0.lock().unwrap().iter().cloned().collect();
    let dispatches: Vec<u32> =
        queued.iter().filter_map(|t| if let Task::Dispatch { slice, .. } = t { Some(*slice) } else { None }).collect();
    assert_eq!(dispatches, [1, 2]);
    assert_eq!(queued.len(), 2 + 1_000);
    // A repeated event (a duplicate splitter) sends slice 1 itself; the queued dispatch of it then finds it done.
    assert!(!p.submit("incoming/in.csv", &Spec::default()).unwrap().new);
    assert_eq!(p.jobs.get_job(&id).unwrap().unwrap().slices_done, 2);
    let mut counts = std::collections::BTreeMap::new();
    drain_counting(&p, &q, &mut counts);
    let job = p.jobs.get_job(&id).unwrap().unwrap();
    assert_eq!(job.status, Status::Done);
    assert_eq!(job.slices_done, 3);
    assert_eq!(counts.len(), 2_500, "every chunk ran");
    assert!(counts.values().all(|&n| n == 1), "and none twice: {:?}", counts.iter().find(|(_, &n)| n != 1));
    assert!(job.dispatched_ms.is_some());
    let summary: serde_json::Value =
        serde_json::from_str(&support::read(dir.path().join(format!("results/{id}/summary.json")))).unwrap();
    assert!(summary["timings_ms"]["dispatch"].as_u64().unwrap() <= summary["timings_ms"]["total"].as_u64().unwrap());
    assert!(!result_rows(&store, &id).is_empty());
}

#[test]
fn a_dispatcher_that_died_mid_slice_is_resumed_where_it_stopped() {
    let healthy = {
        let dir = tempfile::tempdir().unwrap();
        let (p, q, store) = three_slices(dir.path());
        let id = p.submit("incoming/in.csv", &Spec::default()).unwrap().id;
        drain(&p, &q, |_| true);
        assert_eq!(p.jobs.get_job(&id).unwrap().unwrap().status, Status::Done);
        result_rows(&store, &id)
    };
    let dir = tempfile::tempdir().unwrap();
    let (p, q, store) = three_slices(dir.path());
    let id = p.submit("incoming/in.csv", &Spec::default()).unwrap().id;
    // Slice 1's dispatcher took its lease, sent 100 chunk tasks, recorded them, sent 100 more and died.
    let now = fanfold_pipeline::now_ms();
    let mut queued: Vec<Task> =
        q.0.lock().unwrap().drain(..).filter(|t| !matches!(t, Task::Dispatch { slice: 1, .. })).collect();
    assert!(p.jobs.take_work(&id, Stage::Dispatch, 1, "dead", now, now + 50).unwrap());
    assert!(p.jobs.work_progress(&id, Stage::Dispatch, 1, "dead", 100, now, now + 50).unwrap());
    let job = p.jobs.get_job(&id).unwrap().unwrap();
    queued.extend((1_000..1_200).map(|i| Task::Chunk {
        job: id.clone(),
        range: job.chunk(i).unwrap(),
        state: fanfold_engine::StartState::Guess,
        member: None,
    }));
    q.0.lock().unwrap().extend(queued);
    let mut counts = std::collections::BTreeMap::new();
    drain_counting(&p, &q, &mut counts);
    let job = p.jobs.get_job(&id).unwrap().unwrap();
    assert_eq!((job.status, job.slices_done, job.chunks_done), (Status::Running, 2, 1_700));
    let policy = fanfold_pipeline::SweepPolicy { dispatch_ms: 1_000, ..Default::default() };
    assert!(p.sweep(now + 10, &policy).unwrap().is_empty(), "a fresh job is left alone");
    let did = p.sweep(now + 5_000, &policy).unwrap();
    assert!(did[0].contains("dispatch slices 1 of 3 did not finish"), "{did:?}");
    std::thread::sleep(std::time::Duration::from_millis(60)); // the dead dispatcher's lease runs out on the real clock
    drain_counting(&p, &q, &mut counts);
    let job = p.jobs.get_job(&id).unwrap().unwrap();
    assert_eq!((job.status, job.slices_done), (Status::Done, 3));
    assert_eq!(counts.len(), 2_500, "every chunk ran");
    let twice: Vec<u32> = counts.iter().filter(|(_, &n)| n > 1).map(|(&i, _)| i).collect();
    assert_eq!(twice, (1_100..1_200).collect::<Vec<_>>(), "only the tasks sent after the last record went twice");
    assert_eq!(result_rows(&store, &id), healthy, "and each chunk counted once");
}

#[test]
fn a_dispatcher_out_of_time_hands_the_rest_of_its_slice_on_and_nothing_is_sent_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (p, q, store) = three_slices_with(dir.path(), 0); // every progress record is past the budget
    let id = p.submit("incoming/in.csv", &Spec::default()).unwrap().id;
    let queued: Vec<Task> = q.0.lock().unwrap().iter().cloned().collect();
    let chunks = queued.iter().filter(|t| matches!(t, Task::Chunk { .. })).count();
    assert_eq!(chunks, fanfold_pipeline::PROGRESS_EVERY as usize, "the splitter sent one progress step of slice 0");
    assert!(
        matches!(queued.last(), Some(Task::Dispatch { slice: 0, .. })),
        "and handed the rest on: {:?}",
        queued.last()
    );
    let job = p.jobs.get_job(&id).unwrap().unwrap();
    assert_eq!(job.slices_done, 0);
    let mut counts = std::collections::BTreeMap::new();
    let mut dispatchers = 0;
    while let Some(t) = q.pop() {
        match &t {
            Task::Chunk { range, .. } => *counts.entry(range.index).or_insert(0) += 1,
            Task::Dispatch { .. } => dispatchers += 1,
            _ => {}
        }
        p.run_task(&t, "w").unwrap();
    }
    let job = p.jobs.get_job(&id).unwrap().unwrap();
    assert_eq!((job.status, job.slices_done), (Status::Done, 3));
    assert_eq!(counts.len(), 2_500, "every chunk ran");
    assert!(counts.values().all(|&n| n == 1), "and none twice: {:?}", counts.iter().find(|(_, &n)| n != 1));
    // 25 hundreds sent by 25 invocations: the splitter, slices 1 and 2's
    // first dispatch tasks, and 9 + 9 + 4 hand-offs (the last hundred of a slice marks it done instead).
    assert_eq!(dispatchers, 2 + 9 + 9 + 4, "one dispatch task per hand-off");
    let healthy = {
        let dir = tempfile::tempdir().unwrap();
        let (p, q, store) = three_slices(dir.path());
        let id = p.submit("incoming/in.csv", &Spec::default()).unwrap().id;
        drain(&p, &q, |_| true);
        result_rows(&store, &id)
    };
    assert_eq!(result_rows(&store, &id), healthy);
}

#[test]
fn the_sweeper_sends_each_missing_chunk_once_a_page_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let (p, q, _) = three_slices(dir.path());
    let id = p.submit("incoming/in.csv", &Spec::default()).unwrap().id;
    // Every dispatcher runs; of the chunk tasks only every seventh does: the
    // records of the others are missing or (chunk 1,000 on) interleaved.
    drain(&p, &q, |t| match t {
        Task::Chunk { range, .. } => range.index % 7 == 0,
        _ => true,
    });
    let policy = fanfold_pipeline::SweepPolicy { stale_ms: 1000, ..Default::default() };
    let did = p.sweep(fanfold_pipeline::now_ms() + 5_000, &policy).unwrap();
    assert!(did[0].contains("chunks 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, … of 2500 did not finish"), "{did:?}");
    let mut sent: Vec<u32> =
        q.0.lock()
            .unwrap()
            .iter()
            .map(|t| match t {
                Task::Chunk { range, .. } => range.index,
                other => panic!("{other:?}"),
            })
            .collect();
    sent.sort_unstable();
    assert_eq!(sent, (0..2_500).filter(|i| i % 7 != 0).collect::<Vec<_>>(), "each missing chunk once");
    drain(&p, &q, |_| true);
    assert_eq!(p.jobs.get_job(&id).unwrap().unwrap().status, Status::Done);
}

#[test]
fn a_job_repaired_again_and_again_while_it_moves_is_not_failed() {
    let dir = tempfile::tempdir().unwrap();
    let (p, q, _) = manual_pipeline(dir.path(), 60_000);
    let id = p.submit("incoming/in.csv", &Spec::default()).unwrap().id;
    let policy = fanfold_pipeline::SweepPolicy { stale_ms: 10, max_sweeps: 1, ..Default::default() };
    let mut now = fanfold_pipeline::now_ms();
    q.0.lock().unwrap().clear(); // every chunk task is lost...
    for round in 0..5 {
        now += 1000;
        let did = p.sweep(now, &policy).unwrap();
        assert!(did.len() == 1 && did[0].contains("dispatched again"), "round {round}: {did:?}");
        // ...but one of those each repair sends gets through.
        let one = q.pop().unwrap();
        q.0.lock().unwrap().clear();
        p.run_task(&one, "w").unwrap();
    }
    drain(&p, &q, |_| true);
    let job = p.jobs.get_job(&id).unwrap().unwrap();
    assert_eq!((job.status, job.sweeps), (Status::Done, 5), "five repairs, each after progress: {:?}", job.error);
}

#[test]
fn a_splitter_that_died_before_dispatching_is_repaired_within_the_dispatch_time() {
    let dir = tempfile::tempdir().unwrap();
    let (p, q, _) = three_slices(dir.path());
    let id = p.submit("incoming/in.csv", &Spec::default()).unwrap().id;
    q.0.lock().unwrap().clear(); // the slice tasks and slice 0's chunk tasks were never sent...
    let now = fanfold_pipeline::now_ms();
    // ...and slice 0 is marked done only because this splitter got that far; the others have no record.
    let policy = fanfold_pipeline::SweepPolicy { dispatch_ms: 1_000, ..Default::default() };
    let did = p.sweep(now + 5_000, &policy).unwrap();
    assert!(did[0].contains("dispatch slices 1, 2 of 3 did not finish"), "{did:?}");
    drain(&p, &q, |_| true);
    let job = p.jobs.get_job(&id).unwrap().unwrap();
    assert_eq!((job.status, job.slices_done, job.chunks_done), (Status::Running, 3, 1_500));
    // Slice 0's chunks were lost after it was marked dispatched: the stale timer finds them.
    let did = p.sweep(now + 30 * 60 * 1000, &policy).unwrap();
    assert!(did[0].contains("chunks 0, 1, 2"), "{did:?}");
    drain(&p, &q, |_| true);
    assert_eq!(p.jobs.get_job(&id).unwrap().unwrap().status, Status::Done);
}

#[test]
fn a_job_that_never_progresses_fails_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (p, q, _) = manual_pipeline(dir.path(), 60_000);
    let id = p.submit("incoming/in.csv", &Spec::default()).unwrap().id;
    let policy = fanfold_pipeline::SweepPolicy { stale_ms: 10, max_sweeps: 2, ..Default::default() };
    let mut now = fanfold_pipeline::now_ms();
    for _ in 0..3 {
        now += 1000;
        p.sweep(now, &policy).unwrap();
        q.0.lock().unwrap().clear(); // every dispatched task is lost
    }
    let job = p.jobs.get_job(&id).unwrap().unwrap();
    assert_eq!(job.status, Status::Failed);
    let e = job.error.unwrap();
    assert!(!e.rejected);
    assert!(e.message.contains("chunks 0, 1, 2, 3, 4 of 5 did not finish after 3 attempts"), "{}", e.message);
}

/// `run_file` on `csv` with `spec`: the result's part files.
fn run_csv(
    dir: &std::path::Path,
    csv: &str,
    spec: &Spec,
    chunk: u64,
    range_bytes: u64,
    out: &str,
) -> Vec<(String, String)> {
    let input = dir.join("skew.csv");
    std::fs::write(&input, csv).unwrap();
    let opts = RunOptions {
        chunk_size: chunk,
        workers: 2,
        even_waves: false,
        out_dir: Some(dir.join(out)),
        range_bytes,
        scan_threads: 1,
        keep_scans: None,
    };
    let o = run_file(&input, spec, &opts, |_| {}).unwrap();
    assert_eq!(o.job.status, Status::Done, "{:?}", o.job.error);
    support::parts(&o.out_dir)
}

/// Rows per key range (from the part names `part-RRRRR-SSSSS.csv`).
fn rows_per_range(parts: &[(String, String)]) -> Vec<usize> {
    let mut v: Vec<usize> = Vec::new();
    for (name, text) in parts {
        let r: usize = name[5..10].parse().unwrap();
        if v.len() <= r {
            v.resize(r + 1, 0);
        }
        v[r] += text.lines().count() - 1;
    }
    v
}

fn plays_spec() -> Spec {
    Spec::from_json(r#"{"group_by":["k"],"aggregates":[{"op":"sum","column":"v","as":"s"},{"op":"count","as":"n"}]}"#)
        .unwrap()
}

#[test]
fn skew_a_hot_key_a_sorted_file_one_group_and_an_empty_result() {
    let dir = tempfile::tempdir().unwrap();
    let spec = plays_spec();
    // 90% of the rows on one key.
    let mut hot = String::from("k,v\n");
    for i in 0..30_000u64 {
        if i % 10 == 0 {
            hot += &format!("key{:07},{}\n", (i * 7919) % 1_000_003, i % 7);
        } else {
            hot += &format!("hot,{}\n", i % 5);
        }
    }
    // Sorted by the group key: every chunk's keys lie in one range.
    let mut sorted = String::from("k,v\n");
    for i in 0..30_000u64 {
        sorted += &format!("k{i:06},{}\n", i % 3);
    }
    for (name, csv) in [("hot", &hot), ("sorted", &sorted)] {
        let one = run_csv(dir.path(), csv, &spec, 1 << 30, 1 << 40, &format!("{name}-one"));
        assert_eq!(one.len(), 1);
        let want = support::rows_of(&one);
        for chunk in [997u64, 20_000] {
            let parts = run_csv(dir.path(), csv, &spec, chunk, 4096, &format!("{name}-{chunk}"));
            assert_eq!(support::rows_of(&parts), want, "{name}, chunk {chunk}");
            let per = rows_per_range(&parts);
            assert!(per.len() >= 8, "{name}: {} ranges", per.len());
            let groups: usize = per.iter().sum();
            let mean = groups / per.len();
            assert!(per.iter().all(|&n| n > 0 && n < 4 * mean), "{name}: every range gets a share: {per:?}");
        }
    }
    // One group in the whole file: one range, one row.
    let mut one_group = String::from("k,v\n");
    for i in 0..5000 {
        one_group += &format!("only,{}\n", i % 3);
    }
    let parts = run_csv(dir.path(), &one_group, &spec, 333, 16, "one-group");
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0].1, "k,s,n\nonly,4999,5000\n");
    // An empty result (every row filtered out) is one header-only part; so is a file with a header only.
    let filtered = Spec::from_json(
        r#"{"group_by":["k"],"aggregates":[{"op":"count","as":"n"}],"where":[{"column":"k","op":"=","value":"none"}]}"#,
    )
    .unwrap();
    let parts = run_csv(dir.path(), &sorted, &filtered, 1000, 16, "empty");
    assert_eq!(parts, [("part-00000-00000.csv".to_string(), "k,n\n".to_string())]);
    let parts = run_csv(dir.path(), "k,v\n", &spec, 1, 16, "header-only");
    assert_eq!(parts, [("part-00000-00000.csv".to_string(), "k,s,n\n".to_string())]);
}

#[test]
fn an_input_replaced_during_the_job_fails_it_instead_of_mixing_two_versions() {
    let dir = tempfile::tempdir().unwrap();
    let (p, q, store) = manual_pipeline(dir.path(), 60_000);
    let id = p.submit("incoming/in.csv", &Spec::default()).unwrap().id;
    let original = std::fs::read(support::fixture("bmat-example.csv")).unwrap();
    // The same size, other plays: `tr 0-9 1-90`.
    let other: Vec<u8> =
        original.iter().map(|&b| if b.is_ascii_digit() { b'0' + (b - b'0' + 1) % 10 } else { b }).collect();
    let mut chunks_run = 0;
    let mut changed = None;
    while let Some(t) = q.pop() {
        if matches!(t, Task::Chunk { .. }) {
            chunks_run += 1;
            if chunks_run == 2 {
                store.put("incoming/in.csv", &other).unwrap();
            }
        }
        match p.run_task(&t, "w") {
            Ok(()) => {}
            Err(e) => {
                assert!(!e.retryable(), "a changed input is not retried: {e}");
                changed.get_or_insert(e.to_string());
            }
        }
    }
    let msg = changed.expect("a read of the replaced input fails");
    assert!(msg.contains("incoming/in.csv changed after the job started"), "{msg}");
    assert_ne!(p.jobs.get_job(&id).unwrap().unwrap().status, Status::Done, "never DONE with two versions mixed");
    // The new version is a new job, with its own result.
    let again = p.submit("incoming/in.csv", &Spec::default()).unwrap();
    assert!(again.new && again.id != id);
    drain(&p, &q, |_| true);
    assert_eq!(p.jobs.get_job(&again.id).unwrap().unwrap().status, Status::Done);
}

/// Runs `csv` through a queued pipeline with `config`: the job, its result
/// rows and its summary without the timings.
fn run_with_config(csv: &[u8], spec: &Spec, config: Config) -> (Status, Option<String>, String, Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let (p, queue, store) = queued_pipeline(dir.path(), csv, config);
    let id = p.submit("incoming/in.csv", spec).unwrap().id;
    drain(&p, &queue, |_| true);
    let job = p.jobs.get_job(&id).unwrap().unwrap();
    if job.status != Status::Done {
        return (job.status, None, String::new(), job.error.map(|e| e.message));
    }
    let summary_key = format!("{}summary.json", Layout::default().results(&id));
    let mut summary: fanfold_pipeline::Summary =
        serde_json::from_str(&support::read(dir.path().join(summary_key))).unwrap();
    summary.timings_ms = fanfold_pipeline::Timings { split: 0, dispatch: 0, chunks: 0, merge: 0, total: 0 };
    summary.source.clear(); // the temporary directory's path
    if let Some(t) = &mut summary.athena {
        t.ddl = t.ddl.replace(&dir.path().display().to_string(), "DIR"); // and the table's location
    }
    // How many chunks guessed their start wrong depends on how many bytes
    // their first read gave the guess (a piece reads less), not the result.
    summary.chunks_rerun = 0;
    let out = result_rows(&store, &id);
    // The job id hashes the file's identity; the rest of the summary must match.
    (job.status, Some(out), serde_json::to_string(&summary).unwrap().replace(&id, "JOB"), None)
}

#[test]
fn a_worker_that_scans_in_pieces_with_several_gets_in_flight_gives_the_same_job() {
    let catalogue = std::fs::read(support::fixture("catalogue.csv")).unwrap();
    let catalogue_spec = Spec::from_json(&support::read(support::fixture("catalogue.spec.json"))).unwrap();
    // Long quoted fields full of delimiters and newlines: pieces guess wrong.
    let mut quoted = String::from("k,v\n");
    for i in 0..40 {
        quoted += &format!("\"key{}\",1\n\"x\n{}\",2\n", i % 7, "a,b\n\"\"c\"\",\n".repeat(i % 9));
    }
    let sum = Spec::from_json(
        r#"{"group_by":["k"],"aggregates":[{"op":"sum","column":"v","as":"s"},{"op":"first","column":"v","as":"f"},
            {"op":"last","column":"v","as":"l"}]}"#,
    )
    .unwrap();
    // Bad rows, skipped: the counts and samples (with their line numbers) must match.
    let mut bad = String::from("k,v\n");
    for i in 0..400 {
        bad += &match i % 37 {
            0 => format!("k{},x{i}\n", i % 5),
            1 => "short\n".to_string(),
            _ => format!("k{},{i}\n", i % 11),
        };
    }
    let mut skip = sum.clone();
    skip.on_bad_row = fanfold_engine::OnBadRow::Skip;
    let cases: [(&[u8], &Spec); 5] = [
        (&catalogue, &catalogue_spec),
        (quoted.as_bytes(), &sum),
        (bad.as_bytes(), &skip),
        // Fail mode: the same error, naming the same line.
        (bad.as_bytes(), &sum),
        (b"k,v\n", &sum),
    ];
    for (n, (csv, spec)) in cases.iter().enumerate() {
        for chunk in [1u64 << 30, 97] {
            let base = Config { chunk_size: chunk, inline_limit: 64, ..Config::default() };
            let want = run_with_config(csv, spec, base.clone());
            for (threads, min_piece, streams, block) in [(2, 1, 1, 8), (3, 7, 3, 5), (5, 1, 4, 64), (4, 40, 2, 1)] {
                let config = Config {
                    scan_threads: threads,
                    min_piece,
                    read_streams: streams,
                    read_block: block,
                    ..base.clone()
                };
                let got = run_with_config(csv, spec, config);
                assert_eq!(got, want, "case {n}, chunk {chunk}, {threads} threads, {streams} streams");
            }
        }
        let (status, _, _, error) = run_with_config(csv, spec, Config { chunk_size: 97, ..Config::default() });
        assert_eq!(status == Status::Done, n != 3, "case {n}: {error:?}");
    }
}

#[test]
fn an_input_replaced_while_pieces_read_ahead_fails_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let original = std::fs::read(support::fixture("catalogue.csv")).unwrap();
    let config = Config {
        chunk_size: 1 << 20,
        scan_threads: 3,
        min_piece: 64,
        read_streams: 3,
        read_block: 16,
        ..Config::default()
    };
    let spec = Spec::from_json(&support::read(support::fixture("catalogue.spec.json"))).unwrap();
    let (p, q, store) = queued_pipeline(dir.path(), &original, config);
    let id = p.submit("incoming/in.csv", &spec).unwrap().id;
    let mut changed = None;
    while let Some(t) = q.pop() {
        if matches!(t, Task::Chunk { .. }) {
            let mut other = original.clone();
            other[original.len() / 2] ^= 1; // same size, another version
            store.put("incoming/in.csv", &other).unwrap();
        }
        if let Err(e) = p.run_task(&t, "w") {
            assert!(!e.retryable(), "a changed input is not retried: {e}");
            changed.get_or_insert(e.to_string());
        }
    }
    let msg = changed.expect("a read of the replaced input fails");
    assert!(msg.contains("incoming/in.csv changed after the job started"), "{msg}");
    assert_ne!(p.jobs.get_job(&id).unwrap().unwrap().status, Status::Done);
}

/// The summary's Athena table types each column by what was written, and
/// `fanfold run` writes its statement beside the summary.
#[test]
fn the_athena_table_is_typed_by_the_values_written() {
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec::from_json(&support::read(support::fixture("catalogue.spec.json"))).unwrap();
    let opts = RunOptions { out_dir: Some(dir.path().join("out")), ..RunOptions::default() };
    let o = run_file(&support::fixture("catalogue.csv"), &spec, &opts, |_| {}).unwrap();
    assert_eq!(o.job.status, Status::Done, "{:?}", o.job.error);
    let t = o.summary.unwrap().athena.expect("a table");
    assert_eq!(t.table, format!("fanfold_{}", o.job.id));
    for col in [
        "`sku` string",
        "`rows` bigint",
        "`price_total` decimal(38,2)",
        "`price_mean` double",
        "`price_min` decimal(38,2)",
        "`name_max` string",
        "`first_name` string",
        "`qty_given` bigint",
    ] {
        assert!(t.ddl.contains(col), "{col} in {}", t.ddl);
    }
    assert_eq!(support::read(o.out_dir.join("athena.sql")), t.ddl);
}
