//! The step figures (`fanfold_pipeline::metrics`) as CloudWatch embedded
//! metric format (EMF) lines on stdout: CloudWatch Logs turns each into
//! metrics in the namespace `fanfold`, by step and by job and step, with no
//! parser to write. An operator graphs rows and bytes per second per job,
//! and alarms on `JobsFailed` or on `Repairs` (work the sweeper had to send
//! again: a stalled job) from the metrics alone.

use std::collections::BTreeMap;
use std::io::Write;

use serde_json::{json, Map, Value};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, Layer};

/// The layer that writes the EMF lines.
pub struct Emf;

/// An event's fields: its strings (`step`, `job`) and its numbers.
#[derive(Default, Debug)]
pub struct Fields {
    strings: BTreeMap<&'static str, String>,
    numbers: BTreeMap<&'static str, f64>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.strings.insert(field.name(), value.to_string());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.numbers.insert(field.name(), value as f64);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.numbers.insert(field.name(), value as f64);
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.numbers.insert(field.name(), value);
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.strings.insert(field.name(), format!("{value:?}"));
    }
}

/// The metric name and unit of each figure (see `fanfold_pipeline::metrics`).
fn metric(field: &str) -> Option<(&'static str, &'static str)> {
    Some(match field {
        "rows" => ("Rows", "Count"),
        "bytes" => ("Bytes", "Bytes"),
        "partial_bytes" => ("PartialBytes", "Bytes"),
        "output_bytes" => ("OutputBytes", "Bytes"),
        "groups" => ("Groups", "Count"),
        "chunks" => ("Chunks", "Count"),
        "ranges" => ("Ranges", "Count"),
        "rescans" => ("Rescans", "Count"),
        "seconds" => ("Seconds", "Seconds"),
        "done" => ("JobsDone", "Count"),
        "failed" => ("JobsFailed", "Count"),
        "rejected" => ("JobsRejected", "Count"),
        "repairs" => ("Repairs", "Count"),
        "active" => ("ActiveJobs", "Count"),
        _ => return None,
    })
}

/// One EMF document for an event's fields.
pub fn document(fields: &Fields, request_id: &str, function: &str, timestamp_ms: u64) -> Value {
    let step = fields.strings.get("step").cloned().unwrap_or_default();
    let job = fields.strings.get("job").cloned().unwrap_or_default();
    let mut doc = Map::new();
    let mut metrics = Vec::new();
    for (&field, &value) in &fields.numbers {
        if let Some((name, unit)) = metric(field) {
            metrics.push(json!({"Name": name, "Unit": unit}));
            doc.insert(name.to_string(), json!(value));
        }
    }
    let dimensions = if job.is_empty() { json!([["Step"]]) } else { json!([["Step"], ["JobId", "Step"]]) };
    doc.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{"Namespace": "fanfold", "Dimensions": dimensions, "Metrics": metrics}],
        }),
    );
    doc.insert("Step".into(), json!(step));
    if !job.is_empty() {
        doc.insert("JobId".into(), json!(job));
    }
    doc.insert("RequestId".into(), json!(request_id));
    doc.insert("Function".into(), json!(function));
    Value::Object(doc)
}

impl<S: tracing::Subscriber> Layer<S> for Emf {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != fanfold_pipeline::metrics::TARGET {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let function = std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_default();
        let doc = document(&fields, &crate::request_id(), &function, fanfold_pipeline::now_ms());
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{doc}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    /// Captures the layer's input: what the pipeline's events become.
    #[derive(Clone, Default)]
    struct Capture(std::sync::Arc<std::sync::Mutex<Vec<Fields>>>);

    impl<S: tracing::Subscriber> Layer<S> for Capture {
        fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
            if event.metadata().target() == fanfold_pipeline::metrics::TARGET {
                let mut f = Fields::default();
                event.record(&mut f);
                self.0.lock().unwrap().push(f);
            }
        }
    }

    #[test]
    fn a_step_event_is_an_emf_document_with_a_metric_per_figure() {
        let capture = Capture::default();
        let subscriber = tracing_subscriber::registry().with(capture.clone());
        tracing::subscriber::with_default(subscriber, || {
            let id = String::from("abc123");
            tracing::info!(target: fanfold_pipeline::metrics::TARGET, step = "chunk", job = id, rows = 10u64, bytes = 2048u64, seconds = 0.5, note = "x");
            tracing::info!(target: "other", step = "chunk", rows = 1u64);
            tracing::info!(target: fanfold_pipeline::metrics::TARGET, step = "sweep", job = "", active = 3u64, repairs = 1u64);
        });
        let got = capture.0.lock().unwrap();
        assert_eq!(got.len(), 2, "only the metrics target");
        let doc = document(&got[0], "req-1", "fanfold-worker", 1_700_000_000_000);
        assert_eq!(doc["Step"], "chunk");
        assert_eq!(doc["JobId"], "abc123");
        assert_eq!(doc["RequestId"], "req-1");
        assert_eq!(doc["Rows"], 10.0);
        assert_eq!(doc["Bytes"], 2048.0);
        assert_eq!(doc["Seconds"], 0.5);
        assert!(doc.get("note").is_none());
        let cw = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(cw["Namespace"], "fanfold");
        assert_eq!(cw["Dimensions"], json!([["Step"], ["JobId", "Step"]]));
        let names: Vec<&str> = cw["Metrics"].as_array().unwrap().iter().map(|m| m["Name"].as_str().unwrap()).collect();
        assert_eq!(names, ["Bytes", "Rows", "Seconds"]);
        assert_eq!(doc["_aws"]["Timestamp"], 1_700_000_000_000u64);
        // Every metric named is a top-level member (what EMF requires).
        for n in names {
            assert!(doc[n].is_number(), "{n}");
        }
        let sweep = document(&got[1], "req-2", "fanfold-sweeper", 1);
        assert_eq!(sweep["_aws"]["CloudWatchMetrics"][0]["Dimensions"], json!([["Step"]]));
        assert_eq!(sweep["ActiveJobs"], 3.0);
        assert_eq!(sweep["Repairs"], 1.0);
        assert!(sweep.get("JobId").is_none());
    }
}
