//! The handlers, called with the sample events in `events/`, over the
//! local adapters (the same ports as on AWS).

use std::path::Path;
use std::sync::Arc;

use fanfold_engine::Spec;
use fanfold_lambda::{faults::Faults, finalizer, splitter, sweeper, worker, Deps, HandlerError};
use fanfold_local::{DirStore, MemoryJobStore};
use fanfold_pipeline::{Config, Layout, ObjectStore, Pipeline, Status, SweepPolicy, Task};
use serde_json::Value;

const BUCKET: &str = "fanfold-data-123456789012";
const KEY: &str = "incoming/plays/2026 exports/plays.csv";

type Queue = fanfold_pipeline::contract::QueueDispatcher;

fn event(name: &str) -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../events").join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn deps(dir: &Path) -> (Deps, Arc<Queue>, Arc<DirStore>) {
    let store = Arc::new(DirStore::new(dir).unwrap());
    let queue = Arc::new(Queue::default());
    let pipeline = Pipeline::new(
        store.clone(),
        store.clone(),
        Arc::new(MemoryJobStore::new()),
        queue.clone(),
        Layout::default(),
        Config { chunk_size: 64, bucket: BUCKET.into(), ..Config::default() },
    );
    let deps =
        Deps { pipeline, default_spec: Spec::default(), sweep: SweepPolicy::default(), faults: Faults::default() };
    (deps, queue, store)
}

fn fixture() -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/bmat-example.csv")).unwrap()
}

/// Runs queued tasks through the worker and finalizer handlers.
fn drain(deps: &Deps, q: &Queue) {
    while let Some(t) = q.pop() {
        let v = serde_json::to_value(&t).unwrap();
        let out = match t {
            Task::Chunk { .. } => worker(serde_json::from_value(v).unwrap(), deps, "req-w"),
            _ => finalizer(serde_json::from_value(v).unwrap(), deps, "req-f"),
        };
        assert_eq!(out.unwrap()["ok"], true);
    }
}

#[test]
fn an_s3_event_delivered_three_times_makes_one_job() {
    let dir = tempfile::tempdir().unwrap();
    let (deps, q, store) = deps(dir.path());
    store.put(KEY, &fixture()).unwrap();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let out = splitter(event("s3-put-incoming.json"), &deps, "req").unwrap();
        assert_eq!(out[0]["key"], KEY, "the key is URL-decoded, + is a space");
        ids.push(out[0]["job"].as_str().unwrap().to_string());
    }
    assert!(ids.iter().all(|i| *i == ids[0]));
    drain(&deps, &q);
    let job = deps.pipeline.jobs.get_job(&ids[0]).unwrap().unwrap();
    assert_eq!(job.status, Status::Done);
    let part =
        std::fs::read_to_string(dir.path().join(format!("results/{}/data/part-00000-00000.csv", ids[0]))).unwrap();
    assert!(part.starts_with("Song,Date,Total Number of Plays for Date\nIn The End,2020-01-01,1500\n"));
}

#[test]
fn test_events_results_keys_and_spec_files_start_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (deps, q, _) = deps(dir.path());
    assert_eq!(splitter(event("s3-test-event.json"), &deps, "r").unwrap()["ignored"], "s3:TestEvent");
    assert_eq!(splitter(event("s3-put-results.json"), &deps, "r").unwrap()[0]["skipped"], "outside incoming/");
    assert_eq!(splitter(event("s3-put-spec.json"), &deps, "r").unwrap()[0]["skipped"], "not a data file");
    assert!(q.0.lock().unwrap().is_empty());
    assert!(deps.pipeline.jobs.active_jobs().unwrap().is_empty());
}

#[test]
fn the_directory_spec_is_used_and_a_bad_one_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (deps, q, store) = deps(dir.path());
    store.put(KEY, &fixture()).unwrap();
    store
        .put(
            "incoming/plays/2026 exports/_spec.json",
            br#"{"group_by":["Song"],"aggregates":[{"op":"count","as":"n"}]}"#,
        )
        .unwrap();
    let id = splitter(event("s3-put-incoming.json"), &deps, "r").unwrap()[0]["job"].as_str().unwrap().to_string();
    drain(&deps, &q);
    let part = std::fs::read_to_string(dir.path().join(format!("results/{id}/data/part-00000-00000.csv"))).unwrap();
    assert_eq!(part, "Song,n\nIn The End,3\nUmbrella,4\n");

    store
        .put("incoming/plays/2026 exports/_spec.json", br#"{"group_by":["Song"],"aggregates":[{"op":"avg"}]}"#)
        .unwrap();
    let id = splitter(event("s3-put-incoming.json"), &deps, "r").unwrap()[0]["job"].as_str().unwrap().to_string();
    let job = deps.pipeline.jobs.get_job(&id).unwrap().unwrap();
    assert_eq!(job.status, Status::Failed);
    let e = job.error.unwrap();
    assert!(e.rejected);
    assert!(e.message.contains("_spec.json: invalid spec: aggregates[0].op"), "{}", e.message);
}

#[test]
fn worker_finalizer_and_sweeper_events_parse_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let (deps, _q, _) = deps(dir.path());
    // Unknown jobs: the worker's step fails for good, so the invocation reports it and does not ask for a retry.
    let w = worker(serde_json::from_value(event("worker-chunk.json")).unwrap(), &deps, "r");
    let e = w.expect_err("an unknown job");
    assert!(!e.retryable, "an unknown job cannot be fixed by retrying");
    // Lambda sees it in the error type, not only in the message.
    let d = lambda_runtime::Diagnostic::from(e);
    assert_eq!(d.error_type, HandlerError::PERMANENT);
    assert!(d.error_message.contains("a retry cannot help"), "{}", d.error_message);
    let retry = HandlerError { message: "throttled".into(), retryable: true };
    assert_eq!(lambda_runtime::Diagnostic::from(retry).error_type, "fanfold.Retryable");
    for e in ["finalizer-plan.json", "finalizer-reduce.json", "finalizer-commit.json"] {
        let f = finalizer(serde_json::from_value(event(e)).unwrap(), &deps, "r");
        assert!(f.is_err_and(|e| !e.retryable), "{e}");
    }
    let s = sweeper(serde_json::from_value(event("sweeper-schedule.json")).unwrap(), &deps, "r").unwrap();
    assert_eq!(s["swept"], serde_json::json!([]));
    // The sweeper's event is typed: what is not a scheduled event does not parse.
    assert!(serde_json::from_value::<aws_lambda_events::event::cloudwatch_events::CloudWatchEvent>(serde_json::json!(
        {}
    ))
    .is_err());
    // A task sent to the wrong function is refused.
    assert!(worker(serde_json::from_value(event("finalizer-plan.json")).unwrap(), &deps, "r").is_err());
    assert!(finalizer(serde_json::from_value(event("worker-chunk.json")).unwrap(), &deps, "r").is_err());
}
