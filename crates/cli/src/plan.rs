//! `fanfold plan`: chunk count, wall time and dollar cost of a job on AWS.
//!
//! A model, not a measurement: every number it uses is printed with the
//! answer. The per-core scan throughput comes from the project's benchmark
//! (`bench/run.sh`: about 1 GB in 4–4.5 s of chunk phase on 2 cores for the
//! high-cardinality `bmat` file, 2 s for `zipf`); the S3 bandwidth of one
//! Lambda is an assumption (a single ranged GET stream), and it is the
//! limit: a Lambda scans faster than one GET stream delivers.

use crate::size::human;

/// Prices (us-east-1, 2026): Lambda arm64 per GB-second and per request,
/// S3 standard GET/PUT per 1000, DynamoDB on-demand per million write units.
const LAMBDA_GB_S: f64 = 0.000_013_333_4;
const LAMBDA_REQUEST: f64 = 0.20 / 1e6;
const S3_GET: f64 = 0.0004 / 1000.0;
const S3_PUT: f64 = 0.005 / 1000.0;
const DDB_WRU: f64 = 0.625 / 1e6;

/// Bytes per second one vCPU scans (benchmark, `bmat`, the slower profile).
pub const SCAN_PER_CORE: f64 = 115e6;
/// Bytes per second the finalizer merges, per byte of partial (benchmark, `bmat`).
pub const MERGE_PER_CORE: f64 = 130e6;
/// Bytes per second one Lambda reads from S3 (assumption: one GET stream).
pub const S3_PER_LAMBDA: f64 = 90e6;
/// Lambda gives one full vCPU at 1769 MB.
const MB_PER_VCPU: f64 = 1769.0;

pub struct PlanInput {
    pub size: u64,
    pub chunk_size: u64,
    pub concurrency: u64,
    pub memory_mb: u64,
    /// Partial bytes per input byte: ~1 when almost every row is its own
    /// group (bmat), ~0.01 for a few million groups in a large file.
    pub partial_ratio: f64,
}

pub struct Plan {
    #[cfg_attr(not(test), allow(dead_code))]
    pub chunks: u64,
    #[cfg_attr(not(test), allow(dead_code))]
    pub waves: u64,
    #[cfg_attr(not(test), allow(dead_code))]
    pub chunk_secs: f64,
    #[cfg_attr(not(test), allow(dead_code))]
    pub merge_secs: f64,
    #[cfg_attr(not(test), allow(dead_code))]
    pub wall_secs: f64,
    #[cfg_attr(not(test), allow(dead_code))]
    pub dollars: f64,
    pub lines: Vec<String>,
}

pub fn plan(p: &PlanInput) -> Plan {
    let chunks = p.size.div_ceil(p.chunk_size).max(1);
    let cpu = (p.memory_mb as f64 / MB_PER_VCPU).min(1.0); // one chunk is scanned on one thread
    let scan_rate = (SCAN_PER_CORE * cpu).min(S3_PER_LAMBDA);
    let chunk_secs = p.chunk_size.min(p.size) as f64 / scan_rate + 0.05; // + invoke and state writes
    let waves = chunks.div_ceil(p.concurrency.max(1));
    let partial_bytes = p.size as f64 * p.partial_ratio;
    let merge_secs = partial_bytes / (MERGE_PER_CORE * cpu).min(S3_PER_LAMBDA) + 0.5;
    let split_secs = 0.3 + chunks as f64 / 2000.0; // async invokes, bounded concurrency
    let wall_secs = split_secs + waves as f64 * chunk_secs + merge_secs;

    let gb = p.memory_mb as f64 / 1024.0;
    let lambda_gbs = gb * (chunks as f64 * chunk_secs + merge_secs + split_secs);
    let lambda = lambda_gbs * LAMBDA_GB_S + (chunks + 2) as f64 * LAMBDA_REQUEST;
    let spilled = if partial_bytes / chunks as f64 > 300e3 { chunks } else { 0 };
    let out_parts = (partial_bytes / 8e6).ceil().max(1.0);
    let gets = chunks as f64 * 1.2 + spilled as f64 * (partial_bytes / chunks as f64 / 8e6).ceil().max(1.0);
    let puts = spilled as f64 + out_parts + 3.0;
    let s3 = gets * S3_GET + puts * S3_PUT;
    // Per chunk: the chunk item (inline partial up to 300 KB) and the done-set update (job item grows by ~6 B a chunk).
    let inline_kb = if spilled > 0 { 1.0 } else { (partial_bytes / chunks as f64 / 1024.0).max(1.0) };
    let done_set_kb = chunks as f64 * 6.0 / 1024.0 / 2.0 + 1.0;
    let wru = chunks as f64 * (inline_kb + done_set_kb) + 10.0;
    let ddb = wru * DDB_WRU;
    let dollars = lambda + s3 + ddb;
    let scan_secs = waves as f64 * chunk_secs;
    let limit = if merge_secs > scan_secs {
        format!("the single finalizer's merge ({merge_secs:.1} s of {wall_secs:.1} s)")
    } else {
        format!("the scan waves ({scan_secs:.1} s of {wall_secs:.1} s): more concurrency or memory helps")
    };

    let lines = vec![
        format!("input           {} in {} chunks of {}", human(p.size), chunks, human(p.chunk_size)),
        format!(
            "workers         {} concurrent Lambdas at {} MB ({:.2} vCPU each) → {} wave(s)",
            p.concurrency, p.memory_mb, cpu, waves
        ),
        format!(
            "per chunk       {:.2} s (scan {:.0} MB/s: min of {:.0} MB/s/vCPU × {:.2} and S3 {:.0} MB/s)",
            chunk_secs,
            scan_rate / 1e6,
            SCAN_PER_CORE / 1e6,
            cpu,
            S3_PER_LAMBDA / 1e6
        ),
        format!(
            "finalize        {:.1} s to merge {} of partials (at {:.0} MB/s, one finalizer)",
            merge_secs,
            human(partial_bytes as u64),
            (MERGE_PER_CORE * cpu).min(S3_PER_LAMBDA) / 1e6
        ),
        format!(
            "wall time       {:.1} s (split {:.1} + {} × {:.2} + merge {:.1})",
            wall_secs, split_secs, waves, chunk_secs, merge_secs
        ),
        format!(
            "Lambda          ${:.4} ({:.0} GB-s at ${:.10}/GB-s arm64, {} invocations)",
            lambda,
            lambda_gbs,
            LAMBDA_GB_S,
            chunks + 2
        ),
        format!("S3              ${:.4} ({:.0} GETs, {:.0} PUTs)", s3, gets, puts),
        format!("DynamoDB        ${:.4} ({:.0} write units on demand)", ddb, wru),
        format!("total           ${:.4}", dollars),
        format!("limited by      {limit}"),
    ];
    Plan { chunks, waves, chunk_secs, merge_secs, wall_secs, dollars, lines }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_concurrency_is_faster_and_costs_about_the_same() {
        let base = PlanInput {
            size: 1_000_000_000_000,
            chunk_size: 64 << 20,
            concurrency: 100,
            memory_mb: 1769,
            partial_ratio: 0.01,
        };
        let a = plan(&base);
        let b = plan(&PlanInput { concurrency: 1000, ..base });
        assert_eq!(a.chunks, 14_902);
        assert_eq!((a.waves, b.waves), (150, 15));
        assert!(b.waves as f64 * b.chunk_secs < a.waves as f64 * a.chunk_secs / 5.0);
        assert!(b.wall_secs < a.wall_secs);
        assert!((a.dollars - b.dollars).abs() < a.dollars * 0.05);
        // A high-cardinality file is limited by the single finalizer.
        let c = plan(&PlanInput { partial_ratio: 1.0, concurrency: 1000, ..base });
        assert!(c.merge_secs > 10.0 * c.waves as f64 * c.chunk_secs);
    }
}
