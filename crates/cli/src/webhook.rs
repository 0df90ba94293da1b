//! `fanfold serve --webhook URL`: each job's end ([`JobEvent`]) POSTed as
//! JSON to a URL, signed as GitHub and Stripe sign theirs, retried with
//! backoff, and never in the way of the job.
//!
//! Headers: `X-Fanfold-Signature-256: sha256=<hex HMAC-SHA256 of the body
//! with the secret>` (compare it in constant time), `X-Fanfold-Event: Job
//! State Change`, `X-Fanfold-Delivery: <job id>.<status>` (the same on every
//! attempt: a receiver that saw it already can drop a repeat).
//!
//! Delivery: one thread takes events from a queue (a job's step only puts
//! the event there); an answer other than 2xx, or no answer in 10 s, is
//! tried again after 1, 2, 4, … s, [`ATTEMPTS`] times in all; a 4xx other
//! than 408 and 429 is not retried (the receiver refused it).

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Mutex;
use std::time::Duration;

use fanfold_pipeline::notify::{JobEvent, Notifier, DETAIL_TYPE};
use fanfold_pipeline::StoreError;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Tries per event.
pub const ATTEMPTS: u32 = 6;

/// The sending side: queues events for the delivery thread.
pub struct Webhook {
    queue: Mutex<Sender<JobEvent>>,
}

/// `sha256=<hex>`: the signature header's value for `body`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl Webhook {
    /// Starts the delivery thread; `first_backoff` is the pause before the
    /// second attempt (then doubling).
    pub fn start(url: String, secret: Vec<u8>, first_backoff: Duration) -> Webhook {
        let (tx, rx) = channel();
        std::thread::Builder::new()
            .name("fanfold-webhook".into())
            .spawn(move || deliver_all(&rx, &url, &secret, first_backoff))
            .expect("spawn the webhook thread");
        Webhook { queue: Mutex::new(tx) }
    }
}

impl Notifier for Webhook {
    fn job_ended(&self, event: &JobEvent) -> Result<(), StoreError> {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(event.clone())
            .map_err(|_| StoreError::Other { message: "the webhook thread stopped".into(), retryable: false })
    }
}

fn deliver_all(events: &Receiver<JobEvent>, url: &str, secret: &[u8], first_backoff: Duration) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    for event in events {
        let body = serde_json::to_vec(&event).expect("events serialize");
        let delivery =
            format!("{}.{}", event.job_id, serde_json::to_value(event.status).expect("status")).replace('"', "");
        let mut pause = first_backoff;
        for attempt in 1..=ATTEMPTS {
            let sent = agent
                .post(url)
                .header("Content-Type", "application/json")
                .header("X-Fanfold-Event", DETAIL_TYPE)
                .header("X-Fanfold-Delivery", &delivery)
                .header("X-Fanfold-Signature-256", &signature(secret, &body))
                .send(&body[..]);
            let retry = match sent {
                Ok(r) if r.status().is_success() => break,
                Ok(r) => {
                    let s = r.status().as_u16();
                    tracing::warn!(job = event.job_id, attempt, status = s, "the webhook refused the event");
                    s == 408 || s == 429 || s >= 500
                }
                Err(e) => {
                    tracing::warn!(job = event.job_id, attempt, error = %e, "the webhook is unreachable");
                    true
                }
            };
            if !retry || attempt == ATTEMPTS {
                tracing::error!(job = event.job_id, attempts = attempt, "the job's end event was not delivered");
                break;
            }
            std::thread::sleep(pause);
            pause *= 2;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
