//! `JobStore` on one DynamoDB table. Every condition of the port is a
//! DynamoDB condition expression, so concurrent Lambdas race safely.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem, Update};
use aws_sdk_dynamodb::Client;
use fanfold_engine::{ChunkReport, Head, QuoteState, StartState};
use fanfold_pipeline::{
    ChunkRecord, Created, Job, JobError, JobPage, JobStore, Lease, Outputs, PartialRef, Source, Stage, Status,
    StoreError, WorkRecord,
};
use tokio::runtime::Handle;

use crate::sdk_error;

type Item = HashMap<String, AttributeValue>;

/// Times a conflicting transaction is tried again before the step fails
/// (and Lambda's retry takes over).
const CONFLICT_RETRIES: u32 = 5;

/// Days a job's items are kept (DynamoDB TTL).
const TTL_DAYS: u64 = 30;

/// A retry's claim on a job is taken over after this long: the retry died
/// (the API function that runs it has 29 s).
const RETRY_CLAIM_MS: u64 = 60 * 1000;

/// The partition that lists jobs newest first (`sk` = [`Job::list_key`]).
const LIST_PK: &str = "jobs";
/// The partition of jobs not known to have ended (the sweeper's work list).
const ACTIVE_PK: &str = "active";

#[derive(Clone)]
pub struct DynamoJobStore {
    client: Client,
    table: String,
    rt: Handle,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}
fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}
const fn status_name(st: Status) -> &'static str {
    match st {
        Status::Splitting => "SPLITTING",
        Status::Running => "RUNNING",
        Status::Merging => "MERGING",
        Status::Done => "DONE",
        Status::Failed => "FAILED",
        Status::Cancelled => "CANCELLED",
    }
}
/// A status as the item stores it.
fn status(st: Status) -> AttributeValue {
    s(status_name(st))
}
fn status_of(name: &str) -> Option<Status> {
    [Status::Splitting, Status::Running, Status::Merging, Status::Done, Status::Failed, Status::Cancelled]
        .into_iter()
        .find(|st| status_name(*st) == name)
}
fn get_s<'a>(item: &'a Item, k: &str) -> Option<&'a str> {
    item.get(k).and_then(|v| v.as_s().ok()).map(String::as_str)
}
fn get_n(item: &Item, k: &str) -> Option<u64> {
    item.get(k).and_then(|v| v.as_n().ok()).and_then(|x| x.parse().ok())
}
fn corrupt(what: &str) -> StoreError {
    StoreError::Other { message: format!("malformed job item: {what}"), retryable: false }
}
fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("job records serialize")
}
fn parse<T: serde::de::DeserializeOwned>(item: &Item, k: &str) -> Result<Option<T>, StoreError> {
    match get_s(item, k) {
        None => Ok(None),
        Some(t) => serde_json::from_str(t).map(Some).map_err(|e| corrupt(&format!("{k}: {e}"))),
    }
}

fn now_s() -> u64 {
    fanfold_pipeline::now_ms() / 1000
}

fn job_key(id: &str) -> (AttributeValue, AttributeValue) {
    (s(format!("job#{id}")), s("job"))
}

fn is_condition_failed<E: aws_sdk_dynamodb::error::ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    matches!(e, SdkError::ServiceError(se) if se.err().code() == Some("ConditionalCheckFailedException"))
}

/// A conditional write's answer: `false` if its condition failed.
fn conditional<O, E>(
    r: Result<O, SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>>,
    what: &str,
) -> Result<bool, StoreError>
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match r {
        Ok(_) => Ok(true),
        Err(e) if is_condition_failed(&e) => Ok(false),
        Err(e) => Err(sdk_error(what, e)),
    }
}

fn job_from(item: &Item) -> Result<Job, StoreError> {
    let id = get_s(item, "id").ok_or_else(|| corrupt("id"))?.to_string();
    let source: Source = parse(item, "source")?.ok_or_else(|| corrupt("source"))?;
    let lease = match (get_s(item, "lease_owner"), get_n(item, "lease_until")) {
        (Some(o), Some(u)) => Some(Lease { owner: o.to_string(), until_ms: u }),
        _ => None,
    };
    Ok(Job {
        id,
        status: get_s(item, "status").and_then(status_of).ok_or_else(|| corrupt("status"))?,
        source,
        spec: get_s(item, "spec").unwrap_or("{}").to_string(),
        head: parse::<Head>(item, "head")?,
        chunk_size: get_n(item, "chunk_size").unwrap_or(0),
        chunk_count: get_n(item, "chunk_count").unwrap_or(0) as u32,
        chunks_done: get_n(item, "chunks_done").unwrap_or(0) as u32,
        rows: get_n(item, "rows").unwrap_or(0),
        bytes_done: get_n(item, "bytes_done").unwrap_or(0),
        chunks_rerun: get_n(item, "chunks_rerun").unwrap_or(0) as u32,
        sweeps: get_n(item, "sweeps").unwrap_or(0) as u32,
        swept_ms: get_n(item, "swept_ms"),
        announce_pending: matches!(item.get("announce_pending"), Some(AttributeValue::Bool(true))),
        stuck_sweeps: get_n(item, "stuck_sweeps").unwrap_or(0) as u32,
        swept_progress: get_n(item, "swept_progress").unwrap_or(0),
        slice_count: get_n(item, "slice_count").unwrap_or(0) as u32,
        slices_done: get_n(item, "slices_done").unwrap_or(0) as u32,
        dispatched_ms: get_n(item, "dispatched_ms"),
        range_count: get_n(item, "range_count").unwrap_or(0) as u32,
        ranges_done: get_n(item, "ranges_done").unwrap_or(0) as u32,
        merging_ms: get_n(item, "merging_ms"),
        error: parse::<JobError>(item, "error")?,
        outputs: parse::<Outputs>(item, "outputs")?,
        lease,
        created_ms: get_n(item, "created_ms").unwrap_or(0),
        running_ms: get_n(item, "running_ms"),
        updated_ms: get_n(item, "updated_ms").unwrap_or(0),
    })
}

fn chunk_sk(i: u32) -> String {
    format!("chunk#{i:07}")
}
/// How a stage's records and counters are named: sort-key prefix, count
/// and done counter on the job item, and the statuses it works in (take,
/// then progress and done).
struct StageNames {
    prefix: &'static str,
    count: &'static str,
    done: &'static str,
    take: &'static str,
    finish: [&'static str; 2],
}

fn names(stage: Stage) -> StageNames {
    match stage {
        Stage::Dispatch => StageNames {
            prefix: "slice#",
            count: "slice_count",
            done: "slices_done",
            take: status_name(Status::Running),
            finish: [status_name(Status::Running), status_name(Status::Merging)],
        },
        Stage::Reduce => StageNames {
            prefix: "range#",
            count: "range_count",
            done: "ranges_done",
            take: status_name(Status::Merging),
            finish: [status_name(Status::Merging), status_name(Status::Merging)],
        },
    }
}
fn work_sk(stage: Stage, i: u32) -> String {
    format!("{}{i:07}", names(stage).prefix)
}
fn get_bool(item: &Item, k: &str) -> Option<bool> {
    item.get(k).and_then(|v| v.as_bool().ok()).copied()
}

fn chunk_from(item: &Item) -> Result<ChunkRecord, StoreError> {
    let report: ChunkReport = parse(item, "report")?.ok_or_else(|| corrupt("report"))?;
    let partial = match (item.get("partial"), get_s(item, "partial_key")) {
        (Some(AttributeValue::B(b)), _) => PartialRef::Inline(b.clone().into_inner()),
        (_, Some(k)) => PartialRef::Object(k.to_string()),
        _ => return Err(corrupt("chunk without a partial")),
    };
    let state = get_s(item, "state").and_then(StartState::of_code).ok_or_else(|| corrupt("chunk state"))?;
    let mut r = ChunkRecord::new(report, partial, state);
    r.done = get_bool(item, "done").unwrap_or(false);
    r.rerun = match get_s(item, "rerun") {
        None => None,
        Some(code) => Some(QuoteState::of_code(code).ok_or_else(|| corrupt("chunk rerun state"))?),
    };
    Ok(r)
}

fn work_from(stage: Stage, item: &Item) -> Result<WorkRecord, StoreError> {
    let sk = get_s(item, "sk").ok_or_else(|| corrupt("work key"))?;
    let index = sk.strip_prefix(names(stage).prefix).and_then(|n| n.parse().ok()).ok_or_else(|| corrupt("work key"))?;
    let lease = match (get_s(item, "lease_owner"), get_n(item, "lease_until")) {
        (Some(o), Some(u)) => Some(Lease { owner: o.to_string(), until_ms: u }),
        _ => None,
    };
    let next = get_n(item, "next").unwrap_or(0) as u32;
    Ok(WorkRecord { index, done: get_bool(item, "done").unwrap_or(false), lease, next })
}

/// One update of a transaction.
struct Change<'a> {
    sk: String,
    update: &'a str,
    condition: &'a str,
    names: &'a [(&'a str, &'a str)],
    values: Vec<(&'a str, AttributeValue)>,
}

impl DynamoJobStore {
    pub fn new(config: &aws_config::SdkConfig, table: impl Into<String>, rt: Handle) -> Self {
        let conf = aws_sdk_dynamodb::config::Builder::from(config).interceptor(crate::requests::CountRequests).build();
        DynamoJobStore { client: Client::from_conf(conf), table: table.into(), rt }
    }

    /// A conditional update on the job item: `Ok(false)` if the condition failed.
    /// The ids in the active partition: jobs not known to have ended, and
    /// ended ones whose end event is not out yet.
    fn active_ids(&self) -> Result<Vec<String>, StoreError> {
        Ok(self
            .query_items(ACTIVE_PK.into(), None, usize::MAX)?
            .iter()
            .filter_map(|i| get_s(i, "sk").map(str::to_string))
            .collect())
    }

    fn update(
        &self,
        id: &str,
        update: &str,
        condition: &str,
        names: &[(&str, &str)],
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<bool, StoreError> {
        let (pk, sk) = job_key(id);
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", pk)
            .key("sk", sk)
            .update_expression(update)
            .condition_expression(condition);
        for (k, v) in names {
            req = req.expression_attribute_names(*k, *v);
        }
        for (k, v) in values {
            req = req.expression_attribute_values(k, v);
        }
        conditional(self.rt.block_on(req.send()), "DynamoDB UpdateItem")
    }

    /// Conditional updates of items of one job, all or none: `Ok(false)`
    /// if a condition failed. Many workers write the job item's counters
    /// at once, so a transaction conflict is tried again a few times, after
    /// a random pause, before it is returned (as retryable).
    fn transact(&self, id: &str, changes: Vec<Change<'_>>) -> Result<bool, StoreError> {
        let mut attempt = 0u32;
        loop {
            match self.transact_once(id, &changes) {
                Err(e) if e.retryable() && attempt < CONFLICT_RETRIES && e.to_string().contains("conflict") => {
                    attempt += 1;
                    // (jitter from the clock's nanoseconds: enough to spread writers apart)
                    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                    let pause = nanos.subsec_nanos() as u64 % (20u64 << attempt);
                    std::thread::sleep(std::time::Duration::from_millis(pause));
                }
                other => return other,
            }
        }
    }

    fn transact_once(&self, id: &str, changes: &[Change<'_>]) -> Result<bool, StoreError> {
        let mut req = self.client.transact_write_items();
        for c in changes {
            let mut u = Update::builder()
                .table_name(&self.table)
                .key("pk", s(format!("job#{id}")))
                .key("sk", s(&c.sk))
                .update_expression(c.update)
                .condition_expression(c.condition);
            for (k, v) in c.names {
                u = u.expression_attribute_names(*k, *v);
            }
            for (k, v) in &c.values {
                u = u.expression_attribute_values(*k, v.clone());
            }
            let u = u.build().map_err(|e| corrupt(&e.to_string()))?;
            req = req.transact_items(TransactWriteItem::builder().update(u).build());
        }
        match self.rt.block_on(req.send()) {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(se)) if se.err().is_transaction_canceled_exception() => {
                let conflict = match se.err() {
                    aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(t) => {
                        t.cancellation_reasons().iter().any(|r| r.code() == Some("TransactionConflict"))
                    }
                    _ => false,
                };
                if conflict {
                    Err(StoreError::Other {
                        message: "DynamoDB TransactWriteItems: transaction conflict".into(),
                        retryable: true,
                    })
                } else {
                    Ok(false)
                }
            }
            Err(e) => Err(sdk_error("DynamoDB TransactWriteItems", e)),
        }
    }

    /// One attribute of the job item (a consistent read of just that).
    fn job_attribute(&self, id: &str, name: &str) -> Result<Option<Item>, StoreError> {
        let (pk, sk) = job_key(id);
        let req = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", pk)
            .key("sk", sk)
            .projection_expression("#a")
            .expression_attribute_names("#a", name)
            .consistent_read(true);
        let out = self.rt.block_on(req.send()).map_err(|e| sdk_error("DynamoDB GetItem", e))?;
        Ok(out.item().cloned())
    }

    /// A counter of the job item.
    fn counter(&self, id: &str, name: &str) -> Result<u32, StoreError> {
        Ok(self.job_attribute(id, name)?.and_then(|i| get_n(&i, name)).unwrap_or(0) as u32)
    }

    /// Items of the job whose sort keys lie in `[from, to]`, at most `limit`.
    fn query_range(&self, id: &str, from: String, to: String, limit: usize) -> Result<Vec<Item>, StoreError> {
        self.query_items(format!("job#{id}"), Some((from, to)), limit)
    }

    /// The items of partition `pk` (with sort keys in `between`, if given),
    /// at most `limit`, a page of up to 1,000 at a time.
    fn query_items(
        &self,
        pk: String,
        between: Option<(String, String)>,
        limit: usize,
    ) -> Result<Vec<Item>, StoreError> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        while out.len() < limit {
            let mut req = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .expression_attribute_values(":pk", s(&pk))
                .limit((limit - out.len()).min(1000) as i32)
                .set_exclusive_start_key(start.take());
            req = match &between {
                Some((a, b)) => req
                    .key_condition_expression("pk = :pk AND sk BETWEEN :a AND :b")
                    .expression_attribute_values(":a", s(a))
                    .expression_attribute_values(":b", s(b)),
                None => req.key_condition_expression("pk = :pk"),
            };
            let page = self.rt.block_on(req.send()).map_err(|e| sdk_error("DynamoDB Query", e))?;
            out.extend(page.items().iter().cloned());
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        Ok(out)
    }

    /// The item of a job just created (or started again): SPLITTING, no counts.
    fn new_job_item(&self, job: &Job) -> aws_sdk_dynamodb::operation::put_item::builders::PutItemFluentBuilder {
        let (pk, sk) = job_key(&job.id);
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", pk)
            .item("sk", sk)
            .item("id", s(&job.id))
            .item("status", s(status_name(job.status)))
            .item("source", s(json(&job.source)))
            .item("spec", s(&job.spec))
            .item("rows", n(0))
            .item("bytes_done", n(0))
            .item("chunks_rerun", n(0))
            .item("sweeps", n(0))
            .item("created_ms", n(job.created_ms))
            .item("updated_ms", n(job.updated_ms))
            .item("ttl", n(job.created_ms / 1000 + TTL_DAYS * 86_400))
    }

    /// Puts the job among those the sweeper looks at; an entry outlives its
    /// job's end until the next sweep (see `active_jobs`).
    fn put_active(&self, id: &str, ttl: u64) -> Result<(), StoreError> {
        let req = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(ACTIVE_PK))
            .item("sk", s(id))
            .item("ttl", n(ttl));
        self.rt.block_on(req.send()).map_err(|e| sdk_error("DynamoDB PutItem", e))?;
        Ok(())
    }

    /// Deletes every chunk, slice and range item of a job, a page of keys
    /// at a time (25 per BatchWriteItem): nothing held grows with the
    /// chunk count.
    fn delete_records(&self, id: &str) -> Result<(), StoreError> {
        use aws_sdk_dynamodb::types::{DeleteRequest, WriteRequest};
        let pk = format!("job#{id}");
        loop {
            let req = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(&pk))
                .projection_expression("pk, sk")
                .limit(1000);
            let page = self.rt.block_on(req.send()).map_err(|e| sdk_error("DynamoDB Query", e))?;
            let keys: Vec<Item> =
                page.items().iter().filter(|i| get_s(i, "sk").is_some_and(|sk| sk != "job")).cloned().collect();
            if keys.is_empty() {
                return Ok(());
            }
            for batch in keys.chunks(25) {
                let mut pending: Vec<WriteRequest> = batch
                    .iter()
                    .map(|k| {
                        let delete = DeleteRequest::builder().set_key(Some(k.clone())).build().expect("a key");
                        WriteRequest::builder().delete_request(delete).build()
                    })
                    .collect();
                for _attempt in 0..8 {
                    if pending.is_empty() {
                        break;
                    }
                    let req = self.client.batch_write_item().request_items(&self.table, std::mem::take(&mut pending));
                    let out = self.rt.block_on(req.send()).map_err(|e| sdk_error("DynamoDB BatchWriteItem", e))?;
                    pending = out.unprocessed_items().and_then(|u| u.get(&self.table)).cloned().unwrap_or_default();
                }
                if !pending.is_empty() {
                    return Err(StoreError::Other {
                        message: "DynamoDB BatchWriteItem: deletes left unprocessed".into(),
                        retryable: true,
                    });
                }
            }
        }
    }

    /// The job items of `ids` (100 keys per BatchGetItem); ids whose job
    /// item is gone (expired) are left out.
    fn jobs_of(&self, ids: &[String]) -> Result<HashMap<String, Job>, StoreError> {
        let mut found: HashMap<String, Job> = HashMap::new();
        for batch in ids.chunks(100) {
            let keys: Vec<Item> = batch
                .iter()
                .map(|id| {
                    let (pk, sk) = job_key(id);
                    HashMap::from([("pk".to_string(), pk), ("sk".to_string(), sk)])
                })
                .collect();
            let mut pending = Some(
                aws_sdk_dynamodb::types::KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .consistent_read(true)
                    .build()
                    .map_err(|e| corrupt(&e.to_string()))?,
            );
            for _attempt in 0..8 {
                let Some(want) = pending.take() else { break };
                let req = self.client.batch_get_item().request_items(&self.table, want);
                let out = self.rt.block_on(req.send()).map_err(|e| sdk_error("DynamoDB BatchGetItem", e))?;
                for item in out.responses().and_then(|r| r.get(&self.table)).into_iter().flatten() {
                    let job = job_from(item)?;
                    found.insert(job.id.clone(), job);
                }
                pending =
                    out.unprocessed_keys().and_then(|u| u.get(&self.table)).filter(|k| !k.keys().is_empty()).cloned();
            }
            if pending.is_some() {
                return Err(StoreError::Other {
                    message: "DynamoDB BatchGetItem: keys left unprocessed".into(),
                    retryable: true,
                });
            }
        }
        Ok(found)
    }
}

impl JobStore for DynamoJobStore {
    fn create_job(&self, job: &Job) -> Result<Created, StoreError> {
        let ttl = job.created_ms / 1000 + TTL_DAYS * 86_400;
        let req = self.new_job_item(job).condition_expression("attribute_not_exists(pk)");
        match self.rt.block_on(req.send()) {
            Ok(_) => {}
            Err(e) if is_condition_failed(&e) => {
                let existing = self.get_job(&job.id)?.ok_or_else(|| corrupt("vanished"))?;
                return Ok(Created::Exists(Box::new(existing)));
            }
            Err(e) => return Err(sdk_error("DynamoDB PutItem", e)),
        }
        self.put_active(&job.id, ttl)?;
        // Jobs newest first: one partition, sorted by creation time.
        let req = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(LIST_PK))
            .item("sk", s(job.list_key()))
            .item("id", s(&job.id))
            .item("ttl", n(ttl));
        self.rt.block_on(req.send()).map_err(|e| sdk_error("DynamoDB PutItem", e))?;
        Ok(Created::New)
    }

    fn get_job(&self, id: &str) -> Result<Option<Job>, StoreError> {
        let (pk, sk) = job_key(id);
        let req = self.client.get_item().table_name(&self.table).key("pk", pk).key("sk", sk).consistent_read(true);
        let out = self.rt.block_on(req.send()).map_err(|e| sdk_error("DynamoDB GetItem", e))?;
        out.item().map(job_from).transpose()
    }

    fn start_running(
        &self,
        id: &str,
        head: &Head,
        chunk_size: u64,
        chunk_count: u32,
        slice_count: u32,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        self.update(
            id,
            "SET #st = :running, head = :h, chunk_size = :cs, chunk_count = :cc, slice_count = :sc, \
             slices_done = :zero, running_ms = :now, updated_ms = :now",
            "#st = :splitting",
            &[("#st", "status")],
            vec![
                (":running", status(Status::Running)),
                (":splitting", status(Status::Splitting)),
                (":h", s(json(head))),
                (":cs", n(chunk_size)),
                (":cc", n(chunk_count)),
                (":sc", n(slice_count)),
                (":zero", n(0)),
                (":now", n(now_ms)),
            ],
        )
    }

    fn put_chunk(&self, id: &str, record: &ChunkRecord) -> Result<bool, StoreError> {
        let mut req = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("job#{id}")))
            .item("sk", s(chunk_sk(record.report.index)))
            .item("report", s(json(&record.report)))
            .item("state", s(record.state.code()))
            .item("done", AttributeValue::Bool(false))
            .item("ttl", n(now_s() + TTL_DAYS * 86_400))
            // A record is replaced only while the chunk is not done, and once
            // it must be scanned again, only by a scan from that state.
            .condition_expression(
                "attribute_not_exists(sk) OR (#done = :false AND (attribute_not_exists(rerun) OR rerun = :k))",
            )
            .expression_attribute_names("#done", "done")
            .expression_attribute_values(":false", AttributeValue::Bool(false))
            .expression_attribute_values(
                ":k",
                match record.state {
                    StartState::Known(k) => s(k.code()),
                    StartState::Guess => s("no rerun state"),
                },
            );
        if let StartState::Known(k) = record.state {
            req = req.item("rerun", s(k.code()));
        }
        req = match &record.partial {
            PartialRef::Inline(b) => req.item("partial", AttributeValue::B(Blob::new(b.clone()))),
            PartialRef::Object(k) => req.item("partial_key", s(k)),
        };
        conditional(self.rt.block_on(req.send()), "DynamoDB PutItem")
    }

    fn mark_done(
        &self,
        id: &str,
        chunk: u32,
        state: StartState,
        rows: u64,
        bytes: u64,
        now_ms: u64,
    ) -> Result<Option<u32>, StoreError> {
        // The chunk's flag and the job's counters, in one transaction: a
        // duplicate fails the first condition and adds nothing. O(1) item
        // size and write units whatever the chunk count.
        let marked = self.transact(
            id,
            vec![
                Change {
                    sk: chunk_sk(chunk),
                    update: "SET #done = :true",
                    condition: "#done = :false AND #state = :state",
                    names: &[("#done", "done"), ("#state", "state")],
                    values: vec![
                        (":true", AttributeValue::Bool(true)),
                        (":false", AttributeValue::Bool(false)),
                        (":state", s(state.code())),
                    ],
                },
                Change {
                    sk: "job".into(),
                    update: "ADD chunks_done :one, #rows :rows, bytes_done :bytes SET updated_ms = :now",
                    condition: "attribute_exists(pk)",
                    names: &[("#rows", "rows")],
                    values: vec![(":one", n(1)), (":rows", n(rows)), (":bytes", n(bytes)), (":now", n(now_ms))],
                },
            ],
        )?;
        if !marked {
            return Ok(None);
        }
        // Two workers that finish together may both read the full count:
        // the plan they both dispatch runs once (it takes the job's lease).
        Ok(Some(self.counter(id, "chunks_done")?))
    }

    fn chunk_page(&self, id: &str, after: Option<u32>, limit: usize) -> Result<Vec<ChunkRecord>, StoreError> {
        let from = after.map_or(0, |a| a.saturating_add(1));
        if after == Some(u32::MAX) {
            return Ok(Vec::new());
        }
        let items = self.query_range(id, chunk_sk(from), "chunk#9999999999".into(), limit)?;
        items.iter().map(chunk_from).collect()
    }

    fn take_lease(&self, id: &str, owner: &str, now_ms: u64, until_ms: u64) -> Result<bool, StoreError> {
        self.update(
            id,
            "SET #st = :merging, lease_owner = :o, lease_until = :u, updated_ms = :now",
            "#st IN (:running, :merging) AND (attribute_not_exists(lease_until) OR lease_until <= :now OR lease_owner = :o)",
            &[("#st", "status")],
            vec![
                (":merging", status(Status::Merging)),
                (":running", status(Status::Running)),
                (":o", s(owner)),
                (":u", n(until_ms)),
                (":now", n(now_ms)),
            ],
        )
    }

    fn reopen_chunk(&self, id: &str, owner: &str, chunk: u32, state: QuoteState) -> Result<bool, StoreError> {
        // Undo what mark_done added for this chunk.
        let Some(rec) = self.chunk_page(id, chunk.checked_sub(1), 1)?.into_iter().find(|r| r.report.index == chunk)
        else {
            return Ok(false);
        };
        let (rows, bytes) = (rec.report.rows, rec.report.end - rec.report.start);
        self.transact(
            id,
            vec![
                Change {
                    sk: chunk_sk(chunk),
                    update: "SET #done = :false, rerun = :k",
                    condition: "#done = :true",
                    names: &[("#done", "done")],
                    values: vec![
                        (":true", AttributeValue::Bool(true)),
                        (":false", AttributeValue::Bool(false)),
                        (":k", s(state.code())),
                    ],
                },
                Change {
                    sk: "job".into(),
                    update: "ADD chunks_done :minus, #rows :rows, bytes_done :bytes, chunks_rerun :one",
                    condition: "#st = :merging AND lease_owner = :o",
                    names: &[("#st", "status"), ("#rows", "rows")],
                    values: vec![
                        (":minus", n(-1)),
                        (":rows", n(-(rows as i64))),
                        (":bytes", n(-(bytes as i64))),
                        (":one", n(1)),
                        (":merging", status(Status::Merging)),
                        (":o", s(owner)),
                    ],
                },
            ],
        )
    }

    fn release_lease(&self, id: &str, owner: &str) -> Result<bool, StoreError> {
        // Back to RUNNING unless the range plan is made.
        if self.update(
            id,
            "SET #st = :running REMOVE lease_owner, lease_until",
            "#st = :merging AND lease_owner = :o AND (attribute_not_exists(range_count) OR range_count = :zero)",
            &[("#st", "status")],
            vec![
                (":running", status(Status::Running)),
                (":merging", status(Status::Merging)),
                (":o", s(owner)),
                (":zero", n(0)),
            ],
        )? {
            return Ok(true);
        }
        self.update(
            id,
            "REMOVE lease_owner, lease_until",
            "#st = :merging AND lease_owner = :o",
            &[("#st", "status")],
            vec![(":merging", status(Status::Merging)), (":o", s(owner))],
        )
    }

    fn start_merging(&self, id: &str, owner: &str, ranges: u32, now_ms: u64) -> Result<bool, StoreError> {
        self.update(
            id,
            "SET range_count = :r, ranges_done = :zero, merging_ms = :now, updated_ms = :now REMOVE lease_owner, lease_until",
            "#st = :merging AND lease_owner = :o AND (attribute_not_exists(range_count) OR range_count = :zero)",
            &[("#st", "status")],
            vec![(":r", n(ranges)), (":zero", n(0)), (":now", n(now_ms)), (":merging", status(Status::Merging)), (":o", s(owner))],
        )
    }

    fn take_work(
        &self,
        id: &str,
        stage: Stage,
        index: u32,
        owner: &str,
        now_ms: u64,
        until_ms: u64,
    ) -> Result<bool, StoreError> {
        let st = names(stage);
        self.transact(
            id,
            vec![
                Change {
                    sk: work_sk(stage, index),
                    update: "SET lease_owner = :o, lease_until = :u, #done = if_not_exists(#done, :false), #ttl = :ttl",
                    condition: "(attribute_not_exists(sk) OR #done = :false) AND (attribute_not_exists(lease_until) OR lease_until <= :now OR lease_owner = :o)",
                    names: &[("#done", "done"), ("#ttl", "ttl")],
                    values: vec![
                        (":o", s(owner)),
                        (":u", n(until_ms)),
                        (":now", n(now_ms)),
                        (":false", AttributeValue::Bool(false)),
                        (":ttl", n(now_ms / 1000 + TTL_DAYS * 86_400)),
                    ],
                },
                Change {
                    sk: "job".into(),
                    update: "SET updated_ms = :now",
                    condition: "#st = :in AND #count > :i",
                    names: &[("#st", "status"), ("#count", st.count)],
                    values: vec![(":now", n(now_ms)), (":in", s(st.take)), (":i", n(index))],
                },
            ],
        )
    }

    fn work_progress(
        &self,
        id: &str,
        stage: Stage,
        index: u32,
        owner: &str,
        next: u32,
        _now_ms: u64,
        until_ms: u64,
    ) -> Result<bool, StoreError> {
        // The work item alone: a hundred dispatchers recording progress
        // must not all write the job item.
        let req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("job#{id}")))
            .key("sk", s(work_sk(stage, index)))
            .update_expression("SET #next = :n, lease_until = :u")
            .condition_expression("#done = :false AND lease_owner = :o")
            .expression_attribute_names("#next", "next")
            .expression_attribute_names("#done", "done")
            .expression_attribute_values(":n", n(next))
            .expression_attribute_values(":u", n(until_ms))
            .expression_attribute_values(":false", AttributeValue::Bool(false))
            .expression_attribute_values(":o", s(owner));
        conditional(self.rt.block_on(req.send()), "DynamoDB UpdateItem")
    }

    fn work_done(
        &self,
        id: &str,
        stage: Stage,
        index: u32,
        owner: &str,
        now_ms: u64,
    ) -> Result<Option<u32>, StoreError> {
        let st = names(stage);
        let job_update = match stage {
            Stage::Dispatch => "ADD #counter :one SET updated_ms = :now, dispatched_ms = :now",
            Stage::Reduce => "ADD #counter :one SET updated_ms = :now",
        };
        let marked = self.transact(
            id,
            vec![
                Change {
                    sk: work_sk(stage, index),
                    update: "SET #done = :true REMOVE lease_owner, lease_until",
                    condition: "#done = :false AND lease_owner = :o",
                    names: &[("#done", "done")],
                    values: vec![
                        (":true", AttributeValue::Bool(true)),
                        (":false", AttributeValue::Bool(false)),
                        (":o", s(owner)),
                    ],
                },
                Change {
                    sk: "job".into(),
                    update: job_update,
                    condition: "#st IN (:a, :b)",
                    names: &[("#st", "status"), ("#counter", st.done)],
                    values: vec![(":one", n(1)), (":now", n(now_ms)), (":a", s(st.finish[0])), (":b", s(st.finish[1]))],
                },
            ],
        )?;
        if !marked {
            return Ok(None);
        }
        Ok(Some(self.counter(id, st.done)?))
    }

    fn work_page(
        &self,
        id: &str,
        stage: Stage,
        after: Option<u32>,
        limit: usize,
    ) -> Result<Vec<WorkRecord>, StoreError> {
        if after == Some(u32::MAX) {
            return Ok(Vec::new());
        }
        let from = after.map_or(0, |a| a + 1);
        let to = format!("{}9999999999", names(stage).prefix);
        let items = self.query_range(id, work_sk(stage, from), to, limit)?;
        items.iter().map(|i| work_from(stage, i)).collect()
    }

    fn complete(&self, id: &str, owner: &str, outputs: &Outputs, now_ms: u64) -> Result<bool, StoreError> {
        self.update(
            id,
            "SET #st = :done, outputs = :out, updated_ms = :now, announce_pending = :ann REMOVE lease_owner, lease_until",
            "#st = :merging AND lease_owner = :o",
            &[("#st", "status")],
            vec![
                (":ann", AttributeValue::Bool(true)),
                (":done", status(Status::Done)),
                (":merging", status(Status::Merging)),
                (":out", s(json(outputs))),
                (":o", s(owner)),
                (":now", n(now_ms)),
            ],
        )
    }

    fn fail(&self, id: &str, error: &JobError, now_ms: u64) -> Result<bool, StoreError> {
        self.update(
            id,
            "SET #st = :failed, #err = :e, updated_ms = :now, announce_pending = :ann REMOVE lease_owner, lease_until",
            "attribute_exists(pk) AND NOT (#st IN (:done, :failed, :cancelled))",
            &[("#st", "status"), ("#err", "error")],
            vec![
                (":ann", AttributeValue::Bool(true)),
                (":failed", status(Status::Failed)),
                (":done", status(Status::Done)),
                (":cancelled", status(Status::Cancelled)),
                (":e", s(json(error))),
                (":now", n(now_ms)),
            ],
        )
    }

    fn cancel(&self, id: &str, now_ms: u64) -> Result<bool, StoreError> {
        self.update(
            id,
            "SET #st = :cancelled, updated_ms = :now, announce_pending = :ann REMOVE lease_owner, lease_until",
            "attribute_exists(pk) AND NOT (#st IN (:done, :failed, :cancelled))",
            &[("#st", "status")],
            vec![
                (":ann", AttributeValue::Bool(true)),
                (":failed", status(Status::Failed)),
                (":done", status(Status::Done)),
                (":cancelled", status(Status::Cancelled)),
                (":now", n(now_ms)),
            ],
        )
    }

    fn retry(&self, id: &str, now_ms: u64) -> Result<bool, StoreError> {
        let Some(job) = self.get_job(id)? else { return Err(StoreError::NotFound(format!("job {id}"))) };
        if !matches!(job.status, Status::Failed | Status::Cancelled) {
            return Ok(false);
        }
        // Claimed first, so that a second retry at the same time (a double
        // click) deletes nothing of the first one's new run; a claim older
        // than RETRY_CLAIM_MS is a retry that died half way, and is taken over.
        let (pk, sk) = job_key(id);
        let claim = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", pk)
            .key("sk", sk)
            .update_expression("SET retrying = :now")
            .condition_expression(
                "#st IN (:failed, :cancelled) AND (attribute_not_exists(retrying) OR retrying < :stale)",
            )
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":failed", status(Status::Failed))
            .expression_attribute_values(":cancelled", status(Status::Cancelled))
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":stale", n(now_ms.saturating_sub(RETRY_CLAIM_MS)));
        match self.rt.block_on(claim.send()) {
            Ok(_) => {}
            Err(e) if is_condition_failed(&e) => return Ok(false),
            Err(e) => return Err(sdk_error("DynamoDB UpdateItem", e)),
        }
        // Then the records: a task of the ended run that still writes one
        // is stopped by the status until the job item is reset, and writes
        // what a duplicate of the new run would.
        self.delete_records(id)?;
        let fresh = job.retried(now_ms);
        let req = self
            .new_job_item(&fresh)
            .condition_expression("#st IN (:failed, :cancelled) AND retrying = :now")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":failed", status(Status::Failed))
            .expression_attribute_values(":cancelled", status(Status::Cancelled))
            .expression_attribute_values(":now", n(now_ms));
        match self.rt.block_on(req.send()) {
            Ok(_) => {}
            Err(e) if is_condition_failed(&e) => return Ok(false),
            Err(e) => return Err(sdk_error("DynamoDB PutItem", e)),
        }
        self.put_active(id, fresh.created_ms / 1000 + TTL_DAYS * 86_400)?;
        Ok(true)
    }

    fn status(&self, id: &str) -> Result<Option<Status>, StoreError> {
        match self.job_attribute(id, "status")? {
            None => Ok(None),
            Some(item) => get_s(&item, "status").and_then(status_of).map(Some).ok_or_else(|| corrupt("status")),
        }
    }

    fn list_jobs(&self, limit: usize, after: Option<&str>) -> Result<JobPage, StoreError> {
        let limit = limit.clamp(1, 100);
        let mut req = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(LIST_PK))
            .scan_index_forward(false)
            .limit(limit as i32 + 1);
        if let Some(a) = after {
            req = req.exclusive_start_key("pk", s(LIST_PK)).exclusive_start_key("sk", s(a));
        }
        let page = self.rt.block_on(req.send()).map_err(|e| sdk_error("DynamoDB Query", e))?;
        let mut ids: Vec<(String, String)> = page
            .items()
            .iter()
            .filter_map(|i| Some((get_s(i, "sk")?.to_string(), get_s(i, "id")?.to_string())))
            .collect();
        let next = (ids.len() > limit).then(|| {
            ids.truncate(limit);
            ids.last().map(|(k, _)| k.clone())
        });
        if ids.is_empty() {
            return Ok(JobPage::default());
        }
        let ids_only: Vec<String> = ids.iter().map(|(_, id)| id.clone()).collect();
        let mut found = self.jobs_of(&ids_only)?;
        // A list entry whose job item expired first is skipped.
        let jobs = ids.into_iter().filter_map(|(_, id)| found.remove(&id)).collect();
        Ok(JobPage { jobs, next: next.flatten() })
    }

    fn active_jobs(&self) -> Result<Vec<Job>, StoreError> {
        // The active partition, not a scan: a table holds every chunk record
        // of every job, and a sweep must not read them all.
        let ids = self.active_ids()?;
        let mut found = self.jobs_of(&ids)?;
        let mut out = Vec::new();
        for id in ids {
            match found.remove(&id) {
                Some(job) if matches!(job.status, Status::Splitting | Status::Running | Status::Merging) => {
                    out.push(job)
                }
                // Ended, its end event not yet out: the entry stays for `unannounced`.
                Some(job) if job.announce_pending => {}
                _ => {
                    // Ended (or expired): its entry goes.
                    let req =
                        self.client.delete_item().table_name(&self.table).key("pk", s(ACTIVE_PK)).key("sk", s(&id));
                    self.rt.block_on(req.send()).map_err(|e| sdk_error("DynamoDB DeleteItem", e))?;
                }
            }
        }
        Ok(out)
    }

    fn announced(&self, id: &str) -> Result<bool, StoreError> {
        self.update(
            id,
            "REMOVE announce_pending",
            "announce_pending = :t",
            &[],
            vec![(":t", AttributeValue::Bool(true))],
        )
    }

    fn unannounced(&self) -> Result<Vec<Job>, StoreError> {
        // Ended jobs keep their active entry until their end event is out.
        let ids = self.active_ids()?;
        let found = self.jobs_of(&ids)?;
        Ok(found.into_values().filter(|j| j.status.is_final() && j.announce_pending).collect())
    }

    fn record_sweep(&self, id: &str, sweeps: u32, stuck: u32, progress: u64, now_ms: u64) -> Result<bool, StoreError> {
        self.update(
            id,
            "ADD sweeps :one SET updated_ms = :now, swept_ms = :now, stuck_sweeps = :stuck, swept_progress = :p",
            "sweeps = :seen AND NOT (#st IN (:done, :failed, :cancelled))",
            &[("#st", "status")],
            vec![
                (":one", n(1)),
                (":seen", n(sweeps)),
                (":stuck", n(stuck)),
                (":p", n(progress)),
                (":now", n(now_ms)),
                (":done", status(Status::Done)),
                (":failed", status(Status::Failed)),
                (":cancelled", status(Status::Cancelled)),
            ],
        )
    }
}
