//! `fanfold`: exact CSV aggregation, on one machine or fanned out on AWS.

/// `println!` that does not panic when stdout is closed (`fanfold run … |
/// head`): the job is done and written; what is lost is only the report.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($t)*);
    }};
}

/// `eprintln!` that does not panic when stderr is closed.
macro_rules! tell {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($t)*);
    }};
}

mod cost_model;
mod gen;
mod http;
mod serve;
mod size;
mod webhook;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use fanfold_engine::Spec;
use fanfold_local::{run_dataset, run_file, RunOptions};
use fanfold_pipeline::{Job, Status};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::size::{human, parse_size};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "fanfold", version, about = "Exact group-by aggregation of huge CSV files")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a job on this machine: plan chunks, aggregate them in parallel, merge, write capped parts.
    Run {
        /// The CSV file; or a folder, or a pattern such as 'DIR/*.csv' (quoted),
        /// for one job over its files (a dataset: the result of their
        /// concatenation in name order).
        file: PathBuf,
        /// Job spec (JSON). Default: the BMAT job (sum "Number of Plays" by Song, Date).
        #[arg(long)]
        spec: Option<PathBuf>,
        /// Output directory (default: ./fanfold-out/<job-id>/).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Bytes per chunk task, e.g. 64MiB, 1GB, 4096; any size down to 1 byte.
        /// [default: 64MiB, made a little smaller so that every worker gets
        /// the same number of chunks]
        #[arg(long, value_parser = parse_size)]
        chunk_size: Option<u64>,
        /// Worker threads (default: number of cores).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
        workers: Option<u64>,
        /// Estimated result bytes per key range: each range is merged by its
        /// own reducer into its own parts. The same value gives the same
        /// result files for every chunk size and worker count.
        #[arg(long, value_parser = parse_size, default_value = "32MiB")]
        range_bytes: u64,
        /// Threads that scan one chunk, each a piece of it, as a Lambda
        /// worker with several vCPUs does (the result is the same; locally
        /// the workers already scan a chunk per core).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
        scan_threads: u64,
        /// For a folder: keep each file's scan in this directory, so that the
        /// next run over the folder scans only new and changed files (the
        /// kept partials take about the result's size per file).
        #[arg(long)]
        keep_scans: Option<PathBuf>,
    },
    /// Simulate a job of SIZE on AWS Lambda: chunks, waves, key ranges, requests, wall time, dollars.
    Plan {
        /// Input size, e.g. 1TB.
        #[arg(value_parser = parse_size)]
        size: u64,
        /// Bytes per chunk task (the template's ChunkSize).
        #[arg(long, value_parser = parse_size, default_value = "512MiB")]
        chunk_size: u64,
        /// Concurrent functions (the account's concurrency limit).
        #[arg(long, default_value_t = 1000)]
        concurrency: u64,
        /// Worker memory in MB (the template's WorkerMemory; 1769 MB = one vCPU).
        #[arg(long, default_value_t = 1536)]
        memory: u64,
        /// Reducer memory in MB (the template's FinalizerMemory).
        #[arg(long, default_value_t = 1024)]
        reducer_memory: u64,
        /// Reducer /tmp in MB (the template's FinalizerStorage), where a
        /// reducer of more than 256 chunks spills.
        #[arg(long, default_value_t = 10240)]
        reducer_storage: u64,
        /// Estimated result bytes per key range (the template's RangeBytes).
        #[arg(long, value_parser = parse_size, default_value = "4GiB")]
        range_bytes: u64,
        /// The data's shape: bmat (every row its own group) or zipf (1.9 M groups).
        #[arg(long, value_enum, default_value = "zipf")]
        profile: cost_model::Profile,
        /// Instead of a profile: partial (and result) bytes per input byte,
        /// 1.0 when almost every row is its own group.
        #[arg(long)]
        partial_ratio: Option<f64>,
        /// Partials up to this size stay in DynamoDB (the template's InlineLimit).
        #[arg(long, default_value_t = fanfold_pipeline::Config::default().inline_limit as u64)]
        inline_limit: u64,
        /// Spilled partials up to this size are read whole by a reducer (the template's ReadWhole).
        #[arg(long, default_value_t = fanfold_pipeline::Config::default().read_whole)]
        read_whole: u64,
        /// A dataset of SIZE bytes gets a file of this size: what its next
        /// version costs (scan the file, merge the kept scans) beside a full run.
        #[arg(long, value_parser = parse_size)]
        add: Option<u64>,
    },
    /// Serve the jobs API and page, and run jobs for files dropped into DIR/incoming/.
    Serve {
        /// The local bucket: incoming/, results/, and the job database.
        #[arg(long, default_value = "fanfold-data")]
        data: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: std::net::SocketAddr,
        /// API token (default: FANFOLD_TOKEN, else a new one is generated and printed).
        #[arg(long, env = "FANFOLD_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Default spec for files without a _spec.json beside them (default: the BMAT job).
        #[arg(long)]
        spec: Option<PathBuf>,
        #[arg(long, value_parser = parse_size, default_value = "64MiB")]
        chunk_size: u64,
        /// Worker threads (default: number of cores).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
        workers: Option<u64>,
        /// Open connections at most; more are closed at once (keeps the server under its descriptor limit).
        #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        max_connections: u64,
        /// Seconds a client has to send a request's headers (also how long an idle connection stays open).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
        header_timeout: u64,
        /// POST each job's end (DONE, FAILED, CANCELLED) as JSON to this URL, signed with --webhook-secret.
        #[arg(long, requires = "webhook_secret")]
        webhook: Option<String>,
        /// The webhook's HMAC-SHA256 key (X-Fanfold-Signature-256; default: FANFOLD_WEBHOOK_SECRET).
        #[arg(long, env = "FANFOLD_WEBHOOK_SECRET", hide_env_values = true)]
        webhook_secret: Option<String>,
        /// Seconds a dataset folder (its _spec.json says "dataset": true) must
        /// be quiet before its new version starts: files dropped together make one job.
        #[arg(long, default_value_t = 5.0)]
        dataset_quiet: f64,
    },
    /// Generate test data.
    Gen {
        #[arg(long, value_enum)]
        profile: gen::Profile,
        /// About how many bytes, e.g. 1GB.
        #[arg(long, value_parser = parse_size)]
        size: u64,
        #[arg(short, long)]
        output: PathBuf,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
}

fn main() -> ExitCode {
    // No transparent huge pages: mimalloc asks for them, and a fresh 2 MiB
    // page is zeroed at its first touch, which in a VM (here, and Lambda's
    // Firecracker) costs more than the TLB misses it saves. A 1 GB bmat
    // run took 9.52 s with them and 8.73 s without (system time 2.57 ->
    // 1.05 s), zipf 3.71 -> 3.56 s, peak memory 259 -> 199 MB.
    #[cfg(target_os = "linux")]
    let _ = nix::sys::prctl::set_thp_disable(true);
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "error".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        // A closed stderr (`fanfold run … 2>&1 | head`) must not panic the
        // logging thread: by default a failed write is reported with
        // eprintln!, which panics on a broken pipe (and killed the worker
        // threads: the run waited for ever).
        .log_internal_errors(false)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { file, spec, out, chunk_size, workers, range_bytes, scan_threads, keep_scans } => {
            run(file, spec, out, chunk_size, workers, range_bytes, scan_threads as usize, keep_scans)
        }
        Command::Gen { profile, size, output, seed } => gen_cmd(profile, size, output, seed),
        Command::Serve {
            data,
            addr,
            token,
            spec,
            chunk_size,
            workers,
            max_connections,
            header_timeout,
            webhook,
            webhook_secret,
            dataset_quiet,
        } => read_spec(spec).and_then(|spec| {
            serve::serve(serve::ServeOptions {
                data,
                addr,
                token,
                workers: workers.map(|w| w as usize).unwrap_or_else(|| RunOptions::default().workers),
                chunk_size,
                spec,
                limits: http::Limits {
                    header_read: std::time::Duration::from_secs(header_timeout),
                    max_connections: max_connections as usize,
                },
                webhook: webhook.map(|url| (url, webhook_secret.unwrap_or_default().into_bytes())),
                dataset_quiet_ms: (dataset_quiet.clamp(0.0, 86_400.0) * 1000.0) as u64,
            })
        }),
        Command::Plan {
            size,
            chunk_size,
            concurrency,
            memory,
            reducer_memory,
            reducer_storage,
            range_bytes,
            profile,
            partial_ratio,
            inline_limit,
            read_whole,
            add,
        } => {
            let shape = match (partial_ratio, profile) {
                (Some(ratio), _) => cost_model::Shape::Unique { partial: ratio, result: ratio, held: ratio },
                (None, cost_model::Profile::Bmat) => cost_model::Shape::bmat(),
                (None, cost_model::Profile::Zipf) => cost_model::Shape::zipf(),
            };
            let input = cost_model::PlanInput {
                size,
                chunk_size,
                concurrency,
                memory_mb: memory,
                reducer_memory_mb: reducer_memory,
                reducer_storage_mb: reducer_storage,
                range_bytes,
                inline_limit,
                read_whole,
                shape,
            };
            let p = cost_model::plan(&input);
            for l in &p.lines {
                say!("{l}");
            }
            if let Some(add) = add {
                for l in cost_model::plan_add(&input, add).0 {
                    say!("{l}");
                }
            }
            say!("{}", p.summary());
            say!(
                "assumptions: scan {:.0} MB/s per vCPU and merge {:.0} MB/s per vCPU (bench/run.sh), {:.0} MB/s of network per function and 1000 new functions per 10 s (published), {:.0} ms to a GET's first byte, {:.0} invokes/s from one function, {:.0} slice opens in flight per reducer, {:.0} MB/s to and from a function's /tmp, us-east-1 on-demand prices",
                cost_model::SCAN_PER_CORE / 1e6,
                cost_model::MERGE_PER_CORE / 1e6,
                cost_model::S3_PER_LAMBDA / 1e6,
                cost_model::GET_LATENCY * 1e3,
                cost_model::INVOKES_PER_S,
                cost_model::OPENS_IN_FLIGHT,
                cost_model::TMP_PER_LAMBDA / 1e6
            );
            match p.refused {
                None => Ok(ExitCode::SUCCESS),
                Some(why) => {
                    tell!("error: this job cannot run on Lambda as configured: {why}");
                    Ok(ExitCode::from(1))
                }
            }
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            tell!("error: {e:#}");
            // A rejected spec is the user's data (1); anything else is usage or I/O (2).
            ExitCode::from(if e.is::<Rejected>() { 1 } else { 2 })
        }
    }
}

fn gen_cmd(profile: gen::Profile, size: u64, output: PathBuf, seed: u64) -> Result<ExitCode> {
    let f = std::fs::File::create(&output).with_context(|| format!("creating {}", output.display()))?;
    let mut w = std::io::BufWriter::with_capacity(4 << 20, f);
    let t = Instant::now();
    let n = gen::generate(profile, size, seed, &mut w).with_context(|| format!("writing {}", output.display()))?;
    std::io::Write::flush(&mut w)?;
    tell!("wrote {} to {} in {:.1} s", human(n), output.display(), t.elapsed().as_secs_f64());
    Ok(ExitCode::SUCCESS)
}

fn progress_bar(total: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    pb.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {msg}")
            .expect("valid template"),
    );
    pb
}

/// The user's spec (or data) was rejected: exit code 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Rejected(String);

fn read_spec(path: Option<PathBuf>) -> Result<Spec> {
    Ok(match path {
        Some(p) => {
            // A spec is a small JSON file: never read a pipe or a device, nor more than 1 MiB.
            const MAX_SPEC: u64 = 1 << 20;
            let meta = std::fs::metadata(&p).with_context(|| format!("reading spec {}", p.display()))?;
            if !meta.is_file() {
                return Err(Rejected(format!("spec {}: not a regular file", p.display())).into());
            }
            let mut text = String::new();
            std::io::Read::read_to_string(
                &mut std::io::Read::take(
                    std::fs::File::open(&p).with_context(|| format!("reading spec {}", p.display()))?,
                    MAX_SPEC + 1,
                ),
                &mut text,
            )
            .with_context(|| format!("reading spec {}", p.display()))?;
            if text.len() as u64 > MAX_SPEC {
                return Err(Rejected(format!("spec {}: larger than 1 MiB", p.display())).into());
            }
            Spec::from_json(&text).map_err(|e| Rejected(format!("spec {}: {e}", p.display())))?
        }
        None => Spec::default(),
    })
}

/// A folder, or a pattern of file names in one folder (`DIR/*.csv`): the
/// folder and the pattern. `None` for one file.
fn dataset_input(path: &Path) -> Result<Option<(PathBuf, Option<glob::Pattern>)>> {
    if path.is_dir() {
        return Ok(Some((path.to_path_buf(), None)));
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if path.exists() || !name.contains(['*', '?', '[']) {
        return Ok(None);
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let pattern = glob::Pattern::new(name).map_err(|e| Rejected(format!("{}: {e}", path.display())))?;
    Ok(Some((dir, Some(pattern))))
}

#[allow(clippy::too_many_arguments)]
fn run(
    file: PathBuf,
    spec: Option<PathBuf>,
    out: Option<PathBuf>,
    chunk_size: Option<u64>,
    workers: Option<u64>,
    range_bytes: u64,
    scan_threads: usize,
    keep_scans: Option<PathBuf>,
) -> Result<ExitCode> {
    let spec = read_spec(spec)?;
    let mut opts = RunOptions {
        out_dir: out,
        even_waves: chunk_size.is_none(),
        range_bytes,
        scan_threads,
        keep_scans,
        ..RunOptions::default()
    };
    if let Some(c) = chunk_size {
        opts.chunk_size = c;
    }
    if let Some(w) = workers {
        opts.workers = w as usize;
    }
    let started = Instant::now();
    let mut pb: Option<ProgressBar> = None;
    let show = |job: &Job| {
        let bar = pb.get_or_insert_with(|| progress_bar(job.source.size));
        bar.set_position(job.bytes_done);
        let secs = started.elapsed().as_secs_f64().max(1e-3);
        bar.set_message(format!(
            "chunks {}/{}  {:.1} M rows/s  {:?}",
            job.chunks_done,
            job.chunk_count,
            job.rows as f64 / secs / 1e6,
            job.status
        ));
    };
    let outcome = match dataset_input(&file)? {
        Some((dir, pattern)) => run_dataset(&dir, pattern.as_ref(), &spec, &opts, show)?,
        None => run_file(&file, &spec, &opts, show)?,
    };
    if let Some(bar) = pb {
        bar.finish_and_clear();
    }
    let job = &outcome.job;
    let secs = started.elapsed().as_secs_f64();
    match job.status {
        Status::Done => {
            let s = outcome.summary.as_ref().context("reading summary.json")?;
            say!("job {} DONE in {secs:.2} s", job.id);
            say!(
                "  input   {} ({}), {} rows read, {} filtered, {} skipped, {} chunks ({} re-run)",
                file.display(),
                human(s.input_bytes),
                s.rows_read,
                s.rows_filtered,
                s.rows_skipped,
                s.chunks,
                s.chunks_rerun
            );
            if let Some(d) = &s.dataset {
                say!(
                    "  files   {} ({} scanned, {}; {} reused, {})",
                    d.files,
                    d.files_scanned,
                    human(d.bytes_scanned),
                    d.files_reused,
                    human(d.bytes_reused)
                );
            }
            for b in &s.bad_row_samples {
                say!("  skipped {b}");
            }
            say!("  output  {} groups in {} file(s) in {}", s.groups, s.output_files.len(), outcome.out_dir.display());
            for p in &s.output_files {
                say!("    {} ({}, {} rows)", outcome.out_dir.join(&p.key).display(), human(p.bytes), p.rows);
            }
            say!("    {}", outcome.out_dir.join("manifest.json").display());
            say!("    {}", outcome.out_dir.join("summary.json").display());
            Ok(ExitCode::SUCCESS)
        }
        _ => {
            let msg =
                job.error.as_ref().map(|e| e.message.clone()).unwrap_or_else(|| format!("job ended {:?}", job.status));
            tell!("error: {}: {msg}", file.display());
            // 1: the input was rejected (the user's data); 2: it could not be read.
            let rejected = job.error.as_ref().is_some_and(|e| e.rejected);
            Ok(ExitCode::from(if rejected { 1 } else { 2 }))
        }
    }
}
