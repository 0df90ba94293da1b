//! The port contract suites against real S3/DynamoDB-compatible servers.

mod emulator;

use emulator::{start, Kind};
use fanfold_aws::{DynamoJobStore, S3Store};
use fanfold_pipeline::contract;

fn s3_contract(kind: Kind) {
    let server = start(kind);
    server.create_bucket("contract");
    let store = S3Store::new(&server.config, "contract", server.rt.handle().clone());
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
