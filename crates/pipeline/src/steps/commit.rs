//! The commit: once every range is done, the manifest and summary, DONE.
//!
//! The reducer that completes the range count calls it (and the sweeper
//! dispatches it when that reducer died). It holds the job's lease; it
//! reads one small result object per range, in key order, so the parts
//! come out in key order; it writes deterministic keys; DONE is
//! conditional on the lease, so a duplicate commit changes nothing.

use fanfold_engine::{PartWriter, RowFormatter, TopGroup};

use super::reduce::{StoreSink, TOP_GROUPS};
use super::Pipeline;
use crate::config::{now_ms, PipelineError, ScanTotals, Summary, Timings};
use crate::job::{InputKind, OutputPart, Outputs, RangeResult, Status};

impl Pipeline {
    /// Writes the manifest and summary and moves the job to DONE.
    pub fn commit(&self, id: &str, owner: &str) -> Result<(), PipelineError> {
        let job = self.job(id)?;
        if job.status != Status::Merging || job.range_count == 0 || job.ranges_done < job.range_count {
            return Ok(());
        }
        let now = now_ms();
        if !self.jobs.take_lease(id, owner, now, now + self.config.lease_ms)? {
            return Ok(());
        }
        let head = job.head.clone().ok_or_else(|| PipelineError::Invalid("committing a job without a head".into()))?;
        let compiled = head.compile(&Self::spec_of(&job)?)?;
        let compression = (!head.compression.is_none()).then_some(head.compression);
        let totals: ScanTotals = serde_json::from_slice(&self.read_object(&self.layout.scan_totals(id))?)
            .map_err(|e| PipelineError::Invalid(format!("scan totals: {e}")))?;
        let prefix = self.layout.results(id);

        let mut parts: Vec<OutputPart> = Vec::new();
        let mut groups = 0u64;
        let mut tops: Vec<TopGroup> = Vec::new();
        let mut kinds: Vec<fanfold_engine::kinds::ValueKind> = vec![Default::default(); compiled.aggs.len()];
        for r in 0..job.range_count {
            let result: RangeResult = serde_json::from_slice(&self.read_object(&self.layout.range_result(id, r))?)
                .map_err(|e| PipelineError::Invalid(format!("range {r}'s result: {e}")))?;
            parts.extend(result.parts);
            groups += result.groups;
            tops.extend(result.top_groups);
            for (k, r) in kinds.iter_mut().zip(result.kinds) {
                *k = k.merge(r);
            }
        }
        // The table over the parts (see `crate::athena`).
        let table = crate::athena::Table::of(
            id,
            &compiled,
            &kinds,
            &self.config.glue_database,
            &self.output.uri(&self.layout.data(id)),
        );
        if parts.is_empty() {
            // An empty result is one header-only part.
            let fmt = RowFormatter::new(compiled.dialect.delimiter);
            let data = self.layout.data(id);
            let sink = StoreSink {
                store: self.output.as_ref(),
                prefix: &data,
                current: None,
                job: id,
                range: 0,
                faults: None,
            };
            let w = PartWriter::for_range(sink, compiled.max_file_bytes, fmt.header(&compiled.output_header), 0)?;
            let (written, _) = w.finish()?;
            parts = written.iter().map(|p| OutputPart::new(format!("{data}{}", p.name), p)).collect();
        }
        let top_groups = fanfold_engine::TopGroups::merge(tops, TOP_GROUPS);

        let manifest_key = format!("{prefix}manifest.json");
        let manifest = serde_json::json!({
            "fileLocations": [{"URIs": parts.iter().map(|p| self.output.uri(&p.key)).collect::<Vec<_>>()}],
            "globalUploadSettings": {
                "format": "CSV",
                "delimiter": (compiled.dialect.delimiter as char).to_string(),
                "textqualifier": "\"",
                "containsHeader": "true"
            }
        });
        self.output.put(&manifest_key, &serde_json::to_vec_pretty(&manifest).expect("json"))?;

        let running = job.running_ms.unwrap_or(job.created_ms);
        let merging = job.merging_ms.unwrap_or(running);
        let summary = Summary {
            job_id: id.to_string(),
            source: self.input.uri(&job.source.key),
            input_bytes: job.source.size,
            compression: compression.map(|c| c.name().to_string()),
            decoded_bytes: compression.map(|_| totals.data_bytes),
            rows_read: totals.rows_read,
            rows_filtered: totals.rows_filtered,
            rows_skipped: totals.rows_skipped,
            bad_row_samples: totals.bad_row_samples,
            groups,
            chunks: totals.chunks,
            chunks_rerun: job.chunks_rerun,
            partial_bytes: totals.partial_bytes,
            repairs: job.sweeps,
            athena: Some(crate::config::AthenaTable {
                database: table.database.clone(),
                table: table.name.clone(),
                ddl: table.ddl.clone(),
            }),
            ranges: job.range_count,
            output_files: parts.clone(),
            top_groups,
            dataset: totals.dataset,
            timings_ms: Timings {
                split: running.saturating_sub(job.created_ms),
                dispatch: job.dispatched_ms.map_or(0, |d| d.saturating_sub(job.created_ms)),
                chunks: merging.saturating_sub(running),
                merge: now.saturating_sub(merging),
                total: now.saturating_sub(job.created_ms),
            },
        };
        if prefix.is_empty() {
            // A run's output directory: the statement beside the summary.
            self.output.put("athena.sql", table.ddl.as_bytes())?;
        }
        let summary_key = format!("{prefix}summary.json");
        self.output.put(&summary_key, &serde_json::to_vec_pretty(&summary).expect("json"))?;
        let part_count = parts.len() as u64;
        parts.truncate(Outputs::MAX_LISTED);
        let outputs = Outputs { parts, part_count, manifest: manifest_key, summary: summary_key };
        if let Some(c) = &self.catalog {
            // Before DONE: a job is DONE with its table (a commit that runs
            // again makes it again).
            c.create_table(&table)?;
        }
        if self.jobs.complete(id, owner, &outputs, now_ms())? {
            if let InputKind::Dataset { .. } = job.source.kind {
                self.publish_latest(&job, &outputs)?;
            }
            self.ended(id, Some(summary.groups));
            tracing::info!(
                target: crate::metrics::TARGET,
                step = "commit",
                job = id,
                done = 1u64,
                rows = summary.rows_read,
                bytes = summary.input_bytes,
                groups = summary.groups,
                output_bytes = summary.output_files.iter().map(|p| p.bytes).sum::<u64>(),
                seconds = summary.timings_ms.total as f64 / 1000.0,
            );
            self.cleanup_partials(id);
        } else if self.stopped(id)? {
            // Cancelled (or failed) while we committed: what we wrote must go.
            self.discard_results(id);
        }
        Ok(())
    }
}
