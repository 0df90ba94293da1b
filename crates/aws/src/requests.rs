//! Counts every request the AWS clients send (each attempt, retries
//! included), by service and operation, so that a function can log what
//! one invocation asked of S3, DynamoDB and Lambda, and an emulator run can
//! be set beside `fanfold plan`'s counts (`scripts/cloud-local` sums them).

use std::collections::BTreeMap;
use std::sync::Mutex;

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

/// Requests per `service.operation` since the last [`take_request_counts`].
static COUNTS: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

/// The interceptor every client of this crate is built with.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CountRequests;

impl Intercept for CountRequests {
    fn name(&self) -> &'static str {
        "fanfold-count-requests"
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let op = cfg.load::<Metadata>().map_or_else(|| "unknown".into(), |m| format!("{}.{}", m.service(), m.name()));
        *COUNTS.lock().unwrap_or_else(|p| p.into_inner()).entry(op).or_default() += 1;
        Ok(())
    }
}

/// The requests counted in this process since the last call (a Lambda
/// process runs one invocation at a time, so: since the last invocation).
pub fn take_request_counts() -> BTreeMap<String, u64> {
    std::mem::take(&mut *COUNTS.lock().unwrap_or_else(|p| p.into_inner()))
}
