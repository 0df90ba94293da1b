//! `fanfold plan`: a simulation of a job on AWS Lambda — chunks, waves,
//! the key ranges and their reducers, the requests, the wall time and the
//! dollars — that refuses a configuration a function cannot run.
//!
//! A model, not a measurement: every rate it uses is a constant below with
//! where it comes from, and the output prints them. It simulates:
//!
//! 1. the split and the dispatch tree ([`dispatch_at`]): the header read,
//!    then the splitter invokes a dispatcher per further slice of
//!    [`fanfold_pipeline::SLICE`] chunk tasks and sends the first slice
//!    itself, each function at [`INVOKES_PER_S`], all of them together at
//!    most at Lambda's account rate of [`INVOKE_RATE_PER_CONCURRENCY`]
//!    invokes per second per unit of concurrency;
//! 2. the chunk tasks on a pool of concurrent functions that Lambda grows by
//!    1,000 environments per 10 s ([`RAMP`]) up to the concurrency limit;
//!    a chunk takes the longer of its ranged reads at [`S3_PER_LAMBDA`] (a
//!    few GETs in flight, overlapping the scan) and its scan in pieces on
//!    one thread per vCPU at [`SCAN_PER_CORE`] each, then the join of the
//!    pieces' partials at [`MERGE_PER_CORE`] and the PUT of its partial;
//! 3. the plan: paging the chunk records and reading the 64 sample windows;
//! 4. R reducers (R from the result size, as the pipeline chooses it), each
//!    opening a slice of every partial (an index GET and a slice GET, or one
//!    GET for a partial under 256 KiB, [`OPENS_IN_FLIGHT`] at a time), then
//!    reading its share of the partials and writing its share of the result
//!    through one network interface, merging at [`MERGE_PER_CORE`]; with
//!    more than K chunks, each extra merge level merges the share once more
//!    through the reducer's `/tmp` (CPU and disk, not network), which must
//!    hold it;
//! 5. the commit: one GET per range, the manifest and summary.
//!
//! It refuses a chunk or a reducer that would pass 900 s, or a worker whose
//! partial cannot fit its memory, and says which and why.

use crate::size::human;

/// Prices (us-east-1): Lambda arm64 per GB-second and per request, S3
/// standard GET/PUT, DynamoDB on demand per million write and read units.
const LAMBDA_GB_S: f64 = 0.000_013_333_4;
const LAMBDA_REQUEST: f64 = 0.20 / 1e6;
/// Lambda ephemeral storage past the free 512 MB, per GB-second.
const LAMBDA_TMP_GB_S: f64 = 0.000_000_030_9;
const S3_GET: f64 = 0.0004 / 1000.0;
const S3_PUT: f64 = 0.005 / 1000.0;
const DDB_WRU: f64 = 0.625 / 1e6;
const DDB_RRU: f64 = 0.125 / 1e6;

/// Bytes per second one vCPU scans (`bench/run.sh`, `bmat`, the slower profile).
pub const SCAN_PER_CORE: f64 = 115e6;
/// Partial bytes per second one vCPU merges (`bench/run.sh`, `bmat` merge phase).
pub const MERGE_PER_CORE: f64 = 130e6;
/// Bytes per second of network one function gets, whatever its memory (published).
pub const S3_PER_LAMBDA: f64 = 75e6;
/// Decoded bytes per second one vCPU inflates (flate2 with zlib-rs, a
/// `fanfold gen --profile zipf` file gzipped at the default level, measured
/// 2026-12-04; zstd decodes faster).
pub const GZIP_DECODE_PER_CORE: f64 = 350e6;
/// How much CSV shrinks under gzip (the zipf file above: 2.9; assumption).
pub const GZIP_RATIO: f64 = 3.0;
/// Bytes per second a function writes or reads its `/tmp` sequentially
/// (assumption; a reducer's spills are written and read back once a level).
pub const TMP_PER_LAMBDA: f64 = 200e6;
/// Seconds to the first byte of a GET (assumption).
pub const GET_LATENCY: f64 = 0.02;
/// Async invokes per second from one function (assumption: ~50 ms each, 32 in flight).
pub const INVOKES_PER_S: f64 = 640.0;
/// Invoke requests per second per unit of account concurrency (published:
/// "10 × the concurrent executions quota").
pub const INVOKE_RATE_PER_CONCURRENCY: f64 = 10.0;
/// Seconds before a dispatcher sends its first task (a cold start of a
/// small Rust function and its first job-store calls; assumption).
pub const DISPATCHER_START: f64 = 0.3;
/// A reducer opens this many partial slices at once.
pub const OPENS_IN_FLIGHT: f64 = 16.0;
/// Lambda adds at most 1,000 execution environments per 10 s per function (published).
pub const RAMP: (f64, f64) = (1000.0, 10.0);
/// Lambda gives one full vCPU at 1769 MB.
const MB_PER_VCPU: f64 = 1769.0;
/// Lambda's limit on one invocation.
const MAX_SECONDS: f64 = 900.0;
/// Partials a reducer merges at once (`Config::merge_fan_in`).
const FAN_IN: f64 = 256.0;
/// Bytes of a chunk record besides an inline partial (report, key sketch).
const RECORD_BYTES: f64 = 1500.0;
/// Buffers of one piece's read-ahead at the Lambda defaults (READ_STREAMS 4,
/// READ_BLOCK 8 MiB: at most 2 × 4 + 1 blocks).
const READ_AHEAD_BYTES: f64 = 9.0 * 8.0 * 1048576.0;
/// Rows a piece stages before folding them into its groups (the engine's
/// `FOLD_BYTES`).
const STAGED_BYTES: f64 = 128.0 * 1048576.0;
/// Bytes of a large partial's index (1,024 entries of a key and an offset).
const INDEX_BYTES: f64 = 40e3;
/// Multipart upload part size of the S3 adapter (`fanfold_aws::PART_SIZE`).
const UPLOAD_PART: f64 = 64.0 * 1048576.0;

/// The requests one invocation of a step makes.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Requests {
    pub s3_get: f64,
    pub s3_put: f64,
    pub ddb_write: f64,
    pub ddb_read: f64,
    pub invoke: f64,
}

impl std::fmt::Display for Requests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "S3 {:.1} GET, {:.1} PUT; DynamoDB {:.1} writes, {:.1} reads; {:.0} invokes",
            self.s3_get, self.s3_put, self.ddb_write, self.ddb_read, self.invoke
        )
    }
}

/// The shapes the model has measurements for (`fanfold gen`'s profiles of the same names).
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Profile {
    Bmat,
    Zipf,
}

/// What the data looks like. Bytes per input byte or per group, as
/// `fanfold run` measured them on `fanfold gen`'s 1 GB files (2026-12-07,
/// `summary.json`'s `partial_bytes` and the parts' sizes).
#[derive(Clone, Copy, Debug)]
pub enum Shape {
    /// Almost every row its own group: the partials, the result and what a
    /// worker holds for its groups are these fractions of the input.
    Unique { partial: f64, result: f64, held: f64 },
    /// A bounded key space of `groups` groups. A chunk of `c` bytes holds
    /// the fraction `min(1, (c / saturation)^growth)` of them (the number of
    /// distinct keys in a sample grows as a power of its size under a Zipf
    /// law, Heaps' law), at `partial` bytes each in its partial, `held`
    /// bytes each in the worker's memory and `result` bytes each in the
    /// result.
    Bounded { groups: f64, saturation: f64, growth: f64, partial: f64, held: f64, result: f64 },
}

impl Shape {
    /// bmat (1 GB): the result 0.996 of the input, partials 0.62 of it in
    /// 512 MiB chunks and 0.73 in 64 MiB ones (0.7 here); what a worker
    /// holds, 0.95 (its measured peak: see `plan`).
    pub fn bmat() -> Shape {
        Shape::Unique { partial: 0.7, result: 1.0, held: 0.95 }
    }
    /// zipf (1 GB): 1.83 M groups; a chunk's partial is 5.9 MB at 64 MiB,
    /// 8.3 MB at 128 MiB, 11.6 MB at 256 MiB, 14.7 MB at 512 MiB and 16.8 MB
    /// for the whole file (9.1 bytes a group); the result 55.3 MB (30.2
    /// bytes a group). The curve through them: every group by 720 MB, growth
    /// 0.44.
    pub fn zipf() -> Shape {
        Shape::Bounded { groups: 1.83e6, saturation: 720e6, growth: 0.44, partial: 9.1, held: 24.0, result: 30.2 }
    }

    /// The groups in `bytes` of input.
    fn groups_in(&self, bytes: f64) -> f64 {
        match *self {
            Shape::Unique { .. } => f64::NAN,
            Shape::Bounded { groups, saturation, growth, .. } => groups * (bytes / saturation).powf(growth).min(1.0),
        }
    }

    fn partial_of_chunk(&self, chunk: f64) -> f64 {
        match *self {
            Shape::Unique { partial, .. } => chunk * partial,
            Shape::Bounded { partial, .. } => self.groups_in(chunk) * partial,
        }
    }

    /// What a worker holds for the groups of `chunk` bytes.
    fn held_of_chunk(&self, chunk: f64) -> f64 {
        match *self {
            Shape::Unique { held, .. } => chunk * held,
            Shape::Bounded { held, .. } => self.groups_in(chunk) * held,
        }
    }

    fn result_of(&self, size: f64) -> f64 {
        match *self {
            Shape::Unique { result, .. } => size * result,
            Shape::Bounded { result, .. } => self.groups_in(size) * result,
        }
    }

    /// Input bytes a vCPU scans per second: measured on the same machine in
    /// the same run (`fanfold run --workers 1`, chunk phase): zipf 7.5 s and
    /// bmat 11.5 s for 1 GB, so zipf at 1.5 × bmat's [`SCAN_PER_CORE`].
    fn scan_per_core(&self) -> f64 {
        match self {
            Shape::Unique { .. } => SCAN_PER_CORE,
            Shape::Bounded { .. } => SCAN_PER_CORE * 1.5,
        }
    }
}

#[derive(Clone)]
pub struct PlanInput {
    pub size: u64,
    pub chunk_size: u64,
    pub concurrency: u64,
    pub memory_mb: u64,
    pub reducer_memory_mb: u64,
    /// Reducer `/tmp` in MB (the template's FinalizerStorage), for spills.
    pub reducer_storage_mb: u64,
    pub range_bytes: u64,
    /// Partials up to this size stay in DynamoDB (`InlineLimit`).
    pub inline_limit: u64,
    /// Spilled partials up to this size are read whole by a reducer (`ReadWhole`).
    pub read_whole: u64,
    pub shape: Shape,
}

#[derive(Debug)]
pub struct Plan {
    pub chunks: u64,
    pub ranges: u64,
    pub wall_secs: f64,
    pub dollars: f64,
    pub lines: Vec<String>,
    /// Why this cannot run, if it cannot.
    pub refused: Option<String>,
    /// The split and scan: until the last chunk is done, and what it costs.
    pub scan_secs: f64,
    pub scan_dollars: f64,
}

/// Functions available at time `t` (s) under Lambda's scaling rate.
fn capacity(t: f64, limit: u64) -> usize {
    let ramp = RAMP.0 * (1.0 + (t / RAMP.1).floor());
    ramp.min(limit as f64).max(1.0) as usize
}

/// Runs `n` tasks of `secs` each, released at `release(i)`, on a pool that
/// grows with [`capacity`]. Returns when the last one ends.
fn simulate(n: u64, secs: f64, limit: u64, release: impl Fn(u64) -> f64) -> f64 {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    // Finish times in milliseconds (a heap of integers).
    let mut running: BinaryHeap<Reverse<u64>> = BinaryHeap::new();
    let mut end = 0u64;
    let mut last_start = 0u64; // tasks start in order
    for i in 0..n {
        let mut t = ((release(i) * 1000.0) as u64).max(last_start);
        loop {
            while running.peek().is_some_and(|Reverse(f)| *f <= t) {
                running.pop();
            }
            if running.len() < capacity(t as f64 / 1000.0, limit) {
                break;
            }
            // Wait for a function to finish, or for Lambda to add more.
            let next_step = ((t as f64 / 1000.0 / RAMP.1).floor() + 1.0) * RAMP.1 * 1000.0;
            let Reverse(f) = *running.peek().expect("full, so non-empty");
            t = f.min(next_step as u64);
        }
        last_start = t;
        let f = t + (secs * 1000.0) as u64;
        end = end.max(f);
        running.push(Reverse(f));
    }
    end as f64 / 1000.0
}

/// When chunk task `i` of `chunks` is sent, from the end of the split:
/// slice 0 by the splitter after it invoked the other slices' dispatchers,
/// slice `s` by its dispatcher, started `s` invokes in; never faster than
/// the account's invoke rate.
pub fn dispatch_at(i: u64, chunks: u64, concurrency: u64) -> f64 {
    let slice = fanfold_pipeline::SLICE as u64;
    let (s, j) = (i / slice, (i % slice) as f64);
    let slices = chunks.div_ceil(slice);
    let tree = if s == 0 {
        (slices - 1) as f64 / INVOKES_PER_S + j / INVOKES_PER_S
    } else {
        s as f64 / INVOKES_PER_S + DISPATCHER_START + j / INVOKES_PER_S
    };
    let account = i as f64 / (INVOKE_RATE_PER_CONCURRENCY * concurrency.max(1) as f64);
    tree.max(account)
}

pub fn plan(p: &PlanInput) -> Plan {
    let size = p.size as f64;
    let chunk = p.chunk_size.min(p.size).max(1) as f64;
    let chunks = p.size.div_ceil(p.chunk_size.max(1)).max(1);
    // A worker scans in pieces on one thread per vCPU, as the Lambda
    // adapter's SCAN_THREADS default: its share of the CPU, at most 6 vCPU.
    let cpu = (p.memory_mb as f64 / MB_PER_VCPU).min(6.0);
    let threads = cpu.round().max(1.0);
    let rcpu = (p.reducer_memory_mb as f64 / MB_PER_VCPU).min(6.0);
    let partial_chunk = p.shape.partial_of_chunk(chunk);
    let partials = partial_chunk * chunks as f64;
    let result = p.shape.result_of(size);
    let mut refused = None;

    // 1–2. Split and scan.
    let split_secs = 0.3;
    let read = chunk / S3_PER_LAMBDA;
    let scan_rate = p.shape.scan_per_core() * cpu.min(threads);
    let scan = chunk / scan_rate;
    // The pieces' partials merged into the chunk's one (one thread).
    let piece_partial = p.shape.partial_of_chunk(chunk / threads);
    let join = if threads > 1.0 { threads * piece_partial / MERGE_PER_CORE } else { 0.0 };
    let spilled = partial_chunk > p.inline_limit as f64;
    let chunk_secs =
        read.max(scan) + join + if spilled { GET_LATENCY + partial_chunk / S3_PER_LAMBDA } else { 0.0 } + 0.05;
    let dispatch = |i| dispatch_at(i, chunks, p.concurrency);
    let slices = chunks.div_ceil(fanfold_pipeline::SLICE as u64);
    let dispatch_secs = (0..chunks).map(dispatch).fold(0.0, f64::max);
    let dispatch_by = if dispatch_secs <= (chunks - 1) as f64 / (INVOKE_RATE_PER_CONCURRENCY * p.concurrency as f64) {
        "the account's invoke rate"
    } else {
        "one dispatcher's invokes"
    };
    let scan_end = simulate(chunks, chunk_secs, p.concurrency, |i| split_secs + dispatch(i));
    // The runtime, per piece its read-ahead (4 streams: up to 9 blocks of
    // 8 MiB), its staged rows (folded every 128 MiB where keys repeat), its
    // groups and their sorted run, and with several pieces the joined
    // partial. Measured with `fanfold run --workers 1 --chunk-size 512MB`
    // (no read-ahead) on the 1 GB files: zipf 424 MB (this gives 357 MB),
    // bmat 1.26 GB (1.29 GB).
    let joined = if threads > 1.0 { partial_chunk } else { 0.0 };
    let held = p.shape.held_of_chunk(chunk / threads);
    // (Measured locally; on S3 the partial's upload also buffers a part.)
    let upload = if spilled { UPLOAD_PART.min(partial_chunk) } else { 0.0 };
    let worker_mem = 200e6 + threads * (READ_AHEAD_BYTES + STAGED_BYTES + 2.0 * held) + joined + upload;
    if chunk_secs > MAX_SECONDS {
        refused = Some(format!("a chunk takes {chunk_secs:.0} s, more than Lambda's 900 s: use smaller chunks"));
    } else if worker_mem > p.memory_mb as f64 * 1e6 {
        refused = Some(format!(
            "a worker holds about {} for a chunk's groups, more than its {} MB: use smaller chunks or more memory",
            human(worker_mem as u64),
            p.memory_mb
        ));
    }

    // 3. Plan.
    let mut plan_secs = chunks as f64 * RECORD_BYTES / 1e6 * 0.03 + 64.0 * GET_LATENCY + 0.5;

    // 4. Reducers: R as the pipeline chooses it.
    let ranges = ((result / p.range_bytes.max(1) as f64).ceil().max((size / (16u64 << 30) as f64).ceil()))
        .clamp(1.0, 1000.0) as u64;
    let r = ranges as f64;
    // A partial over `read_whole` is read by its slice: with several ranges
    // the plan's slice tables say where (the plan reads every such index,
    // 16 at a time, and writes a table per 1,000 chunks; each reducer reads
    // its column of each), else the reducer reads the index first.
    let sliced = spilled && partial_chunk > p.read_whole as f64;
    let tables = if sliced && ranges > 1 { (chunks as f64 / fanfold_pipeline::TABLE_ROWS as f64).ceil() } else { 0.0 };
    let gets_per_slice = if sliced && tables == 0.0 {
        2.0
    } else if spilled {
        1.0
    } else {
        0.0
    };
    if tables > 0.0 {
        plan_secs += chunks as f64 * GET_LATENCY / fanfold_pipeline::INDEX_READS_IN_FLIGHT as f64
            + chunks as f64 * INDEX_BYTES / S3_PER_LAMBDA
            + tables * GET_LATENCY;
    }
    let open_secs = chunks as f64 * gets_per_slice * GET_LATENCY / OPENS_IN_FLIGHT;
    // Up to K² chunks, only the groups that leave K sources for the final
    // merge are merged ahead (a fraction of one extra level); beyond, every level.
    let n = chunks as f64;
    let levels = if n <= FAN_IN {
        0.0
    } else if n <= FAN_IN * FAN_IN {
        (((n - FAN_IN) / (FAN_IN - 1.0)).ceil() * FAN_IN).min(n) / n
    } else {
        n.log(FAN_IN).ceil() - 1.0
    };
    let index_bytes = if gets_per_slice == 2.0 { chunks as f64 * INDEX_BYTES } else { 0.0 };
    let share_in = partials / r + index_bytes;
    let share_out = result / r;
    let net = (share_in + share_out) / S3_PER_LAMBDA;
    // Spills: each merges K sources, so it holds the groups of K chunks in
    // the range (as much as its sources when every row is its own group,
    // about one source's worth when the groups repeat); written and read
    // back once a level, on the reducer's /tmp. A merged level's spills are
    // deleted, so /tmp holds at most what the extra levels write.
    let one_spill = p.shape.partial_of_chunk((FAN_IN * chunk).min(size)) / r;
    let spill_written = levels * share_in.min((n / FAN_IN).ceil() * one_spill);
    let spill_bytes = spill_written.min(share_in);
    let merge_cpu = (share_in + spill_written) / (MERGE_PER_CORE * rcpu.min(2.0));
    let disk = 2.0 * spill_written / TMP_PER_LAMBDA;
    let reduce_secs = open_secs + net.max(merge_cpu).max(disk) + 0.2;
    let reduce_end = simulate(ranges, reduce_secs, p.concurrency, |_| 0.0);
    let commit_secs = r * GET_LATENCY + 0.3;
    if refused.is_none() && reduce_secs > MAX_SECONDS {
        refused = Some(format!(
            "a reducer takes {reduce_secs:.0} s, more than Lambda's 900 s (its share: {} in, {} out): lower RangeBytes",
            human(share_in as u64),
            human(share_out as u64)
        ));
    }
    let tmp_bytes = p.reducer_storage_mb as f64 * 1048576.0;
    if refused.is_none() && spill_bytes > tmp_bytes {
        refused = Some(format!(
            "a reducer spills {} of intermediate runs, more than its {} MB of /tmp: raise FinalizerStorage (at most 10240) or lower RangeBytes",
            human(spill_bytes as u64),
            p.reducer_storage_mb
        ));
    }
    let wall_secs = scan_end + plan_secs + reduce_end + commit_secs;

    // Requests.
    // A stream is one PutObject up to a part, else a multipart upload (create, parts, complete).
    let puts = |bytes: f64| if bytes <= UPLOAD_PART { 1.0 } else { (bytes / UPLOAD_PART).ceil() + 2.0 };
    let reducer_puts = {
        let parts = (share_out / fanfold_engine::DEFAULT_MAX_FILE_BYTES as f64).ceil().max(1.0);
        // its parts, its range's result
        parts * puts(share_out / parts) + 1.0
    };
    let record_kb = ((RECORD_BYTES + if spilled { 0.0 } else { partial_chunk }) / 1024.0).ceil();
    // put_chunk + mark_done (two items in a transaction, 2 units each); per range: take + done transactions.
    let ddb_writes = chunks as f64 * (record_kb + 4.0) + r * 8.0 + 12.0;
    // mark_done's count read; the plan's and every reducer's pages of chunk records.
    let ddb_reads = chunks as f64 * (1.0 + chunk_secs) + (1.0 + r) * chunks as f64 * record_kb * 1024.0 / 4096.0;

    // Requests of one invocation of each step, as the code makes them (the
    // emulator run in tests/e2e/tests/cloud.rs counts the real ones).
    let pages = (chunks as f64 / 1000.0).ceil();
    let per_chunk = Requests {
        // the ranged GET (one more per 8 MiB window past the chunk's end), the partial's PUT(s)
        s3_get: 1.0 + (chunk / (chunk + 8.0 * 1048576.0)).floor(),
        s3_put: if spilled { puts(partial_chunk) } else { 0.0 },
        // put_chunk, and mark_done's transaction
        ddb_write: 2.0,
        // the job, a status check a second, the done count, and a status check after a spill
        ddb_read: 2.0 + chunk_secs.floor() + if spilled { 1.0 } else { 0.0 },
        invoke: 0.0,
    };
    let per_slice = fanfold_pipeline::SLICE.min(chunks as u32) as f64;
    let per_dispatcher = Requests {
        s3_get: 0.0,
        s3_put: 0.0,
        // take the slice, a progress record per 100 tasks, done
        ddb_write: 2.0 + (per_slice / fanfold_pipeline::PROGRESS_EVERY as f64).ceil(),
        // the job, the slice's record
        ddb_read: 2.0,
        invoke: per_slice,
    };
    // The last reducer commits: it reads the totals and every range's
    // result, writes the manifest and the summary, takes the job's lease and
    // marks it DONE; per reducer, a share of that.
    let per_reducer = Requests {
        // the range plan, a slice of every partial, its column of each slice table
        s3_get: 1.0 + chunks as f64 * gets_per_slice + tables + (r + 1.0) / r,
        s3_put: reducer_puts + 2.0 / r,
        // take the range, done
        ddb_write: 2.0 + 2.0 / r,
        // the job, pages of chunk records, a status check a second, the done count
        ddb_read: 2.0 + pages + reduce_secs.floor(),
        invoke: 0.0,
    };

    // The job's S3 requests: the split's header read and the plan's 64
    // sample windows and totals, then every step's invocations.
    // (The slice tables: the plan's index GETs and table PUTs.)
    let s3_gets = 2.0
        + 64.0
        + if tables > 0.0 { chunks as f64 } else { 0.0 }
        + chunks as f64 * per_chunk.s3_get
        + r * per_reducer.s3_get;
    let s3_puts = 4.0 + tables + chunks as f64 * per_chunk.s3_put + r * per_reducer.s3_put;

    let gb = p.memory_mb as f64 / 1024.0;
    let rgb = p.reducer_memory_mb as f64 / 1024.0;
    let lambda_gbs = gb * chunks as f64 * chunk_secs
        + rgb * (r * reduce_secs + plan_secs + commit_secs)
        + 0.5 * (split_secs + slices as f64 * (DISPATCHER_START + fanfold_pipeline::SLICE as f64 / INVOKES_PER_S));
    // The finalizer's /tmp past 512 MB, billed while it runs.
    let tmp_gbs =
        (p.reducer_storage_mb.saturating_sub(512)) as f64 / 1024.0 * (r * reduce_secs + plan_secs + commit_secs);
    let lambda =
        lambda_gbs * LAMBDA_GB_S + tmp_gbs * LAMBDA_TMP_GB_S + (chunks + slices + ranges + 3) as f64 * LAMBDA_REQUEST;
    let s3 = s3_gets * S3_GET + s3_puts * S3_PUT;
    let ddb = ddb_writes * DDB_WRU + ddb_reads * DDB_RRU;
    let dollars = lambda + s3 + ddb;
    // The scan's share: the workers, the dispatchers, the chunks' requests.
    let scan_dollars = (gb * chunks as f64 * chunk_secs
        + 0.5 * (split_secs + slices as f64 * (DISPATCHER_START + fanfold_pipeline::SLICE as f64 / INVOKES_PER_S)))
        * LAMBDA_GB_S
        + (chunks + slices + 1) as f64 * LAMBDA_REQUEST
        + (2.0 + chunks as f64 * per_chunk.s3_get) * S3_GET
        + chunks as f64 * per_chunk.s3_put * S3_PUT
        + chunks as f64 * (record_kb + 4.0) * DDB_WRU
        + chunks as f64 * (1.0 + chunk_secs) * DDB_RRU;
    let phases =
        [("the scan", scan_end), ("the plan", plan_secs), ("the reducers", reduce_end), ("the commit", commit_secs)];
    let (slowest, secs) = phases.iter().copied().fold(("", 0.0), |a, b| if b.1 > a.1 { b } else { a });
    let why = match slowest {
        "the scan" if read > scan => "S3 reads at 75 MB/s per function",
        "the scan" => "the scan's CPU",
        "the reducers" if open_secs > net.max(merge_cpu).max(disk) => "opening a slice of every partial",
        "the reducers" if disk > net.max(merge_cpu) => "a reducer's /tmp (its spills)",
        "the reducers" if net > merge_cpu => "a reducer's 75 MB/s of network",
        "the reducers" => "the merge's CPU",
        _ => "its requests",
    };

    let lines = vec![
        format!("input           {} in {} chunks of {}", human(p.size), chunks, human(chunk as u64)),
        format!(
            "workers         up to {} concurrent at {} MB ({:.2} vCPU, {} scan threads), growing {} per {} s",
            p.concurrency, p.memory_mb, cpu, threads, RAMP.0, RAMP.1
        ),
        format!(
            "per chunk       {:.2} s (read {:.2} s at {:.0} MB/s, scan {:.2} s at {:.0} MB/s, join {:.2} s), partial {}, worker memory {}",
            chunk_secs,
            read,
            S3_PER_LAMBDA / 1e6,
            scan,
            scan_rate / 1e6,
            join,
            human(partial_chunk as u64),
            human(worker_mem as u64)
        ),
        format!(
            "split           {split_secs:.1} s; dispatch {slices} slices of up to {} tasks, {INVOKES_PER_S:.0} invokes/s each: last task sent at {dispatch_secs:.1} s (limited by {dispatch_by})",
            fanfold_pipeline::SLICE
        ),
        format!("scan ends       at {scan_end:.1} s"),
        format!(
            "plan            {plan_secs:.1} s (chunk records, 64 sample windows{})",
            if tables > 0.0 { format!(", {chunks} partial indexes and {tables:.0} slice tables") } else { String::new() }
        ),
        format!(
            "reducers        {} key ranges at {} MB: {:.1} s each (open {:.1} s, {} in, {} out, {:.2} extra merge levels spilling {} to /tmp)",
            ranges,
            p.reducer_memory_mb,
            reduce_secs,
            open_secs,
            human(share_in as u64),
            human(share_out as u64),
            levels,
            human(spill_bytes as u64)
        ),
        {
            // A single-member compressed input is one stream on one worker: decoding on one
            // thread ahead of the scan on another (on one vCPU, one after the
            // other), its compressed bytes at the network's rate.
            let decode_and_scan = if cpu >= 2.0 {
                GZIP_DECODE_PER_CORE.min(SCAN_PER_CORE)
            } else {
                cpu / (1.0 / GZIP_DECODE_PER_CORE + 1.0 / SCAN_PER_CORE)
            };
            let rate = decode_and_scan.min(S3_PER_LAMBDA * GZIP_RATIO);
            format!(
                "compressed      a gzip or zstd file of one member is one stream on one worker at {:.0} MB/s: at most {} of CSV ({} gzip at {GZIP_RATIO}:1) within {MAX_SECONDS:.0} s; one of many members (bgzip, pzstd, cat a.gz b.gz) splits into chunks as a plain file does",
                rate / 1e6,
                human((rate * MAX_SECONDS) as u64),
                human((rate * MAX_SECONDS / GZIP_RATIO) as u64)
            )
        },
        format!("commit          {commit_secs:.1} s"),
        format!("requests/chunk      {per_chunk}"),
        format!("requests/dispatcher {per_dispatcher}"),
        format!("requests/reducer    {per_reducer}"),
        format!(
            "wall time       {:.1} s (scan {:.1} + plan {:.1} + reduce {:.1} + commit {:.1})",
            wall_secs, scan_end, plan_secs, reduce_end, commit_secs
        ),
        format!("requests        S3 {:.0} GETs, {:.0} PUTs; DynamoDB {:.0} write units, {:.0} read units", s3_gets, s3_puts, ddb_writes, ddb_reads),
        format!("Lambda          ${:.4} ({:.0} GB-s, {} invocations)", lambda, lambda_gbs, chunks + slices + ranges + 3),
        format!("S3              ${s3:.4}"),
        format!("DynamoDB        ${ddb:.4}"),
        format!("total           ${dollars:.4}"),
        format!("limited by      {slowest} ({secs:.1} s): {why}"),
    ];
    Plan { chunks, ranges, wall_secs, dollars, lines, refused, scan_secs: scan_end, scan_dollars }
}

/// Adding `add` bytes to a dataset of `p.size` bytes: the new file's scan
/// (its own chunks), then the merge of every kept partial (the whole
/// dataset's, as a full run merges them), next to a full run over both.
/// Returns the lines to print and the two plans (added, full).
pub fn plan_add(p: &PlanInput, add: u64) -> (Vec<String>, Plan, Plan) {
    let full = plan(&PlanInput { size: p.size + add, ..p.clone() });
    let scan = plan(&PlanInput { size: add, ..p.clone() });
    let merge_secs = full.wall_secs - full.scan_secs;
    let merge_dollars = full.dollars - full.scan_dollars;
    let (secs, dollars) = (scan.scan_secs + merge_secs, scan.scan_dollars + merge_dollars);
    let lines = vec![
        format!(
            "dataset add     {} to {}: scan {} chunks ({:.1} s, ${:.4}) + merge every kept partial ({} key ranges, {:.1} s, ${:.4}) = {:.1} s, ${:.4}",
            human(add),
            human(p.size),
            scan.chunks,
            scan.scan_secs,
            scan.scan_dollars,
            full.ranges,
            merge_secs,
            merge_dollars,
            secs,
            dollars
        ),
        format!(
            "full re-run     {}: {:.1} s, ${:.4} (the merge is the same: the kept scans save the scan of the {} already there)",
            human(p.size + add),
            full.wall_secs,
            full.dollars,
            human(p.size)
        ),
    ];
    (lines, scan, full)
}

impl Plan {
    /// One line: the figures a table of runs needs.
    pub fn summary(&self) -> String {
        format!(
            "summary         {} chunks, {} key ranges, {:.1} s, ${:.4}{}",
            self.chunks,
            self.ranges,
            self.wall_secs,
            self.dollars,
            if self.refused.is_some() { " (refused)" } else { "" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compressed_stream_has_a_size_limit_and_two_cores_raise_it() {
        let limit = |memory_mb| {
            let p = plan(&PlanInput { memory_mb, ..tb(Shape::bmat()) });
            let line = p.lines.iter().find(|l| l.starts_with("compressed")).expect("a compressed line").clone();
            line.split(" at ").nth(1).unwrap().split(' ').next().unwrap().parse::<f64>().unwrap()
        };
        let (one, two) = (limit(1769), limit(3538));
        // One vCPU decodes then scans; two do both at once, at the scan's rate.
        assert!((one - 1.0 / (1.0 / 350.0 + 1.0 / 115.0)).abs() < 1.0, "{one}");
        assert_eq!(two, 115.0);
    }

    #[test]
    fn adding_a_gigabyte_to_a_terabyte_dataset_scans_it_and_merges_everything() {
        for shape in [Shape::zipf(), Shape::bmat()] {
            let (lines, added, full) = plan_add(&tb(shape), 1_000_000_000);
            assert!(lines[0].starts_with("dataset add") && lines[1].starts_with("full re-run"), "{lines:?}");
            // The new file's scan is a thousandth of the full one's chunks.
            assert!(added.chunks * 500 < full.chunks, "{} vs {}", added.chunks, full.chunks);
            assert!(added.scan_dollars * 100.0 < full.scan_dollars);
            let merge = full.dollars - full.scan_dollars;
            let incremental = added.scan_dollars + merge;
            assert!(incremental < full.dollars && incremental > merge, "{incremental} {merge} {}", full.dollars);
            assert!(full.scan_secs > 0.0 && full.scan_secs < full.wall_secs);
        }
    }

    #[test]
    fn the_shapes_give_back_the_partials_fanfold_run_measured() {
        // (chunk bytes, measured partial bytes) on the 1 GB zipf file, 2026-12-07.
        for (chunk, measured) in
            [(64u64 << 20, 5.9e6), (128 << 20, 8.3e6), (512 << 20, 14.7e6), (1_000_000_000, 16.75e6)]
        {
            let model = Shape::zipf().partial_of_chunk(chunk as f64);
            assert!((model / measured - 1.0).abs() < 0.15, "zipf {chunk}: model {model}, measured {measured}");
        }
        // bmat: 0.62 of a 512 MiB chunk, 0.73 of a 64 MiB one.
        let b = Shape::bmat().partial_of_chunk(1e9) / 1e9;
        assert!((0.62..=0.73).contains(&b), "{b}");
    }

    #[test]
    fn spills_go_to_tmp_and_a_share_that_does_not_fit_is_refused() {
        // 10 TB of unique keys in 18,627 chunks: every source is merged ahead.
        let big = PlanInput { size: 10_000_000_000_000, chunk_size: 512 << 20, ..tb(Shape::bmat()) };
        let fits = plan(&big);
        assert!(fits.refused.is_none(), "{:?}", fits.refused);
        let small = plan(&PlanInput { reducer_storage_mb: 2048, ..big.clone() });
        assert!(small.refused.as_deref().unwrap().contains("of /tmp"), "{:?}", small.refused);
        let line = fits.lines.iter().find(|l| l.starts_with("reducers ")).unwrap();
        assert!(line.contains("spilling") && line.contains("to /tmp"), "{line}");
        // /tmp past 512 MB is billed: less of it is a little cheaper.
        let less = plan(&PlanInput { reducer_storage_mb: 8192, ..big });
        assert!(less.refused.is_none() && less.dollars < fits.dollars);
    }

    #[test]
    fn slice_tables_make_one_get_per_slice() {
        let gets = |size: u64, read_whole: u64, range_bytes: u64| {
            let p = plan(&PlanInput { size, read_whole, range_bytes, chunk_size: 512 << 20, ..tb(Shape::bmat()) });
            let line = p.lines.iter().find(|l| l.starts_with("requests/reducer")).unwrap().clone();
            let n: f64 = line.split("S3 ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
            (n, p.chunks, p.ranges, p.lines.iter().find(|l| l.starts_with("plan ")).unwrap().clone())
        };
        // Several ranges: the plan reads the indexes; a reducer its tables' columns and one GET per slice.
        let (n, chunks, ranges, plan_line) = gets(1_000_000_000_000, 256 * 1024, 4 << 30);
        assert!(ranges > 1 && plan_line.contains("partial indexes"), "{plan_line}");
        let tables = (chunks as f64 / 1000.0).ceil();
        assert!((n - (chunks as f64 + tables + 1.0)).abs() < 2.0, "{n} GETs for {chunks} chunks");
        // One range (8 GB): no tables, the index and the slice.
        let (n, chunks, ranges, plan_line) = gets(8_000_000_000, 256 * 1024, 1 << 50);
        assert_eq!(ranges, 1);
        assert!(!plan_line.contains("partial indexes") && n >= 2.0 * chunks as f64, "{plan_line} {n}");
        // Partials read whole: one GET each, no tables.
        let (n, chunks, _, plan_line) = gets(1_000_000_000_000, u64::MAX, 4 << 30);
        assert!(!plan_line.contains("partial indexes") && (n - chunks as f64).abs() < 3.0, "{plan_line} {n}");
    }

    fn tb(shape: Shape) -> PlanInput {
        PlanInput {
            size: 1_000_000_000_000,
            chunk_size: 1 << 30,
            concurrency: 1000,
            memory_mb: 1769,
            reducer_memory_mb: 3538,
            reducer_storage_mb: 10240,
            range_bytes: 1 << 30,
            inline_limit: 8192,
            read_whole: 256 * 1024,
            shape,
        }
    }

    #[test]
    fn more_concurrency_is_faster_and_costs_about_the_same() {
        let a = plan(&PlanInput { concurrency: 100, chunk_size: 64 << 20, ..tb(Shape::zipf()) });
        let b = plan(&PlanInput { concurrency: 1000, chunk_size: 64 << 20, ..tb(Shape::zipf()) });
        assert_eq!(a.chunks, 14_902);
        assert!(b.wall_secs < a.wall_secs * 0.8, "{} vs {}", b.wall_secs, a.wall_secs);
        assert!((a.dollars - b.dollars).abs() < a.dollars * 0.1);
    }

    #[test]
    fn ranges_follow_the_result_and_refusals_say_why() {
        let z = plan(&tb(Shape::zipf()));
        let b = plan(&PlanInput { chunk_size: 256 << 20, ..tb(Shape::bmat()) });
        assert!(z.ranges < b.ranges, "{} {}", z.ranges, b.ranges);
        assert_eq!(b.ranges, 932, "1 TB of result at 1 GiB per range");
        assert!(z.refused.is_none() && b.refused.is_none(), "{:?} {:?}", z.refused, b.refused);
        // 50 TB of unique groups in at most 1,000 ranges: a reducer's 48 GB cannot move in 900 s.
        let one = plan(&PlanInput { size: 50_000_000_000_000, chunk_size: 256 << 20, ..tb(Shape::bmat()) });
        assert!(one.refused.as_deref().unwrap().contains("a reducer takes"), "{:?}", one.refused);
        // A worker cannot hold a 1 GiB chunk of unique groups in 1769 MB.
        let fat = plan(&tb(Shape::bmat()));
        assert!(fat.refused.as_deref().unwrap().contains("a worker holds"), "{:?}", fat.refused);
        // A 100 GiB chunk takes more than 900 s to read.
        let big = plan(&PlanInput { chunk_size: 100 << 30, ..tb(Shape::zipf()) });
        assert!(big.refused.as_deref().unwrap().contains("a chunk takes"), "{:?}", big.refused);
    }

    #[test]
    fn dispatch_fans_out_through_slices_within_the_account_rate() {
        // One slice: the splitter alone, 640 a second.
        assert!((dispatch_at(999, 1000, 1000) - 999.0 / INVOKES_PER_S).abs() < 1e-9);
        // 100,000 chunks: a hundred dispatchers side by side, held to 10,000 invokes a second.
        let last = (0..100_000).map(|i| dispatch_at(i, 100_000, 1000)).fold(0.0, f64::max);
        assert!((9.9..10.1).contains(&last), "{last}");
        // With a higher concurrency quota, the tree's own speed shows: about 2 s.
        let last = (0..100_000).map(|i| dispatch_at(i, 100_000, 100_000)).fold(0.0, f64::max);
        assert!((1.5..2.5).contains(&last), "{last}");
        let p = plan(&PlanInput { size: 10_000_000_000_000, chunk_size: 100_000_000, ..tb(Shape::zipf()) });
        assert_eq!(p.chunks, 100_000);
        assert!(
            p.lines.iter().any(|l| l.contains("dispatch 100 slices") && l.contains("account's invoke rate")),
            "{:#?}",
            p.lines
        );
    }

    #[test]
    fn the_pool_grows_at_lambdas_scaling_rate() {
        // 3000 tasks of 30 s released at once: 1000 start at 0 s, 1000 more at 10 s, the rest at 20 s.
        assert_eq!(simulate(3000, 30.0, 10_000, |_| 0.0), 50.0);
        // Short tasks reuse the first 1000 functions.
        assert_eq!(simulate(3000, 1.0, 10_000, |_| 0.0), 3.0);
        assert_eq!(simulate(10, 2.0, 1, |_| 0.0), 20.0);
    }
}
