//! The deployed shape: the real function binaries, deployed from the real
//! template onto a local AWS emulator (ministack, IAM enforced) by
//! `scripts/cloud-local`, give the same bytes as `fanfold run` — also when
//! events repeat, tasks are delivered twice, workers fail mid-chunk and the
//! finalizer dies after writing part of its output.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

use common::*;

/// One emulator at a time: each run deploys a whole stack on 2 cores.
static SERIAL: Mutex<()> = Mutex::new(());

struct CloudRun {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn cloud_local(file: &Path, out: &Path, spec: Option<&Path>, env: &[(&str, &str)]) -> CloudRun {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/cloud-local");
    let mut cmd = Command::new(script);
    cmd.arg(file).arg(out);
    if let Some(s) = spec {
        cmd.arg(s);
    }
    cmd.env("FANFOLD_TIMEOUT", "240");
    // The test build's bootstrap (what this `cargo test` built), not a cold
    // release build.
    cmd.env("FANFOLD_CARGO_PROFILE", "dev");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.output().expect("run scripts/cloud-local");
    CloudRun {
        ok: o.status.success(),
        stdout: String::from_utf8_lossy(&o.stdout).into(),
        stderr: String::from_utf8_lossy(&o.stderr).into(),
    }
}

/// `fanfold run` on the same input: the expected bytes of every part.
fn local_parts(file: &Path, spec: Option<&Path>, dir: &Path) -> Vec<(String, String)> {
    let mut args = vec!["run".to_string(), file.display().to_string(), "--out".into(), "local".into()];
    if let Some(s) = spec {
        args.extend(["--spec".to_string(), s.display().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = fanfold(&args, dir);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    parts(&dir.join("local"))
}

/// The data rows of `parts`.
fn want_rows(parts: &[(String, String)]) -> usize {
    rows_of(parts).lines().count()
}

fn assert_done_like_local(run: &CloudRun, cloud_out: &Path, want: &[(String, String)]) {
    assert!(run.ok, "cloud-local failed:\n{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains(" DONE"), "{}", run.stdout);
    assert!(run.stdout.contains("jobs for this source: 1"), "{}", run.stdout);
    assert!(run.stdout.contains("partials left: 0"), "no partial objects after DONE: {}", run.stdout);
    assert_eq!(parts(&cloud_out.join("data")), want, "results differ from fanfold run");
    let manifest = read(cloud_out.join("manifest.json"));
    assert!(manifest.contains("s3://fanfold-data-"), "{manifest}");
    assert!(cloud_out.join("summary.json").exists());
}

#[test]
fn quoted_newlines_across_many_small_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let (file, spec) = (fixture("catalogue.csv"), fixture("catalogue.spec.json"));
    let want = local_parts(&file, Some(&spec), dir.path());
    let out = dir.path().join("cloud");
    let run = cloud_local(&file, &out, Some(&spec), &[("FANFOLD_CHUNK_SIZE", "16")]);
    assert_done_like_local(&run, &out, &want);
    assert_eq!(want[0].1, read(fixture("catalogue.expected.csv")));
}

/// A gzip file of two members (the second starting mid-record), dropped as
/// is: the splitter tells it by its magic bytes and one worker decodes it;
/// the result files are those of the plain file.
#[test]
fn a_gzip_file_of_ten_members_in_many_chunks_gives_the_plain_files_bytes() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let plain = gen_bmat(dir.path(), "plays.csv", "200kB", 9);
    let want = local_parts(&plain, None, dir.path());
    let data = std::fs::read(&plain).unwrap();
    let mut gz = Vec::new();
    // Ten members cut anywhere, in chunks of 5,000 compressed bytes: most
    // chunks find no member start, some find one or two.
    let cuts: Vec<usize> = (0..=10).map(|i| (i * data.len() / 10 + i * 7).min(data.len())).collect();
    for piece in cuts.windows(2).map(|w| &data[w[0]..w[1]]) {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(piece).unwrap();
        gz.extend(e.finish().unwrap());
    }
    let file = dir.path().join("plays.csv.gz");
    std::fs::write(&file, &gz).unwrap();
    let out = dir.path().join("cloud");
    let run = cloud_local(&file, &out, None, &[("FANFOLD_CHUNK_SIZE", "20000"), ("FANFOLD_REPEAT_EVENT", "2")]);
    assert_done_like_local(&run, &out, &want);
    let summary = read(out.join("summary.json"));
    assert!(summary.contains("\"compression\": \"gzip\""), "{summary}");
    assert!(summary.contains(&format!("\"decoded_bytes\": {}", data.len())), "{summary}");
    let chunks: u64 = summary.split("\"chunks\": ").nth(1).unwrap().split(',').next().unwrap().parse().unwrap();
    // (The first chunk reaches past the 64 KiB the split decoded for the head.)
    assert!(chunks as usize > gz.len() / 5000 / 2, "cut into compressed chunks: {summary}");
    // The step figures as CloudWatch embedded metrics: the chunk's rows are
    // the job's, the commit counted one job done; every log line of the
    // functions has its request id.
    let rows =
        read(out.join("summary.json")).split("\"rows_read\": ").nth(1).unwrap().split(',').next().unwrap().to_string();
    let chunk =
        run.stdout.lines().find(|l| l.starts_with("metrics of chunk:")).unwrap_or_else(|| panic!("{}", run.stdout));
    assert!(
        chunk.contains(&format!("Rows {rows},")) || chunk.ends_with(&format!("Rows {rows}")),
        "{chunk} (rows {rows})"
    );
    assert!(run.stdout.contains("metrics of commit:") && run.stdout.contains("JobsDone 1"), "{}", run.stdout);
    assert!(run.stdout.contains("metrics of reduce:"), "{}", run.stdout);
    // The job's table, made in the stack's Glue database at commit, queried
    // through Athena in key order: exactly the part files' rows.
    let table_rows: String = read(out.join(".athena.csv"));
    assert_eq!(table_rows, rows_of(&want), "the Athena table's rows are the parts' rows");
    assert!(run.stdout.contains(&format!("rows: {}", want_rows(&want))), "{}", run.stdout);
    // sum() over the table is the sum over the result.
    let total: u64 = rows_of(&want).lines().map(|l| l.rsplit(',').next().unwrap().parse::<u64>().unwrap()).sum();
    let sum = run.stdout.lines().find(|l| l.starts_with("athena sum of ")).unwrap_or_else(|| panic!("{}", run.stdout));
    assert_eq!(sum, format!("athena sum of total_number_of_plays_for_date: {total}"));
    let logs = run.stdout.lines().find(|l| l.starts_with("fanfold log lines: ")).unwrap();
    assert!(logs.ends_with(", without a request id: 0") && !logs.starts_with("fanfold log lines: 0,"), "{logs}");
}

#[test]
fn repeated_events_duplicate_tasks_failing_workers_and_spilled_partials() {
    let dir = tempfile::tempdir().unwrap();
    let file = gen_bmat(dir.path(), "plays.csv", "300kB", 5);
    let want = local_parts(&file, None, dir.path());
    let out = dir.path().join("cloud");
    let run = cloud_local(
        &file,
        &out,
        None,
        &[
            ("FANFOLD_CHUNK_SIZE", "20000"),
            ("FANFOLD_INLINE_LIMIT", "0"), // every partial is spilled to S3
            ("FANFOLD_REPEAT_EVENT", "3"),
            ("FANFOLD_FAULTS", "duplicate-tasks,worker-fail@plays"),
        ],
    );
    assert_done_like_local(&run, &out, &want);
    // Every task ran twice, the commit too: one job-end event all the same,
    // through EventBridge to the queue a rule feeds.
    assert!(run.stdout.contains("job end events for this job: 1 (DONE)"), "{}", run.stdout);
    assert!(
        run.stdout.contains("job end event detail-type: Job State Change manifest: s3://fanfold-data-"),
        "{}",
        run.stdout
    );
    // 300 kB in 20 kB chunks: every chunk's worker failed once mid-chunk.
    assert!(run.stdout.contains("injected faults fired: 15"), "{}", run.stdout);
}

/// Issue 9's and 15's scale test on the deployed shape: 2,000 chunk tasks
/// (every partial spilled to S3), sent by two dispatchers, one of which dies
/// mid-slice; at least eight key ranges, each its own reducer; every function
/// process under Lambda's limit of 1,024 descriptors (scripts/cloud-local).
#[test]
fn two_thousand_chunks_eight_reducers_and_a_dispatcher_killed_mid_slice() {
    let dir = tempfile::tempdir().unwrap();
    let file = gen_bmat(dir.path(), "plays.csv", "4MB", 3);
    let range_bytes = "600000"; // nine key ranges: each reducer reads 2,000 partials
    let o = fanfold(&["run", file.to_str().unwrap(), "--out", "local", "--range-bytes", range_bytes], dir.path());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let want = parts(&dir.path().join("local"));
    let out = dir.path().join("cloud");
    let run = cloud_local(
        &file,
        &out,
        None,
        &[
            ("FANFOLD_CHUNK_SIZE", "2000"),
            ("FANFOLD_INLINE_LIMIT", "0"),
            // Every partial read by its slice, where the plan's slice tables
            // say it is: one GET each (from the index it would be two).
            ("FANFOLD_READ_WHOLE", "0"),
            ("FANFOLD_RANGE_BYTES", range_bytes),
            ("FANFOLD_FAULTS", "dispatch-crash@plays"),
            ("FANFOLD_DISPATCH_SECONDS", "20"),
            ("FANFOLD_SWEEP_EVERY", "10"),
            // The emulator drops an async task after three failed attempts
            // (AWS keeps a throttled one for up to 6 hours): on an
            // overloaded machine a worker can time out thrice, and then
            // only the stale timer brings its chunk back.
            ("FANFOLD_STALE_SECONDS", "180"),
            ("FANFOLD_TIMEOUT", "900"),
        ],
    );
    assert_done_like_local(&run, &out, &want);
    assert!(run.stdout.contains("injected faults fired: 1"), "a dispatcher died: {}", run.stdout);
    let summary: serde_json::Value = serde_json::from_str(&read(out.join("summary.json"))).unwrap();
    let local: serde_json::Value = serde_json::from_str(&read(dir.path().join("local/summary.json"))).unwrap();
    assert_eq!(summary["chunks"], 2000);
    assert!(summary["ranges"].as_u64().unwrap() >= 8, "{summary}");
    assert_eq!(summary["ranges"], local["ranges"]);
    assert_eq!(summary["rows_read"], local["rows_read"], "no chunk counted twice");
    let job: serde_json::Value = serde_json::from_str(&read(out.join(".job.json"))).unwrap();
    let n = |k: &str| job["Item"][k]["N"].as_str().unwrap_or("0").to_string();
    assert_eq!((n("slices_done"), n("slice_count")), ("2".into(), "2".into()), "{job}");
    // (Lambda's retry of the dead dispatcher resumes its slice once the lease
    // has run out, or the sweeper has it resumed: either is right.)
    let t = &summary["timings_ms"];
    let upload = run.stdout.lines().find(|l| l.starts_with("upload to last chunk task sent")).unwrap_or("?");
    eprintln!(
        "2,000 chunks on the emulator: {upload}; from the job's creation {} ms, done in {} ms",
        t["dispatch"], t["total"]
    );
    // The model's requests per step beside the ones the functions made (they log them per invocation).
    let real: serde_json::Value = serde_json::from_str(&read(out.join(".requests.json"))).unwrap();
    let o = fanfold(
        &[
            "plan",
            "4MB",
            "--profile",
            "bmat",
            "--chunk-size",
            "2000",
            "--range-bytes",
            range_bytes,
            "--inline-limit",
            "0",
            "--read-whole",
            "0",
        ],
        dir.path(),
    );
    let plan = String::from_utf8_lossy(&o.stdout).into_owned();
    // (Dispatch invocations are not compared: a retried or repeated dispatcher that finds its slice held or done
    // sends nothing, and the killed one logs nothing.)
    for (step, line) in [("chunk", "requests/chunk"), ("reduce", "requests/reducer")] {
        let model = plan.lines().find(|l| l.starts_with(line)).unwrap_or_else(|| panic!("{plan}"));
        let s = &real[step];
        let n = s["invocations"].as_f64().unwrap();
        // The requests of the invocations that did the step's work (made an
        // S3 request): on a loaded machine the sweeper sends a reducer's
        // task again when it has not started within the dispatch lease, and
        // the duplicate finds the range leased or done and reads nothing; a
        // reducer whose lease ran out is re-run whole, one more working
        // invocation doing what the model says one does.
        let working = s["working"].as_f64().unwrap_or(0.0).max(1.0);
        let each = |ops: &[&str]| {
            ops.iter().map(|op| s["working_requests"][op].as_f64().unwrap_or(0.0)).sum::<f64>() / working
        };
        let got = [
            each(&["S3.GetObject"]),
            each(&["S3.PutObject", "S3.CreateMultipartUpload", "S3.UploadPart", "S3.CompleteMultipartUpload"]),
            each(&["DynamoDB.PutItem", "DynamoDB.UpdateItem", "DynamoDB.TransactWriteItems"]),
            each(&["DynamoDB.GetItem", "DynamoDB.Query"]),
            each(&["Lambda.Invoke"]),
        ];
        eprintln!(
            "{step} ×{n} ({working} working): emulator S3 {:.1} GET, {:.1} PUT; DynamoDB {:.1} writes, {:.1} reads; {:.0} invokes",
            got[0], got[1], got[2], got[3], got[4]
        );
        eprintln!("{step}: model    {}", model.trim_start_matches(line).trim());
        // "S3 1.0 GET, 1.0 PUT; DynamoDB 2.0 writes, 3.0 reads; 0 invokes": the numbers after "S3"
        let nums: Vec<f64> = model
            .trim_start_matches(line)
            .replace("S3", "")
            .split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter_map(|w| w.parse().ok())
            .collect();
        assert_eq!(nums.len(), 5, "{model}");
        // What the bill counts (S3 requests, DynamoDB writes, invokes): within 10 % or half a request.
        // (Reads depend on how long a step runs: it checks for cancellation once a second. Writes may
        // also be up to one more: nine reducers that start together write the job item in the same
        // transactions, and a transaction that conflicts is retried, and counted, again.)
        for (i, what) in [(0, "S3 GETs"), (1, "S3 PUTs"), (2, "DynamoDB writes"), (4, "invokes")] {
            let slack = (0.1 * got[i]).max(0.5);
            let retries = if i == 2 { 1.0 } else { 0.0 };
            assert!(
                got[i] >= nums[i] - slack && got[i] <= nums[i] + slack + retries,
                "{step}: {what}: model {}, emulator {}\n{plan}\n{real}",
                nums[i],
                got[i]
            );
        }
    }
}

#[test]
fn a_reducer_killed_after_writing_a_part_is_finished_by_the_sweeper() {
    let dir = tempfile::tempdir().unwrap();
    let file = gen_bmat(dir.path(), "plays.csv", "60kB", 9);
    let spec = dir.path().join("spec.json");
    std::fs::write(&spec, r#"{"output":{"max_file_bytes":20000}}"#).unwrap();
    let want = local_parts(&file, Some(&spec), dir.path());
    assert!(want.len() > 2, "several parts, so the crash leaves some written");
    let out = dir.path().join("cloud");
    let run = cloud_local(
        &file,
        &out,
        Some(&spec),
        &[("FANFOLD_FAULTS", "finalizer-crash@plays"), ("FANFOLD_LEASE_SECONDS", "8"), ("FANFOLD_SWEEP_EVERY", "4")],
    );
    assert_done_like_local(&run, &out, &want);
    assert!(
        run.stderr.contains("key ranges 0 of 1 did not finish; dispatched again"),
        "the sweeper stepped in: {}",
        run.stderr
    );
}

#[test]
fn a_rejected_input_fails_the_job_with_line_byte_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cloud");
    let run = cloud_local(&fixture("bad-number.csv"), &out, None, &[]);
    assert!(!run.ok);
    assert!(run.stdout.contains(" FAILED"), "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("error: line 3 (byte 70): column \"Number of Plays\": \"patata\" is not a number"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.contains("job end events for this job: 1 (FAILED)"), "{}", run.stdout);
}

#[test]
fn the_api_function_behind_the_http_api_answers_the_serve_scenario() {
    let dir = tempfile::tempdir().unwrap();
    let file = gen_bmat(dir.path(), "plays.csv", "400kB", 3);
    // A spec of its own: the S3 trigger's job (default spec) is another job.
    let spec = dir.path().join("spec.json");
    std::fs::write(
        &spec,
        r#"{"group_by":["Song"],"aggregates":[{"op":"count","as":"days"},{"op":"sum","column":"Number of Plays","as":"plays"}]}"#,
    )
    .unwrap();
    let want = local_parts(&file, Some(&spec), dir.path());
    let out = dir.path().join("cloud");
    // Slow workers (a second per chunk) keep the job observably running.
    let env = [("FANFOLD_API_SCENARIO", "1"), ("FANFOLD_CHUNK_SIZE", "65536"), ("FANFOLD_FAULTS", "slow-chunks@plays")];
    let run = cloud_local(&file, &out, Some(&spec), &env);
    assert!(run.ok, "the API scenario failed:\n{}\n{}", run.stdout, run.stderr);
    let statuses: Vec<&str> = run
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("api: "))
        .filter(|l| l.contains("/jobs"))
        .map(|l| l.split_whitespace().find(|w| w.len() == 3 && w.bytes().all(|b| b.is_ascii_digit())).unwrap())
        .collect();
    assert_eq!(statuses, ["401", "401", "201", "409", "425", "200", "201", "406", "404", "200"], "{}", run.stdout);
    assert_eq!(parts(&out), want, "the presigned downloads give what fanfold run gives");
}

/// Issue 13 on the deployed shape: a folder of three files (every event
/// delivered twice, and a stray removal) is one version, started by the
/// sweeper once the folder is quiet; while it runs, a replaced, a new and a
/// removed file make the next version (two versions race), which scans only
/// the two new files. The newest gives the rows of `fanfold run` over the
/// final folder and is the one `latest.json` names; the first ends either
/// way (DONE with the first folder's rows, or FAILED because a file it read
/// changed under it), never as a wrong result.
#[test]
fn a_dataset_folder_scans_only_what_changed_between_versions() {
    let dir = tempfile::tempdir().unwrap();
    let (first, next, last) = (dir.path().join("first"), dir.path().join("next"), dir.path().join("last"));
    let (l1, l2) = (dir.path().join("l1"), dir.path().join("l2"));
    for d in [&first, &next, &last, &l1, &l2] {
        std::fs::create_dir(d).unwrap();
    }
    for (name, seed) in [("a.csv", 1), ("b.csv", 2), ("c.csv", 3)] {
        std::fs::rename(gen_bmat(dir.path(), name, "100kB", seed), first.join(name)).unwrap();
    }
    std::fs::rename(gen_bmat(dir.path(), "b.csv", "60kB", 4), next.join("b.csv")).unwrap();
    std::fs::rename(gen_bmat(dir.path(), "d.csv", "80kB", 5), next.join("d.csv")).unwrap();
    std::fs::write(next.join("_remove"), "c.csv\n").unwrap();
    std::fs::copy(first.join("a.csv"), last.join("a.csv")).unwrap();
    std::fs::copy(next.join("b.csv"), last.join("b.csv")).unwrap();
    std::fs::copy(next.join("d.csv"), last.join("d.csv")).unwrap();
    let spec = dir.path().join("spec.json");
    std::fs::write(&spec, r#"{"dataset": true}"#).unwrap();
    let want_first = rows_of(&local_parts(&first, None, &l1));
    let want_last = rows_of(&local_parts(&last, None, &l2));

    let out = dir.path().join("cloud");
    let run = cloud_local(
        &first,
        &out,
        Some(&spec),
        &[
            ("FANFOLD_CHUNK_SIZE", "20000"),
            ("FANFOLD_REPEAT_EVENT", "2"),
            ("FANFOLD_SWEEP_EVERY", "5"),
            // Longer than the uploads of a change take: one version per change.
            ("FANFOLD_DATASET_QUIET", "12"),
            ("FANFOLD_DATASET_NEXT", next.to_str().unwrap()),
            ("FANFOLD_DATASET_RACE", "1"),
        ],
    );
    assert!(run.ok, "cloud-local failed:\n{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("first version ") && run.stdout.contains(" DONE"), "{}", run.stdout);
    assert!(run.stdout.contains("jobs for this source: 2"), "two versions, no more: {}", run.stdout);
    assert!(run.stdout.contains("partials left: 0"), "{}", run.stdout);
    assert!(run.stdout.contains("job end events for this job: 1 (DONE)"), "{}", run.stdout);
    assert_eq!(rows_of(&parts(&out.join("data"))), want_last, "the newest version is fanfold run's");
    let summary = |p: &Path| serde_json::from_str::<serde_json::Value>(&read(p.join("summary.json"))).unwrap();
    if out.join("first/summary.json").exists() {
        assert_eq!(rows_of(&parts(&out.join("first/data"))), want_first, "the first version is fanfold run's");
        let s1 = summary(&out.join("first"));
        assert_eq!((&s1["dataset"]["files"], &s1["dataset"]["files_scanned"]), (&3.into(), &3.into()), "{s1}");
    } else {
        assert!(run.stdout.contains("FAILED") || run.stdout.contains("CANCELLED"), "{}", run.stdout);
    }
    let s2 = summary(&out);
    let d = &s2["dataset"];
    assert_eq!((&d["files"], &d["files_scanned"], &d["files_reused"]), (&3.into(), &2.into(), &1.into()), "{s2}");
    let last_id = run.stdout.lines().find_map(|l| l.strip_prefix("job ")).unwrap().split(' ').next().unwrap();
    assert!(run.stdout.contains(&format!("latest version: {last_id}")), "{}", run.stdout);
}
