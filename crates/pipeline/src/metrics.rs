//! Each finished step's figures, as `tracing` events of one target: the
//! Lambda functions turn them into CloudWatch embedded-metric-format lines
//! (`fanfold-lambda`), locally they are log lines (`RUST_LOG=info`) and the
//! job's totals are in `summary.json`.
//!
//! Every event has `step` and `job` (strings) and numbers, each one metric:
//! `rows`, `bytes` (input bytes read), `partial_bytes`, `output_bytes`,
//! `groups`, `chunks`, `ranges`, `rescans`, `seconds`, and the counters
//! `done`, `failed`, `rejected`, `repairs` (work the sweeper sent again:
//! a stalled job), `active` (jobs the sweeper looked at).

/// The `tracing` target of the step figures.
pub const TARGET: &str = "fanfold::metrics";

/// Seconds since `start`.
pub(crate) fn seconds(start: std::time::Instant) -> f64 {
    start.elapsed().as_secs_f64()
}
