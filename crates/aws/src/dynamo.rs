//! `JobStore` on one DynamoDB table. Every condition of the port is a
//! DynamoDB condition expression, so concurrent Lambdas race safely.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use aws_sdk_dynamodb::Client;
use fanfold_engine::{ChunkReport, Head};
use fanfold_pipeline::{
    ChunkRecord, Created, Job, JobError, JobPage, JobStore, Lease, Outputs, PartialRef, Source, Status, StoreError,
};
use tokio::runtime::Handle;

use crate::sdk_error;

type Item = HashMap<String, AttributeValue>;

/// Days a job's items are kept (DynamoDB TTL).
const TTL_DAYS: u64 = 30;

/// The partition that lists jobs newest first (`sk` = [`Job::list_key`]).
const LIST_PK: &str = "jobs";

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
fn status_name(st: Status) -> &'static str {
    match st {
        Status::Splitting => "SPLITTING",
        Status::Running => "RUNNING",
        Status::Merging => "MERGING",
        Status::Done => "DONE",
        Status::Failed => "FAILED",
        Status::Cancelled => "CANCELLED",
    }
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

fn job_key(id: &str) -> (AttributeValue, AttributeValue) {
    (s(format!("job#{id}")), s("job"))
}

fn is_condition_failed<E: aws_sdk_dynamodb::error::ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    matches!(e, SdkError::ServiceError(se) if se.err().code() == Some("ConditionalCheckFailedException"))
}

fn job_from(item: &Item) -> Result<Job, StoreError> {
    let id = get_s(item, "id").ok_or_else(|| corrupt("id"))?.to_string();
    let source: Source = parse(item, "source")?.ok_or_else(|| corrupt("source"))?;
    let mut done: Vec<u32> = match item.get("done") {
        Some(AttributeValue::Ns(v)) => v.iter().filter_map(|x| x.parse().ok()).collect(),
        _ => Vec::new(),
    };
    done.sort_unstable();
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
        done,
        rows: get_n(item, "rows").unwrap_or(0),
        bytes_done: get_n(item, "bytes_done").unwrap_or(0),
        chunks_rerun: get_n(item, "chunks_rerun").unwrap_or(0) as u32,
        sweeps: get_n(item, "sweeps").unwrap_or(0) as u32,
        error: parse::<JobError>(item, "error")?,
        outputs: parse::<Outputs>(item, "outputs")?,
        lease,
        created_ms: get_n(item, "created_ms").unwrap_or(0),
        running_ms: get_n(item, "running_ms"),
        updated_ms: get_n(item, "updated_ms").unwrap_or(0),
    })
}

impl DynamoJobStore {
    pub fn new(config: &aws_config::SdkConfig, table: impl Into<String>, rt: Handle) -> Self {
        DynamoJobStore { client: Client::new(config), table: table.into(), rt }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A conditional update on the job item: `Ok(false)` if the condition failed.
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
        match self.rt.block_on(req.send()) {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failed(&e) => Ok(false),
            Err(e) => Err(sdk_error("DynamoDB UpdateItem", e)),
        }
    }
}

impl JobStore for DynamoJobStore {
    fn create_job(&self, job: &Job) -> Result<Created, StoreError> {
        let (pk, sk) = job_key(&job.id);
        let ttl = job.created_ms / 1000 + TTL_DAYS * 86_400;
        let req = self
            .client
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
            .item("ttl", n(ttl))
            .condition_expression("attribute_not_exists(pk)");
        match self.rt.block_on(req.send()) {
            Ok(_) => {}
            Err(e) if is_condition_failed(&e) => {
                let existing = self.get_job(&job.id)?.ok_or_else(|| corrupt("vanished"))?;
                return Ok(Created::Exists(Box::new(existing)));
            }
            Err(e) => return Err(sdk_error("DynamoDB PutItem", e)),
        }
        // Jobs by source object; not part of any condition.
        let src = format!("src#{}/{}", job.source.bucket, job.source.key);
        let req = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(src))
            .item("sk", s(format!("job#{}", job.id)))
            .item("created_ms", n(job.created_ms))
            .item("ttl", n(ttl));
        self.rt.block_on(req.send()).map_err(|e| sdk_error("DynamoDB PutItem", e))?;
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
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        self.update(
            id,
            "SET #st = :running, head = :h, chunk_size = :cs, chunk_count = :cc, running_ms = :now, updated_ms = :now",
            "#st = :splitting",
            &[("#st", "status")],
            vec![
                (":running", s("RUNNING")),
                (":splitting", s("SPLITTING")),
                (":h", s(json(head))),
                (":cs", n(chunk_size)),
                (":cc", n(chunk_count)),
                (":now", n(now_ms)),
            ],
        )
    }

    fn put_chunk(&self, id: &str, record: &ChunkRecord) -> Result<(), StoreError> {
        let mut req = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("job#{id}")))
            .item("sk", s(format!("chunk#{:06}", record.report.index)))
            .item("report", s(json(&record.report)))
            .item("attempt", n(record.attempt));
        req = match &record.partial {
            PartialRef::Inline(b) => req.item("partial", AttributeValue::B(Blob::new(b.clone()))),
            PartialRef::Object(k) => req.item("partial_key", s(k)),
        };
        self.rt.block_on(req.send()).map_err(|e| sdk_error("DynamoDB PutItem", e))?;
        Ok(())
    }

    fn mark_done(&self, id: &str, chunk: u32, rows: u64, bytes: u64, now_ms: u64) -> Result<Option<usize>, StoreError> {
        let (pk, sk) = job_key(id);
        let req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", pk)
            .key("sk", sk)
            .update_expression("ADD #done :set, #rows :rows, bytes_done :bytes SET updated_ms = :now")
            .condition_expression("attribute_exists(pk) AND NOT contains(#done, :c)")
            .expression_attribute_names("#done", "done")
            .expression_attribute_names("#rows", "rows")
            .expression_attribute_values(":set", AttributeValue::Ns(vec![chunk.to_string()]))
            .expression_attribute_values(":c", n(chunk))
            .expression_attribute_values(":rows", n(rows))
            .expression_attribute_values(":bytes", n(bytes))
            .expression_attribute_values(":now", n(now_ms))
            .return_values(ReturnValue::UpdatedNew);
        match self.rt.block_on(req.send()) {
            Ok(out) => Ok(Some(match out.attributes().and_then(|a| a.get("done")) {
                Some(AttributeValue::Ns(v)) => v.len(),
                _ => return Err(corrupt("done set missing after ADD")),
            })),
            Err(e) if is_condition_failed(&e) => Ok(None),
            Err(e) => Err(sdk_error("DynamoDB UpdateItem", e)),
        }
    }

    fn chunks(&self, id: &str) -> Result<Vec<ChunkRecord>, StoreError> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let req = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .key_condition_expression("pk = :pk AND begins_with(sk, :c)")
                .expression_attribute_values(":pk", s(format!("job#{id}")))
                .expression_attribute_values(":c", s("chunk#"))
                .set_exclusive_start_key(start.take());
            let page = self.rt.block_on(req.send()).map_err(|e| sdk_error("DynamoDB Query", e))?;
            for item in page.items() {
                let report: ChunkReport = parse(item, "report")?.ok_or_else(|| corrupt("report"))?;
                let partial = match (item.get("partial"), get_s(item, "partial_key")) {
                    (Some(AttributeValue::B(b)), _) => PartialRef::Inline(b.clone().into_inner()),
                    (_, Some(k)) => PartialRef::Object(k.to_string()),
                    _ => return Err(corrupt("chunk without a partial")),
                };
                out.push(ChunkRecord { report, partial, attempt: get_n(item, "attempt").unwrap_or(1) as u32 });
            }
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        Ok(out)
    }

    fn take_lease(&self, id: &str, owner: &str, now_ms: u64, until_ms: u64) -> Result<bool, StoreError> {
        self.update(
            id,
            "SET #st = :merging, lease_owner = :o, lease_until = :u, updated_ms = :now",
            "#st IN (:running, :merging) AND (attribute_not_exists(lease_until) OR lease_until <= :now OR lease_owner = :o)",
            &[("#st", "status")],
            vec![
                (":merging", s("MERGING")),
                (":running", s("RUNNING")),
                (":o", s(owner)),
                (":u", n(until_ms)),
                (":now", n(now_ms)),
            ],
        )
    }

    fn reopen_chunks(&self, id: &str, owner: &str, chunks: &[u32]) -> Result<bool, StoreError> {
        // Undo what mark_done added for these chunks.
        let records = self.chunks(id)?;
        let (mut rows, mut bytes) = (0u64, 0u64);
        for r in records.iter().filter(|r| chunks.contains(&r.report.index)) {
            rows += r.report.rows;
            bytes += r.report.end - r.report.start;
        }
        let set: Vec<String> = chunks.iter().map(u32::to_string).collect();
        if set.is_empty() {
            // Only hand the lease back.
            return self.update(
                id,
                "SET #st = :running REMOVE lease_owner, lease_until",
                "#st = :merging AND lease_owner = :o",
                &[("#st", "status")],
                vec![(":running", s("RUNNING")), (":merging", s("MERGING")), (":o", s(owner))],
            );
        }
        self.update(
            id,
            "DELETE #done :set ADD #rows :rows, bytes_done :bytes, chunks_rerun :n SET #st = :running REMOVE lease_owner, lease_until",
            "#st = :merging AND lease_owner = :o",
            &[("#st", "status"), ("#done", "done"), ("#rows", "rows")],
            vec![
                (":set", AttributeValue::Ns(set)),
                (":rows", n(-(rows as i64))),
                (":bytes", n(-(bytes as i64))),
                (":n", n(chunks.len())),
                (":running", s("RUNNING")),
                (":merging", s("MERGING")),
                (":o", s(owner)),
            ],
        )
    }

    fn complete(&self, id: &str, owner: &str, outputs: &Outputs, now_ms: u64) -> Result<bool, StoreError> {
        self.update(
            id,
            "SET #st = :done, outputs = :out, updated_ms = :now REMOVE lease_owner, lease_until",
            "#st = :merging AND lease_owner = :o",
            &[("#st", "status")],
            vec![
                (":done", s("DONE")),
                (":merging", s("MERGING")),
                (":out", s(json(outputs))),
                (":o", s(owner)),
                (":now", n(now_ms)),
            ],
        )
    }

    fn fail(&self, id: &str, error: &JobError, now_ms: u64) -> Result<bool, StoreError> {
        self.update(
            id,
            "SET #st = :failed, #err = :e, updated_ms = :now REMOVE lease_owner, lease_until",
            "attribute_exists(pk) AND NOT (#st IN (:done, :failed, :cancelled))",
            &[("#st", "status"), ("#err", "error")],
            vec![
                (":failed", s("FAILED")),
                (":done", s("DONE")),
                (":cancelled", s("CANCELLED")),
                (":e", s(json(error))),
                (":now", n(now_ms)),
            ],
        )
    }

    fn cancel(&self, id: &str, now_ms: u64) -> Result<bool, StoreError> {
        self.update(
            id,
            "SET #st = :cancelled, updated_ms = :now REMOVE lease_owner, lease_until",
            "attribute_exists(pk) AND NOT (#st IN (:done, :failed, :cancelled))",
            &[("#st", "status")],
            vec![(":failed", s("FAILED")), (":done", s("DONE")), (":cancelled", s("CANCELLED")), (":now", n(now_ms))],
        )
    }

    fn status(&self, id: &str) -> Result<Option<Status>, StoreError> {
        let (pk, sk) = job_key(id);
        let req = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", pk)
            .key("sk", sk)
            .projection_expression("#st")
            .expression_attribute_names("#st", "status")
            .consistent_read(true);
        let out = self.rt.block_on(req.send()).map_err(|e| sdk_error("DynamoDB GetItem", e))?;
        match out.item() {
            None => Ok(None),
            Some(item) => get_s(item, "status").and_then(status_of).map(Some).ok_or_else(|| corrupt("status")),
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
        let mut found: HashMap<String, Job> = HashMap::new();
        let keys: Vec<Item> = ids
            .iter()
            .map(|(_, id)| {
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
            pending = out.unprocessed_keys().and_then(|u| u.get(&self.table)).filter(|k| !k.keys().is_empty()).cloned();
        }
        if pending.is_some() {
            return Err(StoreError::Other {
                message: "DynamoDB BatchGetItem: keys left unprocessed".into(),
                retryable: true,
            });
        }
        // A list entry whose job item expired first is skipped.
        let jobs = ids.into_iter().filter_map(|(_, id)| found.remove(&id)).collect();
        Ok(JobPage { jobs, next: next.flatten() })
    }

    fn active_jobs(&self) -> Result<Vec<Job>, StoreError> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let req = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .filter_expression("sk = :job AND #st IN (:a, :b, :c)")
                .expression_attribute_names("#st", "status")
                .expression_attribute_values(":job", s("job"))
                .expression_attribute_values(":a", s("SPLITTING"))
                .expression_attribute_values(":b", s("RUNNING"))
                .expression_attribute_values(":c", s("MERGING"))
                .set_exclusive_start_key(start.take());
            let page = self.rt.block_on(req.send()).map_err(|e| sdk_error("DynamoDB Scan", e))?;
            for item in page.items() {
                out.push(job_from(item)?);
            }
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        Ok(out)
    }

    fn record_sweep(&self, id: &str, sweeps: u32, now_ms: u64) -> Result<bool, StoreError> {
        self.update(
            id,
            "ADD sweeps :one SET updated_ms = :now",
            "sweeps = :seen AND NOT (#st IN (:done, :failed, :cancelled))",
            &[("#st", "status")],
            vec![
                (":one", n(1)),
                (":seen", n(sweeps)),
                (":now", n(now_ms)),
                (":done", s("DONE")),
                (":failed", s("FAILED")),
                (":cancelled", s("CANCELLED")),
            ],
        )
    }
}
