//! The port contract suites against real S3/DynamoDB-compatible servers.

mod emulator;

use emulator::{start, Kind};
use fanfold_aws::{DynamoJobStore, S3Store};
use fanfold_pipeline::contract;

fn s3_contract(kind: Kind) {
    let server = start(kind);
    server.create_bucket("contract");
    // Parts of S3's smallest size, so the contract's 20 MiB object is four.
    let store =
        S3Store::new(&server.config, "contract", server.rt.handle().clone()).with_part_size(fanfold_aws::MIN_PART_SIZE);
    // The ports block on the runtime: call them from a plain thread.
    std::thread::spawn(move || contract::object_store(&store, "prefix/")).join().unwrap();
}

fn dynamo_contract(kind: Kind) {
    let server = start(kind);
    server.create_table("jobs");
    let store = DynamoJobStore::new(&server.config, "jobs", server.rt.handle().clone());
    std::thread::spawn(move || contract::job_store(&store, "0123456789abcdef")).join().unwrap();
}

#[test]
fn s3_store_on_ministack() {
    s3_contract(Kind::Ministack);
}

#[test]
fn s3_store_on_moto() {
    s3_contract(Kind::Moto);
}

#[test]
fn dynamo_job_store_on_ministack() {
    dynamo_contract(Kind::Ministack);
}

#[test]
fn dynamo_job_store_on_moto() {
    dynamo_contract(Kind::Moto);
}

/// Presigned URLs work with a plain HTTP client (curl): PUT uploads, GET downloads.
fn presign(kind: Kind) {
    use fanfold_pipeline::ObjectStore;
    let server = start(kind);
    server.create_bucket("presign");
    let store = S3Store::new(&server.config, "presign", server.rt.handle().clone());
    std::thread::spawn(move || {
        let put = store.presign_put("incoming/up.csv", 300).unwrap();
        assert!(put.contains("X-Amz-Signature="), "{put}");
        let body = std::env::temp_dir().join(format!("fanfold-presign-{kind:?}.csv"));
        std::fs::write(&body, "a,b\n1,2\n").unwrap();
        let up = std::process::Command::new("curl")
            .args(["-fsS", "-X", "PUT", "--upload-file"])
            .arg(&body)
            .arg(&put)
            .output()
            .unwrap();
        assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));
        assert_eq!(store.head("incoming/up.csv").unwrap().size, 8);
        let get = store.presign_get("incoming/up.csv", 300).unwrap();
        let down = std::process::Command::new("curl").args(["-fsS", &get]).output().unwrap();
        assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
        assert_eq!(down.stdout, b"a,b\n1,2\n");
    })
    .join()
    .unwrap();
}

#[test]
fn presigned_urls_on_ministack() {
    presign(Kind::Ministack);
}

#[test]
fn presigned_urls_on_moto() {
    presign(Kind::Moto);
}

/// `LambdaDispatcher` against the emulator's Lambda: async invokes of two
/// recorder functions standing in for the worker and the finalizer.
#[test]
fn lambda_dispatcher_on_ministack() {
    use fanfold_pipeline::Task;
    let server = start(Kind::Ministack);
    let dir = tempfile_dir("dispatch");
    server.create_recorder_function("rec-worker", &dir);
    server.create_recorder_function("rec-finalizer", &dir);
    let d = fanfold_aws::LambdaDispatcher::new(
        &server.config,
        "rec-worker".into(),
        "rec-finalizer".into(),
        server.rt.handle().clone(),
    );
    // (function, task) of every event the functions got so far.
    let received = {
        let dir = dir.clone();
        move || -> Vec<(String, Task)> {
            let mut out = Vec::new();
            for e in std::fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                let Some(stem) = name.strip_suffix(".json") else { continue };
                let function = stem.split('.').next().unwrap().to_string();
                let text = std::fs::read_to_string(&p).unwrap();
                let task = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}: {text}"));
                out.push((function, task));
            }
            out
        }
    };
    let delivered = {
        let received = received.clone();
        move || received().into_iter().map(|(_, t)| t).collect::<Vec<Task>>()
    };
    std::thread::spawn(move || {
        // A dispatch slice is 1,000 chunk tasks.
        contract::dispatcher(&d, &delivered, "lambda", 1_000, std::time::Duration::from_secs(240));
        // Chunk tasks go to the worker, the rest to the finalizer.
        for (function, task) in received() {
            let want = if matches!(task, Task::Chunk { .. }) { "rec-worker" } else { "rec-finalizer" };
            assert_eq!(function, want, "{task:?}");
        }
    })
    .join()
    .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("fanfold-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
