//! `Notifier` as EventBridge `PutEvents`: one event per job end
//! (`source: fanfold`, `detail-type: Job State Change`, the [`JobEvent`] as
//! its detail) on the account's default bus, where rules send it on (the
//! template's optional e-mail topic, a queue, a Step Functions workflow).

use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use aws_sdk_eventbridge::Client;
use fanfold_pipeline::notify::{JobEvent, Notifier, DETAIL_TYPE, SOURCE};
use fanfold_pipeline::StoreError;
use tokio::runtime::Handle;

use crate::sdk_error;

/// Tries of one `PutEvents` (an entry EventBridge could not take, or a
/// throttled call, is sent again).
const ATTEMPTS: u32 = 4;

/// Puts job events on an event bus.
pub struct EventBridgeNotifier {
    client: Client,
    bus: String,
    rt: Handle,
}

impl EventBridgeNotifier {
    /// On the bus named `bus` (`default`: the account's default bus).
    pub fn new(config: &aws_config::SdkConfig, bus: String, rt: Handle) -> Self {
        let conf =
            aws_sdk_eventbridge::config::Builder::from(config).interceptor(crate::requests::CountRequests).build();
        EventBridgeNotifier { client: Client::from_conf(conf), bus, rt }
    }
}

impl Notifier for EventBridgeNotifier {
    fn job_ended(&self, event: &JobEvent) -> Result<(), StoreError> {
        let detail = serde_json::to_string(event).expect("events serialize");
        let entry = PutEventsRequestEntry::builder()
            .source(SOURCE)
            .detail_type(DETAIL_TYPE)
            .detail(detail)
            .event_bus_name(&self.bus)
            .build();
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                std::thread::sleep(std::time::Duration::from_millis(100 << attempt));
            }
            let sent = self.rt.block_on(self.client.put_events().entries(entry.clone()).send());
            match sent {
                Ok(out) if out.failed_entry_count() == 0 => return Ok(()),
                Ok(out) => {
                    let e = out.entries().first();
                    last = format!(
                        "EventBridge PutEvents: entry refused: {} {}",
                        e.and_then(|e| e.error_code()).unwrap_or("?"),
                        e.and_then(|e| e.error_message()).unwrap_or("")
                    );
                }
                Err(e) => {
                    let err = sdk_error("EventBridge PutEvents", e);
                    if !err.retryable() {
                        return Err(err);
                    }
                    last = err.to_string();
                }
            }
        }
        Err(StoreError::Other { message: last, retryable: true })
    }
}
