//! `Dispatcher` as Lambda async invokes.

use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use aws_sdk_lambda::Client;
use fanfold_pipeline::{Dispatcher, StoreError, Task};
use futures::stream::{self, StreamExt, TryStreamExt};
use tokio::runtime::Handle;

use crate::sdk_error;

/// Sends chunk tasks to the worker function and dispatch, plan, reduce and
/// commit tasks to the finalizer, `concurrency` invokes at a time.
#[derive(Clone)]
pub struct LambdaDispatcher {
    client: Client,
    worker: String,
    finalizer: String,
    concurrency: usize,
    rt: Handle,
}

impl LambdaDispatcher {
    pub fn new(config: &aws_config::SdkConfig, worker: String, finalizer: String, rt: Handle) -> Self {
        let conf = aws_sdk_lambda::config::Builder::from(config).interceptor(crate::requests::CountRequests).build();
        LambdaDispatcher { client: Client::from_conf(conf), worker, finalizer, concurrency: 32, rt }
    }
}

impl Dispatcher for LambdaDispatcher {
    fn dispatch(&self, tasks: Vec<Task>) -> Result<(), StoreError> {
        let invokes = stream::iter(tasks.into_iter().map(|t| {
            let function = match t {
                Task::Chunk { .. } => self.worker.clone(),
                Task::Dispatch { .. } | Task::Plan { .. } | Task::Reduce { .. } | Task::Commit { .. } => {
                    self.finalizer.clone()
                }
            };
            let payload = serde_json::to_vec(&t).expect("tasks serialize");
            let req = self
                .client
                .invoke()
                .function_name(function)
                .invocation_type(InvocationType::Event)
                .payload(Blob::new(payload));
            async move { req.send().await.map(|_| ()).map_err(|e| sdk_error("Lambda Invoke", e)) }
        }));
        self.rt.block_on(invokes.buffer_unordered(self.concurrency).try_collect::<Vec<()>>())?;
        Ok(())
    }
}
