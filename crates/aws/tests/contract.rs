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
